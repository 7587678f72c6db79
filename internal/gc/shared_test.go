package gc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/blobstore/objstore"
	"github.com/registry-edge/registry-edge/internal/gc"
	"github.com/registry-edge/registry-edge/internal/meta"
)

// replica is one registry-edge of several sharing a bucket: its own
// metadata, the bucket's content.
type replica struct {
	t      *testing.T
	bucket *objstore.Store
	db     *meta.DB
}

func sharedReplicas(t *testing.T, ids ...string) []*replica {
	t.Helper()
	bucket, err := objstore.New(inmemory.New(), objstore.Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var out []*replica
	for _, id := range ids {
		db, err := meta.Open(filepath.Join(t.TempDir(), "meta.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if err := db.Share(context.Background(), bucket, id); err != nil {
			t.Fatal(err)
		}
		out = append(out, &replica{t: t, bucket: bucket, db: db})
	}
	return out
}

func (r *replica) put(b []byte, mediaType string) ocispec.Descriptor {
	r.t.Helper()
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
	if err := r.bucket.Put(context.Background(), d, bytes.NewReader(b)); err != nil {
		r.t.Fatal(err)
	}
	return d
}

// image stores an image of one layer of n bytes and records it as served
// at servedAt (zero: not served, only stored).
func (r *replica) image(n int, servedAt time.Time) (man, layer ocispec.Descriptor) {
	r.t.Helper()
	ctx := context.Background()
	layer = r.put(bytes.Repeat([]byte{byte(n)}, n), ocispec.MediaTypeImageLayerGzip)
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: ocispec.DescriptorEmptyJSON, Layers: []ocispec.Descriptor{layer}}
	m.SchemaVersion = 2
	b, err := json.Marshal(m)
	if err != nil {
		r.t.Fatal(err)
	}
	man = r.put(b, ocispec.MediaTypeImageManifest)
	if err := r.db.PutManifest(ctx, repo, man.Digest, meta.Manifest{MediaType: man.MediaType, Size: man.Size}); err != nil {
		r.t.Fatal(err)
	}
	if !servedAt.IsZero() {
		if err := r.db.Touch(ctx, map[digest.Digest]time.Time{man.Digest: servedAt}); err != nil {
			r.t.Fatal(err)
		}
	}
	return man, layer
}

// The replica that evicts a shared bucket ranks images by what every
// replica served and builds closures from every replica's manifests; with
// MinIdle it spares content too recent for the others' access times to
// have arrived.
func TestSharedBucketEviction(t *testing.T) {
	rs := sharedReplicas(t, "evicts", "serves")
	owner, other := rs[0], rs[1]
	now := time.Now() // the upload time of everything below
	// The owner served old at upload; the other replica serves hot 40
	// minutes later, and stored fresh without serving it. The owner has
	// never seen hot or fresh.
	old, oldLayer := owner.image(300_000, now)
	hot, hotLayer := other.image(200_000, now.Add(40*time.Minute))
	fresh, freshLayer := other.image(100_000, time.Time{})
	plan := func(o gc.Options, at time.Time) *gc.Plan {
		t.Helper()
		o.Now = func() time.Time { return at }
		p, err := gc.MakePlan(context.Background(), owner.bucket, owner.db, o)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	// An hour on, with a 30 minute age limit: only hot was served since.
	p := plan(gc.Options{MaxAge: 30 * time.Minute}, now.Add(time.Hour))
	got := roots(p)
	slices.Sort(got)
	want := []digest.Digest{old.Digest, fresh.Digest}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("victims = %v, want %v (not %s, which the other replica served 20 minutes ago)", got, want, hot.Digest)
	}
	for _, d := range []digest.Digest{oldLayer.Digest, freshLayer.Digest} {
		if !slices.Contains(p.Delete, d) {
			t.Errorf("an evicted image's layer %s is kept: plan deletes %v", d, p.Delete)
		}
	}
	if slices.Contains(p.Delete, hotLayer.Digest) {
		t.Errorf("plan deletes the layer of %s", hot.Digest)
	}
	// The other replica's images are closures, not loose blobs.
	if p.Units != 3 {
		t.Errorf("units = %d, want 3 images", p.Units)
	}

	// Two minutes after upload, over budget and past a one minute age
	// limit: MinIdle spares everything stored or served in the last five.
	p = plan(gc.Options{MaxSize: 1 << 20, MaxAge: time.Minute, MinIdle: 5 * time.Minute}, now.Add(2*time.Minute))
	if len(p.Victims) != 0 {
		t.Errorf("victims within MinIdle = %v, want none", roots(p))
	}
	p = plan(gc.Options{MaxSize: 1 << 20, MaxAge: time.Minute}, now.Add(2*time.Minute))
	if len(p.Victims) != 2 {
		t.Errorf("victims without MinIdle = %v, want old and fresh", roots(p))
	}
}

// storingCache is the serving side of a replica: Evict first runs
// meanwhile (as a fill of the content could, just before), and it records
// what it was told to forget.
type storingCache struct {
	meanwhile func()
	forgot    []digest.Digest
}

func (*storingCache) FlushAccess(context.Context) error      { return nil }
func (c *storingCache) Forget(d digest.Digest)               { c.forgot = append(c.forgot, d) }
func (*storingCache) UsedSinceFlush() map[digest.Digest]bool { return nil }
func (c *storingCache) Evict(_ []digest.Digest, remove func() error) error {
	if c.meanwhile != nil {
		c.meanwhile()
		c.meanwhile = nil
	}
	return remove()
}

// A replica that does not evict forgets its records of what the evicting
// replica removed from the bucket: they were kept forever, and its access
// record, which it publishes whole every minute it serves something and
// the evicting replica reads at every plan, grew with every digest it had
// ever served. Content stored again meanwhile keeps its records.
func TestReplicaForgetsWhatAnotherEvicted(t *testing.T) {
	ctx := context.Background()
	rs := sharedReplicas(t, "evicts", "serves")
	owner, other := rs[0], rs[1]
	now := time.Now()
	const images = 40
	var mans, layers []ocispec.Descriptor
	for i := range images {
		served := now
		if i == images-1 {
			served = now.Add(50 * time.Minute) // the one still in use
		}
		m, l := other.image(1000+i, served)
		if err := other.db.Touch(ctx, map[digest.Digest]time.Time{l.Digest: served}); err != nil {
			t.Fatal(err)
		}
		mans, layers = append(mans, m), append(layers, l)
	}
	plan, err := gc.MakePlan(ctx, owner.bucket, owner.db, gc.Options{MaxAge: 30 * time.Minute, Now: func() time.Time { return now.Add(time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Victims) != images-1 {
		t.Fatalf("the evicting replica evicts %d images, want %d", len(plan.Victims), images-1)
	}
	if err := gc.Apply(ctx, owner.bucket, owner.db, plan, nil); err != nil {
		t.Fatal(err)
	}

	// The first victim is stored again just before the serving replica
	// forgets (a fill of another replica): its records stay.
	again, size := layers[0], 1000
	cache := &storingCache{meanwhile: func() {
		other.put(bytes.Repeat([]byte{byte(size)}, size), ocispec.MediaTypeImageLayerGzip)
	}}
	m := &gc.Maintainer{Store: owner.bucket, DB: other.db, Cache: cache}
	n, err := m.ForgetEvicted(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := 2*(images-1) - 1; n != want || len(cache.forgot) != want {
		t.Errorf("ForgetEvicted() = %d, forgot %d in memory; want %d (every evicted manifest and layer but the one stored again)", n, len(cache.forgot), want)
	}
	access, err := other.db.LocalAccessTimes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []digest.Digest{again.Digest, mans[images-1].Digest, layers[images-1].Digest}
	slices.Sort(want)
	got := slices.Sorted(maps.Keys(access))
	if !slices.Equal(got, want) {
		t.Errorf("access times kept for %d digests, want %d: the image in use and the layer stored again", len(got), len(want))
	}
	ds, err := other.db.ManifestDigests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || !ds[mans[images-1].Digest] {
		t.Errorf("%d manifest records, want 1: the image in use", len(ds))
	}
	// What it publishes next is as small; the evicting replica reads it.
	if err := other.db.Touch(ctx, map[digest.Digest]time.Time{mans[images-1].Digest: now.Add(55 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	all, err := owner.db.AccessTimes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(want) {
		t.Errorf("the evicting replica reads %d access times, want %d", len(all), len(want))
	}
	// Nothing more on a second run.
	if n, err := m.ForgetEvicted(ctx); err != nil || n != 0 {
		t.Errorf("second ForgetEvicted() = %d, %v; want 0, nil", n, err)
	}
}
