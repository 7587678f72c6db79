package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestContainerd pulls central's images with a private containerd whose
// hosts.toml declares registry-edge as the mirror of central, the way k3s
// and containerd nodes are configured. It checks the image digests, that
// the mirror served the pulls (requests carry ?ns=<central>, which routes
// them), and that containerd never fell back to central.
func TestContainerd(t *testing.T) {
	t.Parallel()
	ctr := need(t, "ctr")
	containerd := need(t, "containerd")
	needRoot(t, "containerd needs root for its snapshotter and state directories")
	c := startCentral(t)
	cor := seedCorpus(t, c)
	m := startMirror(t, c.addr, mirrorOptions{})
	sock := startContainerd(t, containerd, ctr)

	hosts := filepath.Join(t.TempDir(), "certs.d")
	// The shipped example (config/devices), rendered for this topology.
	writeFile(t, filepath.Join(hosts, c.addr, "hosts.toml"), deviceExample(t, "containerd-hosts.toml", deviceVars{
		Registry: c.addr, UpstreamURL: "http://" + c.addr, Mirror: m.addr}))

	ctrRun := func(args ...string) string {
		t.Helper()
		return run(t, nil, ctr, append([]string{"--address", sock, "--namespace", "e2e"}, args...)...)
	}
	cmark, mmark := len(c.accessLog()), m.mark(t)
	for _, p := range []pushed{cor.small, cor.docker, cor.multi} {
		// The native snapshotter works on any filesystem; unpacking proves
		// the layers are intact tar streams.
		ctrRun("image", "pull", "--hosts-dir", hosts, "--snapshotter", "native", p.ref(c.addr))
		if got := ctrImageDigest(t, ctrRun("image", "ls"), p.ref(c.addr)); got != p.digest {
			t.Errorf("ctr image %s has digest %s, want %s", p.ref(c.addr), got, p.digest)
		}
		n := 0
		for _, e := range m.requestsSince(t, mmark) {
			if e["repo"] == p.repo {
				n++
				if e["ns"] != c.addr {
					t.Errorf("mirror request for %s without ns=%s: %v", p.repo, c.addr, e)
				}
			}
		}
		if n == 0 {
			t.Errorf("the mirror's access log shows no request for %s: containerd did not use the mirror", p.repo)
		}
		t.Logf("ctr pulled %s (%s): %d requests served by the mirror", p.ref(c.addr), p.digest, n)
	}
	if direct := c.requestsBy(cmark, "containerd"); len(direct) > 0 {
		t.Errorf("containerd went to central directly (the mirror failed it?):\n%s", strings.Join(direct, "\n"))
	}
	ups := c.requestsBy(cmark, "registry-edge")
	if len(ups) == 0 {
		t.Errorf("central saw no request from registry-edge, yet the pulls succeeded")
	}
	t.Logf("central saw %d requests from registry-edge and none from containerd", len(ups))
}

// startContainerd starts a private containerd (own root, state and socket
// under a new short temp dir: socket paths are limited to 108 bytes) and
// returns its socket.
func startContainerd(t *testing.T, containerd, ctr string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "e2e-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // runs after containerd stopped (cleanups are LIFO)
	sock := filepath.Join(dir, "containerd.sock")
	conf := filepath.Join(dir, "config.toml")
	// The CRI plugin is not needed for pulls and wants CNI and more.
	writeFile(t, conf, fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", filepath.Join(dir, "opt")))
	p := startProcess(t, "containerd", nil, containerd, "--config", conf, "--log-level", "info")
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := runErr(nil, ctr, "--address", sock, "version")
		if err == nil {
			return sock
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("containerd did not come up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ctrImageDigest finds ref in `ctr image ls` output (REF TYPE DIGEST ...).
func ctrImageDigest(t *testing.T, ls, ref string) string {
	t.Helper()
	for _, line := range strings.Split(ls, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == ref {
			return f[2]
		}
	}
	t.Errorf("ctr image ls does not list %s:\n%s", ref, ls)
	return ""
}
