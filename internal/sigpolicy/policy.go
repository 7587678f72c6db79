package sigpolicy

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
	"github.com/sigstore/sigstore/pkg/tuf"

	"github.com/registry-edge/registry-edge/internal/glob"
)

// DefaultRuleName is the rule name of verdicts for repositories that no
// rule matches. No RuleSpec may use it.
const DefaultRuleName = "default"

// Policy is a compiled signature policy: immutable, safe for concurrent
// use, and holding no cache and no connection. Build it with New.
type Policy struct {
	rules       []*rule
	defaultMode Mode
}

// rule is a compiled RuleSpec.
type rule struct {
	name     string
	mode     Mode
	revision string
	globs    []glob.Glob
	sigRepo  string // RuleSpec.SignatureRepository

	keys          []trustedKey
	identities    []cosign.Identity
	roots         *x509.CertPool
	intermediates *x509.CertPool // nil: use the chain the signature carries
	requireTlog   bool
	rekorKeys     *cosign.TrustedTransparencyLogPubKeys
	annotations   map[string]any // nil when none are required
	// trusted is the same trust (roots, intermediates, Rekor keys) in the
	// form sigstore-go verifies new-format bundles with.
	trusted root.TrustedMaterial
}

// trustedKey is a public key of a rule with the verifiers to try: cosign
// signs with Ed25519ph by default and older cosign with pure Ed25519, so
// an Ed25519 key has both; a P-384 or P-521 key has its curve's hash
// (cosign's default since v2.2) and SHA-256 (before); other keys have
// SHA-256, as cosign.
type trustedKey struct {
	fingerprint string
	verifiers   []signature.Verifier
}

// Match is the rule that applies to a repository.
type Match struct {
	// Rule is the rule's name, or DefaultRuleName when no rule matches.
	Rule string
	// Revision identifies what the rule accepts (keys, identities, roots,
	// tlog requirement, annotations; not its name, globs or mode): a
	// verdict cached under (digest, Rule, Revision) stays valid for as long
	// as the revision does, across restarts and config reloads. Empty for
	// the default rule, which verifies nothing.
	Revision string
	// Mode is the rule's mode. Under ModeOff the mirror need not call
	// Verify at all.
	Mode Mode
	// SignatureRepository is the rule's SignatureRepository
	// ("<registry>/<repository>"), "" for the image's own repository.
	SignatureRepository string
}

// New checks spec and compiles it. The error joins a *FieldError per
// problem, each naming its field relative to the Spec
// ("rules[1].keys[0]: not a PEM public key").
func New(spec Spec) (*Policy, error) {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	p := &Policy{defaultMode: spec.DefaultMode}
	if p.defaultMode == "" {
		p.defaultMode = ModeOff
	}
	if _, err := ParseMode(string(p.defaultMode)); err != nil {
		add("defaultMode", "must be enforce, warn or off, got %q", spec.DefaultMode)
	}
	names := map[string]int{}
	firstRule := map[string]string{} // pattern → path of its first use
	for i, rs := range spec.Rules {
		rp := fmt.Sprintf("rules[%d]", i)
		if j, ok := names[rs.Name]; ok && rs.Name != "" {
			add(rp+".name", "duplicate of rules[%d].name %q", j, rs.Name)
		} else {
			names[rs.Name] = i
		}
		for j, pat := range rs.Repositories {
			// The first rule that matches applies: a later rule's copy
			// of a pattern never does, and the images it was written to
			// protect go by the earlier rule (off, perhaps).
			pp := fmt.Sprintf("%s.repositories[%d]", rp, j)
			if first, ok := firstRule[pat]; !ok {
				firstRule[pat] = pp
			} else if !strings.HasPrefix(first, rp+".") {
				add(pp, "duplicate of %s %q, which always matches first", first, pat)
			}
		}
		r, rerrs := compileRule(rp, rs)
		errs = append(errs, rerrs...)
		p.rules = append(p.rules, r)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

var ruleNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// sigRepoRE is the distribution-spec's repository name.
var sigRepoRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)

// compileRule checks rs at path rp and compiles it.
func compileRule(rp string, rs RuleSpec) (*rule, []error) {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: rp + path, Msg: fmt.Sprintf(format, args...)})
	}
	r := &rule{name: rs.Name, mode: rs.Mode, requireTlog: rs.RequireTlog}
	switch {
	case rs.Name == "":
		add(".name", "required")
	case rs.Name == DefaultRuleName:
		add(".name", "%q is reserved for repositories no rule matches", DefaultRuleName)
	case !ruleNameRE.MatchString(rs.Name):
		add(".name", "must be 1 to 64 letters, digits, '.', '_' or '-', got %q", rs.Name)
	}
	if r.mode == "" {
		r.mode = ModeEnforce
	}
	if _, err := ParseMode(string(r.mode)); err != nil {
		add(".mode", "must be enforce, warn or off, got %q", rs.Mode)
	}
	if len(rs.Repositories) == 0 {
		add(".repositories", "required: at least one glob")
	}
	for i, pat := range rs.Repositories {
		g, err := glob.Compile(pat)
		if err != nil {
			add(fmt.Sprintf(".repositories[%d]", i), "%v: %q", err, pat)
			continue
		}
		r.globs = append(r.globs, g)
	}
	if sr := rs.SignatureRepository; sr != "" {
		host, repo, ok := strings.Cut(sr, "/")
		switch {
		case !ok || host == "" || !sigRepoRE.MatchString(repo):
			add(".signatureRepository", "must be <registry>/<repository> as COSIGN_REPOSITORY names it (lower-case repository path), got %q", sr)
		case strings.ContainsAny(host, "*?[]{}"):
			add(".signatureRepository", "names one repository, not a glob: %q", sr)
		default:
			r.sigRepo = strings.ToLower(host) + "/" + repo
		}
	}

	for i, k := range rs.Keys {
		// A file may hold several keys (old and new, for a rotation), as
		// a fulcioRoots file may hold several certificates: all are
		// trusted, not only the first.
		blocks, err := publicKeyBlocks(k)
		if err != nil {
			add(fmt.Sprintf(".keys[%d]", i), "%v", err)
			continue
		}
		for _, b := range blocks {
			tk, err := parseKey(b)
			if err != nil {
				add(fmt.Sprintf(".keys[%d]", i), "%v", err)
				continue
			}
			r.keys = append(r.keys, tk)
		}
	}

	for i, id := range rs.Identities {
		cid, ierrs := compileIdentity(fmt.Sprintf("%s.identities[%d]", rp, i), id)
		errs = append(errs, ierrs...)
		r.identities = append(r.identities, cid)
	}
	var rootCerts, interCerts []*x509.Certificate
	if len(rs.FulcioRoots) > 0 {
		r.roots = x509.NewCertPool()
	}
	for i, s := range rs.FulcioRoots {
		certs, err := parseCerts(s)
		if err != nil {
			add(fmt.Sprintf(".fulcioRoots[%d]", i), "%v", err)
			continue
		}
		for _, c := range certs {
			r.roots.AddCert(c)
		}
		rootCerts = append(rootCerts, certs...)
	}
	if len(rs.FulcioIntermediates) > 0 {
		r.intermediates = x509.NewCertPool()
	}
	for i, s := range rs.FulcioIntermediates {
		certs, err := parseCerts(s)
		if err != nil {
			add(fmt.Sprintf(".fulcioIntermediates[%d]", i), "%v", err)
			continue
		}
		for _, c := range certs {
			r.intermediates.AddCert(c)
		}
		interCerts = append(interCerts, certs...)
	}
	switch {
	case len(rs.Identities) > 0 && len(rs.FulcioRoots) == 0:
		add(".fulcioRoots", "required with identities: keyless certificates are checked against pinned roots only")
	case len(rs.Identities) == 0 && len(rs.FulcioRoots) > 0:
		add(".identities", "required with fulcioRoots: a root alone would accept any identity")
	case len(rs.Identities) == 0 && len(rs.FulcioIntermediates) > 0:
		add(".fulcioIntermediates", "set without identities")
	}

	var rekorLogs map[string]*root.TransparencyLog
	if len(rs.RekorKeys) > 0 {
		keys := cosign.NewTrustedTransparencyLogPubKeys()
		r.rekorKeys = &keys
		rekorLogs = map[string]*root.TransparencyLog{}
	}
	var rekorPEMs []struct {
		path string
		pem  []byte
	}
	for i, s := range rs.RekorKeys {
		kp := fmt.Sprintf(".rekorKeys[%d]", i)
		blocks, err := publicKeyBlocks(s)
		if err != nil {
			add(kp, "%v", err)
			continue
		}
		for _, b := range blocks {
			rekorPEMs = append(rekorPEMs, struct {
				path string
				pem  []byte
			}{kp, b})
		}
	}
	for _, rk := range rekorPEMs {
		kp, pemBytes := rk.path, rk.pem
		pub, err := cryptoutils.UnmarshalPEMToPublicKey(pemBytes)
		if err != nil {
			add(kp, "not a PEM public key")
			continue
		}
		ec, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			// cosign verifies Rekor bundles (signed entry timestamps) with
			// ECDSA keys only, the kind Rekor v1 signs with.
			add(kp, "must be an ECDSA key, got %s", keyType(pub))
			continue
		}
		if err := r.rekorKeys.AddTransparencyLogPubKey(pemBytes, tuf.Active); err != nil {
			add(kp, "%v", err)
			continue
		}
		logID, err := cosign.GetTransparencyLogID(ec)
		if err != nil {
			add(kp, "%v", err)
			continue
		}
		id, _ := hex.DecodeString(logID)
		rekorLogs[logID] = &root.TransparencyLog{
			ID:        id,
			PublicKey: ec,
			HashFunc:  crypto.SHA256,
			// sigstore-go refuses a log key without a start of validity;
			// a pinned key is trusted for all time.
			ValidityPeriodStart: time.Unix(1, 0).UTC(),
			SignatureHashFunc:   crypto.SHA256,
		}
	}
	switch {
	case rs.RequireTlog && len(rs.RekorKeys) == 0:
		add(".rekorKeys", "required with requireTlog")
	case !rs.RequireTlog && len(rs.RekorKeys) > 0:
		add(".requireTlog", "must be true when rekorKeys are set (or remove rekorKeys): pinned Rekor keys are only used to require a proof")
	}

	if len(rs.Annotations) > 0 {
		r.annotations = map[string]any{}
		for k, v := range rs.Annotations {
			if k == "" {
				add(".annotations", "empty key")
				continue
			}
			r.annotations[k] = v
		}
	}

	if r.mode != ModeOff && len(rs.Keys) == 0 && len(rs.Identities) == 0 {
		add("", "keys or identities required (mode %s): nothing could verify", r.mode)
	}

	if len(errs) > 0 {
		return r, errs
	}
	cas := make([]root.CertificateAuthority, 0, len(rootCerts))
	for _, c := range rootCerts {
		cas = append(cas, &root.FulcioCertificateAuthority{Root: c, Intermediates: interCerts})
	}
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, cas, nil, nil, rekorLogs)
	if err != nil {
		return r, []error{&FieldError{Path: rp, Msg: err.Error()}}
	}
	r.trusted = tr
	r.revision = revision(rs)
	return r, nil
}

// compileIdentity checks an identity at path ip and returns it in cosign's
// form, its regular expressions anchored.
func compileIdentity(ip string, id IdentitySpec) (cosign.Identity, []error) {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: ip + path, Msg: fmt.Sprintf(format, args...)})
	}
	anchor := func(field, re string) string {
		if re == "" {
			return ""
		}
		a := `^(?:` + re + `)$`
		if _, err := regexp.Compile(a); err != nil {
			add("."+field, "bad regular expression: %v", err)
		}
		return a
	}
	switch {
	case id.Issuer == "" && id.IssuerRegexp == "":
		add(".issuer", "issuer or issuerRegexp required")
	case id.Issuer != "" && id.IssuerRegexp != "":
		add(".issuerRegexp", "set only one of issuer and issuerRegexp")
	}
	switch {
	case id.Subject == "" && id.SubjectRegexp == "":
		add(".subject", "subject or subjectRegexp required")
	case id.Subject != "" && id.SubjectRegexp != "":
		add(".subjectRegexp", "set only one of subject and subjectRegexp")
	}
	return cosign.Identity{
		Issuer:        id.Issuer,
		IssuerRegExp:  anchor("issuerRegexp", id.IssuerRegexp),
		Subject:       id.Subject,
		SubjectRegExp: anchor("subjectRegexp", id.SubjectRegexp),
	}, errs
}

// publicKeyBlocks splits a PEM field of public keys into its blocks, each
// re-encoded on its own: a key file may hold several. Every block must be
// a "PUBLIC KEY".
func publicKeyBlocks(s string) ([][]byte, error) {
	var out [][]byte
	rest := []byte(strings.TrimSpace(s))
	for {
		blk, r := pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf(`not a PEM public key (want "PUBLIC KEY" blocks, got %q)`, blk.Type)
		}
		out = append(out, pem.EncodeToMemory(blk))
		rest = r
	}
	if len(out) == 0 {
		return nil, errors.New(`not a PEM public key (want a "PUBLIC KEY" block)`)
	}
	return out, nil
}

// parseKey parses one PEM public key of a rule.
func parseKey(b []byte) (trustedKey, error) {
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(b)
	if err != nil {
		return trustedKey{}, errors.New("not a PEM public key")
	}
	var vs []signature.Verifier
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		// cosign signs with the hash that goes with the curve (SHA-384 for
		// P-384, SHA-512 for P-521: sigstore's default algorithm for the
		// key), and signed with SHA-256 whatever the curve before v2.2.
		for _, h := range ecdsaHashes(k) {
			v, err := signature.LoadVerifier(pub, h)
			if err != nil {
				return trustedKey{}, fmt.Errorf("unusable ECDSA key: %v", err)
			}
			vs = append(vs, v)
		}
	case *rsa.PublicKey:
		v, err := signature.LoadVerifier(pub, crypto.SHA256)
		if err != nil {
			return trustedKey{}, fmt.Errorf("unusable RSA key: %v", err)
		}
		vs = append(vs, v)
	case ed25519.PublicKey:
		ph, err := signature.LoadVerifierWithOpts(pub, options.WithED25519ph())
		if err != nil {
			return trustedKey{}, fmt.Errorf("unusable Ed25519 key: %v", err)
		}
		pure, err := signature.LoadVerifier(pub, crypto.SHA256)
		if err != nil {
			return trustedKey{}, fmt.Errorf("unusable Ed25519 key: %v", err)
		}
		vs = append(vs, ph, pure)
	default:
		return trustedKey{}, fmt.Errorf("unsupported key type %s: want ECDSA, Ed25519 or RSA", keyType(pub))
	}
	fp, err := KeyFingerprint(pub)
	if err != nil {
		return trustedKey{}, err
	}
	return trustedKey{fingerprint: fp, verifiers: vs}, nil
}

// ecdsaHashes returns the hashes an ECDSA signature by k may be made with:
// SHA-256, and the curve's own hash when it is another one.
func ecdsaHashes(k *ecdsa.PublicKey) []crypto.Hash {
	switch k.Curve {
	case elliptic.P384():
		return []crypto.Hash{crypto.SHA384, crypto.SHA256}
	case elliptic.P521():
		return []crypto.Hash{crypto.SHA512, crypto.SHA256}
	}
	return []crypto.Hash{crypto.SHA256}
}

// KeyFingerprint returns the fingerprint that verdicts name a public key
// by: "sha256:" and the hex SHA-256 of its DER SubjectPublicKeyInfo, the
// same as `openssl pkey -pubin -in cosign.pub -outform DER | sha256sum`.
func KeyFingerprint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("key fingerprint: %w", err)
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// parseCerts parses one or more PEM certificates.
func parseCerts(s string) ([]*x509.Certificate, error) {
	certs, err := cryptoutils.UnmarshalCertificatesFromPEM([]byte(strings.TrimSpace(s)))
	if err != nil || len(certs) == 0 {
		return nil, errors.New("not a PEM certificate")
	}
	for _, c := range certs {
		if !c.IsCA {
			return nil, fmt.Errorf("certificate %q is not a CA", c.Subject.String())
		}
	}
	return certs, nil
}

func keyType(pub crypto.PublicKey) string {
	switch pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA"
	case *rsa.PublicKey:
		return "RSA"
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", pub)
}

// revision hashes what a rule accepts, so that a verdict cached under it
// goes stale when the rule's trust changes, and only then.
func revision(rs RuleSpec) string {
	norm := func(ss []string) []string {
		out := make([]string, len(ss))
		for i, s := range ss {
			out[i] = strings.TrimSpace(s)
		}
		slices.Sort(out)
		return out
	}
	b, _ := json.Marshal(struct {
		Keys, Roots, Intermediates, Rekor []string
		Identities                        []IdentitySpec
		Tlog                              bool
		Annotations                       map[string]string // json sorts map keys
		SignatureRepository               string            `json:",omitempty"` // where a "no signature" was found
	}{
		norm(rs.Keys), norm(rs.FulcioRoots), norm(rs.FulcioIntermediates), norm(rs.RekorKeys),
		rs.Identities, rs.RequireTlog, rs.Annotations, strings.ToLower(rs.SignatureRepository),
	})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// Revisions returns each rule's name and revision ("name@revision"), in
// order: two policies with the same revisions accept the same signatures
// (a key file whose content changed changes them). Nil for a nil policy.
func (p *Policy) Revisions() []string {
	if p == nil {
		return nil
	}
	out := make([]string, len(p.rules))
	for i, r := range p.rules {
		out[i] = r.name + "@" + r.revision
	}
	return out
}

// Match returns the rule that applies to repository repo of registry
// (host[:port], as the mirror routes it, such as "docker.io" with
// "library/nginx"). The registry is compared in lower case.
func (p *Policy) Match(registry, repo string) Match {
	if r := p.rule(registry, repo); r != nil {
		return Match{Rule: r.name, Revision: r.revision, Mode: r.mode, SignatureRepository: r.sigRepo}
	}
	return Match{Rule: DefaultRuleName, Mode: p.defaultMode}
}

// rule returns the first rule matching registry/repo, or nil.
func (p *Policy) rule(registry, repo string) *rule {
	name := strings.ToLower(registry) + "/" + repo
	for _, r := range p.rules {
		for _, g := range r.globs {
			if g.Match(name) {
				return r
			}
		}
	}
	return nil
}
