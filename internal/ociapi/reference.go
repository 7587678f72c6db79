package ociapi

import (
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// ParseReference splits an image reference as a device pulls it from the
// mirror, [registry/]repository[:tag|@digest], into the repository name (as
// the mirror routes it, registry prefix included) and the tag or digest;
// no tag means "latest". Errors wrap errdef.ErrInvalid.
func ParseReference(s string) (name, ref string, err error) {
	name, ref = s, "latest"
	if i := strings.LastIndex(s, "@"); i >= 0 {
		name, ref = s[:i], s[i+1:]
		if _, err := digest.Parse(ref); err != nil {
			return "", "", fmt.Errorf("image %q: invalid digest: %w", s, errdef.ErrInvalid)
		}
	} else if i := strings.LastIndex(s, ":"); i > strings.LastIndex(s, "/") {
		name, ref = s[:i], s[i+1:]
		if !ValidTag(ref) {
			return "", "", fmt.Errorf("image %q: invalid tag: %w", s, errdef.ErrInvalid)
		}
	}
	// A registry prefix may carry a port (localhost:5000/app), which the
	// path grammar of /v2/ does not allow: containerd's ?ns= reaches such
	// an upstream, and so does the prefetcher.
	repo := name
	if first, rest, ok := strings.Cut(name, "/"); ok && strings.Contains(first, ":") {
		host, port, _ := strings.Cut(first, ":")
		if !ValidName(host) || !validPort(port) {
			return "", "", fmt.Errorf("image %q: invalid registry %q: %w", s, first, errdef.ErrInvalid)
		}
		repo = rest
	}
	if !ValidName(repo) {
		return "", "", fmt.Errorf("image %q: invalid repository name: %w", s, errdef.ErrInvalid)
	}
	return name, ref, nil
}

func validPort(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// TagSchemaSubject returns the manifest digest that tag, the OCI tag
// schema's referrers tag (<alg>-<hex>), names, or "".
func TagSchemaSubject(tag string) digest.Digest {
	if alg, hex, ok := strings.Cut(tag, "-"); ok {
		if d := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex); d.Validate() == nil {
			return d
		}
	}
	return ""
}

// CosignTagSubject returns the manifest digest that tag, one of cosign's
// <alg>-<hex>.sig, .att or .sbom tags, is about, or "".
func CosignTagSubject(tag string) digest.Digest {
	for _, suffix := range []string{".sig", ".att", ".sbom"} {
		if s, ok := strings.CutSuffix(tag, suffix); ok {
			return TagSchemaSubject(s)
		}
	}
	return ""
}

// EvidenceTagSubject returns the manifest digest that tag, a referrers
// tag of the OCI tag schema or one of cosign's, is about, or "".
func EvidenceTagSubject(tag string) digest.Digest {
	if d := CosignTagSubject(tag); d != "" {
		return d
	}
	return TagSchemaSubject(tag)
}

// CanonicalReference is reference s as ParseReference reads it, with its
// tag written out: "edge/app" and "edge/app:latest" are one image, and
// lists keyed by reference must not hold it twice.
func CanonicalReference(s string) (string, error) {
	name, ref, err := ParseReference(s)
	if err != nil {
		return "", err
	}
	if strings.Contains(ref, ":") {
		return name + "@" + ref, nil // a digest
	}
	return name + ":" + ref, nil
}
