package e2e

import (
	"runtime"
	"strings"
	"testing"
)

// A site mirror whose upstream is a regional registry-edge, whose upstream
// is central (the demo topology of docker-compose.yml): pulls through the
// site get central's digests, and central serves each blob once for both
// tiers.
func TestTwoTiers(t *testing.T) {
	t.Parallel()
	crane := need(t, "crane")
	c := startCentral(t)
	img := pushImage(t, c, "edge/tiered", "v1", ociImage(t, runtime.GOARCH, 2, 256<<10))
	regional := startMirror(t, c.addr, mirrorOptions{})
	site := startMirror(t, regional.addr, mirrorOptions{})

	mark := len(c.accessLog())
	dir := pullOCI(t, crane, img.ref(site.addr))
	if got := strings.TrimSpace(craneRun(t, crane, "digest", img.ref(site.addr))); got != img.digest {
		t.Errorf("digest through two tiers = %s, want %s", got, img.digest)
	}
	l := readLayout(t, dir) // every blob hashes to its name
	for _, b := range img.blobs {
		if !l.has(b) {
			t.Errorf("pulled layout lacks blob %s", b)
		}
	}
	// A second site pulls the same image: the regional tier serves it, central sees nothing.
	site2 := startMirror(t, regional.addr, mirrorOptions{})
	pullOCI(t, crane, img.ref(site2.addr))

	for _, b := range img.blobs {
		n := 0
		for _, l := range c.accessLog()[mark:] {
			if strings.Contains(l, "GET /v2/edge/tiered/blobs/"+b) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("central served blob %s %d times for two sites behind one regional tier, want 1", b, n)
		}
	}
}
