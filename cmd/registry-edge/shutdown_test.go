package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
