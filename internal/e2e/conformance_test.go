package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestConformanceReadOnly runs the OCI distribution-spec conformance suite's
// pull workflow against the mirror: the content is pushed to central, and
// the suite is told which tags, manifests and blobs to GET and HEAD through
// the mirror (OCI_RO_DATA_*). Every pull test must pass.
func TestConformanceReadOnly(t *testing.T) {
	t.Parallel()
	suite := need(t, "conformance")
	c := startCentral(t)
	const repo = "conformance/ro"
	small := pushImage(t, c, repo, "small", ociImage(t, "amd64", 2, 8<<10))
	docker := pushImage(t, c, repo, "docker", dockerImage(t, 2, 8<<10))
	multi := pushIndex(t, c, repo, "multi", ociImage(t, "amd64", 1, 8<<10), ociImage(t, "arm64", 1, 8<<10))
	m := startMirror(t, c.addr, mirrorOptions{})

	manifests := []string{multi.digest, small.digest, docker.digest}
	var blobs []string
	for _, p := range append([]pushed{small, docker}, multi.children...) {
		if p.tag == "" {
			manifests = append(manifests, p.digest)
		}
		for _, b := range p.blobs {
			if !slices.Contains(blobs, b) {
				blobs = append(blobs, b)
			}
		}
	}
	env := map[string]string{
		"OCI_REPO1":    repo,
		"OCI_REPO2":    repo,
		"OCI_API_PUSH": "false",
		// A read-only mirror cannot delete.
		"OCI_API_BLOBS_DELETE":     "false",
		"OCI_API_MANIFESTS_DELETE": "false",
		"OCI_API_TAGS_DELETE":      "false",
		// The central registry (distribution v3.1.2) has no referrers API,
		// so there is nothing for the mirror to pass through.
		"OCI_API_REFERRER": "false",
		// The suite splits these lists on single spaces.
		"OCI_RO_DATA_TAGS":      "multi small docker",
		"OCI_RO_DATA_MANIFESTS": strings.Join(manifests, " "),
		"OCI_RO_DATA_BLOBS":     strings.Join(blobs, " "),
	}
	// The same run against central first: it must pass there, or the test
	// data (not the mirror) is wrong.
	base := runConformance(t, suite, with(env, "OCI_REGISTRY", c.addr))
	if f := base.failures(); len(f) > 0 || base.count("Pass") == 0 {
		t.Fatalf("read-only conformance against central itself: %d passed, failures:\n%s", base.count("Pass"), strings.Join(f, "\n"))
	}
	rep := runConformance(t, suite, with(env, "OCI_REGISTRY", m.addr))
	if rep.count("Pass") == 0 {
		t.Fatalf("the conformance suite passed nothing; stdout:\n%s", tail(rep.stdout, 80))
	}
	if f := rep.failures(); len(f) > 0 {
		t.Errorf("read-only conformance through the mirror: %d failing tests (all pass against central):\n%s", len(f), strings.Join(f, "\n"))
	}
	t.Logf("read-only conformance through the mirror: %d passed, %d disabled, %d skipped; central: %d passed",
		rep.count("Pass"), rep.count("Disabled"), rep.count("Skip"), base.count("Pass"))
}

// TestConformanceSplit runs the full conformance suite (push, pull, tags,
// referrers...) through a split proxy that sends every write to central and
// every GET/HEAD to the mirror, so that the mirror's read path is checked
// against content the suite generates. The same suite also runs against
// central directly; the split run must show no failure central does not.
//
// Deletes are disabled in both runs: a delete reaches central, but the
// mirror keeps serving the verified, content-addressed copy it holds (that
// is its job when the upstream loses content or goes away), so the suite's
// delete-then-expect-404 checks cannot pass through a cache. The mirror runs
// with tagTTL 0 so that a tag the suite re-points is revalidated on every
// read; with the default TTL it would answer from its tag cache for 5
// minutes by design.
func TestConformanceSplit(t *testing.T) {
	t.Parallel()
	suite := need(t, "conformance")
	env := map[string]string{
		"OCI_REPO1":                "conformance/repo1",
		"OCI_REPO2":                "conformance/repo2",
		"OCI_API_BLOBS_DELETE":     "false",
		"OCI_API_MANIFESTS_DELETE": "false",
		"OCI_API_TAGS_DELETE":      "false",
	}
	var direct, split *confReport
	t.Run("runs", func(t *testing.T) {
		t.Run("central", func(t *testing.T) {
			t.Parallel()
			c := startCentral(t)
			direct = runConformance(t, suite, with(env, "OCI_REGISTRY", c.addr))
		})
		t.Run("split", func(t *testing.T) {
			t.Parallel()
			c := startCentral(t)
			m := startMirror(t, c.addr, mirrorOptions{tagTTL: "0s"})
			sp := startSplitProxy(t, c.addr, m.addr)
			split = runConformance(t, suite, with(env, "OCI_REGISTRY", sp))
		})
	})
	if direct == nil || split == nil {
		t.Fatal("a conformance run did not complete")
	}
	if direct.count("Pass") == 0 || split.count("Pass") == 0 {
		t.Fatalf("a conformance run passed nothing: central %d, split %d", direct.count("Pass"), split.count("Pass"))
	}
	centralFails := map[string]bool{}
	for _, l := range direct.leaves {
		if l.failed() {
			centralFails[l.name] = true
		}
	}
	var extra []string
	for _, l := range split.leaves {
		if l.failed() && !centralFails[l.name] {
			extra = append(extra, l.String())
		}
	}
	if len(extra) > 0 {
		t.Errorf("%d tests fail through the mirror but pass against central:\n%s", len(extra), strings.Join(extra, "\n"))
	}
	t.Logf("central: %d passed, %d failed; through the mirror: %d passed, %d failed (%d of them also on central)",
		direct.count("Pass"), len(direct.failures()), split.count("Pass"), len(split.failures()), len(split.failures())-len(extra))
}

// startSplitProxy serves GET and HEAD from the mirror and everything else
// (and every upload URL) from central. The client's Host header is passed
// on, so the upload locations central builds point back at the proxy.
func startSplitProxy(t *testing.T, central, mirror string) string {
	t.Helper()
	wp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: central})
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: mirror})
	wp.FlushInterval, rp.FlushInterval = -1, -1
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) && !strings.Contains(r.URL.Path, "/blobs/uploads/") {
			rp.ServeHTTP(w, r)
			return
		}
		wp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func with(env map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for ek, ev := range env {
		out[ek] = ev
	}
	return out
}

// confReport is the parsed stdout of one conformance run.
type confReport struct {
	result string // "OCI Conformance Result: <result>"
	leaves []confLeaf
	stdout string
}

// confLeaf is one leaf test of the suite's result tree.
type confLeaf struct {
	name, status string
	errs         []string
}

func (l confLeaf) failed() bool { return l.status == "FAIL" || l.status == "Error" }

func (l confLeaf) String() string {
	s := "  " + l.name + ": " + l.status
	for _, e := range l.errs {
		s += "\n      " + e
	}
	return s
}

func (r *confReport) count(status string) int {
	n := 0
	for _, l := range r.leaves {
		if l.status == status {
			n++
		}
	}
	return n
}

func (r *confReport) failures() []string {
	var out []string
	for _, l := range r.leaves {
		if l.failed() {
			out = append(out, l.String())
		}
	}
	return out
}

var (
	confNode = regexp.MustCompile(`^(\s*)(\S.*): (Pass|Skip|Disabled|FAIL|Error|Unknown)$`)
	confErr  = regexp.MustCompile(`^\s* - (.*)$`)
)

// parseConformance reads the result tree the suite prints to stdout
// ("Test results" up to "Configuration:"): one "<indent><name>: <status>"
// line per node, and " - <error>" lines under failing leaves.
func parseConformance(stdout string) *confReport {
	r := &confReport{stdout: stdout}
	type node struct {
		indent int
		leaf   confLeaf
	}
	var nodes []node
	in := false
	for _, line := range strings.Split(stdout, "\n") {
		switch {
		case line == "Test results":
			in = true
			continue
		case strings.HasPrefix(line, "Configuration:"):
			in = false
		case strings.HasPrefix(line, "OCI Conformance Result: "):
			r.result = strings.TrimSpace(strings.TrimPrefix(line, "OCI Conformance Result: "))
		}
		if !in {
			continue
		}
		if m := confNode.FindStringSubmatch(line); m != nil {
			nodes = append(nodes, node{indent: len(m[1]), leaf: confLeaf{name: m[2], status: m[3]}})
		} else if m := confErr.FindStringSubmatch(line); m != nil && len(nodes) > 0 {
			nodes[len(nodes)-1].leaf.errs = append(nodes[len(nodes)-1].leaf.errs, m[1])
		} else if strings.TrimSpace(line) != "" && len(nodes) > 0 && len(nodes[len(nodes)-1].leaf.errs) > 0 {
			// continuation of a multi-line error
			e := nodes[len(nodes)-1].leaf.errs
			e[len(e)-1] += " " + strings.TrimSpace(line)
		}
	}
	for i, n := range nodes {
		if i+1 < len(nodes) && nodes[i+1].indent > n.indent {
			continue // has children
		}
		r.leaves = append(r.leaves, n.leaf)
	}
	return r
}

// runConformance runs the suite binary with env (and no other OCI_*
// variable) in a temp dir, and parses its report. The exit status is not
// used: the suite exits 1 on any failure and, in read-only mode, panics
// writing results.yaml after printing the report.
func runConformance(t *testing.T, suite string, env map[string]string) *confReport {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, suite)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OCI_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "OCI_TLS=disabled", "OCI_RESULTS_DIR="+filepath.Join(dir, "results"), "OCI_LOG=warn")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("conformance suite timed out; stdout tail:\n%s", tail(stdout.String(), 40))
	}
	for _, bad := range []string{"failed to load config", "failed to setup test"} {
		if strings.Contains(stderr.String(), bad) {
			t.Fatalf("conformance suite did not run: %s", tail(stderr.String(), 20))
		}
	}
	rep := parseConformance(stdout.String())
	if rep.result == "" || len(rep.leaves) == 0 {
		t.Fatalf("conformance suite printed no report (exit: %v)\nstdout:\n%s\nstderr:\n%s", runErr, tail(stdout.String(), 40), tail(stderr.String(), 40))
	}
	t.Logf("conformance against %s: result %s (suite exit: %v)", env["OCI_REGISTRY"], rep.result, runErr)
	return rep
}
