package e2e

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/registry-edge/registry-edge/internal/config"
	"github.com/registry-edge/registry-edge/internal/testutil/flakyrelay"
)

// docker-compose.yml's demo topology, run as processes with the same
// binaries and configs (no Docker engine here): central, a regional
// registry-edge, a site registry-edge behind a link that is cut every
// 512 KiB. A device pulls through the site and gets central's digests.
func TestDemoTopology(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	b, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	// Compose itself accepts the file (no engine is needed for that).
	run(t, nil, need(t, "docker-compose"), "-f", filepath.Join(root, "docker-compose.yml"), "config", "-q")
	var compose struct {
		Services map[string]struct {
			Volumes []string `yaml:"volumes"`
			Command []string `yaml:"command"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	configs := map[string]string{}
	for _, name := range []string{"central", "regional", "cellular-link", "site"} {
		svc, ok := compose.Services[name]
		if !ok {
			t.Fatalf("docker-compose.yml has no service %q", name)
		}
		for _, v := range svc.Volumes {
			if src, _, ok := strings.Cut(v, ":"); ok && strings.HasPrefix(src, "./config/") {
				if _, err := config.LoadFile(filepath.Join(root, src)); err != nil {
					t.Errorf("service %s mounts %s: %v", name, src, err)
				}
				b, _ := os.ReadFile(filepath.Join(root, src))
				configs[name] = string(b)
			}
		}
	}
	if configs["regional"] == "" || configs["site"] == "" {
		t.Fatalf("the regional and site services must mount their configs from ./config/: %v", configs)
	}

	crane := need(t, "crane")
	c := startCentral(t)
	img := pushImage(t, c, "library/demo", "v1", ociImage(t, runtime.GOARCH, 2, 1<<20))
	regional := startMirror(t, c.addr, mirrorOptions{config: configs["regional"]})
	link := flakyrelay.New(t, regional.addr)
	link.CutEvery(512 << 10)
	link.Throttle(8 << 20)
	site := startMirror(t, link.Addr(), mirrorOptions{config: configs["site"]})

	pullOCI(t, crane, img.ref(site.addr))
	if got := strings.TrimSpace(craneRun(t, crane, "digest", img.ref(site.addr))); got != img.digest {
		t.Errorf("digest at the site = %s, want %s", got, img.digest)
	}
	if link.Cuts() == 0 {
		t.Error("the link was never cut: the demo did not exercise resuming")
	}
	if resp, body := httpDo(t, "GET", "http://"+site.addr+"/status", nil, nil); resp.StatusCode != 200 || !strings.Contains(string(body), "library/demo") {
		t.Errorf("site status page: %s", resp.Status)
	}
}
