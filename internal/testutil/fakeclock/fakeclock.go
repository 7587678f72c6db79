// Package fakeclock is a settable clock with timers for tests: what reads
// it (a proxy's Options.Now and Options.After, an upstream client's
// breaker) sees time move only when the test advances it.
package fakeclock

import (
	"sync"
	"testing"
	"time"
)

// Clock is safe for use by several goroutines: tests move it while
// requests, and the background work they start, read it.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	mono   time.Duration // moved by Advance, not by Step
	timers []timer
	armed  chan time.Duration // every After's duration, as it is armed
}

type timer struct {
	at time.Time
	c  chan time.Time
}

// New returns a clock at now.
func New(now time.Time) *Clock {
	return &Clock{now: now, armed: make(chan time.Duration, 1000)}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After is the clock's timer: the channel receives once Advance has moved
// the clock by d (at once for d <= 0).
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
	} else {
		c.timers = append(c.timers, timer{at: c.now.Add(d), c: ch})
	}
	select {
	case c.armed <- d:
	default: // nobody watches this many timers being armed
	}
	return ch
}

// Advance moves the clock by d and fires the timers it passes.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.mono += d
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.at.After(c.now) {
			kept = append(kept, t)
			continue
		}
		t.c <- c.now
	}
	c.timers = kept
}

// Step sets the wall clock d later (earlier if negative) without time
// passing, as NTP does on a gateway that booted without an RTC: Now
// moves, Elapsed does not, and no timer fires (Go's timers run on the
// monotonic clock).
func (c *Clock) Step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for i := range c.timers {
		c.timers[i].at = c.timers[i].at.Add(d)
	}
}

// Elapsed is the clock's monotonic reading: the time Advance has moved
// it by, steps not counted (a proxy's Options.Elapsed).
func (c *Clock) Elapsed() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mono
}

// Armed receives the duration of every timer After arms (up to 1000 not
// yet received).
func (c *Clock) Armed() <-chan time.Duration { return c.armed }

// WaitArmed waits until a timer of more than 0 is armed (a fill begins its
// backoff; one whose transfer made progress resumes after 0) and returns
// its duration; the limit only turns a hang into a failure.
func (c *Clock) WaitArmed(t testing.TB) time.Duration {
	t.Helper()
	limit := time.After(20 * time.Second)
	for {
		select {
		case d := <-c.armed:
			if d > 0 {
				return d
			}
		case <-limit:
			t.Fatal("no timer armed: the fill does not wait")
			return 0
		}
	}
}
