package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

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
