package ociapi

import (
	"mime"
	"strconv"
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
// mt. An absent header admits everything. The most specific range that
// matches mt decides (RFC 9110 section 12.5.1: the type itself, then
// "application/*", then "*/*"), and a range with q=0 excludes: a client
// that sends "application/vnd.oci.image.index.v1+json;q=0, */*" does not
// accept indexes.
func Accepts(accept []string, mt string) bool {
	if len(accept) == 0 {
		return true
	}
	seen := false
	best, bestQ := 0, 0.0 // specificity of the best matching range (0: none), and its weight
	for _, v := range accept {
		for _, part := range strings.Split(v, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			seen = true
			t, params, err := mime.ParseMediaType(part)
			if err != nil {
				continue
			}
			spec := 0
			switch t {
			case mt:
				spec = 3
			case "application/*":
				if strings.HasPrefix(mt, "application/") {
					spec = 2
				}
			case "*/*":
				spec = 1
			}
			if spec == 0 || spec < best {
				continue
			}
			q := 1.0
			if s, ok := params["q"]; ok {
				if f, err := strconv.ParseFloat(s, 64); err == nil && f >= 0 && f <= 1 {
					q = f
				}
			}
			if spec > best || q > bestQ {
				// Of two ranges equally specific, the higher weight.
				best, bestQ = spec, q
			}
		}
	}
	if !seen {
		return true
	}
	return best > 0 && bestQ > 0
}
