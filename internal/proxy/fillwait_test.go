package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	dto "github.com/prometheus/client_model/go"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/metrics"
	"github.com/registry-edge/registry-edge/internal/testutil/fakeclock"
	"github.com/registry-edge/registry-edge/internal/testutil/fakeupstream"
	"github.com/registry-edge/registry-edge/internal/testutil/syncbuf"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

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

// opts gives the proxy's options other than its clock.
func newBreakerFill(t *testing.T, clk *fakeclock.Clock, breaker upstream.BreakerOptions, opts Options) *breakerFill {
	t.Helper()
	fake := fakeupstream.New()
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	client, err := upstream.New(upstream.Options{URL: srv.URL, RegistryName: "central.test", Breaker: breaker, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	fs, db := newStoreAndDB(t)
	opts.Now, opts.After, opts.FillTimeout = clk.Now, clk.After, time.Hour
	p := New(fs, db, nil, opts)
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
	clk := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	b := newBreakerFill(t, clk, upstream.BreakerOptions{Failures: 3, MinProbe: time.Second, MaxProbe: time.Second}, Options{})
	b.fake.Fail(fakeupstream.ForPath(http.MethodGet, b.d.String(), fakeupstream.First(1, fakeupstream.Cut(b.layer, 1000, true))))
	b.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "3600", 0))
	f := b.start(t)

	if d := clk.WaitArmed(t); d < time.Hour {
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
	clk.Advance(time.Second) // the probe is due; the fill's backoff is not over
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

// firstSliceOnly answers every GET of the blob with a 206 of its first n
// bytes, whatever range was asked for: a CDN that caches only the first
// slice of a blob.
func firstSliceOnly(blob []byte, n int) fakeupstream.Fault {
	return func(w http.ResponseWriter, r *http.Request, _ int) bool {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", n-1, len(blob)))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(blob[:n])
		return true
	}
}

// An upstream whose every 206 ends before the byte asked for brings the
// fill nothing however often it is asked: the fill gives up after a few
// such answers (an error log naming them, a fill failure), keeping its
// partial, instead of asking with backoff until storage.fillTimeout.
func TestRangesThatEndBeforeTheOffsetAreBounded(t *testing.T) {
	t.Parallel()
	clk := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var logs syncbuf.Buffer
	m := metrics.New()
	b := newBreakerFill(t, clk, upstream.BreakerOptions{}, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Metrics: m})
	const slice = 70_000
	b.fake.Fail(fakeupstream.ForPath(http.MethodGet, b.d.String(), firstSliceOnly(b.layer, slice)))
	f := b.start(t)

	done := make(chan error, 1)
	go func() { done <- f.wait(context.Background()) }()
	var err error
	for timers := 0; ; timers++ {
		if timers > 20 {
			t.Fatalf("the fill still asks after %d backoffs; upstream GETs: %d", timers, b.fake.Count(http.MethodGet, b.path))
		}
		select {
		case err = <-done:
		case d := <-clk.Armed():
			clk.Advance(d)
			continue
		case <-time.After(20 * time.Second):
			t.Fatal("the fill neither waits nor ends")
		}
		break
	}
	if !errors.Is(err, upstream.ErrRangeMissesOffset) || !errors.Is(err, errdef.ErrUnavailable) {
		t.Fatalf("fill error = %v, want ErrRangeMissesOffset and ErrUnavailable", err)
	}
	if n := b.fake.Count(http.MethodGet, b.path); n != 1+maxSkipCuts {
		t.Errorf("upstream GETs = %d, want %d (the first slice, then %d answers missing byte %d)", n, 1+maxSkipCuts, maxSkipCuts, slice)
	}
	if !b.p.store.(*blobstore.FS).HasPartial(b.d) {
		t.Error("the partial download (the first slice) is not kept")
	}
	var failures dto.Metric
	if err := m.FillFailures.WithLabelValues("upstream").Write(&failures); err != nil {
		t.Fatal(err)
	}
	if got := failures.GetCounter().GetValue(); got != 1 {
		t.Errorf("fill failures (reason upstream) = %v, want 1", got)
	}
	if out := logs.String(); !strings.Contains(out, `level=ERROR msg="blob fill failed"`) || !strings.Contains(out, "a range that does not contain it") {
		t.Errorf("log of the fill does not say why it failed:\n%s", out)
	}
}
