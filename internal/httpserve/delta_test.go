package httpserve_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	dto "github.com/prometheus/client_model/go"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/delta"
	"github.com/registry-edge/registry-edge/internal/layerdelta"
	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/proxy"
	"github.com/registry-edge/registry-edge/internal/sigpolicy"
	"github.com/registry-edge/registry-edge/internal/testutil/fakeupstream"
	"github.com/registry-edge/registry-edge/internal/testutil/layergen"
	"github.com/registry-edge/registry-edge/internal/testutil/syncbuf"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

func withDeltas(o *proxy.Options) { o.Deltas, o.NegotiateDeltas = true, true }

func withPrecompute(o *proxy.Options) { withDeltas(o); o.PrecomputeDeltas = true }

// deltaSetup is an upstream with app:v1 and app:v2 (one layer each, v2 a
// small update of v1) and a delta of v2's layer against v1's, published as
// a referrer of v2.
type deltaSetup struct {
	old, nw  []byte
	v1, v2   ocispec.Descriptor
	newLayer ocispec.Descriptor
	l        layerdelta.Layer
	delta    []byte
}

func publishDelta(t *testing.T, m *mirror, edit func(*layerdelta.Layer)) deltaSetup {
	t.Helper()
	return publishDeltaAfter(t, m, edit, nil)
}

// publishDeltaAfter is publishDelta, with the referrers that before adds
// (given v1's and v2's manifests) listed ahead of the delta artifact, which
// names v1 as where its deltas start.
func publishDeltaAfter(t *testing.T, m *mirror, edit func(*layerdelta.Layer), before func(v2 ocispec.Descriptor, l layerdelta.Layer)) deltaSetup {
	t.Helper()
	v1 := layergen.New(40, 60, 16<<10)
	s := deltaSetup{old: layergen.Gzip(v1.Tar(), -1), nw: layergen.Gzip(v1.Update(41).Tar(), -1)}
	s.v1, _ = m.fake.Image("app", "v1", s.old)
	var layers []ocispec.Descriptor
	s.v2, layers = m.fake.Image("app", "v2", s.nw)
	s.newLayer = layers[0]

	content := func(b []byte) layerdelta.Content {
		return layerdelta.Content{Blob: layerdelta.Blob{Digest: digest.FromBytes(b), Size: int64(len(b))}, R: bytes.NewReader(b)}
	}
	res, err := layerdelta.Make(context.Background(), content(s.nw), []layerdelta.Content{content(s.old)}, layerdelta.Options{TempDir: t.TempDir()})
	if err != nil || !res.OK() {
		t.Fatalf("Make: %v %s", err, res.Reason)
	}
	defer res.Close()
	if s.delta, err = io.ReadAll(res.File); err != nil {
		t.Fatal(err)
	}
	s.l = res.Layer
	if edit != nil {
		edit(&s.l)
	}
	m.fake.AddBlob(s.delta)
	m.fake.LinkBlob("app", s.l.Delta.Digest)
	if before != nil {
		before(s.v2, s.l)
	}
	body, desc, err := layerdelta.Manifest(s.v2, s.v1.Digest, []layerdelta.Layer{s.l})
	if err != nil {
		t.Fatal(err)
	}
	m.fake.AddManifest("app", "", ocispec.MediaTypeImageManifest, body)
	m.fake.AddReferrer("app", s.v2.Digest, desc)
	return s
}

// pull fetches repo:tag's manifest and its layers through the mirror, as a
// client does, and checks every blob against its digest.
func pullImage(t *testing.T, m *mirror, tag string, layers ...[]byte) {
	t.Helper()
	resp, _ := m.get(http.MethodGet, manifestPath("app", tag), "Accept", ocispec.MediaTypeImageManifest)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET manifest %s: %d", tag, resp.StatusCode)
	}
	for _, l := range layers {
		resp, body := m.get(http.MethodGet, blobPath("app", digest.FromBytes(l)))
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, l) {
			t.Fatalf("GET layer of %s: %d, %d bytes, equal %v", tag, resp.StatusCode, len(body), bytes.Equal(body, l))
		}
	}
	m.waitFills()
}

// A site that holds v1 pulls v2: the mirror fetches the published delta
// instead of the layer, rebuilds the layer and serves the exact blob.
func TestLayerRebuiltFromPublishedDelta(t *testing.T) {
	t.Parallel()
	m := newMirror(t, withDeltas)
	s := publishDelta(t, m, nil)
	pullImage(t, m, "v1", s.old)
	pullImage(t, m, "v2", s.nw)

	if n := m.fake.Count(http.MethodGet, blobPath("app", s.newLayer.Digest)); n != 0 {
		t.Errorf("the new layer was fetched %d times from upstream, want 0", n)
	}
	if n := m.fake.Count(http.MethodGet, blobPath("app", s.l.Delta.Digest)); n != 1 {
		t.Errorf("the delta was fetched %d times, want 1", n)
	}
	if n := m.fake.Count(http.MethodHead, blobPath("app", s.newLayer.Digest)); n != 0 {
		t.Errorf("the new layer was asked about %d times; a delta published for the repository says it holds it", n)
	}
	if got := metricValue(t, m.metrics, "registry_edge_delta_fills_total", "result", "applied"); got != 1 {
		t.Errorf("applied deltas = %v, want 1", got)
	}
	if got := metricValue(t, m.metrics, "registry_edge_delta_full_bytes_total"); got != float64(len(s.nw)) {
		t.Errorf("full bytes = %v, want %d", got, len(s.nw))
	}
	if got := metricValue(t, m.metrics, "registry_edge_delta_fetched_bytes_total"); got != float64(len(s.delta)) {
		t.Errorf("delta bytes = %v, want %d", got, len(s.delta))
	}
	if left := m.ingestFiles(); len(left) != 0 {
		t.Errorf("files left behind: %v", left)
	}
	// The rebuilt layer is stored: a second pull is a hit, and a restart
	// keeps it.
	m.restart()
	resp, body := m.get(http.MethodGet, blobPath("app", s.newLayer.Digest))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, s.nw) || resp.Header.Get("Docker-Content-Digest") != s.newLayer.Digest.String() {
		t.Errorf("rebuilt layer after restart: %d, equal %v", resp.StatusCode, bytes.Equal(body, s.nw))
	}
}

// A delta that does not rebuild the layer (here: the wrong recipe) is
// caught by the digest check; the layer is fetched in full and the client
// gets the right bytes.
func TestBadDeltaFallsBackToFullLayer(t *testing.T) {
	t.Parallel()
	m := newMirror(t, withDeltas)
	s := publishDelta(t, m, func(l *layerdelta.Layer) {
		r := *l.Recipe
		r.Level = 1
		l.Recipe = &r
	})
	pullImage(t, m, "v1", s.old)
	pullImage(t, m, "v2", s.nw)
	if n := m.fake.Count(http.MethodGet, blobPath("app", s.newLayer.Digest)); n != 1 {
		t.Errorf("the new layer was fetched %d times, want 1 (after the delta failed)", n)
	}
	if got := metricValue(t, m.metrics, "registry_edge_delta_fills_total", "result", "failed"); got != 1 {
		t.Errorf("failed deltas = %v, want 1", got)
	}
	if left := m.ingestFiles(); len(left) != 0 {
		t.Errorf("files left behind: %v", left)
	}
}

// A delta whose base the site does not hold is not fetched.
func TestDeltaWithoutBaseIsNotUsed(t *testing.T) {
	t.Parallel()
	m := newMirror(t, withDeltas)
	s := publishDelta(t, m, nil)
	// Another image of the repository is held, but not v1's layer.
	m.fake.Image("app", "other", []byte("unrelated layer"))
	pullImage(t, m, "other", []byte("unrelated layer"))
	pullImage(t, m, "v2", s.nw)
	if n := m.fake.Count(http.MethodGet, blobPath("app", s.l.Delta.Digest)); n != 0 {
		t.Errorf("the delta was fetched %d times without its base", n)
	}
	if got := metricValue(t, m.metrics, "registry_edge_delta_fills_total", "result", "no_base"); got != 1 {
		t.Errorf("no_base = %v, want 1", got)
	}
}

// A site whose published delta needs a base it lacks, under a region that
// negotiates: the negotiated delta rebuilds the layer, and the fill counts
// once, as applied (not also as no_base).
func TestUnusablePublishedDeltaThenNegotiatedCountsOnce(t *testing.T) {
	t.Parallel()
	region := newMirror(t, withDeltas)
	s := publishDelta(t, region, func(l *layerdelta.Layer) {
		l.Bases = []layerdelta.Blob{{Digest: digest.FromString("a layer no site holds"), Size: 21}}
	})
	site := newMirrorOver(t, region.srv.URL, nil, withDeltas)
	pullImage(t, site, "v1", s.old)
	pullImage(t, site, "v2", s.nw)
	for result, want := range map[string]float64{"applied": 1, "no_base": 0} {
		if got := metricValue(t, site.metrics, "registry_edge_delta_fills_total", "result", result); got != want {
			t.Errorf("site delta fills %s = %v, want %v", result, got, want)
		}
	}
	if got := metricValue(t, region.metrics, "registry_edge_delta_negotiations_total", "result", "delta"); got != 1 {
		t.Errorf("region answered %v negotiations with a delta, want 1", got)
	}
}

// With deltas disabled, nothing is looked up.
func TestDeltasDisabled(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	s := publishDelta(t, m, nil)
	pullImage(t, m, "v1", s.old)
	pullImage(t, m, "v2", s.nw)
	if n := m.fake.Count(http.MethodGet, "/v2/app/referrers/"+s.v2.Digest.String()); n != 0 {
		t.Errorf("referrers asked %d times with deltas disabled", n)
	}
	if n := m.fake.Count(http.MethodGet, blobPath("app", s.newLayer.Digest)); n != 1 {
		t.Errorf("the new layer was fetched %d times, want 1", n)
	}
}

// tiers gives region the images v1 and v2 of app (v2's layer an update of
// v1's) and returns a site mirror over it that has pulled v1.
func tiers(t *testing.T, region *mirror) (site *mirror, old, nw []byte, newLayer ocispec.Descriptor) {
	t.Helper()
	v1 := layergen.New(50, 60, 16<<10)
	old, nw = layergen.Gzip(v1.Tar(), -1), layergen.Gzip(v1.Update(51).Tar(), -1)
	region.fake.Image("app", "v1", old)
	_, layers := region.fake.Image("app", "v2", nw)
	site = newMirrorOver(t, region.srv.URL, nil, withDeltas)
	pullImage(t, site, "v1", old)
	return site, old, nw, layers[0]
}

// Two tiers: a site mirror whose upstream is a regional mirror. Nothing is
// published; the site asks the region for a delta against the layer it
// holds, the region computes it, and the site rebuilds the layer.
func TestTiersNegotiateDelta(t *testing.T) {
	t.Parallel()
	region := newMirror(t, withDeltas)
	site, old, nw, layer := tiers(t, region)
	before := metricValue(t, site.metrics, "registry_edge_upstream_fetched_bytes_total", "upstream", "central.test")
	pullImage(t, site, "v2", nw)
	fetched := metricValue(t, site.metrics, "registry_edge_upstream_fetched_bytes_total", "upstream", "central.test") - before

	if got := metricValue(t, site.metrics, "registry_edge_delta_fills_total", "result", "applied"); got != 1 {
		t.Fatalf("site applied %v deltas, want 1", got)
	}
	if got := metricValue(t, region.metrics, "registry_edge_delta_negotiations_total", "result", "delta"); got != 1 {
		t.Errorf("region answered %v negotiations with a delta, want 1", got)
	}
	// Only the layer was negotiated: not the config, not the delta blob.
	if got := metricValue(t, region.metrics, "registry_edge_delta_negotiations_total", "result", "full"); got != 0 {
		t.Errorf("region answered %v negotiations with the full blob, want 0", got)
	}
	if fetched > float64(len(nw))/5 {
		t.Errorf("site fetched %v bytes for v2, more than a fifth of its %d-byte layer", fetched, len(nw))
	}
	if got := metricValue(t, site.metrics, "registry_edge_delta_fetched_bytes_total"); got <= 0 || got > fetched {
		t.Errorf("delta bytes %v, fetched %v", got, fetched)
	}
	// The region fetched the layer itself, in full, from the plain central
	// registry, without asking it for a delta.
	if n := region.fake.Count(http.MethodHead, blobPath("app", layer.Digest)); n != 0 {
		t.Errorf("the region sent %d HEADs for the layer to a plain registry", n)
	}
	// A second site asking for the same delta gets the one computed before.
	site2 := newMirrorOver(t, region.srv.URL, nil, withDeltas)
	pullImage(t, site2, "v1", old)
	pullImage(t, site2, "v2", nw)
	if got := metricValue(t, region.metrics, "registry_edge_delta_recipes_total", "result", "found"); got != 1 {
		t.Errorf("region computed %v deltas for two sites, want 1", got)
	}
	if got := metricValue(t, site2.metrics, "registry_edge_delta_fills_total", "result", "applied"); got != 1 {
		t.Errorf("second site applied %v deltas, want 1", got)
	}
}

// A region still computing a delta when a site's negotiation has waited
// as long as the site asked answers 202 Accepted (the computation goes
// on); the site asks again and rebuilds the layer from the delta instead
// of timing out and fetching it in full.
func TestSiteWaitsForADeltaBeingComputed(t *testing.T) {
	t.Parallel()
	region := newMirror(t, withDeltas)
	region.maxDeltaWait = time.Millisecond
	region.restart()
	site, _, nw, layer := tiers(t, region)

	// The region's own fetch of the new layer, which the delta needs,
	// is held until it has answered a negotiation "still computing".
	release := make(chan struct{})
	region.fake.Fail(func(w http.ResponseWriter, r *http.Request, n int) bool {
		if r.Method == http.MethodGet && r.URL.Path == blobPath("app", layer.Digest) {
			<-release
		}
		return false
	})
	go func() {
		defer close(release)
		for range 3000 {
			var m dto.Metric
			if region.metrics.Deltas.Served.WithLabelValues("pending").Write(&m) == nil && m.GetCounter().GetValue() > 0 {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	before := metricValue(t, site.metrics, "registry_edge_upstream_fetched_bytes_total", "upstream", "central.test")
	pullImage(t, site, "v2", nw)
	fetched := metricValue(t, site.metrics, "registry_edge_upstream_fetched_bytes_total", "upstream", "central.test") - before

	if got := metricValue(t, region.metrics, "registry_edge_delta_negotiations_total", "result", "pending"); got < 1 {
		t.Errorf("region answered %v negotiations with 202, want at least 1", got)
	}
	if got := metricValue(t, region.metrics, "registry_edge_delta_negotiations_total", "result", "delta"); got != 1 {
		t.Errorf("region answered %v negotiations with a delta, want 1", got)
	}
	if got := metricValue(t, site.metrics, "registry_edge_delta_fills_total", "result", "applied"); got != 1 {
		t.Errorf("site applied %v deltas, want 1", got)
	}
	if got := metricValue(t, site.metrics, "registry_edge_upstream_requests_total", "upstream", "central.test", "op", "negotiate", "result", "pending"); got < 1 {
		t.Errorf("site counted %v pending negotiations, want at least 1", got)
	}
	if fetched > float64(len(nw))/5 {
		t.Errorf("site fetched %v bytes for v2, more than a fifth of its %d-byte layer", fetched, len(nw))
	}
}

// Of the deltas a region holds for a layer, a site that holds the bases
// of several gets the smallest, not the newest.
func TestRegionSendsTheSmallestDelta(t *testing.T) {
	t.Parallel()
	region := newMirror(t, withDeltas)
	gen := layergen.New(60, 60, 16<<10)
	v2gen := gen.Update(61)
	v1, v2, v3 := layergen.Gzip(gen.Tar(), -1), layergen.Gzip(v2gen.Tar(), -1), layergen.Gzip(v2gen.Update(62).Tar(), -1)
	_, l3 := region.fake.Image("app", "v3", v3)
	region.fake.Image("app", "v1", v1)
	region.fake.Image("app", "v2", v2)
	pullImage(t, region, "v1", v1)
	pullImage(t, region, "v2", v2)
	content := func(b []byte) layerdelta.Content {
		return layerdelta.Content{Blob: layerdelta.Blob{Digest: digest.FromBytes(b), Size: int64(len(b))}, R: bytes.NewReader(b)}
	}
	var deltas []layerdelta.Layer
	for _, base := range [][]byte{v2, v1} { // the smaller delta recorded first: the newest is the larger
		res, err := layerdelta.Make(context.Background(), content(v3), []layerdelta.Content{content(base)}, layerdelta.Options{TempDir: t.TempDir()})
		if err != nil || !res.OK() {
			t.Fatalf("Make: %v", err)
		}
		if err := region.store.Put(context.Background(), res.Layer.Delta, res.File); err != nil {
			t.Fatal(err)
		}
		res.Close()
		desc, err := res.Layer.Descriptor()
		if err != nil {
			t.Fatal(err)
		}
		if err := region.db.AddDelta(context.Background(), l3[0].Digest, meta.DeltaRecord{Repo: meta.Repo{Registry: "central.test", Name: "app"}, Descriptor: desc}); err != nil {
			t.Fatal(err)
		}
		deltas = append(deltas, res.Layer)
	}
	if deltas[0].Delta.Size >= deltas[1].Delta.Size {
		t.Fatalf("test assumption: the delta from v2 (%d bytes) is smaller than from v1 (%d)", deltas[0].Delta.Size, deltas[1].Delta.Size)
	}
	resp, _ := region.get(http.MethodHead, blobPath("app", l3[0].Digest), "A-IM", "vnd.registry-edge.delta.v1",
		"If-None-Match", `"`+digest.FromBytes(v1).String()+`", "`+digest.FromBytes(v2).String()+`"`)
	if resp.StatusCode != 226 || !strings.Contains(resp.Header.Get("Registry-Edge-Delta"), deltas[0].Delta.Digest.String()) {
		t.Errorf("negotiation: %d, delta %s; want 226 with the smaller delta %s", resp.StatusCode, resp.Header.Get("Registry-Edge-Delta"), deltas[0].Delta.Digest)
	}
	// The entity tag of a 226 answer is the instance's, the layer's, not
	// the delta's (RFC 3229: a 226 answer's entity tag is the current
	// instance's), and the base used is named.
	if got, want := resp.Header.Get("ETag"), `"`+l3[0].Digest.String()+`"`; got != want {
		t.Errorf("226 ETag = %s, want the layer's %s", got, want)
	}
	if got, want := resp.Header.Get("Delta-Base"), `"`+digest.FromBytes(v2).String()+`"`; got != want {
		t.Errorf("226 Delta-Base = %s, want %s", got, want)
	}
	// A site that states the formats it reads gets a delta only in one of
	// them; one that reads none of this version's gets the layer in full.
	for _, tt := range []struct {
		formats string
		want    int
	}{
		{fmt.Sprintf("%d, %d", delta.MinFormatVersion, delta.FormatVersion), 226},
		{strconv.Itoa(delta.FormatVersion + 1), http.StatusOK},
	} {
		resp, _ := region.get(http.MethodHead, blobPath("app", l3[0].Digest), "A-IM", "vnd.registry-edge.delta.v1",
			"If-None-Match", `"`+digest.FromBytes(v2).String()+`"`, "Registry-Edge-Delta-Formats", tt.formats)
		if resp.StatusCode != tt.want {
			t.Errorf("negotiation from a site reading formats %q: %d, want %d", tt.formats, resp.StatusCode, tt.want)
		}
	}
	if got := metricValue(t, region.metrics, "registry_edge_delta_negotiations_total", "result", "unreadable"); got != 1 {
		t.Errorf("negotiations answered in full for want of a format: %v, want 1", got)
	}
}

// "No delta worth sending" is remembered by the computation itself: a
// site answered 202 meanwhile (its wait ran out) asks again and gets the
// layer in full, without the same delta computed a second time.
func TestNoDeltaIsRememberedWithoutAWaiter(t *testing.T) {
	t.Parallel()
	region := newMirror(t, withDeltas, func(o *proxy.Options) { o.MaxDeltaRatio = 0.0001 })
	region.maxDeltaWait = time.Nanosecond
	region.restart()
	site, _, nw, _ := tiers(t, region)
	pullImage(t, site, "v2", nw)
	if err := region.proxy.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := metricValue(t, region.metrics, "registry_edge_delta_negotiations_total", "result", "full"); got != 1 {
		t.Errorf("region answered %v negotiations in full, want 1", got)
	}
	if got := metricValue(t, region.metrics, "registry_edge_delta_recipes_total"); got != 1 {
		t.Errorf("region computed the delta %v times, want 1", got)
	}
}

// A region whose delta would not be smaller than deltas.maxRatio of the
// layer answers with the layer.
func TestTierServesFullLayerWhenDeltaTooBig(t *testing.T) {
	t.Parallel()
	region := newMirror(t, withDeltas)
	old := layergen.Gzip(layergen.New(52, 20, 8<<10).Tar(), -1)
	nw := layergen.Gzip(layergen.New(53, 20, 8<<10).Tar(), -1) // unrelated content
	region.fake.Image("app", "v1", old)
	region.fake.Image("app", "v2", nw)
	site := newMirrorOver(t, region.srv.URL, nil, withDeltas)
	pullImage(t, site, "v1", old)
	pullImage(t, site, "v2", nw)
	if got := metricValue(t, region.metrics, "registry_edge_delta_negotiations_total", "result", "full"); got != 1 {
		t.Errorf("region answered %v negotiations with the full layer, want 1", got)
	}
	if got := metricValue(t, site.metrics, "registry_edge_delta_fills_total", "result", "applied"); got != 0 {
		t.Errorf("site applied %v deltas of unrelated layers", got)
	}
}

// A region that holds none of the bases a site offers (it is new, or
// evicted the version a lagging site runs) answers the layer in full, then
// fetches the offered base closest in size from its upstream and computes
// the delta, which the next negotiation gets.
func TestRegionFetchesAnOfferedBaseItLacks(t *testing.T) {
	t.Parallel()
	region := newMirror(t, withPrecompute)
	v1 := layergen.New(56, 60, 16<<10)
	old, nw := layergen.Gzip(v1.Tar(), -1), layergen.Gzip(v1.Update(57).Tar(), -1)
	region.fake.Image("app", "v1", old)
	region.fake.Image("app", "v2", nw)
	pullImage(t, region, "v2", nw)
	other := region.fake.AddBlob(fakeupstream.Random(t, 5000)) // also offered, far smaller
	region.fake.LinkBlob("app", other.Digest)
	negotiate := func() int {
		resp, _ := region.get(http.MethodHead, blobPath("app", digest.FromBytes(nw)), "A-IM", "vnd.registry-edge.delta.v1",
			"If-None-Match", `"`+other.Digest.String()+`", "`+digest.FromBytes(old).String()+`"`)
		return resp.StatusCode
	}
	if code := negotiate(); code != http.StatusOK {
		t.Fatalf("negotiation with no base held: %d, want 200 (full)", code)
	}
	if err := region.proxy.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code := negotiate(); code != 226 {
		t.Errorf("negotiation once the offered base was fetched: %d, want 226", code)
	}
	if n := region.fake.Count(http.MethodGet, blobPath("app", other.Digest)); n != 0 {
		t.Errorf("the offered base farther in size was fetched %d times", n)
	}
}

// A region that precomputes: when it fetches v2's manifest for a site, it
// computes the delta against v1 in the background, once a lower tier has
// asked it for a delta (before a restart counts); the site's negotiation
// gets that delta (one computation in all).
func TestTierPrecomputesDelta(t *testing.T) {
	t.Parallel()
	region := newMirror(t, withPrecompute)
	v1 := layergen.New(54, 60, 16<<10)
	old, nw := layergen.Gzip(v1.Tar(), -1), layergen.Gzip(v1.Update(55).Tar(), -1)
	region.fake.Image("app", "v1", old)
	region.fake.Image("app", "v2", nw)
	pullImage(t, region, "v1", old)
	// A mirror no lower tier has asked for a delta precomputes nothing.
	if got := metricValue(t, region.metrics, "registry_edge_delta_recipes_total", "result", "found"); got != 0 {
		t.Fatalf("precomputed %v deltas before any lower tier asked", got)
	}
	resp, _ := region.get(http.MethodHead, blobPath("app", digest.FromBytes(old)), "A-IM", "vnd.registry-edge.delta.v1", "If-None-Match", `"`+digest.FromString("x").String()+`"`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a negotiation with nothing to offer: %d, want 200", resp.StatusCode)
	}
	// Asked once, precomputation stays on across restarts.
	region.restart()
	resp, _ = region.get(http.MethodGet, manifestPath("app", "v2"), "Accept", ocispec.MediaTypeImageManifest)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET v2 manifest: %d", resp.StatusCode)
	}
	region.waitFills()
	if err := region.proxy.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := metricValue(t, region.metrics, "registry_edge_delta_recipes_total", "result", "found"); got != 1 {
		t.Fatalf("region precomputed %v deltas, want 1", got)
	}
	site := newMirrorOver(t, region.srv.URL, nil, withDeltas)
	pullImage(t, site, "v1", old)
	pullImage(t, site, "v2", nw)
	if got := metricValue(t, site.metrics, "registry_edge_delta_fills_total", "result", "applied"); got != 1 {
		t.Errorf("site applied %v deltas, want 1", got)
	}
	if got := metricValue(t, region.metrics, "registry_edge_delta_recipes_total", "result", "found"); got != 1 {
		t.Errorf("region computed %v deltas in all, want the precomputed one only", got)
	}
}

// A delta published for one repository does not make its layer readable
// through another of the same registry: the upstream says whether that
// one holds the layer (here it does not: 404, and no byte of it), and
// where it does, the layer is rebuilt for it too.
func TestDeltaOfAnotherRepositoryNeedsTheUpstreamsWord(t *testing.T) {
	t.Parallel()
	m := newMirror(t, withDeltas)
	s := publishDelta(t, m, nil)
	pullImage(t, m, "v1", s.old)
	// v2's manifest through the mirror records the delta (for "app").
	if resp, _ := m.get(http.MethodGet, manifestPath("app", "v2"), "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET v2: %d", resp.StatusCode)
	}
	m.fake.LinkBlob("other", digest.FromBytes(s.old)) // the base is there, under "other" too
	resp, body := m.get(http.MethodGet, blobPath("other", s.newLayer.Digest))
	if resp.StatusCode != http.StatusNotFound || bytes.Contains(body, s.nw[:64]) {
		t.Fatalf("GET the layer through a repository without it: %d, %d bytes; want 404", resp.StatusCode, len(body))
	}
	m.waitFills()
	if n := m.fake.Count(http.MethodGet, blobPath("app", s.l.Delta.Digest)); n != 0 {
		t.Errorf("the delta was fetched %d times for a repository the upstream does not confirm", n)
	}
	if got := metricValue(t, m.metrics, "registry_edge_delta_fills_total", "result", "not_confirmed"); got != 1 {
		t.Errorf("fills with deltas not confirmed = %v, want 1", got)
	}

	m.fake.LinkBlob("shared", s.newLayer.Digest)
	resp, body = m.get(http.MethodGet, blobPath("shared", s.newLayer.Digest))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, s.nw) {
		t.Fatalf("GET the layer through a repository that holds it: %d, equal %v", resp.StatusCode, bytes.Equal(body, s.nw))
	}
	m.waitFills()
	if n := m.fake.Count(http.MethodGet, blobPath("shared", s.newLayer.Digest)); n != 0 {
		t.Errorf("the layer was fetched in full %d times; want it rebuilt from the delta", n)
	}
}

// A delta whose download keeps stalling gets half of the fill's time, and
// the layer is then fetched in full within the other half: the client
// gets it, instead of an error when the whole deadline has gone to the
// delta.
func TestStallingDeltaLeavesTimeForTheFullLayer(t *testing.T) {
	t.Parallel()
	m := newMirror(t, withDeltas, func(o *proxy.Options) { o.FillTimeout = 6 * time.Second })
	s := publishDelta(t, m, nil)
	pullImage(t, m, "v1", s.old)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, s.l.Delta.Digest.String(), fakeupstream.Stall(s.delta, 10, release)))
	pullImage(t, m, "v2", s.nw)
	if n := m.fake.Count(http.MethodGet, blobPath("app", s.newLayer.Digest)); n != 1 {
		t.Errorf("the layer was fetched in full %d times, want 1 (after the delta gave up)", n)
	}
	if got := metricValue(t, m.metrics, "registry_edge_delta_fills_total", "result", "failed"); got != 1 {
		t.Errorf("failed deltas = %v, want 1", got)
	}
}

// A client of a layer whose fill is trying a delta is not held without an
// answer for as long as the attempt may take: after clientStallTimeout
// with no bytes it is told to come back (503), the fill goes on, and the
// next request gets the layer.
func TestClientOfADeltaAttemptIsToldToComeBack(t *testing.T) {
	t.Parallel()
	m := newMirror(t, withDeltas, func(o *proxy.Options) {
		o.FillTimeout = 4 * time.Second // 2 s for the delta, which stalls
	})
	s := publishDelta(t, m, nil)
	pullImage(t, m, "v1", s.old)
	// Short only now: v1's own fill must not be told to come back on a
	// loaded machine.
	m.opts.ClientStallTimeout = 100 * time.Millisecond
	m.restart()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, s.l.Delta.Digest.String(), fakeupstream.Stall(s.delta, 10, release)))
	if resp, body := m.get(http.MethodGet, manifestPath("app", "v2"), "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK {
		t.Fatalf("manifest v2: %d %s", resp.StatusCode, body)
	}
	resp, body := m.get(http.MethodGet, blobPath("app", s.newLayer.Digest))
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "still being fetched") {
		t.Fatalf("layer during the delta attempt: %d %s, want 503 still being fetched", resp.StatusCode, body)
	}
	m.waitFills()
	resp, body = m.get(http.MethodGet, blobPath("app", s.newLayer.Digest))
	if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != s.newLayer.Digest {
		t.Errorf("layer after the fill: %d, %d bytes", resp.StatusCode, len(body))
	}
}

// recordDeltaOfTheDelta records, as a published delta would be, that s's
// delta blob is rebuilt from a delta whose blob is v2's layer (said to be
// size bytes): a broken or hostile record that makes two fills depend on
// each other.
func recordDeltaOfTheDelta(t *testing.T, m *mirror, s deltaSetup, size int64) {
	t.Helper()
	back := layerdelta.Layer{
		Kind:   layerdelta.KindBlob,
		Target: layerdelta.Blob{Digest: s.l.Delta.Digest, Size: s.l.Delta.Size},
		Delta:  ocispec.Descriptor{MediaType: s.l.Delta.MediaType, Digest: s.newLayer.Digest, Size: size},
		Bases:  []layerdelta.Blob{{Digest: digest.FromBytes(s.old), Size: int64(len(s.old))}},
	}
	desc, err := back.Descriptor()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.db.AddDelta(context.Background(), s.l.Delta.Digest, meta.DeltaRecord{Repo: meta.Repo{Registry: "central.test", Name: "app"}, Descriptor: desc}); err != nil {
		t.Fatal(err)
	}
}

// The delta blob a fill fetches is never itself rebuilt from a delta:
// here a record says the delta blob can be rebuilt from the very layer
// being filled, and following it would have the layer's fill wait for
// itself until its deadline, with no time left to fall back.
func TestDeltaBlobIsNotRebuiltFromADelta(t *testing.T) {
	t.Parallel()
	m := newMirror(t, withDeltas, func(o *proxy.Options) { o.FillTimeout = time.Minute })
	s := publishDelta(t, m, nil)
	pullImage(t, m, "v1", s.old)
	recordDeltaOfTheDelta(t, m, s, s.newLayer.Size)
	done := make(chan struct{})
	go func() { defer close(done); pullImage(t, m, "v2", s.nw) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the pull of v2 waits on itself")
	}
	if got := metricValue(t, m.metrics, "registry_edge_delta_fills_total", "result", "applied"); got != 1 {
		t.Errorf("applied deltas = %v, want 1", got)
	}
}

// A delta that cannot be fetched (the upstream fails its blob) falls back
// to the full layer even with a circuit breaker: the attempt's failures do
// not count against it, and the breaker stays closed.
func TestFailingDeltaDoesNotOpenTheBreaker(t *testing.T) {
	t.Parallel()
	om := newOfflineMirror(t, offlineSetup{deltas: true, retryMax: 2,
		breaker: upstream.BreakerOptions{Failures: 2, MinProbe: time.Minute, MaxProbe: time.Minute}})
	m := om.mirror
	s := publishDelta(t, m, nil)
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, s.l.Delta.Digest.String(), fakeupstream.Status(http.StatusServiceUnavailable, "", 0)))
	pullImage(t, m, "v1", s.old)
	pullImage(t, m, "v2", s.nw)
	if got := metricValue(t, m.metrics, "registry_edge_delta_fills_total", "result", "failed"); got != 1 {
		t.Errorf("failed delta attempts = %v, want 1", got)
	}
	if h := om.client.Health(); h.State != upstream.BreakerClosed {
		t.Errorf("breaker %s, want closed", h.State)
	}
}

// A published delta is taken at its descriptor's word, and held to it: one
// that claims to be no smaller than its layer is not fetched, and one whose
// blob turns out larger than its descriptor says fails before it is
// downloaded. Either way the layer is fetched in full, and no delta blob
// is kept.
func TestPublishedDeltaIsHeldToItsSize(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		size  func(l *layerdelta.Layer) int64
		fetch int // upstream GETs of the delta blob
	}{
		{"not smaller than the layer", func(l *layerdelta.Layer) int64 { return l.Target.Size }, 0},
		{"larger than it says", func(l *layerdelta.Layer) int64 { return 100 }, 1},
	} {
		m := newMirror(t, withDeltas)
		s := publishDelta(t, m, func(l *layerdelta.Layer) { l.Delta.Size = c.size(l) })
		pullImage(t, m, "v1", s.old)
		pullImage(t, m, "v2", s.nw)
		if n := m.fake.Count(http.MethodGet, blobPath("app", s.l.Delta.Digest)); n != c.fetch {
			t.Errorf("%s: delta GETs = %d, want %d", c.name, n, c.fetch)
		}
		if _, err := m.store.Stat(context.Background(), s.l.Delta.Digest); err == nil {
			t.Errorf("%s: the delta blob was stored", c.name)
		}
		if got := metricValue(t, m.metrics, "registry_edge_delta_fills_total", "result", "applied"); got != 0 {
			t.Errorf("%s: applied deltas = %v, want 0", c.name, got)
		}
	}
}

// Of many published delta artifacts (deltas from many earlier releases),
// those from an image the mirror holds are read first: the mirror reads at
// most a few.
func TestDeltaFromAHeldImageIsFoundAmongMany(t *testing.T) {
	t.Parallel()
	m := newMirror(t, withDeltas)
	s := publishDeltaAfter(t, m, nil, func(v2 ocispec.Descriptor, l layerdelta.Layer) {
		for i := range 12 {
			// A delta of the same layer from a release this site never
			// held, against a base it does not have.
			decoy := l
			decoy.Delta.Digest = digest.FromString("delta " + strconv.Itoa(i))
			decoy.Bases = []layerdelta.Blob{{Digest: digest.FromString("old release " + strconv.Itoa(i)), Size: 1000}}
			body, desc, err := layerdelta.Manifest(v2, digest.FromString("old manifest "+strconv.Itoa(i)), []layerdelta.Layer{decoy})
			if err != nil {
				t.Fatal(err)
			}
			m.fake.AddManifest("app", "", ocispec.MediaTypeImageManifest, body)
			m.fake.AddReferrer("app", v2.Digest, desc)
		}
	})
	pullImage(t, m, "v1", s.old)
	pullImage(t, m, "v2", s.nw)
	if got := metricValue(t, m.metrics, "registry_edge_delta_fills_total", "result", "applied"); got != 1 {
		t.Errorf("applied deltas = %v, want 1", got)
	}
}

// A site whose devices pin images by digest (no tag is ever pulled) uses
// deltas too.
func TestDeltaForImagesPulledByDigest(t *testing.T) {
	t.Parallel()
	m := newMirror(t, withDeltas)
	s := publishDelta(t, m, nil)
	pullImage(t, m, s.v1.Digest.String(), s.old)
	pullImage(t, m, s.v2.Digest.String(), s.nw)
	if got := metricValue(t, m.metrics, "registry_edge_delta_fills_total", "result", "applied"); got != 1 {
		t.Errorf("applied deltas = %v, want 1", got)
	}
}

// Deltas published after the site fetched the new image's manifest (a
// device checked the tag before the release pipeline pushed them) are
// found when the layers are pulled later: a fill looks for them again,
// asking the upstream rather than taking the cached referrers list.
func TestDeltaPublishedAfterTheManifestIsFound(t *testing.T) {
	t.Parallel()
	m := newMirror(t, withDeltas)
	s := publishDelta(t, m, nil)
	none := func(w http.ResponseWriter, _ *http.Request, _ int) bool {
		w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
		w.Write([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`))
		return true
	}
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, "/referrers/"+s.v2.Digest.String(), none))
	pullImage(t, m, "v1", s.old)
	pullImage(t, m, "v2") // the manifest only: no delta published yet
	m.fake.ClearFaults()  // now it is
	m.clock.Advance(2 * time.Minute)
	pullImage(t, m, "v2", s.nw)
	if got := metricValue(t, m.metrics, "registry_edge_delta_fills_total", "result", "applied"); got != 1 {
		t.Errorf("applied deltas = %v, want 1", got)
	}
}

// A region that precomputes does not encode the layers of evidence (a
// cosign signature's payload): no lower tier asks for a delta of those.
func TestPrecomputeSkipsEvidence(t *testing.T) {
	t.Parallel()
	region := newMirror(t, withPrecompute)
	v1 := layergen.New(60, 60, 16<<10)
	old := layergen.Gzip(v1.Tar(), -1)
	img, _ := region.fake.Image("app", "v1", old)
	pullImage(t, region, "v1", old)
	region.get(http.MethodHead, blobPath("app", digest.FromBytes(old)), "A-IM", "vnd.registry-edge.delta.v1",
		"If-None-Match", `"`+digest.FromString("x").String()+`"`) // a lower tier asked: precompute is on
	payload := []byte(`{"critical":{"image":{"docker-manifest-digest":"` + img.Digest.String() + `"}}}`)
	layer := region.fake.AddBlob(payload)
	region.fake.LinkBlob("app", layer.Digest)
	layer.MediaType = sigpolicy.SimpleSigningMediaType
	cfg := region.fake.AddBlob([]byte(`{"architecture":"","os":""}`))
	region.fake.LinkBlob("app", cfg.Digest)
	cfg.MediaType = ocispec.MediaTypeImageConfig // as cosign writes it
	man := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{layer}}
	man.SchemaVersion = 2
	b, err := json.Marshal(man)
	if err != nil {
		t.Fatal(err)
	}
	tag := "sha256-" + img.Digest.Encoded() + ".sig"
	region.fake.AddManifest("app", tag, ocispec.MediaTypeImageManifest, b)
	if resp, body := region.get(http.MethodGet, manifestPath("app", tag), "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK {
		t.Fatalf("signature: %d %s", resp.StatusCode, body)
	}
	if err := region.proxy.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, result := range []string{"found", "none"} {
		if got := metricValue(t, region.metrics, "registry_edge_delta_recipes_total", "result", result); got != 0 {
			t.Errorf("the signature's layer went through delta encoding (recipes %s = %v)", result, got)
		}
	}
}

// A region with deltas.serveTo answers delta negotiations of the clients in
// those networks only: others (a device on the site's LAN) get the blob
// request answered as such, and make the region neither encode a delta nor
// precompute any.
func TestDeltasServedToListedNetworksOnly(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		nets []netip.Prefix
		want float64 // deltas applied by the site
	}{
		{[]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, 0},
		{[]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, 1},
	} {
		region := newMirror(t, withDeltas)
		region.deltasTo = c.nets
		region.restart()
		site, _, nw, _ := tiers(t, region)
		pullImage(t, site, "v2", nw)
		if got := metricValue(t, site.metrics, "registry_edge_delta_fills_total", "result", "applied"); got != c.want {
			t.Errorf("serveTo %v: site applied %v deltas, want %v", c.nets, got, c.want)
		}
		if got := metricValue(t, region.metrics, "registry_edge_delta_recipes_total", "result", "found"); got != c.want {
			t.Errorf("serveTo %v: region computed %v deltas, want %v", c.nets, got, c.want)
		}
		// A refusal shows (a serveTo that leaves out the sites).
		if got := metricValue(t, region.metrics, "registry_edge_delta_negotiations_total", "result", "refused"); got != 1-c.want {
			t.Errorf("serveTo %v: refused negotiations = %v, want %v", c.nets, got, 1-c.want)
		}
	}
}

// Signatures, SBOMs and delta artifacts stored in a repository are not
// images: a repository that holds only those and a new image does not look
// for deltas of it (there is no base).
func TestEvidenceIsNoImageForDeltas(t *testing.T) {
	t.Parallel()
	m := newMirror(t, withDeltas)
	payload := m.fake.AddBlob([]byte(`{"critical":{}}`))
	m.fake.LinkBlob("app", payload.Digest)
	payload.MediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	cfg := m.fake.AddBlob([]byte("{}"))
	m.fake.LinkBlob("app", cfg.Digest)
	cfg.MediaType = ocispec.MediaTypeEmptyJSON
	man := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{payload}}
	man.SchemaVersion = 2
	b, err := json.Marshal(man)
	if err != nil {
		t.Fatal(err)
	}
	art := m.fake.AddManifest("app", "sha256-0000.sig", ocispec.MediaTypeImageManifest, b)
	if resp, _ := m.get(http.MethodGet, manifestPath("app", art.Digest.String()), "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET the signature: %d", resp.StatusCode)
	}
	v1, _ := m.fake.Image("app", "v1", []byte("layer"))
	pullImage(t, m, "v1", []byte("layer"))
	if n := m.fake.Count(http.MethodGet, "/v2/app/referrers/"+v1.Digest.String()); n != 0 {
		t.Errorf("referrers of v1 asked %d times; the repository held no other image", n)
	}
}

// gatedOpen is a store whose Open of blob gate (once set) waits for
// release: a delta computation held up reading its layer.
type gatedOpen struct {
	*blobstore.FS
	mu      sync.Mutex
	gate    digest.Digest
	release chan struct{}
}

func (s *gatedOpen) Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, error) {
	s.mu.Lock()
	wait := d == s.gate
	s.mu.Unlock()
	if wait {
		<-s.release
	}
	return s.FS.Open(ctx, d)
}

// A lower tier that gives up on a delta negotiation frees its request at
// once: the computation goes on detached for the next one.
func TestGivenUpNegotiationEndsItsRequest(t *testing.T) {
	t.Parallel()
	g := &gatedOpen{release: make(chan struct{})}
	m := newMirrorWrapped(t, func(fs *blobstore.FS) proxy.Store { g.FS = fs; return g }, withDeltas)
	m.stop()
	var log syncbuf.Buffer
	m.accessLog = &log
	m.start()
	v1 := layergen.New(58, 60, 16<<10)
	old, nw := layergen.Gzip(v1.Tar(), -1), layergen.Gzip(v1.Update(59).Tar(), -1)
	m.fake.Image("app", "v1", old)
	m.fake.Image("app", "v2", nw)
	pullImage(t, m, "v1", old)
	pullImage(t, m, "v2", nw)
	g.mu.Lock()
	g.gate = digest.FromBytes(nw)
	g.mu.Unlock()
	defer close(g.release)

	req, err := http.NewRequest(http.MethodHead, m.srv.URL+blobPath("app", digest.FromBytes(nw)), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("A-IM", "vnd.registry-edge.delta.v1")
	req.Header.Set("If-None-Match", `"`+digest.FromBytes(old).String()+`"`)
	client := &http.Client{Timeout: 200 * time.Millisecond}
	if resp, err := client.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("negotiation answered %d while its computation is held", resp.StatusCode)
	}
	deadline := time.Now().Add(10 * time.Second) // reached only if the request waits for the computation
	for !strings.Contains(log.String(), "method=HEAD") {
		if time.Now().After(deadline) {
			t.Fatal("the request of a negotiation its client gave up on is still running")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// resumeBarrier lets the fills of the digests in wait open their download
// files only once all of them have come to it: every one of them is
// running before any looks for a delta.
type resumeBarrier struct {
	*blobstore.FS
	mu   sync.Mutex
	wait map[digest.Digest]bool
	all  chan struct{}
}

func (s *resumeBarrier) Resume(ctx context.Context, d digest.Digest) (blobstore.Partial, error) {
	s.mu.Lock()
	hit := s.wait[d]
	if hit {
		delete(s.wait, d)
		if len(s.wait) == 0 {
			close(s.all)
		}
	}
	s.mu.Unlock()
	if hit {
		<-s.all
	}
	return s.FS.Resume(ctx, d)
}

// Two fills whose deltas name each other's blob do not wait for each
// other: a delta attempt does not join a running fill that may itself wait
// on a delta; it falls back to the full layer at once, and both clients
// get their blobs.
func TestFillsWhoseDeltasNameEachOtherDoNotWaitForEachOther(t *testing.T) {
	t.Parallel()
	bs := &resumeBarrier{wait: map[digest.Digest]bool{}, all: make(chan struct{})}
	m := newMirrorWrapped(t, func(fs *blobstore.FS) proxy.Store { bs.FS = fs; return bs }, withDeltas,
		func(o *proxy.Options) { o.FillTimeout = 20 * time.Minute })
	s := publishDelta(t, m, nil)
	pullImage(t, m, "v1", s.old)
	recordDeltaOfTheDelta(t, m, s, 100) // its size understated
	if resp, body := m.get(http.MethodGet, manifestPath("app", "v2"), "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK {
		t.Fatalf("manifest v2: %d %s", resp.StatusCode, body)
	}
	bs.mu.Lock()
	bs.wait[s.newLayer.Digest], bs.wait[s.l.Delta.Digest] = true, true
	bs.mu.Unlock()

	var wg sync.WaitGroup
	for _, d := range []digest.Digest{s.newLayer.Digest, s.l.Delta.Digest} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body, err := m.do(http.MethodGet, blobPath("app", d))
			if err != nil || resp.StatusCode != http.StatusOK || digest.FromBytes(body) != d {
				t.Errorf("GET %s: %v, %v, %d bytes", d, err, resp.StatusCode, len(body))
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute): // the fills would wait 10 minutes for each other
		t.Fatal("the two fills wait for each other")
	}
}

// A delta attempt joins a plain fill of its delta blob (a lower tier or a
// client fetching it): only a fill that is itself trying a delta is not
// joined. The layer is rebuilt, not fetched in full.
func TestDeltaAttemptJoinsAPlainFillOfItsDelta(t *testing.T) {
	t.Parallel()
	m := newMirror(t, withDeltas)
	s := publishDelta(t, m, nil)
	pullImage(t, m, "v1", s.old)
	if resp, body := m.get(http.MethodGet, manifestPath("app", "v2"), "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK {
		t.Fatalf("manifest v2: %d %s", resp.StatusCode, body)
	}
	started, release := make(chan struct{}), make(chan struct{})
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, s.l.Delta.Digest.String(), fakeupstream.Gate(s.delta, started, release)))
	deltaDone := make(chan struct{})
	go func() {
		defer close(deltaDone)
		resp, body, err := m.do(http.MethodGet, blobPath("app", s.l.Delta.Digest))
		if err != nil || resp.StatusCode != http.StatusOK || digest.FromBytes(body) != s.l.Delta.Digest {
			t.Errorf("GET of the delta blob: %v", err)
		}
	}()
	<-started // the delta blob's fill is running
	go func() {
		time.Sleep(500 * time.Millisecond) // for the layer's attempt to join; the outcome does not depend on it
		close(release)
	}()
	resp, body, err := m.do(http.MethodGet, blobPath("app", s.newLayer.Digest))
	if err != nil || resp.StatusCode != http.StatusOK || digest.FromBytes(body) != s.newLayer.Digest {
		t.Fatalf("GET of the layer: %v", err)
	}
	<-deltaDone
	if n := m.fake.Count(http.MethodGet, blobPath("app", s.newLayer.Digest)); n != 0 {
		t.Errorf("the layer was fetched in full %d times while its delta was being fetched", n)
	}
}

// A site pulling the first image of a repository asks its region for no
// delta: the image's own layers, stored a moment before, are other parts of
// it, not an older version (the region computed deltas between them while
// the device waited).
func TestFirstImageOfARepositoryNegotiatesNoDelta(t *testing.T) {
	t.Parallel()
	region := newMirror(t, withDeltas)
	a, b := layergen.Gzip(layergen.New(71, 60, 16<<10).Tar(), -1), layergen.Gzip(layergen.New(72, 60, 16<<10).Tar(), -1)
	if len(a) < 64<<10 || len(b) < 64<<10 {
		t.Fatalf("test assumption: layers large enough to negotiate, got %d and %d bytes", len(a), len(b))
	}
	region.fake.Image("app", "v1", a, b)
	site := newMirrorOver(t, region.srv.URL, nil, withDeltas)
	pullImage(t, site, "v1", a, b)
	for _, result := range []string{"delta", "full", "pending"} {
		if got := metricValue(t, region.metrics, "registry_edge_delta_negotiations_total", "result", result); got != 0 {
			t.Errorf("region answered %v negotiations with %s for a repository the site held nothing of", got, result)
		}
	}
}

// Deltas published after the site fetched the new image's manifest are
// found also when the site had recorded deltas it cannot use (published
// from an older release whose layers it does not hold): a fill whose
// recorded deltas are all unusable looks again, as one with none does.
func TestUsableDeltaPublishedAfterAnUnusableOneIsFound(t *testing.T) {
	t.Parallel()
	m := newMirror(t, withDeltas)
	s := publishDelta(t, m, nil)
	// From an older release the site never held: its base is not here.
	old := s.l
	old.Bases = []layerdelta.Blob{{Digest: digest.FromString("v0 layer"), Size: 12345}}
	v0 := digest.FromString("v0 manifest")
	body, desc, err := layerdelta.Manifest(s.v2, v0, []layerdelta.Layer{old})
	if err != nil {
		t.Fatal(err)
	}
	m.fake.AddManifest("app", "", ocispec.MediaTypeImageManifest, body)
	desc.ArtifactType = layerdelta.ArtifactType
	only := func(w http.ResponseWriter, _ *http.Request, _ int) bool {
		idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{desc}})
		w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
		w.Write(idx)
		return true
	}
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, "/referrers/"+s.v2.Digest.String(), only))
	pullImage(t, m, "v1", s.old)
	pullImage(t, m, "v2") // the manifest only: only the unusable delta is published yet
	m.fake.ClearFaults()  // now the usable one is too
	m.clock.Advance(2 * time.Minute)
	pullImage(t, m, "v2", s.nw)
	if got := metricValue(t, m.metrics, "registry_edge_delta_fills_total", "result", "applied"); got != 1 {
		t.Errorf("applied deltas = %v, want 1", got)
	}
}

// A region computes no delta of a layer of a few KiB: the negotiation, the
// delta's own request and the rebuild cost more than the layer
// (layerdelta.DefaultMinimums). It answers in full, without computing.
func TestRegionComputesNoDeltaOfATinyLayer(t *testing.T) {
	t.Parallel()
	region := newMirror(t, withDeltas)
	gen := layergen.New(80, 6, 4<<10)
	v1, v2 := layergen.Gzip(gen.Tar(), -1), layergen.Gzip(gen.Update(81).Tar(), -1)
	if len(v2) >= int(layerdelta.DefaultMinimums.LayerSize) {
		t.Fatalf("test assumption: a %d-byte layer is under the minimum", len(v2))
	}
	region.fake.Image("app", "v1", v1)
	_, l2 := region.fake.Image("app", "v2", v2)
	pullImage(t, region, "v1", v1)
	pullImage(t, region, "v2", v2)
	resp, _ := region.get(http.MethodHead, blobPath("app", l2[0].Digest), "A-IM", "vnd.registry-edge.delta.v1",
		"If-None-Match", `"`+digest.FromBytes(v1).String()+`"`)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("negotiation of a %d-byte layer: %d (delta %s), want 200 with the layer", len(v2), resp.StatusCode, resp.Header.Get("Registry-Edge-Delta"))
	}
	if got := metricValue(t, region.metrics, "registry_edge_delta_recipes_total"); got != 0 {
		t.Errorf("region computed %v deltas of a tiny layer, want 0", got)
	}
}

// A published delta that saves less than the minimum (here: a layer that
// gained a large incompressible file, its delta a few KiB smaller than the
// layer) is not used: the layer is fetched in full, as deltactl plan says.
func TestSiteSkipsAPublishedDeltaThatSavesTooLittle(t *testing.T) {
	t.Parallel()
	m := newMirror(t, withDeltas)
	var noise []byte
	for i := uint64(0); len(noise) < 192<<10; i++ {
		for _, b := range layergen.New(90+i, 1, 64<<10) {
			noise = append(noise, b...)
		}
	}
	v1 := layergen.New(85, 4, 8<<10)
	v2 := layergen.Tree{"usr/share/noise.bin": noise}
	for p, c := range v1 {
		v2[p] = c
	}
	old, nw := layergen.Gzip(v1.Tar(), -1), layergen.Gzip(v2.Tar(), -1)
	m.fake.Image("app", "v1", old)
	v2desc, _ := m.fake.Image("app", "v2", nw)
	v1desc, _ := m.fake.Image("app", "v1", old)
	content := func(b []byte) layerdelta.Content {
		return layerdelta.Content{Blob: layerdelta.Blob{Digest: digest.FromBytes(b), Size: int64(len(b))}, R: bytes.NewReader(b)}
	}
	res, err := layerdelta.Make(context.Background(), content(nw), []layerdelta.Content{content(old)}, layerdelta.Options{TempDir: t.TempDir()})
	if err != nil || !res.OK() {
		t.Fatalf("Make: %v %s", err, res.Reason)
	}
	defer res.Close()
	if saving := int64(len(nw)) - res.Layer.Delta.Size; saving <= 0 || saving >= layerdelta.DefaultMinimums.Saving {
		t.Fatalf("test assumption: the delta saves %d bytes, under the %d-byte minimum", saving, layerdelta.DefaultMinimums.Saving)
	}
	d, err := io.ReadAll(res.File)
	if err != nil {
		t.Fatal(err)
	}
	m.fake.AddBlob(d)
	m.fake.LinkBlob("app", res.Layer.Delta.Digest)
	body, desc, err := layerdelta.Manifest(v2desc, v1desc.Digest, []layerdelta.Layer{res.Layer})
	if err != nil {
		t.Fatal(err)
	}
	m.fake.AddManifest("app", "", ocispec.MediaTypeImageManifest, body)
	m.fake.AddReferrer("app", v2desc.Digest, desc)

	pullImage(t, m, "v1", old)
	pullImage(t, m, "v2", nw)
	if n := m.fake.Count(http.MethodGet, blobPath("app", res.Layer.Delta.Digest)); n != 0 {
		t.Errorf("the delta saving %d bytes was fetched %d times, want 0", int64(len(nw))-res.Layer.Delta.Size, n)
	}
	if got := metricValue(t, m.metrics, "registry_edge_delta_fills_total", "result", "applied"); got != 0 {
		t.Errorf("applied deltas = %v, want 0", got)
	}
}

// prefixed returns t with every path under dir.
func prefixed(t layergen.Tree, dir string) layergen.Tree {
	out := layergen.Tree{}
	for p, c := range t {
		out[dir+"/"+p] = c
	}
	return out
}

// closestInSize returns, of the layers made of seed's trees of 4 to 80
// files under dir, the one closest in size to size.
func closestInSize(seed uint64, dir string, size int) []byte {
	var best []byte
	for n := 4; n <= 80; n++ {
		b := layergen.Gzip(prefixed(layergen.New(seed, n, 8<<10), dir).Tar(), -1)
		if best == nil || abs(len(b)-size) < abs(len(best)-size) {
			best = b
		}
	}
	return best
}

func abs(n int) int { return max(n, -n) }

// A region offered more layers than it uses chooses those that hold the
// new layer's files (the previous version of the layer), not the two
// closest in size: here the site's previous top layer is much smaller
// than the new one (a file was added), and two other layers of the
// repository are each closer in size.
func TestRegionChoosesTheBasesThatHoldTheLayersFiles(t *testing.T) {
	t.Parallel()
	region := newMirror(t, withDeltas)
	prev := layergen.New(95, 30, 8<<10)
	next := prev.Update(96)
	for p, c := range prefixed(layergen.New(97, 6, 8<<10), "usr/share/added") {
		next[p] = c
	}
	t1, t2 := layergen.Gzip(prev.Tar(), -1), layergen.Gzip(next.Tar(), -1)
	s := closestInSize(98, "opt/base", len(t2))
	u := closestInSize(99, "opt/other", len(t2))
	if d := abs(len(t1) - len(t2)); abs(len(s)-len(t2)) >= d || abs(len(u)-len(t2)) >= d {
		t.Fatalf("test assumption: layers of %d and %d bytes are closer to %d than the previous version's %d", len(s), len(u), len(t2), len(t1))
	}
	region.fake.Image("app", "v1", s, t1)
	region.fake.Image("app", "old", u)
	_, l2 := region.fake.Image("app", "v2", s, t2)
	pullImage(t, region, "v1", s, t1)
	pullImage(t, region, "old", u)
	pullImage(t, region, "v2", s, t2)
	// Offered as a site orders them: its newest image's top layer first.
	var etags []string
	for _, b := range [][]byte{t1, s, u} {
		etags = append(etags, `"`+digest.FromBytes(b).String()+`"`)
	}
	resp, _ := region.get(http.MethodHead, blobPath("app", l2[1].Digest), "A-IM", "vnd.registry-edge.delta.v1", "If-None-Match", strings.Join(etags, ", "))
	if resp.StatusCode != 226 {
		t.Fatalf("negotiation: %d, want 226", resp.StatusCode)
	}
	var desc ocispec.Descriptor
	if err := json.Unmarshal([]byte(resp.Header.Get("Registry-Edge-Delta")), &desc); err != nil {
		t.Fatal(err)
	}
	l, err := layerdelta.ParseDescriptor(desc)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, b := range l.Bases {
		found = found || b.Digest == digest.FromBytes(t1)
	}
	if !found {
		t.Errorf("delta of %d bytes against %v; want one against the previous version %s", l.Delta.Size, l.Bases, digest.FromBytes(t1))
	}
}

// A site offers its newest image's top layers first, so the previous
// version of a lower layer of a many-layer image comes late in its list:
// the region still compares it (the layers closest in size join the first
// ones offered), instead of only the first few offered, and computes the
// delta against it.
func TestRegionComparesALateOfferedPreviousVersion(t *testing.T) {
	t.Parallel()
	region := newMirror(t, withDeltas)
	prev := layergen.New(105, 30, 8<<10)
	t1, t2 := layergen.Gzip(prev.Tar(), -1), layergen.Gzip(prev.Update(106).Tar(), -1)
	var fillers [][]byte
	for i := range maxRankedForTest + 1 {
		fillers = append(fillers, layergen.Gzip(prefixed(layergen.New(uint64(110+i), 2, 1<<10), fmt.Sprintf("etc/f%d", i)).Tar(), -1))
	}
	v1 := append([][]byte{t1}, fillers...) // t1 the lowest layer
	region.fake.Image("app", "v1", v1...)
	_, l2 := region.fake.Image("app", "v2", append([][]byte{t2}, fillers...)...)
	pullImage(t, region, "v1", v1...)
	var etags []string // as a site orders them: top layer first
	for i := len(v1) - 1; i >= 0; i-- {
		etags = append(etags, `"`+digest.FromBytes(v1[i]).String()+`"`)
	}
	resp, _ := region.get(http.MethodHead, blobPath("app", l2[0].Digest), "A-IM", "vnd.registry-edge.delta.v1", "If-None-Match", strings.Join(etags, ", "))
	if resp.StatusCode != 226 {
		t.Fatalf("negotiation with the previous version offered last of %d: %d, want 226", len(etags), resp.StatusCode)
	}
	var desc ocispec.Descriptor
	if err := json.Unmarshal([]byte(resp.Header.Get("Registry-Edge-Delta")), &desc); err != nil {
		t.Fatal(err)
	}
	l, err := layerdelta.ParseDescriptor(desc)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(l.Bases, func(b layerdelta.Blob) bool { return b.Digest == digest.FromBytes(t1) }) {
		t.Errorf("delta against %v; want one against the previous version %s", l.Bases, digest.FromBytes(t1))
	}
}

// maxRankedForTest is proxy's maxRankedBases (how many offered layers the
// region compares): the previous version is offered after that many.
const maxRankedForTest = 8

// A delta published for a repository may name as its base a layer the
// mirror holds for another repository only (here a private one). The
// rebuild would tell the delta's publisher, through success or a full
// fetch, whether bytes of that layer are what he guessed: a delta's bases
// must be readable by the repository the layer is filled for, as the
// layer itself would be (linked, or confirmed by the upstream). The layer
// is fetched in full instead, and the delta not even downloaded.
func TestDeltaBaseOfAnotherRepositoryIsNotUsed(t *testing.T) {
	t.Parallel()
	m := newMirror(t, withDeltas)
	secret := layergen.New(42, 60, 16<<10)
	old := layergen.Gzip(secret.Tar(), -1)
	nw := layergen.Gzip(secret.Update(43).Tar(), -1)
	m.fake.Image("private", "v1", old)
	v0, _ := m.fake.Image("app", "v0", layergen.Gzip(layergen.New(44, 4, 1<<10).Tar(), -1))
	v2, layers := m.fake.Image("app", "v2", nw)
	content := func(b []byte) layerdelta.Content {
		return layerdelta.Content{Blob: layerdelta.Blob{Digest: digest.FromBytes(b), Size: int64(len(b))}, R: bytes.NewReader(b)}
	}
	res, err := layerdelta.Make(context.Background(), content(nw), []layerdelta.Content{content(old)}, layerdelta.Options{TempDir: t.TempDir()})
	if err != nil || !res.OK() {
		t.Fatalf("Make: %v %s", err, res.Reason)
	}
	defer res.Close()
	d, err := io.ReadAll(res.File)
	if err != nil {
		t.Fatal(err)
	}
	m.fake.AddBlob(d)
	m.fake.LinkBlob("app", res.Layer.Delta.Digest)
	body, desc, err := layerdelta.Manifest(v2, v0.Digest, []layerdelta.Layer{res.Layer})
	if err != nil {
		t.Fatal(err)
	}
	m.fake.AddManifest("app", "", ocispec.MediaTypeImageManifest, body)
	m.fake.AddReferrer("app", v2.Digest, desc)

	// A device with access to "private" pulls it; the mirror stores the
	// base, for "private" only (the upstream has no such blob in "app").
	for _, pull := range []struct{ repo, tag string }{{"private", "v1"}, {"app", "v0"}} {
		if resp, _ := m.get(http.MethodGet, manifestPath(pull.repo, pull.tag), "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s:%s: %d", pull.repo, pull.tag, resp.StatusCode)
		}
	}
	if resp, _ := m.get(http.MethodGet, blobPath("private", digest.FromBytes(old))); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET the private layer: %d", resp.StatusCode)
	}
	if resp, _ := m.get(http.MethodGet, manifestPath("app", "v2"), "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET app:v2: %d", resp.StatusCode)
	}
	resp, got := m.get(http.MethodGet, blobPath("app", layers[0].Digest))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, nw) {
		t.Fatalf("GET app:v2's layer: %d, equal %v", resp.StatusCode, bytes.Equal(got, nw))
	}
	m.waitFills()
	if n := m.fake.Count(http.MethodGet, blobPath("app", res.Layer.Delta.Digest)); n != 0 {
		t.Errorf("the delta was fetched %d times; its base is not app's to read", n)
	}
	if n := m.fake.Count(http.MethodGet, blobPath("app", layers[0].Digest)); n != 1 {
		t.Errorf("the layer was fetched in full %d times, want 1", n)
	}
	if got := metricValue(t, m.metrics, "registry_edge_delta_fills_total", "result", "applied"); got != 0 {
		t.Errorf("applied deltas = %v, want 0", got)
	}
}

// An upper tier answers a negotiation with a delta against a layer the
// site holds for another (private) repository, which the site did not
// offer: the site must not read that layer into the layer it fills (the
// rebuild would confirm the tier's guess of its bytes), and fetches the
// layer in full.
func TestNegotiatedDeltaOnAnotherRepositorysLayerIsRefused(t *testing.T) {
	t.Parallel()
	region := newMirror(t, withDeltas)
	secret := layergen.New(45, 60, 16<<10)
	old := layergen.Gzip(secret.Tar(), -1)
	nw := layergen.Gzip(secret.Update(46).Tar(), -1)
	own := layergen.Gzip(layergen.New(47, 4, 1<<10).Tar(), -1)
	region.fake.Image("private", "v1", old)
	region.fake.Image("app", "v1", own)
	_, layers := region.fake.Image("app", "v2", nw)
	content := func(b []byte) layerdelta.Content {
		return layerdelta.Content{Blob: layerdelta.Blob{Digest: digest.FromBytes(b), Size: int64(len(b))}, R: bytes.NewReader(b)}
	}
	res, err := layerdelta.Make(context.Background(), content(nw), []layerdelta.Content{content(old)}, layerdelta.Options{TempDir: t.TempDir()})
	if err != nil || !res.OK() {
		t.Fatalf("Make: %v %s", err, res.Reason)
	}
	defer res.Close()
	d, err := io.ReadAll(res.File)
	if err != nil {
		t.Fatal(err)
	}
	region.fake.AddBlob(d)
	region.fake.LinkBlob("app", res.Layer.Delta.Digest)
	desc, err := res.Layer.Descriptor()
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := json.Marshal(desc)
	if err != nil {
		t.Fatal(err)
	}
	// The hostile tier: the region, except that it answers every
	// negotiation for the new layer with that delta.
	var offered []string
	var mu sync.Mutex
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead && r.URL.Path == blobPath("app", layers[0].Digest) && r.Header.Get("A-Im") != "" {
			mu.Lock()
			offered = append(offered, r.Header.Get("If-None-Match"))
			mu.Unlock()
			w.Header().Set(upstream.HeaderDeltas, "v1")
			w.Header().Set("IM", upstream.DeltaIM)
			w.Header().Set(upstream.HeaderDelta, string(hdr))
			w.WriteHeader(upstream.StatusIMUsed)
			return
		}
		httputil.NewSingleHostReverseProxy(mustParseURL(t, region.srv.URL)).ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	site := newMirrorOver(t, front.URL, nil, withDeltas)
	for _, pull := range []struct {
		repo, tag string
		layer     []byte
	}{{"private", "v1", old}, {"app", "v1", own}} {
		if resp, _ := site.get(http.MethodGet, manifestPath(pull.repo, pull.tag), "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s:%s: %d", pull.repo, pull.tag, resp.StatusCode)
		}
		if resp, _ := site.get(http.MethodGet, blobPath(pull.repo, digest.FromBytes(pull.layer))); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s:%s's layer: %d", pull.repo, pull.tag, resp.StatusCode)
		}
	}
	site.waitFills()
	pullImage(t, site, "v2", nw)
	mu.Lock()
	defer mu.Unlock()
	if len(offered) == 0 {
		t.Fatal("the site negotiated no delta")
	}
	for _, o := range offered {
		if strings.Contains(o, digest.FromBytes(old).String()) {
			t.Errorf("the site offered the private layer: %s", o)
		}
	}
	if got := metricValue(t, site.metrics, "registry_edge_delta_fills_total", "result", "applied"); got != 0 {
		t.Errorf("applied deltas = %v, want 0", got)
	}
	if n := region.fake.Count(http.MethodGet, blobPath("app", res.Layer.Delta.Digest)); n != 0 {
		t.Errorf("the delta was fetched %d times", n)
	}
}

func mustParseURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// A negotiation that says it waits longer than a time.Duration holds
// ("Prefer: wait=N" with N seconds past 292 years) waits as long as the
// region allows, not a negative time: it gets the delta, not a 202 before
// anything was computed.
func TestHugePreferredWaitIsTheLongestWait(t *testing.T) {
	t.Parallel()
	region := newMirror(t, withDeltas)
	// The longest wait, long enough for the computation on a loaded
	// machine (the default, 20 s, is not under -race with every test of
	// the package running): a wait read as negative or zero still answers
	// 202 at once.
	region.maxDeltaWait = 10 * time.Minute
	region.restart()
	v1 := layergen.New(52, 60, 16<<10)
	old, nw := layergen.Gzip(v1.Tar(), -1), layergen.Gzip(v1.Update(53).Tar(), -1)
	region.fake.Image("app", "v1", old)
	_, layers := region.fake.Image("app", "v2", nw)
	pullImage(t, region, "v1", old)
	resp, _ := region.get(http.MethodHead, blobPath("app", layers[0].Digest),
		"A-IM", upstream.DeltaIM,
		"If-None-Match", `"`+digest.FromBytes(old).String()+`"`,
		"Prefer", "respond-async, wait=9223372037")
	if resp.StatusCode != upstream.StatusIMUsed {
		t.Fatalf("HEAD with A-IM and wait=9223372037: %d, want %d", resp.StatusCode, upstream.StatusIMUsed)
	}
}
