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
	clients map[string]*rate.Limiter
	// sweepAt is the number of clients at which refilled buckets are
	// forgotten: twice what the last sweep left (at most maxClients), so
	// that sweeping stays linear.
	sweepAt int
	sweptAt time.Time
	// overflow is the bucket of the addresses that find the table full.
	overflow *rate.Limiter
}

// maxClients bounds the buckets kept, about 250 bytes each: a host on the
// LAN can send from as many IPv6 addresses as it likes, each new one
// would cost a bucket, and the table would grow until memory runs out.
// Past it, new addresses share one bucket (so such a host is limited as
// one client) until sweeps free places.
const maxClients = 1 << 16

// fullSweepEvery is how often a full table is swept: each new address
// would otherwise cost a sweep of maxClients buckets.
const fullSweepEvery = time.Second

// NewRateLimiter allows each client address perSecond requests per second
// on average, in bursts of up to burst. now is the clock (nil: time.Now).
func NewRateLimiter(perSecond float64, burst int, now func() time.Time) *RateLimiter {
	if now == nil {
		now = time.Now
	}
	return &RateLimiter{perSecond: rate.Limit(perSecond), burst: burst, now: now, clients: map[string]*rate.Limiter{}, sweepAt: minSweep,
		overflow: rate.NewLimiter(rate.Limit(perSecond), burst)}
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

// minSweep is the fewest clients at which those whose buckets have
// refilled are forgotten.
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
	lim, ok := l.clients[host]
	if !ok {
		if len(l.clients) >= l.sweepAt && (l.sweepAt < maxClients || now.Sub(l.sweptAt) >= fullSweepEvery) {
			l.sweep(now)
			l.sweptAt = now
			l.sweepAt = min(max(minSweep, 2*len(l.clients)), maxClients)
		}
		if len(l.clients) < maxClients {
			lim = rate.NewLimiter(l.perSecond, l.burst)
			l.clients[host] = lim
		} else {
			lim = l.overflow
		}
	}
	res := lim.ReserveN(now, 1)
	l.mu.Unlock()
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return &RetryAfterError{After: max(d, time.Second)}
	}
	return nil
}

// sweep forgets the clients whose buckets have refilled: a new bucket is
// the same. (Forgetting one after a fixed idle time would hand a client
// whose bucket refills slower than that a full burst early.) l.mu is held.
func (l *RateLimiter) sweep(now time.Time) {
	for h, lim := range l.clients {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.clients, h)
		}
	}
}
