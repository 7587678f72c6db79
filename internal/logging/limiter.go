package logging

import (
	"log/slog"
	"sync"
	"time"
)

// Limiter decides which of a repeated event's lines are logged: the first
// of each key, then at most one per interval, each carrying how many were
// left out since the line before. An event a client repeats forever (a
// device retrying every few seconds with a refused certificate) would
// otherwise flood a small gateway's journal and bury other warnings.
//
// Its memory is bounded: a key not seen for an interval is forgotten, with
// the count of its events left out (its next event is logged anyway), and
// past maxKeys keys, new ones share a single entry, so a LAN host sending
// from ever new IPv6 addresses gets one line per interval, not one per
// address.
type Limiter struct {
	every time.Duration
	now   func() time.Time
	max   int

	mu      sync.Mutex
	entries map[string]*limited
	// sweepAt is the number of keys at which idle ones are forgotten:
	// twice what the last sweep left (at most max), so that sweeping
	// stays linear.
	sweepAt int
	sweptAt time.Time
	// overflow counts the events of the keys that find the table full.
	overflow limited
}

type limited struct {
	logged     time.Time // the last line
	seen       time.Time // the last event
	suppressed int       // events not logged since logged
}

// maxKeys bounds the keys remembered, a few hundred bytes each.
const maxKeys = 4096

// minSweep is the fewest keys at which idle ones are forgotten.
const minSweep = 256

// fullSweepEvery is how often a full table is swept: each new key would
// otherwise cost a sweep of max entries.
const fullSweepEvery = time.Second

// NewLimiter logs each key at most once per every; now is the clock (nil:
// time.Now).
func NewLimiter(every time.Duration, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{every: every, now: now, max: maxKeys, entries: map[string]*limited{}, sweepAt: minSweep}
}

// Allow reports whether an event of key is logged now. If it is, attrs
// says how many events were left out since the previous line
// (suppressed, since), or is empty when none were.
func (l *Limiter) Allow(key string) (attrs []slog.Attr, ok bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e, found := l.entries[key]
	if !found {
		if len(l.entries) >= l.sweepAt && (l.sweepAt < l.max || now.Sub(l.sweptAt) >= fullSweepEvery) {
			l.sweep(now)
			l.sweptAt = now
			l.sweepAt = min(max(minSweep, 2*len(l.entries)), l.max)
		}
		if len(l.entries) >= l.max {
			e = &l.overflow
		} else {
			e = &limited{}
			l.entries[key] = e
			// A new entry's first event is always logged.
			e.seen, e.logged = now, now
			return nil, true
		}
	}
	e.seen = now
	// A line stamped after now (the wall clock stepped back) does not
	// hold the next one back for as long as the step.
	if d := now.Sub(e.logged); d < l.every && d >= 0 {
		e.suppressed++
		return nil, false
	}
	if e.suppressed > 0 {
		attrs = []slog.Attr{slog.Int("suppressed", e.suppressed), slog.Time("since", e.logged)}
	}
	e.logged, e.suppressed = now, 0
	return attrs, true
}

// sweep forgets the keys without an event for an interval: their next
// one is logged anyway. l.mu is held.
func (l *Limiter) sweep(now time.Time) {
	for k, e := range l.entries {
		if d := now.Sub(e.seen); d >= l.every || d < 0 {
			delete(l.entries, k)
		}
	}
}
