package sigpolicy

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"
)

// verifyBundle verifies a sigstore bundle (the new format) with cosign's
// VerifyNewBundle, which runs sigstore-go's verifier against r's pinned
// material: with each key of r, then as keyless with each identity
// (VerifyNewBundle takes one identity at a time). The bundle must sign an
// in-toto statement of cosign's sign predicate whose subject is d.
func (r *rule) verifyBundle(ctx context.Context, b *sgbundle.Bundle, d digest.Digest) (string, failure) {
	raw, err := hex.DecodeString(d.Encoded())
	if err != nil {
		return "", fail(ReasonInvalidSignature, "digest is not hex")
	}
	art := verify.WithArtifactDigest(d.Algorithm().String(), raw)
	var errs []error
	best := failure{rank: -1}
	consider := func(f failure) {
		if f.better(best) {
			best = f
		}
	}

	for _, k := range r.keys {
		for _, kv := range k.verifiers {
			res, err := cosign.VerifyNewBundle(ctx, r.bundleOpts(kv, nil, r.requireTlog), art, b)
			if err == nil {
				if f, ok := r.checkStatement(res); !ok {
					consider(f)
					continue
				}
				return "key " + k.fingerprint, failure{}
			}
			errs = append(errs, fmt.Errorf("key %s: %w", k.fingerprint, err))
			if r.requireTlog && isTlogErr(err) {
				// sigstore-go checks the log entry first; whether the
				// signature itself holds tells bad_tlog from wrong_key.
				if _, err2 := cosign.VerifyNewBundle(ctx, r.bundleOpts(kv, nil, false), art, b); err2 == nil {
					consider(fail(ReasonBadTlog, "transparency-log proof missing or does not verify against the pinned Rekor keys"))
					continue
				} else {
					err = err2
				}
			}
			consider(classifyBundleErr(err, true))
		}
	}

	if cert := bundleCert(b); cert != nil && len(r.identities) > 0 {
		switch f, ok := r.checkCert(cert); {
		case !ok:
			consider(f)
		default:
			for _, id := range r.identities {
				res, err := cosign.VerifyNewBundle(ctx, r.bundleOpts(nil, &id, r.requireTlog), art, b)
				if err == nil {
					if f, ok := r.checkStatement(res); !ok {
						consider(f)
						continue
					}
					return certSigner(cert), failure{}
				}
				errs = append(errs, fmt.Errorf("keyless: %w", err))
				consider(classifyBundleErr(err, false))
			}
		}
	}
	if best.rank < 0 {
		best = fail(ReasonWrongKey, "signed with a key the rule does not trust")
	}
	return "", best.with(oneLine(errors.Join(errs...)))
}

// bundleOpts returns the cosign options to verify a bundle with key kv,
// or as keyless for identity id, offline against r's trusted material.
func (r *rule) bundleOpts(kv signature.Verifier, id *cosign.Identity, tlog bool) *cosign.CheckOpts {
	co := &cosign.CheckOpts{
		SigVerifier:     kv,
		TrustedMaterial: r.trusted,
		IgnoreSCT:       true,
		IgnoreTlog:      !tlog,
		Offline:         true,
	}
	if id != nil {
		co.Identities = []cosign.Identity{*id}
	}
	return co
}

// checkCert runs the certificate checks of a keyless bundle on their own,
// so that a certificate from the wrong root or for the wrong identity is
// reported as such whatever else is wrong (sigstore-go checks the log
// entry first).
func (r *rule) checkCert(cert *x509.Certificate) (failure, bool) {
	if _, err := verify.VerifyLeafCertificate(cert.NotBefore, cert, r.trusted); err != nil {
		return fail(ReasonIdentityMismatch, "certificate not issued by a pinned Fulcio root").with(certSigner(cert)), false
	}
	if err := cosign.CheckCertificatePolicy(cert, &cosign.CheckOpts{Identities: r.identities}); err != nil {
		return fail(ReasonIdentityMismatch, "certificate identity matches none of the rule's identities").with(certSigner(cert)), false
	}
	return failure{}, true
}

// checkStatement checks what a verified bundle signs: cosign's sign
// predicate (anything else is an attestation), and no required
// annotations, which the new format cannot carry.
func (r *rule) checkStatement(res *verify.VerificationResult) (failure, bool) {
	if res == nil || res.Statement == nil || res.Statement.GetPredicateType() != CosignSignPredicateType {
		return failure{reason: ReasonInvalidSignature, rank: rankClaims,
			msg: "sigstore bundle is not a cosign signature (predicate " + CosignSignPredicateType + ")"}, false
	}
	if r.annotations != nil {
		return fail(ReasonMissingAnnotation, "signed payload lacks a required annotation (sigstore bundles carry none)"), false
	}
	return failure{}, true
}

// bundleCert returns the signing certificate of a bundle, nil for a key.
func bundleCert(b *sgbundle.Bundle) *x509.Certificate {
	vc, err := b.VerificationContent()
	if err != nil {
		return nil
	}
	return vc.Certificate()
}

// isTlogErr reports whether sigstore-go failed on the log entry or the
// time of signing. sigstore-go wraps its steps' errors with these fixed
// prefixes (verify.Verifier.Verify); the tests pin them.
func isTlogErr(err error) bool {
	s := err.Error()
	return strings.Contains(s, "failed to verify log inclusion") ||
		strings.Contains(s, "failed to verify timestamps")
}

// classifyBundleErr maps a sigstore-go verification error to a failure;
// keyed says the bundle was verified with a rule key.
func classifyBundleErr(err error, keyed bool) failure {
	s := err.Error()
	switch {
	case strings.Contains(s, "expected key signature, not certificate"):
		return fail(ReasonWrongKey, "signed with a certificate, and the rule trusts keys")
	case isTlogErr(err):
		return fail(ReasonBadTlog, "transparency-log proof missing or does not verify against the pinned Rekor keys")
	case strings.Contains(s, "does not match") && strings.Contains(s, "digest"),
		strings.Contains(s, "could not verify artifact"):
		return failure{reason: ReasonInvalidSignature, rank: rankClaims,
			msg: "signed statement does not name this manifest's digest"}
	case strings.Contains(s, "failed to verify certificate identity"):
		return fail(ReasonIdentityMismatch, "certificate identity matches none of the rule's identities")
	case strings.Contains(s, "failed to verify leaf certificate"):
		return failure{reason: ReasonInvalidSignature, rank: rankClaims,
			msg: "certificate not valid at the time of signing, or no proof of that time"}
	case strings.Contains(s, "failed to verify signature") && keyed:
		return fail(ReasonWrongKey, "signed with a key the rule does not trust")
	case strings.Contains(s, "failed to verify signature"):
		return fail(ReasonInvalidSignature, "signature does not verify with its certificate")
	}
	return fail(ReasonInvalidSignature, "sigstore bundle rejected")
}
