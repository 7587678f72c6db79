package e2e

import (
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/testutil/cosigntest"
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
	key := cosigntest.NewKey(t)
	sigTag := cosigntest.SignatureTag(digest.Digest(signed.digest))
	if err := remote.Write(parseRef(t, c.addr+"/fleet/app:"+sigTag), key.Sign(t, c.addr+"/fleet/app", digest.Digest(signed.digest))); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "cosign.pub")
	writeFile(t, keyFile, key.PublicPEM)
	srv := s3test.StartServer(t)

	replica := func(id string) *mirror {
		root := filepath.Join(t.TempDir(), "storage")
		cfg := objstoreConfig(root, s3Settings{bucket: srv.Bucket, endpoint: srv.Endpoint, accessKey: srv.AccessKey, secretKey: srv.SecretKey}) +
			fmt.Sprintf("    replica:\n      id: %s\n", id) + `signatures:
  rules:
    - name: fleet
      repositories: ["` + strings.ToLower(c.addr) + `/fleet/**"]
      mode: enforce
      keys: [` + keyFile + `]
`
		return startMirror(t, c.addr, mirrorOptions{storage: root, config: cfg})
	}
	a, b := replica("a"), replica("b")

	readLayout(t, pullOCI(t, crane, signed.ref(a.addr))).checkImage(t, signed)
	// The records are written when the manifest and blobs are; the last
	// layer commits after its last byte reached crane.
	prefix := strings.TrimPrefix(objstoreRoot, "/") + "/"
	want := map[string]string{}
	for _, d := range append([]string{signed.digest}, signed.layers...) {
		h := strings.TrimPrefix(d, "sha256:")
		want[prefix+"blobs/sha256/"+h[:2]+"/"+h] = d
	}
	h := strings.TrimPrefix(signed.digest, "sha256:")
	want[prefix+"_meta/manifests/sha256/"+h] = signed.digest
	deadline := time.Now().Add(30 * time.Second)
	for {
		missing, _ := objstoreProblems(listKeys(t, srv.Client(), srv.Bucket, prefix), want, prefix)
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30s the bucket lacks %v", missing)
		}
		time.Sleep(100 * time.Millisecond)
	}

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
