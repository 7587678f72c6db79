package sigpolicy

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cyberphone/json-canonicalization/go/src/webpki.org/jsoncanonicalizer"
	"github.com/go-openapi/strfmt"
	"github.com/google/go-containerregistry/pkg/name"
	intotov1 "github.com/in-toto/attestation/go/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	cbundle "github.com/sigstore/cosign/v2/pkg/cosign/bundle"
	"github.com/sigstore/cosign/v2/pkg/oci"
	"github.com/sigstore/cosign/v2/pkg/oci/empty"
	"github.com/sigstore/cosign/v2/pkg/oci/mutate"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/rekor/pkg/generated/models"
	rekorutil "github.com/sigstore/rekor/pkg/util"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/dsse"
	"github.com/sigstore/sigstore/pkg/signature/options"
	"github.com/sigstore/sigstore/pkg/signature/payload"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/testutil/cosigntest"
)

const (
	testRegistry = "central.example.com"
	testRepo     = "fleet/app"
	testIssuer   = "https://issuer.example.com"
	testSubject  = "release@example.com"
)

// fakeSource is an in-memory Source: manifests by "repo@ref", referrers
// indexes by "repo@subject", blobs by digest; errs fails a key of either
// kind ("repo@ref", "referrers:repo@subject", "blob:<digest>").
type fakeSource struct {
	mu        sync.Mutex
	manifests map[string][]byte
	referrers map[string][]ocispec.Descriptor
	blobs     map[digest.Digest][]byte
	errs      map[string]error
	calls     int // of any method
	refCalls  int // of Referrers
}

var _ Source = (*fakeSource)(nil)

func newFakeSource() *fakeSource {
	return &fakeSource{
		manifests: map[string][]byte{},
		referrers: map[string][]ocispec.Descriptor{},
		blobs:     map[digest.Digest][]byte{},
		errs:      map[string]error{},
	}
}

func (s *fakeSource) Manifest(_ context.Context, repo, ref string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	key := repo + "@" + ref
	if err := s.errs[key]; err != nil {
		return nil, err
	}
	b, ok := s.manifests[key]
	if !ok {
		return nil, fmt.Errorf("manifest %s: %w", key, errdef.ErrNotFound)
	}
	return b, nil
}

func (s *fakeSource) Referrers(_ context.Context, repo string, subject digest.Digest) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	s.refCalls++
	key := repo + "@" + subject.String()
	if err := s.errs["referrers:"+key]; err != nil {
		return nil, err
	}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: s.referrers[key]}
	idx.SchemaVersion = 2
	if idx.Manifests == nil {
		idx.Manifests = []ocispec.Descriptor{}
	}
	return json.Marshal(idx)
}

func (s *fakeSource) Blob(_ context.Context, _ string, d digest.Digest, maxSize int64) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if err := s.errs["blob:"+d.String()]; err != nil {
		return nil, err
	}
	b, ok := s.blobs[d]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", d, errdef.ErrNotFound)
	}
	if int64(len(b)) > maxSize {
		return nil, fmt.Errorf("blob %s: %w", d, errdef.ErrTooLarge)
	}
	return b, nil
}

func (s *fakeSource) putManifest(repo, ref string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.manifests[repo+"@"+ref] = b
}

func (s *fakeSource) putBlob(b []byte) digest.Digest {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := digest.FromBytes(b)
	s.blobs[d] = b
	return d
}

func (s *fakeSource) addReferrer(repo string, subject digest.Digest, desc ocispec.Descriptor) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := repo + "@" + subject.String()
	s.referrers[key] = append(s.referrers[key], desc)
}

// putImage stores a small image manifest (unique per call) and returns
// its digest.
func (s *fakeSource) putImage(t testing.TB, repo string) digest.Digest {
	t.Helper()
	nonce := make([]byte, 8)
	if _, err := rand.Read(nonce); err != nil {
		t.Fatal(err)
	}
	cfg := s.putBlob([]byte(fmt.Sprintf(`{"architecture":"arm64","os":"linux","nonce":"%x"}`, nonce)))
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cfg, Size: int64(len(s.blobs[cfg]))},
		Layers:    []ocispec.Descriptor{},
	}
	m.SchemaVersion = 2
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(b)
	s.putManifest(repo, d.String(), b)
	return d
}

// signer is a cosign signing identity: a key, with a certificate chain for
// keyless signing.
type signer struct {
	sv      signature.SignerVerifier
	pubPEM  string
	certPEM []byte // leaf, keyless only
	chain   []byte // intermediates then root, keyless only
	cert    *x509.Certificate
}

// newKey generates a key pair the way cosign does (GeneratePrivateKey
// WithAlgorithm, loaded with cosign's default options, so Ed25519 signs
// with Ed25519ph).
func newKey(t testing.TB, alg protocommon.PublicKeyDetails) *signer {
	t.Helper()
	details, err := signature.GetAlgorithmDetails(alg)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := cosign.GeneratePrivateKeyWithAlgorithm(&details)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := signature.LoadDefaultSignerVerifier(pk, *cosign.GetDefaultLoadOptions(nil)...)
	if err != nil {
		t.Fatal(err)
	}
	return withSV(t, sv)
}

// newPureEd25519Key is a key loaded as cosign before Ed25519ph did.
func newPureEd25519Key(t testing.TB) *signer {
	t.Helper()
	details, err := signature.GetAlgorithmDetails(protocommon.PublicKeyDetails_PKIX_ED25519)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := cosign.GeneratePrivateKeyWithAlgorithm(&details)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := signature.LoadSignerVerifierWithOpts(pk)
	if err != nil {
		t.Fatal(err)
	}
	return withSV(t, sv)
}

func newECDSAKey(t testing.TB) *signer {
	return newKey(t, protocommon.PublicKeyDetails_PKIX_ECDSA_P256_SHA_256)
}

// newECDSAKeySHA256 is an ECDSA key on curve c loaded as cosign before
// v2.2 did, signing with SHA-256 whatever the curve.
func newECDSAKeySHA256(t testing.TB, c elliptic.Curve) *signer {
	t.Helper()
	pk, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := signature.LoadSignerVerifier(pk, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return withSV(t, sv)
}

func withSV(t testing.TB, sv signature.SignerVerifier) *signer {
	t.Helper()
	pub, err := sv.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := cryptoutils.MarshalPublicKeyToPEM(pub)
	if err != nil {
		t.Fatal(err)
	}
	return &signer{sv: sv, pubPEM: string(pemBytes)}
}

// testCA is a certificate authority acting as a Fulcio root with one
// intermediate that issues the leaves.
type testCA struct {
	root, inter       *x509.Certificate
	rootKey, interKey *ecdsa.PrivateKey
	rootPEM, interPEM string
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	ca := &testCA{}
	ca.rootKey = genECDSA(t)
	ca.root = makeCert(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "test fulcio root"},
		NotBefore:             time.Now().Add(-24 * time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, &ca.rootKey.PublicKey, ca.rootKey)
	ca.interKey = genECDSA(t)
	ca.inter = makeCert(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "test fulcio intermediate"},
		NotBefore:             time.Now().Add(-24 * time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
	}, ca.root, &ca.interKey.PublicKey, ca.rootKey)
	ca.rootPEM = string(pemCert(t, ca.root))
	ca.interPEM = string(pemCert(t, ca.inter))
	return ca
}

// leaf issues a Fulcio-style short-lived code-signing certificate for
// subject (an email SAN) from OIDC issuer, valid from notBefore for ten
// minutes, and returns a signer with its key.
func (ca *testCA) leaf(t testing.TB, subject, issuer string, notBefore time.Time) *signer {
	t.Helper()
	key := genECDSA(t)
	issuerV2, err := asn1.MarshalWithParams(issuer, "utf8")
	if err != nil {
		t.Fatal(err)
	}
	cert := makeCert(t, &x509.Certificate{
		NotBefore:      notBefore,
		NotAfter:       notBefore.Add(10 * time.Minute),
		EmailAddresses: []string{subject},
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		ExtraExtensions: []pkix.Extension{
			// Fulcio's OIDC issuer, deprecated raw form (v1) ...
			{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 1}, Value: []byte(issuer)},
			// ... and DER UTF8String form (v2).
			{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 8}, Value: issuerV2},
		},
	}, ca.inter, &key.PublicKey, ca.interKey)
	sv, err := signature.LoadECDSASignerVerifier(key, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	s := withSV(t, sv)
	s.cert = cert
	s.certPEM = pemCert(t, cert)
	s.chain = append(pemCert(t, ca.inter), pemCert(t, ca.root)...)
	return s
}

func genECDSA(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func makeCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signerKey crypto.Signer) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pemCert(t testing.TB, c *x509.Certificate) []byte {
	t.Helper()
	b, err := cryptoutils.MarshalCertificateToPEM(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testRekor is a transparency log's signing key: it issues the Rekor
// bundles (signed entry timestamps) that cosign embeds in signatures.
type testRekor struct {
	key    *ecdsa.PrivateKey
	pubPEM string
	logID  string
}

func newTestRekor(t testing.TB) *testRekor {
	t.Helper()
	k := genECDSA(t)
	pemBytes, err := cryptoutils.MarshalPublicKeyToPEM(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	id, err := cosign.GetTransparencyLogID(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &testRekor{key: k, pubPEM: string(pemBytes), logID: id}
}

// bundle logs a hashedrekord entry for (payload, sig, signer's cert or
// key) at integrated time it, and returns the Rekor bundle cosign would
// attach: the entry and its signed entry timestamp, which is the log's
// signature over the canonical JSON of the bundle payload.
func (r *testRekor) bundle(t testing.TB, s *signer, payloadBytes, rawSig []byte, it time.Time) *cbundle.RekorBundle {
	t.Helper()
	pubPEM := s.certPEM
	if pubPEM == nil {
		pubPEM = []byte(s.pubPEM)
	}
	sum := sha256.Sum256(payloadBytes)
	alg, val := "sha256", hex.EncodeToString(sum[:])
	apiVersion := "0.0.1"
	entry := &models.Hashedrekord{
		APIVersion: &apiVersion,
		Spec: models.HashedrekordV001Schema{
			Data: &models.HashedrekordV001SchemaData{Hash: &models.HashedrekordV001SchemaDataHash{Algorithm: &alg, Value: &val}},
			Signature: &models.HashedrekordV001SchemaSignature{
				Content:   rawSig,
				PublicKey: &models.HashedrekordV001SchemaSignaturePublicKey{Content: pubPEM},
			},
		},
	}
	body, err := json.Marshal(entry)
	if err != nil {
		t.Fatal(err)
	}
	b := &cbundle.RekorBundle{Payload: cbundle.RekorPayload{
		Body:           base64.StdEncoding.EncodeToString(body),
		IntegratedTime: it.Unix(),
		LogIndex:       42,
		LogID:          r.logID,
	}}
	b.SignedEntryTimestamp = r.sign(t, b.Payload)
	return b
}

func (r *testRekor) sign(t testing.TB, p cbundle.RekorPayload) []byte {
	t.Helper()
	contents, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	canonical, err := jsoncanonicalizer.Transform(contents)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(canonical)
	set, err := ecdsa.SignASN1(rand.Reader, r.key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// sigOpts shape one simple-signing signature.
type sigOpts struct {
	digest      digest.Digest // the digest the payload names; the image's by default
	annotations map[string]any
	rekor       *testRekor // attach a Rekor bundle logged by it
	integrated  time.Time  // the bundle's integrated time; now by default
	tamper      func(*cbundle.RekorBundle)
	noChain     bool // leave out the chain annotation
}

// sign makes a cosign signature of image d by s: the simple-signing
// payload from sigstore's payload package, signed with s, with the
// certificate, chain and Rekor bundle that cosign would attach.
func (s *signer) sign(t testing.TB, d digest.Digest, o sigOpts) oci.Signature {
	t.Helper()
	target := d
	if o.digest != "" {
		target = o.digest
	}
	ref, err := name.NewDigest(testRegistry + "/" + testRepo + "@" + target.String())
	if err != nil {
		t.Fatal(err)
	}
	p, err := (&payload.Cosign{Image: ref, Annotations: o.annotations}).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.sv.SignMessage(bytes.NewReader(p))
	if err != nil {
		t.Fatal(err)
	}
	var opts []static.Option
	if s.certPEM != nil {
		chain := s.chain
		if o.noChain {
			chain = nil
		}
		opts = append(opts, static.WithCertChain(s.certPEM, chain))
	}
	if o.rekor != nil {
		it := o.integrated
		if it.IsZero() {
			it = time.Now()
		}
		b := o.rekor.bundle(t, s, p, raw, it)
		if o.tamper != nil {
			o.tamper(b)
		}
		opts = append(opts, static.WithBundle(b))
	}
	sig, err := static.NewSignature(p, base64.StdEncoding.EncodeToString(raw), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// signatureManifest lays sigs out as cosign does (empty.Signatures with
// mutate.AppendSignatures: one simple-signing layer per signature, its
// annotations on the layer), stores the layers and config in src, and
// returns the manifest.
func signatureManifest(t testing.TB, src *fakeSource, sigs ...oci.Signature) []byte {
	t.Helper()
	img, err := mutate.AppendSignatures(empty.Signatures(), false, sigs...)
	if err != nil {
		t.Fatal(err)
	}
	m, blobs := cosigntest.Parts(t, img)
	for _, b := range blobs {
		src.putBlob(b)
	}
	return m
}

// tagSignedBy attaches, as cosign's .sig tag, one signature of d by k.
func tagSignedBy(k *signer) func(t *testing.T, src *fakeSource, d digest.Digest) {
	return func(t *testing.T, src *fakeSource, d digest.Digest) {
		attachTag(t, src, d, k.sign(t, d, sigOpts{}))
	}
}

// attachTag stores sigs under cosign's signature tag of d.
func attachTag(t testing.TB, src *fakeSource, d digest.Digest, sigs ...oci.Signature) {
	t.Helper()
	src.putManifest(testRepo, SignatureTag(d), signatureManifest(t, src, sigs...))
}

// attachReferrer stores sigs as cosign's OCI 1.1 signature referrer of d
// (WriteSignaturesExperimentalOCI: the same manifest with artifactType,
// config media type and subject set) and lists it in d's referrers.
func attachReferrer(t testing.TB, src *fakeSource, d digest.Digest, sigs ...oci.Signature) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(signatureManifest(t, src, sigs...), &m); err != nil {
		t.Fatal(err)
	}
	m["artifactType"] = SignatureArtifactType
	m["config"].(map[string]any)["mediaType"] = SignatureArtifactType
	m["subject"] = map[string]any{"mediaType": ocispec.MediaTypeImageManifest, "digest": d.String(), "size": 100}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	md := digest.FromBytes(b)
	src.putManifest(testRepo, md.String(), b)
	src.addReferrer(testRepo, d, ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageManifest, ArtifactType: SignatureArtifactType, Digest: md, Size: int64(len(b)),
	})
}

// bundleOpts shape a new-format (sigstore bundle) signature.
type bundleOpts struct {
	digest        digest.Digest // the statement's subject; the image's by default
	predicateType string        // cosign's sign predicate by default
	noAnnotation  bool          // leave the predicate type out of the referrer descriptor
	// tagSchema lists the bundle as cosign does in the tag schema's index
	// (no referrers API): artifact type of the config, no annotations.
	tagSchema  bool
	rekor      *testRekor // log the envelope in it
	integrated time.Time  // the entry's integrated time; now by default
	tamper     func(*models.LogEntryAnon)
}

// dsseEntry logs a DSSE envelope signed by s as Rekor v1 does: a dsse
// v0.0.1 entry, its signed entry timestamp, and an inclusion proof in a
// tree of one leaf with a checkpoint signed by the log (the inclusion proof
// that bundles v0.2+ must carry).
func (r *testRekor) dsseEntry(t testing.TB, s *signer, env []byte, it time.Time) *models.LogEntryAnon {
	t.Helper()
	var e struct {
		Payload    string `json:"payload"`
		Signatures []struct {
			Sig string `json:"sig"`
		} `json:"signatures"`
	}
	if err := json.Unmarshal(env, &e); err != nil || len(e.Signatures) != 1 {
		t.Fatalf("DSSE envelope %s: %v", env, err)
	}
	p, err := base64.StdEncoding.DecodeString(e.Payload)
	if err != nil {
		t.Fatal(err)
	}
	hexSum := func(b []byte) *string {
		sum := sha256.Sum256(b)
		h := hex.EncodeToString(sum[:])
		return &h
	}
	alg, apiVersion := "sha256", "0.0.1"
	verifier := strfmt.Base64(s.certPEM)
	if s.certPEM == nil {
		verifier = strfmt.Base64(s.pubPEM)
	}
	entry := &models.DSSE{APIVersion: &apiVersion, Spec: models.DSSEV001Schema{
		EnvelopeHash: &models.DSSEV001SchemaEnvelopeHash{Algorithm: &alg, Value: hexSum(env)},
		PayloadHash:  &models.DSSEV001SchemaPayloadHash{Algorithm: &alg, Value: hexSum(p)},
		Signatures:   []*models.DSSEV001SchemaSignaturesItems0{{Signature: &e.Signatures[0].Sig, Verifier: &verifier}},
	}}
	raw, err := json.Marshal(entry)
	if err != nil {
		t.Fatal(err)
	}
	body, err := jsoncanonicalizer.Transform(raw)
	if err != nil {
		t.Fatal(err)
	}
	leaf := sha256.Sum256(append([]byte{0}, body...)) // RFC 6962 leaf hash
	sv, err := signature.LoadECDSASignerVerifier(r.key, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := rekorutil.CreateAndSignCheckpoint(context.Background(), "rekor.example.com", 1234, 1, leaf[:], sv)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString(body)
	integrated, logIndex, treeIndex, treeSize := it.Unix(), int64(7), int64(0), int64(1)
	checkpoint, rootHash := string(cp), hex.EncodeToString(leaf[:])
	return &models.LogEntryAnon{
		Body: b64, IntegratedTime: &integrated, LogID: &r.logID, LogIndex: &logIndex,
		Verification: &models.LogEntryAnonVerification{
			InclusionProof: &models.InclusionProof{
				Checkpoint: &checkpoint, Hashes: []string{}, LogIndex: &treeIndex, RootHash: &rootHash, TreeSize: &treeSize,
			},
			SignedEntryTimestamp: r.sign(t, cbundle.RekorPayload{Body: b64, IntegratedTime: integrated, LogIndex: logIndex, LogID: r.logID}),
		},
	}
}

// signBundle makes what "cosign sign --new-bundle-format" makes
// (signDigestBundle): an in-toto statement of the sign predicate about d,
// DSSE-signed by s, optionally logged, in a v0.3 bundle built by cosign's
// MakeNewBundle, attached as a referrer of d in the layout of cosign's
// WriteAttestationNewBundleFormat, and returns the bundle.
func (s *signer) signBundle(t testing.TB, src *fakeSource, d digest.Digest, o bundleOpts) []byte {
	t.Helper()
	subject := d
	if o.digest != "" {
		subject = o.digest
	}
	pt := o.predicateType
	if pt == "" {
		pt = CosignSignPredicateType
	}
	stmt := &intotov1.Statement{
		Type:          intotov1.StatementTypeUri,
		Subject:       []*intotov1.ResourceDescriptor{{Digest: map[string]string{subject.Algorithm().String(): subject.Encoded()}}},
		PredicateType: pt,
	}
	p, err := protojson.Marshal(stmt)
	if err != nil {
		t.Fatal(err)
	}
	env, err := dsse.WrapSigner(s.sv, "application/vnd.in-toto+json").SignMessage(bytes.NewReader(p), options.WithContext(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := s.sv.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	signerBytes := s.certPEM
	if signerBytes == nil {
		signerBytes = []byte(s.pubPEM)
	}
	var entry *models.LogEntryAnon
	if o.rekor != nil {
		it := o.integrated
		if it.IsZero() {
			it = time.Now()
		}
		entry = o.rekor.dsseEntry(t, s, env, it)
		if o.tamper != nil {
			o.tamper(entry)
		}
	}
	b, err := cbundle.MakeNewBundle(pub, entry, p, env, signerBytes, nil)
	if err != nil {
		t.Fatal(err)
	}
	bd := src.putBlob(b)
	empty := src.putBlob([]byte("{}"))
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     ocispec.MediaTypeImageManifest,
		"artifactType":  BundleArtifactType,
		"config":        map[string]any{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
		"layers":        []any{map[string]any{"mediaType": BundleArtifactType, "digest": bd, "size": len(b)}},
		"subject":       map[string]any{"mediaType": ocispec.MediaTypeImageManifest, "digest": d, "size": 100},
		"annotations": map[string]string{
			"dev.sigstore.bundle.content":       "dsse-envelope",
			"dev.sigstore.bundle.predicateType": pt,
		},
	}
	mb, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	md := digest.FromBytes(mb)
	src.putManifest(testRepo, md.String(), mb)
	desc := ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageManifest, ArtifactType: BundleArtifactType, Digest: md, Size: int64(len(mb)),
		Annotations: func() map[string]string {
			if o.noAnnotation {
				return nil
			}
			return map[string]string{"dev.sigstore.bundle.predicateType": pt}
		}(),
	}
	if o.tagSchema {
		desc.ArtifactType, desc.Annotations = ocispec.MediaTypeEmptyJSON, nil
	}
	src.addReferrer(testRepo, d, desc)
	return b
}

// keyRule is an enforcing rule for the test repository with keys.
func keyRule(keys ...*signer) RuleSpec {
	r := RuleSpec{Name: "fleet", Repositories: []string{testRegistry + "/fleet/**"}}
	for _, k := range keys {
		r.Keys = append(r.Keys, k.pubPEM)
	}
	return r
}

// keylessRule is an enforcing rule for the test repository that accepts
// certificates from ca for ids.
func keylessRule(ca *testCA, ids ...IdentitySpec) RuleSpec {
	return RuleSpec{
		Name:         "fleet",
		Repositories: []string{testRegistry + "/fleet/**"},
		Identities:   ids,
		FulcioRoots:  []string{ca.rootPEM},
	}
}

func mustNew(t testing.TB, rules ...RuleSpec) *Policy {
	t.Helper()
	p, err := New(Spec{Rules: rules})
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	return p
}

// mustVerify runs p.Verify on d of the test repository and fails on error.
func mustVerify(t testing.TB, p *Policy, src Source, d digest.Digest) Verdict {
	t.Helper()
	v, err := p.Verify(context.Background(), src, testRegistry, testRepo, d)
	if err != nil {
		t.Fatalf("Verify() error = %v", err)
	}
	return v
}

// checkVerdict fails unless v has the outcome wantReason, and checks the
// message names the rule and reason and leaks no key or certificate.
func checkVerdict(t testing.TB, v Verdict, wantReason Reason) {
	t.Helper()
	if v.Reason != wantReason || v.OK != (wantReason == ReasonVerified) {
		t.Fatalf("Verify() = OK %v reason %q (%s; %s), want reason %q", v.OK, v.Reason, v.Message, v.Detail, wantReason)
	}
	if !strings.Contains(v.Message, `"`+v.Rule+`"`) || !strings.Contains(v.Message, string(v.Reason)) {
		t.Errorf("Verdict.Message = %q, want the rule %q and reason %q in it", v.Message, v.Rule, v.Reason)
	}
	for _, leak := range []string{"BEGIN", testSubject} {
		if strings.Contains(v.Message, leak) && !v.OK {
			t.Errorf("Verdict.Message = %q leaks %q", v.Message, leak)
		}
	}
}
