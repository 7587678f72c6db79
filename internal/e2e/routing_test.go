package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestRouting runs one mirror in front of two central registries that hold
// different content under the same name, configured as upstreams
// "a.example" (the default) and "b.example", and checks that each way of
// naming an upstream reaches the right one: a repository prefix
// (/v2/b.example/edge/small/...), containerd's ?ns= parameter, and neither
// (the default). crane pulls through the prefix form like any client would.
func TestRouting(t *testing.T) {
	t.Parallel()
	crane := need(t, "crane")
	a, b := startCentral(t), startCentral(t)
	imgA := pushImage(t, a, "edge/small", "v1", ociImage(t, "amd64", 1, 2<<10))
	imgB := pushImage(t, b, "edge/small", "v1", ociImage(t, "amd64", 1, 2<<10))

	dir := t.TempDir()
	conf := filepath.Join(dir, "registry-edge.yaml")
	writeFile(t, conf, fmt.Sprintf(`upstreams:
  - registry: a.example
    url: http://%s
    default: true
  - registry: b.example
    url: http://%s
`, a.addr, b.addr))
	storage := filepath.Join(dir, "storage")
	addr, p := startServer(t, "registry-edge", "/v2/", func(addr string) *process {
		return startProcess(t, "registry-edge", nil, edgeBin, "serve", "--config", conf, "--listen", addr, "--storage", storage)
	})
	m := &mirror{addr: addr, storage: storage, proc: p}

	for _, tc := range []struct {
		name, path string
		want       pushed
	}{
		{"default upstream", "/v2/edge/small/manifests/v1", imgA},
		{"prefix a.example", "/v2/a.example/edge/small/manifests/v1", imgA},
		{"prefix b.example", "/v2/b.example/edge/small/manifests/v1", imgB},
		{"ns=a.example", "/v2/edge/small/manifests/v1?ns=a.example", imgA},
		{"ns=b.example", "/v2/edge/small/manifests/v1?ns=b.example", imgB},
		{"by digest, prefix b.example", "/v2/b.example/edge/small/manifests/" + imgB.digest, imgB},
		{"by digest, ns=b.example", "/v2/edge/small/manifests/" + imgB.digest + "?ns=b.example", imgB},
	} {
		resp, body := httpDo(t, "GET", "http://"+m.addr+tc.path, map[string][]string{"Accept": allMediaTypes}, nil)
		if resp.StatusCode != 200 || string(body) != string(tc.want.raw) {
			t.Errorf("%s: GET %s: %s, digest %s; want the manifest %s", tc.name, tc.path, resp.Status, bytesDigest(body), tc.want.digest)
		}
	}
	// A digest that only b holds is not found through a.
	resp, _ := httpDo(t, "GET", "http://"+m.addr+"/v2/a.example/edge/small/manifests/"+imgB.digest, map[string][]string{"Accept": allMediaTypes}, nil)
	if resp.StatusCode != 404 {
		t.Errorf("b's manifest by digest through a.example: %s, want 404", resp.Status)
	}

	// A real client, through the prefix form.
	l := readLayout(t, pullOCI(t, crane, m.addr+"/b.example/edge/small:v1"))
	l.checkImage(t, imgB)
	if got := strings.TrimSpace(craneRun(t, crane, "digest", m.addr+"/a.example/edge/small:v1")); got != imgA.digest {
		t.Errorf("crane digest through a.example = %s, want %s", got, imgA.digest)
	}
	if n := len(b.requestsBy(0, "registry-edge")); n == 0 {
		t.Errorf("central b saw no request from registry-edge")
	}
}
