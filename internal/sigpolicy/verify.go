package sigpolicy

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/cosign/v2/pkg/oci"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// Verify decides whether manifest d of repo (in registry, which only
// selects the rule) carries a signature that satisfies the rule that
// applies to it. It reads signatures through src and nothing else: no
// Rekor, Fulcio or TUF request is ever made.
//
// A missing or invalid signature is a Verdict, not an error. The error is
// for failures to fetch signatures (or ctx ending): the verdict could be
// different with them, so Verify returns the error, with a Verdict that has
// Rule, Revision, Mode and Digest set and no outcome, and the mirror
// decides (a cached verdict, or deny). Once a signature verifies, failures
// to fetch the others do not matter and the verdict is OK.
//
// Under mode off (of the rule, or the default when no rule matches) Verify
// reads nothing and returns ReasonOff; with no matching rule and a default
// of warn or enforce, ReasonNotCovered.
func (p *Policy) Verify(ctx context.Context, src Source, registry, repo string, d digest.Digest) (Verdict, error) {
	m := p.Match(registry, repo)
	v := newVerdict(m, d)
	if err := d.Validate(); err != nil {
		return v, fmt.Errorf("verify signatures of %q: %w", d, errdef.ErrInvalid)
	}
	if m.Mode == ModeOff {
		v.Reason = ReasonOff
		v.Message = fmt.Sprintf("signature rule %q (%s): not verified", v.Rule, v.Mode)
		return v, nil
	}
	r := p.rule(registry, repo)
	if r == nil {
		v.failed(fail(ReasonNotCovered, "no signature rule covers this repository"))
		return v, nil
	}
	h, err := v1.NewHash(d.String())
	if err != nil {
		return v, fmt.Errorf("verify signatures of %s: %w", d, errdef.ErrInvalid)
	}
	// The tag first, and the referrers only if no signature under the tag
	// verified: one upstream request less on the common path.
	best := fail(ReasonNoSignature, "no signature found")
	tagged, tagErr := tagSignatures(ctx, src, repo, d)
	if a, ok := r.first(ctx, tagged, h, d, &best); ok {
		v.accept(a)
		return v, nil
	}
	referred, refErr := referrers(ctx, src, repo, d, maxSignatures-len(tagged))
	if a, ok := r.first(ctx, referred, h, d, &best); ok {
		v.accept(a)
		return v, nil
	}
	if err := ctx.Err(); err != nil {
		return v, fmt.Errorf("verify signatures of %s: %w", d, err)
	}
	if err := errors.Join(tagErr, refErr); err != nil {
		return v, fmt.Errorf("verify signatures of %s: %w", d, err)
	}
	v.failed(best)
	return v, nil
}

// first returns the first of cands that satisfies r, with who signed it;
// it keeps in best the failure that came closest. It stops when ctx ends.
func (r *rule) first(ctx context.Context, cands []candidate, h v1.Hash, d digest.Digest, best *failure) (accepted, bool) {
	for _, c := range cands {
		if ctx.Err() != nil {
			return accepted{}, false
		}
		signer, f := r.check(ctx, c, h, d)
		if signer != "" {
			return accepted{signer: signer, where: c.where}, true
		}
		if f.better(*best) {
			*best = f
		}
	}
	return accepted{}, false
}

// check verifies one candidate signature of the manifest d (hash h).
func (r *rule) check(ctx context.Context, c candidate, h v1.Hash, d digest.Digest) (string, failure) {
	switch {
	case c.bad != nil:
		return "", *c.bad
	case c.sig != nil:
		return r.verifySimple(ctx, c.sig, h)
	case c.bundle != nil:
		return r.verifyBundle(ctx, c.bundle, d)
	}
	return "", fail(ReasonInvalidSignature, "empty signature")
}

// checkOpts returns the cosign options common to every check of r:
// offline, the payload checked by cosign's SimpleClaimVerifier (the digest
// in critical.image.docker-manifest-digest, and r's annotations), SCTs not
// required (see the package documentation), a Rekor bundle required only
// if r says so and then verified against r's pinned keys.
func (r *rule) checkOpts() *cosign.CheckOpts {
	co := &cosign.CheckOpts{
		ClaimVerifier: cosign.SimpleClaimVerifier,
		IgnoreSCT:     true,
		IgnoreTlog:    !r.requireTlog,
		RekorPubKeys:  r.rekorKeys,
		Offline:       true,
	}
	if r.annotations != nil {
		co.Annotations = r.annotations
	}
	return co
}

// verifySimple verifies a simple-signing signature with cosign's
// VerifyImageSignature: with each key of r, then as keyless against r's
// roots and identities. It returns who signed, or why it failed.
func (r *rule) verifySimple(ctx context.Context, sig oci.Signature, h v1.Hash) (string, failure) {
	var errs []error
	for _, k := range r.keys {
		for _, kv := range k.verifiers {
			co := r.checkOpts()
			co.SigVerifier = kv
			_, err := cosign.VerifyImageSignature(ctx, sig, h, co)
			if err == nil {
				return "key " + k.fingerprint, failure{}
			}
			errs = append(errs, fmt.Errorf("key %s: %w", k.fingerprint, err))
		}
	}
	if len(r.identities) > 0 {
		if cert, err := sig.Cert(); err == nil && cert != nil {
			co := r.checkOpts()
			co.RootCerts = r.roots
			co.IntermediateCerts = r.intermediates
			co.Identities = r.identities
			_, err := cosign.VerifyImageSignature(ctx, sig, h, co)
			if err == nil {
				return certSigner(cert), failure{}
			}
			errs = append(errs, fmt.Errorf("keyless: %w", err))
		}
	}
	return "", r.diagnoseSimple(ctx, sig, h).with(oneLine(errors.Join(errs...)))
}

// diagnoseSimple finds out why cosign rejected sig, by taking cosign's
// checks one at a time in the order that makes the most specific reason
// come out: who signed, what the payload says, then the proof of time.
// It only explains a rejection; it never accepts anything.
func (r *rule) diagnoseSimple(ctx context.Context, sig oci.Signature, h v1.Hash) failure {
	payload, err := sig.Payload()
	if err != nil {
		return fail(ReasonInvalidSignature, "signature payload cannot be read")
	}
	b64, err := sig.Base64Signature()
	if err != nil {
		return fail(ReasonInvalidSignature, "signature cannot be read")
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return fail(ReasonInvalidSignature, "signature annotation is not base64")
	}
	cert, err := sig.Cert()
	if err != nil {
		return fail(ReasonInvalidSignature, "certificate annotation cannot be read")
	}
	verifies := func(v signature.Verifier) bool {
		return v.VerifySignature(bytes.NewReader(raw), bytes.NewReader(payload), options.WithContext(ctx)) == nil
	}

	// Who signed: a key of the rule, or a certificate it trusts?
	var key signature.Verifier
	for _, k := range r.keys {
		for _, kv := range k.verifiers {
			if key == nil && verifies(kv) {
				key = kv
			}
		}
	}
	if key == nil {
		if cert == nil || len(r.identities) == 0 {
			return fail(ReasonWrongKey, "signed with a key the rule does not trust")
		}
		if _, err := cosign.TrustedCert(cert, r.roots, r.chainPool(sig)); err != nil {
			return fail(ReasonIdentityMismatch, "certificate not issued by a pinned Fulcio root").with(certSigner(cert))
		}
		if err := cosign.CheckCertificatePolicy(cert, &cosign.CheckOpts{Identities: r.identities}); err != nil {
			return fail(ReasonIdentityMismatch, "certificate identity matches none of the rule's identities").with(certSigner(cert))
		}
		cv, err := signature.LoadVerifier(cert.PublicKey, crypto.SHA256)
		if err != nil || !verifies(cv) {
			return fail(ReasonInvalidSignature, "signature does not verify with its certificate")
		}
	}

	// What the payload says.
	if err := cosign.SimpleClaimVerifier(sig, h, nil); err != nil {
		return failure{reason: ReasonInvalidSignature, rank: rankClaims,
			msg: "signed payload is not a cosign signature of this manifest's digest"}
	}
	if r.annotations != nil {
		if err := cosign.SimpleClaimVerifier(sig, h, r.annotations); err != nil {
			return fail(ReasonMissingAnnotation, "signed payload lacks a required annotation")
		}
	}

	// When it was signed.
	if r.requireTlog {
		co := &cosign.CheckOpts{RekorPubKeys: r.rekorKeys, SigVerifier: key}
		switch ok, err := cosign.VerifyBundle(sig, co); {
		case err == nil && !ok:
			return fail(ReasonBadTlog, "no transparency-log proof (Rekor bundle) in the signature")
		case err != nil:
			return fail(ReasonBadTlog, "transparency-log proof does not verify against the pinned Rekor keys")
		}
		if cert != nil && key == nil {
			b, err := sig.Bundle()
			if err != nil || b == nil {
				return fail(ReasonBadTlog, "no transparency-log proof (Rekor bundle) in the signature")
			}
			if err := cosign.CheckExpiry(cert, time.Unix(b.Payload.IntegratedTime, 0)); err != nil {
				return fail(ReasonBadTlog, "certificate was not valid when the signature was logged")
			}
		}
	} else if cert != nil && key == nil {
		if now := time.Now(); cosign.CheckExpiry(cert, now) != nil {
			// Not yet valid, on a gateway, is most often this machine's
			// clock behind (a reset real-time clock), not the signer.
			msg := "certificate expired, and the rule requires no transparency-log proof of when it signed"
			if now.Before(cert.NotBefore) {
				msg = fmt.Sprintf("certificate not valid yet (from %s; this machine's clock says %s: check it), and the rule requires no transparency-log proof of when it signed",
					cert.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
			}
			return failure{reason: ReasonInvalidSignature, rank: rankClaims, msg: msg}
		}
	}
	return failure{reason: ReasonInvalidSignature, rank: rankClaims, msg: "signature rejected"}
}

// chainPool returns the intermediates cosign builds the chain with: r's
// pinned ones, else those the signature carries (the root stays pinned).
func (r *rule) chainPool(sig oci.Signature) *x509.CertPool {
	if r.intermediates != nil {
		return r.intermediates
	}
	chain, err := sig.Chain()
	if err != nil || len(chain) < 2 {
		return nil
	}
	pool := x509.NewCertPool()
	for _, c := range chain[:len(chain)-1] {
		pool.AddCert(c)
	}
	return pool
}

// certSigner names the identity of a signing certificate.
func certSigner(cert *x509.Certificate) string {
	sans := cryptoutils.GetSubjectAlternateNames(cert)
	subject := "(no subject)"
	if len(sans) > 0 {
		subject = sans[0]
	}
	issuer := (&cosign.CertExtensions{Cert: cert}).GetIssuer()
	return fmt.Sprintf("%s (issuer %s)", subject, issuer)
}

// oneLine is err for Verdict.Detail, folded as the commands print errors
// (errdef.OneLine): each key's reason in errors.Join's lines stays apart
// ("; "), and a certificate's or payload's control characters are escaped
// for the log. A nil err is "".
func oneLine(err error) string {
	if err == nil {
		return ""
	}
	return errdef.OneLine(err.Error())
}
