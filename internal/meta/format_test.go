package meta

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
)

// A store written by a newer registry-edge is refused at Open with a
// message that says so, and left as it was: a downgrade must not read
// records it does not know and rewrite them without what they said.
func TestNewerStoreFormatIsRefused(t *testing.T) {
	t.Parallel()
	db, path := openTest(t)
	if err := db.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFormat).Put([]byte("version"), []byte("99"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err := Open(path)
	if err == nil || !strings.Contains(err.Error(), "store format 99 was written by a newer registry-edge") || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open of a store of format 99: error = %v, want one naming the database and the newer format", err)
	}
	raw, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.View(func(tx *bolt.Tx) error {
		if v := string(tx.Bucket(bucketFormat).Get([]byte("version"))); v != "99" {
			t.Errorf("store format after the refused Open = %q, want 99 kept", v)
		}
		return nil
	})
}

// A database without the marker (new, or from a binary before it) gets
// this binary's format.
func TestStoreFormatIsRecorded(t *testing.T) {
	t.Parallel()
	db, path := openTest(t)
	if err := db.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketFormat) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketFormat); b == nil || string(b.Get([]byte("version"))) != "1" {
			t.Errorf("store format of a database without one: not recorded as 1")
		}
		return nil
	})
}

// A database written by an older version (testdata/meta-v0.db, from the
// meta package of a81acca^: no registry index of links, trust without its
// kind, no store format) opens with every record it held, the index
// filled, its unsound trust dropped and this version's format recorded.
func TestDatabaseOfAnOldVersionOpens(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("testdata/meta-v0.db")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "meta.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := Open(path)
	if err != nil {
		t.Fatalf("Open of an old version's database: %v", err)
	}
	defer db.Close()
	ctx := context.Background()
	r := Repo{Registry: "docker.io", Name: "library/alpine"}
	m, layer, dl := digest.FromString("manifest"), digest.FromString("layer"), digest.FromString("delta")
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

	if e, err := db.Tag(ctx, r, "3.20"); err != nil || e.Digest != m || !e.FetchedAt.Equal(at) {
		t.Errorf("Tag = %+v, %v; want %s fetched at %s", e, err, m, at)
	}
	if e, err := db.Manifest(ctx, m); err != nil || e.Size != 500 || e.MediaType != ocispec.MediaTypeImageManifest {
		t.Errorf("Manifest = %+v, %v", e, err)
	}
	for _, d := range []digest.Digest{m, layer} {
		if ok, err := db.Linked(ctx, r, d); err != nil || !ok {
			t.Errorf("Linked(%s) = %v, %v; want true", d, ok, err)
		}
		if ok, err := db.LinkedInRegistry(ctx, "docker.io", d); err != nil || !ok {
			t.Errorf("LinkedInRegistry(%s) = %v, %v; want true (the index is filled at Open)", d, ok, err)
		}
	}
	if recs, err := db.Deltas(ctx, layer); err != nil || len(recs) != 1 || recs[0].Descriptor.Digest != dl || recs[0].Repo != r {
		t.Errorf("Deltas = %+v, %v; want the delta %s of %s", recs, err, dl, r)
	}
	if owners, err := db.PinnedBy(ctx, layer); err != nil || !slices.Equal(owners, []string{"prefetch"}) {
		t.Errorf("PinnedBy = %v, %v; want [prefetch]", owners, err)
	}
	if reqs, err := db.Prefetches(ctx); err != nil || len(reqs) != 1 || reqs[0].Ref != "docker.io/library/alpine:3.20" {
		t.Errorf("Prefetches = %+v, %v", reqs, err)
	}
	if v, err := db.Verdict(ctx, "fleet", "rev1", m, "docker.io/library/alpine"); err != nil || !v.OK {
		t.Errorf("Verdict = %+v, %v; want the positive verdict kept", v, err)
	}
	for _, kind := range []TrustKind{TrustManifest, TrustBlob} {
		if ok, err := db.Trusted(ctx, "fleet", "rev1", kind, layer); err != nil || ok {
			t.Errorf("Trusted(%s) = %v, %v; want false (trust without its kind is dropped)", kind, ok, err)
		}
	}
	if times, err := db.AccessTimes(ctx); err != nil || !times[m].Equal(at) || !times[layer].Equal(at) {
		t.Errorf("AccessTimes = %v, %v; want both at %s", times, err, at)
	}
	db.db.View(func(tx *bolt.Tx) error {
		if v := string(tx.Bucket(bucketFormat).Get([]byte("version"))); v != "1" {
			t.Errorf("store format = %q, want 1 recorded", v)
		}
		return nil
	})
}

// After a downgrade to a binary from before the registry index of links,
// the links it recorded are not indexed; back on this version they are:
// content the older binary fetched counts as from its registry.
func TestLinksOfAnOlderBinaryAreIndexed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, path := openTest(t)
	r := Repo{Registry: "ghcr.io", Name: "org/app"}
	before, during := digest.FromString("before"), digest.FromString("during")
	if err := db.Link(ctx, r, before); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// The older binary: it links and knows nothing of the index.
	raw, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketLinks).Put(linkKey(r, during), nil) }); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	db, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, d := range []digest.Digest{before, during} {
		if ok, err := db.LinkedInRegistry(ctx, "ghcr.io", d); err != nil || !ok {
			t.Errorf("LinkedInRegistry(%s) = %v, %v; want true", d, ok, err)
		}
	}
}

// A start after a crash (Close never ran) finds the indexes in step with
// the records this version wrote: it checks them, and writes nothing.
// Rebuilding the registry index whole at each such start took 25 s at
// 20,000 images, with the mirror not serving.
func TestOpenAfterACrashRewritesNoIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, path := openTest(t)
	if err := db.db.Update(func(tx *bolt.Tx) error {
		for i := range 2000 {
			r := Repo{Registry: "docker.io", Name: fmt.Sprintf("org/app%d", i%50)}
			if err := putLink(tx, r, digest.FromString(fmt.Sprint(i))); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	db.db.Close() // a crash: Close does not note it

	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Open's transaction writes its meta and freelist pages; rewriting
	// the index writes dozens more.
	if st := db.db.Stats(); st.TxStats.GetWrite() > 4 {
		t.Errorf("Open after a crash wrote %d pages; want the indexes checked, not written again", st.TxStats.GetWrite())
	}
	if ok, err := db.LinkedInRegistry(ctx, "docker.io", digest.FromString("1999")); err != nil || !ok {
		t.Errorf("LinkedInRegistry = %v, %v; want true", ok, err)
	}
}

// After a downgrade to a binary from before the bydigest index, the
// links, tags and verdicts it recorded are not indexed; back on this
// version they are, so evicting their content forgets them too (else a
// tag kept pointing at an evicted image, and its link said it was here).
func TestRecordsOfAnOlderBinaryAreForgotten(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, path := openTest(t)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	r := Repo{Registry: "ghcr.io", Name: "org/app"}
	m := digest.FromString("manifest")
	raw, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketLinks).Put(linkKey(r, m), nil); err != nil {
			return err
		}
		b, _ := json.Marshal(TagEntry{Digest: m})
		if err := tx.Bucket(bucketTags).Put(tagKey(r, "v1"), b); err != nil {
			return err
		}
		b, _ = json.Marshal(Verdict{OK: true})
		return tx.Bucket(bucketVerdicts).Put(sigKey("fleet", "rev1", m), b)
	}); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	db, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Forget(ctx, []digest.Digest{m}); err != nil {
		t.Fatal(err)
	}
	if ok, err := db.Linked(ctx, r, m); err != nil || ok {
		t.Errorf("Linked = %v, %v; want false after Forget", ok, err)
	}
	if e, err := db.Tag(ctx, r, "v1"); !IsNotFound(err) {
		t.Errorf("Tag = %+v, %v; want not found after Forget", e, err)
	}
	if v, err := db.Verdict(ctx, "fleet", "rev1", m, r.Registry+"/"+r.Name); !IsNotFound(err) {
		t.Errorf("Verdict = %+v, %v; want not found after Forget", v, err)
	}
}
