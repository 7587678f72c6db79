// Package syncbuf is a buffer that goroutines may write while a test reads
// it: a log sink for servers and fills under test.
package syncbuf

import (
	"bytes"
	"strings"
	"sync"
)

// Buffer is a bytes.Buffer safe for concurrent writers and readers. The
// zero value is ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Line returns the first line written so far that contains s, or "".
func (b *Buffer) Line(s string) string {
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}
