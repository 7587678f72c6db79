// Package interrupt is how registry-edge's and deltactl's commands stop on
// SIGINT and SIGTERM: the first signal cancels the work, which ends as it
// can; a second one exits at once. Either way the exit status is the one a
// shell reports for a process the signal ended: 128 + its number (130 for
// Ctrl-C, 143 for SIGTERM).
package interrupt

import (
	"os"
	"sync/atomic"
	"syscall"
)

// Status is the exit status for a command that s stopped: 128 + the
// signal's number, 130 (Ctrl-C) for a signal without one.
func Status(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return 128 + int(n)
	}
	return 128 + int(syscall.SIGINT)
}

// Watcher remembers the signal that stopped the work.
type Watcher struct {
	got atomic.Value // os.Signal
}

// Watch cancels the work on the first signal from sigs and calls force
// with the second: whoever presses Ctrl-C again wants out now, even when
// the way out (a cleanup, a request that does not watch its context)
// hangs. It returns after the second signal.
func (w *Watcher) Watch(sigs <-chan os.Signal, cancel func(), force func(os.Signal)) {
	w.got.Store(<-sigs)
	cancel()
	force(<-sigs)
}

// Status is the exit status of work that a signal stopped: Status of the
// first signal Watch received, 130 (Ctrl-C) if none came (the work was
// cancelled otherwise).
func (w *Watcher) Status() int {
	if s, ok := w.got.Load().(os.Signal); ok {
		return Status(s)
	}
	return Status(os.Interrupt)
}
