package gc_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/gc"
	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/metrics"
)

var repo = meta.Repo{Registry: "central.test", Name: "org/app"}

type site struct {
	t     *testing.T
	store *blobstore.FS
	db    *meta.DB
	now   time.Time
}

func newSite(t *testing.T) *site {
	t.Helper()
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
	return &site{t: t, store: store, db: db, now: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}
}

func (s *site) blob(n int) ocispec.Descriptor {
	s.t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(b), Size: int64(n)}
	if err := s.store.Put(context.Background(), d, bytes.NewReader(b)); err != nil {
		s.t.Fatal(err)
	}
	if err := s.db.Link(context.Background(), repo, d.Digest); err != nil {
		s.t.Fatal(err)
	}
	return d
}

func (s *site) manifest(v any, mediaType, tag string, lastServed time.Duration) ocispec.Descriptor {
	s.t.Helper()
	ctx := context.Background()
	b, err := json.Marshal(v)
	if err != nil {
		s.t.Fatal(err)
	}
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
	if err := s.store.Put(ctx, d, bytes.NewReader(b)); err != nil {
		s.t.Fatal(err)
	}
	if err := s.db.PutManifest(ctx, repo, d.Digest, meta.Manifest{MediaType: mediaType, Size: d.Size}); err != nil {
		s.t.Fatal(err)
	}
	if tag != "" {
		if err := s.db.PutTag(ctx, repo, tag, meta.TagEntry{Digest: d.Digest, MediaType: mediaType, Size: d.Size}); err != nil {
			s.t.Fatal(err)
		}
	}
	if err := s.db.Touch(ctx, map[digest.Digest]time.Time{d.Digest: s.now.Add(-lastServed)}); err != nil {
		s.t.Fatal(err)
	}
	return d
}

func (s *site) image(tag string, lastServed time.Duration, layers ...ocispec.Descriptor) ocispec.Descriptor {
	s.t.Helper()
	cfg := s.blob(100)
	cfg.MediaType = ocispec.MediaTypeImageConfig
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: layers}
	m.SchemaVersion = 2
	return s.manifest(m, ocispec.MediaTypeImageManifest, tag, lastServed)
}

func (s *site) stored(d digest.Digest) bool {
	_, err := s.store.Stat(context.Background(), d)
	return err == nil
}

func (s *site) plan(opts gc.Options) *gc.Plan {
	s.t.Helper()
	opts.Now = func() time.Time { return s.now }
	p, err := gc.MakePlan(context.Background(), s.store, s.db, opts)
	if err != nil {
		s.t.Fatal(err)
	}
	return p
}

func roots(p *gc.Plan) []digest.Digest {
	var out []digest.Digest
	for _, v := range p.Victims {
		out = append(out, v.Root)
	}
	return out
}

// Over budget, the least recently served image goes first, with its
// signature; a layer it shares with an image that stays is kept.
func TestEvictsLeastRecentlyUsedClosureKeepingSharedLayers(t *testing.T) {
	s := newSite(t)
	shared, ownA, ownB := s.blob(100_000), s.blob(200_000), s.blob(300_000)
	a := s.image("a", 3*time.Hour, shared, ownA)
	b := s.image("b", time.Hour, shared, ownB)
	sigLayer := s.blob(1000)
	sig := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: ocispec.DescriptorEmptyJSON, Layers: []ocispec.Descriptor{sigLayer}, Subject: &a}
	sig.SchemaVersion = 2
	sigDesc := s.manifest(sig, ocispec.MediaTypeImageManifest, "sha256-"+a.Digest.Encoded()+".sig", 3*time.Hour)

	p := s.plan(gc.Options{MaxSize: p0(s) - 150_000})
	if got := roots(p); !slices.Equal(got, []digest.Digest{a.Digest}) {
		t.Fatalf("victims = %v, want only image a %s", got, a.Digest)
	}
	for _, d := range []digest.Digest{a.Digest, ownA.Digest, sigDesc.Digest, sigLayer.Digest} {
		if !slices.Contains(p.Delete, d) {
			t.Errorf("plan keeps %s of image a's closure", d)
		}
	}
	for _, d := range []digest.Digest{shared.Digest, b.Digest, ownB.Digest} {
		if slices.Contains(p.Delete, d) {
			t.Errorf("plan deletes %s, which image b still uses", d)
		}
	}

	if err := gc.Apply(context.Background(), s.store, s.db, p, nil); err != nil {
		t.Fatal(err)
	}
	if s.stored(a.Digest) || s.stored(ownA.Digest) || s.stored(sigLayer.Digest) {
		t.Error("image a's content still stored after Apply")
	}
	if !s.stored(shared.Digest) || !s.stored(b.Digest) || !s.stored(ownB.Digest) {
		t.Error("image b's content deleted")
	}
	if _, err := s.db.Tag(context.Background(), repo, "a"); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("tag a after eviction: %v, want not found", err)
	}
	if ok, _ := s.db.Linked(context.Background(), repo, ownA.Digest); ok {
		t.Error("link to an evicted layer kept")
	}
	if _, err := s.db.Tag(context.Background(), repo, "b"); err != nil {
		t.Errorf("tag b after eviction: %v", err)
	}

	// Further over budget: b goes too, and the shared layer with it.
	p = s.plan(gc.Options{MaxSize: 1000, LowWatermark: 0.5})
	if !slices.Contains(p.Delete, shared.Digest) {
		t.Errorf("shared layer kept once no image uses it: %v", p.Delete)
	}
}

// p0 is the size of everything stored.
func p0(s *site) int64 {
	var n int64
	s.store.Walk(context.Background(), func(i blobstore.Info) error { n += i.Size; return nil })
	return n
}

// Pinned (pre-staged) images are never evicted, even when that leaves the
// store over budget, which the plan says.
func TestPinnedContentIsNeverEvicted(t *testing.T) {
	s := newSite(t)
	layer := s.blob(500_000)
	img := s.image("pinned", 100*time.Hour, layer)
	if err := s.db.SetPins(context.Background(), "prefetch:org/app:pinned", []digest.Digest{img.Digest, layer.Digest}); err != nil {
		t.Fatal(err)
	}
	other := s.image("other", time.Minute, s.blob(1000))

	p := s.plan(gc.Options{MaxSize: 1000})
	if got := roots(p); !slices.Equal(got, []digest.Digest{other.Digest}) {
		t.Fatalf("victims = %v, want only the unpinned image", got)
	}
	if !p.OverBudget || p.PinnedUnits != 1 {
		t.Errorf("OverBudget = %v, PinnedUnits = %d; want true, 1", p.OverBudget, p.PinnedUnits)
	}
}

// A pinned image keeps the layers it shares, not the images that share
// them: those are evicted as usual, and the shared layer stays because the
// pinned image refers to it.
func TestSharingAPinnedLayerDoesNotPin(t *testing.T) {
	s := newSite(t)
	base := s.blob(300_000)
	pinned := s.image("pinned", time.Hour, base)
	if err := s.db.SetPins(context.Background(), "prefetch:org/app:pinned", []digest.Digest{pinned.Digest, base.Digest}); err != nil {
		t.Fatal(err)
	}
	own := s.blob(200_000)
	sharer := s.image("sharer", 2*time.Hour, base, own)

	p := s.plan(gc.Options{MaxSize: 350_000})
	if got := roots(p); !slices.Equal(got, []digest.Digest{sharer.Digest}) {
		t.Fatalf("victims = %v, want the image sharing the pinned layer", got)
	}
	if slices.Contains(p.Delete, base.Digest) || !slices.Contains(p.Delete, own.Digest) {
		t.Errorf("delete = %v: want its own layer %s, not the pinned image's %s", p.Delete, own.Digest, base.Digest)
	}
	if p.PinnedUnits != 1 {
		t.Errorf("PinnedUnits = %d, want 1", p.PinnedUnits)
	}
}

// An index goes as a whole, with its children; content nothing refers to
// is a unit of its own; an age limit evicts regardless of the budget.
func TestIndexesOrphansAndAge(t *testing.T) {
	s := newSite(t)
	amd := s.image("", 48*time.Hour, s.blob(1000))
	arm := s.image("", 48*time.Hour, s.blob(1000))
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{amd, arm}}
	idx.SchemaVersion = 2
	old := s.manifest(idx, ocispec.MediaTypeImageIndex, "multi", 48*time.Hour)
	// Children are served more recently than the index: the index's unit
	// counts the latest of its manifests.
	if err := s.db.Touch(context.Background(), map[digest.Digest]time.Time{amd.Digest: s.now.Add(-30 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	orphan := s.blob(5000)
	recent := s.image("recent", time.Minute, s.blob(1000))

	p := s.plan(gc.Options{MaxAge: 24 * time.Hour})
	got := roots(p)
	if !slices.Contains(got, old.Digest) || slices.Contains(got, recent.Digest) {
		t.Fatalf("victims by age = %v, want the index (served 30h ago) and not the recent image", got)
	}
	for _, d := range []digest.Digest{amd.Digest, arm.Digest} {
		if !slices.Contains(p.Delete, d) {
			t.Errorf("child %s of the evicted index kept", d)
		}
	}
	// The orphan blob was written just now (file time), so the age limit
	// keeps it; over budget it is the oldest unit after the index.
	if slices.Contains(got, orphan.Digest) {
		t.Errorf("orphan blob evicted by age although just written")
	}
	if len(p.Victims) != 1 || len(p.Victims[0].Manifests) != 3 {
		t.Errorf("victims by age = %+v, want the index's unit alone: the index and its 2 children", p.Victims)
	}
	if p.Units != 3 {
		t.Errorf("units = %d, want 3 (the index, the recent image, the orphan blob)", p.Units)
	}
}

// Nothing to do within the budget.
func TestWithinBudget(t *testing.T) {
	s := newSite(t)
	s.image("a", time.Hour, s.blob(1000))
	p := s.plan(gc.Options{MaxSize: 1 << 30})
	if len(p.Victims) != 0 || len(p.Delete) != 0 || p.OverBudget {
		t.Errorf("plan within budget: %+v", p)
	}
	if err := gc.Apply(context.Background(), s.store, s.db, p, nil); err != nil {
		t.Error(err)
	}
}

// With KeepDeltaBases, the newest image of each repository is evicted
// only after every other image: its layers are the bases of the next
// update's deltas. Plain LRU would evict the base of repository a first.
func TestDeltaBasesAreEvictedLast(t *testing.T) {
	s := newSite(t)
	other := meta.Repo{Registry: "central.test", Name: "org/b"}
	aBase := s.image("a", 10*time.Hour, s.blob(300_000))
	repo = other
	bOld := s.image("b-old", 5*time.Hour, s.blob(300_000))
	bNew := s.image("b-new", time.Hour, s.blob(300_000))
	repo = meta.Repo{Registry: "central.test", Name: "org/app"} // (the tests of this package do not run in parallel)
	budget := int64(700_000)                                    // two images

	p := s.plan(gc.Options{MaxSize: budget, KeepDeltaBases: true})
	if got := roots(p); !slices.Equal(got, []digest.Digest{bOld.Digest}) {
		t.Errorf("victims = %v, want only %s (b's older image)", got, bOld.Digest)
	}
	if p.BaseUnits != 2 {
		t.Errorf("BaseUnits = %d, want 2", p.BaseUnits)
	}
	p = s.plan(gc.Options{MaxSize: budget})
	if got := roots(p); !slices.Equal(got, []digest.Digest{aBase.Digest}) {
		t.Errorf("without KeepDeltaBases: victims = %v, want %s (least recently used)", got, aBase.Digest)
	}
	// Over budget with only bases left, bases go too, least recent first.
	p = s.plan(gc.Options{MaxSize: 350_000, KeepDeltaBases: true})
	if got := roots(p); !slices.Equal(got, []digest.Digest{bOld.Digest, aBase.Digest}) {
		t.Errorf("tight budget: victims = %v, want b-old then a", got)
	}
	if slices.Contains(roots(p), bNew.Digest) {
		t.Errorf("tight budget: the most recent image %s was evicted", bNew.Digest)
	}
}

// Evidence under cosign's tags (no subject field; the tag names the
// image) goes with its image, and is never its repository's delta base:
// a signature read after its image (cosign verify against the mirror)
// must not leave the image to be evicted as an ordinary one.
func TestCosignTagsGoWithTheirImage(t *testing.T) {
	s := newSite(t)
	old := s.image("v1", 3*time.Hour, s.blob(300_000))
	img := s.image("v2", 2*time.Hour, s.blob(300_000))
	sigLayer := s.blob(1000)
	sig := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: ocispec.DescriptorEmptyJSON, Layers: []ocispec.Descriptor{sigLayer}}
	sig.SchemaVersion = 2
	sigDesc := s.manifest(sig, ocispec.MediaTypeImageManifest, "sha256-"+img.Digest.Encoded()+".sig", time.Minute)
	listing := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{sigDesc}}
	listing.SchemaVersion = 2
	listDesc := s.manifest(listing, ocispec.MediaTypeImageIndex, "sha256-"+img.Digest.Encoded(), time.Minute)

	p := s.plan(gc.Options{MaxSize: 500_000, KeepDeltaBases: true})
	if got := roots(p); !slices.Equal(got, []digest.Digest{old.Digest}) {
		t.Fatalf("victims = %v, want only the older image %s", got, old.Digest)
	}
	if p.Units != 2 || p.BaseUnits != 1 {
		t.Errorf("units %d, delta bases %d; want 2 (the signature and listing are v2's) and 1", p.Units, p.BaseUnits)
	}
	p = s.plan(gc.Options{MaxSize: 1000})
	for _, d := range []digest.Digest{img.Digest, sigDesc.Digest, sigLayer.Digest, listDesc.Digest} {
		if !slices.Contains(p.Delete, d) {
			t.Errorf("evicting v2 keeps %s of its evidence", d)
		}
	}
}

// A plan is carried out as things are when it is: what was pinned since
// it was made, and what an image pulled since then refers to, stays.
func TestApplyKeepsWhatChangedSinceThePlan(t *testing.T) {
	s := newSite(t)
	shared, own, pinnedLater := s.blob(300_000), s.blob(200_000), s.blob(100_000)
	old := s.image("old", 3*time.Hour, shared, own, pinnedLater)
	p := s.plan(gc.Options{MaxSize: 1000})
	if got := roots(p); !slices.Equal(got, []digest.Digest{old.Digest}) {
		t.Fatalf("victims = %v, want the old image", got)
	}

	// Meanwhile: an image sharing a layer is pulled, and a blob is pinned.
	pulled := s.image("new", 0, shared)
	if err := s.db.SetPins(context.Background(), "prefetch:org/app:other", []digest.Digest{pinnedLater.Digest}); err != nil {
		t.Fatal(err)
	}
	if err := gc.Apply(context.Background(), s.store, s.db, p, nil); err != nil {
		t.Fatal(err)
	}
	for _, d := range []digest.Digest{shared.Digest, pinnedLater.Digest, pulled.Digest} {
		if !s.stored(d) {
			t.Errorf("%s, pulled or pinned after the plan, was deleted", d)
		}
	}
	for _, d := range []digest.Digest{old.Digest, own.Digest} {
		if s.stored(d) {
			t.Errorf("%s of the victim was kept", d)
		}
	}
}

// reRecord is an Evictor under which, after the first batch, a device
// pulls the victim image again: its manifest is stored and recorded anew.
type reRecord struct {
	s       *site
	m       ocispec.Descriptor
	body    []byte
	batches int
}

func (r *reRecord) Forget(digest.Digest)                   {}
func (r *reRecord) UsedSinceFlush() map[digest.Digest]bool { return nil }

func (r *reRecord) Evict(_ []digest.Digest, remove func() error) error {
	err := remove()
	if r.batches++; r.batches == 1 {
		ctx := context.Background()
		if err := r.s.store.Put(ctx, r.m, bytes.NewReader(r.body)); err != nil {
			r.s.t.Fatal(err)
		}
		if err := r.s.db.PutManifest(ctx, repo, r.m.Digest, meta.Manifest{MediaType: r.m.MediaType, Size: r.m.Size}); err != nil {
			r.s.t.Fatal(err)
		}
	}
	return err
}

// A victim recorded again after an earlier batch forgot it (a device
// pulled it again) keeps what later batches would have deleted of it.
func TestVictimRecordedAgainKeepsItsRest(t *testing.T) {
	s := newSite(t)
	var layers []ocispec.Descriptor
	for range 70 { // more than one batch
		layers = append(layers, s.blob(100))
	}
	img := s.image("old", 3*time.Hour, layers...)
	rc, err := s.store.Open(context.Background(), img.Digest)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	p := s.plan(gc.Options{MaxSize: 1})
	if p.Delete[0] != img.Digest || len(p.Delete) <= 64 {
		t.Fatalf("test assumption: the manifest goes in the first of several batches (%d digests)", len(p.Delete))
	}
	ev := &reRecord{s: s, m: img, body: body}
	if err := gc.Apply(context.Background(), s.store, s.db, p, ev); err != nil {
		t.Fatal(err)
	}
	if ev.batches < 2 {
		t.Fatalf("%d batches, want at least 2", ev.batches)
	}
	lost := 0
	for _, l := range layers[len(layers)-5:] { // in the last batch
		if !s.stored(l.Digest) {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("the image recorded again lost %d of its last layers in a later batch", lost)
	}
}

type noCache struct{}

func (noCache) FlushAccess(context.Context) error                  { return nil }
func (noCache) Forget(digest.Digest)                               {}
func (noCache) Evict(_ []digest.Digest, remove func() error) error { return remove() }
func (noCache) UsedSinceFlush() map[digest.Digest]bool             { return nil }

// gc and gc --dry-run on a running mirror (Maintainer.RunNow and Plan) use
// the budget in force after a reload (SetOptions), and report the store's
// figures also when there is no budget or nothing to evict.
func TestMaintainerUsesTheBudgetInForce(t *testing.T) {
	s := newSite(t)
	old := s.image("old", 2*time.Hour, s.blob(3000))
	s.image("new", time.Hour, s.blob(3000))
	var used int64
	if err := s.store.Walk(context.Background(), func(i blobstore.Info) error { used += i.Size; return nil }); err != nil {
		t.Fatal(err)
	}
	m := &gc.Maintainer{Store: s.store, DB: s.db, Cache: noCache{}}

	p, err := m.RunNow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if p.Used != used || p.Units != 2 || p.Budget != 0 || len(p.Victims) != 0 {
		t.Errorf("gc without a budget: used %d, %d images, budget %d, %d victims; want used %d, 2 images, no budget, none",
			p.Used, p.Units, p.Budget, len(p.Victims), used)
	}

	m.SetOptions(gc.Options{MaxSize: used - 1000})
	p, err = m.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if p.Budget != used-1000 || !slices.Equal(roots(p), []digest.Digest{old.Digest}) {
		t.Fatalf("dry run after the reload: budget %d, victims %v; want budget %d and the old image", p.Budget, roots(p), used-1000)
	}
	if !s.stored(old.Digest) {
		t.Fatal("the dry run evicted")
	}
	if p, err = m.RunNow(context.Background()); err != nil || !slices.Equal(roots(p), []digest.Digest{old.Digest}) {
		t.Fatalf("gc after the reload: %v, %v; want the old image evicted", p, err)
	}
	if s.stored(old.Digest) {
		t.Error("gc after the reload left the old image")
	}
}

// failingCache fails every flush with err.
type failingCache struct{ err error }

func (c failingCache) FlushAccess(context.Context) error                { return c.err }
func (failingCache) Forget(digest.Digest)                               {}
func (failingCache) Evict(_ []digest.Digest, remove func() error) error { return remove() }
func (failingCache) UsedSinceFlush() map[digest.Digest]bool             { return nil }

// A replica-id collision (the local access times are written, the shared
// record is not) still lets gc and the status page plan; another flush
// failure does not.
func TestPlanDespiteAReplicaIDCollision(t *testing.T) {
	s := newSite(t)
	s.image("one", time.Hour, s.blob(3000))
	collision := fmt.Errorf("replica id %q: another process on the bucket uses it too: %w", "edge-1", errdef.ErrAlreadyExists)
	m := &gc.Maintainer{Store: s.store, DB: s.db, Cache: failingCache{collision}}
	if p, err := m.Plan(context.Background()); err != nil || p.Units != 1 {
		t.Errorf("Plan with a replica-id collision: %+v, %v; want a plan of 1 image", p, err)
	}
	m = &gc.Maintainer{Store: s.store, DB: s.db, Cache: failingCache{errors.New("disk full")}}
	if _, err := m.Plan(context.Background()); err == nil {
		t.Error("Plan with a failing flush: no error")
	}
}

// blockingCache holds FlushAccess (the first step of a collection) until
// release, after closing reached.
type blockingCache struct {
	noCache
	reached, release chan struct{}
}

func (c blockingCache) FlushAccess(context.Context) error {
	close(c.reached)
	<-c.release
	return nil
}

// A reload (SetOptions) and the status page (CurrentOptions) do not wait
// for a running collection.
func TestOptionsDoNotWaitForACollection(t *testing.T) {
	s := newSite(t)
	c := blockingCache{reached: make(chan struct{}), release: make(chan struct{})}
	m := &gc.Maintainer{Store: s.store, DB: s.db, Cache: c}
	done := make(chan struct{})
	go func() { defer close(done); m.RunNow(context.Background()) }()
	<-c.reached
	set := make(chan struct{})
	go func() {
		defer close(set)
		m.SetOptions(gc.Options{MaxSize: 1 << 30})
		if got := m.CurrentOptions().MaxSize; got != 1<<30 {
			t.Errorf("CurrentOptions().MaxSize = %d after SetOptions", got)
		}
	}()
	select {
	case <-set:
	case <-time.After(10 * time.Second): // reached only if they wait for the collection
		t.Error("SetOptions waited for a running collection")
	}
	close(c.release)
	<-done
}

// MinIdle spares an image whose layers are being served, not only one
// whose manifests were: a pull reads the manifests first and may spend
// minutes on the layers, and an image evicted under it is lost to a site
// whose uplink is down. When the image was last used is not when it was
// last pulled: the eviction order stays by manifests.
func TestMinIdleSparesAnImageWhoseLayersAreServed(t *testing.T) {
	s := newSite(t)
	s.now = time.Now().Add(time.Hour) // everything was stored an hour before
	layer := s.blob(100_000)
	img := s.image("v1", 20*time.Minute, layer) // its manifests served 20 minutes ago
	opts := gc.Options{MaxSize: 1, MinIdle: 5 * time.Minute}
	if got := roots(s.plan(opts)); !slices.Equal(got, []digest.Digest{img.Digest}) {
		t.Fatalf("victims = %v, want %s", got, img.Digest)
	}
	if err := s.db.Touch(context.Background(), map[digest.Digest]time.Time{layer.Digest: s.now.Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	p := s.plan(opts)
	if len(p.Victims) != 0 {
		t.Errorf("victims while its layer is being served = %v, want none", roots(p))
	}
	// Over budget because of it, and the plan says why: not a pin.
	if !p.OverBudget || p.RecentUnits != 1 || p.PinnedUnits != 0 {
		t.Errorf("OverBudget = %v, RecentUnits = %d, PinnedUnits = %d; want true, 1, 0", p.OverBudget, p.RecentUnits, p.PinnedUnits)
	}
	opts.MinIdle = 0
	p = s.plan(opts)
	if len(p.Victims) != 1 || !p.Victims[0].LastAccess.Equal(s.now.Add(-20*time.Minute).Truncate(time.Second)) {
		t.Errorf("without MinIdle: victims %+v, want the image, last pulled 20 minutes ago", p.Victims)
	}
}

// The image a pre-staged tag names now is kept, also when the tag moved
// after its old image was fetched and pinned: until the next prefetch run
// pins the new image, the pin alone would keep the old one and let the one
// devices run go first.
func TestPinnedTagKeepsTheImageItNamesNow(t *testing.T) {
	s := newSite(t)
	old := s.image("", 2*time.Hour, s.blob(100_000)) // what v1 named when it was pinned
	if err := s.db.SetPins(context.Background(), "prefetch:org/app:v1", []digest.Digest{old.Digest}); err != nil {
		t.Fatal(err)
	}
	now := s.image("v1", time.Hour, s.blob(100_000)) // v1 now
	opts := gc.Options{MaxSize: 1}
	if got := roots(s.plan(opts)); !slices.Equal(got, []digest.Digest{now.Digest}) {
		t.Fatalf("without pinned tags: victims = %v, want %s", got, now.Digest)
	}
	opts.PinnedTags = func() []string { return []string{repo.String() + ":v1"} }
	p := s.plan(opts)
	if len(p.Victims) != 0 || p.PinnedUnits != 2 {
		t.Errorf("with v1 pre-staged: victims = %v, pinned units %d; want none, 2", roots(p), p.PinnedUnits)
	}
}

// countingStore counts the stored content opened.
type countingStore struct {
	*blobstore.FS
	mu     sync.Mutex
	opened map[digest.Digest]int
}

func (c *countingStore) Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, error) {
	c.mu.Lock()
	c.opened[d]++
	c.mu.Unlock()
	return c.FS.Open(ctx, d)
}

// With storage.maxAge set, the maintainer plans every minute; a manifest
// never changes, so it is read once, not at every plan (each plan read and
// decoded every stored manifest: seconds of CPU a minute with 20,000
// images). A manifest stored since is read, and what a manifest points at
// still counts: an old image whose layer a new one shares keeps it.
func TestMaintainerReadsEachManifestOnce(t *testing.T) {
	s := newSite(t)
	shared := s.blob(3000)
	old := s.image("old", 48*time.Hour, shared, s.blob(3000))
	store := &countingStore{FS: s.store, opened: map[digest.Digest]int{}}
	m := &gc.Maintainer{Store: store, DB: s.db, Cache: noCache{},
		Options: gc.Options{MaxAge: 24 * time.Hour, Now: func() time.Time { return s.now.Add(-30 * time.Hour) }}}
	if p := m.RunOnce(context.Background()); p == nil || len(p.Victims) != 0 {
		t.Fatalf("first run: %+v, want a plan without victims", p)
	}
	recent := s.image("recent", time.Hour, shared)
	m.SetOptions(gc.Options{MaxAge: 24 * time.Hour, Now: func() time.Time { return s.now }})
	p := m.RunOnce(context.Background())
	if p == nil || !slices.Equal(roots(p), []digest.Digest{old.Digest}) {
		t.Fatalf("second run: %+v, want the old image evicted", p)
	}
	if !s.stored(shared.Digest) {
		t.Error("the layer the recent image shares was evicted")
	}
	for d, want := range map[digest.Digest]int{old.Digest: 1, recent.Digest: 1} {
		if n := store.opened[d]; n != want {
			t.Errorf("manifest %s opened %d times over two plans, want %d", d, n, want)
		}
	}
}

// The records of layers never stored here (a site whose devices already
// had them, or never pulled them) go with the last manifest that names
// them: the deltas found to rebuild them were kept forever, keyed by a
// layer no eviction ever deleted.
func TestRecordsOfLayersNeverStoredGoWithTheirImage(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	layer := func(name string) ocispec.Descriptor {
		return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString(name), Size: 1000}
	}
	only, shared, kept := layer("only the old image's"), layer("both images'"), layer("the new image's")
	stored := s.blob(5000)
	old := s.image("v1", 48*time.Hour, only, shared, stored)
	current := s.image("v2", time.Minute, shared, kept)
	for _, l := range []ocispec.Descriptor{only, shared, kept} {
		rec := meta.DeltaRecord{Repo: repo, Descriptor: ocispec.Descriptor{Digest: digest.FromString("delta of " + l.Digest.String()), Size: 10}}
		if err := s.db.AddDelta(ctx, l.Digest, rec); err != nil {
			t.Fatal(err)
		}
	}
	p := s.plan(gc.Options{MaxAge: 24 * time.Hour})
	if got := roots(p); !slices.Equal(got, []digest.Digest{old.Digest}) {
		t.Fatalf("victims = %v, want %s", got, old.Digest)
	}
	if err := gc.Apply(ctx, s.store, s.db, p, noCache{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what string
		d    digest.Digest
		want int
	}{{"the evicted image's own layer", only.Digest, 0}, {"a layer the current image names too", shared.Digest, 1}, {"the current image's layer", kept.Digest, 1}} {
		if recs, err := s.db.Deltas(ctx, c.d); err != nil || len(recs) != c.want {
			t.Errorf("delta records of %s = %d, %v; want %d", c.what, len(recs), err, c.want)
		}
	}
	if !s.stored(current.Digest) || s.stored(old.Digest) || s.stored(stored.Digest) {
		t.Errorf("stored after eviction: current %v, old %v, its stored layer %v; want true, false, false", s.stored(current.Digest), s.stored(old.Digest), s.stored(stored.Digest))
	}
}

// An older index that shares a child manifest with a pinned (pre-staged)
// index is evicted as usual, with what is its own; the shared child stays
// with the pinned index. It was pinned by that child: every release that
// left one platform's image unchanged stayed for good.
func TestIndexSharingAChildWithAPinnedIndexIsNotPinned(t *testing.T) {
	s := newSite(t)
	armLayer := s.blob(1000)
	arm := s.image("", 48*time.Hour, armLayer) // unchanged between the releases
	oldAmdLayer := s.blob(500_000)
	oldAmd := s.image("", 48*time.Hour, oldAmdLayer)
	newAmd := s.image("", time.Hour, s.blob(500_000))
	index := func(tag string, lastServed time.Duration, children ...ocispec.Descriptor) ocispec.Descriptor {
		idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: children}
		idx.SchemaVersion = 2
		idx.Annotations = map[string]string{"release": tag}
		return s.manifest(idx, ocispec.MediaTypeImageIndex, tag, lastServed)
	}
	old := index("", 48*time.Hour, oldAmd, arm)
	cur := index("v2", time.Hour, newAmd, arm)
	pins := []digest.Digest{cur.Digest, newAmd.Digest, arm.Digest, armLayer.Digest}
	if err := s.db.SetPins(context.Background(), "prefetch:org/app:v2", pins); err != nil {
		t.Fatal(err)
	}

	p := s.plan(gc.Options{MaxSize: 600_000})
	if got := roots(p); !slices.Equal(got, []digest.Digest{old.Digest}) {
		t.Fatalf("victims = %v, want the old index %s", got, old.Digest)
	}
	for _, d := range []digest.Digest{old.Digest, oldAmd.Digest, oldAmdLayer.Digest} {
		if !slices.Contains(p.Delete, d) {
			t.Errorf("delete = %v, want the old index's own %s", p.Delete, d)
		}
	}
	for _, d := range pins {
		if slices.Contains(p.Delete, d) {
			t.Errorf("delete = %v: pinned %s", p.Delete, d)
		}
	}
	if p.PinnedUnits != 1 || p.OverBudget {
		t.Errorf("PinnedUnits = %d, OverBudget = %v; want 1, false", p.PinnedUnits, p.OverBudget)
	}
}

// A child manifest pinned by itself (pre-staged by digest) keeps every
// index holding it.
func TestPinnedChildKeepsItsIndex(t *testing.T) {
	s := newSite(t)
	armLayer := s.blob(1000)
	arm := s.image("", 48*time.Hour, armLayer)
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{arm}}
	idx.SchemaVersion = 2
	s.manifest(idx, ocispec.MediaTypeImageIndex, "v1", 48*time.Hour)
	if err := s.db.SetPins(context.Background(), "prefetch:org/app@"+arm.Digest.String(), []digest.Digest{arm.Digest, armLayer.Digest}); err != nil {
		t.Fatal(err)
	}
	p := s.plan(gc.Options{MaxSize: 1})
	if len(p.Victims) != 0 || p.PinnedUnits != 1 {
		t.Errorf("victims = %v, PinnedUnits = %d; want none, 1", roots(p), p.PinnedUnits)
	}
}

// pinningCache pre-stages pins (owner and digests) when an eviction
// starts: an image pinned between the plan and its application.
type pinningCache struct {
	noCache
	db    *meta.DB
	owner string
	pins  []digest.Digest
}

func (c pinningCache) Evict(_ []digest.Digest, remove func() error) error {
	if err := c.db.SetPins(context.Background(), c.owner, c.pins); err != nil {
		return err
	}
	return remove()
}

func gauge(t *testing.T, m *metrics.Metrics, name string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			mm := mf.GetMetric()[0]
			if mm.GetCounter() != nil {
				return mm.GetCounter().GetValue()
			}
			return mm.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// An image pinned (or pulled) after the plan was made stays, and the
// collection says so: the plan returned (what gc prints), the evicted
// metrics and the store size count only what went. They counted the
// image as evicted, and the store as that much smaller.
func TestKeptSinceThePlanIsNotCountedAsEvicted(t *testing.T) {
	s := newSite(t)
	cfg, layer := s.blob(100), s.blob(300_000)
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{layer}}
	m.SchemaVersion = 2
	img := s.manifest(m, ocispec.MediaTypeImageManifest, "a", 2*time.Hour)
	other := s.image("b", 3*time.Hour, s.blob(1000))
	var used int64
	if err := s.store.Walk(context.Background(), func(i blobstore.Info) error { used += i.Size; return nil }); err != nil {
		t.Fatal(err)
	}
	met := metrics.New()
	pins := []digest.Digest{img.Digest, cfg.Digest, layer.Digest} // as prefetch pins: all of it
	mt := &gc.Maintainer{Store: s.store, DB: s.db, Metrics: met, Options: gc.Options{MaxSize: 1, Now: func() time.Time { return s.now }},
		Cache: pinningCache{db: s.db, owner: "prefetch:org/app:a", pins: pins}}
	p := mt.RunOnce(context.Background())
	if p == nil {
		t.Fatal("no plan")
	}
	if !s.stored(img.Digest) || !s.stored(cfg.Digest) || !s.stored(layer.Digest) || s.stored(other.Digest) {
		t.Fatalf("after eviction: pinned image stored %v, config %v, layer %v, other image %v; want true, true, true, false",
			s.stored(img.Digest), s.stored(cfg.Digest), s.stored(layer.Digest), s.stored(other.Digest))
	}
	if got := roots(p); !slices.Equal(got, []digest.Digest{other.Digest}) {
		t.Errorf("victims = %v, want only %s", got, other.Digest)
	}
	var freed int64
	for _, d := range p.Delete {
		if slices.Contains(pins, d) {
			t.Errorf("delete lists kept %s", d)
		}
	}
	for _, v := range p.Victims {
		freed += v.Freed
	}
	var left int64
	if err := s.store.Walk(context.Background(), func(i blobstore.Info) error { left += i.Size; return nil }); err != nil {
		t.Fatal(err)
	}
	if p.Freed != used-left || freed != p.Freed || !p.OverBudget {
		t.Errorf("plan freed %d (victims %d), over budget %v; want %d, over budget", p.Freed, freed, p.OverBudget, used-left)
	}
	if got := gauge(t, met, "registry_edge_evicted_images_total"); got != 1 {
		t.Errorf("evicted images = %v, want 1", got)
	}
	if got := gauge(t, met, "registry_edge_evicted_bytes_total"); got != float64(used-left) {
		t.Errorf("evicted bytes = %v, want %d", got, used-left)
	}
	if got := gauge(t, met, "registry_edge_store_bytes"); got != float64(left) {
		t.Errorf("store bytes = %v, want %d", got, left)
	}
}

// afterWalk is a store whose first Walk calls hook once it has walked.
type afterWalk struct {
	*blobstore.FS
	once sync.Once
	hook func()
}

func (s *afterWalk) Walk(ctx context.Context, fn func(blobstore.Info) error) error {
	err := s.FS.Walk(ctx, fn)
	s.once.Do(s.hook)
	return err
}

// A manifest stored and recorded while the plan walks the store (a device
// pulls the new version of an image) keeps the layers it shares with an
// image the plan evicts: they were deleted, and its tag then named a
// manifest whose layers were gone (offline, an image lost to the site).
func TestManifestRecordedDuringTheWalkKeepsItsLayers(t *testing.T) {
	s := newSite(t)
	base := s.blob(300_000)
	old := s.image("v1", 48*time.Hour, base)
	var cur ocispec.Descriptor
	store := &afterWalk{FS: s.store, hook: func() { cur = s.image("v2", 0, base) }}
	s.now = s.now.Add(time.Hour)
	p, err := gc.MakePlan(context.Background(), store, s.db, gc.Options{MaxSize: 1, Now: func() time.Time { return s.now }})
	if err != nil {
		t.Fatal(err)
	}
	if got := roots(p); !slices.Contains(got, old.Digest) {
		t.Fatalf("victims = %v, want the old image", got)
	}
	if err := gc.Apply(context.Background(), store, s.db, p, nil); err != nil {
		t.Fatal(err)
	}
	if !s.stored(cur.Digest) || !s.stored(base.Digest) {
		t.Errorf("after eviction: new manifest stored %v, its layer %v; want both", s.stored(cur.Digest), s.stored(base.Digest))
	}
	if s.stored(old.Digest) {
		t.Error("the old image was not evicted")
	}
}
