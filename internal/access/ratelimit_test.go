package access

import (
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

func TestRateLimiterPerAddress(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := NewRateLimiter(2, 3, func() time.Time { return now })
	req := func(addr string) error {
		r := httptest.NewRequest("GET", "/v2/", nil)
		r.RemoteAddr = addr
		return l.Allow(r)
	}
	for i := 0; i < 3; i++ {
		if err := req("10.0.0.1:1000"); err != nil {
			t.Fatalf("request %d within the burst: %v", i, err)
		}
	}
	err := req("10.0.0.1:1001") // another port, same device
	var ra *RetryAfterError
	if !errors.As(err, &ra) || !errors.Is(err, errdef.ErrTooManyRequests) || ra.After < time.Second {
		t.Fatalf("request past the burst: %v, want a RetryAfterError of at least 1s", err)
	}
	if err := req("10.0.0.2:1000"); err != nil {
		t.Errorf("another device is limited by the first one's use: %v", err)
	}
	now = now.Add(time.Second) // two tokens back
	for i := 0; i < 2; i++ {
		if err := req("10.0.0.1:1000"); err != nil {
			t.Errorf("request %d after a second: %v", i, err)
		}
	}
	if err := req("10.0.0.1:1000"); err == nil {
		t.Error("third request in that second was allowed")
	}
}
