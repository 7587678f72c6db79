package e2e

import (
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// An image listed for prefetch is on the site, with its signature, before
// any device asks for it, and is served when the uplink is gone; the
// platforms that were not listed are not fetched.
func TestPrefetchThenOffline(t *testing.T) {
	t.Parallel()
	c := startCentral(t)
	native, other := ociImage(t, runtime.GOARCH, 2, 64<<10), ociImage(t, otherArch(), 2, 64<<10)
	idx := pushIndex(t, c, "edge/rollout", "v2", native, other)
	sig := pushImage(t, c, "edge/rollout", "sha256-"+digest.Digest(idx.digest).Encoded()+".sig", ociImage(t, runtime.GOARCH, 1, 1<<10))
	later := pushImage(t, c, "edge/later", "v1", ociImage(t, runtime.GOARCH, 1, 32<<10))
	m := startMirror(t, c.addr, mirrorOptions{config: "prefetch:\n  images:\n    - ref: edge/rollout:v2\n      platforms: [linux/" + runtime.GOARCH + "]\n"})

	// The command waits until the configured image and an on-demand one are
	// complete, and says so.
	out := run(t, nil, edgeBin, "prefetch", "--mirror", "http://"+m.addr, "--interval", "100ms", "--now", "--platform", "linux/"+runtime.GOARCH, "edge/rollout:v2", "edge/later:v1")
	for _, want := range []string{"complete  edge/rollout:v2 " + idx.digest, "complete  edge/later:v1 " + later.digest} {
		if !strings.Contains(out, want) {
			t.Fatalf("prefetch output lacks %q:\n%s", want, out)
		}
	}
	out = run(t, nil, edgeBin, "prefetch", "--mirror", "http://"+m.addr)
	if !strings.Contains(out, "edge/rollout:v2") || !strings.Contains(out, "1 referrers") {
		t.Errorf("status output:\n%s", out)
	}

	// The uplink goes away: what was pre-staged is served.
	c.proc.stop()
	base := "http://" + m.addr + "/v2/edge/rollout/"
	accept := http.Header{"Accept": {"application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"}}
	nativeChild, otherChild := idx.children[0], idx.children[1] // in push order
	for _, path := range []string{"manifests/v2", "manifests/" + nativeChild.digest, "manifests/" + sig.tag, "blobs/" + sig.layers[0]} {
		if resp, body := httpDo(t, "GET", base+path, accept, nil); resp.StatusCode != 200 {
			t.Errorf("GET %s with the uplink down: %s: %s", path, resp.Status, body)
		}
	}
	for _, b := range nativeChild.blobs {
		resp, body := httpDo(t, "GET", base+"blobs/"+b, nil, nil)
		if resp.StatusCode != 200 || digest.FromBytes(body).String() != b {
			t.Errorf("GET blob %s with the uplink down: %s, digest %s", b, resp.Status, digest.FromBytes(body))
		}
	}
	// The other platform was not listed, so it is not on the site.
	if resp, _ := httpDo(t, "GET", base+"blobs/"+otherChild.layers[0], nil, nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("GET of a layer of an unlisted platform with the uplink down: %s, want 503", resp.Status)
	}
}
