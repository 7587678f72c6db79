package meta

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/blobstore/objstore"
	"github.com/registry-edge/registry-edge/internal/errdef"
)

// twoReplicas returns two databases sharing one in-memory bucket.
func twoReplicas(t *testing.T) (a, b *DB, bucket *objstore.Store) {
	t.Helper()
	bucket, err := objstore.New(inmemory.New(), objstore.Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	a, _ = openTest(t)
	b, _ = openTest(t)
	t.Cleanup(func() { a.Close(); b.Close() })
	if err := a.Share(context.Background(), bucket, "replica-a"); err != nil {
		t.Fatal(err)
	}
	if err := b.Share(context.Background(), bucket, "replica-b"); err != nil {
		t.Fatal(err)
	}
	return a, b, bucket
}

func TestSharedRecordsReachOtherReplica(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b, bucket := twoReplicas(t)
	r := Repo{Registry: "registry.example", Name: "team/app"}
	other := Repo{Registry: "registry.example", Name: "team/other"}
	man := digest.FromString("manifest")
	layer := digest.FromString("layer")

	// What A learns, B finds.
	if err := a.PutManifest(ctx, r, man, Manifest{MediaType: ocispec.MediaTypeImageManifest, Size: 42}); err != nil {
		t.Fatal(err)
	}
	if err := a.Link(ctx, r, layer); err != nil {
		t.Fatal(err)
	}
	child := digest.FromString("child manifest")
	if err := a.Trust(ctx, "release", "rev1", man, []digest.Digest{child}, []digest.Digest{layer}); err != nil {
		t.Fatal(err)
	}
	unsigned := digest.FromString("unsigned manifest")
	if err := a.PutVerdict(ctx, "release", "rev1", man, Verdict{OK: true, Signer: "key"}); err != nil {
		t.Fatal(err)
	}
	if err := a.PutVerdict(ctx, "release", "rev1", unsigned, Verdict{OK: false, Reason: "no_signature", Repo: "central/app"}); err != nil {
		t.Fatal(err)
	}
	if v, err := b.Verdict(ctx, "release", "rev1", man, "central/app"); err != nil || !v.OK || v.Signer != "key" {
		t.Errorf("B: verdict of the signed manifest = %+v, %v; want A's positive one", v, err)
	}
	// A negative verdict may change (a signature can be added): B finds
	// it out itself.
	if v, err := b.Verdict(ctx, "release", "rev1", unsigned, "central/app"); !IsNotFound(err) {
		t.Errorf("B: verdict of the unsigned manifest = %+v, %v; want not found", v, err)
	}
	got, err := b.Manifest(ctx, man)
	if err != nil {
		t.Fatal(err)
	}
	if got != (Manifest{MediaType: ocispec.MediaTypeImageManifest, Size: 42}) {
		t.Errorf("B's manifest record = %+v", got)
	}
	for _, d := range []digest.Digest{man, layer} {
		if ok, err := b.Linked(ctx, r, d); err != nil || !ok {
			t.Errorf("B: %s linked to %s = %v, %v; want true", d, r, ok, err)
		}
		if ok, err := b.Linked(ctx, other, d); err != nil || ok {
			t.Errorf("B: %s linked to %s = %v, %v; want false (another repository)", d, other, ok, err)
		}
	}
	// Trust keeps its kind: a trusted blob is not a trusted manifest.
	for _, c := range []struct {
		d    digest.Digest
		kind TrustKind
		want bool
	}{
		{child, TrustManifest, true}, {child, TrustBlob, false},
		{layer, TrustBlob, true}, {layer, TrustManifest, false},
	} {
		if ok, err := b.Trusted(ctx, "release", "rev1", c.kind, c.d); err != nil || ok != c.want {
			t.Errorf("B: %s trusted as %s = %v, %v; want %v", c.d, c.kind, ok, err, c.want)
		}
		if ok, err := b.Trusted(ctx, "release", "rev2", c.kind, c.d); err != nil || ok {
			t.Errorf("B: %s trusted as %s under another revision = %v, %v; want false", c.d, c.kind, ok, err)
		}
	}
	if _, err := b.Manifest(ctx, layer); !IsNotFound(err) {
		t.Errorf("B: manifest record of a blob: err = %v, want not found", err)
	}

	// B kept what it read: it still knows it with the bucket gone.
	if err := bucket.DeleteRecord(ctx, "manifests"); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"links", "trust", "verdicts"} {
		if err := bucket.DeleteRecord(ctx, dir); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Manifest(ctx, man); err != nil {
		t.Errorf("B lost its copy of the manifest record: %v", err)
	}
	if ok, _ := b.Linked(ctx, r, layer); !ok {
		t.Error("B lost its copy of the link")
	}
	if ok, _ := b.Trusted(ctx, "release", "rev1", TrustBlob, layer); !ok {
		t.Error("B lost its copy of the trust record")
	}
	if v, _ := b.Verdict(ctx, "release", "rev1", man, "central/app"); !v.OK {
		t.Error("B lost its copy of the verdict")
	}
}

func TestSharedDeltas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b, _ := twoReplicas(t)
	layer := digest.FromString("layer v2")
	r := Repo{Registry: "registry.example", Name: "team/app"}
	recA := DeltaRecord{Repo: r, Descriptor: ocispec.Descriptor{MediaType: "application/x.delta", Digest: digest.FromString("delta 1"), Size: 10}}
	recB := DeltaRecord{Repo: r, Descriptor: ocispec.Descriptor{MediaType: "application/x.delta", Digest: digest.FromString("delta 2"), Size: 20}}
	if err := a.AddDelta(ctx, layer, recA); err != nil {
		t.Fatal(err)
	}
	if err := b.AddDelta(ctx, layer, recB); err != nil {
		t.Fatal(err)
	}
	got, err := b.Deltas(ctx, layer)
	if err != nil {
		t.Fatal(err)
	}
	// B's own first, then A's; each once.
	if diff := cmp.Diff([]DeltaRecord{recB, recA}, got); diff != "" {
		t.Errorf("B's deltas (-want +got):\n%s", diff)
	}
	if err := a.Forget(ctx, []digest.Digest{layer}); err != nil {
		t.Fatal(err)
	}
	got, err = b.Deltas(ctx, layer)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]DeltaRecord{recB}, got); diff != "" {
		t.Errorf("B's deltas after A evicted the layer (-want +got):\n%s", diff)
	}
}

func TestSharedAccessAndManifestDigests(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b, _ := twoReplicas(t)
	r := Repo{Registry: "registry.example", Name: "team/app"}
	m1, m2, m3 := digest.FromString("m1"), digest.FromString("m2"), digest.FromString("m3")
	for db, d := range map[*DB]digest.Digest{a: m1, b: m2} {
		if err := db.PutManifest(ctx, r, d, Manifest{MediaType: ocispec.MediaTypeImageManifest, Size: 1}); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Unix(1_700_000_000, 0)
	if err := a.Touch(ctx, map[digest.Digest]time.Time{m1: t0.Add(time.Hour), m2: t0.Add(3 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := b.Touch(ctx, map[digest.Digest]time.Time{m2: t0.Add(2 * time.Hour), m3: t0}); err != nil {
		t.Fatal(err)
	}
	// The evicting replica sees the latest access any replica published.
	got, err := b.AccessTimes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[digest.Digest]time.Time{m1: t0.Add(time.Hour), m2: t0.Add(3 * time.Hour), m3: t0}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("B's access times (-want +got):\n%s", diff)
	}
	ds, err := b.ManifestDigests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[digest.Digest]bool{m1: true, m2: true}, ds); diff != "" {
		t.Errorf("B's manifest digests (-want +got):\n%s", diff)
	}
	// Evicted by B: gone for A's collector too.
	if err := b.Forget(ctx, []digest.Digest{m1}); err != nil {
		t.Fatal(err)
	}
	ds, err = a.ManifestDigests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[digest.Digest]bool{m1: true, m2: true}, ds); diff != "" {
		// A still holds its own local record of m1 (its own content
		// view); the shared record is gone, which is what B's Forget owns.
		t.Errorf("A's manifest digests (-want +got):\n%s", diff)
	}
	if _, err := b.shared.GetRecord(ctx, sharedManifestKey(m1)); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("shared record of an evicted manifest: err = %v, want not found", err)
	}
}

func TestShareRejectsBadReplicaID(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t)
	defer db.Close()
	for _, id := range []string{"", "a/b", "..", "a b", "é"} {
		if err := db.Share(context.Background(), nil, id); !errors.Is(err, errdef.ErrInvalid) {
			t.Errorf("Share(%q) = %v, want ErrInvalid", id, err)
		}
	}
}

// Two processes with one replica id overwrite each other's access times:
// the one that finds its record written by the other says so, and stops
// writing it. A restart of one replica (a new process, its old record) is
// not that.
func TestSharedReplicaIDCollision(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bucket, err := objstore.New(inmemory.New(), objstore.Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	open := func() *DB {
		db, _ := openTest(t)
		t.Cleanup(func() { db.Close() })
		if err := db.Share(context.Background(), bucket, "edge-1"); err != nil {
			t.Fatal(err)
		}
		return db
	}
	touch := func(db *DB, s string) error {
		return db.Touch(ctx, map[digest.Digest]time.Time{digest.FromString(s): time.Unix(1_700_000_000, 0)})
	}
	first := open()
	if err := touch(first, "a"); err != nil {
		t.Fatal(err)
	}
	restarted := open() // takes the record over on its first write
	if err := touch(restarted, "b"); err != nil {
		t.Fatalf("first publish of a restarted replica: %v", err)
	}
	if err := touch(restarted, "c"); err != nil {
		t.Fatalf("second publish of a restarted replica: %v", err)
	}
	// first is still running: a collision.
	err = touch(first, "d")
	if !errors.Is(err, errdef.ErrAlreadyExists) || !strings.Contains(err.Error(), `"edge-1"`) {
		t.Fatalf("publish after another process took the id: %v, want an error naming edge-1", err)
	}
	var rec sharedAccess
	if _, err := restarted.getShared(ctx, sharedAccessKey("edge-1"), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Instance != restarted.instance {
		t.Error("the colliding process overwrote the other's access record")
	}
	// The other process, which finds its own record, learns of the
	// collision from first's marker: it keeps publishing and says so too.
	err = touch(restarted, "e")
	if !errors.Is(err, errdef.ErrAlreadyExists) || !strings.Contains(err.Error(), `"edge-1"`) {
		t.Fatalf("publish of the other process after the collision was found: %v, want an error naming edge-1", err)
	}
	rec = sharedAccess{}
	if _, err := restarted.getShared(ctx, sharedAccessKey("edge-1"), &rec); err != nil {
		t.Fatal(err)
	}
	if _, ok := rec.Times[digest.FromString("e")]; !ok || rec.Instance != restarted.instance {
		t.Error("the other process stopped publishing its access times")
	}
	// A marker older than collisionTTL (the collision is over: the
	// process that found it no longer writes it) counts no more.
	old := sharedCollision{Instance: first.instance, Other: restarted.instance, Written: time.Now().Add(-collisionTTL - time.Minute)}
	if err := first.putShared(ctx, sharedCollisionKey("edge-1"), old); err != nil {
		t.Fatal(err)
	}
	if err := touch(restarted, "f"); err != nil {
		t.Errorf("publish with an expired collision marker: %v", err)
	}
	// A fresh marker about another instance (the predecessor of a process
	// restarted after the fix) is not this one's collision.
	other := sharedCollision{Instance: first.instance, Other: "an-earlier-process", Written: time.Now()}
	if err := first.putShared(ctx, sharedCollisionKey("edge-1"), other); err != nil {
		t.Fatal(err)
	}
	if err := touch(restarted, "g"); err != nil {
		t.Errorf("publish with a marker about another process: %v", err)
	}
}

// unreachableBucket is a shared store that counts its reads and can fail
// them all.
type unreachableBucket struct {
	gets atomic.Int64
	down atomic.Bool
}

func (s *unreachableBucket) GetRecord(context.Context, string) ([]byte, error) {
	s.gets.Add(1)
	if s.down.Load() {
		return nil, errors.New("bucket unreachable")
	}
	return nil, errdef.ErrNotFound
}
func (s *unreachableBucket) PutRecord(context.Context, string, []byte) error       { return nil }
func (s *unreachableBucket) DeleteRecord(context.Context, string) error            { return nil }
func (s *unreachableBucket) ListRecords(context.Context, string) ([]string, error) { return nil, nil }

// A repository's negative verdict is found locally, before the shared
// store (which holds positive ones only): no bucket read for it, and it
// holds with the bucket unreachable.
func TestNegativeVerdictIsFoundWithoutTheBucket(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, _ := openTest(t)
	defer db.Close()
	bucket := &unreachableBucket{}
	if err := db.Share(context.Background(), bucket, "replica-a"); err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("unsigned")
	if err := db.PutVerdict(ctx, "fleet", "rev1", d, Verdict{Reason: "no_signature", Repo: "central/app", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	before := bucket.gets.Load()
	for range 10 {
		if v, err := db.Verdict(ctx, "fleet", "rev1", d, "central/app"); err != nil || v.OK {
			t.Fatalf("Verdict = %+v, %v; want the negative verdict", v, err)
		}
	}
	if n := bucket.gets.Load() - before; n != 0 {
		t.Errorf("%d bucket reads for 10 lookups of a local negative verdict, want 0", n)
	}
	bucket.down.Store(true)
	if v, err := db.Verdict(ctx, "fleet", "rev1", d, "central/app"); err != nil || v.Reason != "no_signature" {
		t.Errorf("bucket unreachable: Verdict = %+v, %v; want the local negative verdict", v, err)
	}
}

// The same delta blob published with other bases (from another old image
// with the same layer contents) is two records in the bucket, and a replica
// that recorded neither sees both; a version from before the bases were in
// the key (which reads any <alg>.<hex>.<...> name, isSharedDelta) reads them
// too.
func TestSharedDeltaWithOtherBases(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b, bucket := twoReplicas(t)
	layer := digest.FromString("layer v2")
	r := Repo{Registry: "registry.example", Name: "team/app"}
	blob := digest.FromString("the delta blob")
	rec := func(base string) DeltaRecord {
		return DeltaRecord{Repo: r, Descriptor: ocispec.Descriptor{MediaType: "application/x.delta", Digest: blob, Size: 10,
			Annotations: map[string]string{"org.example.delta.base": base, "org.example.delta.algorithm": "xdelta3"}}}
	}
	rec1, rec2 := rec(digest.FromString("old layer of image 1").String()), rec(digest.FromString("old layer of image 2").String())
	if err := a.AddDelta(ctx, layer, rec1); err != nil {
		t.Fatal(err)
	}
	if err := a.AddDelta(ctx, layer, rec2); err != nil {
		t.Fatal(err)
	}
	got, err := b.Deltas(ctx, layer)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !slices.ContainsFunc(got, func(x DeltaRecord) bool { return cmp.Equal(x, rec1) }) || !slices.ContainsFunc(got, func(x DeltaRecord) bool { return cmp.Equal(x, rec2) }) {
		t.Errorf("B's deltas: %+v, want both records of the blob (one per bases)", got)
	}
	names, err := bucket.ListRecords(ctx, sharedDeltasDir(layer))
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 2 {
		t.Errorf("records in the bucket: %q, want 2", names)
	}
	for _, n := range names {
		if !isSharedDelta(n) {
			t.Errorf("record %q is not read by the versions before it", n)
		}
	}
	// The same record, written again (by A or by another replica), is still one.
	if err := b.AddDelta(ctx, layer, rec1); err != nil {
		t.Fatal(err)
	}
	if names, _ := bucket.ListRecords(ctx, sharedDeltasDir(layer)); len(names) != 2 {
		t.Errorf("records after B wrote one of them again: %q, want 2", names)
	}
	// A record an old version wrote (no bases in its name) is read too.
	old := rec(digest.FromString("old layer of image 3").String())
	raw, _ := json.Marshal(old)
	if err := bucket.PutRecord(ctx, sharedDeltasDir(layer)+"/"+string(blob.Algorithm())+"."+blob.Encoded()+"."+name(r.String()), raw); err != nil {
		t.Fatal(err)
	}
	c, _ := openTest(t)
	t.Cleanup(func() { c.Close() })
	if err := c.Share(context.Background(), bucket, "replica-c"); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Deltas(ctx, layer); err != nil || len(got) != 3 {
		t.Errorf("C's deltas: %+v, %v; want 3", got, err)
	}
}

// A bucket's shared records carry their format: a replica records it in a
// bucket without it, and a replica of an older binary refuses, at start, a
// bucket a newer one recorded a newer format in, and leaves it as it is
// (it would misread, miss or overwrite records it does not know).
func TestSharedFormat(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, _, bucket := twoReplicas(t)
	b, err := bucket.GetRecord(ctx, sharedFormatKey)
	if err != nil || string(b) != `{"format":1}` {
		t.Fatalf("format record of a new bucket: %q, %v; want {\"format\":1}", b, err)
	}
	share := func(id string) error {
		db, _ := openTest(t)
		t.Cleanup(func() { db.Close() })
		return db.Share(ctx, bucket, id)
	}
	if err := bucket.PutRecord(ctx, sharedFormatKey, []byte(`{"format":2}`)); err != nil {
		t.Fatal(err)
	}
	if err := share("replica-c"); err == nil || !strings.Contains(err.Error(), "format 2, written by a newer registry-edge") {
		t.Errorf("Share of a bucket of format 2: %v, want a refusal naming the newer format", err)
	}
	if b, _ := bucket.GetRecord(ctx, sharedFormatKey); string(b) != `{"format":2}` {
		t.Errorf("format record after the refusal: %q, want format 2 kept", b)
	}
	if err := bucket.PutRecord(ctx, sharedFormatKey, []byte(`not json`)); err != nil {
		t.Fatal(err)
	}
	if err := share("replica-d"); err == nil || !strings.Contains(err.Error(), "not a store format") {
		t.Errorf("Share of a bucket with a damaged format record: %v, want a refusal", err)
	}
	if err := bucket.DeleteRecord(ctx, sharedFormatKey); err != nil {
		t.Fatal(err)
	}
	if err := share("replica-e"); err != nil {
		t.Errorf("Share of a bucket without the format record (written by binaries before it): %v", err)
	}
	if b, err := bucket.GetRecord(ctx, sharedFormatKey); err != nil || string(b) != `{"format":1}` {
		t.Errorf("format record after a replica started on a bucket without it: %q, %v", b, err)
	}
}
