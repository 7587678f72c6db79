package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/registry-edge/registry-edge/internal/logging"
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

// A second SIGINT or SIGTERM while stopping exits at once, 128 + its
// number, with one line (TestSecondSignalExitsAtOnce in internal/e2e does
// it to the built binary): plain on stderr outside a serve, and through
// the serve's logger, in its format, while one runs.
func TestStopNotice(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		sig  os.Signal
		want int
	}{
		{syscall.SIGTERM, 143},
		{os.Interrupt, 130},
	} {
		var stderr strings.Builder
		n := &stopNotice{stderr: &stderr}
		code := -1
		n.forced(tt.sig, func(c int) { code = c })
		if code != tt.want {
			t.Errorf("%v again: exit %d, want %d", tt.sig, code, tt.want)
		}
		if want := fmt.Sprintf("registry-edge: %v again while stopping: exiting at once\n", tt.sig); stderr.String() != want {
			t.Errorf("%v again: stderr %q, want %q", tt.sig, stderr.String(), want)
		}

		// log.format json: a JSON line like the others, written out
		// before the exit although the log buffers.
		stderr.Reset()
		buf := logging.NewBufferedWriter(&stderr, time.Hour)
		n.use(logging.New(buf, slog.LevelInfo, true), buf.Flush)
		n.forced(tt.sig, func(c int) { code = c })
		var line struct {
			Level, Msg, Signal string
			Status             int
		}
		if err := json.Unmarshal([]byte(stderr.String()), &line); err != nil {
			t.Fatalf("%v again, JSON log: %q is not one JSON line: %v", tt.sig, stderr.String(), err)
		}
		if line.Msg != "signal again while stopping: exiting at once" || line.Signal != tt.sig.String() || line.Status != tt.want || line.Level != "WARN" {
			t.Errorf("%v again, JSON log: %+v", tt.sig, line)
		}
		if code != tt.want {
			t.Errorf("%v again, JSON log: exit %d, want %d", tt.sig, code, tt.want)
		}
	}
}
