package httpserve_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/httpserve"
	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/metrics"
	"github.com/registry-edge/registry-edge/internal/proxy"
	"github.com/registry-edge/registry-edge/internal/testutil/fakeclock"
	"github.com/registry-edge/registry-edge/internal/testutil/fakeupstream"
	"github.com/registry-edge/registry-edge/internal/testutil/syncbuf"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

// offlineSetup configures an offlineMirror; zero fields take the defaults
// of newOfflineMirror.
type offlineSetup struct {
	breaker           upstream.BreakerOptions
	staleness         proxy.Staleness
	retryMax          int
	connectTimeout    time.Duration
	responseHeader    time.Duration
	revalidateTimeout time.Duration
	deltas            bool
	logger            *slog.Logger
	// fakeTimers puts the fills' backoff on the test's clock: it ends
	// only when the test advances the clock past it.
	fakeTimers bool
}

// offlineMirror is a mirror whose upstream client has a circuit breaker,
// whose remote has a staleness policy, and whose clock is shared by both.
type offlineMirror struct {
	*mirror
	clock  *fakeclock.Clock
	client *upstream.Client
}

// newOfflineMirror starts a mirror in front of a new fake upstream. via,
// if given, returns the URL the client uses to reach the fake at fakeAddr
// (host:port), to put a relay in between.
func newOfflineMirror(t *testing.T, s offlineSetup, via ...func(fakeAddr string) string) *offlineMirror {
	t.Helper()
	fake := fakeupstream.New()
	up := httptest.NewServer(fake)
	t.Cleanup(func() {
		up.CloseClientConnections()
		up.Close()
	})
	if s.connectTimeout == 0 {
		s.connectTimeout = time.Second
	}
	if s.responseHeader == 0 {
		s.responseHeader = 10 * time.Second
	}
	if s.revalidateTimeout == 0 {
		s.revalidateTimeout = 2 * time.Second
	}
	u := up.URL
	for _, f := range via {
		u = f(up.Listener.Addr().String())
	}
	clk := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	client, err := upstream.New(upstream.Options{
		URL: u, RegistryName: "central.test",
		ConnectTimeout: s.connectTimeout, ResponseHeaderTimeout: s.responseHeader,
		RetryMax: s.retryMax, RetryMinWait: time.Millisecond, RetryMaxWait: 5 * time.Millisecond, MaxRetryAfter: time.Second,
		Breaker: s.breaker, Now: clk.Now, Logger: s.logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	router, err := proxy.NewRouter([]*proxy.Remote{{Name: "central.test", Client: client, Staleness: s.staleness}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	store, err := blobstore.NewFS(root, blobstore.FSOptions{TempMaxAge: time.Hour, PartialMaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	db, err := meta.Open(filepath.Join(root, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	m.AddUpstream("central.test", func() metrics.UpstreamHealth {
		h := client.Health()
		return metrics.UpstreamHealth{LastContact: h.LastContact, BreakerState: int(h.State), Refused: h.Refused}
	})
	po := proxy.Options{
		TagTTL: time.Minute, RevalidateTimeout: s.revalidateTimeout, FillTimeout: time.Minute,
		Metrics: m, Now: clk.Now, Deltas: s.deltas, DeltaDiscoveryTimeout: 10 * time.Second,
		Logger: s.logger,
	}
	if s.fakeTimers {
		po.After = clk.After
	}
	p := proxy.New(store, db, router, po)
	mm := &mirror{t: t, fake: fake, upstream: up, root: root, store: store, metrics: m, proxy: p, db: db, router: router}
	mm.served.h = httpserve.New(p, httpserve.Options{Metrics: m})
	srv := httptest.NewServer(&mm.served)
	mm.srv = srv
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("fills still running at the end of the test: %v", err)
		}
		db.Close()
	})
	return &offlineMirror{
		mirror: mm,
		clock:  clk, client: client,
	}
}

// errorMessage returns the message of the first entry of an OCI error body.
func errorMessage(t *testing.T, body []byte) string {
	t.Helper()
	var env struct {
		Errors []struct{ Code, Message string }
	}
	if err := json.Unmarshal(body, &env); err != nil || len(env.Errors) == 0 {
		t.Fatalf("body %q is not an OCI error envelope: %v", body, err)
	}
	return env.Errors[0].Message
}

// hang is a fault for an upstream that accepted the connection and then
// says nothing: it answers when the client has given up.
func hang(w http.ResponseWriter, r *http.Request, n int) bool {
	<-r.Context().Done()
	return true
}

// A cached tag whose revalidation gets no answer is served stale once
// cache.revalidateTimeout has passed, however long the client's own
// response-header timeout.
func TestOfflineSilentUpstreamServesCachedTagWithinRevalidateTimeout(t *testing.T) {
	t.Parallel()
	const revalidate = 300 * time.Millisecond
	m := newOfflineMirror(t, offlineSetup{responseHeader: time.Hour, revalidateTimeout: revalidate})
	mdesc, _ := m.fake.Image("app", "v1", []byte("layer"))
	if resp, body := m.get(http.MethodGet, manifestPath("app", "v1")); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET tag: %d %s", resp.StatusCode, body)
	}
	m.clock.Advance(time.Hour)
	m.fake.Fail(hang)

	start := time.Now()
	resp, body := m.get(http.MethodGet, manifestPath("app", "v1"))
	elapsed := time.Since(start)
	if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != mdesc.Digest {
		t.Fatalf("stale tag with a silent upstream: %d %s", resp.StatusCode, body)
	}
	// Generous: the point is "not the 1h response-header timeout".
	if elapsed > revalidate+10*time.Second {
		t.Errorf("stale tag answered after %s, want about %s", elapsed, revalidate)
	}
	if n := m.fake.Count(http.MethodHead, "/v2/app/manifests/v1"); n != 1 {
		t.Errorf("upstream HEADs = %d, want 1", n)
	}
	if got := metricValue(t, m.metrics, "registry_edge_stale_tags_served_total"); got != 1 {
		t.Errorf("stale tags served = %v, want 1", got)
	}
}

// Once the breaker is open, neither cached nor uncached requests reach the
// upstream until the probe time; cached content is served and uncached
// content answers 503 UNAVAILABLE at once. A successful probe closes it.
func TestOfflineBreakerStopsUpstreamRequestsUntilProbe(t *testing.T) {
	t.Parallel()
	m := newOfflineMirror(t, offlineSetup{
		retryMax: 5,
		breaker:  upstream.BreakerOptions{Failures: 3, MinProbe: time.Minute, MaxProbe: time.Minute},
	})
	layer := []byte("cached layer")
	mdesc, layers := m.fake.Image("app", "v1", layer)
	_, other := m.fake.Image("app", "v2", []byte("never fetched"))
	m.get(http.MethodGet, manifestPath("app", "v1"))
	m.get(http.MethodGet, blobPath("app", layers[0].Digest))
	m.waitFills()
	start := m.clock.Now()

	m.clock.Advance(time.Hour)
	m.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "", 0))
	before := m.fake.Total()
	resp, body := m.get(http.MethodGet, manifestPath("app", "v1"))
	if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != mdesc.Digest {
		t.Fatalf("stale tag with upstream 503: %d %s", resp.StatusCode, body)
	}
	if n := m.fake.Total() - before; n != 3 {
		t.Errorf("upstream requests of the revalidation = %d, want 3 (retries stop when the breaker opens)", n)
	}
	if got := metricValue(t, m.metrics, "registry_edge_upstream_breaker_state", "upstream", "central.test"); got != 1 {
		t.Errorf("breaker state metric = %v, want 1 (open)", got)
	}
	if got := metricValue(t, m.metrics, "registry_edge_upstream_last_contact_timestamp_seconds"); got != float64(m.clock.Now().Unix()) {
		t.Errorf("last contact metric = %v, want %d (a 503 is an answer)", got, m.clock.Now().Unix())
	}

	before = m.fake.Total()
	for range 5 {
		if resp, _ := m.get(http.MethodGet, manifestPath("app", "v1")); resp.StatusCode != http.StatusOK {
			t.Fatalf("cached tag with the breaker open: %d", resp.StatusCode)
		}
	}
	if resp, _ := m.get(http.MethodGet, manifestPath("app", mdesc.Digest.String())); resp.StatusCode != http.StatusOK {
		t.Errorf("cached manifest by digest with the breaker open: %d", resp.StatusCode)
	}
	if resp, body := m.get(http.MethodGet, blobPath("app", layers[0].Digest)); resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Errorf("cached blob with the breaker open: %d", resp.StatusCode)
	}
	// Uncached content: 503 UNAVAILABLE without an upstream request.
	for _, p := range []string{manifestPath("app", "v2"), blobPath("app", other[0].Digest), "/v2/app/tags/list"} {
		resp, body := m.get(http.MethodGet, p)
		if p == "/v2/app/tags/list" {
			// The cached tags are listed instead.
			if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"v1"`)) {
				t.Errorf("GET %s with the breaker open: %d %s, want the cached list", p, resp.StatusCode, body)
			}
			continue
		}
		m.wantCode(resp, body, http.StatusServiceUnavailable, "UNAVAILABLE")
	}
	if n := m.fake.Total() - before; n != 0 {
		t.Errorf("upstream requests with the breaker open = %d, want 0", n)
	}
	if got := metricValue(t, m.metrics, "registry_edge_upstream_breaker_refused_total"); got < 8 {
		t.Errorf("breaker refused metric = %v, want at least 8", got)
	}

	// At the probe time one request goes through; the upstream is back.
	m.fake.ClearFaults()
	m.clock.Advance(time.Minute)
	before = m.fake.Total()
	resp, body = m.get(http.MethodGet, manifestPath("app", "v1"))
	if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != mdesc.Digest {
		t.Fatalf("GET tag at the probe time: %d %s", resp.StatusCode, body)
	}
	if n := m.fake.Total() - before; n != 1 {
		t.Errorf("upstream requests at the probe time = %d, want 1 (the revalidation)", n)
	}
	if got := metricValue(t, m.metrics, "registry_edge_upstream_breaker_state"); got != 0 {
		t.Errorf("breaker state metric after a successful probe = %v, want 0", got)
	}
	if resp, body := m.get(http.MethodGet, manifestPath("app", "v2")); resp.StatusCode != http.StatusOK {
		t.Errorf("uncached tag after recovery: %d %s", resp.StatusCode, body)
	}
	if got := metricValue(t, m.metrics, "registry_edge_upstream_last_contact_timestamp_seconds"); got <= float64(start.Unix()) {
		t.Errorf("last contact metric = %v, want after %d", got, start.Unix())
	}
}

// A tag the upstream cannot confirm is served stale only within its
// repository's staleness limit (first matching rule, else the upstream's);
// beyond it the client gets 503 UNAVAILABLE saying why. Content addressed
// by digest is served whatever its age.
func TestOfflineBoundedStaleness(t *testing.T) {
	t.Parallel()
	m := newOfflineMirror(t, offlineSetup{staleness: proxy.Staleness{
		MaxStale: 2 * time.Hour,
		Rules: []proxy.StalenessRule{
			{Match: "team/releases/*", MaxStale: 30 * time.Minute},
			{Match: "base/*", MaxStale: 0}, // no limit
			{Match: "team/*", MaxStale: 24 * time.Hour},
		},
	}})
	images := map[string]string{} // repo -> manifest digest
	var appLayer []byte
	var appLayerDigest digest.Digest
	for _, repo := range []string{"app", "team/releases/svc", "base/os", "team/tool"} {
		appLayer = []byte("layer of " + repo)
		mdesc, layers := m.fake.Image(repo, "v1", appLayer)
		images[repo] = mdesc.Digest.String()
		appLayerDigest = layers[0].Digest
		if resp, body := m.get(http.MethodGet, manifestPath(repo, "v1")); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s:v1: %d %s", repo, resp.StatusCode, body)
		}
	}
	// The last image's layer is cached too.
	m.get(http.MethodGet, blobPath("team/tool", appLayerDigest))
	m.waitFills()
	m.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "", 0))

	check := func(when string, want map[string]int) {
		t.Helper()
		for repo, status := range want {
			resp, body := m.get(http.MethodGet, manifestPath(repo, "v1"))
			if resp.StatusCode != status {
				t.Errorf("%s: GET %s:v1 = %d, want %d (%s)", when, repo, resp.StatusCode, status, body)
				continue
			}
			if status == http.StatusServiceUnavailable {
				m.wantCode(resp, body, status, "UNAVAILABLE")
				if msg := errorMessage(t, body); !strings.Contains(msg, "cached tag v1 was last confirmed by the upstream") ||
					!strings.Contains(msg, "more than the allowed staleness") || !strings.Contains(msg, "the upstream is unreachable") {
					t.Errorf("%s: GET %s:v1 message = %q, want it to say the tag is too stale and the upstream unreachable", when, repo, msg)
				}
				if resp, _ := m.get(http.MethodHead, manifestPath(repo, "v1")); resp.StatusCode != status {
					t.Errorf("%s: HEAD %s:v1 = %d, want %d", when, repo, resp.StatusCode, status)
				}
			}
		}
	}

	m.clock.Advance(time.Hour)
	check("after 1h", map[string]int{"app": 200, "team/releases/svc": 503, "base/os": 200, "team/tool": 200})
	resp, body := m.get(http.MethodGet, manifestPath("team/releases/svc", "v1"))
	if msg := errorMessage(t, body); resp.StatusCode != 503 || !strings.Contains(msg, "1h ago") || !strings.Contains(msg, "staleness of 30m") {
		t.Errorf("GET team/releases/svc:v1 message = %q, want the age (1h) and the limit (30m)", msg)
	}

	m.clock.Advance(2 * time.Hour)
	check("after 3h", map[string]int{"app": 503, "team/releases/svc": 503, "base/os": 200, "team/tool": 200})
	m.clock.Advance(24 * time.Hour)
	check("after 27h", map[string]int{"app": 503, "base/os": 200, "team/tool": 503})

	// Content addressed by digest is immutable: always served.
	for repo, d := range images {
		if resp, _ := m.get(http.MethodGet, manifestPath(repo, d)); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s@%s after 27h offline: %d, want 200", repo, d, resp.StatusCode)
		}
	}
	if resp, body := m.get(http.MethodGet, blobPath("team/tool", appLayerDigest)); resp.StatusCode != http.StatusOK || !bytes.Equal(body, appLayer) {
		t.Errorf("GET cached blob after 27h offline: %d", resp.StatusCode)
	}
	if got := metricValue(t, m.metrics, "registry_edge_stale_tags_refused_total", "upstream", "central.test"); got < 5 {
		t.Errorf("stale tags refused metric = %v, want at least 5", got)
	}

	// The upstream is back: the tag is confirmed again, and its staleness
	// counts from then.
	m.fake.ClearFaults()
	if resp, _ := m.get(http.MethodGet, manifestPath("app", "v1")); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET app:v1 after recovery: %d", resp.StatusCode)
	}
	m.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "", 0))
	m.clock.Advance(time.Hour)
	check("1h after the confirmation", map[string]int{"app": 200})
}

// A long outage warns once per stale tag, not once per pull: every pull of
// a tag past its TTL is answered stale (or refused past maxStale), and a
// warning each time buried a gateway's log. The tag warns again when it
// goes from served to refused, and after the upstream confirmed it again.
func TestOutageWarnsOncePerStaleTag(t *testing.T) {
	t.Parallel()
	var logs syncbuf.Buffer
	m := newOfflineMirror(t, offlineSetup{
		breaker:   upstream.BreakerOptions{Failures: 1, MinProbe: time.Hour, MaxProbe: time.Hour},
		staleness: proxy.Staleness{MaxStale: 24 * time.Hour},
		logger:    slog.New(slog.NewTextHandler(&logs, nil)),
	})
	m.fake.Image("app", "v1", []byte("layer"))
	m.fake.Image("app", "v2", []byte("layer 2"))
	pull := func(tag string, n, want int) {
		t.Helper()
		for range n {
			if resp, body := m.get(http.MethodGet, manifestPath("app", tag)); resp.StatusCode != want {
				t.Fatalf("GET app:%s = %d, want %d (%s)", tag, resp.StatusCode, want, body)
			}
		}
	}
	warnings := func(msg string) int {
		return strings.Count(logs.String(), "level=WARN msg=\""+msg+"\"")
	}
	pull("v1", 1, http.StatusOK)
	pull("v2", 1, http.StatusOK)
	m.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "", 0))

	m.clock.Advance(time.Hour)
	pull("v1", 5, http.StatusOK)
	pull("v2", 5, http.StatusOK)
	m.clock.Advance(10 * time.Hour)
	pull("v1", 5, http.StatusOK)
	if got := warnings("serving stale tag"); got != 2 {
		t.Errorf("%d warnings \"serving stale tag\" for 15 stale pulls of 2 tags, want 2 (one per tag):\n%s", got, logs.String())
	}
	if got := metricValue(t, m.metrics, "registry_edge_stale_tags_served_total", "upstream", "central.test"); got != 15 {
		t.Errorf("stale tags served metric = %v, want 15 (it counts answers)", got)
	}

	m.clock.Advance(24 * time.Hour)
	pull("v1", 5, http.StatusServiceUnavailable)
	if got := warnings("cached tag beyond max staleness"); got != 1 {
		t.Errorf("%d warnings \"cached tag beyond max staleness\" for 5 refused pulls of a tag, want 1:\n%s", got, logs.String())
	}

	// The link is back: the tag is confirmed, and the next outage warns
	// again.
	m.fake.ClearFaults()
	m.clock.Advance(time.Hour) // the breaker's probe is due
	pull("v1", 1, http.StatusOK)
	m.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "", 0))
	m.clock.Advance(time.Hour)
	pull("v1", 3, http.StatusOK)
	if got := warnings("serving stale tag"); got != 3 {
		t.Errorf("%d warnings \"serving stale tag\" after the tag was confirmed and the link lost again, want 3:\n%s", got, logs.String())
	}
}

// An upstream 404 for a cached tag is an answer, not an outage: the
// staleness limit does not apply and cache.tagNotFound decides.
func TestOfflineStalenessIgnoresNotFound(t *testing.T) {
	t.Parallel()
	m := newOfflineMirror(t, offlineSetup{staleness: proxy.Staleness{MaxStale: time.Hour}})
	m.fake.Image("app", "gone", []byte("x"))
	m.get(http.MethodGet, manifestPath("app", "gone"))
	m.fake.DeleteTag("app", "gone")
	m.clock.Advance(48 * time.Hour)
	if resp, body := m.get(http.MethodGet, manifestPath("app", "gone")); resp.StatusCode != http.StatusOK {
		t.Errorf("tag deleted upstream, serve-cached: %d %s, want 200", resp.StatusCode, body)
	}
}

// A site's offline.maxStale holds behind a registry-edge tier: a region
// that answers a tag from its cache says how old its confirmation is
// (Age), and a site whose limit that exceeds refuses the tag (503) instead
// of taking the answer for a fresh confirmation.
func TestMaxStaleHoldsBehindATier(t *testing.T) {
	t.Parallel()
	region := newMirror(t)
	layer := fakeupstream.Random(t, 1000)
	region.fake.Image("app", "v1", layer)
	site := newOfflineMirror(t, offlineSetup{staleness: proxy.Staleness{MaxStale: 5 * time.Minute}},
		func(string) string { return region.srv.URL })
	accept := []string{"Accept", "application/vnd.oci.image.manifest.v1+json"}
	if resp, body := site.get(http.MethodGet, manifestPath("app", "v1"), accept...); resp.StatusCode != http.StatusOK {
		t.Fatalf("pull through the tier: %d %s", resp.StatusCode, body)
	}

	region.upstream.Close() // central is down
	region.clock.Advance(10 * time.Minute)
	resp, _ := region.get(http.MethodHead, manifestPath("app", "v1"), accept...)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Registry-Edge-Tag-Age") != "600" {
		t.Fatalf("the region's stale answer: %d, Registry-Edge-Tag-Age %q; want 200, 600", resp.StatusCode, resp.Header.Get("Registry-Edge-Tag-Age"))
	}
	site.clock.Advance(2 * time.Minute) // past the site's tag TTL, within its maxStale
	resp, body := site.get(http.MethodGet, manifestPath("app", "v1"), accept...)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(errorMessage(t, body), "more than the allowed staleness of 5m") {
		t.Errorf("tag confirmed 10m ago behind the tier, maxStale 5m: %d %s, want 503", resp.StatusCode, body)
	}
	// A site that never had the tag refuses it alike.
	other := newOfflineMirror(t, offlineSetup{staleness: proxy.Staleness{MaxStale: 5 * time.Minute}},
		func(string) string { return region.srv.URL })
	resp, body = other.get(http.MethodGet, manifestPath("app", "v1"), accept...)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("first pull of a tag confirmed 10m ago behind the tier, maxStale 5m: %d %s, want 503", resp.StatusCode, body)
	}
}

// The HTTP Age header is not the tag's age: a CDN or caching proxy in
// front of a plain registry sends it about its own copy. Pulls keep
// working whatever it says.
func TestHTTPAgeIsNotATagsAge(t *testing.T) {
	t.Parallel()
	m := newOfflineMirror(t, offlineSetup{staleness: proxy.Staleness{MaxStale: time.Hour}})
	m.fake.Image("app", "v1", fakeupstream.Random(t, 1000))
	m.fake.Fail(func(w http.ResponseWriter, r *http.Request, _ int) bool {
		w.Header().Set("Age", "7200")
		return false // answered as usual
	})
	for i := range 3 {
		if resp, body := m.get(http.MethodGet, manifestPath("app", "v1"), "Accept", "application/vnd.oci.image.manifest.v1+json"); resp.StatusCode != http.StatusOK {
			t.Fatalf("pull %d: %d %s", i, resp.StatusCode, body)
		}
		m.clock.Advance(2 * time.Minute) // past the tag TTL: revalidated
	}
}

// breakerMirrorWithLayer is an offline mirror whose breaker opens after 3
// failures, with app:v1 (one 100 kB layer, not fetched yet; its manifest
// pulled) and app:v2 (not pulled) upstream. It returns the layer, its
// descriptors and its blob path.
func breakerMirrorWithLayer(t *testing.T) (*offlineMirror, []byte, []ocispec.Descriptor, string) {
	t.Helper()
	return breakerMirrorWithLayerOn(t, offlineSetup{})
}

// breakerMirrorWithLayerOn is breakerMirrorWithLayer with s's other
// settings (fakeTimers).
func breakerMirrorWithLayerOn(t *testing.T, s offlineSetup) (*offlineMirror, []byte, []ocispec.Descriptor, string) {
	t.Helper()
	s.retryMax = 5
	s.breaker = upstream.BreakerOptions{Failures: 3, MinProbe: time.Minute, MaxProbe: time.Minute}
	m := newOfflineMirror(t, s)
	layer := fakeupstream.Random(t, 100_000)
	_, layers := m.fake.Image("app", "v1", layer)
	m.fake.Image("app", "v2", []byte("not here"))
	m.get(http.MethodGet, manifestPath("app", "v1"))
	return m, layer, layers, blobPath("app", layers[0].Digest)
}

// breakLinkMidLayer breaks the link 1000 bytes into the layer of
// breakerMirrorWithLayer and keeps it down (every request answered 503),
// with a first client filling the layer in the background.
func breakLinkMidLayer(m *offlineMirror, layer []byte, layers []ocispec.Descriptor, path string) {
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), fakeupstream.First(1, fakeupstream.Cut(layer, 1000, true))))
	m.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "", 0))
	go func() {
		client := &http.Client{Timeout: 2 * time.Second}
		if resp, err := client.Get(m.srv.URL + path); err == nil {
			io.Copy(io.Discard, resp.Body) // the fill's first client: its outcome is not the point
			resp.Body.Close()
		}
	}()
}

// With the uplink down (the breaker open), a client asking for a blob
// whose fill waits to resume a broken transfer is answered 503 at once,
// like for any blob not here, so that it can turn to another host; it is
// not handed the bytes on disk and held until the stall limit. A fill
// whose bytes keep coming is joined as ever, whatever the breaker says.
func TestNewClientOfABrokenFillIsToldAtOnce(t *testing.T) {
	t.Parallel()
	m, layer, layers, path := breakerMirrorWithLayer(t)
	breakLinkMidLayer(m, layer, layers, path)
	for m.client.Health().State != upstream.BreakerOpen {
		time.Sleep(5 * time.Millisecond) // the fill's resumes open it; the test's deadline bounds the wait
	}
	client := &http.Client{Timeout: 10 * time.Second} // reached only if the client is held
	resp, err := client.Get(m.srv.URL + path)
	if err != nil {
		t.Fatalf("GET of the blob being filled, uplink down: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m.wantCode(resp, body, http.StatusServiceUnavailable, "UNAVAILABLE")
}

// The other side: a fill whose bytes keep coming is joined even while the
// breaker is open (other requests failed), and the client gets the blob.
func TestStreamingFillIsJoinedWithTheBreakerOpen(t *testing.T) {
	t.Parallel()
	m, layer, layers, path := breakerMirrorWithLayer(t)
	started, release := make(chan struct{}), make(chan struct{})
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), fakeupstream.Gate(layer, started, release)))
	first := make(chan []byte, 1)
	go func() {
		_, body, _ := m.do(http.MethodGet, path)
		first <- body
	}()
	<-started // the upstream answered and streams
	m.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "", 0))
	m.get(http.MethodGet, manifestPath("app", "v2")) // other requests fail: the breaker opens
	if h := m.client.Health(); h.State != upstream.BreakerOpen {
		t.Fatalf("breaker %v, want open", h.State)
	}
	second := make(chan []byte, 1)
	go func() {
		resp, body, _ := m.do(http.MethodGet, path)
		if resp == nil || resp.StatusCode != http.StatusOK {
			body = nil
		}
		second <- body
	}()
	time.Sleep(200 * time.Millisecond) // for the second client to join; what it gets does not depend on it
	close(release)
	if b := <-first; !bytes.Equal(b, layer) {
		t.Errorf("first client: %d bytes", len(b))
	}
	if b := <-second; !bytes.Equal(b, layer) {
		t.Errorf("second client of a streaming fill, breaker open: %d bytes, want the blob", len(b))
	}
}

// linkBackAfterRefusals breaks the link in the middle of a layer being
// filled (breakLinkMidLayer), on the test's clock (fakeTimers), lets the
// open breaker refuse the fill's resumes, advancing the clock to the end
// of each backoff (0.5, 1, 2, 4 s, ...: jittered), until a backoff runs
// past the breaker's probe time (1 min after it opened), and brings the
// link back at that time: the probe is due, and the fill still waits.
func linkBackAfterRefusals(t *testing.T) (*offlineMirror, []byte, []ocispec.Descriptor, string) {
	t.Helper()
	m, layer, layers, path := breakerMirrorWithLayerOn(t, offlineSetup{fakeTimers: true})
	breakLinkMidLayer(m, layer, layers, path)
	d := waitBackoff(t, m) // the first backoff: the breaker opened before it
	if h := m.client.Health(); h.State != upstream.BreakerOpen {
		t.Fatalf("breaker %v when the fill first backs off, want open", h.State)
	}
	probeAt := m.clock.Now().Add(time.Minute) // MinProbe = MaxProbe: no jitter
	for !m.clock.Now().Add(d).After(probeAt) {
		m.clock.Advance(d) // the backoff ends: the open breaker refuses the resume
		d = waitBackoff(t, m)
	}
	if h := m.client.Health(); h.Refused < 4 {
		t.Fatalf("the breaker refused %d resumes, want the fill to have backed off at least 4 times", h.Refused)
	}
	m.fake.ClearFaults()                        // the link is back
	m.clock.Advance(probeAt.Sub(m.clock.Now())) // the breaker's probe is due; the fill's backoff is not over
	return m, layer, layers, path
}

// waitBackoff waits until the fill arms its backoff on m's clock and
// returns its length. The fill's client arms its wait for new bytes on the
// same clock (storage.clientStallTimeout, 2 min here): passed over.
func waitBackoff(t *testing.T, m *offlineMirror) time.Duration {
	t.Helper()
	for {
		if d := m.clock.WaitArmed(t); d != 2*time.Minute {
			return d
		}
	}
}

// waitForFills waits until every fill of m has ended; the limit only turns
// a fill that never resumes (its backoff is on the test's clock, which
// the test no longer advances) into a failure.
func waitForFills(t *testing.T, m *offlineMirror) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := m.proxy.Wait(ctx); err != nil {
		t.Fatalf("the fill did not resume: %v", err)
	}
}

// When the link is back, a fill that waits to resume a broken transfer
// tries again as soon as a client asks for its blob and the breaker's
// probe is due, not at the end of its backoff (which grows to 30 s while
// the link is down): the client that asked is told 503 at once, and its
// next try gets the blob.
func TestBrokenFillResumesWhenAClientAsksAfterTheLinkIsBack(t *testing.T) {
	t.Parallel()
	m, layer, _, path := linkBackAfterRefusals(t)
	resp, body := m.get(http.MethodGet, path)
	m.wantCode(resp, body, http.StatusServiceUnavailable, "UNAVAILABLE")
	waitForFills(t, m)
	resp, body = m.get(http.MethodGet, path)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Fatalf("the blob after the link came back: %d, %d bytes", resp.StatusCode, len(body))
	}
}

// A fill that waits to resume a broken transfer also tries again as soon as
// the breaker closes, when no client asks for its blob (its clients gave
// up, or it is a prefetch): another request's answer proves the link back,
// and the blob is on disk at once, not after the fill's backoff.
func TestBrokenFillResumesWhenTheBreakerCloses(t *testing.T) {
	t.Parallel()
	m, _, layers, path := linkBackAfterRefusals(t)
	if resp, body := m.get(http.MethodGet, manifestPath("app", "v2")); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET app:v2 (the probe) = %d %s", resp.StatusCode, body)
	}
	if h := m.client.Health(); h.State != upstream.BreakerClosed {
		t.Fatalf("breaker %v after an answer, want closed", h.State)
	}
	waitForFills(t, m)
	if _, err := m.store.Stat(context.Background(), layers[0].Digest); err != nil {
		t.Fatalf("the blob is not stored after the breaker closed (no client asked for it): %v", err)
	}
	if n := m.fake.Count(http.MethodGet, path); n < 2 {
		t.Errorf("upstream GETs of the blob = %d, want the cut one and the resume", n)
	}
}

// Attempts the open breaker refuses before they leave are not counted as
// resumes (nor logged as such): the metric says what went over the link.
func TestRefusedAttemptsAreNoResumes(t *testing.T) {
	t.Parallel()
	m, layer, layers, path := breakerMirrorWithLayer(t)
	breakLinkMidLayer(m, layer, layers, path)
	for m.client.Health().Refused < 3 {
		time.Sleep(10 * time.Millisecond) // the test's deadline bounds the wait
	}
	if got := metricValue(t, m.metrics, "registry_edge_fill_resumes_total", "upstream", "central.test", "cause", "link"); got > 2 {
		t.Errorf("resumes counted = %v after %d refused attempts, want at most the 2 that reached the upstream", got, m.client.Health().Refused)
	}
}

// A broken transfer whose link stays down for two more tries and then
// comes back was resumed once: the tries that found the link down (an
// upstream 503 each, the breaker still closed) are no resumes, whatever
// the log says of each.
func TestResumeIsCountedOnceItContinues(t *testing.T) {
	t.Parallel()
	m := newOfflineMirror(t, offlineSetup{breaker: upstream.BreakerOptions{Failures: 100}})
	layer := fakeupstream.Random(t, 100_000)
	_, layers := m.fake.Image("app", "v1", layer)
	m.get(http.MethodGet, manifestPath("app", "v1"))
	d := layers[0].Digest
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, d.String(), fakeupstream.First(1, fakeupstream.Cut(layer, 1000, true))))
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, d.String(), fakeupstream.Status(http.StatusServiceUnavailable, "", 3)))
	_, body := m.get(http.MethodGet, blobPath("app", d))
	if !bytes.Equal(body, layer) {
		t.Fatalf("blob: got %d bytes, want the layer's %d", len(body), len(layer))
	}
	if n := m.fake.Count(http.MethodGet, blobPath("app", d)); n != 4 {
		t.Fatalf("upstream GETs of the blob = %d, want 4 (cut, two 503s, the rest)", n)
	}
	if got := metricValue(t, m.metrics, "registry_edge_fill_resumes_total", "upstream", "central.test", "cause", "link"); got != 1 {
		t.Errorf("resumes counted = %v, want 1", got)
	}
}

// An outage warns once per repository whose cached tag list is served, not
// once per listing, as for stale tags; after the upstream listed the tags
// again, the next outage warns again.
func TestOutageWarnsOncePerCachedTagList(t *testing.T) {
	t.Parallel()
	var logs syncbuf.Buffer
	m := newOfflineMirror(t, offlineSetup{
		breaker: upstream.BreakerOptions{Failures: 1, MinProbe: time.Hour, MaxProbe: time.Hour},
		logger:  slog.New(slog.NewTextHandler(&logs, nil)),
	})
	m.fake.Image("app", "v1", []byte("layer"))
	m.fake.Image("other", "v1", []byte("layer 2"))
	list := func(repo string, n int) {
		t.Helper()
		for range n {
			if resp, body := m.get(http.MethodGet, "/v2/"+repo+"/tags/list"); resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"v1"`)) {
				t.Fatalf("GET %s tags = %d %s, want the list", repo, resp.StatusCode, body)
			}
		}
	}
	warnings := func() int { return strings.Count(logs.String(), `level=WARN msg="serving cached tag list"`) }
	for _, repo := range []string{"app", "other"} {
		if resp, body := m.get(http.MethodGet, manifestPath(repo, "v1")); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s:v1 = %d %s", repo, resp.StatusCode, body)
		}
	}
	m.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "", 0))
	list("app", 5)
	list("other", 5)
	if got := warnings(); got != 2 {
		t.Errorf("%d warnings \"serving cached tag list\" for 10 listings of 2 repositories, want 2:\n%s", got, logs.String())
	}

	m.fake.ClearFaults()
	m.clock.Advance(time.Hour) // the breaker's probe is due
	list("app", 1)
	m.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "", 0))
	list("app", 3)
	if got := warnings(); got != 3 {
		t.Errorf("%d warnings \"serving cached tag list\" after the upstream listed the tags and the link was lost again, want 3:\n%s", got, logs.String())
	}
}

// With the breaker open, a request for an uncached blob answers 503 and
// logs no error of its own: the outage was logged once, when the breaker
// opened (operations.md: the requests in between are in the access log).
func TestOutageLogsNoErrorPerUncachedBlob(t *testing.T) {
	t.Parallel()
	var logs syncbuf.Buffer
	m := newOfflineMirror(t, offlineSetup{
		breaker: upstream.BreakerOptions{Failures: 1, MinProbe: time.Hour, MaxProbe: time.Hour},
		logger:  slog.New(slog.NewTextHandler(&logs, nil)),
	})
	m.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "", 0))
	for i := range 6 {
		resp, body := m.get(http.MethodGet, blobPath("app", digest.FromString(fmt.Sprint("blob ", i))))
		m.wantCode(resp, body, http.StatusServiceUnavailable, "UNAVAILABLE")
	}
	if got := strings.Count(logs.String(), `level=WARN msg="upstream unreachable, circuit breaker open"`); got != 1 {
		t.Fatalf("%d warnings that the breaker opened, want 1:\n%s", got, logs.String())
	}
	// The request that opened the breaker failed on its own: one error.
	if got := strings.Count(logs.String(), `level=ERROR msg="blob fill failed"`); got != 1 {
		t.Errorf("%d errors \"blob fill failed\" for 6 uncached blobs, 5 of them refused by the open breaker, want 1:\n%s", got, logs.String())
	}
}
