package logging

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/registry-edge/registry-edge/internal/testutil/fakeclock"
)

// A key repeated forever is logged once per interval, each line carrying
// how many were left out since the one before; other keys are not held
// back by it.
func TestLimiterLogsAKeyOncePerInterval(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 11, 25, 12, 0, 5, 0, time.UTC)
	clk := fakeclock.New(start)
	l := NewLimiter(10*time.Minute, clk.Now)
	type step struct {
		advance time.Duration
		key     string
		ok      bool
		attrs   []slog.Attr
	}
	steps := []step{
		{0, "a", true, nil},
		{0, "b", true, nil},
		{5 * time.Second, "a", false, nil},
		{5 * time.Second, "a", false, nil},
		{5 * time.Second, "b", false, nil},
		{10*time.Minute - 15*time.Second, "a", true, []slog.Attr{slog.Int("suppressed", 2), slog.Time("since", start)}},
		{time.Second, "a", false, nil},
		{0, "b", true, []slog.Attr{slog.Int("suppressed", 1), slog.Time("since", start)}},
		{10 * time.Minute, "a", true, []slog.Attr{slog.Int("suppressed", 1), slog.Time("since", start.Add(10*time.Minute))}},
		{10 * time.Minute, "a", true, nil},
	}
	for i, s := range steps {
		clk.Advance(s.advance)
		attrs, ok := l.Allow(s.key)
		if ok != s.ok || fmt.Sprint(attrs) != fmt.Sprint(s.attrs) {
			t.Errorf("step %d: Allow(%q) at +%s = %v, %v; want %v, %v", i, s.key, clk.Now().Sub(start), attrs, ok, s.attrs, s.ok)
		}
	}
}

// A line stamped after now (the wall clock stepped back) does not hold the
// next one back for as long as the step.
func TestLimiterAfterAClockStepBack(t *testing.T) {
	t.Parallel()
	clk := fakeclock.New(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))
	l := NewLimiter(10*time.Minute, clk.Now)
	l.Allow("a")
	clk.Step(-24 * time.Hour)
	if _, ok := l.Allow("a"); !ok {
		t.Errorf("Allow() after a step back of a day = false, want true")
	}
}

// Ever new keys (a host sending from ever new IPv6 addresses) neither grow
// the table past its bound nor get a line each: past the bound they share
// one entry, logged once per interval. Keys idle for an interval are
// forgotten, and make room for new ones.
func TestLimiterMemoryIsBounded(t *testing.T) {
	t.Parallel()
	clk := fakeclock.New(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))
	l := NewLimiter(10*time.Minute, clk.Now)
	l.max = 1000
	logged := 0
	for i := range 10 * l.max {
		if _, ok := l.Allow(fmt.Sprintf("2001:db8::%x", i)); ok {
			logged++
		}
	}
	if len(l.entries) > l.max {
		t.Errorf("%d keys remembered after %d new ones, want at most %d", len(l.entries), 10*l.max, l.max)
	}
	if want := l.max + 1; logged != want {
		t.Errorf("%d lines for %d new keys within an interval, want %d (one per remembered key, one for the rest)", logged, 10*l.max, want)
	}

	clk.Advance(10 * time.Minute)
	attrs, ok := l.Allow("fresh")
	if !ok || len(l.entries) != 1 {
		t.Errorf("Allow(new key) an interval later = %v, %v with %d keys remembered; want true and only the new key", attrs, ok, len(l.entries))
	}
}
