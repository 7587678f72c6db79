package e2e

import (
	"net/http"
	"testing"
)

// TestManifestAccept checks that the mirror answers a manifest request like
// central does when the client's Accept header lists only OCI media types
// and the manifest is a Docker schema2 one (what the distribution-spec
// conformance suite, oras and other OCI-only clients send). Central
// (distribution v3) serves the manifest with its own Content-Type; a
// transparent mirror must too, cold and warm, for GET and HEAD.
func TestManifestAccept(t *testing.T) {
	t.Parallel()
	c := startCentral(t)
	img := pushImage(t, c, "edge/docker", "v1", dockerImage(t, 1, 1<<10))
	m := startMirror(t, c.addr, mirrorOptions{})
	accept := http.Header{"Accept": {
		"application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
	}}
	for _, ref := range []string{img.tag, img.digest} {
		for _, method := range []string{"GET", "HEAD"} {
			want, wantBody := httpDo(t, method, "http://"+c.addr+"/v2/"+img.repo+"/manifests/"+ref, accept, nil)
			if want.StatusCode != 200 {
				t.Fatalf("central: %s %s with an OCI-only Accept: %s", method, ref, want.Status)
			}
			for _, pass := range []string{"first", "second"} {
				got, body := httpDo(t, method, "http://"+m.addr+"/v2/"+img.repo+"/manifests/"+ref, accept, nil)
				if got.StatusCode != want.StatusCode || string(body) != string(wantBody) ||
					got.Header.Get("Content-Type") != want.Header.Get("Content-Type") {
					t.Errorf("%s %s (%s), Accept: OCI types only: mirror %s %q, %d bytes; central %s %q, %d bytes; mirror body %s",
						method, ref, pass, got.Status, got.Header.Get("Content-Type"), len(body),
						want.Status, want.Header.Get("Content-Type"), len(wantBody), body)
					break
				}
			}
		}
	}
}
