package meta

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

func openTest(t *testing.T) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "meta.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return db, path
}

func TestTagsSurviveReopen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, path := openTest(t)
	r := Repo{Registry: "docker.io", Name: "library/alpine"}
	other := Repo{Registry: "docker.io", Name: "library/alpine/sub"}
	e := TagEntry{Digest: digest.FromString("a"), MediaType: "application/vnd.oci.image.index.v1+json", Size: 10, FetchedAt: time.Unix(100, 0).UTC()}
	for _, tag := range []string{"3.20", "latest", "3.19"} {
		if err := db.PutTag(ctx, r, tag, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.PutTag(ctx, other, "x", e); err != nil {
		t.Fatal(err)
	}
	db.Close()

	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got, err := db.Tag(ctx, r, "latest")
	if err != nil || !cmp.Equal(got, e) {
		t.Fatalf("Tag() = %+v, %v, want %+v", got, err, e)
	}
	tags, err := db.Tags(ctx, r)
	if err != nil || !cmp.Equal(tags, []string{"3.19", "3.20", "latest"}) {
		t.Errorf("Tags() = %v, %v; another repository's tags must not appear", tags, err)
	}
	if err := db.DeleteTag(ctx, r, "latest"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Tag(ctx, r, "latest"); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("Tag() after delete error = %v, want ErrNotFound", err)
	}
}

func TestLinksAreRepositoryScoped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, _ := openTest(t)
	defer db.Close()
	d := digest.FromString("m")
	a := Repo{Registry: "ghcr.io", Name: "org/a"}
	b := Repo{Registry: "ghcr.io", Name: "org/b"}
	if err := db.PutManifest(ctx, a, d, Manifest{MediaType: "x", Size: 1}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := db.Linked(ctx, a, d); !ok {
		t.Error("PutManifest did not link the manifest to its repository")
	}
	if ok, _ := db.Linked(ctx, b, d); ok {
		t.Error("content linked to org/a is linked to org/b too")
	}
	if err := db.Link(ctx, b, d); err != nil {
		t.Fatal(err)
	}
	if ok, _ := db.Linked(ctx, b, d); !ok {
		t.Error("Link() had no effect")
	}
	if m, err := db.Manifest(ctx, d); err != nil || m.MediaType != "x" {
		t.Errorf("Manifest() = %+v, %v", m, err)
	}
}

func TestSecondOpenFailsClearly(t *testing.T) {
	t.Parallel()
	db, path := openTest(t)
	defer db.Close()
	if testing.Short() {
		t.Skip("waits for the lock timeout")
	}
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second Open of a database in use: error = %v, want a clear lock error", err)
	}
}

// Trust recorded without its kind (before TrustKind) is dropped at Open: it
// took a digest trusted as a blob for a trusted manifest too.
func TestTrustWithoutKindIsDropped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, path := openTest(t)
	d := digest.FromString("unsigned manifest")
	err := db.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketTrustedV1)
		if err != nil {
			return err
		}
		return b.Put(sigKey("fleet", "rev1", d), []byte(`{"via":"`+string(d)+`"}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, kind := range []TrustKind{TrustManifest, TrustBlob} {
		if ok, err := db.Trusted(ctx, "fleet", "rev1", kind, d); err != nil || ok {
			t.Errorf("Trusted(%s) = %v, %v; want false", kind, ok, err)
		}
	}
	err = db.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketTrustedV1) != nil {
			t.Error("the old trust bucket is still there")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// RepoManifests lists the manifests linked to one repository, by tag or by
// digest, and neither its blobs nor another repository's manifests.
func TestRepoManifests(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, _ := openTest(t)
	defer db.Close()
	r := Repo{Registry: "docker.io", Name: "team/app"}
	sub := Repo{Registry: "docker.io", Name: "team/app/sub"}
	m1, m2, other, blob := digest.FromString("m1"), digest.FromString("m2"), digest.FromString("other"), digest.FromString("blob")
	for _, c := range []struct {
		r Repo
		d digest.Digest
	}{{r, m1}, {r, m2}, {sub, other}} {
		if err := db.PutManifest(ctx, c.r, c.d, Manifest{MediaType: "application/vnd.oci.image.manifest.v1+json", Size: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Link(ctx, r, blob); err != nil {
		t.Fatal(err)
	}
	got, err := db.RepoManifests(ctx, r)
	want := []digest.Digest{m1, m2}
	slices.Sort(want)
	if err != nil || !cmp.Equal(got, want) {
		t.Errorf("RepoManifests() = %v, %v; want %v", got, err, want)
	}
}

// LinkedInRegistry finds content linked to any repository of a registry, in
// a database from before its index too, and forgets it with its links.
func TestLinkedInRegistry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, path := openTest(t)
	r := Repo{Registry: "ghcr.io", Name: "org/app"}
	d, other := digest.FromString("layer"), digest.FromString("other")
	if err := db.Link(ctx, r, d); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		for _, c := range []struct {
			reg  string
			d    digest.Digest
			want bool
		}{{"ghcr.io", d, true}, {"docker.io", d, false}, {"ghcr.io", other, false}} {
			if got, err := db.LinkedInRegistry(ctx, c.reg, c.d); err != nil || got != c.want {
				t.Errorf("%s: LinkedInRegistry(%s, %s) = %v, %v; want %v", when, c.reg, c.d, got, err, c.want)
			}
		}
	}
	check("linked")
	// A database from before the index: it is filled at Open.
	if err := db.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketRegistryLinks) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	check("reopened")
	if err := db.Forget(ctx, []digest.Digest{d}); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.LinkedInRegistry(ctx, "ghcr.io", d); got {
		t.Error("LinkedInRegistry after Forget = true")
	}
}

// A negative verdict is one repository's (its signatures were looked at);
// another repository's negative verdict for the same digest does not
// replace it, and a positive verdict holds in every repository.
func TestNegativeVerdictsAreKeptPerRepository(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, _ := openTest(t)
	defer db.Close()
	d := digest.FromString("copied, unsigned")
	at := time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)
	for i, repo := range []string{"central/a", "central/b"} {
		v := Verdict{OK: false, Reason: "no_signature", Repo: repo, At: at.Add(time.Duration(i) * time.Hour)}
		if err := db.PutVerdict(ctx, "fleet", "rev1", d, v); err != nil {
			t.Fatal(err)
		}
	}
	for i, repo := range []string{"central/a", "central/b"} {
		v, err := db.Verdict(ctx, "fleet", "rev1", d, repo)
		if err != nil || v.OK || v.Repo != repo || !v.At.Equal(at.Add(time.Duration(i)*time.Hour)) {
			t.Errorf("Verdict(%s) = %+v, %v; want its own negative verdict", repo, v, err)
		}
	}
	for _, repo := range []string{"central/c", ""} {
		if v, err := db.Verdict(ctx, "fleet", "rev1", d, repo); !errors.Is(err, errdef.ErrNotFound) {
			t.Errorf("Verdict(%q) = %+v, %v; want not found", repo, v, err)
		}
	}
	if err := db.PutVerdict(ctx, "fleet", "rev1", d, Verdict{OK: true, Signer: "key", Repo: "central/c", At: at}); err != nil {
		t.Fatal(err)
	}
	for _, repo := range []string{"central/a", "central/b", "central/c", ""} {
		if v, err := db.Verdict(ctx, "fleet", "rev1", d, repo); err != nil || !v.OK {
			t.Errorf("Verdict(%q) after a positive one = %+v, %v; want the positive one", repo, v, err)
		}
	}
	if v, err := db.Verdict(ctx, "fleet", "rev2", d, "central/a"); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("another revision: %+v, %v; want not found", v, err)
	}
}

// A negative verdict recorded before negative verdicts had keys of their
// own is still its repository's.
func TestLegacyNegativeVerdict(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, _ := openTest(t)
	defer db.Close()
	d := digest.FromString("unsigned")
	if err := put(db.db, bucketVerdicts, sigKey("fleet", "rev1", d), Verdict{Reason: "no_signature", Repo: "central/a"}); err != nil {
		t.Fatal(err)
	}
	if v, err := db.Verdict(ctx, "fleet", "rev1", d, "central/a"); err != nil || v.OK || v.Reason != "no_signature" {
		t.Errorf("its repository: %+v, %v; want the negative verdict", v, err)
	}
	if v, err := db.Verdict(ctx, "fleet", "rev1", d, "central/b"); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("another repository: %+v, %v; want not found", v, err)
	}
	newer := Verdict{Reason: "no_signature", Message: "newer", Repo: "central/a"}
	if err := db.PutVerdict(ctx, "fleet", "rev1", d, newer); err != nil {
		t.Fatal(err)
	}
	if v, err := db.Verdict(ctx, "fleet", "rev1", d, "central/a"); err != nil || v.Message != "newer" {
		t.Errorf("after a newer one: %+v, %v; want the newer one", v, err)
	}
}

// A meta.db shorter than bbolt's initial pages (a first start that ran out
// of disk space) holds nothing: it is made again instead of faulting every
// later start (SIGBUS in bbolt's mmap, which no recover catches).
func TestTornInitIsMadeAgain(t *testing.T) {
	t.Parallel()
	db, good := openTest(t)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	torn := filepath.Join(t.TempDir(), "meta.db")
	if err := os.WriteFile(torn, b[:2*os.Getpagesize()], 0o600); err != nil {
		t.Fatal(err)
	}
	db, err = Open(torn)
	if err != nil {
		t.Fatalf("Open of a torn initialization: %v", err)
	}
	defer db.Close()
	if err := db.PutTag(context.Background(), Repo{Registry: "central", Name: "app"}, "v1", TagEntry{Digest: digest.FromString("m"), FetchedAt: time.Now()}); err != nil {
		t.Errorf("the database made again does not take writes: %v", err)
	}
}

// A database made with pages smaller than the opening machine's (made on
// a 4 KiB page kernel, opened on a 16 or 64 KiB one; here: made with 1 KiB
// pages) is not taken for a torn one: the page size is read from the file.
func TestSmallPageDatabaseIsKept(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "meta.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{PageSize: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := removeTornInit(path); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(path)
	if err != nil || after.Size() != before.Size() {
		t.Fatalf("a whole %d-byte database of 1 KiB pages was taken for a torn one: %v", before.Size(), err)
	}
	if db, err = bolt.Open(path, 0o600, nil); err != nil {
		t.Fatal(err)
	}
	db.Close()
}

// The same delta blob published twice with other bases (from two old
// images with the same layer contents) is two records: a site holds the
// bases of one of them, whichever was recorded last.
func TestSameDeltaWithOtherBasesIsKept(t *testing.T) {
	db, _ := openTest(t)
	ctx := context.Background()
	layer, blob := digest.FromString("layer"), digest.FromString("delta")
	repo := Repo{Registry: "central.test", Name: "app"}
	rec := func(bases string) DeltaRecord {
		return DeltaRecord{Repo: repo, Descriptor: ocispec.Descriptor{Digest: blob, Size: 10, Annotations: map[string]string{"bases": bases}}}
	}
	for _, r := range []DeltaRecord{rec("held"), rec("other"), rec("other")} {
		if err := db.AddDelta(ctx, layer, r); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := db.Deltas(ctx, layer)
	if err != nil {
		t.Fatal(err)
	}
	var bases []string
	for _, r := range recs {
		bases = append(bases, r.Descriptor.Annotations["bases"])
	}
	if !slices.Equal(bases, []string{"other", "held"}) {
		t.Errorf("records' bases = %q, want [other held]", bases)
	}
}

// Verdicts and trust go with their content: a mirror that verifies
// thousands of images a month kept ~1 KiB of records for each, forever.
// What another manifest still covers, and what is still stored, stays.
func TestForgetPrunesVerdictsAndTrust(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, _ := openTest(t)
	defer db.Close()
	gone, kept := digest.FromString("evicted image"), digest.FromString("stored image")
	goneLayer, sharedLayer, child := digest.FromString("its layer"), digest.FromString("shared layer"), digest.FromString("its child")
	// A layer the devices already had: never stored here, never forgotten
	// itself, its trust goes with the manifest that covered it.
	notStored := digest.FromString("a layer never stored")
	at := time.Date(2026, 11, 25, 1, 0, 0, 0, time.UTC)
	for _, rev := range []string{"rev1", "rev2"} {
		for _, d := range []digest.Digest{gone, kept} {
			if err := db.PutVerdict(ctx, "fleet", rev, d, Verdict{OK: true, Signer: "key", At: at}); err != nil {
				t.Fatal(err)
			}
			if err := db.PutVerdict(ctx, "fleet", rev, d, Verdict{Reason: "no_signature", Repo: "central/copy", At: at}); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.Trust(ctx, "fleet", rev, gone, []digest.Digest{child}, []digest.Digest{goneLayer, sharedLayer, notStored}); err != nil {
			t.Fatal(err)
		}
		if err := db.Trust(ctx, "fleet", rev, kept, nil, []digest.Digest{sharedLayer}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Forget(ctx, []digest.Digest{gone, goneLayer, child}); err != nil {
		t.Fatal(err)
	}
	for _, rev := range []string{"rev1", "rev2"} {
		for _, repo := range []string{"", "central/copy"} {
			if v, err := db.Verdict(ctx, "fleet", rev, gone, repo); !errors.Is(err, errdef.ErrNotFound) {
				t.Errorf("%s: verdict of the forgotten manifest for %q = %+v, %v; want not found", rev, repo, v, err)
			}
		}
		if v, err := db.Verdict(ctx, "fleet", rev, kept, ""); err != nil || !v.OK {
			t.Errorf("%s: verdict of the stored manifest = %+v, %v; want it kept", rev, v, err)
		}
		if v, err := db.Verdict(ctx, "fleet", rev, kept, "central/copy"); err != nil || !v.OK {
			t.Errorf("%s: verdict of the stored manifest in central/copy = %+v, %v; want the positive one", rev, v, err)
		}
		for _, c := range []struct {
			kind TrustKind
			d    digest.Digest
			want bool
		}{{TrustBlob, goneLayer, false}, {TrustManifest, child, false}, {TrustBlob, notStored, false}, {TrustBlob, sharedLayer, true}} {
			if ok, err := db.Trusted(ctx, "fleet", rev, c.kind, c.d); err != nil || ok != c.want {
				t.Errorf("%s: Trusted(%s %s) = %v, %v; want %v", rev, c.kind, c.d, ok, err, c.want)
			}
		}
	}
	var left int
	db.db.View(func(tx *bolt.Tx) error {
		left = tx.Bucket(bucketVerdicts).Stats().KeyN + tx.Bucket(bucketTrusted).Stats().KeyN
		return nil
	})
	if want := 2*2 + 2; left != want { // kept's two verdicts and the shared layer's trust, per revision
		t.Errorf("%d verdict and trust records left, want %d", left, want)
	}
}

// Trust recorded before its key named the covering manifest still counts.
func TestTrustWithoutViaInItsKeyCounts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, _ := openTest(t)
	defer db.Close()
	d, other := digest.FromString("layer"), digest.FromString("layer trusted as a manifest only")
	err := db.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTrusted).Put(trustPrefix("fleet", "rev1", TrustBlob, d), []byte(`{"via":"sha256:0"}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Trust(ctx, "fleet", "rev1", digest.FromString("index"), []digest.Digest{other}, nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		kind TrustKind
		d    digest.Digest
		want bool
	}{{TrustBlob, d, true}, {TrustManifest, d, false}, {TrustManifest, other, true}, {TrustBlob, other, false}} {
		if ok, err := db.Trusted(ctx, "fleet", "rev1", c.kind, c.d); err != nil || ok != c.want {
			t.Errorf("Trusted(%s %s) = %v, %v; want %v", c.kind, c.d, ok, err, c.want)
		}
	}
	if ok, _ := db.Trusted(ctx, "fleet", "rev2", TrustBlob, d); ok {
		t.Error("trusted under another revision")
	}
}

// Forgetting a batch of evicted content reads the records that name it,
// not every record: on a mirror of 20,000 images each batch read all the
// links, tags, referrers lists, verdicts and trust (150 ms per batch of 64
// digests, the write lock held), and an eviction of thousands of images
// took minutes. What it costs must not grow with the rest of the database
// (measured in allocations: decoding each tag's record allocated).
func TestForgetDoesNotReadEveryRecord(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t)
	defer db.Close()
	db.db.NoSync = true // only what Forget reads matters here
	record := func(i int) digest.Digest {
		r := Repo{Registry: "central.test", Name: fmt.Sprintf("org/app-%d", i%50)}
		d, layer := digest.FromString(fmt.Sprint("manifest ", i)), digest.FromString(fmt.Sprint("layer ", i))
		for _, err := range []error{
			db.PutManifest(ctx, r, d, Manifest{MediaType: ocispec.MediaTypeImageManifest, Size: 1}),
			db.Link(ctx, r, layer),
			db.PutTag(ctx, r, fmt.Sprint("v", i), TagEntry{Digest: d, MediaType: ocispec.MediaTypeImageManifest, Size: 1}),
			db.PutVerdict(ctx, "fleet", "rev1", d, Verdict{OK: true, Signer: "key"}),
			db.Trust(ctx, "fleet", "rev1", d, nil, []digest.Digest{layer}),
		} {
			if err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	const others = 2000
	for i := range others {
		record(i)
	}
	gone := record(others)
	allocs := testing.AllocsPerRun(1, func() {
		if err := db.Forget(ctx, []digest.Digest{gone}); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > others/4 {
		t.Errorf("Forget of one digest allocated %.0f times with %d other images recorded: it reads every record", allocs, others)
	}
	if tags, _ := db.Tags(ctx, Repo{Registry: "central.test", Name: fmt.Sprintf("org/app-%d", others%50)}); slices.Contains(tags, fmt.Sprint("v", others)) {
		t.Error("the forgotten image's tag is still there")
	}
}

// A database from before the digest index gets one at Open, and what its
// records name is forgotten; a tag that moved to other content stays.
func TestForgetWithAnIndexBuiltAtOpen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, path := openTest(t)
	r := Repo{Registry: "central.test", Name: "org/app"}
	gone, stays, layer, list := digest.FromString("gone"), digest.FromString("stays"), digest.FromString("layer"), digest.FromString("list")
	for _, err := range []error{
		db.PutManifest(ctx, r, gone, Manifest{MediaType: ocispec.MediaTypeImageManifest}),
		db.PutManifest(ctx, r, stays, Manifest{MediaType: ocispec.MediaTypeImageManifest}),
		db.Link(ctx, r, layer),
		db.PutTag(ctx, r, "latest", TagEntry{Digest: gone}),
		db.PutTag(ctx, r, "moved", TagEntry{Digest: gone}),
		db.PutTag(ctx, r, "moved", TagEntry{Digest: stays}),
		db.PutReferrers(ctx, r, gone, Referrers{Digest: list}),
		db.PutReferrers(ctx, r, stays, Referrers{Digest: list}),
		db.PutVerdict(ctx, "fleet", "rev1", gone, Verdict{OK: true}),
		db.Trust(ctx, "fleet", "rev1", gone, nil, []digest.Digest{layer}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := db.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketByDigest) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Forget(ctx, []digest.Digest{gone, layer}); err != nil {
		t.Fatal(err)
	}
	if tags, _ := db.Tags(ctx, r); !slices.Equal(tags, []string{"moved"}) {
		t.Errorf("tags after Forget: %q, want the one that moved", tags)
	}
	if ok, _ := db.Linked(ctx, r, layer); ok {
		t.Error("the forgotten layer is still linked")
	}
	if ok, _ := db.LinkedInRegistry(ctx, r.Registry, layer); ok {
		t.Error("the forgotten layer is still linked in its registry")
	}
	if ok, _ := db.Linked(ctx, r, stays); !ok {
		t.Error("the kept manifest lost its link")
	}
	if _, err := db.Referrers(ctx, r, gone); !IsNotFound(err) {
		t.Errorf("referrers of the forgotten manifest: %v, want not found", err)
	}
	if _, err := db.Referrers(ctx, r, stays); err != nil {
		t.Errorf("referrers of the kept manifest: %v", err)
	}
	if _, err := db.Verdict(ctx, "fleet", "rev1", gone, ""); !IsNotFound(err) {
		t.Errorf("verdict of the forgotten manifest: %v, want not found", err)
	}
	if ok, _ := db.Trusted(ctx, "fleet", "rev1", TrustBlob, layer); ok {
		t.Error("the forgotten layer is still trusted")
	}
	// Forgetting a referrers list forgets the records that name it.
	if err := db.Forget(ctx, []digest.Digest{list}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Referrers(ctx, r, stays); !IsNotFound(err) {
		t.Errorf("referrers record whose list was forgotten: %v, want not found", err)
	}
}

// The deltas recorded to rebuild a layer go with the layer: a region
// records one per layer a lower tier asked for, and they were never
// removed, one key per layer version for the life of the mirror.
func TestForgetPrunesDeltaRecords(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, _ := openTest(t)
	defer db.Close()
	repo := Repo{Registry: "central.test", Name: "app"}
	const versions = 100
	var layers []digest.Digest
	for i := range versions {
		layer := digest.FromString(fmt.Sprintf("layer of version %d", i))
		layers = append(layers, layer)
		rec := DeltaRecord{Repo: repo, Descriptor: ocispec.Descriptor{Digest: digest.FromString(fmt.Sprintf("delta %d", i)), Size: 10}}
		if err := db.AddDelta(ctx, layer, rec); err != nil {
			t.Fatal(err)
		}
	}
	// Eviction forgets every layer but the newest.
	if err := db.Forget(ctx, layers[:versions-1]); err != nil {
		t.Fatal(err)
	}
	var left int
	db.db.View(func(tx *bolt.Tx) error {
		left = tx.Bucket(bucketDeltas).Stats().KeyN
		return nil
	})
	if left != 1 {
		t.Errorf("%d layers with delta records after %d of %d were forgotten, want 1", left, versions-1, versions)
	}
	if recs, err := db.Deltas(ctx, layers[versions-1]); err != nil || len(recs) != 1 {
		t.Errorf("Deltas(stored layer) = %d records, %v; want 1", len(recs), err)
	}
	if recs, err := db.Deltas(ctx, layers[0]); err != nil || len(recs) != 0 {
		t.Errorf("Deltas(forgotten layer) = %d records, %v; want none", len(recs), err)
	}
}

// A meta.db whose pages after the meta pages were overwritten (a failing
// SD card), or that holds no database at all, stops Open with an error
// naming the file and how to start again; bbolt's panic on the damaged
// page does not escape as a stack trace.
func TestDamagedDatabaseIsAnError(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		damage func(b []byte) []byte
	}{
		{"pages after the meta pages overwritten", func(b []byte) []byte {
			pageSize := int(binary.NativeEndian.Uint32(b[24:]))
			for i := 2 * pageSize; i < len(b); i++ {
				b[i] = 0xab
			}
			return b
		}},
		{"not a database", func(b []byte) []byte { return bytes.Repeat([]byte{0xab}, len(b)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db, path := openTest(t)
			if err := db.PutTag(context.Background(), Repo{Registry: "central", Name: "app"}, "v1", TagEntry{Digest: digest.FromString("m"), FetchedAt: time.Now()}); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tc.damage(b), 0o600); err != nil {
				t.Fatal(err)
			}
			db, err = Open(path)
			if err == nil {
				db.Close()
				t.Fatal("Open of a damaged database succeeded")
			}
			for _, want := range []string{path, "damaged", "move it aside"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}
