package httpserve_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/registry-edge/registry-edge/internal/testutil/fakeupstream"
	"github.com/registry-edge/registry-edge/internal/testutil/syncbuf"
)

// A meta.db cut short while the mirror runs (what a read error of the
// card under a mapped page looks like to the process too) answers the
// requests that need it with 503 UNAVAILABLE saying so, not a 500 from a
// recovered panic (or a killed process); the access log line has the file
// and what to do.
func TestDamagedMetadataIs503(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	m.stop()
	var log syncbuf.Buffer
	m.accessLog = &log
	m.start()
	layer := fakeupstream.Random(t, 1000)
	m.fake.Image("team/app", "v1", layer)
	if resp, body := m.get(http.MethodGet, manifestPath("team/app", "v1")); resp.StatusCode != 200 {
		t.Fatalf("GET manifest by tag: %d %s", resp.StatusCode, body)
	}
	m.waitFills()
	path := filepath.Join(m.root, "meta.db")
	if err := os.Truncate(path, 8192); err != nil {
		t.Fatal(err)
	}
	resp, body := m.get(http.MethodGet, manifestPath("team/app", "v1"))
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "UNAVAILABLE") || !strings.Contains(string(body), "metadata database is damaged") {
		t.Errorf("GET manifest by tag with meta.db damaged = %d %s, want 503 UNAVAILABLE saying the metadata is damaged", resp.StatusCode, body)
	}
	if strings.Contains(string(body), path) {
		t.Errorf("the answer %s names the file", body)
	}
	if !strings.Contains(log.String(), path) || !strings.Contains(log.String(), "move it aside") {
		t.Errorf("log %q does not name %s and what to do", log.String(), path)
	}
}
