package sigpolicy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	cbundle "github.com/sigstore/cosign/v2/pkg/cosign/bundle"
	"github.com/sigstore/cosign/v2/pkg/oci"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// Source is what Verify reads signatures from: the mirror implements it
// over its cache and the upstream, so that signatures are fetched (and
// cached) with the image and verification needs nothing else. Verify calls
// it only for the repository it verifies, passing repo unchanged.
//
// Every method returns an error matching errdef.ErrNotFound when the
// content does not exist; any other error is a failure to fetch, and Verify
// returns it instead of a negative verdict, unless another signature
// verified.
type Source interface {
	// Manifest returns a manifest of repo by tag or by digest. Verify asks
	// for the tag "sha256-<hex>.sig" (cosign's signature tag), which
	// changes when a signature is added: the mirror should revalidate it
	// like any tag, and serve it from cache when the upstream is
	// unreachable. Verify checks a manifest fetched by digest again.
	Manifest(ctx context.Context, repo, ref string) ([]byte, error)
	// Referrers returns the OCI 1.1 referrers index (an image index) of
	// subject in repo, from the referrers API or its fallback tag
	// "sha256-<hex>". An error matching errdef.ErrNotFound or
	// errdef.ErrUnsupported means the registry has none. Verify asks for
	// it only when no signature under the cosign tag verified.
	Referrers(ctx context.Context, repo string, subject digest.Digest) (index []byte, err error)
	// Blob returns the blob d of repo, at most maxSize bytes (an error
	// matching errdef.ErrTooLarge beyond). Verify checks its digest again.
	Blob(ctx context.Context, repo string, d digest.Digest, maxSize int64) ([]byte, error)
}

// Limits on what one Verify reads, against a hostile or broken upstream.
// cosign adds one layer to the .sig manifest per signing, so a manifest
// with many layers is an image signed many times; beyond the limits the
// oldest signatures are ignored.
const (
	// maxManifestSize is the distribution-spec recommendation for manifests
	// (4 MiB), which registries enforce on push.
	maxManifestSize = 4 << 20
	// maxPayloadSize bounds a simple-signing payload or a sigstore bundle:
	// a few KiB in practice (a bundle with a certificate and tlog entry is
	// under 10 KiB).
	maxPayloadSize = 256 << 10
	// maxSignatures bounds the signatures verified per manifest.
	maxSignatures = 64
	// maxReferrers bounds the referrer manifests fetched per manifest.
	maxReferrers = 16
)

// Media types and annotations of cosign's formats.
const (
	// SimpleSigningMediaType is the layer media type of a cosign signature
	// payload (github.com/containers/image simple signing, JSON).
	SimpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	// SignatureArtifactType is the artifactType of a cosign signature
	// manifest attached as an OCI 1.1 referrer (cosign
	// --registry-referrers-mode=oci-1-1, COSIGN_EXPERIMENTAL).
	SignatureArtifactType = "application/vnd.dev.cosign.artifact.sig.v1+json"
	// BundleArtifactType is the artifactType of a sigstore bundle v0.3 that
	// newer cosign attaches as a referrer (cosign sign --new-bundle-format).
	BundleArtifactType = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// CosignSignPredicateType is the in-toto predicate type of the
	// statement that cosign signs in a bundle for "cosign sign"; bundles
	// with other predicates are attestations, not signatures.
	CosignSignPredicateType = "https://sigstore.dev/cosign/sign/v1"

	bundleMediaTypePrefix    = "application/vnd.dev.sigstore.bundle"
	bundlePredicateTypeAnnot = "dev.sigstore.bundle.predicateType"
)

// candidate is one signature found for a manifest.
type candidate struct {
	where  string           // for Verdict.Signature
	sig    oci.Signature    // a simple-signing signature, or
	bundle *sgbundle.Bundle // a sigstore bundle, or
	bad    *failure         // why the signature could not even be read
}

// SignatureTag returns cosign's tag for the signatures of d:
// "sha256-<hex>.sig".
func SignatureTag(d digest.Digest) string {
	return d.Algorithm().String() + "-" + d.Encoded() + ".sig"
}

// tagSignatures finds the signatures of d under cosign's tag in repo. The
// error is a failure to fetch; the candidates found are returned with it.
func tagSignatures(ctx context.Context, src Source, repo string, d digest.Digest) ([]candidate, error) {
	tag := SignatureTag(d)
	body, err := src.Manifest(ctx, repo, tag)
	switch {
	case errors.Is(err, errdef.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("signature tag %s: %w", tag, err)
	}
	cands, err := simpleSignatures(ctx, src, repo, "tag "+tag, body, maxSignatures)
	if err != nil {
		return cands, fmt.Errorf("signature tag %s: %w", tag, err)
	}
	return cands, nil
}

// referrers finds the signatures of d among its referrers in repo, at most
// limit of them.
func referrers(ctx context.Context, src Source, repo string, d digest.Digest, limit int) ([]candidate, error) {
	idx, err := src.Referrers(ctx, repo, d)
	switch {
	case errors.Is(err, errdef.ErrNotFound), errors.Is(err, errdef.ErrUnsupported):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("referrers of %s: %w", d, err)
	}
	return referrerSignatures(ctx, src, repo, idx, limit)
}

// referrerSignatures reads the cosign signature manifests and sigstore
// bundles listed in a referrers index, at most limit signatures.
func referrerSignatures(ctx context.Context, src Source, repo string, idx []byte, limit int) ([]candidate, error) {
	var index ocispec.Index
	if err := json.Unmarshal(idx, &index); err != nil {
		// A referrers answer that is not an index lists nothing usable;
		// the tag scheme may still have found signatures.
		return []candidate{{where: "referrers", bad: badSig("referrers index is not JSON")}}, nil
	}
	var cands []candidate
	var errs []error
	n := 0
	for _, desc := range index.Manifests {
		// The tag schema's index, as cosign writes it on a registry
		// without the referrers API, names the config's media type (or
		// nothing) for a bundle: then the manifest says what it is.
		unnamed := desc.ArtifactType == "" || desc.ArtifactType == ocispec.MediaTypeEmptyJSON
		if !unnamed && !signatureKind(desc.ArtifactType, desc.Annotations) {
			continue
		}
		if n++; n > maxReferrers || len(cands) >= limit {
			break
		}
		if err := desc.Digest.Validate(); err != nil {
			if !unnamed {
				cands = append(cands, candidate{where: "referrers", bad: badSig("referrer with an invalid digest")})
			}
			continue
		}
		body, err := fetchManifest(ctx, src, repo, desc.Digest)
		if errors.Is(err, errdef.ErrNotFound) {
			// Listed but not there (a tag schema index left stale by a
			// deletion): no signature, as the registry says, and no
			// failure to fetch, which would leave the manifest without a
			// verdict, verified again on every pull.
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("referrer %s: %w", desc.Digest, err))
			continue
		}
		kind := desc.ArtifactType
		if unnamed {
			var m struct {
				ArtifactType string             `json:"artifactType"`
				Config       ocispec.Descriptor `json:"config"`
				Annotations  map[string]string  `json:"annotations"`
			}
			if json.Unmarshal(body, &m) != nil {
				continue
			}
			if kind = m.ArtifactType; kind == "" {
				kind = m.Config.MediaType
			}
			if !signatureKind(kind, m.Annotations) {
				continue
			}
		}
		if kind == SignatureArtifactType {
			cs, err := simpleSignatures(ctx, src, repo, "referrer "+desc.Digest.String(), body, limit-len(cands))
			cands = append(cands, cs...)
			if err != nil {
				errs = append(errs, fmt.Errorf("referrer %s: %w", desc.Digest, err))
			}
			continue
		}
		c, err := bundleSignature(ctx, src, repo, "bundle "+desc.Digest.String(), body)
		if err != nil {
			errs = append(errs, fmt.Errorf("referrer %s: %w", desc.Digest, err))
			continue
		}
		cands = append(cands, c)
	}
	return cands, errors.Join(errs...)
}

// signatureKind reports whether a referrer of artifact type kind, with
// annotations, is a signature: a cosign signature, or a sigstore bundle
// whose predicate is cosign's sign predicate (others are attestations:
// provenance, SBOMs, ...).
func signatureKind(kind string, annotations map[string]string) bool {
	if kind == SignatureArtifactType {
		return true
	}
	if !strings.HasPrefix(kind, bundleMediaTypePrefix) {
		return false
	}
	pt, ok := annotations[bundlePredicateTypeAnnot]
	return !ok || pt == CosignSignPredicateType
}

// fetchManifest fetches a manifest by digest and checks its digest.
func fetchManifest(ctx context.Context, src Source, repo string, d digest.Digest) ([]byte, error) {
	body, err := src.Manifest(ctx, repo, d.String())
	if err != nil {
		return nil, err
	}
	if len(body) > maxManifestSize {
		return nil, fmt.Errorf("manifest %s: %d bytes: %w", d, len(body), errdef.ErrTooLarge)
	}
	if got := d.Algorithm().FromBytes(body); got != d {
		return nil, fmt.Errorf("manifest %s: got %s: %w", d, got, errdef.ErrDigestMismatch)
	}
	return body, nil
}

// fetchBlob fetches a small blob and checks its digest and size.
func fetchBlob(ctx context.Context, src Source, repo string, desc ocispec.Descriptor) ([]byte, error) {
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("blob %q: %w", desc.Digest, errdef.ErrInvalid)
	}
	if desc.Size > maxPayloadSize {
		return nil, fmt.Errorf("blob %s: %d bytes: %w", desc.Digest, desc.Size, errdef.ErrTooLarge)
	}
	b, err := src.Blob(ctx, repo, desc.Digest, maxPayloadSize)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", desc.Digest, err)
	}
	if int64(len(b)) != desc.Size {
		return nil, fmt.Errorf("blob %s: %d bytes, want %d: %w", desc.Digest, len(b), desc.Size, errdef.ErrSizeMismatch)
	}
	if got := desc.Digest.Algorithm().FromBytes(b); got != desc.Digest {
		return nil, fmt.Errorf("blob %s: got %s: %w", desc.Digest, got, errdef.ErrDigestMismatch)
	}
	return b, nil
}

// simpleSignatures reads the simple-signing layers of a cosign signature
// manifest, as cosign lays it out: one layer per signature, the payload as
// the blob, the base64 signature, certificate, chain and Rekor bundle in
// the layer's annotations. It reads at most limit signatures, newest
// (last) first.
func simpleSignatures(ctx context.Context, src Source, repo, where string, body []byte, limit int) ([]candidate, error) {
	if len(body) > maxManifestSize {
		return []candidate{{where: where, bad: badSig("signature manifest too large")}}, nil
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return []candidate{{where: where, bad: badSig("signature manifest is not JSON")}}, nil
	}
	var cands []candidate
	var errs []error
	seen := 0
	// cosign appends a layer per signing: read the newest first, so that
	// past the limit the oldest signatures are the ones left out.
	for i := len(m.Layers) - 1; i >= 0; i-- {
		l := m.Layers[i]
		if l.MediaType != SimpleSigningMediaType {
			continue
		}
		if seen++; seen > limit {
			break
		}
		lw := fmt.Sprintf("%s layer %d", where, i)
		b64sig := l.Annotations[static.SignatureAnnotationKey]
		if b64sig == "" {
			cands = append(cands, candidate{where: lw, bad: badSig("signature layer without a signature annotation")})
			continue
		}
		payload, err := fetchBlob(ctx, src, repo, l)
		if err != nil {
			if errors.Is(err, errdef.ErrTooLarge) || errors.Is(err, errdef.ErrInvalid) {
				cands = append(cands, candidate{where: lw, bad: badSig("signature payload too large or invalid")})
				continue
			}
			if errors.Is(err, errdef.ErrNotFound) {
				// The registry says it has no such payload: a signature
				// that cannot be read, not a failure to fetch.
				cands = append(cands, candidate{where: lw, bad: badSig("signature payload not found in the registry")})
				continue
			}
			errs = append(errs, err)
			continue
		}
		opts := []static.Option{static.WithAnnotations(l.Annotations)}
		if cert := l.Annotations[static.CertificateAnnotationKey]; cert != "" {
			opts = append(opts, static.WithCertChain([]byte(cert), []byte(l.Annotations[static.ChainAnnotationKey])))
		}
		if rb := l.Annotations[static.BundleAnnotationKey]; rb != "" {
			// A bundle that does not parse is left out: the signature then
			// has no transparency-log proof, which only matters to a rule
			// that requires one (it then fails with bad_tlog).
			var bundle cbundle.RekorBundle
			if err := json.Unmarshal([]byte(rb), &bundle); err == nil {
				opts = append(opts, static.WithBundle(&bundle))
			}
		}
		sig, err := static.NewSignature(payload, b64sig, opts...)
		if err != nil {
			cands = append(cands, candidate{where: lw, bad: badSig("signature layer cannot be read")})
			continue
		}
		cands = append(cands, candidate{where: lw, sig: sig})
	}
	return cands, errors.Join(errs...)
}

// bundleSignature reads the sigstore bundle of a referrer manifest.
func bundleSignature(ctx context.Context, src Source, repo, where string, body []byte) (candidate, error) {
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return candidate{where: where, bad: badSig("bundle manifest is not JSON")}, nil
	}
	for _, l := range m.Layers {
		if !strings.HasPrefix(l.MediaType, bundleMediaTypePrefix) {
			continue
		}
		b, err := fetchBlob(ctx, src, repo, l)
		if err != nil {
			if errors.Is(err, errdef.ErrTooLarge) || errors.Is(err, errdef.ErrInvalid) {
				return candidate{where: where, bad: badSig("bundle too large or invalid")}, nil
			}
			if errors.Is(err, errdef.ErrNotFound) {
				return candidate{where: where, bad: badSig("bundle not found in the registry")}, nil
			}
			return candidate{}, err
		}
		var bundle sgbundle.Bundle
		if err := bundle.UnmarshalJSON(b); err != nil {
			f := badSig("sigstore bundle does not parse").with(err.Error())
			return candidate{where: where, bad: &f}, nil
		}
		return candidate{where: where, bundle: &bundle}, nil
	}
	return candidate{where: where, bad: badSig("bundle manifest without a bundle layer")}, nil
}

func badSig(msg string) *failure {
	f := fail(ReasonInvalidSignature, msg)
	return &f
}
