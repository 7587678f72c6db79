package upstream

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/delta"
)

// A negotiation prefers an asynchronous answer with a wait within the
// response header timeout; a 202 is DeltaPending with the upstream's
// Retry-After, kept within bounds.
func TestNegotiateDeltaPending(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		retryAfter string
		want       time.Duration
	}{
		{"3", 3 * time.Second},
		{"", defaultDeltaRetry},
		{"0", minDeltaRetry},
		{"3600", maxDeltaRetry},
		{"soon", defaultDeltaRetry},
	} {
		prefer := make(chan string, 1)
		srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			prefer <- r.Header.Get("Prefer")
			if c.retryAfter != "" {
				w.Header().Set("Retry-After", c.retryAfter)
			}
			w.WriteHeader(http.StatusAccepted)
		}))
		client := newTestClient(t, srv.URL, func(o *Options) { o.ResponseHeaderTimeout = 30 * time.Second })
		_, ok, err := client.NegotiateDelta(context.Background(), "app", digest.FromString("layer"), []digest.Digest{digest.FromString("base")})
		var pending *DeltaPending
		if ok || !errors.As(err, &pending) || pending.RetryAfter != c.want {
			t.Errorf("Retry-After %q: ok %v, err %v; want DeltaPending after %s", c.retryAfter, ok, err, c.want)
		}
		if got := <-prefer; got != "respond-async, wait=15" {
			t.Errorf("Prefer = %q, want respond-async, wait=15 (half the header timeout)", got)
		}
	}
}

// A negotiation names every delta format this binary reads, and
// ReadsDeltaFormat reads that list back (a lower tier that sends none is
// taken to read any).
func TestNegotiationStatesTheFormatsItReads(t *testing.T) {
	t.Parallel()
	got := make(chan http.Header, 1)
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		w.WriteHeader(http.StatusOK)
	}))
	client := newTestClient(t, srv.URL)
	if _, ok, err := client.NegotiateDelta(context.Background(), "app", digest.FromString("layer"), []digest.Digest{digest.FromString("base")}); ok || err != nil {
		t.Fatalf("NegotiateDelta answered 200: ok %v, err %v; want no delta and no error", ok, err)
	}
	h := <-got
	for v := delta.MinFormatVersion; v <= delta.FormatVersion; v++ {
		if !ReadsDeltaFormat(h, v) {
			t.Errorf("%s: %q does not name format %d, which this binary reads", HeaderDeltaFormats, h.Get(HeaderDeltaFormats), v)
		}
	}
	if ReadsDeltaFormat(h, delta.FormatVersion+1) {
		t.Errorf("%s: %q names format %d, which this binary does not read", HeaderDeltaFormats, h.Get(HeaderDeltaFormats), delta.FormatVersion+1)
	}
	if !ReadsDeltaFormat(http.Header{}, delta.FormatVersion) {
		t.Error("a negotiation without the header is taken to read no format; want any (tiers from before it)")
	}
}
