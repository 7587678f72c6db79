package blobstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/blobstore/blobstoretest"
	"github.com/registry-edge/registry-edge/internal/errdef"
)

func newFS(t *testing.T) blobstore.Store { return newFSAt(t, t.TempDir()) }

// newFSAt opens a store under root with an hour's age limits.
func newFSAt(t *testing.T, root string) *blobstore.FS {
	t.Helper()
	s, err := blobstore.NewFS(root, blobstore.FSOptions{TempMaxAge: time.Hour, PartialMaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFSConformance(t *testing.T) { blobstoretest.Run(t, newFS) }

func ingestFiles(t *testing.T, root string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, "ingest"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestFSIngestReadWhileWriting(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s := newFSAt(t, root)
	ctx := context.Background()
	content := bytes.Repeat([]byte("0123456789"), 1000)
	d := digest.FromBytes(content)
	ing, err := s.Ingest(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ing.Write(content[:4000]); err != nil {
		t.Fatal(err)
	}
	r, err := ing.OpenReader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	first := make([]byte, 4000)
	if _, err := io.ReadFull(r, first); err != nil || !bytes.Equal(first, content[:4000]) {
		t.Fatalf("reading the first bytes of an ingest: %v", err)
	}
	if _, err := ing.Write(content[4000:]); err != nil {
		t.Fatal(err)
	}
	if got := ing.Written(); got != int64(len(content)) {
		t.Errorf("Written() = %d, want %d", got, len(content))
	}
	if err := ing.Commit(ctx, int64(len(content))); err != nil {
		t.Fatalf("Commit() error = %v", err)
	}
	// A reader opened before the commit keeps reading after the rename.
	rest, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(rest, content[4000:]) {
		t.Fatalf("reading the rest after commit: %d bytes, %v", len(rest), err)
	}
	if _, err := s.Stat(ctx, d); err != nil {
		t.Errorf("Stat() after commit error = %v", err)
	}
	if left := ingestFiles(t, root); len(left) != 0 {
		t.Errorf("ingest files left after commit: %v", left)
	}
}

func TestFSIngestCommitRejectsWrongDigest(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s := newFSAt(t, root)
	ctx := context.Background()
	d := digest.FromString("expected")
	ing, err := s.Ingest(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	ing.Write([]byte("something else"))
	if err := ing.Commit(ctx, -1); !errors.Is(err, errdef.ErrDigestMismatch) {
		t.Fatalf("Commit() error = %v, want ErrDigestMismatch", err)
	}
	if _, err := s.Stat(ctx, d); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("Stat() after a rejected commit error = %v, want ErrNotFound", err)
	}
	if left := ingestFiles(t, root); len(left) != 0 {
		t.Errorf("ingest files left after a rejected commit: %v", left)
	}
}

func TestFSStartupCleansStaleIngests(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	newFSAt(t, root)
	stale := filepath.Join(root, "ingest", "sha256-abc.123")
	fresh := filepath.Join(root, "ingest", "sha256-def.456")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	newFSAt(t, root)
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale ingest still present: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh ingest removed: %v", err)
	}
}

func BenchmarkFSPut(b *testing.B) {
	s, err := blobstore.NewFS(b.TempDir(), blobstore.FSOptions{TempMaxAge: time.Hour, PartialMaxAge: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	content := bytes.Repeat([]byte{7}, 1<<20)
	b.SetBytes(int64(len(content)))
	for i := 0; b.Loop(); i++ {
		c := append(content[:len(content):len(content)], byte(i), byte(i>>8), byte(i>>16))
		d := digest.FromBytes(c)
		if err := s.Put(context.Background(), ocispecDesc(d, len(c)), bytes.NewReader(c)); err != nil {
			b.Fatal(err)
		}
	}
}

// alterStored flips a byte of stored blob d under root (bit rot), or cuts
// it to keep bytes (a power cut on a card that lies about fsync).
func alterStored(t *testing.T, root string, d digest.Digest, keep int) {
	t.Helper()
	p := filepath.Join(root, "blobs", string(d.Algorithm()), d.Encoded()[:2], d.Encoded())
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if keep >= 0 {
		b = b[:keep]
	} else {
		b[len(b)/3] ^= 0x01
	}
	// Written anew and renamed into place: an edit in place within the
	// same tick of the kernel's coarse clock as the commit would keep
	// the file's change time (ADR 0020).
	tmp := filepath.Join(root, "altered")
	if err := os.WriteFile(tmp, b, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}

// TestFSOpenRefusesAlteredContent: a stored file whose bytes changed behind
// the store's back is never read to a clean end as its digest. Read whole,
// it fails with ErrDigestMismatch before its last bytes, and is moved to
// quarantine/ so that the blob is fetched again; a read of a part (a Range)
// is not checked; fsck's Check does not move it.
func TestFSOpenRefusesAlteredContent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		keep int // bytes left, -1: all, one flipped
	}{{"bit flipped", -1}, {"truncated", 70000}, {"emptied", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			s := newFSAt(t, root)
			ctx := context.Background()
			content := bytes.Repeat([]byte("registry-edge "), 10000)
			d := digest.FromBytes(content)
			if err := s.Put(ctx, ocispecDesc(d, len(content)), bytes.NewReader(content)); err != nil {
				t.Fatal(err)
			}
			alterStored(t, root, d, tc.keep)

			if err := s.Check(ctx, d); !errors.Is(err, errdef.ErrDigestMismatch) {
				t.Fatalf("Check = %v, want ErrDigestMismatch", err)
			}
			rc, err := s.Open(ctx, d)
			if err != nil {
				t.Fatalf("Open after Check: %v (Check must not move the file)", err)
			}
			if tc.keep != 0 {
				if _, err := rc.Seek(100, io.SeekStart); err != nil {
					t.Fatal(err)
				}
				part := make([]byte, 50)
				if _, err := io.ReadFull(rc, part); err != nil || !bytes.Equal(part, content[100:150]) {
					t.Fatalf("range read = %q, %v; want the stored bytes", part, err)
				}
			}
			if _, err := rc.Seek(0, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if !errors.Is(err, errdef.ErrDigestMismatch) {
				t.Fatalf("read whole: %d bytes, err %v; want ErrDigestMismatch", len(got), err)
			}
			if digest.FromBytes(got) == d {
				t.Fatal("read whole returned the blob's digest from altered bytes")
			}
			if _, err := s.Stat(ctx, d); !errors.Is(err, errdef.ErrNotFound) {
				t.Fatalf("Stat after the failed read = %v, want ErrNotFound", err)
			}
			if _, err := os.Stat(filepath.Join(root, "quarantine", "sha256-"+d.Encoded())); err != nil {
				t.Fatalf("not quarantined: %v", err)
			}
			if err := s.Put(ctx, ocispecDesc(d, len(content)), bytes.NewReader(content)); err != nil {
				t.Fatal(err)
			}
			rc, err = s.Open(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, content) {
				t.Fatalf("stored again, read whole: %d bytes, %v", len(got), err)
			}
		})
	}
}

// TestFSOpenChecksAFileReplacedSinceItWasRead: a file committed, or read
// whole and found right, is not hashed again while it stays as it was; one
// put in its place since (an admin restoring a copy, a tool that rewrites
// files) is.
func TestFSOpenChecksAFileReplacedSinceItWasRead(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s := newFSAt(t, root)
	ctx := context.Background()
	content := bytes.Repeat([]byte("registry-edge "), 10000)
	d := digest.FromBytes(content)
	if err := s.Put(ctx, ocispecDesc(d, len(content)), bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	if rc, err := s.Open(ctx, d); err != nil {
		t.Fatal(err)
	} else {
		if _, ok := rc.(*os.File); !ok {
			t.Errorf("Open of a file just committed = %T, want the file itself (hashed on its way in)", rc)
		}
		rc.Close()
	}
	readWhole := func() ([]byte, error) {
		t.Helper()
		rc, err := s.Open(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}
	for range 2 {
		if got, err := readWhole(); err != nil || !bytes.Equal(got, content) {
			t.Fatalf("read whole: %d bytes, %v", len(got), err)
		}
	}
	rc, err := s.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rc.(*os.File); !ok {
		t.Errorf("Open of a file found right = %T, want the file itself (not hashed again)", rc)
	}
	rc.Close()

	p := filepath.Join(root, "blobs", "sha256", d.Encoded()[:2], d.Encoded())
	altered := bytes.Clone(content)
	altered[len(altered)/2] ^= 0x01
	tmp := filepath.Join(root, "restored")
	if err := os.WriteFile(tmp, altered, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	if got, err := readWhole(); !errors.Is(err, errdef.ErrDigestMismatch) {
		t.Fatalf("read whole after the file was replaced: %d bytes, err %v; want ErrDigestMismatch", len(got), err)
	}
	if _, err := s.Stat(ctx, d); !errors.Is(err, errdef.ErrNotFound) {
		t.Fatalf("Stat = %v, want ErrNotFound", err)
	}
}

// TestFSDirectoryInABlobsPlace: an empty directory at a blob's path (made
// by an admin, or a copy gone wrong) is not stored content: Stat and Open
// say not found, so that the blob is fetched, and the fill's commit takes
// the path back. Before, Stat reported the directory as the blob, every
// request for it failed ("is a directory") and no fill could replace it.
func TestFSDirectoryInABlobsPlace(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s := newFSAt(t, root)
	ctx := context.Background()
	content := []byte("layer bytes")
	d := digest.FromBytes(content)
	if err := os.MkdirAll(filepath.Join(root, "blobs", "sha256", d.Encoded()[:2], d.Encoded()), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, d); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("Stat = %v, want ErrNotFound", err)
	}
	if _, err := s.Open(ctx, d); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("Open = %v, want ErrNotFound", err)
	}
	if err := s.Put(ctx, ocispecDesc(d, len(content)), bytes.NewReader(content)); err != nil {
		t.Fatalf("Put: %v", err)
	}
	rc, err := s.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("read after Put: %q, %v", got, err)
	}
}
