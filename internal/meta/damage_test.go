package meta

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// damagedOpenDB returns an open database with 500 tags of which damage
// has then altered the file under the running process (its pages are
// mapped: the process reads what the file now holds, as after a failing
// SD card). damage gets the file and the page size and the id of the tags
// bucket's root page.
func damagedOpenDB(t *testing.T, damage func(f *os.File, pageSize int, root uint64)) (*DB, string) {
	t.Helper()
	ctx := context.Background()
	db, path := openTest(t)
	r := Repo{Registry: "central", Name: "app"}
	for i := range 500 {
		if err := db.PutTag(ctx, r, fmt.Sprintf("v%d", i), TagEntry{Digest: digest.FromString(fmt.Sprint(i)), FetchedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	var pageSize int
	var root uint64
	if err := db.db.View(func(tx *bolt.Tx) error {
		pageSize = tx.DB().Info().PageSize
		root = uint64(tx.Bucket(bucketTags).Root())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	damage(f, pageSize, root)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return db, path
}

// A page of meta.db damaged while the mirror runs (start-up did not read
// it) fails the transactions that read it with an error of category
// errdef.ErrDamaged naming the file and what to do, instead of a bbolt
// panic (or a fault) that kills a background goroutine, and with it the
// process; and the database still closes.
func TestDamageFoundWhileRunningIsAnError(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		damage func(f *os.File, pageSize int, root uint64)
	}{
		// bbolt checks a page's id and flags as it reads it, and panics.
		{"tags root page overwritten", func(f *os.File, pageSize int, root uint64) {
			if _, err := f.WriteAt(bytesOf(0xab, pageSize), int64(root)*int64(pageSize)); err != nil {
				t.Fatal(err)
			}
		}},
		// Reading mapped pages the file no longer has is a fault (SIGBUS),
		// as is a read error of the card under a mapped page.
		{"file cut short", func(f *os.File, pageSize int, root uint64) {
			if err := f.Truncate(int64(root) * int64(pageSize)); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db, path := damagedOpenDB(t, tc.damage)
			r := Repo{Registry: "central", Name: "app"}
			for _, c := range []struct {
				op  string
				run func() error
			}{
				{"Tag", func() error { _, err := db.Tag(ctx, r, "v1"); return err }},
				{"Tags", func() error { _, err := db.Tags(ctx, r); return err }},
				{"PutTag", func() error {
					return db.PutTag(ctx, r, "v500", TagEntry{Digest: digest.FromString("new"), FetchedAt: time.Now()})
				}},
			} {
				err := c.run()
				if !errors.Is(err, errdef.ErrDamaged) {
					t.Errorf("%s() error = %v, want errdef.ErrDamaged", c.op, err)
					continue
				}
				for _, want := range []string{path, "damaged", "move it aside"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("%s() error %q does not say %q", c.op, err, want)
					}
				}
			}
			// Close returns (its write fails the same way), and the file
			// is released.
			db.Close()
		})
	}
}

// Damage found by one transaction stays reported by Damaged (serve's
// /readyz fails on it) after transactions that read only intact records
// succeed; the first one found is kept; a database nothing found damaged
// reports none, even with its file already damaged.
func TestDamageIsLatched(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, path := damagedOpenDB(t, func(f *os.File, pageSize int, root uint64) {
		if _, err := f.WriteAt(bytesOf(0xab, pageSize), int64(root)*int64(pageSize)); err != nil {
			t.Fatal(err)
		}
	})
	defer db.Close()
	r := Repo{Registry: "central", Name: "app"}
	if _, err := db.Manifest(ctx, digest.FromString("absent")); !errors.Is(err, errdef.ErrNotFound) {
		t.Fatalf("Manifest() of an intact bucket: %v, want errdef.ErrNotFound", err)
	}
	if err := db.Damaged(); err != nil {
		t.Fatalf("Damaged() before any transaction read the damaged page = %v, want nil", err)
	}
	if _, err := db.Tag(ctx, r, "v1"); !errors.Is(err, errdef.ErrDamaged) {
		t.Fatalf("Tag() on the damaged page: %v, want errdef.ErrDamaged", err)
	}
	if _, err := db.Manifest(ctx, digest.FromString("absent")); !errors.Is(err, errdef.ErrNotFound) {
		t.Fatalf("Manifest() of an intact bucket after the damage: %v, want errdef.ErrNotFound", err)
	}
	_ = db.PutTag(ctx, r, "v500", TagEntry{Digest: digest.FromString("new"), FetchedAt: time.Now()})
	de, ok := errors.AsType[*DamagedError](db.Damaged())
	if !ok || de.Path != path || de.Op != "read metadata" {
		t.Errorf("Damaged() after a read found the damage, an intact read and a write = %v, want the read's *DamagedError for %s", db.Damaged(), path)
	}
}

func bytesOf(b byte, n int) []byte {
	s := make([]byte, n)
	for i := range s {
		s[i] = b
	}
	return s
}
