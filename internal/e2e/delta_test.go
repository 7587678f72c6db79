package e2e

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/registry-edge/registry-edge/internal/testutil/flakyrelay"
	"github.com/registry-edge/registry-edge/internal/testutil/layergen"
	"github.com/registry-edge/registry-edge/internal/testutil/s3test"
)

// deltaImages returns v1 and v2 of an application image: a base layer both
// share and an application layer that v2 updates (a few files edited,
// added, removed and renamed), gzip-compressed like go-containerregistry
// and Docker do.
func deltaImages(t *testing.T, seed uint64) (old, nw v1.Image, oldApp, newApp []byte) {
	t.Helper()
	base := layergen.Gzip(layergen.New(seed, 20, 8<<10).Tar(), -1)
	app := layergen.New(seed+1, 120, 24<<10)
	oldApp, newApp = layergen.Gzip(app.Tar(), -1), layergen.Gzip(app.Update(seed+2).Tar(), -1)
	mk := func(app []byte) v1.Image {
		img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1),
			static.NewLayer(base, types.OCILayer), static.NewLayer(app, types.OCILayer))
		if err != nil {
			t.Fatal(err)
		}
		return mutate.ConfigMediaType(img, types.OCIConfigJSON)
	}
	return mk(oldApp), mk(newApp), oldApp, newApp
}

// Three tiers as processes: central (the real registry), a regional
// registry-edge, and a site registry-edge behind a link that counts its
// bytes. Nothing is published: the site asks the region for a delta of the
// updated layer against the one it holds (RFC 3229 negotiation), the
// region computes it, and the site rebuilds the exact layer. crane pulls
// v2 through the site and gets central's digests.
func TestDeltaThroughTiers(t *testing.T) {
	t.Parallel()
	crane := need(t, "crane")
	c := startCentral(t)
	oldImg, newImg, _, newApp := deltaImages(t, 70)
	pushImage(t, c, "fleet/app", "v1", oldImg)
	v2 := pushImage(t, c, "fleet/app", "v2", newImg)
	region := startMirror(t, c.addr, mirrorOptions{})
	link := flakyrelay.New(t, region.addr)
	site := startMirror(t, link.Addr(), mirrorOptions{})

	pullUpdate(t, crane, link, site.addr, site.addr+"/fleet/app:v1", v2, len(newApp))
	appLayer := v2.layers[1]
	for _, e := range site.accessLog() {
		if e["digest"] == appLayer && e["status"] != "200" {
			t.Errorf("site answered the updated layer with %s", e["status"])
		}
	}
	site.mark(t)
	region.mark(t) // the log lines written before are in the files
	if !strings.Contains(site.proc.log(), "layer rebuilt from a delta") {
		t.Errorf("the site's log does not say it rebuilt the layer from a delta:\n%s", tail(site.proc.log(), 20))
	}
	if !regexp.MustCompile(`msg="computed a delta for a lower tier".* tar_size=[1-9][0-9]* .*delta_size=[1-9]`).MatchString(region.proc.log()) {
		t.Errorf("the region's log does not say it computed a delta, with the layer's tar size and the delta's size:\n%s", tail(region.proc.log(), 20))
	}
}

// The same with the region's blobs in an S3 bucket (a real versitygw): the
// region computes the delta from bases it holds as objects, copied locally
// and verified for the codec's random reads.
func TestDeltaRegionOnObjectStorage(t *testing.T) {
	t.Parallel()
	crane := need(t, "crane")
	c := startCentral(t)
	oldImg, newImg, _, newApp := deltaImages(t, 71)
	v1 := pushImage(t, c, "fleet/app", "v1", oldImg)
	v2 := pushImage(t, c, "fleet/app", "v2", newImg)
	srv := s3test.StartServer(t)
	root := filepath.Join(t.TempDir(), "storage")
	region := startMirror(t, c.addr, mirrorOptions{storage: root, config: objstoreConfig(root, s3Settings{
		bucket: srv.Bucket, endpoint: srv.Endpoint, accessKey: srv.AccessKey, secretKey: srv.SecretKey,
	})})
	link := flakyrelay.New(t, region.addr)
	site := startMirror(t, link.Addr(), mirrorOptions{})

	pullUpdate(t, crane, link, site.addr, site.addr+"/fleet/app:v1", v2, len(newApp))
	region.mark(t)
	if !strings.Contains(region.proc.log(), "computed a delta for a lower tier") {
		t.Errorf("the region on S3 did not compute a delta:\n%s", tail(region.proc.log(), 20))
	}
	waitNoLocalLayers(t, root, append(v1.layers, v2.layers...)) // the local copies of the bases are gone
}

// The release workflow end to end: the release engineer publishes deltas
// of v2 against v1 in central (the real registry, which has no referrers
// API, so deltactl maintains the sha256-<hex> fallback tag); a site
// registry-edge that already served v1 gets a pull of v2 from crane,
// fetches the delta instead of the updated layer over a counted link,
// rebuilds the layer and serves central's exact blobs.
func TestPublishedDeltaAtSite(t *testing.T) {
	t.Parallel()
	crane := need(t, "crane")
	deltactl := buildDeltactl(t)
	c := startCentral(t)
	oldImg, newImg, _, newApp := deltaImages(t, 80)
	v1 := pushImage(t, c, "fleet/app", "v1", oldImg)
	v2 := pushImage(t, c, "fleet/app", "v2", newImg)
	out := run(t, nil, deltactl, "--insecure", "diff", "--push", "--format", "json", v1.ref(c.addr), v2.ref(c.addr))
	if !strings.Contains(out, v2.layers[1]) {
		t.Fatalf("deltactl diff --push did not publish a delta for the updated layer %s:\n%s", v2.layers[1], out)
	}

	link := flakyrelay.New(t, c.addr)
	site := startMirror(t, link.Addr(), mirrorOptions{})
	pullUpdate(t, crane, link, site.addr, v1.ref(site.addr), v2, len(newApp))
	for _, l := range c.requestsBy(0, "registry-edge") {
		if strings.Contains(l, "GET /v2/fleet/app/blobs/"+v2.layers[1]) {
			t.Errorf("central served the updated layer itself to the site: %s", l)
		}
	}
	site.mark(t) // the log lines written before are in the file
	if !strings.Contains(site.proc.log(), "layer rebuilt from a delta") {
		t.Errorf("the site's log does not say it rebuilt the layer from a delta:\n%s", tail(site.proc.log(), 20))
	}
}

// pullUpdate pulls v1Ref, then v2, with crane through the site at siteAddr
// behind link, and checks that v2 arrived with central's digests while the
// link carried at most a tenth of the updated layer (updated bytes): the
// manifests, the config and the delta, plus HTTP headers.
func pullUpdate(t *testing.T, crane string, link *flakyrelay.Relay, siteAddr, v1Ref string, v2 pushed, updated int) {
	t.Helper()
	pullOCI(t, crane, v1Ref)
	before := link.BytesDown()
	dir := pullOCI(t, crane, v2.ref(siteAddr))
	over := link.BytesDown() - before
	t.Logf("v2 through the site: %d bytes over its link; the updated layer is %d bytes", over, updated)

	readLayout(t, dir).checkImage(t, v2) // every blob hashes to its name
	if got := strings.TrimSpace(craneRun(t, crane, "digest", v2.ref(siteAddr))); got != v2.digest {
		t.Errorf("digest through the site = %s, want %s", got, v2.digest)
	}
	if limit := int64(updated) / 10; over > limit {
		t.Errorf("the site's link carried %d bytes for v2, want at most %d (a tenth of the %d-byte updated layer)", over, limit, updated)
	}
}
