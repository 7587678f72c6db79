package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/registry-edge/registry-edge/internal/testutil/flakyrelay"
)

// A site killed (SIGKILL: a power cut in the middle of an update) while it
// downloads the delta a region computed for it still rebuilds the layer
// from the delta after it starts again: the manifest it had fetched and
// stored before the kill is served from its store, and its layers are
// still known as layers a delta may bring. Before, only a manifest fetched
// from upstream by the running process made a layer's fill ask for a
// delta, so every pull interrupted by a restart fetched its layers in full.
func TestSiteKilledMidDeltaRebuildsAfterRestart(t *testing.T) {
	t.Parallel()
	crane := need(t, "crane")
	c := startCentral(t)
	oldImg, newImg, _, newApp := deltaImages(t, 90)
	v1 := pushImage(t, c, "fleet/app", "v1", oldImg)
	v2 := pushImage(t, c, "fleet/app", "v2", newImg)
	region := startMirror(t, c.addr, mirrorOptions{})
	link := flakyrelay.New(t, region.addr)
	site := startMirror(t, link.Addr(), mirrorOptions{})
	pullOCI(t, crane, v1.ref(site.addr))

	// A device fetches v2's manifest, then its updated layer, over a slow
	// link: the site is killed while the delta's bytes arrive.
	accept := http.Header{"Accept": {v2.mediaType}}
	if resp, _ := httpDo(t, "GET", "http://"+site.addr+"/v2/fleet/app/manifests/v2", accept, nil); resp.StatusCode != 200 {
		t.Fatalf("GET v2's manifest: %s", resp.Status)
	}
	link.Throttle(512)
	app := v2.layers[1]
	before := link.BytesDown()
	go func() {
		// Cut by the kill.
		req, _ := http.NewRequest("GET", "http://"+site.addr+"/v2/fleet/app/blobs/"+app, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	deadline := time.Now().Add(time.Minute)
	for link.BytesDown()-before < 2000 {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes over the site's link in a minute, want the delta's download under way", link.BytesDown()-before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := site.proc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-site.proc.done
	if strings.Contains(site.proc.log(), "layer rebuilt from a delta") {
		t.Fatal("the site had rebuilt the layer before the kill: the test did not kill it mid-delta")
	}
	link.Throttle(0)

	site2 := startMirror(t, link.Addr(), mirrorOptions{storage: site.storage})
	mark := link.BytesDown()
	dir := pullOCI(t, crane, v2.ref(site2.addr))
	readLayout(t, dir).checkImage(t, v2)
	over := link.BytesDown() - mark
	if limit := int64(len(newApp)) / 10; over > limit {
		t.Errorf("the site's link carried %d bytes for v2 after the restart, want at most %d (a tenth of the %d-byte updated layer)", over, limit, len(newApp))
	}
	site2.mark(t)
	if !strings.Contains(site2.proc.log(), "layer rebuilt from a delta") {
		t.Errorf("the restarted site did not rebuild the layer from a delta:\n%s", tail(site2.proc.log(), 20))
	}
}
