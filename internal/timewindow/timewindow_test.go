package timewindow

import (
	"testing"
	"time"
)

func TestNext(t *testing.T) {
	night, err := Parse("22:00-06:00")
	if err != nil {
		t.Fatal(err)
	}
	lunch, err := Parse("12:00-13:30")
	if err != nil {
		t.Fatal(err)
	}
	at := func(h, m int) time.Time { return time.Date(2026, 3, 10, h, m, 0, 0, time.UTC) }
	for _, tt := range []struct {
		ws   []Window
		now  time.Time
		want time.Duration
	}{
		{nil, at(9, 0), 0},
		{[]Window{night}, at(23, 0), 0},
		{[]Window{night}, at(5, 59), 0},
		{[]Window{night}, at(6, 0), 16 * time.Hour},
		{[]Window{night}, at(21, 30), 30 * time.Minute},
		{[]Window{night, lunch}, at(9, 0), 3 * time.Hour},
		{[]Window{night, lunch}, at(13, 30), 8*time.Hour + 30*time.Minute},
		{[]Window{lunch}, at(14, 0), 22 * time.Hour},
		{[]Window{{Start: 3 * time.Hour, End: 3 * time.Hour}}, at(9, 0), 0},
	} {
		if got := Next(tt.ws, tt.now); got != tt.want {
			t.Errorf("Next(%v, %s) = %s, want %s", tt.ws, tt.now.Format("15:04"), got, tt.want)
		}
	}
	for _, bad := range []string{"", "22:00", "25:00-01:00", "22-06", "aa:bb-cc:dd"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
		}
	}
	if got := night.String(); got != "22:00-06:00" {
		t.Errorf("String() = %q", got)
	}
}

// On the days clocks change, windows open and close by the clock: a
// night window 22:00-06:00 opens at 22:00 local time, not 22 hours after
// midnight (21:00 or 23:00 by the clock).
func TestNextOnDaylightSavingDays(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	night, err := Parse("22:00-06:00")
	if err != nil {
		t.Fatal(err)
	}
	early, err := Parse("02:30-04:00") // 02:30 does not exist on 2026-03-29
	if err != nil {
		t.Fatal(err)
	}
	// 2026-03-29: 02:00 CET becomes 03:00 CEST. 2026-10-25: 03:00 CEST
	// becomes 02:00 CET.
	at := func(mo time.Month, d, h, m int) time.Time { return time.Date(2026, mo, d, h, m, 0, 0, berlin) }
	for _, tt := range []struct {
		ws   []Window
		now  time.Time
		want time.Duration
	}{
		{[]Window{night}, at(time.March, 29, 21, 30), 30 * time.Minute},
		{[]Window{night}, at(time.March, 29, 22, 30), 0},
		{[]Window{night}, at(time.March, 29, 5, 59), 0},
		{[]Window{night}, at(time.March, 29, 6, 0), 16 * time.Hour},
		{[]Window{night}, at(time.October, 25, 21, 30), 30 * time.Minute},
		{[]Window{night}, at(time.October, 25, 22, 30), 0},
		{[]Window{night}, at(time.October, 25, 6, 0), 16 * time.Hour},
		// The day before the change: 6 hours of clock, 5 of time.
		{[]Window{{Start: 3 * time.Hour, End: 4 * time.Hour}}, at(time.March, 28, 22, 0), 4 * time.Hour},
		{[]Window{early}, at(time.March, 29, 1, 0), 90 * time.Minute}, // opens at 03:30 CEST
		{[]Window{early}, at(time.March, 29, 3, 0), 0},
	} {
		if got := Next(tt.ws, tt.now); got != tt.want {
			t.Errorf("Next(%v, %s) = %s, want %s", tt.ws, tt.now.Format("Jan 2 15:04 MST"), got, tt.want)
		}
	}
}
