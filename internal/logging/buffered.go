package logging

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// BufferedWriter batches log lines into fewer write system calls: under
// load, one write per access-log line costs a visible share of a small
// request. Lines reach the underlying writer at most interval after they
// were written, when the buffer fills, and on Close. A crash can lose at
// most the lines of the last interval. An idle writer holds no timer, so an
// idle mirror does not wake up to flush nothing.
type BufferedWriter struct {
	mu       sync.Mutex
	bw       *bufio.Writer
	interval time.Duration
	timer    *time.Timer // flushes; armed only while lines wait in bw
	armed    bool
	closed   bool
}

// NewBufferedWriter returns a BufferedWriter that flushes what is written
// to w within interval.
func NewBufferedWriter(w io.Writer, interval time.Duration) *BufferedWriter {
	return &BufferedWriter{bw: bufio.NewWriterSize(w, 64<<10), interval: interval}
}

// Write implements io.Writer. After Close it writes through.
func (b *BufferedWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.bw.Write(p)
	switch {
	case b.closed:
		if ferr := b.bw.Flush(); err == nil {
			err = ferr
		}
	case b.bw.Buffered() > 0 && !b.armed:
		b.armed = true
		if b.timer == nil {
			b.timer = time.AfterFunc(b.interval, b.flushTimer)
		} else {
			b.timer.Reset(b.interval)
		}
	}
	return n, err
}

func (b *BufferedWriter) flushTimer() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.armed = false
	_ = b.bw.Flush()
}

// Flush writes out buffered lines.
func (b *BufferedWriter) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.bw.Flush()
}

// Close writes out what is buffered and stops the timer; later writes go
// straight through.
func (b *BufferedWriter) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.timer != nil {
		b.timer.Stop()
		b.armed = false
	}
	return b.bw.Flush()
}
