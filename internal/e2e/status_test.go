package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The status page, rendered by headless Chromium (Debian's package), shows
// the mirror's figures after a pull: store size, hit ratio, bytes served
// and fetched, the upstream's health, the recent pull. A screenshot is
// kept as a test artifact (go test -artifacts).
func TestStatusPageInChromium(t *testing.T) {
	t.Parallel()
	chromium := need(t, "chromium")
	crane := need(t, "crane")
	c := startCentral(t)
	img := pushImage(t, c, "edge/status", "v1", ociImage(t, runtime.GOARCH, 1, 256<<10))
	m := startMirror(t, c.addr, mirrorOptions{})
	pullOCI(t, crane, img.ref(m.addr))
	pullOCI(t, crane, img.ref(m.addr)) // the second pull is all hits

	url := "http://" + m.addr + "/status"
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--user-data-dir=" + t.TempDir()}
	dom := run(t, []string{"HOME=" + t.TempDir()}, chromium, append(args, "--dump-dom", url)...)
	for _, want := range []string{"registry-edge", "Disk used / budget", "Cache hit ratio", "Fetched from upstreams",
		c.addr, "reachable", "edge/status", img.tag} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered page lacks %q", want)
		}
	}
	if strings.Contains(dom, "0 B / none") {
		t.Error("rendered page shows an empty store after a pull")
	}
	if strings.Contains(dom, "none yet") {
		t.Error("rendered page shows no recent pull")
	}
	shot := filepath.Join(t.ArtifactDir(), "status.png")
	run(t, []string{"HOME=" + t.TempDir()}, chromium, append(args, "--window-size=1280,1100", "--screenshot="+shot, url)...)
	b, err := os.ReadFile(shot)
	if err != nil || len(b) < 10_000 || !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Fatalf("screenshot %s: %d bytes, %v", shot, len(b), err)
	}
	t.Logf("status page screenshot: %s (%d bytes)", shot, len(b))
}
