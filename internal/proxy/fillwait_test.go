package proxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/testutil/fakeupstream"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

// testClock is a settable clock with timers (Options.Now and
// Options.After): a timer fires only when advance passes its deadline.
type testClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []testTimer
	armed  chan time.Duration // every After's duration, as it is armed
}

type testTimer struct {
	at time.Time
	c  chan time.Time
}

func newTestClock() *testClock {
	return &testClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), armed: make(chan time.Duration, 1000)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
	} else {
		c.timers = append(c.timers, testTimer{at: c.now.Add(d), c: ch})
	}
	c.armed <- d
	return ch
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.at.After(c.now) {
			kept = append(kept, t)
			continue
		}
		t.c <- c.now
	}
	c.timers = kept
}

// waitArmed waits until a timer of more than 0 is armed (a fill starts
// its backoff; a transfer that made progress resumes after 0) and returns
// its duration; the limit only turns a hang into a failure.
func (c *testClock) waitArmed(t *testing.T) time.Duration {
	t.Helper()
	limit := time.After(20 * time.Second)
	for {
		select {
		case d := <-c.armed:
			if d > 0 {
				return d
			}
		case <-limit:
			t.Fatal("no timer armed: the fill does not wait")
			return 0
		}
	}
}

// breakerFill is a proxy on clk in front of a fake upstream, through an
// upstream client with a circuit breaker on the same clock.
type breakerFill struct {
	p      *Proxy
	fake   *fakeupstream.Registry
	client *upstream.Client
	target Target
	layer  []byte
	d      digest.Digest
	path   string
}

func newBreakerFill(t *testing.T, clk *testClock, breaker upstream.BreakerOptions) *breakerFill {
	t.Helper()
	fake := fakeupstream.New()
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	client, err := upstream.New(upstream.Options{URL: srv.URL, RegistryName: "central.test", Breaker: breaker, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	fs, db := newStoreAndDB(t)
	p := New(fs, db, nil, Options{Now: clk.Now, After: clk.After, FillTimeout: time.Hour})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p.Close(ctx)
	})
	layer := fakeupstream.Random(t, 100_000)
	_, layers := fake.Image("app", "v1", layer)
	d := layers[0].Digest
	return &breakerFill{
		p: p, fake: fake, client: client, layer: layer, d: d, path: "/v2/app/blobs/" + d.String(),
		target: Target{Remote: &Remote{Name: "central.test", Client: client}, Repo: meta.Repo{Registry: "central.test", Name: "app"}},
	}
}

// start starts the fill of the layer (its first client leaves at once:
// the fill goes on) and returns it.
func (b *breakerFill) start(t *testing.T) *fill {
	t.Helper()
	res, err := b.p.Blob(context.Background(), b.target, b.d)
	if err != nil {
		t.Fatalf("Blob() error = %v", err)
	}
	res.Content.Close()
	f := b.p.runningFill(b.d)
	if f == nil {
		t.Fatal("no fill running")
	}
	return f
}

// waitDone waits for fill f to end and returns its error; the limit only
// turns a hang into a failure.
func waitDone(t *testing.T, f *fill) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := f.wait(ctx)
	if ctx.Err() != nil {
		t.Fatalf("the fill still waits: %v", err)
	}
	return err
}

// A fill whose backoff began while the breaker was closed wakes when the
// breaker, opened during the wait by other requests, closes again (the
// link is back), not at the end of its backoff (here an hour's
// Retry-After). It took the breaker's Recovered channel when it began to
// wait: nil while closed, so it slept through the outage's end.
func TestFillBackoffWakesWhenAnOutageBeganDuringIt(t *testing.T) {
	t.Parallel()
	clk := newTestClock()
	b := newBreakerFill(t, clk, upstream.BreakerOptions{Failures: 3, MinProbe: time.Second, MaxProbe: time.Second})
	b.fake.Fail(fakeupstream.ForPath(http.MethodGet, b.d.String(), fakeupstream.First(1, fakeupstream.Cut(b.layer, 1000, true))))
	b.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "3600", 0))
	f := b.start(t)

	if d := clk.waitArmed(t); d < time.Hour {
		t.Fatalf("backoff = %s, want the upstream's Retry-After (1h)", d)
	}
	if h := b.client.Health(); h.State != upstream.BreakerClosed {
		t.Fatalf("breaker %s while the fill begins to wait, want closed", h.State)
	}
	ctx := context.Background()
	for range 2 {
		b.client.Resolve(ctx, "app", "v1", nil) // fails: the breaker opens
	}
	if h := b.client.Health(); h.State != upstream.BreakerOpen {
		t.Fatalf("breaker %s after 3 failures, want open", h.State)
	}
	b.fake.ClearFaults()     // the link is back
	clk.advance(time.Second) // the probe is due; the fill's backoff is not over
	if _, err := b.client.Resolve(ctx, "app", "v1", nil); err != nil {
		t.Fatalf("Resolve() (the probe) error = %v", err)
	}
	if h := b.client.Health(); h.State != upstream.BreakerClosed {
		t.Fatalf("breaker %s after the probe's answer, want closed", h.State)
	}
	if err := waitDone(t, f); err != nil {
		t.Fatalf("fill error = %v", err)
	}
	if _, err := b.p.store.Stat(ctx, b.d); err != nil {
		t.Errorf("blob not stored: %v", err)
	}
	if got, want := b.fake.Ranges(http.MethodGet, b.path), []string{"", "bytes=1000-", "bytes=1000-"}; !slices.Equal(got, want) {
		t.Errorf("upstream GETs of the blob had Range %q, want %q (the cut one, the 503, the resume)", got, want)
	}
}
