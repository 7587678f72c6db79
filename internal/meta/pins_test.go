package meta

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestPins(t *testing.T) {
	ctx := context.Background()
	db, err := Open(filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a, b, c := digest.FromString("a"), digest.FromString("b"), digest.FromString("c")

	if owners, err := db.PinnedBy(ctx, a); err != nil || len(owners) != 0 {
		t.Fatalf("PinnedBy on an empty database = %v, %v", owners, err)
	}
	if err := db.SetPins(ctx, "app:v1", []digest.Digest{a, b, a}); err != nil {
		t.Fatal(err)
	}
	if err := db.SetPins(ctx, "app:v2", []digest.Digest{b, c}); err != nil {
		t.Fatal(err)
	}
	check := func(d digest.Digest, want ...string) {
		t.Helper()
		got, err := db.PinnedBy(ctx, d)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("PinnedBy(%s) = %v, %v; want %v", d, got, err, want)
		}
	}
	check(a, "app:v1")
	check(b, "app:v1", "app:v2")
	check(c, "app:v2")

	// A new set replaces the old one; an empty set removes the owner.
	if err := db.SetPins(ctx, "app:v1", []digest.Digest{c}); err != nil {
		t.Fatal(err)
	}
	check(a)
	check(b, "app:v2")
	check(c, "app:v1", "app:v2")
	if err := db.SetPins(ctx, "app:v2", nil); err != nil {
		t.Fatal(err)
	}
	check(b)
	if owners, err := db.PinOwners(ctx); err != nil || !slices.Equal(owners, []string{"app:v1"}) {
		t.Errorf("PinOwners = %v, %v; want [app:v1]", owners, err)
	}
}

func TestPrefetchRequests(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meta.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := db.Prefetches(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Prefetches on an empty database = %v, %v", got, err)
	}
	for _, r := range []PrefetchRequest{{Ref: "org/b:1"}, {Ref: "org/a:1", Platforms: []string{"linux/arm64"}}, {Ref: "org/b:1", Platforms: []string{"linux/amd64"}}} {
		if err := db.PutPrefetch(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.DeletePrefetch(ctx, "org/none"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	// The list survives a restart.
	if db, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got, err := db.Prefetches(ctx)
	if err != nil || len(got) != 2 || got[0].Ref != "org/a:1" || got[1].Ref != "org/b:1" || got[1].Platforms[0] != "linux/amd64" {
		t.Fatalf("Prefetches = %+v, %v", got, err)
	}
	if err := db.DeletePrefetch(ctx, "org/a:1"); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.Prefetches(ctx); len(got) != 1 {
		t.Errorf("after delete: %+v", got)
	}
}
