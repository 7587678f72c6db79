package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/template"
)

// TestSkopeo copies images out of the mirror with skopeo (containers/image)
// and checks digests and manifests against central. It also uses the mirror
// the way containers/image clients are configured in the field: a
// registries.conf [[registry.mirror]] for the central registry.
func TestSkopeo(t *testing.T) {
	t.Parallel()
	skopeo := need(t, "skopeo")
	c := startCentral(t)
	cor := seedCorpus(t, c)
	m := startMirror(t, c.addr, mirrorOptions{})
	policy := writePolicy(t)
	sk := func(t *testing.T, args ...string) string {
		t.Helper()
		return run(t, nil, skopeo, append([]string{"--policy", policy}, args...)...)
	}

	t.Run("inspect-raw", func(t *testing.T) {
		for _, p := range []pushed{cor.small, cor.docker, cor.multi} {
			raw := sk(t, "inspect", "--tls-verify=false", "--raw", "docker://"+p.ref(m.addr))
			if raw != string(p.raw) {
				t.Errorf("skopeo inspect --raw %s through the mirror differs from what central holds:\n got %s\nwant %s", p.repo, raw, p.raw)
			}
			var info struct{ Digest string }
			if err := json.Unmarshal([]byte(sk(t, "inspect", "--tls-verify=false", "docker://"+p.ref(m.addr))), &info); err != nil {
				t.Fatal(err)
			}
			if info.Digest != p.digest {
				t.Errorf("skopeo inspect %s: Digest %s, want %s", p.repo, info.Digest, p.digest)
			}
		}
	})

	t.Run("copy-oci", func(t *testing.T) {
		// An OCI image goes into an OCI layout unchanged.
		dir := filepath.Join(t.TempDir(), "oci")
		sk(t, "copy", "--src-tls-verify=false", "docker://"+cor.small.ref(m.addr), "oci:"+dir+":v1")
		readLayout(t, dir).checkImage(t, cor.small)
	})

	t.Run("copy-all-index", func(t *testing.T) {
		// skopeo copy --all re-serialises an index (containers/image rewrites
		// the instance list), so its digest in the layout is not central's:
		// compare with the same copy made from central directly, and check
		// that every child manifest and blob arrived byte for byte.
		viaMirror, direct := filepath.Join(t.TempDir(), "mirror"), filepath.Join(t.TempDir(), "central")
		sk(t, "copy", "--all", "--src-tls-verify=false", "docker://"+cor.multi.ref(m.addr), "oci:"+viaMirror+":v1")
		sk(t, "copy", "--all", "--src-tls-verify=false", "docker://"+cor.multi.ref(c.addr), "oci:"+direct+":v1")
		lm, lc := readLayout(t, viaMirror), readLayout(t, direct)
		if got, want := lm.topDigests(), lc.topDigests(); !slices.Equal(got, want) {
			t.Errorf("skopeo copy --all through the mirror wrote index %v, from central %v", got, want)
		}
		for _, child := range cor.multi.children {
			lm.checkContent(t, child)
		}
	})

	t.Run("copy-dir", func(t *testing.T) {
		// A Docker schema2 image is kept as it is in a dir: destination
		// (an oci: destination would convert it).
		dir := filepath.Join(t.TempDir(), "dir")
		sk(t, "copy", "--src-tls-verify=false", "docker://"+cor.docker.ref(m.addr), "dir:"+dir)
		b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != string(cor.docker.raw) {
			t.Errorf("skopeo copy dir: manifest differs from central's:\n got %s\nwant %s", b, cor.docker.raw)
		}
		for _, d := range cor.docker.blobs {
			if got := fileDigest(t, filepath.Join(dir, strings.TrimPrefix(d, "sha256:"))); got != d {
				t.Errorf("skopeo copy dir: blob %s hashes to %s", d, got)
			}
		}
	})

	t.Run("registries-conf-mirror", func(t *testing.T) {
		// skopeo 1.9 ignores CONTAINERS_REGISTRIES_CONF; --registries-conf works.
		// Central by name, not the default upstream: the mirror routes by
		// the location's registry prefix.
		m := startMirror(t, c.addr, mirrorOptions{config: namedCentral(c, false), ownUpstreams: true})
		conf := writeRegistriesConf(t, centralName, m.addr)
		cmark, mmark := len(c.accessLog()), m.mark(t)
		dir := filepath.Join(t.TempDir(), "dir")
		sk(t, "--registries-conf", conf, "copy", "docker://"+cor.small.ref(centralName), "dir:"+dir)
		b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
		if err != nil {
			t.Fatal(err)
		}
		if got := bytesDigest(b); got != cor.small.digest {
			t.Errorf("skopeo copy via registries.conf mirror: manifest digest %s, want %s", got, cor.small.digest)
		}
		if served := servedRepo(m.requestsSince(t, mmark), centralName+"/"+cor.small.repo); served == 0 {
			t.Errorf("the mirror's access log shows no request for %s: the pull did not go through the mirror", cor.small.repo)
		}
		if direct := c.requestsBy(cmark, "skopeo"); len(direct) > 0 {
			t.Errorf("skopeo went to central directly despite the mirror:\n%s", strings.Join(direct, "\n"))
		}
	})
}

// writePolicy writes a containers-policy.json(5) that accepts anything, so
// that the tests do not depend on /etc/containers/policy.json.
func writePolicy(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.json")
	writeFile(t, p, `{"default":[{"type":"insecureAcceptAnything"}]}`+"\n")
	return p
}

// writeRegistriesConf renders the shipped containers-registries.conf(5)
// example (config/devices/podman-registries.conf): pulls of registry's
// images go to the mirror first (plain HTTP for both). containers/image
// sends a mirror the repository under the mirror location's path, which
// cannot hold a host:port: the registry is a name without a port that the
// mirror knows as an upstream (namedCentral) and devices pull by.
func writeRegistriesConf(t *testing.T, registry, mirror string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "registries.conf")
	writeFile(t, p, deviceExample(t, "podman-registries.conf", deviceVars{Registry: registry, Mirror: mirror, InsecureUpstream: true}))
	return p
}

// centralName is the name devices pull central's images by in the
// registries.conf tests: it resolves nowhere, so a pull that does not go
// through the mirror fails.
const centralName = "central.test"

// namedCentral is an upstreams block naming central centralName; with
// isDefault false, the default upstream is a registry that refuses
// connections, so a request routed by default instead of by the
// centralName prefix fails.
func namedCentral(c *central, isDefault bool) string {
	y := "upstreams:\n"
	if !isDefault {
		y += "  - registry: elsewhere.test\n    url: http://127.0.0.1:9\n    default: true\n"
	}
	return y + fmt.Sprintf("  - registry: %s\n    url: http://%s\n", centralName, c.addr)
}

// deviceVars fill the device-side examples.
type deviceVars struct {
	Registry, UpstreamURL, Mirror string
	InsecureUpstream              bool
}

// deviceExample renders config/devices/name.
func deviceExample(t *testing.T, name string, v deviceVars) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "config", "devices", name))
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := template.New(name).Option("missingkey=error").Parse(string(b))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var out strings.Builder
	if err := tmpl.Execute(&out, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return out.String()
}

// servedRepo counts successful (2xx) access-log entries for repo.
func servedRepo(entries []logEntry, repo string) int {
	n := 0
	for _, e := range entries {
		if e["repo"] == repo && strings.HasPrefix(e["status"], "2") {
			n++
		}
	}
	return n
}
