package e2e

import (
	"runtime"
	"strings"
	"testing"

	"github.com/registry-edge/registry-edge/internal/testutil/s3test"
)

// Two replicas share a bucket. What one learnt (which repository holds a
// blob, a manifest's media type, that a signed image's content is trusted)
// is in the bucket as records, so the other serves the image by digest,
// under an enforced signature policy, with central down, although it never
// saw the image: without the shared records it could confirm none of it.
func TestReplicasShareMetadata(t *testing.T) {
	t.Parallel()
	crane := need(t, "crane")
	c := startCentral(t)
	signed := pushImage(t, c, "fleet/app", "v1", ociImage(t, runtime.GOARCH, 2, 128<<10))
	_, keyFile := signInCentral(t, c, signed)
	srv := s3test.StartServer(t)
	a, b := startReplica(t, c.addr, srv, "a", fleetPolicy(c, keyFile)), startReplica(t, c.addr, srv, "b", fleetPolicy(c, keyFile))

	readLayout(t, pullOCI(t, crane, signed.ref(a.addr))).checkImage(t, signed)
	// The records are written when the manifest and blobs are; the last
	// layer commits after its last byte reached crane.
	prefix := strings.TrimPrefix(objstoreRoot, "/") + "/"
	want := map[string]string{}
	for _, d := range append([]string{signed.digest}, signed.layers...) {
		want[layerKey(prefix, d)] = d
	}
	h := strings.TrimPrefix(signed.digest, "sha256:")
	want[prefix+"_meta/manifests/sha256/"+h] = signed.digest
	waitBucketHolds(t, srv, prefix, want)

	c.proc.stop() // the uplink is down; b never saw the image
	readLayout(t, pullOCI(t, crane, signed.byDigest(b.addr))).checkImage(t, signed)
	for _, d := range signed.layers {
		resp, body := httpDo(t, "GET", "http://"+b.addr+"/v2/fleet/app/blobs/"+d, nil, nil)
		if resp.StatusCode != 200 || bytesDigest(body) != d {
			t.Errorf("replica b, GET blob %s with central down: %s, digest %s", d, resp.Status, bytesDigest(body))
		}
		// Linked to fleet/app only: another repository does not get it.
		resp, _ = httpDo(t, "GET", "http://"+b.addr+"/v2/fleet/other/blobs/"+d, nil, nil)
		if resp.StatusCode == 200 {
			t.Errorf("replica b served blob %s under fleet/other, which never held it", d)
		}
	}
}
