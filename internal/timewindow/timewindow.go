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
// if one is open now or there are none. Windows are wall-clock times: on
// the days clocks change for daylight saving time, 22:00 is 22:00 on the
// clock, not 22 hours after midnight.
func Next(ws []Window, now time.Time) time.Duration {
	if len(ws) == 0 {
		return 0
	}
	y, m, d := now.Date()
	hh, mm, ss := now.Clock()
	tod := time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute + time.Duration(ss)*time.Second + time.Duration(now.Nanosecond())
	best := time.Duration(-1)
	for _, w := range ws {
		if w.contains(tod) {
			return 0
		}
		start := at(y, m, d, w.Start, now.Location())
		if !start.After(now) {
			start = at(y, m, d+1, w.Start, now.Location())
		}
		if wait := start.Sub(now); best < 0 || wait < best {
			best = wait
		}
	}
	return best
}

// at is the time of day tod on the given day, by the clock of loc (a
// time the clock skips, such as 02:30 when it goes from 02:00 to 03:00,
// is the same time after the change: 03:30).
func at(y int, m time.Month, d int, tod time.Duration, loc *time.Location) time.Time {
	return time.Date(y, m, d, int(tod/time.Hour), int(tod%time.Hour/time.Minute), 0, 0, loc)
}
