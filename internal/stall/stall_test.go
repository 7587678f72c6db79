package stall

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// A body that sends nothing more fails the blocked Read with ErrStalled,
// and says after how many bytes.
func TestReadThatWaitsTooLongFails(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte("abc"))
	r := NewReader(pr, 50*time.Millisecond)
	buf := make([]byte, 8)
	n, err := r.Read(buf)
	if n != 3 || err != nil {
		t.Fatalf("first Read = %d, %v", n, err)
	}
	_, err = r.Read(buf)
	if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "after 3 bytes") {
		t.Fatalf("second Read: %v, want ErrStalled after 3 bytes", err)
	}
	if _, err := r.Read(buf); !errors.Is(err, ErrStalled) {
		t.Errorf("Read after the stall: %v", err)
	}
}

// Time between reads, when the caller is busy, is not a stall.
func TestTimeBetweenReadsDoesNotCount(t *testing.T) {
	r := NewReader(io.NopCloser(strings.NewReader("abcdef")), 20*time.Millisecond)
	buf := make([]byte, 3)
	if _, err := r.Read(buf); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	b, err := io.ReadAll(r)
	if err != nil || string(b) != "def" {
		t.Fatalf("rest = %q, %v", b, err)
	}
	if err := r.Close(); err != nil {
		t.Error(err)
	}
}
