package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// BreakerOptions configures the circuit breaker of a Client. The zero value
// disables the breaker.
//
// The breaker sits under the retry and auth layers and sees every attempt
// the client makes to the registry host and to its token server, which are
// one failure domain for a site behind one uplink. Redirected requests (to
// object storage or a CDN) are not counted: they only happen after the
// registry answered, and a broken CDN must not make manifests unreachable.
type BreakerOptions struct {
	// Failures is the number of consecutive failed attempts that opens the
	// breaker; 0 disables it. An attempt fails on a connection-level error
	// (dial error, connect, TLS or response-header timeout, reset before a
	// response) or a 429 or 5xx answer other than 501. Other answers,
	// including 4xx, are successes: the upstream is reachable.
	Failures int
	// MinProbe and MaxProbe bound the wait, while the breaker is open,
	// before one request is let through as a probe. The wait before probe n
	// (0-based) is drawn from [d/2, d] with d = min(MaxProbe, MinProbe·2^n),
	// and is never below MinProbe. Zero MinProbe means 1s, zero MaxProbe
	// means 1m.
	MinProbe, MaxProbe time.Duration
}

// Defaults for zero BreakerOptions durations.
const (
	defaultMinProbe = time.Second
	defaultMaxProbe = time.Minute
)

// BreakerState is the state of a Client's circuit breaker. The values are
// those of the registry_edge_upstream_breaker_state metric.
type BreakerState int

// Breaker states.
const (
	// BreakerClosed lets every request through.
	BreakerClosed BreakerState = 0
	// BreakerOpen refuses every request until the next probe is due.
	BreakerOpen BreakerState = 1
	// BreakerHalfOpen has one probe request in flight and refuses the rest.
	BreakerHalfOpen BreakerState = 2
)

func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	}
	return fmt.Sprintf("BreakerState(%d)", int(s))
}

// BreakerOpenError is the cause of an *Error for a request that the open
// circuit breaker refused without contacting the upstream. It matches
// errdef.ErrUnavailable.
type BreakerOpenError struct {
	// Failures is the number of consecutive failures that opened the
	// breaker.
	Failures int
	// Since is when the breaker opened.
	Since time.Time
	// NextProbe is how long until a probe request may go; 0 when a probe
	// is in flight now.
	NextProbe time.Duration
	// ProbeAt is when that is (zero when a probe is in flight). The
	// message names the time rather than the wait: it is kept, for
	// instance as a prefetch's last error, and read later.
	ProbeAt time.Time
}

func (e *BreakerOpenError) Error() string {
	if e.NextProbe > 0 {
		return fmt.Sprintf("upstream unreachable: circuit breaker open after %d consecutive failures, next probe at %s",
			e.Failures, e.ProbeAt.UTC().Format("2006-01-02T15:04:05.000Z"))
	}
	return fmt.Sprintf("upstream unreachable: circuit breaker open after %d consecutive failures, probe in flight", e.Failures)
}

// Unwrap returns errdef.ErrUnavailable.
func (e *BreakerOpenError) Unwrap() error { return errdef.ErrUnavailable }

// Health is a snapshot of what a Client knows about its upstream's
// reachability, for metrics.
type Health struct {
	// State is the circuit breaker state (always BreakerClosed when the
	// breaker is disabled).
	State BreakerState
	// LastContact is when the upstream (registry or token server) last
	// answered with any status; zero if it never did.
	LastContact time.Time
	// Refused counts the requests the open breaker refused.
	Refused uint64
	// ProbeDue is set when the breaker is open and its next request
	// would go as the probe.
	ProbeDue bool
	// Recovered is closed when the breaker next closes after it opened
	// (nil when the breaker is disabled): work that waits for the link can
	// wake when another request proved it back. Taken while the breaker is
	// closed, it waits for the next outage to end, not for any success:
	// a wait that began before the breaker opened must still end when the
	// link is back.
	Recovered <-chan struct{}
}

// Refusing reports whether a request now would be refused before it
// leaves: the breaker is open and its probe is not due yet.
func (h Health) Refusing() bool { return h.State == BreakerOpen && !h.ProbeDue }

// Health returns the client's reachability state.
func (c *Client) Health() Health { return c.breaker.health() }

// outcome is what one attempt says about the upstream's reachability.
type outcome int

const (
	outcomeNeutral outcome = iota // says nothing (caller cancelled, policy or certificate refusal)
	outcomeSuccess                // the upstream answered
	outcomeFailure                // the upstream could not be reached or is failing
)

// classify maps the result of one attempt to an outcome.
func classify(resp *http.Response, err error) outcome {
	if err == nil {
		switch {
		case resp.StatusCode >= 500 && resp.Header.Get(HeaderTierError) != "":
			// A registry-edge tier above, up, whose own upstream failed.
			return outcomeSuccess
		case resp.StatusCode == http.StatusInternalServerError:
			// The registry answered, at once, that this request failed
			// (distribution does so for content it cannot handle, such as
			// sha512 blobs): nothing about its health. Counting it let a
			// few bad requests cut every other fill off (ADR 0005).
			return outcomeNeutral
		case resp.StatusCode == http.StatusTooManyRequests ||
			(resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented):
			return outcomeFailure
		}
		return outcomeSuccess
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, errPolicy) {
		return outcomeNeutral
	}
	// A certificate problem is a configuration error, not an outage: the
	// upstream answered the handshake. Opening the breaker would only turn
	// a precise error into "unreachable".
	if isCertificateError(err) {
		return outcomeNeutral
	}
	return outcomeFailure
}

// isTimeout reports whether err is a timeout: connect, TLS handshake,
// response header, or the caller's deadline.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// breaker is a consecutive-failure circuit breaker with one probe at a
// time and exponential, jittered probe backoff. It also records when the
// upstream last answered. It is safe for concurrent use.
type breaker struct {
	threshold          int // 0: disabled
	minProbe, maxProbe time.Duration
	// lease is how long a probe may stay unanswered before another probe
	// is let through; it covers a lost probe (the transport's timeouts
	// bound a real one).
	lease time.Duration
	now   func() time.Time
	randN func(int64) int64 // returns a value in [0, n)

	mu         sync.Mutex
	state      BreakerState
	fails      int           // consecutive failures (closed), or those that opened it
	opened     time.Time     // when it last opened
	probes     int           // failed probes since it opened: the backoff exponent
	probeAt    time.Time     // open: when the next probe may go
	probeStart time.Time     // half-open: when the probe left
	gen        uint64        // incremented for every probe admitted
	recovered  chan struct{} // closed when it next closes after opening; nil until asked for or opened

	refused     atomic.Uint64
	lastContact atomic.Int64 // unix nanoseconds, 0: never
}

func newBreaker(o BreakerOptions, lease time.Duration, now func() time.Time) *breaker {
	if o.MinProbe <= 0 {
		o.MinProbe = defaultMinProbe
	}
	if o.MaxProbe <= 0 {
		o.MaxProbe = defaultMaxProbe
	}
	if o.MaxProbe < o.MinProbe {
		o.MaxProbe = o.MinProbe
	}
	if now == nil {
		now = time.Now
	}
	return &breaker{
		threshold: max(o.Failures, 0),
		minProbe:  o.MinProbe,
		maxProbe:  o.MaxProbe,
		lease:     lease,
		now:       now,
		randN:     rand.Int64N,
	}
}

// ticket is the permission to send one attempt.
type ticket struct {
	probe bool
	gen   uint64
}

// refusal returns the error for a refused request; b.mu must be held.
func (b *breaker) refusal(now time.Time) error {
	b.refused.Add(1)
	e := &BreakerOpenError{Failures: b.fails, Since: b.opened}
	if b.state == BreakerOpen {
		e.NextProbe, e.ProbeAt = b.probeAt.Sub(now), b.probeAt
	}
	return e
}

// check reports, without admitting a probe, whether a request would be
// refused now. It lets the client fail before it builds a request.
func (b *breaker) check() error {
	if b.threshold == 0 {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	switch b.state {
	case BreakerOpen:
		if now.Before(b.probeAt) {
			return b.refusal(now)
		}
	case BreakerHalfOpen:
		if now.Sub(b.probeStart) < b.lease {
			return b.refusal(now)
		}
	}
	return nil
}

// allow admits one attempt or returns a *BreakerOpenError. While open, the
// first attempt after the probe time becomes the probe and the breaker
// turns half-open; a probe unanswered for longer than the lease is
// replaced by the next attempt.
func (b *breaker) allow() (ticket, error) {
	if b.threshold == 0 {
		return ticket{}, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	switch b.state {
	case BreakerOpen:
		if now.Before(b.probeAt) {
			return ticket{}, b.refusal(now)
		}
	case BreakerHalfOpen:
		if now.Sub(b.probeStart) < b.lease {
			return ticket{}, b.refusal(now)
		}
	default:
		return ticket{}, nil
	}
	b.state = BreakerHalfOpen
	b.probeStart = now
	b.gen++
	return ticket{probe: true, gen: b.gen}, nil
}

// transition is a change of the breaker between closed and open that
// done made, for the log: one record per outage, not one per request.
type transition struct {
	opened, closed bool
	fails          int           // opened: the consecutive failures
	nextProbe      time.Duration // opened: the wait before the probe
	down           time.Duration // closed: how long it was open
}

// done records the outcome of an attempt admitted with t and returns the
// transition it caused, if any.
func (b *breaker) done(t ticket, o outcome) transition {
	if o == outcomeNeutral && !t.probe {
		return transition{}
	}
	if b.threshold == 0 {
		return transition{}
	}
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if t.probe && t.gen == b.gen && b.state == BreakerHalfOpen {
		switch o {
		case outcomeSuccess:
			b.close()
			return transition{closed: true, down: now.Sub(b.opened)}
		case outcomeFailure:
			b.probes++
			b.state = BreakerOpen
			b.probeAt = now.Add(b.probeDelay(b.probes))
		default:
			// The probe's caller went away: the next attempt probes.
			b.state = BreakerOpen
			b.probeAt = now
		}
		return transition{}
	}
	switch o {
	case outcomeSuccess:
		// Any answer, even one to a request sent before the breaker
		// opened, proves the upstream reachable.
		wasOpen := b.state != BreakerClosed
		b.close()
		if wasOpen {
			return transition{closed: true, down: now.Sub(b.opened)}
		}
	case outcomeFailure:
		if b.state != BreakerClosed {
			return transition{} // late failures do not push the probe back
		}
		b.fails++
		if b.fails >= b.threshold {
			b.state = BreakerOpen
			b.opened = now
			if b.recovered == nil {
				b.recovered = make(chan struct{})
			}
			b.probes = 0
			b.probeAt = now.Add(b.probeDelay(0))
			return transition{opened: true, fails: b.fails, nextProbe: b.probeAt.Sub(now)}
		}
	}
	return transition{}
}

// close closes the breaker; b.mu must be held. Recovered is closed only
// when the breaker was open or half-open: a success while it is closed
// ends no outage.
func (b *breaker) close() {
	if b.state != BreakerClosed && b.recovered != nil {
		close(b.recovered)
		b.recovered = nil
	}
	b.state = BreakerClosed
	b.fails = 0
	b.probes = 0
}

// open reports whether the breaker is open or half-open: a retry would be
// refused or would compete with the probe.
func (b *breaker) open() bool {
	if b.threshold == 0 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state != BreakerClosed
}

// probeDelay returns the wait before probe n (0-based): drawn from
// [d/2, d] with d = min(maxProbe, minProbe·2^n), at least minProbe.
// Jitter keeps many edges that lost one uplink from probing in step.
func (b *breaker) probeDelay(n int) time.Duration {
	d := b.maxProbe
	if n < 62 && b.minProbe <= b.maxProbe>>uint(n) {
		d = b.minProbe << uint(n)
	}
	half := d / 2
	w := half + time.Duration(b.randN(int64(d-half)+1))
	return max(w, b.minProbe)
}

// contact records that the upstream answered, with any status.
func (b *breaker) contact() { b.lastContact.Store(b.now().UnixNano()) }

func (b *breaker) health() Health {
	h := Health{Refused: b.refused.Load()}
	if ns := b.lastContact.Load(); ns != 0 {
		h.LastContact = time.Unix(0, ns)
	}
	if b.threshold != 0 {
		b.mu.Lock()
		h.State = b.state
		h.ProbeDue = b.state == BreakerOpen && !b.now().Before(b.probeAt)
		if b.recovered == nil {
			// Asked for while closed: the one the next outage's end closes.
			b.recovered = make(chan struct{})
		}
		h.Recovered = b.recovered
		b.mu.Unlock()
	}
	return h
}

// breakerTransport applies the breaker to every attempt that reaches the
// registry host or its token server. Attempts created by a redirect pass
// through uncounted. It logs when the breaker opens and when it closes
// again: an outage of days is two records, not one per refused request.
type breakerTransport struct {
	next http.RoundTripper
	b    *breaker
	log  *slog.Logger
}

// RoundTrip implements http.RoundTripper.
func (t *breakerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Response != nil {
		return t.next.RoundTrip(req)
	}
	tk, err := t.b.allow()
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, err
	}
	resp, err := t.next.RoundTrip(req)
	if err == nil {
		t.b.contact()
	}
	o := classify(resp, err)
	if o == outcomeFailure && req.Context().Value(optionalKey{}) != nil {
		o = outcomeNeutral
	}
	tr := t.b.done(tk, o)
	switch {
	case tr.opened:
		attrs := []slog.Attr{slog.Int("failures", tr.fails), slog.Duration("next_probe", tr.nextProbe)}
		if err != nil {
			attrs = append(attrs, slog.Any("err", redactError(err)))
		} else {
			attrs = append(attrs, slog.Int("status", resp.StatusCode))
		}
		t.log.LogAttrs(req.Context(), slog.LevelWarn, "upstream unreachable, circuit breaker open", attrs...)
	case tr.closed:
		t.log.LogAttrs(req.Context(), slog.LevelInfo, "upstream reachable again, circuit breaker closed",
			slog.Duration("down_for", tr.down))
	}
	return resp, err
}

type optionalKey struct{}

// Optional marks the requests made with the returned context as an
// optimisation that has a fallback (looking for and fetching layer deltas):
// their failures do not count against the circuit breaker, whose opening
// would refuse the fallback too. Their successes count.
func Optional(ctx context.Context) context.Context {
	return context.WithValue(ctx, optionalKey{}, true)
}
