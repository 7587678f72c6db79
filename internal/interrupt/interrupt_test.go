package interrupt

import (
	"os"
	"syscall"
	"testing"
)

func TestStatus(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		sig  os.Signal
		want int
	}{
		{os.Interrupt, 130},
		{syscall.SIGINT, 130},
		{syscall.SIGTERM, 143},
	} {
		if got := Status(tt.sig); got != tt.want {
			t.Errorf("Status(%v) = %d, want %d", tt.sig, got, tt.want)
		}
	}
}

// The first signal cancels and is the one Status reports; the second is
// handed to force.
func TestWatch(t *testing.T) {
	t.Parallel()
	var w Watcher
	if got := w.Status(); got != 130 {
		t.Errorf("Status() before any signal = %d, want 130", got)
	}
	sigs := make(chan os.Signal, 2)
	cancelled := make(chan struct{})
	forced := make(chan os.Signal, 1)
	done := make(chan struct{})
	go func() {
		w.Watch(sigs, func() { close(cancelled) }, func(s os.Signal) { forced <- s })
		close(done)
	}()
	sigs <- syscall.SIGTERM
	<-cancelled
	if got := w.Status(); got != 143 {
		t.Errorf("Status() after SIGTERM = %d, want 143", got)
	}
	sigs <- os.Interrupt
	if s := <-forced; s != os.Interrupt {
		t.Errorf("force got %v, want %v", s, os.Interrupt)
	}
	<-done
	if got := w.Status(); got != 143 {
		t.Errorf("Status() after SIGTERM then Ctrl-C = %d, want 143 (the first)", got)
	}
}
