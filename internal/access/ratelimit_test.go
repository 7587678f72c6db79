package access

import (
	"errors"
	"net/http/httptest"
	"strconv"
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

// Each IPv6 device of a site's LAN (one /64) has its own bucket, and an
// IPv4 client has one bucket whether it comes as IPv4 or IPv4-mapped. Many
// clients cost a sweep now and then, not one per new client.
func TestRateLimiterPerDeviceAndSweeps(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := NewRateLimiter(1, 1, func() time.Time { return now })
	req := func(addr string) error {
		r := httptest.NewRequest("GET", "/v2/", nil)
		r.RemoteAddr = addr
		return l.Allow(r)
	}
	if err := req("[2001:db8:0:1::1]:1000"); err != nil {
		t.Fatal(err)
	}
	if err := req("[2001:db8:0:1::1]:1001"); err == nil {
		t.Error("a second request past the burst from the same device was allowed")
	}
	if err := req("[2001:db8:0:1::beef]:1000"); err != nil {
		t.Errorf("another device of the same LAN /64 is limited by the first one's use: %v", err)
	}
	if err := req("[::ffff:10.0.0.1]:1000"); err != nil {
		t.Fatal(err)
	}
	if err := req("10.0.0.1:1000"); err == nil {
		t.Error("an IPv4 client by its mapped IPv6 address got a second bucket")
	}

	// Past minSweep clients, those whose buckets refilled go, and the
	// next sweep waits for twice what is left.
	for i := range minSweep - len(l.clients) {
		req("10.1." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256) + ":1")
	}
	now = now.Add(2 * time.Second)
	req("10.2.0.1:1")
	if n := len(l.clients); n != 1 {
		t.Errorf("%d clients kept after a sweep, want 1 (the new one)", n)
	}
	if l.sweepAt != minSweep {
		t.Errorf("next sweep at %d clients, want %d", l.sweepAt, minSweep)
	}
}

// A host that sends from ever new addresses (an IPv6 host picks from its
// /64) gets a bucket per address only up to maxClients; past it the new
// addresses share one bucket, and the clients already known keep theirs.
// Once buckets refill, a sweep makes room again.
func TestRateLimiterMemoryIsBounded(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := NewRateLimiter(1, 1, func() time.Time { return now })
	r := httptest.NewRequest("GET", "/v2/", nil)
	req := func(i int) error {
		r.RemoteAddr = "[2001:db8::" + strconv.FormatInt(int64(i), 16) + "]:1000"
		return l.Allow(r)
	}
	for i := range maxClients {
		if err := req(i); err != nil {
			t.Fatalf("address %d, within the table: %v", i, err)
		}
	}
	if err := req(maxClients); err != nil {
		t.Errorf("first address past the table: %v, want the shared bucket's token", err)
	}
	if err := req(maxClients + 1); err == nil {
		t.Error("second address past the table was allowed: it got a bucket of its own")
	}
	if n := len(l.clients); n > maxClients {
		t.Errorf("%d buckets kept, want at most %d", n, maxClients)
	}
	if err := req(0); err == nil {
		t.Error("a known client was allowed past its burst")
	}

	now = now.Add(2 * time.Second) // every bucket refilled
	if err := req(maxClients + 2); err != nil {
		t.Errorf("a new address after the buckets refilled: %v", err)
	}
	if n := len(l.clients); n != 1 {
		t.Errorf("%d buckets kept after the sweep, want 1 (the new address)", n)
	}
}

// A client's bucket is kept until it has refilled, however long the
// client is quiet: forgotten earlier, the client would come back to a
// full burst it has not earned.
func TestRateLimiterKeepsABucketUntilItRefills(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := NewRateLimiter(0.001, 1, func() time.Time { return now }) // a token every 1000 s
	req := func(addr string) error {
		r := httptest.NewRequest("GET", "/v2/", nil)
		r.RemoteAddr = addr
		return l.Allow(r)
	}
	if err := req("10.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	for i := range minSweep - 1 { // the table is then full enough to be swept
		req("10.1." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256) + ":1")
	}
	now = now.Add(15 * time.Minute) // quiet, but 100 s short of a token
	req("10.2.0.1:1")               // a new client: the table is swept
	if err := req("10.0.0.1:1"); err == nil {
		t.Error("a client quiet for 15 minutes got a token back after a sweep; its bucket refills in 1000 s")
	}
}
