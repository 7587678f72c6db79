package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/registry-edge/registry-edge/internal/config"
	"github.com/registry-edge/registry-edge/internal/gc"
)

// gc exits 1 when the store is still over budget after the run (a
// script must be able to tell); a dry run that finds the same exits 0 and
// says so.
func TestGCOverBudgetExitStatus(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(gc.Plan{OverBudget: true})
	}))
	t.Cleanup(srv.Close)
	code, _, stderr := runCmd(t, "gc", "--mirror", srv.URL)
	if code != 1 || !strings.Contains(stderr, "still over budget") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("gc over budget: exit %d, stderr %q; want 1 and one line saying so", code, stderr)
	}
	code, stdout, _ := runCmd(t, "gc", "--mirror", srv.URL, "--dry-run")
	if code != 0 || !strings.Contains(stdout, "would still be over budget") {
		t.Errorf("gc --dry-run over budget: exit %d, stdout %q; want 0 and the plan saying so", code, stdout)
	}
	if code, _, _ := runCmd(t, "gc", "--mirror", srv.URL, "--format", "json"); code != 1 {
		t.Errorf("gc --format json over budget: exit %d, want 1", code)
	}
}

// Eviction spares what was served in the last storage.minIdle (five
// minutes by default) on a filesystem store too, not only on a shared
// bucket: an image evicted while a device pulls it is lost to a site whose
// uplink is down. On a bucket the replicas' five minutes are the least.
func TestGCSparesRecentImages(t *testing.T) {
	cfg := config.Default()
	if got := gcOptions(cfg).MinIdle; got != 5*time.Minute {
		t.Errorf("filesystem store, default config: MinIdle = %v, want 5m", got)
	}
	cfg.Storage.MinIdle = 0
	if got := gcOptions(cfg).MinIdle; got != 0 {
		t.Errorf("filesystem store, minIdle 0s: MinIdle = %v, want 0", got)
	}
	cfg.Storage.Blobs.Driver = config.BlobsS3
	if got := gcOptions(cfg).MinIdle; got != sharedMinIdle {
		t.Errorf("shared bucket, minIdle 0s: MinIdle = %v, want %v", got, sharedMinIdle)
	}
}

// gc stopped by Ctrl-C or SIGTERM (here, before its request) exits as
// deltactl and the other one-shot commands do: 130 (main makes it 143
// after SIGTERM), one line that says so.
func TestGCInterrupted(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(gc.Plan{})
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	if code := run(ctx, []string{"gc", "--mirror", srv.URL}, &stdout, &stderr, nil); code != exitInterrupted || stderr.String() != "registry-edge: gc: interrupted\n" {
		t.Errorf("gc interrupted: exit %d, stderr %q; want %d and %q", code, stderr.String(), exitInterrupted, "registry-edge: gc: interrupted\n")
	}
}
