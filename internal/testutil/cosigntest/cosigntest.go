// Package cosigntest makes cosign key-based signatures for tests of the
// mirror's signature policy, with cosign's own code: a key pair generated
// and loaded as `cosign generate-key-pair` does, the simple-signing payload
// of sigstore's payload package, and the signature image laid out as
// `cosign sign --tlog-upload=false` pushes it under the sha256-<hex>.sig tag.
package cosigntest

import (
	"bytes"
	"encoding/base64"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/cosign/v2/pkg/oci/empty"
	"github.com/sigstore/cosign/v2/pkg/oci/mutate"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/payload"
)

// Key is a cosign signing key.
type Key struct {
	sv signature.SignerVerifier
	// PublicPEM is the public key as cosign.pub holds it.
	PublicPEM string
}

// NewKey generates an ECDSA P-256 key, cosign's default.
func NewKey(t testing.TB) *Key {
	t.Helper()
	pk, err := cosign.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	sv, err := signature.LoadDefaultSignerVerifier(pk, *cosign.GetDefaultLoadOptions(nil)...)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := sv.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	pem, err := cryptoutils.MarshalPublicKeyToPEM(pub)
	if err != nil {
		t.Fatal(err)
	}
	return &Key{sv: sv, PublicPEM: string(pem)}
}

// Sign returns the signature image of the manifest d of ref's repository
// (ref is "registry/repository", for the payload's docker-reference): push
// it as SignatureTag(d).
func (k *Key) Sign(t testing.TB, repo string, d digest.Digest) v1.Image {
	t.Helper()
	ref, err := name.NewDigest(repo+"@"+d.String(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	p, err := (&payload.Cosign{Image: ref}).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := k.sv.SignMessage(bytes.NewReader(p))
	if err != nil {
		t.Fatal(err)
	}
	sig, err := static.NewSignature(p, base64.StdEncoding.EncodeToString(raw))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendSignatures(empty.Signatures(), false, sig)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// SignatureTag is cosign's tag for the signatures of d: "sha256-<hex>.sig".
func SignatureTag(d digest.Digest) string { return d.Algorithm().String() + "-" + d.Encoded() + ".sig" }

// Parts returns the raw manifest and the blobs (config and layers) of img,
// for a fake registry.
func Parts(t testing.TB, img v1.Image) (manifest []byte, blobs [][]byte) {
	t.Helper()
	m, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	blobs = append(blobs, cfg)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(rc); err != nil {
			t.Fatal(err)
		}
		rc.Close()
		blobs = append(blobs, buf.Bytes())
	}
	return m, blobs
}
