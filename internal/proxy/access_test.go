package proxy

import (
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// Content evicted (Forget) leaves the run's record of accesses: a step of
// the clock does not write its access again (a record of content that is
// gone), and the record holds what the store holds, not everything the
// process ever served.
func TestForgottenContentIsNotRestamped(t *testing.T) {
	var elapsed time.Duration
	a := &accessTracker{elapsed: func() time.Duration { return elapsed }}
	kept, evicted := digest.FromString("kept"), digest.FromString("evicted")
	wall := time.Date(1970, 1, 1, 0, 10, 0, 0, time.UTC)
	a.touch(kept)
	a.touch(evicted)
	if at, stepped := a.drain(wall); stepped || len(at) != 2 {
		t.Fatalf("first drain: %v, stepped %v; want both accesses, no step", at, stepped)
	}
	a.forget(evicted)
	elapsed += time.Minute
	at, stepped := a.drain(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)) // NTP stepped the clock
	if !stepped {
		t.Fatal("a step of 56 years was not seen")
	}
	if _, ok := at[evicted]; ok {
		t.Errorf("the access of evicted content was written again after the step: %v", at)
	}
	if _, ok := at[kept]; !ok {
		t.Errorf("the access of kept content was not written again after the step: %v", at)
	}
}
