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
