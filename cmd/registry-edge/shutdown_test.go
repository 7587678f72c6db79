package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/registry-edge/registry-edge/internal/testutil/hangnet"
)

// A stop while the mirror starts (here, its bucket is slow to answer the
// start-up cleanup) is a clean stop: exit status 0, not a "context
// canceled" error with status 1 (which systemd counts as a failure).
func TestStopDuringStartUpIsClean(t *testing.T) {
	t.Parallel()
	ln, accepted := hangnet.Silent(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "config.yaml")
	yml := fmt.Sprintf(`listen: %q
storage:
  root: %s
  blobs:
    driver: s3
    s3:
      bucket: edge
      region: us-east-1
      regionEndpoint: http://%s
      forcePathStyle: true
      accessKey: key
      secretKey: secret
`, freeAddr(t), filepath.Join(dir, "data"), ln.Addr())
	if err := os.WriteFile(conf, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startRun(t, "serve", "--config", conf, "--upstream", "http://127.0.0.1:1")
	select {
	case <-accepted: // start-up waits for the bucket
	case <-time.After(time.Minute):
		t.Fatalf("the mirror did not ask its bucket within a minute:\n%s", srv.stderr.String())
	}
	if code := srv.stop(); code != 0 {
		t.Errorf("stopped during start-up: exit %d, want 0:\n%s", code, srv.stderr.String())
	}
	if strings.Contains(srv.stderr.String(), "registry-edge started") {
		t.Errorf("started after the stop:\n%s", srv.stderr.String())
	}
}

// The first SIGINT or SIGTERM stops the command; a second one exits at
// once, 128 + its number, with one line (TestSecondSignalExitsAtOnce in
// internal/e2e does it to the built binary).
func TestStopOnSignals(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		first, second os.Signal
		want          int
	}{
		{syscall.SIGTERM, syscall.SIGTERM, 143},
		{os.Interrupt, os.Interrupt, 130},
		{syscall.SIGTERM, os.Interrupt, 130},
	} {
		sigs := make(chan os.Signal, 2)
		ctx, cancel := context.WithCancel(context.Background())
		exited := make(chan int, 1)
		var stderr strings.Builder
		go stopOnSignals(sigs, cancel, &stderr, func(code int) { exited <- code })
		sigs <- tt.first
		<-ctx.Done() // the first signal stops the command
		select {
		case code := <-exited:
			t.Fatalf("exited %d on the first signal", code)
		default:
		}
		sigs <- tt.second
		if code := <-exited; code != tt.want {
			t.Errorf("%v then %v: exit %d, want %d", tt.first, tt.second, code, tt.want)
		}
		if want := fmt.Sprintf("registry-edge: %v again while stopping: exiting at once\n", tt.second); stderr.String() != want {
			t.Errorf("%v then %v: stderr %q, want %q", tt.first, tt.second, stderr.String(), want)
		}
	}
}
