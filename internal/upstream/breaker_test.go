package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/testutil/syncbuf"
)

// fakeClock is a goroutine-safe settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// newTestBreaker returns a breaker on clk whose jitter always draws the
// top of the window, so that probe times are exact.
func newTestBreaker(clk *fakeClock, failures int, minProbe, maxProbe time.Duration) *breaker {
	b := newBreaker(BreakerOptions{Failures: failures, MinProbe: minProbe, MaxProbe: maxProbe}, time.Minute, clk.Now)
	b.randN = func(n int64) int64 { return n - 1 }
	return b
}

// mustAllow admits one attempt or fails the test.
func mustAllow(t *testing.T, b *breaker) ticket {
	t.Helper()
	tk, err := b.allow()
	if err != nil {
		t.Fatalf("allow() error = %v, want admitted (state %s)", err, b.health().State)
	}
	return tk
}

// mustRefuse checks that an attempt is refused with a *BreakerOpenError.
func mustRefuse(t *testing.T, b *breaker) *BreakerOpenError {
	t.Helper()
	if err := b.check(); err == nil {
		t.Fatalf("check() = nil, want a refusal (state %s)", b.health().State)
	}
	_, err := b.allow()
	var boe *BreakerOpenError
	if !errors.As(err, &boe) || !errors.Is(err, errdef.ErrUnavailable) {
		t.Fatalf("allow() error = %v, want *BreakerOpenError matching ErrUnavailable", err)
	}
	return boe
}

func wantState(t *testing.T, b *breaker, want BreakerState) {
	t.Helper()
	if got := b.health().State; got != want {
		t.Fatalf("state = %s, want %s", got, want)
	}
}

func TestBreakerOpensAfterConsecutiveFailures(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	b := newTestBreaker(clk, 3, time.Second, time.Minute)

	// Two failures, then a success: the count starts again.
	for _, o := range []outcome{outcomeFailure, outcomeFailure, outcomeSuccess, outcomeFailure, outcomeFailure} {
		b.done(mustAllow(t, b), o)
	}
	wantState(t, b, BreakerClosed)
	// Neutral outcomes (a caller that went away) do not count either way.
	b.done(mustAllow(t, b), outcomeNeutral)
	wantState(t, b, BreakerClosed)

	b.done(mustAllow(t, b), outcomeFailure)
	wantState(t, b, BreakerOpen)
	e := mustRefuse(t, b)
	if e.Failures != 3 || !e.Since.Equal(clk.Now()) || e.NextProbe != time.Second {
		t.Errorf("refusal = %+v, want 3 failures, since now, next probe in 1s", e)
	}
	// The message names the time of the probe, which stays true when it
	// is read later (a prefetch's last error), not the wait.
	if want := "next probe at " + clk.Now().Add(time.Second).UTC().Format("2006-01-02T15:04:05.000Z"); !strings.Contains(e.Error(), want) {
		t.Errorf("refusal message %q, want it to say %q", e.Error(), want)
	}
	if got := b.health().Refused; got != 2 {
		t.Errorf("Refused = %d, want 2 (one check, one allow)", got)
	}
}

func TestBreakerProbes(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	b := newTestBreaker(clk, 1, time.Second, 10*time.Second)
	b.done(mustAllow(t, b), outcomeFailure)
	wantState(t, b, BreakerOpen)

	// Each failed probe doubles the wait, up to maxProbe.
	for _, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second} {
		clk.Add(wait - time.Millisecond)
		mustRefuse(t, b)
		clk.Add(time.Millisecond)
		probe := mustAllow(t, b)
		if !probe.probe {
			t.Fatalf("attempt at the probe time is not a probe")
		}
		wantState(t, b, BreakerHalfOpen)
		// One probe at a time.
		if e := mustRefuse(t, b); e.NextProbe != 0 {
			t.Errorf("refusal during the probe: NextProbe = %s, want 0", e.NextProbe)
		}
		b.done(probe, outcomeFailure)
		wantState(t, b, BreakerOpen)
	}

	// A successful probe closes the breaker and resets the backoff.
	clk.Add(10 * time.Second)
	b.done(mustAllow(t, b), outcomeSuccess)
	wantState(t, b, BreakerClosed)
	mustAllow(t, b)
	b.done(mustAllow(t, b), outcomeFailure)
	clk.Add(time.Second)
	if tk := mustAllow(t, b); !tk.probe {
		t.Error("after reopening, the first probe is not due after minProbe")
	}
}

// Health.Recovered taken while the breaker is closed is closed when the
// breaker next closes after opening, not by a success while it is closed:
// a fill whose backoff began before the outage wakes when the link is
// back, and a fill whose transfers fail while other requests succeed is
// not woken by each of them.
func TestBreakerRecoveredTakenWhileClosed(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	b := newTestBreaker(clk, 2, time.Second, time.Second)
	ready := func(c <-chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	rec := b.health().Recovered
	if rec == nil {
		t.Fatal("Recovered = nil while closed, want the channel of the next recovery")
	}
	b.done(mustAllow(t, b), outcomeSuccess)
	b.done(mustAllow(t, b), outcomeFailure)
	if ready(rec) {
		t.Fatal("Recovered closed by a success while the breaker was closed")
	}
	b.done(mustAllow(t, b), outcomeFailure)
	wantState(t, b, BreakerOpen)
	if h := b.health(); h.Recovered != rec {
		t.Error("opening the breaker replaced the Recovered channel taken while it was closed")
	}
	clk.Add(time.Second)
	b.done(mustAllow(t, b), outcomeSuccess)
	wantState(t, b, BreakerClosed)
	if !ready(rec) {
		t.Fatal("Recovered taken while closed is still open after the breaker opened and closed again")
	}
	if next := b.health().Recovered; next == nil || ready(next) {
		t.Error("after the recovery, Recovered is not a fresh channel for the next one")
	}
	if h := newBreaker(BreakerOptions{}, time.Minute, clk.Now).health(); h.Recovered != nil {
		t.Error("disabled breaker: Recovered != nil")
	}
}

func TestBreakerProbeCallerGone(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	b := newTestBreaker(clk, 1, time.Second, time.Minute)
	b.done(mustAllow(t, b), outcomeFailure)
	clk.Add(time.Second)
	b.done(mustAllow(t, b), outcomeNeutral)
	wantState(t, b, BreakerOpen)
	// The next attempt probes at once, and the backoff did not grow.
	probe := mustAllow(t, b)
	if !probe.probe {
		t.Fatal("attempt after a cancelled probe is not a probe")
	}
	b.done(probe, outcomeFailure)
	clk.Add(2*time.Second - time.Millisecond)
	mustRefuse(t, b)
	clk.Add(time.Millisecond)
	mustAllow(t, b)
}

func TestBreakerLostProbeAndLateOutcomes(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	b := newTestBreaker(clk, 2, time.Second, time.Minute) // lease 1m
	straggler := mustAllow(t, b)                          // sent while closed, answers late
	b.done(mustAllow(t, b), outcomeFailure)
	b.done(mustAllow(t, b), outcomeFailure)
	wantState(t, b, BreakerOpen)

	// A late failure does not push the probe back.
	b.done(straggler, outcomeFailure)
	clk.Add(time.Second)
	lost := mustAllow(t, b)
	clk.Add(time.Minute - time.Millisecond)
	mustRefuse(t, b)
	clk.Add(time.Millisecond)
	// The probe never came back within the lease: another one goes.
	second := mustAllow(t, b)
	if !second.probe {
		t.Fatal("attempt after the lease is not a probe")
	}
	// The lost probe's late failure is not the current probe's result.
	b.done(lost, outcomeFailure)
	wantState(t, b, BreakerHalfOpen)
	// Any answer closes the breaker, even a late one.
	b.done(lost, outcomeSuccess)
	wantState(t, b, BreakerClosed)
	b.done(second, outcomeFailure)
	wantState(t, b, BreakerClosed) // one failure of two
}

func TestBreakerDisabled(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	b := newTestBreaker(clk, 0, 0, 0)
	for range 100 {
		b.done(mustAllow(t, b), outcomeFailure)
	}
	wantState(t, b, BreakerClosed)
	if b.open() || b.check() != nil {
		t.Error("a disabled breaker refuses")
	}
}

func TestProbeDelay(t *testing.T) {
	t.Parallel()
	tests := []struct {
		n          int
		minP, maxP time.Duration
		lo, hi     time.Duration
	}{
		{0, time.Second, time.Minute, time.Second, time.Second},
		{1, time.Second, time.Minute, time.Second, 2 * time.Second},
		{3, time.Second, time.Minute, 4 * time.Second, 8 * time.Second},
		{6, time.Second, time.Minute, 30 * time.Second, time.Minute},
		{200, time.Second, time.Minute, 30 * time.Second, time.Minute},
		{5, time.Minute, time.Minute, time.Minute, time.Minute},
	}
	for _, tt := range tests {
		b := newBreaker(BreakerOptions{Failures: 1, MinProbe: tt.minP, MaxProbe: tt.maxP}, time.Minute, nil)
		for _, draw := range []func(int64) int64{
			func(int64) int64 { return 0 },
			func(n int64) int64 { return n - 1 },
		} {
			b.randN = draw
			if got := b.probeDelay(tt.n); got < tt.lo || got > tt.hi {
				t.Errorf("probeDelay(%d) with [%s, %s] = %s, want within [%s, %s]", tt.n, tt.minP, tt.maxP, got, tt.lo, tt.hi)
			}
		}
		b.randN = func(int64) int64 { return 0 }
		lo := b.probeDelay(tt.n)
		b.randN = func(n int64) int64 { return n - 1 }
		if hi := b.probeDelay(tt.n); lo != tt.lo || hi != tt.hi {
			t.Errorf("probeDelay(%d) range = [%s, %s], want [%s, %s]", tt.n, lo, hi, tt.lo, tt.hi)
		}
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	resp := func(status int) *http.Response { return &http.Response{StatusCode: status} }
	tests := []struct {
		name string
		resp *http.Response
		err  error
		want outcome
	}{
		{"200", resp(200), nil, outcomeSuccess},
		{"401", resp(401), nil, outcomeSuccess},
		{"404", resp(404), nil, outcomeSuccess},
		{"501", resp(501), nil, outcomeSuccess},
		{"429", resp(429), nil, outcomeFailure},
		{"500", resp(500), nil, outcomeNeutral},
		{"502", resp(502), nil, outcomeFailure},
		{"504", resp(504), nil, outcomeFailure},
		{"503", resp(503), nil, outcomeFailure},
		{"503 of a registry-edge tier whose upstream failed", &http.Response{StatusCode: 503, Header: http.Header{HeaderTierError: {"upstream"}}}, nil, outcomeSuccess},
		{"connection refused", nil, &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, outcomeFailure},
		{"reset", nil, &url.Error{Op: "Get", URL: "u", Err: syscall.ECONNRESET}, outcomeFailure},
		{"EOF before a response", nil, &url.Error{Op: "Get", URL: "u", Err: io.EOF}, outcomeFailure},
		{"deadline", nil, &url.Error{Op: "Get", URL: "u", Err: context.DeadlineExceeded}, outcomeFailure},
		{"cancelled", nil, &url.Error{Op: "Get", URL: "u", Err: context.Canceled}, outcomeNeutral},
		{"policy", nil, fmt.Errorf("connect: %w", errPolicy), outcomeNeutral},
		{"unknown authority", nil, &url.Error{Op: "Get", URL: "u", Err: x509.UnknownAuthorityError{}}, outcomeNeutral},
		{"certificate verification", nil, &url.Error{Op: "Get", URL: "u", Err: &tls.CertificateVerificationError{Err: x509.HostnameError{}}}, outcomeNeutral},
	}
	for _, tt := range tests {
		if got := classify(tt.resp, tt.err); got != tt.want {
			t.Errorf("classify(%s) = %d, want %d", tt.name, got, tt.want)
		}
	}
}

// breakerOptions sets a breaker and a fake clock on a test client.
func breakerOptions(clk *fakeClock, failures int) func(*Options) {
	return func(o *Options) {
		o.Breaker = BreakerOptions{Failures: failures, MinProbe: time.Second, MaxProbe: time.Second}
		o.Now = clk.Now
	}
}

// A retry loop against a failing upstream stops when the breaker opens,
// later requests do not reach the upstream until the probe time, and a
// successful probe closes the breaker.
func TestClientBreakerStopsRetriesAndProbes(t *testing.T) {
	t.Parallel()
	var cnt counter
	var healthy atomic.Bool
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cnt.add(r)
		if !healthy.Load() {
			writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "down")
			return
		}
		_, _ = w.Write(testManifest)
	}))
	clk := newFakeClock()
	c := newTestClient(t, srv.URL, breakerOptions(clk, 3), func(o *Options) { o.RetryMax = 10 })
	ctx := context.Background()

	_, err := c.Manifest(ctx, "library/alpine", "latest", nil, 1<<20)
	if !errors.Is(err, errdef.ErrUnavailable) {
		t.Fatalf("Manifest() error = %v, want ErrUnavailable", err)
	}
	if n := cnt.total(); n != 3 {
		t.Errorf("upstream requests = %d, want 3: the retries stop when the breaker opens", n)
	}
	if h := c.Health(); h.State != BreakerOpen || !h.LastContact.Equal(clk.Now()) {
		t.Errorf("Health() = %+v, want open, last contact now (a 503 is an answer)", h)
	}

	for range 5 {
		_, err = c.Resolve(ctx, "library/alpine", "latest", nil)
		var boe *BreakerOpenError
		if !errors.As(err, &boe) || !errors.Is(err, errdef.ErrUnavailable) {
			t.Fatalf("Resolve() with the breaker open: error = %v, want *BreakerOpenError and ErrUnavailable", err)
		}
		if e := asError(t, err); e.Op != "resolve" || e.Repo != "library/alpine" {
			t.Errorf("*Error = %+v, want Op resolve on library/alpine", e)
		}
	}
	if _, err := c.StatBlob(ctx, "library/alpine", digest.FromString("x")); !errors.Is(err, errdef.ErrUnavailable) {
		t.Errorf("StatBlob() with the breaker open: error = %v, want ErrUnavailable", err)
	}
	if n := cnt.total(); n != 3 {
		t.Errorf("upstream requests = %d with the breaker open, want still 3", n)
	}
	if h := c.Health(); h.Refused != 6 {
		t.Errorf("Health().Refused = %d, want 6", h.Refused)
	}

	// At the probe time one request goes through; the upstream is back.
	healthy.Store(true)
	clk.Add(time.Second)
	if _, err := c.Manifest(ctx, "library/alpine", "latest", nil, 1<<20); err != nil {
		t.Fatalf("probe: Manifest() error = %v", err)
	}
	if n := cnt.total(); n != 4 {
		t.Errorf("upstream requests = %d, want 4 (one probe)", n)
	}
	if h := c.Health(); h.State != BreakerClosed {
		t.Errorf("state after a successful probe = %s, want closed", h.State)
	}
}

// A registry-edge tier above that answers 503 because its own upstream
// failed is up: its answers neither open the breaker (which would cut the
// site off from everything the tier holds) nor are retried.
func TestClientBreakerTrustsATierThatAnswers(t *testing.T) {
	t.Parallel()
	var cnt counter
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cnt.add(r)
		w.Header().Set(HeaderTierError, "upstream")
		writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "upstream registry unreachable")
	}))
	clk := newFakeClock()
	c := newTestClient(t, srv.URL, breakerOptions(clk, 2), func(o *Options) { o.RetryMax = 3 })
	for range 4 {
		if _, err := c.Manifest(context.Background(), "a", "v1", nil, 1<<20); !errors.Is(err, errdef.ErrUnavailable) {
			t.Fatalf("Manifest() error = %v, want ErrUnavailable", err)
		}
	}
	if n := cnt.total(); n != 4 {
		t.Errorf("upstream requests = %d, want 4 (one each, no retry)", n)
	}
	if h := c.Health(); h.State != BreakerClosed {
		t.Errorf("breaker %s, want closed", h.State)
	}
}

// The failures of optional requests (deltas: a full fetch follows) do not
// open the breaker; the same failures of other requests do.
func TestClientBreakerIgnoresOptionalFailures(t *testing.T) {
	t.Parallel()
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "down")
	}))
	clk := newFakeClock()
	c := newTestClient(t, srv.URL, breakerOptions(clk, 2), func(o *Options) { o.RetryMax = 0 })
	ctx := Optional(context.Background())
	for range 4 {
		if _, err := c.Blob(ctx, "a", digest.FromString("delta"), 0, ""); !errors.Is(err, errdef.ErrUnavailable) {
			t.Fatalf("Blob() error = %v, want ErrUnavailable", err)
		}
	}
	if h := c.Health(); h.State != BreakerClosed {
		t.Errorf("breaker %s after optional failures, want closed", h.State)
	}
	for range 2 {
		c.Blob(context.Background(), "a", digest.FromString("layer"), 0, "")
	}
	if h := c.Health(); h.State != BreakerOpen {
		t.Errorf("breaker %s after failures, want open", h.State)
	}
}

// 4xx answers mean the upstream is reachable: they never open the breaker.
func TestClientBreakerIgnores4xx(t *testing.T) {
	t.Parallel()
	var cnt counter
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cnt.add(r)
		writeError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "no")
	}))
	clk := newFakeClock()
	c := newTestClient(t, srv.URL, breakerOptions(clk, 1))
	for range 5 {
		if _, err := c.Manifest(context.Background(), "a", "v1", nil, 1<<20); !errors.Is(err, errdef.ErrNotFound) {
			t.Fatalf("Manifest() error = %v, want ErrNotFound", err)
		}
	}
	if n := cnt.total(); n != 5 {
		t.Errorf("upstream requests = %d, want 5", n)
	}
	if h := c.Health(); h.State != BreakerClosed || !h.LastContact.Equal(clk.Now()) {
		t.Errorf("Health() = %+v, want closed with a last contact", h)
	}
}

// silentListener accepts connections and never answers, like an upstream
// whose replies are dropped once connected. It counts connections.
func silentListener(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	return "http://" + ln.Addr().String(), &conns
}

// A silent upstream costs one response-header timeout per request (no
// retry after a timeout), and nothing at all once the breaker is open.
func TestClientBreakerSilentUpstream(t *testing.T) {
	t.Parallel()
	u, conns := silentListener(t)
	clk := newFakeClock()
	c := newTestClient(t, u, breakerOptions(clk, 2), func(o *Options) {
		o.RetryMax = 3
		o.ResponseHeaderTimeout = 100 * time.Millisecond
	})
	ctx := context.Background()
	for i := 1; i <= 2; i++ {
		_, err := c.Resolve(ctx, "a", "v1", nil)
		if !errors.Is(err, errdef.ErrUnavailable) || !isTimeout(err) {
			t.Fatalf("Resolve() #%d error = %v, want a timeout matching ErrUnavailable", i, err)
		}
		if n := conns.Load(); n != int64(i) {
			t.Fatalf("connections after %d requests = %d, want %d: a timeout is not retried", i, n, i)
		}
	}
	if s := c.Health().State; s != BreakerOpen {
		t.Fatalf("state = %s, want open", s)
	}
	// A caller with no deadline at all is answered at once.
	for range 10 {
		if _, err := c.Resolve(ctx, "a", "v1", nil); !errors.As(err, new(*BreakerOpenError)) {
			t.Fatalf("Resolve() error = %v, want *BreakerOpenError", err)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("connections = %d with the breaker open, want 2", n)
	}
	// The probe waits, and fails, like any request.
	clk.Add(time.Second)
	if _, err := c.Resolve(ctx, "a", "v1", nil); !isTimeout(err) {
		t.Fatalf("probe: Resolve() error = %v, want a timeout", err)
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("connections after the probe = %d, want 3", n)
	}
	if h := c.Health(); h.State != BreakerOpen || !h.LastContact.IsZero() {
		t.Errorf("Health() = %+v, want open and never contacted", h)
	}
}

// The caller's deadline (the proxy's revalidation timeout) bounds a request
// to a silent upstream whatever the transport timeouts, and counts as a
// failure.
func TestClientBreakerCallerDeadline(t *testing.T) {
	t.Parallel()
	u, _ := silentListener(t)
	clk := newFakeClock()
	c := newTestClient(t, u, breakerOptions(clk, 1), func(o *Options) {
		o.ResponseHeaderTimeout = time.Hour
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.Resolve(ctx, "a", "v1", nil)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Resolve() error = %v, want context.DeadlineExceeded", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Resolve() still waiting 30s after its deadline")
	}
	if s := c.Health().State; s != BreakerOpen {
		t.Errorf("state = %s, want open after a request that timed out", s)
	}
}

// A token server that cannot be reached is the same failure domain as its
// registry: its failures open the breaker, which then spares the registry.
func TestClientBreakerCountsTokenServer(t *testing.T) {
	t.Parallel()
	realm := closedURL(t) + "/token"
	var cnt counter
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cnt.add(r)
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="reg"`, realm))
		writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "auth")
	}))
	clk := newFakeClock()
	c := newTestClient(t, srv.URL, breakerOptions(clk, 2), func(o *Options) { o.RetryMax = 0 })
	for range 2 {
		if _, err := c.Manifest(context.Background(), "a", "v1", nil, 1<<20); err == nil {
			t.Fatal("Manifest() succeeded without a token server")
		}
	}
	if s := c.Health().State; s != BreakerOpen {
		t.Fatalf("state = %s, want open after two token-server failures", s)
	}
	before := cnt.total()
	if _, err := c.Manifest(context.Background(), "a", "v1", nil, 1<<20); !errors.As(err, new(*BreakerOpenError)) {
		t.Fatalf("Manifest() error = %v, want *BreakerOpenError", err)
	}
	if n := cnt.total(); n != before {
		t.Errorf("registry requests with the breaker open = %d, want 0", n-before)
	}
}

// Failures of a redirect target (object storage, a CDN) are not the
// registry's: they do not open the breaker.
func TestClientBreakerIgnoresRedirectTargets(t *testing.T) {
	t.Parallel()
	cdn := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, cdn.URL+"/blob", http.StatusTemporaryRedirect)
	}))
	clk := newFakeClock()
	c := newTestClient(t, srv.URL, breakerOptions(clk, 1), func(o *Options) { o.RetryMax = 0 })
	for range 3 {
		if _, err := c.StatBlob(context.Background(), "a", digest.FromString("x")); !errors.Is(err, errdef.ErrUnavailable) {
			t.Fatalf("StatBlob() error = %v, want ErrUnavailable (503 from the CDN)", err)
		}
	}
	if s := c.Health().State; s != BreakerClosed {
		t.Errorf("state = %s, want closed: the registry itself answered", s)
	}
}

// An outage is logged once when the breaker opens and once when it closes
// again, with how long the upstream was unreachable; the requests refused
// meanwhile and the failed probes log nothing (an outage of days with
// devices pulling wrote nothing that said when it began or ended).
func TestClientBreakerLogsTheOutageOnce(t *testing.T) {
	t.Parallel()
	var healthy atomic.Bool
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "down")
			return
		}
		_, _ = w.Write(testManifest)
	}))
	clk := newFakeClock()
	var logs syncbuf.Buffer
	c := newTestClient(t, srv.URL, breakerOptions(clk, 2), func(o *Options) {
		o.RetryMax = 0
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	ctx := context.Background()
	count := func(msg string) int { return strings.Count(logs.String(), `msg="`+msg+`"`) }
	const opened, closed = "upstream unreachable, circuit breaker open", "upstream reachable again, circuit breaker closed"

	for range 10 {
		_, _ = c.Manifest(ctx, "a", "v1", nil, 1<<20)
	}
	for range 3 { // failed probes
		clk.Add(time.Minute)
		if _, err := c.Manifest(ctx, "a", "v1", nil, 1<<20); errors.As(err, new(*BreakerOpenError)) {
			t.Fatalf("the probe was refused: %v", err)
		}
	}
	if got := count(opened); got != 1 {
		t.Errorf("%d records %q for an outage of 13 requests, want 1:\n%s", got, opened, logs.String())
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "failures=2 ") || !strings.Contains(logs.String(), "status=503") {
		t.Errorf("the record of the opening does not say failures=2 and the status 503, at warning level:\n%s", logs.String())
	}
	if got := count(closed); got != 0 {
		t.Errorf("%d records %q while the upstream is down, want 0", got, closed)
	}

	healthy.Store(true)
	clk.Add(time.Hour)
	for range 3 {
		if _, err := c.Manifest(ctx, "a", "v1", nil, 1<<20); err != nil {
			t.Fatalf("Manifest() with the upstream back: %v", err)
		}
	}
	if got := count(closed); got != 1 {
		t.Errorf("%d records %q after the probe succeeded, want 1:\n%s", got, closed, logs.String())
	}
	if !strings.Contains(logs.String(), "down_for=1h3m0s") {
		t.Errorf("the record of the closing does not say how long the upstream was down (1h3m0s):\n%s", logs.String())
	}

	// The next outage is logged again.
	healthy.Store(false)
	for range 4 {
		_, _ = c.Manifest(ctx, "a", "v1", nil, 1<<20)
	}
	if got := count(opened); got != 2 {
		t.Errorf("%d records %q after a second outage, want 2", got, opened)
	}
}
