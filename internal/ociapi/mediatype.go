package ociapi

import (
	"mime"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Header names used by the registry protocol.
const (
	HeaderContentDigest  = "Docker-Content-Digest"
	HeaderAPIVersion     = "Docker-Distribution-API-Version"
	HeaderFiltersApplied = "OCI-Filters-Applied"
)

// Manifest media types a mirror stores and serves.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeOCIManifest        = ocispec.MediaTypeImageManifest
	MediaTypeOCIIndex           = ocispec.MediaTypeImageIndex
)

// ManifestMediaTypes is the Accept list the mirror sends upstream: every
// manifest type it can serve, so that the upstream returns the stored bytes
// unconverted.
var ManifestMediaTypes = []string{
	MediaTypeOCIIndex,
	MediaTypeDockerManifestList,
	MediaTypeOCIManifest,
	MediaTypeDockerManifest,
}

// IsIndex reports whether mt is a multi-platform index media type.
func IsIndex(mt string) bool {
	return mt == MediaTypeOCIIndex || mt == MediaTypeDockerManifestList
}

// Accepts reports whether a request's Accept header values admit media type
// mt. An absent header, or one with a wildcard, admits everything.
func Accepts(accept []string, mt string) bool {
	if len(accept) == 0 {
		return true
	}
	seen := false
	for _, v := range accept {
		for _, part := range strings.Split(v, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			seen = true
			t, _, err := mime.ParseMediaType(part)
			if err != nil {
				continue
			}
			if t == mt || t == "*/*" || t == "application/*" {
				return true
			}
		}
	}
	return !seen
}
