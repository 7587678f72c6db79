package httpserve_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/gc"
	"github.com/registry-edge/registry-edge/internal/proxy"
	"github.com/registry-edge/registry-edge/internal/testutil/fakeupstream"
)

// Over its budget, the mirror evicts the image pulled least recently
// (memory caches included: its next pull goes upstream again) and keeps
// serving the others from its store.
func TestEvictionThroughTheMirror(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	type image struct {
		manifest digest.Digest
		config   digest.Digest
		layer    digest.Digest
	}
	var imgs []image
	for _, tag := range []string{"a", "b", "c"} {
		desc, layers := m.fake.Image("app-"+tag, "v1", fakeupstream.Random(t, 300_000))
		resp, body := m.get(http.MethodGet, manifestPath("app-"+tag, "v1"), "Accept", "application/vnd.oci.image.manifest.v1+json")
		if resp.StatusCode != 200 {
			t.Fatalf("pull %s: %d %s", tag, resp.StatusCode, body)
		}
		cfg := configOf(t, body)
		for _, d := range []digest.Digest{cfg, layers[0].Digest} {
			if resp, _ := m.get(http.MethodGet, blobPath("app-"+tag, d)); resp.StatusCode != 200 {
				t.Fatalf("pull %s blob %s: %d", tag, d, resp.StatusCode)
			}
		}
		imgs = append(imgs, image{desc.Digest, cfg, layers[0].Digest})
		m.clock.Advance(time.Hour)
	}
	m.waitFills()

	// Room for two images: the first one pulled goes.
	mt := &gc.Maintainer{Store: m.store, DB: m.db, Cache: m.proxy, Metrics: m.metrics,
		Options: gc.Options{MaxSize: 700_000, LowWatermark: 0.95, Now: m.clock.Now}}
	plan := mt.RunOnce(context.Background())
	if plan == nil || len(plan.Victims) != 1 || plan.Victims[0].Root != imgs[0].manifest {
		t.Fatalf("eviction plan: %+v, want image a only", plan)
	}
	if got := metricValue(t, m.metrics, "registry_edge_evicted_images_total"); got != 1 {
		t.Errorf("evicted images metric = %v", got)
	}

	// b and c are still served without the upstream.
	before := m.fake.Total()
	for i, img := range imgs[1:] {
		repo := []string{"app-b", "app-c"}[i]
		for _, d := range []digest.Digest{img.config, img.layer} {
			if resp, _ := m.get(http.MethodGet, blobPath(repo, d)); resp.StatusCode != 200 {
				t.Errorf("GET %s of a kept image: %d", d, resp.StatusCode)
			}
		}
	}
	if n := m.fake.Total() - before; n != 0 {
		t.Errorf("kept images cost %d upstream requests, want 0", n)
	}
	// The config is the same blob in all three images (the fake builds
	// them so): b and c still use it, so it stays.
	if imgs[0].config != imgs[1].config {
		t.Fatal("test assumption: the images share their config")
	}
	if _, err := m.store.Stat(context.Background(), imgs[0].config); err != nil {
		t.Errorf("a config shared with kept images was deleted: %v", err)
	}
	// a's own layer comes from the upstream again.
	for _, d := range []digest.Digest{imgs[0].layer} {
		if _, err := m.store.Stat(context.Background(), d); err == nil {
			t.Errorf("evicted blob %s still stored", d)
		}
		before := m.fake.Count(http.MethodGet, blobPath("app-a", d))
		if resp, _ := m.get(http.MethodGet, blobPath("app-a", d)); resp.StatusCode != 200 {
			t.Errorf("GET evicted blob %s: %d", d, resp.StatusCode)
		}
		if n := m.fake.Count(http.MethodGet, blobPath("app-a", d)); n != before+1 {
			t.Errorf("evicted blob %s was not fetched again (upstream GETs %d -> %d)", d, before, n)
		}
	}
}

// An image pulled again from the store after eviction planned its
// deletion (the plan was made when it had not been used for long) stays:
// its manifest and its layer are still stored, served without the
// upstream, and the plan says nothing was evicted.
func TestImagePulledBetweenPlanAndDeletionStays(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	desc, layers := m.fake.Image("app", "v1", fakeupstream.Random(t, 300_000))
	accept := []string{"Accept", ocispec.MediaTypeImageManifest}
	pull := func(what string) {
		t.Helper()
		if resp, body := m.get(http.MethodGet, manifestPath("app", "v1"), accept...); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: manifest: %d %s", what, resp.StatusCode, body)
		}
		if resp, _ := m.get(http.MethodGet, blobPath("app", layers[0].Digest)); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: layer: %d", what, resp.StatusCode)
		}
	}
	pull("first pull")
	m.waitFills()
	m.clock.Advance(48 * time.Hour)

	ctx := context.Background()
	if err := m.proxy.FlushAccess(ctx); err != nil {
		t.Fatal(err)
	}
	plan, err := gc.MakePlan(ctx, m.store, m.db, gc.Options{MaxAge: 24 * time.Hour, Now: m.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Victims) != 1 || plan.Victims[0].Root != desc.Digest {
		t.Fatalf("eviction plan: %+v, want the image idle for two days", plan.Victims)
	}
	pull("pull between the plan and the deletion") // revalidates the tag too
	before := m.fake.Total()
	if err := gc.Apply(ctx, m.store, m.db, plan, m.proxy); err != nil {
		t.Fatal(err)
	}
	for _, d := range []digest.Digest{desc.Digest, layers[0].Digest} {
		if _, err := m.store.Stat(ctx, d); err != nil {
			t.Errorf("%s, pulled after the plan, was deleted: %v", d, err)
		}
	}
	if len(plan.Victims) != 0 || len(plan.Delete) != 0 {
		t.Errorf("after the deletion the plan says %d images, %d digests went; want none", len(plan.Victims), len(plan.Delete))
	}
	pull("pull after the deletion")
	if n := m.fake.Total() - before; n != 0 {
		t.Errorf("the image pulled during the eviction cost %d upstream requests afterwards, want 0", n)
	}
}

func configOf(t *testing.T, manifest []byte) digest.Digest {
	t.Helper()
	var m ocispec.Manifest
	if err := json.Unmarshal(manifest, &m); err != nil {
		t.Fatal(err)
	}
	return m.Config.Digest
}

// beforeDelete is a store whose Delete calls hook first (eviction's last
// step).
type beforeDelete struct {
	*blobstore.FS
	hook func(digest.Digest)
}

func (s beforeDelete) Delete(ctx context.Context, d digest.Digest) error {
	s.hook(d)
	return s.FS.Delete(ctx, d)
}

// A manifest asked for again while it is being evicted (its record
// forgotten, its file not yet deleted) is stored and recorded after the
// eviction, never recorded over the file the eviction then deletes: with
// the uplink down afterwards, the tag is still served from the store.
func TestEvictionDoesNotRaceAManifestFetch(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	desc, _ := m.fake.Image("app", "v1", fakeupstream.Random(t, 1000))
	accept := []string{"Accept", ocispec.MediaTypeImageManifest}
	if resp, body := m.get(http.MethodGet, manifestPath("app", "v1"), accept...); resp.StatusCode != http.StatusOK {
		t.Fatalf("pull: %d %s", resp.StatusCode, body)
	}
	m.waitFills()

	// The pull asked for while the manifest's file is being deleted: it
	// must wait for the eviction. How long the hook gives it does not
	// decide the outcome: a pull that waits is what is wanted, and one
	// that does not finishes well within the time.
	pulled := make(chan int, 1)
	hook := func(d digest.Digest) {
		if d != desc.Digest {
			return
		}
		go func() {
			resp, _ := m.get(http.MethodGet, manifestPath("app", "v1"), accept...)
			pulled <- resp.StatusCode
		}()
		select {
		case code := <-pulled:
			pulled <- code // it did not wait; the state is checked below
		case <-time.After(time.Second):
		}
	}
	mt := &gc.Maintainer{Store: beforeDelete{FS: m.store, hook: hook}, DB: m.db, Cache: m.proxy,
		Options: gc.Options{MaxSize: 1, Now: m.clock.Now}}
	if plan := mt.RunOnce(context.Background()); plan == nil || len(plan.Victims) != 1 {
		t.Fatalf("eviction plan: %+v, want the image", plan)
	}
	if code := <-pulled; code != http.StatusOK {
		t.Fatalf("the pull during the eviction: %d", code)
	}
	_, recErr := m.db.Manifest(context.Background(), desc.Digest)
	_, fileErr := m.store.Stat(context.Background(), desc.Digest)
	if recErr == nil && fileErr != nil {
		t.Fatalf("the manifest is recorded but its file was deleted: %v", fileErr)
	}
	m.upstream.Close()
	if resp, body := m.get(http.MethodGet, manifestPath("app", "v1"), accept...); resp.StatusCode != http.StatusOK {
		t.Errorf("tag pulled during the eviction, uplink down: %d %s", resp.StatusCode, body)
	}
}

// slowRead is a store whose first read of blob gate (once set) waits for
// release, after closing reached: a slow read of a small stored blob.
type slowRead struct {
	*blobstore.FS
	mu      sync.Mutex
	gate    digest.Digest
	reached chan struct{}
	release chan struct{}
	closed  chan struct{} // if set, closed when the gated read's reader is
}

func (s *slowRead) Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, error) {
	rc, err := s.FS.Open(ctx, d)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil || d != s.gate {
		return rc, err
	}
	s.gate = ""
	return &slowReader{ReadSeekCloser: rc, s: s}, nil
}

type slowReader struct {
	io.ReadSeekCloser
	s    *slowRead
	once sync.Once
}

func (r *slowReader) Close() error {
	if r.s.closed != nil {
		close(r.s.closed)
	}
	return r.ReadSeekCloser.Close()
}

func (r *slowReader) Read(p []byte) (int, error) {
	r.once.Do(func() { close(r.s.reached); <-r.s.release })
	return r.ReadSeekCloser.Read(p)
}

// A small blob read from the store while eviction deletes it does not go
// back into the in-memory cache: pulled again afterwards, it is fetched
// from the upstream (it was answered 404 until a restart).
func TestEvictionDuringAReadLeavesNothingInMemory(t *testing.T) {
	t.Parallel()
	s := &slowRead{reached: make(chan struct{}), release: make(chan struct{})}
	m := newMirrorWrapped(t, func(fs *blobstore.FS) proxy.Store { s.FS = fs; return s })
	_, layers := m.fake.Image("app", "v1", fakeupstream.Random(t, 10_000)) // small: kept in memory
	layer := layers[0].Digest
	accept := []string{"Accept", ocispec.MediaTypeImageManifest}
	pull := func(what string) {
		t.Helper()
		if resp, body := m.get(http.MethodGet, manifestPath("app", "v1"), accept...); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: manifest: %d %s", what, resp.StatusCode, body)
		}
		if resp, body := m.get(http.MethodGet, blobPath("app", layer)); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: layer: %d %s", what, resp.StatusCode, body)
		}
	}
	pull("first pull")
	m.waitFills()

	s.mu.Lock()
	s.gate = layer
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.do(http.MethodGet, blobPath("app", layer)) // its outcome is not the point
	}()
	<-s.reached
	m.clock.Advance(48 * time.Hour)
	mt := &gc.Maintainer{Store: m.store, DB: m.db, Cache: m.proxy, Options: gc.Options{MaxAge: time.Hour, Now: m.clock.Now}}
	if plan := mt.RunOnce(context.Background()); plan == nil || len(plan.Victims) == 0 {
		t.Fatalf("eviction plan: %+v, want the image", plan)
	}
	close(s.release)
	<-done

	before := m.fake.Count(http.MethodGet, blobPath("app", layer))
	pull("pull after the eviction")
	if n := m.fake.Count(http.MethodGet, blobPath("app", layer)) - before; n != 1 {
		t.Errorf("upstream GETs of the evicted layer = %d, want 1", n)
	}
}

// A read that starts while a blob is being evicted, its file still there,
// does not leave the blob in memory once the file is gone: pulled again,
// it comes from the upstream.
func TestReadDuringEvictionLeavesNothingInMemory(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	_, layers := m.fake.Image("app", "v1", fakeupstream.Random(t, 10_000)) // small: kept in memory
	layer := layers[0].Digest
	pullImage := func() {
		t.Helper()
		if resp, body := m.get(http.MethodGet, manifestPath("app", "v1"), "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK {
			t.Fatalf("manifest: %d %s", resp.StatusCode, body)
		}
		if resp, body := m.get(http.MethodGet, blobPath("app", layer)); resp.StatusCode != http.StatusOK {
			t.Fatalf("layer: %d %s", resp.StatusCode, body)
		}
	}
	pullImage()
	m.waitFills()
	hook := func(d digest.Digest) {
		if d == layer {
			m.do(http.MethodGet, blobPath("app", layer)) // just before the file goes
		}
	}
	m.clock.Advance(48 * time.Hour)
	mt := &gc.Maintainer{Store: beforeDelete{FS: m.store, hook: hook}, DB: m.db, Cache: m.proxy, Options: gc.Options{MaxAge: time.Hour, Now: m.clock.Now}}
	if plan := mt.RunOnce(context.Background()); plan == nil || len(plan.Victims) == 0 {
		t.Fatalf("eviction plan: %+v, want the image", plan)
	}
	before := m.fake.Count(http.MethodGet, blobPath("app", layer))
	pullImage()
	if n := m.fake.Count(http.MethodGet, blobPath("app", layer)) - before; n != 1 {
		t.Errorf("upstream GETs of the evicted layer = %d, want 1 (not served from memory)", n)
	}
}

// Serving a stored layer records it as used, for eviction to spare an
// image whose layers a device is pulling (storage.minIdle; a layer just
// stored counts as used by its storage time).
func TestServedLayerIsRecordedAsUsed(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 10_000)
	_, layers := m.fake.Image("app", "v1", layer)
	pullImage(t, m, "v1", layer)
	m.waitFills()
	if err := m.proxy.FlushAccess(context.Background()); err != nil {
		t.Fatal(err)
	}
	before, err := m.db.AccessTimes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m.clock.Advance(time.Hour)
	if resp, _ := m.get(http.MethodGet, blobPath("app", layers[0].Digest)); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET the stored layer: %d", resp.StatusCode)
	}
	if err := m.proxy.FlushAccess(context.Background()); err != nil {
		t.Fatal(err)
	}
	after, err := m.db.AccessTimes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := after[layers[0].Digest], m.clock.Now().Truncate(time.Second); !got.Equal(want) || got.Equal(before[layers[0].Digest]) {
		t.Errorf("serving the stored layer an hour later recorded its use at %v, want %v", got, want)
	}
}

// A layer being sent to a device is in use for as long as the transfer
// lasts, and for storage.minIdle after it ends (a device resuming a
// dropped transfer with Range), not only for minIdle after its request:
// a slow device's transfer outlasts minIdle, and the image was evicted
// from under it.
func TestLayerBeingSentIsNotEvicted(t *testing.T) {
	t.Parallel()
	s := &slowRead{reached: make(chan struct{}), release: make(chan struct{}), closed: make(chan struct{})}
	m := newMirrorWrapped(t, func(fs *blobstore.FS) proxy.Store { s.FS = fs; return s })
	layer := fakeupstream.Random(t, 300_000) // served from its file
	desc, layers := m.fake.Image("app", "v1", layer)
	pullImage(t, m, "v1", layer)

	s.mu.Lock()
	s.gate = layers[0].Digest
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.do(http.MethodGet, blobPath("app", layers[0].Digest)) // its outcome is not the point
	}()
	<-s.reached // the layer is being sent
	release := sync.OnceFunc(func() { close(s.release) })
	t.Cleanup(func() { release(); <-done }) // also when the test fails
	m.clock.Advance(time.Hour)
	mt := &gc.Maintainer{Store: m.store, DB: m.db, Cache: m.proxy, Options: gc.Options{MaxSize: 1, MinIdle: 5 * time.Minute, Now: m.clock.Now}}
	if plan := mt.RunOnce(context.Background()); plan == nil || len(plan.Victims) != 0 || plan.RecentUnits != 1 {
		t.Fatalf("eviction while the layer is sent: %+v, want the image spared as in use", plan)
	}
	m.clock.Advance(time.Hour)
	release()
	<-done
	<-s.closed // the mirror is done with the layer
	if plan := mt.RunOnce(context.Background()); plan == nil || len(plan.Victims) != 0 {
		t.Fatalf("eviction just after the transfer ended: %+v, want the image spared for storage.minIdle", plan)
	}
	m.clock.Advance(10 * time.Minute)
	if plan := mt.RunOnce(context.Background()); plan == nil || len(plan.Victims) != 1 || plan.Victims[0].Root != desc.Digest {
		t.Fatalf("eviction minIdle after the transfer: %+v, want the image", plan)
	}
}
