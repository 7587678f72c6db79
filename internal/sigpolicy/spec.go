package sigpolicy

import (
	"fmt"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// Mode is what a rule does with a manifest that has no valid signature.
type Mode string

// Modes. The zero Mode means ModeEnforce in a RuleSpec and ModeOff in
// Spec.DefaultMode.
const (
	// ModeEnforce denies a manifest without a valid signature.
	ModeEnforce Mode = "enforce"
	// ModeWarn serves a manifest without a valid signature; the mirror logs
	// and counts the failure.
	ModeWarn Mode = "warn"
	// ModeOff does not verify anything.
	ModeOff Mode = "off"
)

// ParseMode returns the Mode named s ("enforce", "warn" or "off").
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeEnforce, ModeWarn, ModeOff:
		return m, nil
	}
	return "", fmt.Errorf("mode %q: must be enforce, warn or off: %w", s, errdef.ErrInvalid)
}

// A Mode is decoded as it is written and checked by New, whose error names
// the field ("signatures.rules[2].mode: must be enforce, warn or off"); a
// decoder that rejected it could not say where.

// Spec is the signature policy in plain data, as the config package decodes
// it. The YAML tags are the names used in the field paths of New's errors,
// so a config type that embeds Spec under a key (say "signatures") reports
// errors under the same names once it prefixes them.
type Spec struct {
	// Rules are tried in order; the first rule with a repository glob that
	// matches "<registry>/<repository>" applies.
	Rules []RuleSpec `yaml:"rules,omitempty" json:"rules,omitempty"`
	// DefaultMode applies to repositories no rule matches: "off" (the
	// default) serves them unverified; "warn" or "enforce" report them as
	// not covered by any rule, so "enforce" denies everything no rule
	// names, like a containers-policy.json default of "reject".
	DefaultMode Mode `yaml:"defaultMode,omitempty" json:"defaultMode,omitempty"`
}

// RuleSpec is one rule: the repositories it applies to, its mode, and what
// counts as a valid signature. A signature is valid when it verifies with
// any of Keys, or carries a certificate that chains to FulcioRoots and
// matches any of Identities (key rotation and several signers are any-of);
// in both cases its payload must name the manifest's digest, carry
// Annotations and, with RequireTlog, come with a transparency-log proof
// signed by one of RekorKeys.
type RuleSpec struct {
	// Name names the rule in verdicts, messages and metrics: letters,
	// digits, '.', '_' and '-'; unique; "default" is reserved.
	Name string `yaml:"name" json:"name"`
	// Repositories are globs on "<registry>/<repository>" (see the package
	// documentation): "central.example.com/fleet/**".
	Repositories []string `yaml:"repositories" json:"repositories"`
	// Mode is enforce (the default), warn or off. A rule with mode off
	// exempts its repositories from the rules after it and needs no keys.
	Mode Mode `yaml:"mode,omitempty" json:"mode,omitempty"`
	// Keys are PEM public keys (ECDSA, Ed25519 or RSA, PKIX "PUBLIC KEY"
	// blocks as written by "cosign generate-key-pair"); a signature made
	// with any of them is accepted.
	Keys []string `yaml:"keys,omitempty" json:"keys,omitempty"`
	// Identities are the keyless signers accepted: a certificate issued
	// under FulcioRoots whose OIDC issuer and subject match any entry.
	Identities []IdentitySpec `yaml:"identities,omitempty" json:"identities,omitempty"`
	// FulcioRoots are PEM certificates (one or more per entry) trusted as
	// roots for keyless signing certificates. Required with Identities.
	FulcioRoots []string `yaml:"fulcioRoots,omitempty" json:"fulcioRoots,omitempty"`
	// FulcioIntermediates are optional PEM intermediate certificates. When
	// set, only they are used to build the chain; when not, the chain that
	// the signature carries is used (the root is pinned either way).
	FulcioIntermediates []string `yaml:"fulcioIntermediates,omitempty" json:"fulcioIntermediates,omitempty"`
	// RequireTlog requires a transparency-log proof (a Rekor bundle in
	// the signature), verified offline against RekorKeys. Leave it false
	// for key-based signatures made with "cosign sign --tlog-upload=false".
	RequireTlog bool `yaml:"requireTlog,omitempty" json:"requireTlog,omitempty"`
	// RekorKeys are the PEM public keys (ECDSA) of the Rekor logs trusted
	// for RequireTlog. Required with RequireTlog, and only with it.
	RekorKeys []string `yaml:"rekorKeys,omitempty" json:"rekorKeys,omitempty"`
	// Annotations must all be present, with these values, in the optional
	// section of the signed payload ("cosign sign -a key=value").
	Annotations map[string]string `yaml:"annotations,omitempty" json:"annotations,omitempty"`
	// SignatureRepository, when set, is where the signatures of the
	// rule's images are, as cosign's COSIGN_REPOSITORY names it:
	// "<registry>/<repository>" ("central.example.com/fleet/signatures"),
	// the registry one of the mirror's upstreams. The signature tag
	// sha256-<hex>.sig and the referrers of the image's digest are looked
	// up there instead of in the image's own repository.
	SignatureRepository string `yaml:"signatureRepository,omitempty" json:"signatureRepository,omitempty"`
}

// IdentitySpec is a keyless identity: a certificate matches when its OIDC
// issuer (Fulcio extension 1.3.6.1.4.1.57264.1.1) and one of its subject
// alternative names (email, URI, ...) match. Set exactly one of Issuer and
// IssuerRegexp and exactly one of Subject and SubjectRegexp. Regular
// expressions use Go syntax (RE2) and must match the whole value: they are
// anchored, unlike cosign's --certificate-identity-regexp.
type IdentitySpec struct {
	// Issuer is the exact OIDC issuer URL, as "https://accounts.google.com".
	Issuer string `yaml:"issuer,omitempty" json:"issuer,omitempty"`
	// IssuerRegexp matches the OIDC issuer URL.
	IssuerRegexp string `yaml:"issuerRegexp,omitempty" json:"issuerRegexp,omitempty"`
	// Subject is the exact subject, as "release@example.com" or a workflow
	// URI.
	Subject string `yaml:"subject,omitempty" json:"subject,omitempty"`
	// SubjectRegexp matches the subject.
	SubjectRegexp string `yaml:"subjectRegexp,omitempty" json:"subjectRegexp,omitempty"`
}

// FieldError is one problem New found in a Spec, at a field path relative
// to the Spec such as "rules[1].keys[0]". It wraps errdef.ErrInvalid. The
// error New returns joins them (errors.Join); a config package can list them
// with errors.As on each of the joined errors and prefix Path.
type FieldError struct {
	// Path is the field's path, with list indexes and map keys:
	// "rules[0].repositories[2]", "rules[0].annotations[team]".
	Path string
	// Msg says what is wrong.
	Msg string
}

// Error returns "path: msg".
func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// Unwrap returns errdef.ErrInvalid.
func (e *FieldError) Unwrap() error { return errdef.ErrInvalid }
