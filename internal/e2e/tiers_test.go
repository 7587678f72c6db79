package e2e

import (
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// A site mirror whose upstream is a regional registry-edge, whose upstream
// is central (the demo topology of docker-compose.yml): pulls through the
// site get central's digests, and central serves each blob once for both
// tiers.
func TestTwoTiers(t *testing.T) {
	t.Parallel()
	crane := need(t, "crane")
	c := startCentral(t)
	img := pushImage(t, c, "edge/tiered", "v1", ociImage(t, runtime.GOARCH, 2, 256<<10))
	regional := startMirror(t, c.addr, mirrorOptions{})
	site := startMirror(t, regional.addr, mirrorOptions{})

	mark := len(c.accessLog())
	dir := pullOCI(t, crane, img.ref(site.addr))
	if got := strings.TrimSpace(craneRun(t, crane, "digest", img.ref(site.addr))); got != img.digest {
		t.Errorf("digest through two tiers = %s, want %s", got, img.digest)
	}
	l := readLayout(t, dir) // every blob hashes to its name
	for _, b := range img.blobs {
		if !l.has(b) {
			t.Errorf("pulled layout lacks blob %s", b)
		}
	}
	// A second site pulls the same image: the regional tier serves it, central sees nothing.
	site2 := startMirror(t, regional.addr, mirrorOptions{})
	pullOCI(t, crane, img.ref(site2.addr))

	for _, b := range img.blobs {
		n := 0
		for _, l := range c.accessLog()[mark:] {
			if strings.Contains(l, "GET /v2/edge/tiered/blobs/"+b) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("central served blob %s %d times for two sites behind one regional tier, want 1", b, n)
		}
	}
}

// A site mirror whose upstream is a regional registry-edge that restricts
// private/* to the user "site" (access.htpasswd, anonymous reads of the
// rest, no challengeBase): with the credentials in its upstream auth, the
// site pulls the restricted image (the regional tier's 401 with a Basic
// challenge makes it send them, also over plain HTTP) and the open one; a
// site without them gets the open image and 502 DENIED for the restricted
// one. The password is in neither site's log.
func TestLowerTierWithCredentials(t *testing.T) {
	t.Parallel()
	crane := need(t, "crane")
	c := startCentral(t)
	private := pushImage(t, c, "private/app", "v1", ociImage(t, runtime.GOARCH, 1, 16<<10))
	open := pushImage(t, c, "open/app", "v1", ociImage(t, runtime.GOARCH, 1, 16<<10))
	const password = "tier-pa55word-secret"
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	htpasswd := filepath.Join(dir, "htpasswd")
	writeFile(t, htpasswd, "site:"+string(hash)+"\n")
	regional := startMirror(t, c.addr, mirrorOptions{config: fmt.Sprintf(`access:
  anonymous: true
  htpasswd: %s
  rules:
    - repositories: ["private/*"]
      users: ["site"]
`, htpasswd)})
	secret := filepath.Join(dir, "regional-password")
	writeFile(t, secret, password+"\n")
	site := startMirror(t, "", mirrorOptions{ownUpstreams: true, config: fmt.Sprintf(`upstreams:
  - registry: regional.test
    url: http://%s
    auth:
      username: site
      passwordFile: %s
`, regional.addr, secret)})
	anonymous := startMirror(t, regional.addr, mirrorOptions{})

	for _, img := range []pushed{private, open} {
		if got := strings.TrimSpace(craneRun(t, crane, "digest", img.ref(site.addr))); got != img.digest {
			t.Errorf("digest of %s through the site with credentials = %s, want %s", img.ref(site.addr), got, img.digest)
		}
		l := readLayout(t, pullOCI(t, crane, img.ref(site.addr)))
		for _, b := range img.blobs {
			if !l.has(b) {
				t.Errorf("pulled layout of %s lacks blob %s", img.ref(site.addr), b)
			}
		}
	}
	if got := strings.TrimSpace(craneRun(t, crane, "digest", open.ref(anonymous.addr))); got != open.digest {
		t.Errorf("digest of the open image through the site without credentials = %s, want %s", got, open.digest)
	}
	if _, err := runErr(nil, crane, "digest", "--insecure", private.ref(anonymous.addr)); err == nil || !strings.Contains(err.Error(), "DENIED") {
		t.Errorf("crane digest of the private image through the site without credentials: %v, want DENIED", err)
	}
	for name, m := range map[string]*mirror{"site": site, "anonymous site": anonymous} {
		if strings.Contains(m.proc.log(), password) {
			t.Errorf("the password is in the %s's log", name)
		}
	}
}
