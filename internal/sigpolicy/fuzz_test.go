package sigpolicy

import (
	"context"
	"strconv"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// FuzzVerify feeds untrusted bytes where the upstream supplies them: the
// signature manifest under the cosign tag, the payload it points to, and a
// sigstore bundle referrer. Verify must not panic, and must not accept
// anything: the rule's key signed nothing here (the seeds are signed by
// another key, so the parsers see well-formed input too).
func FuzzVerify(f *testing.F) {
	ruleKey, other := newECDSAKey(f), newECDSAKey(f)
	p, err := New(Spec{Rules: []RuleSpec{keyRule(ruleKey)}})
	if err != nil {
		f.Fatal(err)
	}

	seed := newFakeSource()
	d := seed.putImage(f, testRepo)
	sig := other.sign(f, d, sigOpts{})
	attachTag(f, seed, d, sig)
	payload, err := sig.Payload()
	if err != nil {
		f.Fatal(err)
	}
	bundle := other.signBundle(f, seed, d, bundleOpts{})
	f.Add(seed.manifests[testRepo+"@"+SignatureTag(d)], payload, bundle)
	f.Add([]byte(`{"layers":[{"mediaType":"`+SimpleSigningMediaType+`","digest":"`+digest.FromString("").String()+`","size":0,"annotations":{"dev.cosignproject.cosign/signature":"AAAA","dev.sigstore.cosign/certificate":"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----","dev.sigstore.cosign/bundle":"{}"}}]}`), []byte{}, []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`))

	f.Fuzz(func(t *testing.T, sigManifest, payload, bundle []byte) {
		src := newFakeSource()
		d := src.putImage(t, testRepo)
		src.putManifest(testRepo, SignatureTag(d), sigManifest)
		src.putBlob(payload)
		bd := src.putBlob(bundle)
		m := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"` + BundleArtifactType +
			`","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"` + digest.FromString("{}").String() + `","size":2},"layers":[{"mediaType":"` +
			BundleArtifactType + `","digest":"` + bd.String() + `","size":` + strconv.Itoa(len(bundle)) + `}]}`)
		md := digest.FromBytes(m)
		src.putManifest(testRepo, md.String(), m)
		src.addReferrer(testRepo, d, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: BundleArtifactType, Digest: md, Size: int64(len(m))})

		v, err := p.Verify(context.Background(), src, testRegistry, testRepo, d)
		if err == nil && (v.OK || v.Allowed()) {
			t.Fatalf("Verify() = %+v, want a rejection", v)
		}
	})
}
