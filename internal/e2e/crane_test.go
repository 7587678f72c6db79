package e2e

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestCrane pulls through the mirror with the crane CLI and checks that what
// arrives is what central holds, digest for digest and byte for byte; then
// that a second pull is served from the mirror's store, also with central
// stopped.
func TestCrane(t *testing.T) {
	t.Parallel()
	crane := need(t, "crane")
	c := startCentral(t)
	cor := seedCorpus(t, c)
	m := startMirror(t, c.addr, mirrorOptions{})

	for _, p := range []pushed{cor.small, cor.docker, cor.multi} {
		t.Run(strings.TrimPrefix(p.repo, "edge/"), func(t *testing.T) {
			// digest and manifest by tag and by digest: same as central, byte for byte.
			if got, want := strings.TrimSpace(craneRun(t, crane, "digest", p.ref(m.addr))), strings.TrimSpace(craneRun(t, crane, "digest", p.ref(c.addr))); got != want || got != p.digest {
				t.Errorf("crane digest through the mirror = %s, central says %s, pushed %s", got, want, p.digest)
			}
			centralRaw := craneRun(t, crane, "manifest", p.ref(c.addr))
			for _, ref := range []string{p.ref(m.addr), p.byDigest(m.addr)} {
				if got := craneRun(t, crane, "manifest", ref); got != centralRaw || got != string(p.raw) {
					t.Errorf("crane manifest %s differs from central's:\n got %s\nwant %s", ref, got, centralRaw)
				}
			}
			if got := bytesDigest([]byte(centralRaw)); got != p.digest {
				t.Errorf("central's manifest hashes to %s, pushed %s", got, p.digest)
			}
			// a full pull into an OCI layout (an index is pulled whole).
			l := readLayout(t, pullOCI(t, crane, p.ref(m.addr)))
			l.checkImage(t, p)
			// a single blob.
			if len(p.layers) > 0 {
				if got := bytesDigest([]byte(craneRun(t, crane, "blob", m.addr+"/"+p.repo+"@"+p.layers[0]))); got != p.layers[0] {
					t.Errorf("crane blob %s through the mirror hashes to %s", p.layers[0], got)
				}
			}
			// tags/list
			if got := strings.Fields(craneRun(t, crane, "ls", m.addr+"/"+p.repo)); !slices.Equal(got, []string{p.tag}) {
				t.Errorf("crane ls through the mirror = %q, want [%s]", got, p.tag)
			}
		})
	}

	t.Run("second-pull-is-cached", func(t *testing.T) {
		mark := m.mark(t)
		l := readLayout(t, pullOCI(t, crane, cor.multi.byDigest(m.addr)))
		l.checkImage(t, cor.multi)
		n := 0
		for _, e := range m.requestsSince(t, mark) {
			if e["digest"] == "" {
				continue
			}
			n++
			if e["cache"] != "hit" {
				t.Errorf("second pull: %s %s %s answered with cache=%q, want hit", e["method"], e["repo"], e["digest"], e["cache"])
			}
		}
		if n == 0 {
			t.Errorf("second pull: no by-digest request in the mirror's access log")
		}
	})

	t.Run("central-down", func(t *testing.T) {
		// Everything pulled once is served with the upstream gone: by
		// digest always, by tag while the tag is fresh (default tagTTL 5m,
		// far longer than this test).
		c.proc.stop()
		for _, p := range []pushed{cor.small, cor.docker, cor.multi} {
			l := readLayout(t, pullOCI(t, crane, p.byDigest(m.addr)))
			l.checkImage(t, p)
			if got := strings.TrimSpace(craneRun(t, crane, "digest", p.ref(m.addr))); got != p.digest {
				t.Errorf("crane digest %s with central down = %s, want %s", p.ref(m.addr), got, p.digest)
			}
		}
	})
}

// TestMovingTag checks that a tag moved on central is followed by a mirror
// with tagTTL 0 (every tag request revalidated), while content pulled by
// digest stays available, and that a mirror with the default TTL keeps
// answering from its cache within the TTL.
func TestMovingTag(t *testing.T) {
	t.Parallel()
	crane := need(t, "crane")
	c := startCentral(t)
	fresh := startMirror(t, c.addr, mirrorOptions{tagTTL: "0s"})
	cached := startMirror(t, c.addr, mirrorOptions{})

	a := pushImage(t, c, "edge/moving", "latest", ociImage(t, "amd64", 1, 4<<10))
	for _, m := range []*mirror{fresh, cached} {
		if got := strings.TrimSpace(craneRun(t, crane, "digest", a.ref(m.addr))); got != a.digest {
			t.Fatalf("before the move: crane digest through the mirror = %s, want %s", got, a.digest)
		}
	}
	b := pushImage(t, c, "edge/moving", "latest", ociImage(t, "amd64", 1, 4<<10))

	if got := strings.TrimSpace(craneRun(t, crane, "digest", b.ref(fresh.addr))); got != b.digest {
		t.Errorf("after the move, tagTTL 0: crane digest = %s, want the new %s (old %s)", got, b.digest, a.digest)
	}
	l := readLayout(t, pullOCI(t, crane, b.ref(fresh.addr)))
	l.checkImage(t, b)
	if got := craneRun(t, crane, "manifest", a.byDigest(fresh.addr)); got != string(a.raw) {
		t.Errorf("the old manifest by digest changed: %s", got)
	}

	if got := strings.TrimSpace(craneRun(t, crane, "digest", a.ref(cached.addr))); got != a.digest {
		t.Errorf("after the move, default tagTTL: crane digest = %s, want the cached %s", got, a.digest)
	}
}

// pullOCI runs crane pull --format oci into a new directory and returns it.
func pullOCI(t *testing.T, crane, ref string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "oci")
	run(t, nil, crane, "--insecure", "pull", "--format", "oci", ref, dir)
	return dir
}

// craneRun runs crane --insecure args and returns its stdout.
func craneRun(t *testing.T, crane string, args ...string) string {
	t.Helper()
	return run(t, nil, crane, append([]string{"--insecure"}, args...)...)
}
