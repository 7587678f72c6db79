package logging

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/registry-edge/registry-edge/internal/testutil/syncbuf"
)

func TestBufferedWriterFlushesOnCloseAndByInterval(t *testing.T) {
	t.Parallel()
	var out syncbuf.Buffer
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

	var out2 syncbuf.Buffer
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

// An idle writer holds no timer: it is armed by the first line after a
// flush and disarmed by the flush, so an idle process is not woken up.
func TestBufferedWriterArmsItsTimerOnlyForWaitingLines(t *testing.T) {
	t.Parallel()
	var out syncbuf.Buffer
	w := NewBufferedWriter(&out, time.Millisecond)
	defer w.Close()
	armed := func() bool { w.mu.Lock(); defer w.mu.Unlock(); return w.armed }
	if armed() || w.timer != nil {
		t.Fatal("a new writer has a timer")
	}
	for i, line := range []string{"first\n", "second\n"} {
		if _, err := w.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(out.String(), line) || armed() {
			if time.Now().After(deadline) {
				t.Fatalf("write %d: flushed %q, timer armed %t after 10 s; want the line out and the timer disarmed", i, out.String(), armed())
			}
			time.Sleep(time.Millisecond)
		}
	}
	// After Close, lines go straight through.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("late\n")); err != nil || !strings.Contains(out.String(), "late\n") {
		t.Errorf("write after Close: %v, output %q", err, out.String())
	}
	if armed() {
		t.Error("the timer is armed after Close")
	}
}
