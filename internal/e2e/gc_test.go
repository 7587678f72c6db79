package e2e

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// A mirror over its storage budget evicts the image pulled least recently,
// says so beforehand with `gc --dry-run`, and keeps serving the others
// when the uplink is gone.
func TestEvictionToBudget(t *testing.T) {
	t.Parallel()
	crane := need(t, "crane")
	c := startCentral(t)
	var imgs []pushed
	for _, repo := range []string{"edge/old", "edge/mid", "edge/new"} {
		imgs = append(imgs, pushImage(t, c, repo, "v1", ociImage(t, runtime.GOARCH, 1, 600<<10)))
	}
	m := startMirror(t, c.addr, mirrorOptions{config: "storage:\n  maxSize: 1500KiB\n  lowWatermark: 0.9\n  minIdle: 0s\n"})
	for i, img := range imgs {
		if i > 0 {
			time.Sleep(1100 * time.Millisecond) // access times have a one-second resolution
		}
		pullOCI(t, crane, img.ref(m.addr))
	}

	out := run(t, nil, edgeBin, "gc", "--mirror", "http://"+m.addr, "--dry-run")
	if !strings.Contains(out, "would evict 1") || !strings.Contains(out, imgs[0].digest) || strings.Contains(out, imgs[1].digest) {
		t.Fatalf("gc --dry-run output:\n%s", out)
	}
	out = run(t, nil, edgeBin, "gc", "--mirror", "http://"+m.addr)
	if !strings.Contains(out, "evicted 1") || !strings.Contains(out, "over budget") {
		t.Fatalf("gc output:\n%s", out)
	}

	c.proc.stop()
	for _, img := range imgs[1:] {
		pullOCI(t, crane, img.byDigest(m.addr))
	}
	if _, err := runErr(nil, crane, "--insecure", "pull", "--format", "oci", imgs[0].byDigest(m.addr), t.TempDir()+"/x"); err == nil {
		t.Errorf("the evicted image was still served with the uplink down")
	}
}
