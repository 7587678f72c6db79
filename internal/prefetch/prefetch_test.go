package prefetch_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/indexwalk"
	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/prefetch"
	"github.com/registry-edge/registry-edge/internal/proxy"
	"github.com/registry-edge/registry-edge/internal/testutil/fakeupstream"
	"github.com/registry-edge/registry-edge/internal/timewindow"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

type site struct {
	fake   *fakeupstream.Registry
	store  *blobstore.FS
	db     *meta.DB
	proxy  *proxy.Proxy
	router *proxy.Router
}

func newSite(t *testing.T) *site {
	t.Helper()
	fake := fakeupstream.New()
	up := httptest.NewServer(fake)
	t.Cleanup(up.Close)
	root := t.TempDir()
	store, err := blobstore.NewFS(root, blobstore.FSOptions{TempMaxAge: time.Hour, PartialMaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	db, err := meta.Open(filepath.Join(root, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	client, err := upstream.New(upstream.Options{URL: up.URL, RegistryName: "central.test",
		ConnectTimeout: time.Second, ResponseHeaderTimeout: 10 * time.Second, RetryMax: 1, RetryMinWait: time.Millisecond, RetryMaxWait: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	router, err := proxy.NewRouter([]*proxy.Remote{{Name: "central.test", Client: client}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := proxy.New(store, db, router, proxy.Options{TagTTL: time.Minute, FillTimeout: time.Minute})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p.Close(ctx)
	})
	return &site{fake: fake, store: store, db: db, proxy: p, router: router}
}

// platformImage stores an image whose single layer is layer, for platform.
func (s *site) platformImage(t *testing.T, repo string, layer []byte) ocispec.Descriptor {
	t.Helper()
	desc, _ := s.fake.Image(repo, "", layer)
	return desc
}

func (s *site) index(t *testing.T, repo, tag string, children map[string]ocispec.Descriptor) ocispec.Descriptor {
	t.Helper()
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	idx.SchemaVersion = 2
	for _, plat := range []string{"linux/amd64", "linux/arm64"} {
		d := children[plat]
		os, arch, _ := cut(plat)
		d.Platform = &ocispec.Platform{OS: os, Architecture: arch}
		idx.Manifests = append(idx.Manifests, d)
	}
	body, _ := json.Marshal(idx)
	return s.fake.AddManifest(repo, tag, ocispec.MediaTypeImageIndex, body)
}

func cut(s string) (string, string, bool) {
	for i := range s {
		if s[i] == '/' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func (s *site) stored(d digest.Digest) bool {
	_, err := s.store.Stat(context.Background(), d)
	return err == nil
}

func run(t *testing.T, s *site, opts prefetch.Options) (*prefetch.Prefetcher, context.CancelFunc) {
	t.Helper()
	pf, err := prefetch.New(s.proxy, s.router, s.db, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { pf.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return pf, cancel
}

func waitState(t *testing.T, pf *prefetch.Prefetcher, ref string, states ...string) prefetch.Status {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, st := range pf.Status() {
			if st.Ref == ref && slices.Contains(states, st.State) {
				return st
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s did not reach %v: %+v", ref, states, pf.Status())
	return prefetch.Status{}
}

// waitRefresh waits for the first image's run after before to end
// (complete or failed) and returns its status.
func waitRefresh(t *testing.T, pf *prefetch.Prefetcher, before prefetch.Status) prefetch.Status {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := pf.Status()[0]
		if st.Updated.After(before.Updated) && (st.State == prefetch.StateComplete || st.State == prefetch.StateFailed) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("the refresh did not end: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A configured index is fetched for the chosen platform only, with its
// cosign signature (tag schema) and its OCI referrers, and pinned.
func TestPrefetchPlatformsSignaturesReferrers(t *testing.T) {
	s := newSite(t)
	amdLayer, armLayer := fakeupstream.Random(t, 300_000), fakeupstream.Random(t, 200_000)
	amd := s.platformImage(t, "org/app", amdLayer)
	arm := s.platformImage(t, "org/app", armLayer)
	idx := s.index(t, "org/app", "1.0", map[string]ocispec.Descriptor{"linux/amd64": amd, "linux/arm64": arm})
	// A cosign signature in the tag schema, for the index.
	sigLayer := fakeupstream.Random(t, 500)
	sig, _ := s.fake.Image("org/app", "sha256-"+idx.Digest.Encoded()+".sig", sigLayer)
	// An SBOM attached with the referrers API, to the arm64 image.
	sbomLayer := fakeupstream.Random(t, 700)
	sbom, _ := s.fake.Image("org/app", "", sbomLayer)
	sbom.ArtifactType = "application/spdx+json"
	s.fake.AddReferrer("org/app", arm.Digest, sbom)

	pf, _ := run(t, s, prefetch.Options{Images: []prefetch.Image{{Ref: "org/app:1.0", Platforms: []string{"linux/arm64"}}}})
	st := waitState(t, pf, "org/app:1.0", prefetch.StateComplete, prefetch.StateFailed)
	if st.State != prefetch.StateComplete {
		t.Fatalf("prefetch: %+v", st)
	}
	if st.Digest != idx.Digest.String() || st.BlobsDone != st.Blobs || st.BytesDone != st.Bytes || st.Referrers != 2 {
		t.Errorf("status = %+v", st)
	}
	for name, d := range map[string]digest.Digest{"arm64 layer": digest.FromBytes(armLayer), "signature layer": digest.FromBytes(sigLayer), "sbom layer": digest.FromBytes(sbomLayer)} {
		if !s.stored(d) {
			t.Errorf("%s not stored", name)
		}
	}
	if p := pf.Progress(); p.Images[prefetch.StateComplete] != 1 || p.Bytes == 0 || p.BytesDone != p.Bytes {
		t.Errorf("Progress() = %+v", p)
	}
	if s.stored(digest.FromBytes(amdLayer)) {
		t.Errorf("amd64 layer stored, but only linux/arm64 was asked for")
	}
	for name, d := range map[string]digest.Digest{"index": idx.Digest, "arm64 layer": digest.FromBytes(armLayer), "signature": sig.Digest, "sbom": sbom.Digest} {
		owners, err := s.db.PinnedBy(context.Background(), d)
		if err != nil || !slices.Equal(owners, []string{"prefetch:org/app:1.0"}) {
			t.Errorf("%s pinned by %v, %v; want the prefetch entry", name, owners, err)
		}
	}
	if owners, _ := s.db.PinnedBy(context.Background(), amd.Digest); len(owners) != 0 {
		t.Errorf("amd64 manifest pinned by %v", owners)
	}
}

// An image that leaves the configured list is unpinned at the next start.
func TestPrefetchUnpinsUnlistedImages(t *testing.T) {
	s := newSite(t)
	layer := fakeupstream.Random(t, 1000)
	desc, _ := s.fake.Image("org/old", "1.0", layer)
	pf, cancel := run(t, s, prefetch.Options{Images: []prefetch.Image{{Ref: "org/old:1.0"}}})
	waitState(t, pf, "org/old:1.0", prefetch.StateComplete)
	cancel()
	if owners, _ := s.db.PinnedBy(context.Background(), desc.Digest); len(owners) != 1 {
		t.Fatalf("pins while listed: %v", owners)
	}

	pf2, err := prefetch.New(s.proxy, s.router, s.db, prefetch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { pf2.Run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		owners, _ := s.db.PinnedBy(context.Background(), desc.Digest)
		if len(owners) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still pinned by %v after the image left the list", owners)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	<-done
	if !s.stored(digest.FromBytes(layer)) {
		t.Errorf("unpinning removed content; eviction decides that")
	}
}

// Outside its time window the background run waits; an on-demand run with
// now=true goes ahead meanwhile.
func TestPrefetchWindows(t *testing.T) {
	s := newSite(t)
	s.fake.Image("org/a", "1", fakeupstream.Random(t, 1000))
	s.fake.Image("org/b", "1", fakeupstream.Random(t, 1000))
	// A window that closed a minute ago and opens again in 23h58m.
	now := time.Now()
	tod := time.Duration(now.Hour())*time.Hour + time.Duration(now.Minute())*time.Minute
	w := timewindow.Window{Start: (tod + 24*time.Hour - 3*time.Minute) % (24 * time.Hour), End: (tod + 24*time.Hour - time.Minute) % (24 * time.Hour)}
	pf, _ := run(t, s, prefetch.Options{Images: []prefetch.Image{{Ref: "org/a:1"}}, Windows: []timewindow.Window{w}})
	waitState(t, pf, "org/a:1", prefetch.StateWaiting)

	if err := pf.Trigger([]prefetch.Image{{Ref: "org/b:1"}}, true); err != nil {
		t.Fatal(err)
	}
	waitState(t, pf, "org/b:1", prefetch.StateComplete)
	for _, st := range pf.Status() {
		if st.Ref == "org/a:1" && st.State != prefetch.StateWaiting {
			t.Errorf("org/a ran outside its window: %+v", st)
		}
	}
	if n := s.fake.Count(http.MethodGet, "/v2/org/a/manifests/1"); n != 0 {
		t.Errorf("upstream asked for org/a %d times outside the window", n)
	}

	// An on-demand request that waits for the window does not hold up a
	// later one with now=true.
	s.fake.Image("org/c", "1", fakeupstream.Random(t, 1000))
	s.fake.Image("org/d", "1", fakeupstream.Random(t, 1000))
	if err := pf.Trigger([]prefetch.Image{{Ref: "org/c:1"}}, false); err != nil {
		t.Fatal(err)
	}
	waitState(t, pf, "org/c:1", prefetch.StateWaiting)
	if err := pf.Trigger([]prefetch.Image{{Ref: "org/d:1"}}, true); err != nil {
		t.Fatal(err)
	}
	waitState(t, pf, "org/d:1", prefetch.StateComplete)
}

// Requests keep coming while the runner is busy or waits for its window
// (an admin adding images one command at a time): none is refused, each
// image is queued once, and every one is fetched.
func TestManyRequestsWhileTheRunnerIsBusy(t *testing.T) {
	s := newSite(t)
	// Outside the window: every request is listed as waiting.
	now := time.Now()
	tod := time.Duration(now.Hour())*time.Hour + time.Duration(now.Minute())*time.Minute
	w := timewindow.Window{Start: (tod + 24*time.Hour - 3*time.Minute) % (24 * time.Hour), End: (tod + 24*time.Hour - time.Minute) % (24 * time.Hour)}
	pf, _ := run(t, s, prefetch.Options{Windows: []timewindow.Window{w}})
	for i := range 40 {
		ref := fmt.Sprintf("org/later%d:1", i)
		if err := pf.Trigger([]prefetch.Image{{Ref: ref}}, false); err != nil {
			t.Fatalf("request %d for the next window: %v", i+1, err)
		}
	}
	for i := range 40 {
		waitState(t, pf, fmt.Sprintf("org/later%d:1", i), prefetch.StateWaiting)
	}

	// Now-requests while the first one's manifest is held upstream.
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	s.fake.Fail(func(w http.ResponseWriter, r *http.Request, n int) bool {
		if r.URL.Path == "/v2/org/now0/manifests/1" {
			<-release
		}
		return false
	})
	for i := range 40 {
		s.fake.Image(fmt.Sprintf("org/now%d", i), "1", fakeupstream.Random(t, 100))
		if err := pf.Trigger([]prefetch.Image{{Ref: fmt.Sprintf("org/now%d:1", i)}}, true); err != nil {
			t.Fatalf("request %d while the runner is busy: %v", i+1, err)
		}
		if i == 0 {
			waitState(t, pf, "org/now0:1", prefetch.StateRunning)
		}
	}
	// Asked twice, fetched once.
	if err := pf.Trigger([]prefetch.Image{{Ref: "org/now7:1"}}, true); err != nil {
		t.Fatal(err)
	}
	unblock()
	for i := range 40 {
		waitState(t, pf, fmt.Sprintf("org/now%d:1", i), prefetch.StateComplete)
	}
	if n := s.fake.Count(http.MethodGet, "/v2/org/now7/manifests/1"); n != 1 {
		t.Errorf("an image asked for twice while queued was fetched %d times, want 1", n)
	}
}

func TestParseRef(t *testing.T) {
	d := digest.FromString("x").String()
	for in, want := range map[string][2]string{
		"alpine":                  {"alpine", "latest"},
		"org/app:1.2":             {"org/app", "1.2"},
		"localhost:5000/app":      {"localhost:5000/app", "latest"},
		"localhost:5000/app:v1":   {"localhost:5000/app", "v1"},
		"ghcr.io/org/app@" + d:    {"ghcr.io/org/app", d},
		"ghcr.io/org/app:v1@" + d: {"", ""},
		"UPPER/app:1":             {"", ""},
		"org/app:bad$tag":         {"", ""},
		"org/app@sha256:1234":     {"", ""},
	} {
		name, ref, err := prefetch.ParseRef(in)
		if want[0] == "" {
			if err == nil {
				t.Errorf("ParseRef(%q) = %q, %q; want an error", in, name, ref)
			}
			continue
		}
		if err != nil || name != want[0] || ref != want[1] {
			t.Errorf("ParseRef(%q) = %q, %q, %v; want %q, %q", in, name, ref, err, want[0], want[1])
		}
	}
}

// Images added at run time stay listed (and pinned) across a restart until
// they are removed; configured ones cannot be removed at run time.
func TestPrefetchAddedImagesPersistUntilRemoved(t *testing.T) {
	s := newSite(t)
	added, _ := s.fake.Image("org/added", "1", fakeupstream.Random(t, 1000))
	s.fake.Image("org/conf", "1", fakeupstream.Random(t, 1000))
	opts := prefetch.Options{Images: []prefetch.Image{{Ref: "org/conf:1"}}}
	pf, cancel := run(t, s, opts)
	if err := pf.Trigger([]prefetch.Image{{Ref: "org/added:1"}}, true); err != nil {
		t.Fatal(err)
	}
	waitState(t, pf, "org/added:1", prefetch.StateComplete)
	cancel()

	// A new process: the added image is listed again, and stays pinned.
	pf2, _ := run(t, s, opts)
	waitState(t, pf2, "org/added:1", prefetch.StateComplete)
	if owners, _ := s.db.PinnedBy(context.Background(), added.Digest); len(owners) != 1 {
		t.Fatalf("added image pinned by %v after a restart", owners)
	}
	if err := pf2.Remove(context.Background(), "org/conf:1"); !errors.Is(err, errdef.ErrInvalid) {
		t.Errorf("Remove of a configured image: %v, want ErrInvalid", err)
	}
	if err := pf2.Remove(context.Background(), "org/none:1"); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("Remove of an unlisted image: %v, want ErrNotFound", err)
	}
	if err := pf2.Remove(context.Background(), "org/added:1"); err != nil {
		t.Fatal(err)
	}
	if owners, _ := s.db.PinnedBy(context.Background(), added.Digest); len(owners) != 0 {
		t.Errorf("removed image still pinned by %v", owners)
	}
	for _, st := range pf2.Status() {
		if st.Ref == "org/added:1" {
			t.Errorf("removed image still listed: %+v", st)
		}
	}
	if reqs, _ := s.db.Prefetches(context.Background()); len(reqs) != 0 {
		t.Errorf("stored list after removal: %+v", reqs)
	}
}

// A refresh with the upstream unreachable (a site restarting during an
// outage) leaves a stored image complete: the signatures that could not be
// looked up again do not fail it.
func TestPrefetchRefreshDuringAnOutage(t *testing.T) {
	s := newSite(t)
	layer := fakeupstream.Random(t, 1000)
	s.fake.Image("org/app", "1.0", layer)
	pf, _ := run(t, s, prefetch.Options{Images: []prefetch.Image{{Ref: "org/app:1.0"}}})
	before := waitState(t, pf, "org/app:1.0", prefetch.StateComplete)

	s.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "", 0))
	time.Sleep(10 * time.Millisecond) // so that the refresh's status has a later time
	if err := pf.Trigger([]prefetch.Image{{Ref: "org/app:1.0"}}, true); err != nil {
		t.Fatal(err)
	}
	if st := waitRefresh(t, pf, before); st.State != prefetch.StateComplete {
		t.Errorf("refresh during an outage: %s (%s), want complete", st.State, st.Error)
	}
}

// A run that left an image failed (the uplink was down) is tried again
// soon, not at the next interval: a pre-stage before a rollout must not
// wait an hour for the link's return.
func TestFailedPrefetchIsRetriedSoon(t *testing.T) {
	s := newSite(t)
	s.fake.Image("org/app", "1.0", fakeupstream.Random(t, 1000))
	s.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "", 0))
	pf, _ := run(t, s, prefetch.Options{Images: []prefetch.Image{{Ref: "org/app:1.0"}},
		Interval: time.Hour, RetryAfter: 20 * time.Millisecond})
	waitState(t, pf, "org/app:1.0", prefetch.StateFailed)
	s.fake.ClearFaults() // the link is back
	waitState(t, pf, "org/app:1.0", prefetch.StateComplete)
}

// pinGate holds the first SetPins that pins something until release,
// after closing reached.
type pinGate struct {
	*meta.DB
	mu               sync.Mutex
	armed            bool
	reached, release chan struct{}
}

func (g *pinGate) SetPins(ctx context.Context, owner string, ds []digest.Digest) error {
	g.mu.Lock()
	hold := g.armed && len(ds) > 0
	g.armed = g.armed && !hold
	g.mu.Unlock()
	if hold {
		close(g.reached)
		<-g.release
	}
	return g.DB.SetPins(ctx, owner, ds)
}

// An image removed while its run is pinning it ends unpinned: the run's
// "still listed? then pin" and the removal's unpin do not interleave.
func TestRemoveDuringTheRunsPinLeavesNoPins(t *testing.T) {
	s := newSite(t)
	img, _ := s.fake.Image("org/added", "1", fakeupstream.Random(t, 1000))
	g := &pinGate{DB: s.db, armed: true, reached: make(chan struct{}), release: make(chan struct{})}
	pf, err := prefetch.New(s.proxy, s.router, g, prefetch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { pf.Run(ctx); close(done) }()
	defer cancel()
	if err := pf.Trigger([]prefetch.Image{{Ref: "org/added:1"}}, true); err != nil {
		t.Fatal(err)
	}
	<-g.reached // the run is pinning
	removed := make(chan error, 1)
	go func() { removed <- pf.Remove(context.Background(), "org/added:1") }()
	select {
	case err := <-removed: // it did not wait for the run's pin
		removed <- err
	case <-time.After(200 * time.Millisecond):
	}
	close(g.release)
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done // the run has ended, its pin written if it was to be
	if owners, err := s.db.PinnedBy(context.Background(), img.Digest); err != nil || len(owners) != 0 {
		t.Errorf("removed image pinned by %v (%v), want none", owners, err)
	}
}

// An image asked for now (registry-edge prefetch --now) while the uplink
// is down is tried again soon as well, not at the next interval, also
// when the configuration lists no image.
func TestFailedRequestIsRetriedSoon(t *testing.T) {
	s := newSite(t)
	s.fake.Image("org/app", "1.0", fakeupstream.Random(t, 1000))
	s.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "", 0))
	pf, _ := run(t, s, prefetch.Options{Interval: time.Hour, RetryAfter: 20 * time.Millisecond})
	if err := pf.Trigger([]prefetch.Image{{Ref: "org/app:1.0"}}, true); err != nil {
		t.Fatal(err)
	}
	waitState(t, pf, "org/app:1.0", prefetch.StateFailed)
	s.fake.ClearFaults() // the link is back
	waitState(t, pf, "org/app:1.0", prefetch.StateComplete)
}

// The list's tags are named as the metadata names them, for eviction to
// keep the image each names now; images by digest are pinned by digest.
func TestPinnedTags(t *testing.T) {
	s := newSite(t)
	pf, _ := run(t, s, prefetch.Options{Images: []prefetch.Image{{Ref: "org/app:1.0"}, {Ref: "org/app@sha256:" + strings.Repeat("a", 64)}},
		Interval: time.Hour})
	if err := pf.Trigger([]prefetch.Image{{Ref: "org/tool:2"}}, false); err != nil {
		t.Fatal(err)
	}
	got := pf.PinnedTags()
	slices.Sort(got)
	if want := []string{"central.test/org/app:1.0", "central.test/org/tool:2"}; !slices.Equal(got, want) {
		t.Errorf("PinnedTags = %v, want %v", got, want)
	}
}

// A refresh during an outage keeps the referrers of the image pinned: those
// it could not look up again (the referrers list the mirror stored was
// evicted, say) are still what devices verify the image with offline, so
// eviction must not take them.
func TestRefreshDuringAnOutageKeepsReferrersPinned(t *testing.T) {
	s := newSite(t)
	desc, _ := s.fake.Image("org/app", "1.0", fakeupstream.Random(t, 1000))
	sbomLayer := fakeupstream.Random(t, 700)
	sbom, _ := s.fake.Image("org/app", "", sbomLayer)
	sbom.ArtifactType = "application/spdx+json"
	s.fake.AddReferrer("org/app", desc.Digest, sbom)
	// A clock that moves on at every reading: the refresh's status has a
	// later time than the first run's.
	var tick atomic.Int64
	now := func() time.Time { return time.Unix(tick.Add(1), 0) }
	pf, _ := run(t, s, prefetch.Options{Images: []prefetch.Image{{Ref: "org/app:1.0"}}, Now: now})
	before := waitState(t, pf, "org/app:1.0", prefetch.StateComplete)

	// The stored referrers list is gone (evicted: prefetch does not pin
	// it) and the upstream is down: the refresh cannot list the SBOM.
	r, err := s.db.Referrers(context.Background(), meta.Repo{Registry: "central.test", Name: "org/app"}, desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.store.Delete(context.Background(), r.Digest); err != nil {
		t.Fatal(err)
	}
	s.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "", 0))
	if err := pf.Trigger([]prefetch.Image{{Ref: "org/app:1.0"}}, true); err != nil {
		t.Fatal(err)
	}
	if st := waitRefresh(t, pf, before); st.State != prefetch.StateComplete {
		t.Fatalf("refresh during an outage: %s (%s), want complete", st.State, st.Error)
	}
	for name, d := range map[string]digest.Digest{"image": desc.Digest, "sbom": sbom.Digest, "sbom layer": digest.FromBytes(sbomLayer)} {
		owners, err := s.db.PinnedBy(context.Background(), d)
		if err != nil || !slices.Equal(owners, []string{"prefetch:org/app:1.0"}) {
			t.Errorf("after a refresh during an outage, %s pinned by %v, %v; want the prefetch entry", name, owners, err)
		}
	}
}

// A refresh during an outage counts the signature the mirror holds: the
// cosign tag it stored is served from the cache, although the tags that
// were never there (.att, .sbom) cannot be looked up. The admin reading
// "0 referrers" would think the signature gone.
func TestRefreshDuringAnOutageCountsStoredSignatures(t *testing.T) {
	s := newSite(t)
	desc, _ := s.fake.Image("org/app", "1.0", fakeupstream.Random(t, 1000))
	s.fake.Image("org/app", "sha256-"+desc.Digest.Encoded()+".sig", fakeupstream.Random(t, 500))
	var tick atomic.Int64
	now := func() time.Time { return time.Unix(tick.Add(1), 0) }
	pf, _ := run(t, s, prefetch.Options{Images: []prefetch.Image{{Ref: "org/app:1.0"}}, Now: now})
	before := waitState(t, pf, "org/app:1.0", prefetch.StateComplete)
	if before.Referrers != 1 {
		t.Fatalf("first run: %d referrers, want 1", before.Referrers)
	}

	s.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "", 0))
	if err := pf.Trigger([]prefetch.Image{{Ref: "org/app:1.0"}}, true); err != nil {
		t.Fatal(err)
	}
	if st := waitRefresh(t, pf, before); st.State != prefetch.StateComplete || st.Referrers != 1 {
		t.Errorf("refresh during an outage: %s (%s), %d referrers; want complete with 1", st.State, st.Error, st.Referrers)
	}
}

// An image removed while its request waits in the queue is not fetched
// when the runner comes to it: the admin took it off (a wrong image, too
// large for tonight's uplink) and its bytes must not go over the link.
func TestImageRemovedWhileQueuedIsNotFetched(t *testing.T) {
	s := newSite(t)
	for _, repo := range []string{"org/first", "org/removed", "org/last"} {
		s.fake.Image(repo, "1", fakeupstream.Random(t, 100))
	}
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	s.fake.Fail(func(w http.ResponseWriter, r *http.Request, n int) bool {
		if r.URL.Path == "/v2/org/first/manifests/1" {
			<-release
		}
		return false
	})
	pf, _ := run(t, s, prefetch.Options{})
	if err := pf.Trigger([]prefetch.Image{{Ref: "org/first:1"}}, true); err != nil {
		t.Fatal(err)
	}
	waitState(t, pf, "org/first:1", prefetch.StateRunning)
	// Queued behind the held one, in this order.
	for _, ref := range []string{"org/removed:1", "org/last:1"} {
		if err := pf.Trigger([]prefetch.Image{{Ref: ref}}, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := pf.Remove(context.Background(), "org/removed:1"); err != nil {
		t.Fatal(err)
	}
	unblock()
	waitState(t, pf, "org/last:1", prefetch.StateComplete)
	if n := s.fake.Count(http.MethodGet, "/v2/org/removed/manifests/1"); n != 0 {
		t.Errorf("an image removed while queued was fetched (%d manifest GETs)", n)
	}
	for _, st := range pf.Status() {
		if st.Ref == "org/removed:1" {
			t.Errorf("a removed image is listed: %+v", st)
		}
	}
}

// "org/app" and "org/app:latest" are one image: asked for both ways, it is
// listed, fetched and pinned once, and either form removes it.
func TestReferenceWithoutTagIsTheLatestEntry(t *testing.T) {
	s := newSite(t)
	desc, _ := s.fake.Image("org/app", "latest", fakeupstream.Random(t, 1000))
	pf, _ := run(t, s, prefetch.Options{})
	if err := pf.Trigger([]prefetch.Image{{Ref: "org/app"}}, true); err != nil {
		t.Fatal(err)
	}
	waitState(t, pf, "org/app:latest", prefetch.StateComplete)
	if err := pf.Trigger([]prefetch.Image{{Ref: "org/app:latest"}}, true); err != nil {
		t.Fatal(err)
	}
	waitState(t, pf, "org/app:latest", prefetch.StateComplete)
	var refs []string
	for _, st := range pf.Status() {
		refs = append(refs, st.Ref)
	}
	if !slices.Equal(refs, []string{"org/app:latest"}) {
		t.Errorf("listed %v, want [org/app:latest]", refs)
	}
	if owners, err := s.db.PinnedBy(context.Background(), desc.Digest); err != nil || !slices.Equal(owners, []string{"prefetch:org/app:latest"}) {
		t.Errorf("pinned by %v, %v; want one entry", owners, err)
	}
	if err := pf.Remove(context.Background(), "org/app"); err != nil {
		t.Fatal(err)
	}
	if st := pf.Status(); len(st) != 0 {
		t.Errorf("listed after removal: %+v", st)
	}
	if owners, _ := s.db.PinnedBy(context.Background(), desc.Digest); len(owners) != 0 {
		t.Errorf("pinned by %v after removal", owners)
	}
	if reqs, _ := s.db.Prefetches(context.Background()); len(reqs) != 0 {
		t.Errorf("stored list after removal: %+v", reqs)
	}
	if _, err := prefetch.New(s.proxy, s.router, s.db, prefetch.Options{Images: []prefetch.Image{{Ref: "org/app"}, {Ref: "org/app:latest"}}}); !errors.Is(err, errdef.ErrInvalid) {
		t.Errorf("a list naming one image twice: %v, want ErrInvalid", err)
	}
}

// An entry an older version stored as the admin wrote it ("org/app") is
// listed in canonical form after an upgrade, and its pins move with it:
// restarted while the uplink is down, the site keeps the image pinned.
func TestEntryStoredByAnOlderVersionKeepsItsPins(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	desc, _ := s.fake.Image("org/app", "latest", fakeupstream.Random(t, 1000))
	confDesc, _ := s.fake.Image("org/conf", "latest", fakeupstream.Random(t, 1000))
	if err := s.db.PutPrefetch(ctx, meta.PrefetchRequest{Ref: "org/app"}); err != nil {
		t.Fatal(err)
	}
	if err := s.db.SetPins(ctx, "prefetch:org/app", []digest.Digest{desc.Digest}); err != nil {
		t.Fatal(err)
	}
	if err := s.db.SetPins(ctx, "prefetch:org/conf", []digest.Digest{confDesc.Digest}); err != nil {
		t.Fatal(err)
	}
	s.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "", 0))
	pf, _ := run(t, s, prefetch.Options{Images: []prefetch.Image{{Ref: "org/conf"}}})
	waitState(t, pf, "org/app:latest", prefetch.StateFailed)
	waitState(t, pf, "org/conf:latest", prefetch.StateFailed)
	for d, want := range map[digest.Digest]string{desc.Digest: "prefetch:org/app:latest", confDesc.Digest: "prefetch:org/conf:latest"} {
		if owners, err := s.db.PinnedBy(ctx, d); err != nil || !slices.Equal(owners, []string{want}) {
			t.Errorf("%s pinned by %v, %v; want [%s]", d, owners, err, want)
		}
	}
	reqs, err := s.db.Prefetches(ctx)
	if err != nil || len(reqs) != 1 || reqs[0].Ref != "org/app:latest" {
		t.Errorf("stored list %+v, %v; want org/app:latest alone", reqs, err)
	}
}

// A request for an image whose fetch is running gets a run of its own:
// the running one began before the request (the tag may have moved since),
// so its end shows the image pending, not complete, until the requested
// run has fetched it.
func TestRequestDuringARunWaitsForItsOwnRun(t *testing.T) {
	s := newSite(t)
	s.fake.Image("org/app", "1", fakeupstream.Random(t, 100))
	s.fake.Image("org/busy", "1", fakeupstream.Random(t, 100))
	gates := map[string]chan struct{}{"/v2/org/app/manifests/1": make(chan struct{}), "/v2/org/busy/manifests/1": make(chan struct{})}
	var once sync.Map
	open := func(path string) {
		if _, done := once.LoadOrStore(path, true); !done {
			close(gates[path])
		}
	}
	t.Cleanup(func() {
		for path := range gates {
			open(path)
		}
	})
	var appGets atomic.Int32
	s.fake.Fail(func(w http.ResponseWriter, r *http.Request, n int) bool {
		if r.URL.Path == "/v2/org/app/manifests/1" && r.Method == http.MethodGet && appGets.Add(1) == 1 {
			<-gates[r.URL.Path] // the first fetch of org/app only
		}
		if r.URL.Path == "/v2/org/busy/manifests/1" {
			<-gates[r.URL.Path]
		}
		return false
	})
	// The background run fetches org/app; the on-demand runner is busy
	// with org/busy, so the run requested below cannot start before the
	// background one ends.
	pf, _ := run(t, s, prefetch.Options{Images: []prefetch.Image{{Ref: "org/app:1"}}})
	waitState(t, pf, "org/app:1", prefetch.StateRunning)
	if err := pf.Trigger([]prefetch.Image{{Ref: "org/busy:1"}}, true); err != nil {
		t.Fatal(err)
	}
	waitState(t, pf, "org/busy:1", prefetch.StateRunning)
	if err := pf.Trigger([]prefetch.Image{{Ref: "org/app:1"}}, true); err != nil {
		t.Fatal(err)
	}
	open("/v2/org/app/manifests/1")
	if st := waitState(t, pf, "org/app:1", prefetch.StatePending, prefetch.StateComplete); st.State != prefetch.StatePending {
		t.Errorf("the run that began before the request ended as %s, want pending (the request's own run follows)", st.State)
	}
	open("/v2/org/busy/manifests/1")
	waitState(t, pf, "org/app:1", prefetch.StateComplete) // the requested run
}

// The platforms of a prefetch pick the children of the index as devices
// name them: linux/arm64/v8 is the linux/arm64 child (and the reverse), a
// nested index (an index whose child is an index) is searched too, and a
// platform the index lacks fails the image, naming what it has, instead of
// reporting complete an image the site does not hold.
func TestPrefetchPlatformShapes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		nested    bool
		variant   string // of the arm64 child
		want      string
		wantError string // "" = complete with the arm64 layer only
	}{
		{name: "v8 asked, none in the index", want: "linux/arm64/v8"},
		{name: "none asked, v8 in the index", variant: "v8", want: "linux/arm64"},
		{name: "v8 asked, v8 in the index", variant: "v8", want: "linux/arm64/v8"},
		{name: "nested index", nested: true, want: "linux/arm64"},
		{name: "platform the index lacks", want: "linux/riscv64", wantError: "has no manifest for linux/riscv64 (it has linux/amd64, linux/arm64): "},
		{name: "variant the index lacks", want: "linux/arm64/v7", wantError: "has no manifest for linux/arm64/v7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSite(t)
			amdLayer, armLayer := fakeupstream.Random(t, 3000), fakeupstream.Random(t, 2000)
			amd := s.platformImage(t, "org/app", amdLayer)
			arm := s.platformImage(t, "org/app", armLayer)
			amd.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
			arm.Platform = &ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: tt.variant}
			// Each platform twice, as in an index of many builds.
			idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{amd, arm, amd, arm}}
			idx.SchemaVersion = 2
			body, _ := json.Marshal(idx)
			tag := "1.0"
			if tt.nested {
				tag = ""
			}
			inner := s.fake.AddManifest("org/app", tag, ocispec.MediaTypeImageIndex, body)
			if tt.nested {
				outer := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{inner}}
				outer.SchemaVersion = 2
				body, _ := json.Marshal(outer)
				s.fake.AddManifest("org/app", "1.0", ocispec.MediaTypeImageIndex, body)
			}

			pf, _ := run(t, s, prefetch.Options{Images: []prefetch.Image{{Ref: "org/app:1.0", Platforms: []string{tt.want}}}})
			st := waitState(t, pf, "org/app:1.0", prefetch.StateComplete, prefetch.StateFailed)
			if tt.wantError != "" {
				if st.State != prefetch.StateFailed || !strings.Contains(st.Error, tt.wantError) {
					t.Fatalf("prefetch of %s = %s %q, want failed with %q", tt.want, st.State, st.Error, tt.wantError)
				}
				return
			}
			if st.State != prefetch.StateComplete {
				t.Fatalf("prefetch of %s: %+v", tt.want, st)
			}
			if !s.stored(digest.FromBytes(armLayer)) {
				t.Errorf("prefetch of %s: the arm64 layer is not stored", tt.want)
			}
			if s.stored(digest.FromBytes(amdLayer)) {
				t.Errorf("prefetch of %s: the amd64 layer is stored", tt.want)
			}
		})
	}
}

// Nested indexes are walked within indexwalk's bounds: an image nested
// deeper than indexwalk.MaxDepth fails, named, instead of being followed
// down as far as an upstream's index goes.
func TestPrefetchNestedIndexDepth(t *testing.T) {
	t.Parallel()
	for _, depth := range []int{indexwalk.MaxDepth, indexwalk.MaxDepth + 1} {
		t.Run(fmt.Sprint(depth), func(t *testing.T) {
			t.Parallel()
			s := newSite(t)
			layer := fakeupstream.Random(t, 1000)
			d := s.platformImage(t, "org/app", layer)
			d.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
			for i := range depth + 1 { // the top index and depth nested in it
				idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{d}}
				idx.SchemaVersion = 2
				body, _ := json.Marshal(idx)
				tag := ""
				if i == depth {
					tag = "1.0"
				}
				d = s.fake.AddManifest("org/app", tag, ocispec.MediaTypeImageIndex, body)
			}
			pf, _ := run(t, s, prefetch.Options{Images: []prefetch.Image{{Ref: "org/app:1.0", Platforms: []string{"linux/amd64"}}}})
			st := waitState(t, pf, "org/app:1.0", prefetch.StateComplete, prefetch.StateFailed)
			if depth <= indexwalk.MaxDepth {
				if st.State != prefetch.StateComplete || !s.stored(digest.FromBytes(layer)) {
					t.Errorf("prefetch of an image %d indexes deep: %+v, want complete with its layer", depth, st)
				}
				return
			}
			if st.State != prefetch.StateFailed || !strings.Contains(st.Error, "nested more than") {
				t.Errorf("prefetch of an image %d indexes deep: %s %q, want failed, nested too deep", depth, st.State, st.Error)
			}
		})
	}
}

// A Windows image's foreign (non-distributable) base layer is not in the
// registry (devices fetch it from the URLs in the manifest): the prefetch
// stores the rest and completes, instead of failing on the layer forever.
func TestPrefetchSkipsForeignLayers(t *testing.T) {
	t.Parallel()
	s := newSite(t)
	cfg := s.fake.AddBlob([]byte(`{"architecture":"amd64","os":"windows","os.version":"10.0.17763.5820","rootfs":{"type":"layers","diff_ids":[]}}`))
	cfg.MediaType = "application/vnd.docker.container.image.v1+json"
	s.fake.LinkBlob("org/win", cfg.Digest)
	appLayer := fakeupstream.Random(t, 5000)
	app := s.fake.AddBlob(appLayer)
	app.MediaType = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	s.fake.LinkBlob("org/win", app.Digest)
	foreign := ocispec.Descriptor{MediaType: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
		Digest: digest.FromString("servercore base"), Size: 1 << 30, URLs: []string{"https://mcr.example.com/servercore"}}
	m := ocispec.Manifest{MediaType: "application/vnd.docker.distribution.manifest.v2+json", Config: cfg, Layers: []ocispec.Descriptor{foreign, app}}
	m.SchemaVersion = 2
	body, _ := json.Marshal(m)
	s.fake.AddManifest("org/win", "ltsc2019", m.MediaType, body)

	pf, _ := run(t, s, prefetch.Options{Images: []prefetch.Image{{Ref: "org/win:ltsc2019"}}})
	st := waitState(t, pf, "org/win:ltsc2019", prefetch.StateComplete, prefetch.StateFailed)
	if st.State != prefetch.StateComplete || st.Blobs != 2 {
		t.Fatalf("prefetch of a Windows image = %+v, want complete with its config and app layer", st)
	}
	if !s.stored(app.Digest) {
		t.Errorf("the app layer is not stored")
	}
	if n := s.fake.Count(http.MethodGet, "/v2/org/win/blobs/"+foreign.Digest.String()); n != 0 {
		t.Errorf("the foreign layer was asked of the upstream %d times", n)
	}
}

// A BuildKit index lists an attestation manifest (provenance, SBOM;
// platform unknown/unknown) per image: a prefetch of one platform stores
// that platform's attestation with it, as it stores the image's referrers,
// and not the other platforms'.
func TestPrefetchPlatformKeepsItsBuildKitAttestation(t *testing.T) {
	t.Parallel()
	s := newSite(t)
	amdLayer, armLayer := fakeupstream.Random(t, 3000), fakeupstream.Random(t, 2000)
	amdAttLayer, armAttLayer := []byte(`{"_type":"https://in-toto.io/Statement/v0.1","n":1}`), []byte(`{"_type":"https://in-toto.io/Statement/v0.1","n":2}`)
	amd := s.platformImage(t, "org/bk", amdLayer)
	arm := s.platformImage(t, "org/bk", armLayer)
	amd.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	arm.Platform = &ocispec.Platform{OS: "linux", Architecture: "arm64"}
	attestation := func(layer []byte, of digest.Digest) ocispec.Descriptor {
		d := s.platformImage(t, "org/bk", layer)
		d.Platform = &ocispec.Platform{OS: "unknown", Architecture: "unknown"}
		d.Annotations = map[string]string{"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": of.String()}
		return d
	}
	amdAtt, armAtt := attestation(amdAttLayer, amd.Digest), attestation(armAttLayer, arm.Digest)
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{amd, arm, amdAtt, armAtt}}
	idx.SchemaVersion = 2
	body, _ := json.Marshal(idx)
	s.fake.AddManifest("org/bk", "1.0", ocispec.MediaTypeImageIndex, body)

	pf, _ := run(t, s, prefetch.Options{Images: []prefetch.Image{{Ref: "org/bk:1.0", Platforms: []string{"linux/arm64"}}}})
	st := waitState(t, pf, "org/bk:1.0", prefetch.StateComplete, prefetch.StateFailed)
	if st.State != prefetch.StateComplete {
		t.Fatalf("prefetch: %+v", st)
	}
	for name, want := range map[string]bool{
		"arm64 layer": true, "arm64 attestation": true, "amd64 layer": false, "amd64 attestation": false,
	} {
		d := map[string]digest.Digest{"arm64 layer": digest.FromBytes(armLayer), "arm64 attestation": digest.FromBytes(armAttLayer),
			"amd64 layer": digest.FromBytes(amdLayer), "amd64 attestation": digest.FromBytes(amdAttLayer)}[name]
		if got := s.stored(d); got != want {
			t.Errorf("prefetch of linux/arm64: %s stored = %v, want %v", name, got, want)
		}
	}
	if owners, _ := s.db.PinnedBy(context.Background(), armAtt.Digest); len(owners) != 1 {
		t.Errorf("the arm64 attestation manifest is pinned by %v, want the prefetch entry", owners)
	}
}
