package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/registry-edge/registry-edge/internal/testutil/cosigntest"
)

// A signatures block takes keys as PEM text or as file paths; errors name
// the field under "signatures.".
func TestSignaturePolicy(t *testing.T) {
	t.Parallel()
	key := cosigntest.NewKey(t)
	file := filepath.Join(t.TempDir(), "cosign.pub")
	if err := os.WriteFile(file, []byte(key.PublicPEM), 0o644); err != nil {
		t.Fatal(err)
	}
	inline := strings.ReplaceAll(strings.TrimSpace(key.PublicPEM), "\n", "\n          ")
	c, err := Load(strings.NewReader(`
upstreams: [{registry: central.example.com, url: "https://central.example.com", default: true}]
signatures:
  rules:
    - name: fleet
      repositories: ["central.example.com/fleet/**"]
      keys:
        - ` + file + `
        - |
          ` + inline + `
`))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	pol, err := c.SignaturePolicy()
	if err != nil || pol == nil {
		t.Fatalf("SignaturePolicy() = %v, %v", pol, err)
	}
	if m := pol.Match("central.example.com", "fleet/app"); m.Rule != "fleet" || m.Mode != "enforce" {
		t.Errorf("Match = %+v, want rule fleet in enforce", m)
	}
	if pol, err := Default().SignaturePolicy(); pol != nil || err != nil {
		t.Errorf("Default().SignaturePolicy() = %v, %v; want none", pol, err)
	}

	wantLoadErrors(t, `
upstreams: [{registry: central.example.com, url: "https://central.example.com", default: true}]
signatures:
  rules:
    - name: fleet
      repositories: ["central.example.com/fleet/**"]
      keys: [/nonexistent/cosign.pub, "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n"]
`, []string{"signatures.rules[0].keys[0]", "signatures.rules[0].keys[1]"})
	wantLoadErrors(t, `
signatures:
  rules:
    - name: fleet
      mode: sometimes
      repositories: ["x/**"]
`, []string{"sometimes"})
	// Written as for the default upstream's bare repositories, as access
	// rules may be: it would never apply.
	c, err = Load(strings.NewReader(`
upstreams: [{registry: central.example.com, url: "https://central.example.com", default: true}]
signatures:
  rules:
    - name: fleet
      repositories: ["central.example.com/base/**", "fleet/**", "*.example.com/x/**", "**", "ghcr.io/acme/**"]
      keys: [` + file + `]
`))
	if err != nil {
		t.Fatal(err)
	}
	err = c.CheckSignatureScopes()
	want := `signatures.rules[0].repositories[1]: "fleet/**" matches no upstream: patterns are <registry>/<repository> (upstreams: central.example.com), e.g. central.example.com/fleet/**`
	if err == nil || err.Error() != want {
		t.Errorf("CheckSignatureScopes() = %v, want only %q", err, want)
	}
	// A registry this mirror does not have: one policy may serve sites
	// that mirror different registries. A warning, not an error.
	if w := c.SignatureScopeWarnings(); len(w) != 1 || !strings.Contains(w[0], "repositories[4]") || !strings.Contains(w[0], "ghcr.io/acme/**") {
		t.Errorf("SignatureScopeWarnings() = %q, want one for ghcr.io/acme/**", w)
	}

	// signatureRepository (COSIGN_REPOSITORY): a repository name, on an
	// upstream of a rule that applies here.
	wantLoadErrors(t, `
upstreams: [{registry: central.example.com, url: "https://central.example.com", default: true}]
signatures:
  rules:
    - name: fleet
      repositories: ["central.example.com/fleet/**"]
      keys: [`+file+`]
      signatureRepository: "central.example.com/Fleet/**"
`, []string{"signatures.rules[0].signatureRepository"})
	for _, tt := range []struct{ repos, sigRepo, wantErr string }{
		{`["central.example.com/fleet/**"]`, "central.example.com/fleet/signatures", ""},
		{`["central.example.com/fleet/**"]`, "CENTRAL.example.com/fleet/signatures", ""},
		{`["central.example.com/fleet/**"]`, "ghcr.io/acme/signatures", `signatures.rules[0].signatureRepository: "ghcr.io/acme/signatures" is on ghcr.io, which no upstream has`},
		{`["ghcr.io/acme/**"]`, "ghcr.io/acme/signatures", ""}, // the rule does not apply here
	} {
		c, err := Load(strings.NewReader(`
upstreams: [{registry: central.example.com, url: "https://central.example.com", default: true}]
signatures:
  rules:
    - name: fleet
      repositories: ` + tt.repos + `
      keys: [` + file + `]
      signatureRepository: "` + tt.sigRepo + `"
`))
		if err != nil {
			t.Fatalf("%s: %v", tt.sigRepo, err)
		}
		err = c.CheckSignatureScopes()
		if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.HasPrefix(err.Error(), tt.wantErr)) {
			t.Errorf("signatureRepository %q for %s: CheckSignatureScopes() = %v, want %q", tt.sigRepo, tt.repos, err, tt.wantErr)
		}
	}
}
