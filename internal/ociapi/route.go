// Package ociapi holds the distribution-spec vocabulary shared by the server
// and the client side of registry-edge: route parsing, error codes and the
// error envelope, header names and media types.
//
// References:
//   - https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md
package ociapi

import (
	"net/http"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Kind is the endpoint a request addresses.
type Kind int

// Endpoint kinds.
const (
	KindUnknown    Kind = iota
	KindBase            // /v2/
	KindCatalog         // /v2/_catalog
	KindManifest        // /v2/<name>/manifests/<reference>
	KindBlob            // /v2/<name>/blobs/<digest>
	KindBlobUpload      // /v2/<name>/blobs/uploads/[<session>]
	KindTags            // /v2/<name>/tags/list
	KindReferrers       // /v2/<name>/referrers/<digest>
)

var kindNames = [...]string{"unknown", "base", "catalog", "manifest", "blob", "upload", "tags", "referrers"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Route is a parsed /v2 request path.
type Route struct {
	Kind Kind
	// Name is the repository name as the client sent it, including any
	// registry prefix (for example "ghcr.io/org/app").
	Name string
	// Reference is the tag or digest of a manifest request, or the digest
	// string of a blob or referrers request.
	Reference string
	// Digest is set when Reference is a digest.
	Digest digest.Digest
}

// IsDigest reports whether the route addresses content by digest.
func (r Route) IsDigest() bool { return r.Digest != "" }

// Grammar from the distribution-spec "Pulling manifests" section. A name
// component may also be a registry host name used as a routing prefix
// ("ghcr.io"), which the component grammar already allows.
var (
	nameComponent = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$`)
	tagPattern    = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// maxNameLength bounds a repository name. The spec recommends that a name
// with its registry host stay under 255 characters.
const maxNameLength = 255

// ValidName reports whether name is a valid repository name.
func ValidName(name string) bool {
	if name == "" || len(name) > maxNameLength {
		return false
	}
	for c := range strings.SplitSeq(name, "/") {
		if !validComponent(c) {
			return false
		}
	}
	return true
}

// validComponent matches nameComponent without the regexp engine: it runs
// on every request. FuzzValidComponent checks that both agree.
func validComponent(c string) bool {
	if c == "" || !isAlnum(c[0]) || !isAlnum(c[len(c)-1]) {
		return false
	}
	for i := 1; i < len(c); i++ {
		if isAlnum(c[i]) {
			continue
		}
		// A separator run: ".", "_", "__" or one or more "-".
		j := i
		for j < len(c) && c[j] == c[i] {
			j++
		}
		switch n := j - i; c[i] {
		case '.':
			if n != 1 {
				return false
			}
		case '_':
			if n > 2 {
				return false
			}
		case '-':
		default:
			return false
		}
		if j == len(c) || !isAlnum(c[j]) {
			return false
		}
		i = j
	}
	return true
}

func isAlnum(b byte) bool { return ('a' <= b && b <= 'z') || ('0' <= b && b <= '9') }

// ValidTag reports whether tag is a valid tag.
func ValidTag(tag string) bool { return tagPattern.MatchString(tag) }

// ParseDigest parses and validates a digest of a registered algorithm.
func ParseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", NewError(http.StatusBadRequest, CodeDigestInvalid, "invalid digest")
	}
	if !d.Algorithm().Available() {
		return "", NewError(http.StatusBadRequest, CodeDigestInvalid, "unsupported digest algorithm")
	}
	return d, nil
}

// ParseRoute parses the path of a /v2 request. Repository names contain
// slashes, so the endpoint is recognised from the tail of the path, the way
// go-containerregistry's registry does it. Errors are *Error values with the
// spec's code.
func ParseRoute(path string) (Route, error) {
	rest, ok := strings.CutPrefix(path, "/v2")
	if !ok {
		return Route{}, NewError(http.StatusNotFound, CodeUnsupported, "not a registry API path")
	}
	if rest == "" || rest == "/" {
		return Route{Kind: KindBase}, nil
	}
	if rest[0] != '/' {
		return Route{}, NewError(http.StatusNotFound, CodeUnsupported, "not a registry API path")
	}
	rest = rest[1:]
	if rest == "_catalog" {
		return Route{Kind: KindCatalog}, nil
	}
	seg := strings.Split(rest, "/")
	for _, c := range seg {
		if c == ".." || c == "." {
			return Route{}, NewError(http.StatusBadRequest, CodeNameInvalid, "invalid repository name")
		}
	}
	n := len(seg)
	var rt Route
	switch {
	case n >= 3 && seg[n-3] == "blobs" && seg[n-2] == "uploads":
		rt = Route{Kind: KindBlobUpload, Name: strings.Join(seg[:n-3], "/"), Reference: seg[n-1]}
	case n >= 3 && seg[n-2] == "blobs" && seg[n-1] == "uploads":
		rt = Route{Kind: KindBlobUpload, Name: strings.Join(seg[:n-2], "/")}
	case n >= 3 && seg[n-2] == "tags" && seg[n-1] == "list":
		rt = Route{Kind: KindTags, Name: strings.Join(seg[:n-2], "/")}
	case n >= 3 && seg[n-2] == "manifests":
		rt = Route{Kind: KindManifest, Name: strings.Join(seg[:n-2], "/"), Reference: seg[n-1]}
	case n >= 3 && seg[n-2] == "blobs":
		rt = Route{Kind: KindBlob, Name: strings.Join(seg[:n-2], "/"), Reference: seg[n-1]}
	case n >= 3 && seg[n-2] == "referrers":
		rt = Route{Kind: KindReferrers, Name: strings.Join(seg[:n-2], "/"), Reference: seg[n-1]}
	default:
		return Route{}, NewError(http.StatusNotFound, CodeUnsupported, "unknown registry API endpoint")
	}
	if !ValidName(rt.Name) {
		return Route{}, NewError(http.StatusBadRequest, CodeNameInvalid, "invalid repository name")
	}
	switch rt.Kind {
	case KindBlob, KindReferrers:
		d, err := ParseDigest(rt.Reference)
		if err != nil {
			return Route{}, err
		}
		rt.Digest = d
	case KindManifest:
		if strings.Contains(rt.Reference, ":") {
			d, err := ParseDigest(rt.Reference)
			if err != nil {
				return Route{}, err
			}
			rt.Digest = d
		} else if !ValidTag(rt.Reference) {
			return Route{}, NewError(http.StatusBadRequest, CodeManifestInvalid, "invalid tag")
		}
	}
	return rt, nil
}

// Sanitize shortens and strips a client-supplied value for use in an error
// message, so that an error body never reflects arbitrary input.
func Sanitize(s string) string {
	const max = 64
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s) && len(b) < max; i++ {
		c := s[i]
		if c >= 0x21 && c < 0x7f && c != '"' && c != '<' && c != '>' && c != '\\' {
			b = append(b, c)
		}
	}
	return string(b)
}
