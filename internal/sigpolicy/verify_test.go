package sigpolicy

import (
	"context"
	"crypto/elliptic"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	cbundle "github.com/sigstore/cosign/v2/pkg/cosign/bundle"
	"github.com/sigstore/cosign/v2/pkg/oci"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/rekor/pkg/generated/models"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

func TestVerifyKeys(t *testing.T) {
	t.Parallel()
	ecdsaKey := newECDSAKey(t)
	ed := newKey(t, protocommon.PublicKeyDetails_PKIX_ED25519_PH)
	edPure := newPureEd25519Key(t)
	rsaKey := newKey(t, protocommon.PublicKeyDetails_PKIX_RSA_PKCS1V15_2048_SHA256)
	p384 := newKey(t, protocommon.PublicKeyDetails_PKIX_ECDSA_P384_SHA_384)
	p521 := newKey(t, protocommon.PublicKeyDetails_PKIX_ECDSA_P521_SHA_512)
	p384SHA256 := newECDSAKeySHA256(t, elliptic.P384())
	oldKey, newKey := newECDSAKey(t), newECDSAKey(t)
	other := newECDSAKey(t)

	tests := []struct {
		name   string
		rule   RuleSpec
		attach func(t *testing.T, src *fakeSource, d digest.Digest)
		want   Reason
		signer *signer // want Verdict.Signer to name this key
	}{
		{
			name:   "ecdsa",
			rule:   keyRule(ecdsaKey),
			attach: tagSignedBy(ecdsaKey),
			want:   ReasonVerified, signer: ecdsaKey,
		},
		{
			name:   "ed25519ph, cosign's default",
			rule:   keyRule(ed),
			attach: tagSignedBy(ed),
			want:   ReasonVerified, signer: ed,
		},
		{
			name:   "pure ed25519, older cosign",
			rule:   keyRule(edPure),
			attach: tagSignedBy(edPure),
			want:   ReasonVerified, signer: edPure,
		},
		{
			name:   "rsa",
			rule:   keyRule(rsaKey),
			attach: tagSignedBy(rsaKey),
			want:   ReasonVerified, signer: rsaKey,
		},
		{
			name:   "ecdsa p-384, signed with sha-384 as cosign does",
			rule:   keyRule(p384),
			attach: tagSignedBy(p384),
			want:   ReasonVerified, signer: p384,
		},
		{
			name:   "ecdsa p-521, signed with sha-512 as cosign does",
			rule:   keyRule(p521),
			attach: tagSignedBy(p521),
			want:   ReasonVerified, signer: p521,
		},
		{
			name:   "ecdsa p-384, signed with sha-256 as cosign before v2.2",
			rule:   keyRule(p384SHA256),
			attach: tagSignedBy(p384SHA256),
			want:   ReasonVerified, signer: p384SHA256,
		},
		{
			name:   "rotation: signed by the second key",
			rule:   keyRule(oldKey, newKey),
			attach: tagSignedBy(newKey),
			want:   ReasonVerified, signer: newKey,
		},
		{
			name:   "rotation: old and new key in one file",
			rule:   RuleSpec{Name: "fleet", Repositories: []string{testRegistry + "/fleet/**"}, Keys: []string{oldKey.pubPEM + newKey.pubPEM}},
			attach: tagSignedBy(newKey),
			want:   ReasonVerified, signer: newKey,
		},
		{
			name: "one of several signatures verifies",
			rule: keyRule(ecdsaKey),
			attach: func(t *testing.T, src *fakeSource, d digest.Digest) {
				attachTag(t, src, d, other.sign(t, d, sigOpts{}), ecdsaKey.sign(t, d, sigOpts{}))
			},
			want: ReasonVerified, signer: ecdsaKey,
		},
		{
			name: "signed many times: the newest signatures are read first",
			rule: keyRule(ecdsaKey),
			attach: func(t *testing.T, src *fakeSource, d digest.Digest) {
				var sigs []oci.Signature
				for range maxSignatures + 8 {
					sigs = append(sigs, other.sign(t, d, sigOpts{}))
				}
				attachTag(t, src, d, append(sigs, ecdsaKey.sign(t, d, sigOpts{}))...)
			},
			want: ReasonVerified, signer: ecdsaKey,
		},
		{
			name: "found through referrers",
			rule: keyRule(ecdsaKey),
			attach: func(t *testing.T, src *fakeSource, d digest.Digest) {
				attachReferrer(t, src, d, ecdsaKey.sign(t, d, sigOpts{}))
			},
			want: ReasonVerified, signer: ecdsaKey,
		},
		{
			name:   "wrong key",
			rule:   keyRule(ecdsaKey),
			attach: tagSignedBy(other),
			want:   ReasonWrongKey,
		},
		{
			name: "wrong key through referrers",
			rule: keyRule(ecdsaKey),
			attach: func(t *testing.T, src *fakeSource, d digest.Digest) {
				attachReferrer(t, src, d, other.sign(t, d, sigOpts{}))
			},
			want: ReasonWrongKey,
		},
		{
			name:   "unsigned",
			rule:   keyRule(ecdsaKey),
			attach: func(*testing.T, *fakeSource, digest.Digest) {},
			want:   ReasonNoSignature,
		},
		{
			name: "payload for another digest",
			rule: keyRule(ecdsaKey),
			attach: func(t *testing.T, src *fakeSource, d digest.Digest) {
				attachTag(t, src, d, ecdsaKey.sign(t, d, sigOpts{digest: digest.FromString("another image")}))
			},
			want: ReasonInvalidSignature,
		},
		{
			name: "signature of another image moved under this tag",
			rule: keyRule(ecdsaKey),
			attach: func(t *testing.T, src *fakeSource, d digest.Digest) {
				otherImage := src.putImage(t, testRepo)
				attachTag(t, src, d, ecdsaKey.sign(t, otherImage, sigOpts{}))
			},
			want: ReasonInvalidSignature,
		},
		{
			name: "required annotation present",
			rule: func() RuleSpec {
				r := keyRule(ecdsaKey)
				r.Annotations = map[string]string{"env": "prod"}
				return r
			}(),
			attach: func(t *testing.T, src *fakeSource, d digest.Digest) {
				attachTag(t, src, d, ecdsaKey.sign(t, d, sigOpts{annotations: map[string]any{"env": "prod", "team": "a"}}))
			},
			want: ReasonVerified, signer: ecdsaKey,
		},
		{
			name: "required annotation absent",
			rule: func() RuleSpec {
				r := keyRule(ecdsaKey)
				r.Annotations = map[string]string{"env": "prod"}
				return r
			}(),
			attach: func(t *testing.T, src *fakeSource, d digest.Digest) {
				attachTag(t, src, d, ecdsaKey.sign(t, d, sigOpts{annotations: map[string]any{"team": "a"}}))
			},
			want: ReasonMissingAnnotation,
		},
		{
			name: "required annotation with another value",
			rule: func() RuleSpec {
				r := keyRule(ecdsaKey)
				r.Annotations = map[string]string{"env": "prod"}
				return r
			}(),
			attach: func(t *testing.T, src *fakeSource, d digest.Digest) {
				attachTag(t, src, d, ecdsaKey.sign(t, d, sigOpts{annotations: map[string]any{"env": "staging"}}))
			},
			want: ReasonMissingAnnotation,
		},
		{
			name: "closest failure wins: right key without annotation over wrong key",
			rule: func() RuleSpec {
				r := keyRule(ecdsaKey)
				r.Annotations = map[string]string{"env": "prod"}
				return r
			}(),
			attach: func(t *testing.T, src *fakeSource, d digest.Digest) {
				attachTag(t, src, d, ecdsaKey.sign(t, d, sigOpts{}), other.sign(t, d, sigOpts{annotations: map[string]any{"env": "prod"}}))
			},
			want: ReasonMissingAnnotation,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := newFakeSource()
			d := src.putImage(t, testRepo)
			tt.attach(t, src, d)
			p := mustNew(t, tt.rule)
			v := mustVerify(t, p, src, d)
			checkVerdict(t, v, tt.want)
			if v.Digest != d || v.Rule != "fleet" || v.Mode != ModeEnforce {
				t.Errorf("Verdict = %+v, want digest %s, rule fleet, mode enforce", v, d)
			}
			if v.Allowed() != v.OK {
				t.Errorf("Verdict.Allowed() = %v under enforce, want %v", v.Allowed(), v.OK)
			}
			if tt.signer != nil {
				fp := fingerprint(t, tt.signer)
				if v.Signer != "key "+fp {
					t.Errorf("Verdict.Signer = %q, want %q", v.Signer, "key "+fp)
				}
			}
		})
	}
}

// Verdict.Detail folds the reason of each key that failed onto one line as
// the commands print errors (errdef.OneLine): "; " between them, so where
// one key's reason ends can be read.
func TestVerifyDetailOneLine(t *testing.T) {
	t.Parallel()
	k1, k2, other := newECDSAKey(t), newECDSAKey(t), newECDSAKey(t)
	src := newFakeSource()
	d := src.putImage(t, testRepo)
	tagSignedBy(other)(t, src, d)
	v := mustVerify(t, mustNew(t, keyRule(k1, k2)), src, d)
	checkVerdict(t, v, ReasonWrongKey)
	fp1, fp2 := fingerprint(t, k1), fingerprint(t, k2)
	i := strings.Index(v.Detail, "key "+fp1+": ")
	j := strings.Index(v.Detail, "; key "+fp2+": ")
	if i != 0 || j < 0 || strings.ContainsAny(v.Detail, "\n\t") {
		t.Errorf("Verdict.Detail = %q, want \"key %s: ...; key %s: ...\" on one line", v.Detail, fp1, fp2)
	}
}

func fingerprint(t *testing.T, s *signer) string {
	t.Helper()
	pub, err := s.sv.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	fp, err := KeyFingerprint(pub)
	if err != nil {
		t.Fatal(err)
	}
	return fp
}

func TestVerifyKeyless(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	otherCA := newTestCA(t)
	now := time.Now().Add(-time.Minute)
	exact := IdentitySpec{Issuer: testIssuer, Subject: testSubject}

	tests := []struct {
		name string
		rule RuleSpec
		s    *signer
		o    sigOpts
		want Reason
	}{
		{name: "exact identity", rule: keylessRule(ca, exact), s: ca.leaf(t, testSubject, testIssuer, now), want: ReasonVerified},
		{
			name: "regexp identity",
			rule: keylessRule(ca, IdentitySpec{IssuerRegexp: `https://issuer\.example\.(com|org)`, SubjectRegexp: `.*@example\.com`}),
			s:    ca.leaf(t, testSubject, testIssuer, now), want: ReasonVerified,
		},
		{
			name: "second identity of the rule",
			rule: keylessRule(ca, IdentitySpec{Issuer: testIssuer, Subject: "ci@example.com"}, exact),
			s:    ca.leaf(t, testSubject, testIssuer, now), want: ReasonVerified,
		},
		{
			name: "pinned intermediate, no chain in the signature",
			rule: func() RuleSpec {
				r := keylessRule(ca, exact)
				r.FulcioIntermediates = []string{ca.interPEM}
				return r
			}(),
			s: ca.leaf(t, testSubject, testIssuer, now), o: sigOpts{noChain: true}, want: ReasonVerified,
		},
		{
			name: "no intermediate anywhere",
			rule: keylessRule(ca, exact),
			s:    ca.leaf(t, testSubject, testIssuer, now), o: sigOpts{noChain: true}, want: ReasonIdentityMismatch,
		},
		{name: "other subject", rule: keylessRule(ca, exact), s: ca.leaf(t, "intruder@example.com", testIssuer, now), want: ReasonIdentityMismatch},
		{name: "other issuer", rule: keylessRule(ca, exact), s: ca.leaf(t, testSubject, "https://evil.example.com", now), want: ReasonIdentityMismatch},
		{
			name: "regexp is anchored",
			rule: keylessRule(ca, IdentitySpec{Issuer: testIssuer, SubjectRegexp: `.*@example\.com`}),
			s:    ca.leaf(t, "release@example.com.evil.net", testIssuer, now), want: ReasonIdentityMismatch,
		},
		{name: "certificate from another CA", rule: keylessRule(ca, exact), s: otherCA.leaf(t, testSubject, testIssuer, now), want: ReasonIdentityMismatch},
		{
			name: "expired certificate, no tlog required",
			rule: keylessRule(ca, exact),
			s:    ca.leaf(t, testSubject, testIssuer, time.Now().Add(-time.Hour)), want: ReasonInvalidSignature,
		},
		{
			name: "payload for another digest",
			rule: keylessRule(ca, exact),
			s:    ca.leaf(t, testSubject, testIssuer, now), o: sigOpts{digest: digest.FromString("x")}, want: ReasonInvalidSignature,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := newFakeSource()
			d := src.putImage(t, testRepo)
			attachTag(t, src, d, tt.s.sign(t, d, tt.o))
			v := mustVerify(t, mustNew(t, tt.rule), src, d)
			checkVerdict(t, v, tt.want)
			if tt.want == ReasonVerified {
				if want := testSubject + " (issuer " + testIssuer + ")"; v.Signer != want {
					t.Errorf("Verdict.Signer = %q, want %q", v.Signer, want)
				}
			}
		})
	}
}

func TestVerifyTlog(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	rekor := newTestRekor(t)
	otherRekor := newTestRekor(t)
	key := newECDSAKey(t)
	exact := IdentitySpec{Issuer: testIssuer, Subject: testSubject}
	// Fulcio certificates live ten minutes: this one expired long ago, so
	// only the logged time can show it signed while valid.
	issued := time.Now().Add(-2 * time.Hour)
	inValidity := issued.Add(5 * time.Minute)
	leaf := ca.leaf(t, testSubject, testIssuer, issued)
	fresh := ca.leaf(t, testSubject, testIssuer, time.Now().Add(-time.Minute))

	keyless := keylessRule(ca, exact)
	keyless.RequireTlog = true
	keyless.RekorKeys = []string{rekor.pubPEM}
	keyed := keyRule(key)
	keyed.RequireTlog = true
	keyed.RekorKeys = []string{rekor.pubPEM}
	// Two logs' keys in one file: the second is trusted too.
	keyedTwoLogs := keyRule(key)
	keyedTwoLogs.RequireTlog = true
	keyedTwoLogs.RekorKeys = []string{otherRekor.pubPEM + rekor.pubPEM}

	tests := []struct {
		name string
		rule RuleSpec
		s    *signer
		o    sigOpts
		want Reason
	}{
		{name: "keyless, logged while the certificate was valid", rule: keyless, s: leaf, o: sigOpts{rekor: rekor, integrated: inValidity}, want: ReasonVerified},
		{name: "key, logged", rule: keyed, s: key, o: sigOpts{rekor: rekor}, want: ReasonVerified},
		{name: "key, logged by the second log of a rekorKeys file", rule: keyedTwoLogs, s: key, o: sigOpts{rekor: rekor}, want: ReasonVerified},
		{name: "keyless, no bundle", rule: keyless, s: leaf, want: ReasonBadTlog},
		{name: "keyless, certificate still valid, no bundle", rule: keyless, s: fresh, want: ReasonBadTlog},
		{
			name: "keyless, certificate still valid, tampered signed entry timestamp",
			rule: keyless, s: fresh,
			o: sigOpts{rekor: rekor, tamper: func(b *cbundle.RekorBundle) {
				b.SignedEntryTimestamp[len(b.SignedEntryTimestamp)/2] ^= 1
			}},
			want: ReasonBadTlog,
		},
		{name: "key, bundle from an unpinned log", rule: keyed, s: key, o: sigOpts{rekor: otherRekor}, want: ReasonBadTlog},
		{
			name: "key, tampered integrated time",
			rule: keyed, s: key,
			o: sigOpts{rekor: rekor, tamper: func(b *cbundle.RekorBundle) {
				b.Payload.IntegratedTime--
			}},
			want: ReasonBadTlog,
		},
		{
			name: "key, entry logged for another key",
			rule: keyed, s: key,
			o: sigOpts{rekor: rekor, tamper: func(b *cbundle.RekorBundle) {
				otherKey := newECDSAKey(t)
				otherSig, err := otherKey.sv.SignMessage(strings.NewReader("x"))
				if err != nil {
					t.Fatal(err)
				}
				b.Payload.Body = rekor.bundle(t, otherKey, []byte("x"), otherSig, time.Now()).Payload.Body
				b.SignedEntryTimestamp = rekor.sign(t, b.Payload)
			}},
			want: ReasonBadTlog,
		},
		{name: "key, no bundle (--tlog-upload=false)", rule: keyed, s: key, want: ReasonBadTlog},
		{name: "bundle from an unpinned log", rule: keyless, s: leaf, o: sigOpts{rekor: otherRekor, integrated: inValidity}, want: ReasonBadTlog},
		{
			name: "bundle from an unpinned log claiming the pinned log's ID",
			rule: keyless, s: leaf,
			o: sigOpts{rekor: otherRekor, integrated: inValidity, tamper: func(b *cbundle.RekorBundle) {
				b.Payload.LogID = rekor.logID
				b.SignedEntryTimestamp = otherRekor.sign(t, b.Payload)
			}},
			want: ReasonBadTlog,
		},
		{
			name: "tampered integrated time",
			rule: keyless, s: leaf,
			o: sigOpts{rekor: rekor, integrated: inValidity, tamper: func(b *cbundle.RekorBundle) {
				b.Payload.IntegratedTime++
			}},
			want: ReasonBadTlog,
		},
		{
			name: "tampered signed entry timestamp",
			rule: keyless, s: leaf,
			o: sigOpts{rekor: rekor, integrated: inValidity, tamper: func(b *cbundle.RekorBundle) {
				b.SignedEntryTimestamp[len(b.SignedEntryTimestamp)/2] ^= 1
			}},
			want: ReasonBadTlog,
		},
		{
			name: "entry for another signature",
			rule: keyless, s: leaf,
			o: sigOpts{rekor: rekor, integrated: inValidity, tamper: func(b *cbundle.RekorBundle) {
				otherSig, err := leaf.sv.SignMessage(strings.NewReader("other payload"))
				if err != nil {
					t.Fatal(err)
				}
				other := rekor.bundle(t, leaf, []byte("other payload"), otherSig, inValidity)
				b.Payload.Body = other.Payload.Body
				b.SignedEntryTimestamp = rekor.sign(t, b.Payload)
			}},
			want: ReasonBadTlog,
		},
		{
			name: "logged after the certificate expired",
			rule: keyless, s: leaf, o: sigOpts{rekor: rekor, integrated: issued.Add(time.Hour)},
			want: ReasonBadTlog,
		},
		{
			name: "logged, wrong identity",
			rule: keyless, s: ca.leaf(t, "intruder@example.com", testIssuer, issued), o: sigOpts{rekor: rekor, integrated: inValidity},
			want: ReasonIdentityMismatch,
		},
		{
			name: "tlog not required: bundle ignored, expired certificate rejected",
			rule: keylessRule(ca, exact), s: leaf, o: sigOpts{rekor: rekor, integrated: inValidity},
			want: ReasonInvalidSignature,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := newFakeSource()
			d := src.putImage(t, testRepo)
			attachTag(t, src, d, tt.s.sign(t, d, tt.o))
			checkVerdict(t, mustVerify(t, mustNew(t, tt.rule), src, d), tt.want)
		})
	}
}

func TestVerifyBundleFormat(t *testing.T) {
	t.Parallel()
	key, other := newECDSAKey(t), newECDSAKey(t)
	p384 := newKey(t, protocommon.PublicKeyDetails_PKIX_ECDSA_P384_SHA_384)
	ca := newTestCA(t)
	exact := IdentitySpec{Issuer: testIssuer, Subject: testSubject}
	pinned := keylessRule(ca, exact)
	pinned.FulcioIntermediates = []string{ca.interPEM}
	annotated := keyRule(key)
	annotated.Annotations = map[string]string{"env": "prod"}
	rekor := newTestRekor(t)
	keyedTlog := keyRule(key)
	keyedTlog.RequireTlog, keyedTlog.RekorKeys = true, []string{rekor.pubPEM}
	keylessTlog := pinned
	keylessTlog.RequireTlog, keylessTlog.RekorKeys = true, []string{rekor.pubPEM}
	issued := time.Now().Add(-2 * time.Hour)
	expired := ca.leaf(t, testSubject, testIssuer, issued)
	fresh := ca.leaf(t, testSubject, testIssuer, time.Now().Add(-time.Minute))

	tests := []struct {
		name string
		rule RuleSpec
		s    *signer
		o    bundleOpts
		want Reason
	}{
		{name: "key", rule: keyRule(key), s: key, want: ReasonVerified},
		{name: "ecdsa p-384 key, sha-384", rule: keyRule(p384), s: p384, want: ReasonVerified},
		{name: "wrong key", rule: keyRule(key), s: other, want: ReasonWrongKey},
		{name: "statement about another digest", rule: keyRule(key), s: key, o: bundleOpts{digest: digest.FromString("x")}, want: ReasonInvalidSignature},
		{name: "attestation, not a signature", rule: keyRule(key), s: key, o: bundleOpts{predicateType: "https://slsa.dev/provenance/v1"}, want: ReasonNoSignature},
		{name: "annotations cannot be carried", rule: annotated, s: key, want: ReasonMissingAnnotation},
		{name: "key, listed by the tag schema", rule: keyRule(key), s: key, o: bundleOpts{tagSchema: true}, want: ReasonVerified},
		{
			name: "attestation listed by the tag schema", rule: keyRule(key), s: key,
			o: bundleOpts{predicateType: "https://slsa.dev/provenance/v1", tagSchema: true}, want: ReasonNoSignature,
		},
		{name: "keyless", rule: pinned, s: ca.leaf(t, testSubject, testIssuer, time.Now().Add(-time.Minute)), want: ReasonVerified},
		{name: "keyless, other subject", rule: pinned, s: ca.leaf(t, "intruder@example.com", testIssuer, time.Now().Add(-time.Minute)), want: ReasonIdentityMismatch},
		{name: "keyless, other CA", rule: pinned, s: newTestCA(t).leaf(t, testSubject, testIssuer, time.Now().Add(-time.Minute)), want: ReasonIdentityMismatch},
		{name: "keyless certificate, key rule", rule: keyRule(key), s: ca.leaf(t, testSubject, testIssuer, time.Now().Add(-time.Minute)), want: ReasonWrongKey},
		{
			name: "statement of another predicate, unannotated",
			rule: keyRule(key), s: key, o: bundleOpts{predicateType: "https://slsa.dev/provenance/v1", noAnnotation: true},
			want: ReasonInvalidSignature,
		},
		{name: "tlog required, bundle has none", rule: keyedTlog, s: key, want: ReasonBadTlog},
		{name: "tlog required, key, logged", rule: keyedTlog, s: key, o: bundleOpts{rekor: rekor}, want: ReasonVerified},
		{name: "tlog required, wrong key, logged", rule: keyedTlog, s: other, o: bundleOpts{rekor: rekor}, want: ReasonWrongKey},
		{
			name: "tlog required, keyless, logged while the certificate was valid",
			rule: keylessTlog, s: expired, o: bundleOpts{rekor: rekor, integrated: issued.Add(5 * time.Minute)}, want: ReasonVerified,
		},
		{
			name: "tlog required, keyless, logged after the certificate expired",
			rule: keylessTlog, s: expired, o: bundleOpts{rekor: rekor, integrated: issued.Add(time.Hour)}, want: ReasonBadTlog,
		},
		{name: "tlog required, keyless, no entry", rule: keylessTlog, s: fresh, want: ReasonBadTlog},
		{name: "tlog required, keyless, unpinned log", rule: keylessTlog, s: fresh, o: bundleOpts{rekor: newTestRekor(t)}, want: ReasonBadTlog},
		{
			name: "tlog required, keyless, tampered signed entry timestamp",
			rule: keylessTlog, s: fresh,
			o: bundleOpts{rekor: rekor, tamper: func(e *models.LogEntryAnon) {
				e.Verification.SignedEntryTimestamp[len(e.Verification.SignedEntryTimestamp)/2] ^= 1
			}},
			want: ReasonBadTlog,
		},
		{
			name: "tlog required, keyless, inclusion proof for another tree",
			rule: keylessTlog, s: fresh,
			o: bundleOpts{rekor: rekor, tamper: func(e *models.LogEntryAnon) {
				root := strings.Repeat("0", 64)
				e.Verification.InclusionProof.RootHash = &root
			}},
			want: ReasonBadTlog,
		},
		{
			name: "tlog required, keyless, logged with the wrong identity",
			rule: keylessTlog, s: ca.leaf(t, "intruder@example.com", testIssuer, issued), o: bundleOpts{rekor: rekor, integrated: issued.Add(5 * time.Minute)},
			want: ReasonIdentityMismatch,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := newFakeSource()
			d := src.putImage(t, testRepo)
			tt.s.signBundle(t, src, d, tt.o)
			v := mustVerify(t, mustNew(t, tt.rule), src, d)
			checkVerdict(t, v, tt.want)
			if tt.want == ReasonVerified && !strings.HasPrefix(v.Signature, "bundle sha256:") {
				t.Errorf("Verdict.Signature = %q, want a bundle referrer", v.Signature)
			}
		})
	}
}

func TestVerifyModes(t *testing.T) {
	t.Parallel()
	key := newECDSAKey(t)
	warn := keyRule(key)
	warn.Mode = ModeWarn

	t.Run("warn allows an unsigned manifest", func(t *testing.T) {
		t.Parallel()
		src := newFakeSource()
		d := src.putImage(t, testRepo)
		v := mustVerify(t, mustNew(t, warn), src, d)
		checkVerdict(t, v, ReasonNoSignature)
		if !v.Allowed() || v.Mode != ModeWarn {
			t.Errorf("Verdict = %+v, want allowed under warn", v)
		}
	})
	t.Run("off reads nothing", func(t *testing.T) {
		t.Parallel()
		off := keyRule()
		off.Mode = ModeOff
		src := newFakeSource()
		d := src.putImage(t, testRepo)
		src.calls = 0
		v := mustVerify(t, mustNew(t, off), src, d)
		if v.OK || v.Reason != ReasonOff || !v.Allowed() || src.calls != 0 {
			t.Errorf("Verify() = %+v after %d source calls, want off, allowed, no calls", v, src.calls)
		}
	})
	for _, tt := range []struct {
		mode        Mode
		wantReason  Reason
		wantAllowed bool
	}{
		{"", ReasonOff, true},
		{ModeOff, ReasonOff, true},
		{ModeWarn, ReasonNotCovered, true},
		{ModeEnforce, ReasonNotCovered, false},
	} {
		t.Run("default mode "+string(tt.mode), func(t *testing.T) {
			t.Parallel()
			p, err := New(Spec{Rules: []RuleSpec{keyRule(key)}, DefaultMode: tt.mode})
			if err != nil {
				t.Fatal(err)
			}
			src := newFakeSource()
			d := src.putImage(t, "other/app")
			v, err := p.Verify(context.Background(), src, "elsewhere.example.com", "other/app", d)
			if err != nil {
				t.Fatal(err)
			}
			if v.Rule != DefaultRuleName || v.Reason != tt.wantReason || v.Allowed() != tt.wantAllowed || v.OK {
				t.Errorf("Verify() = %+v, want rule %q reason %q allowed %v", v, DefaultRuleName, tt.wantReason, tt.wantAllowed)
			}
		})
	}
}

func TestVerifyFetchErrors(t *testing.T) {
	t.Parallel()
	key := newECDSAKey(t)
	p := mustNew(t, keyRule(key))
	down := errors.Join(errors.New("upstream unreachable"), errdef.ErrUnavailable)

	t.Run("tag unreachable, nothing else: error", func(t *testing.T) {
		t.Parallel()
		src := newFakeSource()
		d := src.putImage(t, testRepo)
		src.errs[testRepo+"@"+SignatureTag(d)] = down
		v, err := p.Verify(context.Background(), src, testRegistry, testRepo, d)
		if !errors.Is(err, errdef.ErrUnavailable) {
			t.Fatalf("Verify() error = %v, want ErrUnavailable", err)
		}
		if v.Rule != "fleet" || v.Revision == "" || v.OK || v.Reason != "" {
			t.Errorf("Verify() verdict = %+v, want rule and revision only", v)
		}
	})
	t.Run("tag unreachable, referrer verifies: OK", func(t *testing.T) {
		t.Parallel()
		src := newFakeSource()
		d := src.putImage(t, testRepo)
		attachReferrer(t, src, d, key.sign(t, d, sigOpts{}))
		src.errs[testRepo+"@"+SignatureTag(d)] = down
		checkVerdict(t, mustVerify(t, p, src, d), ReasonVerified)
	})
	t.Run("tag verifies: referrers not read", func(t *testing.T) {
		t.Parallel()
		src := newFakeSource()
		d := src.putImage(t, testRepo)
		attachTag(t, src, d, key.sign(t, d, sigOpts{}))
		checkVerdict(t, mustVerify(t, p, src, d), ReasonVerified)
		if src.refCalls != 0 {
			t.Errorf("Referrers called %d times, want 0", src.refCalls)
		}
	})
	t.Run("referrers unsupported: tag only", func(t *testing.T) {
		t.Parallel()
		src := newFakeSource()
		d := src.putImage(t, testRepo)
		attachTag(t, src, d, key.sign(t, d, sigOpts{}))
		src.errs["referrers:"+testRepo+"@"+d.String()] = errdef.ErrUnsupported
		checkVerdict(t, mustVerify(t, p, src, d), ReasonVerified)
	})
	t.Run("payload blob unreachable: error", func(t *testing.T) {
		t.Parallel()
		src := newFakeSource()
		d := src.putImage(t, testRepo)
		sig := key.sign(t, d, sigOpts{})
		attachTag(t, src, d, sig)
		pd, err := sig.Digest()
		if err != nil {
			t.Fatal(err)
		}
		src.errs["blob:"+pd.String()] = down
		if _, err := p.Verify(context.Background(), src, testRegistry, testRepo, d); !errors.Is(err, errdef.ErrUnavailable) {
			t.Fatalf("Verify() error = %v, want ErrUnavailable", err)
		}
	})
	t.Run("payload blob not in the registry: a verdict, not an error", func(t *testing.T) {
		t.Parallel()
		src := newFakeSource()
		d := src.putImage(t, testRepo)
		sig := key.sign(t, d, sigOpts{})
		attachTag(t, src, d, sig)
		pd, err := sig.Digest()
		if err != nil {
			t.Fatal(err)
		}
		delete(src.blobs, digest.Digest(pd.String()))
		checkVerdict(t, mustVerify(t, p, src, d), ReasonInvalidSignature)
	})
	t.Run("referrer listed but not in the registry: no signature, not an error", func(t *testing.T) {
		t.Parallel()
		src := newFakeSource()
		d := src.putImage(t, testRepo)
		src.addReferrer(testRepo, d, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: SignatureArtifactType,
			Digest: digest.FromString("deleted"), Size: 7})
		checkVerdict(t, mustVerify(t, p, src, d), ReasonNoSignature)
	})
	t.Run("payload that does not match its digest: not trusted", func(t *testing.T) {
		t.Parallel()
		src := newFakeSource()
		d := src.putImage(t, testRepo)
		sig := key.sign(t, d, sigOpts{})
		attachTag(t, src, d, sig)
		pd, err := sig.Digest()
		if err != nil {
			t.Fatal(err)
		}
		dd := digest.Digest(pd.String())
		src.blobs[dd] = append([]byte(nil), src.blobs[dd]...)
		src.blobs[dd][0] ^= 1
		if _, err := p.Verify(context.Background(), src, testRegistry, testRepo, d); !errors.Is(err, errdef.ErrDigestMismatch) {
			t.Fatalf("Verify() error = %v, want ErrDigestMismatch", err)
		}
	})
	t.Run("malformed layers next to a valid one", func(t *testing.T) {
		t.Parallel()
		src := newFakeSource()
		d := src.putImage(t, testRepo)
		attachTag(t, src, d, key.sign(t, d, sigOpts{}))
		m := string(src.manifests[testRepo+"@"+SignatureTag(d)])
		// A second copy of the layer whose signature is not base64.
		i := strings.Index(m, `"layers":[`) + len(`"layers":[`)
		j := strings.Index(m[i:], `}}`) + i + 2
		bad := strings.Replace(m[i:j], `"dev.cosignproject.cosign/signature":"`, `"dev.cosignproject.cosign/signature":"!!`, 1)
		src.putManifest(testRepo, SignatureTag(d), []byte(m[:i]+bad+","+m[i:]))
		checkVerdict(t, mustVerify(t, p, src, d), ReasonVerified)
	})
	t.Run("canceled", func(t *testing.T) {
		t.Parallel()
		src := newFakeSource()
		d := src.putImage(t, testRepo)
		attachTag(t, src, d, key.sign(t, d, sigOpts{}))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := p.Verify(ctx, src, testRegistry, testRepo, d); !errors.Is(err, context.Canceled) {
			t.Fatalf("Verify() error = %v, want context.Canceled", err)
		}
	})
	t.Run("invalid digest", func(t *testing.T) {
		t.Parallel()
		if _, err := p.Verify(context.Background(), newFakeSource(), testRegistry, testRepo, "sha256:nothex"); !errors.Is(err, errdef.ErrInvalid) {
			t.Fatalf("Verify() error = %v, want ErrInvalid", err)
		}
	})
}

func TestVerifyMalformedSignature(t *testing.T) {
	t.Parallel()
	key := newECDSAKey(t)
	p := mustNew(t, keyRule(key))
	tests := []struct {
		name string
		body string
	}{
		{"not json", `{"layers":`},
		{"layer without signature", `{"schemaVersion":2,"layers":[{"mediaType":"` + SimpleSigningMediaType + `","digest":"sha256:` + strings.Repeat("a", 64) + `","size":3}]}`},
		{"payload too large", `{"schemaVersion":2,"layers":[{"mediaType":"` + SimpleSigningMediaType + `","digest":"sha256:` + strings.Repeat("a", 64) + `","size":999999999,"annotations":{"dev.cosignproject.cosign/signature":"` + base64.StdEncoding.EncodeToString([]byte("x")) + `"}}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := newFakeSource()
			d := src.putImage(t, testRepo)
			src.putManifest(testRepo, SignatureTag(d), []byte(tt.body))
			checkVerdict(t, mustVerify(t, p, src, d), ReasonInvalidSignature)
		})
	}
}

// A certificate not valid yet is not called expired: on a gateway it most
// often means this machine's clock is behind, which the message says.
func TestCertificateNotValidYetNamesTheClock(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	exact := IdentitySpec{Issuer: testIssuer, Subject: testSubject}
	for _, c := range []struct {
		name      string
		notBefore time.Time
		want      string
	}{
		{"not valid yet", time.Now().Add(6 * time.Hour), "not valid yet"},
		{"expired", time.Now().Add(-time.Hour), "certificate expired"},
	} {
		src := newFakeSource()
		d := src.putImage(t, testRepo)
		attachTag(t, src, d, ca.leaf(t, testSubject, testIssuer, c.notBefore).sign(t, d, sigOpts{}))
		v := mustVerify(t, mustNew(t, keylessRule(ca, exact)), src, d)
		checkVerdict(t, v, ReasonInvalidSignature)
		if !strings.Contains(v.Message, c.want) {
			t.Errorf("%s: message %q, want it to say %q", c.name, v.Message, c.want)
		}
	}
}
