package main

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/sigpolicy"
	"github.com/registry-edge/registry-edge/internal/testutil/cosigntest"
	"github.com/registry-edge/registry-edge/internal/testutil/layergen"
)

// signImage signs manifest d of repo (host/repository) with key and pushes
// the signature under cosign's tag, as cosign sign --tlog-upload=false.
func signImage(t *testing.T, key *cosigntest.Key, repo string, d digest.Digest) {
	t.Helper()
	sig := key.Sign(t, repo, d)
	if err := remote.Write(ref(t, repo+":"+cosigntest.SignatureTag(d)), sig); err != nil {
		t.Fatalf("push signature of %s: %v", d, err)
	}
}

// writeFile writes content to name in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// policyFile writes a registry-edge config whose signatures block has one
// rule for the repositories glob, trusting the key in keyFile, and returns
// its path.
func policyFile(t *testing.T, glob, mode, keyFile string) string {
	t.Helper()
	cfg := ""
	if registry, _, _ := strings.Cut(glob, "/"); !strings.Contains(registry, "*") {
		// A mirror's config names the registry its rules are about.
		cfg = fmt.Sprintf("upstreams: [{registry: %q, url: %q, default: true}]\n", registry, "http://"+registry)
	}
	cfg += fmt.Sprintf(`signatures:
  rules:
    - name: fleet
      repositories: [%q]
      mode: %s
      keys: [%q]
`, glob, mode, keyFile)
	return writeFile(t, t.TempDir(), "registry-edge.yaml", cfg)
}

// verifyJSON runs deltactl verify --format json, checks its exit status and
// returns the report.
func verifyJSON(t *testing.T, code int, args ...string) verifyReport {
	t.Helper()
	r := deltactl(t, append([]string{"verify", "--format", "json"}, args...)...)
	if r.code != code {
		t.Fatalf("deltactl verify %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, code, r.stdout, r.stderr)
	}
	if code == 1 {
		checkFailure(t, r, 1, "manifest(s) would be denied")
	}
	var rep verifyReport
	decodeStrict(t, r.stdout, &rep)
	return rep
}

func hashDigest(t *testing.T, m interface{ Digest() (v1.Hash, error) }) digest.Digest {
	t.Helper()
	h, err := m.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return digest.Digest(h.String())
}

// TestVerifyImage checks single images: signed by the rule's key, unsigned,
// signed by another key, and unsigned under warn.
func TestVerifyImage(t *testing.T) {
	t.Parallel()
	host := newRegistry(t, false)
	trusted, other := cosigntest.NewKey(t), cosigntest.NewKey(t)
	keyFile := writeFile(t, t.TempDir(), "cosign.pub", trusted.PublicPEM)

	tests := []struct {
		name   string
		signer *cosigntest.Key
		mode   string
		code   int
		want   verifyManifest // Digest, Platform, Rule, Mode, OK, Allowed, Reason
	}{
		{"signed", trusted, "enforce", 0, verifyManifest{OK: true, Allowed: true, Reason: sigpolicy.ReasonVerified}},
		{"unsigned", nil, "enforce", 1, verifyManifest{Reason: sigpolicy.ReasonNoSignature}},
		{"another key", other, "enforce", 1, verifyManifest{Reason: sigpolicy.ReasonWrongKey}},
		{"unsigned under warn", nil, "warn", 0, verifyManifest{Allowed: true, Reason: sigpolicy.ReasonNoSignature}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			repo := fmt.Sprintf("%s/edge/app%d", host, i)
			img := testImage(t, "amd64", layer(t, goGzip, layergen.New(uint64(700+i), 4, 2<<10)))
			pushImage(t, repo+":1", img)
			d := hashDigest(t, img)
			if tt.signer != nil {
				signImage(t, tt.signer, repo, d)
			}
			pol := policyFile(t, strings.ToLower(host)+"/edge/**", tt.mode, keyFile)

			rep := verifyJSON(t, tt.code, "--policy", pol, repo+":1")
			if rep.Image != repo+":1" || rep.Registry != host || rep.Repository != fmt.Sprintf("edge/app%d", i) || len(rep.Manifests) != 1 {
				t.Fatalf("verify report = %+v", rep)
			}
			got := rep.Manifests[0]
			want := tt.want
			want.Digest, want.Platform, want.Rule, want.Mode = d, "linux/amd64", "fleet", sigpolicy.Mode(tt.mode)
			if d := cmp.Diff(want, got, cmpVerdictOutcome); d != "" {
				t.Errorf("verdict (-want +got):\n%s", d)
			}
			switch {
			case got.OK && !strings.HasPrefix(got.Signer, "key sha256:"):
				t.Errorf("signer = %q, want the key's fingerprint", got.Signer)
			case got.OK && got.Signature != "tag "+cosigntest.SignatureTag(d)+" layer 0":
				t.Errorf("signature = %q", got.Signature)
			case !got.OK && !strings.Contains(got.Message, string(got.Reason)):
				t.Errorf("message %q does not name the reason %s", got.Message, got.Reason)
			}

			// The table says the same.
			r := deltactl(t, "verify", "--policy", pol, repo+":1")
			if r.code != tt.code {
				t.Errorf("verify (table): exit %d, want %d", r.code, tt.code)
			}
			served := "yes"
			if !want.Allowed {
				served = "no"
			}
			if !strings.Contains(r.stdout, "linux/amd64  fleet  "+tt.mode) || !strings.Contains(r.stdout, string(want.Reason)) ||
				!strings.Contains(r.stdout, " "+served+" ") {
				t.Errorf("verify table:\n%s", r.stdout)
			}
		})
	}
}

// cmpVerdictOutcome compares what a test can predict of a verdict.
var cmpVerdictOutcome = cmp.FilterPath(func(p cmp.Path) bool {
	switch p.Last().String() {
	case ".Message", ".Signer", ".Signature", ".Detail":
		return true
	}
	return false
}, cmp.Ignore())

// TestVerifyIndex checks a multi-arch index: a signed index covers its
// unsigned children; a child signed itself verifies on its own; an
// unsigned index under enforce is denied even if its children are signed.
func TestVerifyIndex(t *testing.T) {
	t.Parallel()
	host := newRegistry(t, true)
	key := cosigntest.NewKey(t)
	keyFile := writeFile(t, t.TempDir(), "cosign.pub", key.PublicPEM)
	pol := policyFile(t, strings.ToLower(host)+"/edge/**", "enforce", keyFile)

	amd := testImage(t, "amd64", layer(t, goGzip, layergen.New(800, 4, 2<<10)))
	arm := testImage(t, "arm64", layer(t, goGzip, layergen.New(801, 4, 2<<10)))
	idx := testIndex(t, amd, arm)
	dIdx, dAmd, dArm := hashDigest(t, idx), hashDigest(t, amd), hashDigest(t, arm)

	t.Run("signed index", func(t *testing.T) {
		t.Parallel()
		repo := host + "/edge/multi"
		pushIndex(t, repo+":1", idx)
		signImage(t, key, repo, dIdx)
		signImage(t, key, repo, dArm) // as cosign sign --recursive would

		rep := verifyJSON(t, 0, "--policy", pol, repo+":1")
		want := []verifyManifest{
			{Digest: dIdx, Rule: "fleet", Mode: sigpolicy.ModeEnforce, OK: true, Allowed: true, Reason: sigpolicy.ReasonVerified},
			{Digest: dAmd, Platform: "linux/amd64", Rule: "fleet", Mode: sigpolicy.ModeEnforce, Allowed: true, Reason: sigpolicy.ReasonNoSignature, CoveredBy: dIdx},
			{Digest: dArm, Platform: "linux/arm64", Rule: "fleet", Mode: sigpolicy.ModeEnforce, OK: true, Allowed: true, Reason: sigpolicy.ReasonVerified},
		}
		if d := cmp.Diff(want, rep.Manifests, cmpVerdictOutcome); d != "" {
			t.Errorf("verdicts (-want +got):\n%s", d)
		}
		if covered := rep.Manifests[1]; covered.Signer != rep.Manifests[0].Signer || !strings.Contains(covered.Message, "covered by the verified index") {
			t.Errorf("covered child: signer %q (index's %q), message %q", covered.Signer, rep.Manifests[0].Signer, covered.Message)
		}

		// --platform: the index and the chosen child only.
		rep = verifyJSON(t, 0, "--policy", pol, "--platform", "linux/amd64", repo+":1")
		if len(rep.Manifests) != 2 || rep.Manifests[1].Digest != dAmd || rep.Manifests[1].CoveredBy != dIdx {
			t.Errorf("verify --platform linux/amd64: %+v", rep.Manifests)
		}
		// In the index's order, whatever the order of --platform (as
		// docs/deltactl.md says of every command's platforms).
		rep = verifyJSON(t, 0, "--policy", pol, "--platform", "linux/arm64,linux/amd64", repo+":1")
		if got := digestsOf(rep.Manifests); !slices.Equal(got, []digest.Digest{dIdx, dAmd, dArm}) {
			t.Errorf("verify --platform linux/arm64,linux/amd64: manifests %v, want the index's order %v", got, []digest.Digest{dIdx, dAmd, dArm})
		}
		var ins inspectReport
		mustJSON(t, &ins, "inspect", "--platform", "linux/arm64", "--platform", "linux/amd64", repo+":1")
		if len(ins.Platforms) != 2 || ins.Platforms[0].Manifest != dAmd || ins.Platforms[1].Manifest != dArm {
			t.Errorf("inspect --platform linux/arm64 --platform linux/amd64: %+v, want linux/amd64 then linux/arm64", ins.Platforms)
		}
		r := mustRun(t, "verify", "--policy", pol, repo+":1")
		if !strings.Contains(r.stdout, "covered by index") || !strings.Contains(r.stdout, "3 manifest(s), all would be served") {
			t.Errorf("verify table:\n%s", r.stdout)
		}
		checkNoVerdict(t, deltactl(t, "verify", "--policy", pol, "--platform", "linux/s390x", repo+":1"), "has no platform linux/s390x")
	})

	t.Run("unsigned index", func(t *testing.T) {
		t.Parallel()
		repo := host + "/edge/children-only"
		pushIndex(t, repo+":1", idx)
		signImage(t, key, repo, dAmd)
		signImage(t, key, repo, dArm)

		rep := verifyJSON(t, 1, "--policy", pol, repo+":1")
		if len(rep.Manifests) != 3 {
			t.Fatalf("verdicts: %+v", rep.Manifests)
		}
		if m := rep.Manifests[0]; m.Allowed || m.Reason != sigpolicy.ReasonNoSignature {
			t.Errorf("unsigned index: %+v, want denied for no_signature", m)
		}
		for _, m := range rep.Manifests[1:] {
			if !m.OK || m.CoveredBy != "" {
				t.Errorf("signed child: %+v, want verified on its own", m)
			}
		}
		r := deltactl(t, "verify", "--policy", pol, repo+":1")
		checkFailure(t, r, 1, "1 manifest(s) would be denied")
		if !strings.Contains(r.stdout, "1 would be denied") {
			t.Errorf("verify table:\n%s", r.stdout)
		}
	})
}

// A signature covers what is below the index it is on, as the mirror
// serves it: a verified top index covers the indexes nested in it and,
// through them, their platform manifests; a signature on a nested index
// covers its own children only, not the top index nor its siblings.
func TestVerifyNestedIndex(t *testing.T) {
	t.Parallel()
	host := newRegistry(t, true)
	key := cosigntest.NewKey(t)
	keyFile := writeFile(t, t.TempDir(), "cosign.pub", key.PublicPEM)
	pol := policyFile(t, strings.ToLower(host)+"/edge/**", "enforce", keyFile)

	amd := testImage(t, "amd64", layer(t, goGzip, layergen.New(820, 4, 2<<10)))
	arm := testImage(t, "arm64", layer(t, goGzip, layergen.New(821, 4, 2<<10)))
	amdIdx, armIdx := testIndex(t, amd), testIndex(t, arm)
	top := indexOf(mutate.IndexAddendum{Add: amdIdx}, mutate.IndexAddendum{Add: armIdx})
	dTop, dAmdIdx, dArmIdx, dAmd, dArm := hashDigest(t, top), hashDigest(t, amdIdx), hashDigest(t, armIdx), hashDigest(t, amd), hashDigest(t, arm)
	row := func(d digest.Digest, platform string, ok bool, coveredBy digest.Digest) verifyManifest {
		m := verifyManifest{Digest: d, Platform: platform, Rule: "fleet", Mode: sigpolicy.ModeEnforce, OK: ok, Allowed: ok || coveredBy != "", Reason: sigpolicy.ReasonVerified, CoveredBy: coveredBy}
		if !ok {
			m.Reason = sigpolicy.ReasonNoSignature
		}
		return m
	}

	t.Run("signed top index", func(t *testing.T) {
		t.Parallel()
		repo := host + "/edge/nested-top"
		pushIndex(t, repo+":1", top)
		signImage(t, key, repo, dTop)
		rep := verifyJSON(t, 0, "--policy", pol, repo+":1")
		want := []verifyManifest{
			row(dTop, "", true, ""),
			row(dAmdIdx, "", false, dTop),
			row(dArmIdx, "", false, dTop),
			row(dAmd, "linux/amd64", false, dTop),
			row(dArm, "linux/arm64", false, dTop),
		}
		if d := cmp.Diff(want, rep.Manifests, cmpVerdictOutcome); d != "" {
			t.Errorf("verdicts (-want +got):\n%s", d)
		}
		if m := rep.Manifests[4]; m.Signer != rep.Manifests[0].Signer || m.Signer == "" {
			t.Errorf("covered nested child: signer %q, want the top index's %q", m.Signer, rep.Manifests[0].Signer)
		}
	})

	t.Run("signed nested index", func(t *testing.T) {
		t.Parallel()
		repo := host + "/edge/nested-inner"
		pushIndex(t, repo+":1", top)
		signImage(t, key, repo, dAmdIdx)
		rep := verifyJSON(t, 1, "--policy", pol, repo+":1")
		want := []verifyManifest{
			row(dTop, "", false, ""),
			row(dAmdIdx, "", true, ""),
			row(dArmIdx, "", false, ""),
			row(dAmd, "linux/amd64", false, dAmdIdx),
			row(dArm, "linux/arm64", false, ""),
		}
		if d := cmp.Diff(want, rep.Manifests, cmpVerdictOutcome); d != "" {
			t.Errorf("verdicts (-want +got):\n%s", d)
		}
		// --platform: the indexes on the way to the platform only.
		rep = verifyJSON(t, 1, "--policy", pol, "--platform", "linux/amd64", repo+":1")
		if d := cmp.Diff(want[:2:2], rep.Manifests[:min(2, len(rep.Manifests))], cmpVerdictOutcome); d != "" || len(rep.Manifests) != 3 || rep.Manifests[2].CoveredBy != dAmdIdx {
			t.Errorf("verify --platform linux/amd64: %+v, want the top index, the amd64 index and amd64 covered by it", rep.Manifests)
		}
	})

	// A manifest listed by two nested indexes is one row, covered by the
	// signed one even when the other lists it first, as the mirror has
	// it (each verified index records what it covers).
	t.Run("listed by two nested indexes", func(t *testing.T) {
		t.Parallel()
		repo := host + "/edge/nested-twice"
		signed := testIndex(t, amd, arm)
		both := indexOf(mutate.IndexAddendum{Add: amdIdx}, mutate.IndexAddendum{Add: signed})
		dBoth, dSigned := hashDigest(t, both), hashDigest(t, signed)
		pushIndex(t, repo+":1", both)
		signImage(t, key, repo, dSigned)
		rep := verifyJSON(t, 1, "--policy", pol, repo+":1")
		want := []verifyManifest{
			row(dBoth, "", false, ""),
			row(dAmdIdx, "", false, ""),
			row(dSigned, "", true, ""),
			row(dAmd, "linux/amd64", false, dSigned),
			row(dArm, "linux/arm64", false, dSigned),
		}
		if d := cmp.Diff(want, rep.Manifests, cmpVerdictOutcome); d != "" {
			t.Errorf("verdicts (-want +got):\n%s", d)
		}
	})
}

// TestVerifyRegistryName checks which registry name the rules see: the
// reference's host by default, --registry when given (lower-cased).
func TestVerifyRegistryName(t *testing.T) {
	t.Parallel()
	host := newRegistry(t, false)
	key := cosigntest.NewKey(t)
	keyFile := writeFile(t, t.TempDir(), "cosign.pub", key.PublicPEM)
	repo := host + "/edge/renamed"
	img := testImage(t, "amd64", layer(t, goGzip, layergen.New(900, 4, 2<<10)))
	pushImage(t, repo+":1", img)
	signImage(t, key, repo, hashDigest(t, img))
	pol := policyFile(t, "central.example.com/edge/**", "enforce", keyFile)

	// The host is no upstream of the policy file: checked under its name,
	// the image would pass rules the mirror holds it to. A usage error
	// that says what to pass.
	r := deltactl(t, "verify", "--policy", pol, repo+":1")
	checkFailure(t, r, 2, host+" is no upstream of")
	if !strings.Contains(r.stderr, "pass --registry") {
		t.Errorf("verify without --registry: %q, want a reason naming --registry", r.stderr)
	}
	rep := verifyJSON(t, 0, "--policy", pol, "--registry", "Central.Example.COM", repo+":1")
	if m := rep.Manifests[0]; rep.Registry != "central.example.com" || m.Rule != "fleet" || !m.OK {
		t.Errorf("verify --registry: registry %q, %+v; want rule fleet, verified", rep.Registry, m)
	}
}

func TestWrittenRegistry(t *testing.T) {
	t.Parallel()
	tests := []struct{ ref, want string }{
		{"nginx", "docker.io"},
		{"nginx:1.27", "docker.io"},
		{"library/nginx", "docker.io"},
		{"docker.io/library/nginx", "docker.io"},
		{"index.docker.io/library/nginx", "index.docker.io"},
		{"Registry.Example.com/acme/gateway:1.5", "registry.example.com"},
		{"localhost/app", "localhost"},
		{"localhost:5000/app@sha256:" + strings.Repeat("a", 64), "localhost:5000"},
		{"127.0.0.1:5000/edge/app:1", "127.0.0.1:5000"},
	}
	for _, tt := range tests {
		if got := writtenRegistry(tt.ref); got != tt.want {
			t.Errorf("writtenRegistry(%q) = %q, want %q", tt.ref, got, tt.want)
		}
	}
}

// TestVerifyPolicyErrors checks policy files that do not give a policy:
// exit status 2 (no verdict, not "denied") and the reason, with the field
// path.
func TestVerifyPolicyErrors(t *testing.T) {
	t.Parallel()
	host := newRegistry(t, false)
	repo := host + "/edge/app"
	pushImage(t, repo+":1", testImage(t, "amd64", layer(t, goGzip, layergen.New(950, 4, 2<<10))))
	dir := t.TempDir()
	tests := []struct {
		name, file, want string
	}{
		{"missing file", filepath.Join(dir, "missing.yaml"), "--policy: load config: open"},
		{"key neither PEM nor file", policyFile(t, "*/edge/**", "enforce", filepath.Join(dir, "nope.pub")),
			"signatures.rules[0].keys[0]: neither PEM nor a readable file"},
		{"bad glob", writeFile(t, dir, "glob.yaml", "signatures:\n  rules:\n    - name: fleet\n      repositories: [\"Upper/**\"]\n      mode: off\n"),
			"signatures.rules[0].repositories[0]"},
		{"unknown key", writeFile(t, dir, "unknown.yaml", "signatures:\n  rulez: []\n"), "rulez"},
		{"no signatures block", writeFile(t, dir, "plain.yaml", "listen: \":5000\"\n"), "no signature policy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := deltactl(t, "verify", "--policy", tt.file, repo+":1")
			checkNoVerdict(t, r, tt.want)
			if r.stdout != "" {
				t.Errorf("a failure wrote %q to stdout", r.stdout)
			}
		})
	}
}

// TestVerifyFetchError checks that a registry that fails to serve the
// signatures is a failure without a verdict (exit 2), not a missing
// signature nor a denial (exit 1).
func TestVerifyFetchError(t *testing.T) {
	t.Parallel()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/sha256-") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"errors":[{"code":"DENIED","message":"signatures are private"}]}`)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	host := strings.TrimPrefix(s.URL, "http://")
	repo := host + "/edge/app"
	pushImage(t, repo+":1", testImage(t, "amd64", layer(t, goGzip, layergen.New(960, 4, 2<<10))))
	keyFile := writeFile(t, t.TempDir(), "cosign.pub", cosigntest.NewKey(t).PublicPEM)
	pol := policyFile(t, strings.ToLower(host)+"/edge/**", "enforce", keyFile)

	r := deltactl(t, "verify", "--policy", pol, repo+":1")
	checkNoVerdict(t, r, "signatures are private")
	if r.stdout != "" {
		t.Errorf("a failure wrote %q to stdout", r.stdout)
	}
}

func TestVerifyUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no image", []string{"verify", "--policy", "p.yaml"}, "want 1 argument(s), got 0"},
		{"no policy", []string{"verify", "example.com/a:1"}, "--policy is required"},
		{"two images", []string{"verify", "--policy", "p.yaml", "a", "b"}, `unexpected argument "b"`},
		{"bad reference", []string{"verify", "--policy", "p.yaml", "Not A Reference"}, "IMAGE:"},
		{"bad format", []string{"verify", "--policy", "p.yaml", "--format", "xml", "a"}, `--format "xml"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := deltactl(t, tt.args...)
			checkFailure(t, r, 2, tt.want)
			if r.stdout != "" {
				t.Errorf("a usage error wrote %q to stdout", r.stdout)
			}
		})
	}
	r := deltactl(t, "verify", "--help")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "usage: deltactl verify") || !strings.Contains(r.stdout, "-registry") {
		t.Errorf("deltactl verify --help: exit %d, stdout %q", r.code, r.stdout)
	}
}

// TestVerifyDocs checks that docs/deltactl.md documents verify's flags and
// JSON fields (TestDocs does the other commands).
func TestVerifyDocs(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "deltactl.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	if !strings.Contains(doc, "### `deltactl verify") {
		t.Error("docs/deltactl.md has no section for verify")
	}
	for _, line := range strings.Split(mustRun(t, "verify", "--help").stdout, "\n") {
		if !strings.HasPrefix(line, "  -") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(line, "  -"), " ")
		if !strings.Contains(doc, "`--"+name) {
			t.Errorf("docs/deltactl.md does not document verify --%s", name)
		}
	}
	for _, key := range jsonKeys(reflect.TypeOf(verifyReport{})) {
		if !strings.Contains(doc, `"`+key+`"`) {
			t.Errorf("docs/deltactl.md does not show the JSON field %q of verify", key)
		}
	}
}

// An image signed with COSIGN_REPOSITORY: under a rule whose
// signatureRepository names that repository, verify finds the signature
// there; without it, no_signature.
func TestVerifySignatureRepository(t *testing.T) {
	t.Parallel()
	host := newRegistry(t, false)
	key := cosigntest.NewKey(t)
	keyFile := writeFile(t, t.TempDir(), "cosign.pub", key.PublicPEM)
	repo := host + "/edge/app"
	img := testImage(t, "amd64", layer(t, goGzip, layergen.New(720, 4, 2<<10)))
	pushImage(t, repo+":1", img)
	d := hashDigest(t, img)
	signImage(t, key, host+"/edge/signatures", d)
	pol := policyFile(t, strings.ToLower(host)+"/edge/**", "enforce", keyFile)

	rep := verifyJSON(t, 1, "--policy", pol, repo+":1")
	if got := rep.Manifests[0]; got.Reason != sigpolicy.ReasonNoSignature {
		t.Errorf("without signatureRepository: %+v, want no_signature", got)
	}
	b, err := os.ReadFile(pol)
	if err != nil {
		t.Fatal(err)
	}
	withRepo := writeFile(t, t.TempDir(), "registry-edge.yaml", string(b)+"      signatureRepository: "+strings.ToLower(host)+"/edge/signatures\n")
	rep = verifyJSON(t, 0, "--policy", withRepo, repo+":1")
	if got := rep.Manifests[0]; !got.OK || got.Reason != sigpolicy.ReasonVerified {
		t.Errorf("with signatureRepository: %+v, want verified", got)
	}
}

// digestsOf returns the digests of ms, in order.
func digestsOf(ms []verifyManifest) []digest.Digest {
	var out []digest.Digest
	for _, m := range ms {
		out = append(out, m.Digest)
	}
	return out
}

// checkNoVerdict checks a verify that could not judge the image: exit
// status 2, as for a usage error, but the reason alone on stderr, one line.
func checkNoVerdict(t *testing.T, r result, want string) {
	t.Helper()
	if r.code != exitNoVerdict {
		t.Errorf("exit status %d, want %d (stderr: %s)", r.code, exitNoVerdict, r.stderr)
	}
	if !strings.HasPrefix(r.stderr, "deltactl: ") || !strings.Contains(r.stderr, want) || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("stderr %q, want one line \"deltactl: ...%s...\"", r.stderr, want)
	}
}
