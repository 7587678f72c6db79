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

func newFS(t *testing.T) blobstore.Store {
	s, err := blobstore.NewFS(t.TempDir(), blobstore.FSOptions{TempMaxAge: time.Hour, PartialMaxAge: time.Hour})
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
	s, err := blobstore.NewFS(root, blobstore.FSOptions{TempMaxAge: time.Hour, PartialMaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
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
	s, err := blobstore.NewFS(root, blobstore.FSOptions{TempMaxAge: time.Hour, PartialMaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
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
	if _, err := blobstore.NewFS(root, blobstore.FSOptions{TempMaxAge: time.Hour, PartialMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
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
	if _, err := blobstore.NewFS(root, blobstore.FSOptions{TempMaxAge: time.Hour, PartialMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
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
