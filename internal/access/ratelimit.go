package access

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// RateLimiter bounds the registry API requests of each client address, so
// that one misbehaving device cannot monopolise the mirror or its uplink.
type RateLimiter struct {
	perSecond rate.Limit
	burst     int
	now       func() time.Time

	mu      sync.Mutex
	clients map[string]*client
	// sweepAt is the number of clients at which idle ones are forgotten:
	// twice what the last sweep left, so that sweeping stays linear.
	sweepAt int
}

type client struct {
	lim  *rate.Limiter
	seen time.Time
}

// idleAfter is how long a client's bucket is kept after its last request.
const idleAfter = 10 * time.Minute

// NewRateLimiter allows each client address perSecond requests per second
// on average, in bursts of up to burst. now is the clock (nil: time.Now).
func NewRateLimiter(perSecond float64, burst int, now func() time.Time) *RateLimiter {
	if now == nil {
		now = time.Now
	}
	return &RateLimiter{perSecond: rate.Limit(perSecond), burst: burst, now: now, clients: map[string]*client{}, sweepAt: minSweep}
}

// RetryAfterError is a refusal with the time after which the client may
// try again.
type RetryAfterError struct {
	After time.Duration
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("too many requests from this address; retry after %s", e.After.Round(time.Second))
}

// RetryAfter is when the client may try again.
func (e *RetryAfterError) RetryAfter() time.Duration { return e.After }

// Is makes the error match errdef.ErrTooManyRequests.
func (e *RetryAfterError) Is(target error) bool { return target == errdef.ErrTooManyRequests }

// minSweep is the fewest clients at which idle ones are forgotten.
const minSweep = 4096

// clientKey is the bucket r's client draws from: its address, an
// IPv4-mapped IPv6 address as the IPv4 one. Not the /64 of an IPv6 one:
// a site's LAN is one /64, and every device would share a bucket. A host
// rotating addresses gets a bucket per address; sweeping when the count
// doubles keeps that linear.
func clientKey(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	return a.Unmap().WithZone("").String()
}

// Allow takes one request of r's client from its bucket, or returns a
// *RetryAfterError.
func (l *RateLimiter) Allow(r *http.Request) error {
	host := clientKey(r)
	now := l.now()
	l.mu.Lock()
	c, ok := l.clients[host]
	if !ok {
		if len(l.clients) >= l.sweepAt {
			l.sweep(now)
			l.sweepAt = max(minSweep, 2*len(l.clients))
		}
		c = &client{lim: rate.NewLimiter(l.perSecond, l.burst)}
		l.clients[host] = c
	}
	c.seen = now
	res := c.lim.ReserveN(now, 1)
	l.mu.Unlock()
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return &RetryAfterError{After: max(d, time.Second)}
	}
	return nil
}

// sweep forgets clients idle for idleAfter; l.mu is held.
func (l *RateLimiter) sweep(now time.Time) {
	for h, c := range l.clients {
		if now.Sub(c.seen) > idleAfter {
			delete(l.clients, h)
		}
	}
}
