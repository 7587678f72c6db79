package logging

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestBufferedWriterFlushesOnCloseAndByInterval(t *testing.T) {
	t.Parallel()
	var out lockedBuffer
	w := NewBufferedWriter(&out, time.Hour)
	log := New(w, slog.LevelInfo, false)
	log.Info("request", "status", 200)
	if out.String() != "" {
		t.Fatalf("written before a flush: %q", out.String())
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "msg=request status=200") {
		t.Errorf("after Close: %q", out.String())
	}

	var out2 lockedBuffer
	w2 := NewBufferedWriter(&out2, time.Millisecond)
	defer w2.Close()
	New(w2, slog.LevelInfo, true).Info("tick")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out2.String(), `"msg":"tick"`) {
		if time.Now().After(deadline) {
			t.Fatal("the interval flush never happened")
		}
		time.Sleep(time.Millisecond)
	}
}
