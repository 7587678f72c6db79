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
