package sigpolicy

import (
	"fmt"

	"github.com/opencontainers/go-digest"
)

// Reason says in one word why a verdict is what it is. Reasons are a
// closed set, fit for a metric label.
type Reason string

// Reasons. A verdict with OK has ReasonVerified; ReasonOff and
// ReasonNotCovered come without any verification; the others are failures.
// When several signatures fail for different reasons, the verdict names the
// one that came closest to verifying, from farthest to closest:
// no_signature, invalid_signature (malformed), wrong_key,
// identity_mismatch, invalid_signature (trusted signer, but the payload
// names another digest or the certificate had no valid time),
// missing_annotation, bad_tlog. So "signed by the right key, proof missing"
// wins over "another signature by an unknown key".
const (
	// ReasonVerified: a signature satisfied the rule.
	ReasonVerified Reason = "verified"
	// ReasonOff: the rule (or the default) has mode off; nothing was
	// verified.
	ReasonOff Reason = "off"
	// ReasonNotCovered: no rule matches and the default mode is warn or
	// enforce.
	ReasonNotCovered Reason = "not_covered"
	// ReasonNoSignature: no cosign signature was found, neither under the
	// sha256-<hex>.sig tag nor among the referrers.
	ReasonNoSignature Reason = "no_signature"
	// ReasonInvalidSignature: a signature is malformed, its payload names
	// another digest, or its certificate has no valid time; see Message.
	ReasonInvalidSignature Reason = "invalid_signature"
	// ReasonWrongKey: signatures verify with none of the rule's keys (and
	// carry no certificate that the rule's keyless identities could
	// accept).
	ReasonWrongKey Reason = "wrong_key"
	// ReasonIdentityMismatch: a keyless signature's certificate does not
	// chain to the pinned roots, or its issuer and subject match none of
	// the rule's identities.
	ReasonIdentityMismatch Reason = "identity_mismatch"
	// ReasonMissingAnnotation: a valid signature lacks a required
	// annotation (or has another value).
	ReasonMissingAnnotation Reason = "missing_annotation"
	// ReasonBadTlog: a valid signature has no transparency-log proof, or
	// the proof does not verify against the pinned Rekor keys, or the
	// signing certificate was not valid at the logged time.
	ReasonBadTlog Reason = "bad_tlog"
)

// rank orders failure reasons by how close the signature came to
// verifying; see the Reason constants.
func (r Reason) rank() int {
	switch r {
	case ReasonNoSignature:
		return 0
	case ReasonInvalidSignature:
		return 1 // malformed; a payload for another digest ranks as rankClaims
	case ReasonWrongKey:
		return 2
	case ReasonIdentityMismatch:
		return 3
	case ReasonMissingAnnotation:
		return 5
	case ReasonBadTlog:
		return 6
	}
	return -1
}

// rankClaims is the rank of an invalid_signature whose signature did verify
// with a trusted key or certificate but signs the wrong content.
const rankClaims = 4

// Verdict is the outcome of Verify for one manifest under one rule.
type Verdict struct {
	// Rule names the rule that applied, DefaultRuleName if none.
	Rule string
	// Revision is the rule's revision (see Match.Revision).
	Revision string
	// Mode is the rule's mode.
	Mode Mode
	// Digest is the manifest the verdict is about.
	Digest digest.Digest
	// OK reports that a signature satisfied the rule.
	OK bool
	// Reason is ReasonVerified with OK, and says why not otherwise.
	Reason Reason
	// Message is one line for people, naming the rule and the reason. For
	// a failure it is fit for a 403 DENIED body: it holds no key material,
	// no certificate subject and no upstream error text. When OK it names
	// the Signer.
	Message string
	// Signer names who signed when OK: "key sha256:<hex>" (see
	// KeyFingerprint) or "<subject> (issuer <issuer>)" for a certificate.
	Signer string
	// Signature says where the accepted signature was found when OK:
	// "tag sha256-<hex>.sig layer <i>", "referrer sha256:<hex> layer <i>"
	// (a cosign signature manifest among the referrers) or
	// "bundle sha256:<hex>" (the referrer manifest of a sigstore bundle).
	Signature string
	// Detail says more about a failure, for the mirror's log only: it may
	// quote certificate subjects and cosign's own error text.
	Detail string
}

// Allowed reports whether the mirror may serve the manifest: always,
// unless the rule enforces and no signature satisfied it.
func (v Verdict) Allowed() bool { return v.OK || v.Mode != ModeEnforce }

// newVerdict returns the verdict for m about d without its outcome.
func newVerdict(m Match, d digest.Digest) Verdict {
	return Verdict{Rule: m.Rule, Revision: m.Revision, Mode: m.Mode, Digest: d}
}

// accepted is a signature that satisfied a rule: who signed it, and where
// it was found.
type accepted struct{ signer, where string }

// accept sets v's outcome to OK for the signature a.
func (v *Verdict) accept(a accepted) {
	v.OK, v.Reason, v.Signer, v.Signature = true, ReasonVerified, a.signer, a.where
	v.Message = fmt.Sprintf("signature rule %q (%s): verified: signed by %s", v.Rule, v.Mode, a.signer)
}

// failed sets v's outcome to the failure f.
func (v *Verdict) failed(f failure) {
	v.OK = false
	v.Reason = f.reason
	v.Message = fmt.Sprintf("signature rule %q (%s): %s: %s", v.Rule, v.Mode, f.reason, f.msg)
	v.Detail = f.detail
}

// failure is why one signature (or all of them) did not satisfy a rule.
type failure struct {
	reason Reason
	rank   int
	msg    string // safe for clients
	detail string // for logs
}

func fail(r Reason, msg string) failure {
	return failure{reason: r, rank: r.rank(), msg: msg}
}

// with adds detail (for logs) to f.
func (f failure) with(detail string) failure {
	switch {
	case detail == "":
	case f.detail == "":
		f.detail = detail
	default:
		f.detail += "; " + detail
	}
	return f
}

// better reports whether f came closer to verifying than g.
func (f failure) better(g failure) bool { return f.rank > g.rank }
