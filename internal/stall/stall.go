// Package stall bounds how long a read from the network may wait for its
// next bytes. A peer that accepts a request and then sends nothing, or stops
// in the middle of a body, would otherwise hold the reader until the whole
// operation's deadline, or forever.
package stall

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// ErrStalled is wrapped by the error of a read that waited too long.
var ErrStalled = errors.New("no bytes arrived")

// Reader reads from a body and closes it when one Read waits longer than
// its limit without a byte; the blocked Read then fails with an error
// wrapping ErrStalled. Time the caller spends between reads does not count.
type Reader struct {
	rc      io.ReadCloser
	limit   time.Duration
	timer   *time.Timer
	stalled atomic.Bool
	n       int64
}

// NewReader returns a Reader of rc that allows limit per Read.
func NewReader(rc io.ReadCloser, limit time.Duration) *Reader {
	r := &Reader{rc: rc, limit: limit}
	r.timer = time.AfterFunc(limit, func() {
		r.stalled.Store(true)
		rc.Close()
	})
	r.timer.Stop()
	return r
}

// Read reads from the body, failing with ErrStalled if no byte arrives
// within the limit.
func (r *Reader) Read(p []byte) (int, error) {
	if r.stalled.Load() {
		return 0, r.stallError()
	}
	r.timer.Reset(r.limit)
	n, err := r.rc.Read(p)
	r.timer.Stop()
	r.n += int64(n)
	if err != nil && err != io.EOF && r.stalled.Load() {
		return n, r.stallError()
	}
	return n, err
}

func (r *Reader) stallError() error {
	return fmt.Errorf("%w for %s after %d bytes", ErrStalled, r.limit, r.n)
}

// Close stops the watch and closes the body.
func (r *Reader) Close() error {
	r.timer.Stop()
	return r.rc.Close()
}
