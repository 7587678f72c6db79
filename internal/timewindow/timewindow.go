// Package timewindow parses and evaluates daily time windows such as
// 22:00-06:00, in the machine's local time.
package timewindow

import (
	"fmt"
	"strings"
	"time"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// Window is a daily time range in the machine's local time, such as
// 22:00-06:00 (it may wrap past midnight). Start is inclusive, End
// exclusive; Start == End means the whole day.
type Window struct {
	Start, End time.Duration // since midnight
}

// Parse parses "HH:MM-HH:MM".
func Parse(s string) (Window, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return Window{}, fmt.Errorf("time window %q: want HH:MM-HH:MM: %w", s, errdef.ErrInvalid)
	}
	start, err := parseClock(a)
	if err != nil {
		return Window{}, fmt.Errorf("time window %q: %w", s, err)
	}
	end, err := parseClock(b)
	if err != nil {
		return Window{}, fmt.Errorf("time window %q: %w", s, err)
	}
	return Window{Start: start, End: end}, nil
}

func parseClock(s string) (time.Duration, error) {
	t, err := time.Parse("15:04", strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not HH:MM: %w", s, errdef.ErrInvalid)
	}
	return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute, nil
}

func (w Window) String() string {
	f := func(d time.Duration) string { return fmt.Sprintf("%02d:%02d", int(d.Hours()), int(d.Minutes())%60) }
	return f(w.Start) + "-" + f(w.End)
}

// contains reports whether the time of day tod lies in w.
func (w Window) contains(tod time.Duration) bool {
	switch {
	case w.Start == w.End:
		return true
	case w.Start < w.End:
		return tod >= w.Start && tod < w.End
	default: // wraps past midnight
		return tod >= w.Start || tod < w.End
	}
}

// Next returns how long to wait from now until one of ws is open: 0
// if one is open now or there are none.
func Next(ws []Window, now time.Time) time.Duration {
	if len(ws) == 0 {
		return 0
	}
	y, m, d := now.Date()
	midnight := time.Date(y, m, d, 0, 0, 0, 0, now.Location())
	tod := now.Sub(midnight)
	best := time.Duration(-1)
	for _, w := range ws {
		if w.contains(tod) {
			return 0
		}
		start := midnight.Add(w.Start)
		if !start.After(now) {
			start = time.Date(y, m, d+1, 0, 0, 0, 0, now.Location()).Add(w.Start)
		}
		if wait := start.Sub(now); best < 0 || wait < best {
			best = wait
		}
	}
	return best
}
