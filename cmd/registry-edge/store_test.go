package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/config"
)

// On the file system, every temporary file a dead process left under the
// root goes at start-up, however young (a rebuild's uncompressed tar is
// twice a layer's size), and partial downloads stay for resumes.
func TestOpenStoreClearsWhatADeadProcessLeft(t *testing.T) {
	cfg := config.Default()
	cfg.Storage.Root = t.TempDir()
	leftovers := map[string]bool{
		filepath.Join(cfg.Storage.Root, "ingest", "tar-3649506055"): false,
		filepath.Join(cfg.Storage.Root, "ingest", ".sha256-abc"):    false,
		filepath.Join(cfg.Storage.Root, "partial", "sha256-abc"):    true,
	}
	for path := range leftovers {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("left by a killed process"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := openStore(context.Background(), cfg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	for path, kept := range leftovers {
		if _, err := os.Stat(path); (err == nil) != kept {
			t.Errorf("%s: stat error %v, want kept = %v", path, err, kept)
		}
	}
}

// While serve runs, partial downloads last written longer than
// storage.partialMaxAge ago are removed, not only at start-up: on a site
// that runs for months, the partial of a fill that gave up on a blob never
// asked for again held its space, which eviction cannot free. A young
// partial, and an old one a fill is resuming (locked), stay.
func TestStalePartialsAreRemovedWhileRunning(t *testing.T) {
	cfg := config.Default()
	cfg.Storage.Root = t.TempDir()
	store, err := openStore(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	fs := store.(*blobstore.FS)
	ctx := context.Background()
	past := time.Now().Add(-cfg.Storage.PartialMaxAge.D() - time.Hour)
	partial := func(name string, old bool) (blobstore.Partial, string) {
		d := digest.FromString(name)
		p, err := fs.Resume(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Write([]byte("bytes of " + name)); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(cfg.Storage.Root, "partial", "sha256-"+d.Encoded())
		if old {
			if err := os.Chtimes(path, past, past); err != nil {
				t.Fatal(err)
			}
		}
		return p, path
	}
	suspend := func(p blobstore.Partial) {
		if err := p.Suspend(blobstore.PartialMeta{Size: -1}); err != nil {
			t.Fatal(err)
		}
	}
	stale, stalePath := partial("given up long ago", true)
	suspend(stale)
	if err := os.Chtimes(stalePath, past, past); err != nil { // Suspend wrote to it
		t.Fatal(err)
	}
	young, youngPath := partial("given up an hour ago", false)
	suspend(young)
	running, runningPath := partial("being resumed", true)
	t.Cleanup(func() { running.Cancel() })

	sctx, stop := context.WithCancel(ctx)
	ticks := make(chan time.Time) // unbuffered: the second tick is taken once the first sweep is over
	done := make(chan struct{})
	go func() {
		defer close(done)
		sweepPartials(sctx, fs, cfg.Storage.PartialMaxAge.D(), ticks, slog.New(slog.DiscardHandler))
	}()
	ticks <- time.Now()
	ticks <- time.Now()
	stop()
	<-done
	for path, kept := range map[string]bool{stalePath: false, stalePath + ".state": false, youngPath: true, runningPath: true} {
		if _, err := os.Stat(path); (err == nil) != kept {
			t.Errorf("%s: stat error %v, want kept = %v", filepath.Base(path), err, kept)
		}
	}
}
