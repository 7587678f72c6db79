package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestPodman pulls central's images with podman configured, through
// CONTAINERS_REGISTRIES_CONF, to use registry-edge as the mirror of central.
// It checks the pulled digests, that the mirror served the pulls and that
// podman never went to central itself. Storage is private (--root,
// --runroot, vfs driver), so the test leaves the host's podman untouched.
func TestPodman(t *testing.T) {
	t.Parallel()
	podman := need(t, "podman")
	needRoot(t, "rootless podman needs subuid/subgid mappings this test does not set up")
	c := startCentral(t)
	cor := seedCorpus(t, c)
	// Central by name, not the default upstream: the mirror routes by the
	// location's registry prefix.
	m := startMirror(t, c.addr, mirrorOptions{config: namedCentral(c, false), ownUpstreams: true})
	policy := writePolicy(t)
	conf := writeRegistriesConf(t, centralName, m.addr)
	// An empty containers.conf and a storage.conf of our own keep the
	// host's settings out;
	// storage is private (--root, --runroot, --tmpdir under a temp dir, vfs
	// driver: plain directories, no mounts), so t.TempDir removes it all.
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "containers.conf"), "")
	writeFile(t, filepath.Join(dir, "storage.conf"), fmt.Sprintf("[storage]\ndriver = \"vfs\"\nrunroot = %q\ngraphroot = %q\n",
		filepath.Join(dir, "runroot"), filepath.Join(dir, "root")))
	env := []string{
		"CONTAINERS_REGISTRIES_CONF=" + conf,
		"CONTAINERS_CONF=" + filepath.Join(dir, "containers.conf"),
		"CONTAINERS_STORAGE_CONF=" + filepath.Join(dir, "storage.conf"),
	}
	pm := func(args ...string) string {
		t.Helper()
		base := []string{
			"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "runroot"),
			"--tmpdir", filepath.Join(dir, "tmp"), "--storage-driver", "vfs",
			"--cgroup-manager", "cgroupfs", "--events-backend", "file",
		}
		return run(t, env, podman, append(base, args...)...)
	}
	cmark, mmark := len(c.accessLog()), m.mark(t)
	for _, p := range []pushed{cor.small, cor.docker, cor.multi} {
		pm("pull", "--quiet", "--signature-policy", policy, p.ref(centralName))
		var info []struct {
			Digest      string
			RepoDigests []string
		}
		if err := json.Unmarshal([]byte(pm("image", "inspect", p.ref(centralName))), &info); err != nil || len(info) != 1 {
			t.Fatalf("podman image inspect %s: %v", p.ref(centralName), err)
		}
		// For an index, podman records the index digest as the image's
		// Digest and both the index and the instance it chose (the host's
		// platform, children[0]) in RepoDigests.
		if info[0].Digest != p.digest {
			t.Errorf("podman image %s: Digest %s, want %s", p.ref(centralName), info[0].Digest, p.digest)
		}
		for _, d := range append([]pushed{p}, p.children[:min(1, len(p.children))]...) {
			if want := centralName + "/" + p.repo + "@" + d.digest; !slices.Contains(info[0].RepoDigests, want) {
				t.Errorf("podman image %s: RepoDigests %v lack %s", p.ref(centralName), info[0].RepoDigests, want)
			}
		}
		t.Logf("podman image %s: Digest %s, RepoDigests %v", p.repo, info[0].Digest, info[0].RepoDigests)
		if servedRepo(m.requestsSince(t, mmark), centralName+"/"+p.repo) == 0 {
			t.Errorf("the mirror's access log shows no request for %s: podman did not use the mirror", p.repo)
		}
	}
	if direct := c.requestsBy(cmark, "containers/"); len(direct) > 0 {
		t.Errorf("podman went to central directly despite the mirror:\n%s", strings.Join(direct, "\n"))
	}
}
