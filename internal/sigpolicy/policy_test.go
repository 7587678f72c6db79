package sigpolicy

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"go.yaml.in/yaml/v3"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

func TestMatch(t *testing.T) {
	t.Parallel()
	key := newECDSAKey(t)
	exempt := RuleSpec{Name: "exempt", Repositories: []string{"central.example.com/fleet/debug/**"}, Mode: ModeOff}
	fleet := keyRule(key)
	fleet.Mode = ModeWarn
	all := keyRule(key)
	all.Name, all.Repositories = "all", []string{"central.example.com/**"}
	p, err := New(Spec{Rules: []RuleSpec{exempt, fleet, all}, DefaultMode: ModeEnforce})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		registry, repo string
		want           Match
	}{
		{"central.example.com", "fleet/debug/shell", Match{Rule: "exempt", Mode: ModeOff}},
		{"central.example.com", "fleet/app", Match{Rule: "fleet", Mode: ModeWarn}},
		{"CENTRAL.example.com", "fleet/app", Match{Rule: "fleet", Mode: ModeWarn}},
		{"central.example.com", "base/alpine", Match{Rule: "all", Mode: ModeEnforce}},
		{"docker.io", "library/alpine", Match{Rule: DefaultRuleName, Mode: ModeEnforce}},
	}
	for _, tt := range tests {
		got := p.Match(tt.registry, tt.repo)
		got.Revision = "" // checked below
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Match(%q, %q) mismatch (-want +got):\n%s", tt.registry, tt.repo, diff)
		}
	}
}

func TestRevision(t *testing.T) {
	t.Parallel()
	k1, k2 := newECDSAKey(t), newECDSAKey(t)
	rev := func(r RuleSpec) string {
		t.Helper()
		return mustNew(t, r).Match(testRegistry, testRepo).Revision
	}
	base := keyRule(k1, k2)
	if rev(base) == "" {
		t.Fatal("Match().Revision is empty")
	}
	same := keyRule(k2, k1)
	same.Mode, same.Name = ModeWarn, "renamed"
	same.Repositories = append(same.Repositories, "x/**")
	if rev(base) != rev(same) {
		t.Errorf("revision changed with key order, mode, name or globs")
	}
	for name, r := range map[string]RuleSpec{
		"keys":        keyRule(k1),
		"annotations": func() RuleSpec { r := keyRule(k1, k2); r.Annotations = map[string]string{"a": "b"}; return r }(),
		"tlog": func() RuleSpec {
			r := keyRule(k1, k2)
			r.RequireTlog, r.RekorKeys = true, []string{newTestRekor(t).pubPEM}
			return r
		}(),
	} {
		if rev(r) == rev(base) {
			t.Errorf("revision did not change with %s", name)
		}
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	key := newECDSAKey(t)
	ca := newTestCA(t)
	leaf := ca.leaf(t, testSubject, testIssuer, ca.root.NotBefore)
	ok := keyRule(key)
	with := func(f func(*RuleSpec)) RuleSpec {
		r := keyRule(key)
		f(&r)
		return r
	}
	tests := []struct {
		name string
		spec Spec
		want []string
	}{
		{"default mode", Spec{DefaultMode: "strict"}, []string{`defaultMode: must be enforce, warn or off, got "strict"`}},
		{"rule mode", Spec{Rules: []RuleSpec{with(func(r *RuleSpec) { r.Mode = "audit" })}}, []string{`rules[0].mode: must be enforce, warn or off`}},
		{"no name", Spec{Rules: []RuleSpec{with(func(r *RuleSpec) { r.Name = "" })}}, []string{"rules[0].name: required"}},
		{"reserved name", Spec{Rules: []RuleSpec{with(func(r *RuleSpec) { r.Name = "default" })}}, []string{"rules[0].name: \"default\" is reserved"}},
		{"bad name", Spec{Rules: []RuleSpec{with(func(r *RuleSpec) { r.Name = "a b" })}}, []string{"rules[0].name: must be"}},
		{"duplicate name", Spec{Rules: []RuleSpec{ok, ok}}, []string{`rules[1].name: duplicate of rules[0].name "fleet"`}},
		{"pattern of an earlier rule", Spec{Rules: []RuleSpec{with(func(r *RuleSpec) { r.Repositories = []string{"docker.io/fleet/**"}; r.Mode = ModeOff }),
			with(func(r *RuleSpec) { r.Name = "b"; r.Repositories = []string{"docker.io/other/*", "docker.io/fleet/**"} })}},
			[]string{`rules[1].repositories[1]: duplicate of rules[0].repositories[0] "docker.io/fleet/**", which always matches first`}},
		{"no repositories", Spec{Rules: []RuleSpec{with(func(r *RuleSpec) { r.Repositories = nil })}}, []string{"rules[0].repositories: required"}},
		{
			"bad globs", Spec{Rules: []RuleSpec{with(func(r *RuleSpec) { r.Repositories = []string{"a/**", "b/*", "c//d", "E/x"} })}},
			[]string{"rules[0].repositories[2]: bad glob", "rules[0].repositories[3]: bad glob"},
		},
		{"not a key", Spec{Rules: []RuleSpec{ok, with(func(r *RuleSpec) { r.Keys = []string{key.pubPEM, "hello"} })}}, []string{"rules[1].keys[1]: not a PEM public key"}},
		{"certificate as key", Spec{Rules: []RuleSpec{with(func(r *RuleSpec) { r.Keys = []string{string(leaf.certPEM)} })}}, []string{"rules[0].keys[0]: not a PEM public key"}},
		{"key file with a certificate after the key", Spec{Rules: []RuleSpec{with(func(r *RuleSpec) { r.Keys = []string{key.pubPEM + string(leaf.certPEM)} })}}, []string{"rules[0].keys[0]: not a PEM public key", `got "CERTIFICATE"`}},
		{"nothing to verify with", Spec{Rules: []RuleSpec{with(func(r *RuleSpec) { r.Keys = nil })}}, []string{"rules[0]: keys or identities required"}},
		{"identities without roots", Spec{Rules: []RuleSpec{with(func(r *RuleSpec) {
			r.Identities = []IdentitySpec{{Issuer: testIssuer, Subject: testSubject}}
		})}}, []string{"rules[0].fulcioRoots: required with identities"}},
		{"roots without identities", Spec{Rules: []RuleSpec{with(func(r *RuleSpec) { r.FulcioRoots = []string{ca.rootPEM} })}}, []string{"rules[0].identities: required with fulcioRoots"}},
		{"root not a certificate", Spec{Rules: []RuleSpec{keylessRule(ca, IdentitySpec{Issuer: testIssuer, Subject: testSubject}), func() RuleSpec {
			r := keylessRule(ca, IdentitySpec{Issuer: testIssuer, Subject: testSubject})
			r.Name = "b"
			r.FulcioRoots = []string{ca.rootPEM, key.pubPEM}
			r.FulcioIntermediates = []string{string(leaf.certPEM)}
			return r
		}()}}, []string{"rules[1].fulcioRoots[1]: not a PEM certificate", "rules[1].fulcioIntermediates[0]: certificate", "is not a CA"}},
		{"identity fields", Spec{Rules: []RuleSpec{keylessRule(ca,
			IdentitySpec{Subject: testSubject},
			IdentitySpec{Issuer: testIssuer, IssuerRegexp: "x", SubjectRegexp: "("},
			IdentitySpec{Issuer: testIssuer, Subject: "a", SubjectRegexp: "b"},
		)}}, []string{
			"rules[0].identities[0].issuer: issuer or issuerRegexp required",
			"rules[0].identities[1].issuerRegexp: set only one of issuer and issuerRegexp",
			"rules[0].identities[1].subjectRegexp: bad regular expression",
			"rules[0].identities[2].subjectRegexp: set only one of subject and subjectRegexp",
		}},
		{"tlog without keys", Spec{Rules: []RuleSpec{with(func(r *RuleSpec) { r.RequireTlog = true })}}, []string{"rules[0].rekorKeys: required with requireTlog"}},
		{"rekor keys without tlog", Spec{Rules: []RuleSpec{with(func(r *RuleSpec) { r.RekorKeys = []string{newTestRekor(t).pubPEM} })}}, []string{"rules[0].requireTlog: must be true"}},
		{"rekor key not ECDSA", Spec{Rules: []RuleSpec{with(func(r *RuleSpec) {
			r.RequireTlog = true
			r.RekorKeys = []string{"junk", newKey(t, protocommon.PublicKeyDetails_PKIX_ED25519_PH).pubPEM}
		})}}, []string{"rules[0].rekorKeys[0]: not a PEM public key", "rules[0].rekorKeys[1]: must be an ECDSA key"}},
		{"empty annotation key", Spec{Rules: []RuleSpec{with(func(r *RuleSpec) { r.Annotations = map[string]string{"": "x"} })}}, []string{"rules[0].annotations: empty key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tt.spec)
			if err == nil {
				t.Fatalf("New() error = nil, want %q", tt.want)
			}
			if !errors.Is(err, errdef.ErrInvalid) {
				t.Errorf("New() error = %v, want errdef.ErrInvalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("New() error = %q, want it to contain %q", err, w)
				}
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Path == "" {
				t.Errorf("New() error = %v, want *FieldError with a path", err)
			}
		})
	}
}

func TestNewValid(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	spec := Spec{
		Rules: []RuleSpec{
			{Name: "debug", Repositories: []string{"central.example.com/fleet/debug/**"}, Mode: ModeOff},
			{
				Name:                "fleet",
				Repositories:        []string{"central.example.com/fleet/**", "regional.example.com:5000/fleet/**"},
				Keys:                []string{newECDSAKey(t).pubPEM, "\n  " + newECDSAKey(t).pubPEM + "\n"},
				Identities:          []IdentitySpec{{Issuer: testIssuer, SubjectRegexp: `.*@example\.com`}},
				FulcioRoots:         []string{ca.rootPEM + ca.rootPEM},
				FulcioIntermediates: []string{ca.interPEM},
				RequireTlog:         true,
				RekorKeys:           []string{newTestRekor(t).pubPEM},
				Annotations:         map[string]string{"env": "prod"},
			},
		},
		DefaultMode: ModeWarn,
	}
	if _, err := New(spec); err != nil {
		t.Fatalf("New() error = %v", err)
	}
}

func TestSpecYAML(t *testing.T) {
	t.Parallel()
	const doc = `
defaultMode: warn
rules:
  - name: fleet
    repositories: ["central.example.com/fleet/**"]
    mode: enforce
    identities:
      - issuer: https://issuer.example.com
        subjectRegexp: '.*@example\.com'
    requireTlog: true
    annotations: {env: prod}
`
	var s Spec
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("Decode() error = %v", err)
	}
	want := Spec{
		DefaultMode: ModeWarn,
		Rules: []RuleSpec{{
			Name: "fleet", Repositories: []string{"central.example.com/fleet/**"}, Mode: ModeEnforce,
			Identities:  []IdentitySpec{{Issuer: testIssuer, SubjectRegexp: `.*@example\.com`}},
			RequireTlog: true, Annotations: map[string]string{"env": "prod"},
		}},
	}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("Decode() mismatch (-want +got):\n%s", diff)
	}
	// An unknown mode decodes as written; New rejects it with the field's
	// path, which a decoder could not give.
	if err := yaml.Unmarshal([]byte("defaultMode: strict"), &s); err != nil {
		t.Fatalf("Decode(defaultMode: strict) = %v", err)
	}
	if _, err := New(s); err == nil || !strings.Contains(err.Error(), `defaultMode: must be enforce, warn or off, got "strict"`) {
		t.Errorf("New with defaultMode strict: %v, want the field's path", err)
	}
}

func TestCovers(t *testing.T) {
	t.Parallel()
	child1, child2 := digest.FromString("amd64"), digest.FromString("arm64")
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{
		{MediaType: ocispec.MediaTypeImageManifest, Digest: child1, Size: 1},
		{MediaType: ocispec.MediaTypeImageManifest, Digest: child2, Size: 1},
	}}
	idx.SchemaVersion = 2
	body, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(body)
	tests := []struct {
		name  string
		index digest.Digest
		body  []byte
		child digest.Digest
		want  bool
	}{
		{"listed child", d, body, child2, true},
		{"unlisted child", d, body, digest.FromString("riscv"), false},
		{"body is not the verified index", digest.FromString("other index"), body, child1, false},
		{"invalid digest", "sha256:zz", body, child1, false},
		{"not json", digest.FromString("x"), []byte("x"), child1, false},
	}
	for _, tt := range tests {
		if got := Covers(tt.index, tt.body, tt.child); got != tt.want {
			t.Errorf("%s: Covers() = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestParseMode(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"enforce", "warn", "off"} {
		if m, err := ParseMode(s); err != nil || string(m) != s {
			t.Errorf("ParseMode(%q) = %q, %v", s, m, err)
		}
	}
	if _, err := ParseMode("Enforce"); !errors.Is(err, errdef.ErrInvalid) {
		t.Errorf("ParseMode(Enforce) error = %v, want ErrInvalid", err)
	}
}
