package upstream

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/ocipage"
)

// HeaderContentDigest is the response header in which registries state a
// manifest's or blob's digest.
const HeaderContentDigest = "Docker-Content-Digest"

// MaxReferrersSize bounds a referrers index (and its tag-schema fallback);
// the distribution-spec suggests manifests stay below 4 MiB.
const MaxReferrersSize = 4 << 20

// Manifest is a manifest fetched from upstream. Descriptor.MediaType is the
// upstream's Content-Type (without parameters; "" if it sent none),
// Descriptor.Digest is computed over Body (sha256, or the algorithm of the
// requested digest) and Descriptor.Size is len(Body).
type Manifest struct {
	Descriptor ocispec.Descriptor
	Body       []byte
	// Age is how long ago the upstream's answer was confirmed at its
	// origin (HeaderTagAge: a registry-edge tier answering from its
	// cache); 0 when fresh or not said.
	Age time.Duration
}

// Resolved is what a HEAD of a manifest says.
type Resolved struct {
	Descriptor ocispec.Descriptor
	Age        time.Duration // as Manifest.Age
}

// maxAge bounds a believable Age header.
const maxAge = 10 * 365 * 24 * time.Hour

// ageOf reads h's HeaderTagAge (whole seconds), 0 if absent or not
// believable.
func ageOf(h http.Header) time.Duration {
	s, err := strconv.ParseUint(strings.TrimSpace(h.Get(HeaderTagAge)), 10, 32)
	if err != nil || time.Duration(s)*time.Second > maxAge {
		return 0
	}
	return time.Duration(s) * time.Second
}

// Validation of names and references before they are put into a URL path,
// so that no caller can make the client request another path.
//
// References:
//   - https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#pulling-manifests
var (
	repoRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

func checkRepo(repo string) error {
	if len(repo) > 255 || !repoRE.MatchString(repo) {
		return fmt.Errorf("repository name %q: %w", truncate(repo, 64), errdef.ErrInvalid)
	}
	return nil
}

// parseRef returns the digest of ref if it is one; a tag returns "".
func parseRef(ref string) (digest.Digest, error) {
	if tagRE.MatchString(ref) {
		return "", nil
	}
	d, err := digest.Parse(ref)
	if err != nil {
		return "", fmt.Errorf("reference %q: %w", truncate(ref, 80), errdef.ErrInvalid)
	}
	return d, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// computeDigest hashes b with alg. Only sha256 and sha512 are supported.
func computeDigest(alg digest.Algorithm, b []byte) (digest.Digest, error) {
	switch alg {
	case digest.SHA256:
		sum := sha256.Sum256(b)
		return digest.NewDigestFromBytes(alg, sum[:]), nil
	case digest.SHA512:
		sum := sha512.Sum512(b)
		return digest.NewDigestFromBytes(alg, sum[:]), nil
	}
	return "", fmt.Errorf("digest algorithm %q: %w", truncate(string(alg), 32), errdef.ErrUnsupported)
}

// mediaType returns the media type of a Content-Type header without
// parameters, "" if there is none.
func mediaType(contentType string) string {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return ""
	}
	return mt
}

// Manifest fetches the manifest ref (a tag or a digest) of repo:
// GET /v2/<repo>/manifests/<ref>. A body larger than maxSize bytes is an
// error wrapping errdef.ErrTooLarge (at most maxSize+1 bytes are read). If
// ref is a digest the body must hash to it, and if the upstream sent a
// Docker-Content-Digest of the same algorithm, the body must hash to that
// too (errdef.ErrDigestMismatch).
func (c *Client) Manifest(ctx context.Context, repo, ref string, accept []string, maxSize int64) (Manifest, error) {
	op := opInfo{name: "manifest", repo: repo, ref: ref}
	return c.manifest(ctx, op, repo, ref, accept, maxSize)
}

func (c *Client) manifest(ctx context.Context, op opInfo, repo, ref string, accept []string, maxSize int64) (Manifest, error) {
	if err := checkRepo(repo); err != nil {
		return Manifest{}, c.fail(op, err)
	}
	want, err := parseRef(ref)
	if err != nil {
		return Manifest{}, c.fail(op, err)
	}
	if maxSize <= 0 {
		return Manifest{}, c.fail(op, fmt.Errorf("max size %d: %w", maxSize, errdef.ErrInvalid))
	}
	alg := digest.Canonical
	if want != "" {
		alg = want.Algorithm()
	}
	resp, err := c.do(ctx, op, request{method: http.MethodGet, path: repo + "/manifests/" + ref, accept: accept})
	if err != nil {
		return Manifest{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return Manifest{}, c.statusError(op, resp)
	}
	defer drain(resp.Body)
	if resp.ContentLength > maxSize {
		return Manifest{}, c.fail(op, fmt.Errorf("content-length %d exceeds %d: %w", resp.ContentLength, maxSize, errdef.ErrTooLarge))
	}
	body, err := c.readAll(resp.Body, maxSize)
	if err != nil {
		if errors.Is(err, errdef.ErrTooLarge) {
			return Manifest{}, c.fail(op, err)
		}
		return Manifest{}, c.fail(op, fmt.Errorf("read body: %w: %w", errdef.ErrUnavailable, redactError(err)))
	}
	if isSchema1(resp.Header.Get("Content-Type"), body) {
		// Before the digest checks: a signed one's digest is not of the
		// bytes sent, and its mismatch is no integrity failure.
		return Manifest{}, c.fail(op, ErrSchema1)
	}
	got, err := computeDigest(alg, body)
	if err != nil {
		return Manifest{}, c.fail(op, err)
	}
	if want != "" && got != want {
		return Manifest{}, c.fail(op, fmt.Errorf("body hashes to %s: %w", got, errdef.ErrDigestMismatch))
	}
	if h, err := digest.Parse(resp.Header.Get(HeaderContentDigest)); err == nil && h.Algorithm() == alg && h != got {
		return Manifest{}, c.fail(op, fmt.Errorf("body hashes to %s, upstream says %s: %w", got, h, errdef.ErrDigestMismatch))
	}
	return Manifest{
		Descriptor: ocispec.Descriptor{MediaType: mediaType(resp.Header.Get("Content-Type")), Digest: got, Size: int64(len(body))},
		Body:       body,
		Age:        ageOf(resp.Header),
	}, nil
}

// Resolve asks for the descriptor of manifest ref without its body:
// HEAD /v2/<repo>/manifests/<ref>. The digest comes from
// Docker-Content-Digest; an upstream that omits it yields an error wrapping
// errdef.ErrUnsupported, so that the caller falls back to Manifest. Size is
// the Content-Length, -1 if the upstream did not send one. If ref is a
// digest, a different Docker-Content-Digest is errdef.ErrDigestMismatch.
func (c *Client) Resolve(ctx context.Context, repo, ref string, accept []string) (Resolved, error) {
	op := opInfo{name: "resolve", repo: repo, ref: ref}
	if err := checkRepo(repo); err != nil {
		return Resolved{}, c.fail(op, err)
	}
	want, err := parseRef(ref)
	if err != nil {
		return Resolved{}, c.fail(op, err)
	}
	resp, err := c.do(ctx, op, request{method: http.MethodHead, path: repo + "/manifests/" + ref, accept: accept})
	if err != nil {
		return Resolved{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return Resolved{}, c.statusError(op, resp)
	}
	drain(resp.Body)
	d, err := digest.Parse(resp.Header.Get(HeaderContentDigest))
	if err != nil {
		return Resolved{}, c.fail(op, fmt.Errorf("no valid %s on HEAD: %w", HeaderContentDigest, errdef.ErrUnsupported))
	}
	if want != "" && d != want {
		return Resolved{}, c.fail(op, fmt.Errorf("upstream says %s: %w", d, errdef.ErrDigestMismatch))
	}
	return Resolved{Descriptor: ocispec.Descriptor{MediaType: mediaType(resp.Header.Get("Content-Type")), Digest: d, Size: resp.ContentLength}, Age: ageOf(resp.Header)}, nil
}

// ErrSchema1 is the error of a manifest the upstream has only as a Docker
// image manifest of schema 1 (deprecated since 2017; containerd 2 and
// Docker 28 pull none), which the mirror does not serve: the digest of its
// signed form covers the manifest without its signatures, not the bytes
// sent, so it cannot be verified as every other manifest is.
var ErrSchema1 = errors.New("docker schema 1 manifest")

// isSchema1 reports whether a manifest answer is a Docker schema 1
// manifest, by its Content-Type or, for an upstream that sends a generic
// one, by its schemaVersion.
func isSchema1(contentType string, body []byte) bool {
	switch mediaType(contentType) {
	case "application/vnd.docker.distribution.manifest.v1+prettyjws", "application/vnd.docker.distribution.manifest.v1+json":
		return true
	}
	var doc struct {
		SchemaVersion int `json:"schemaVersion"`
	}
	return json.Unmarshal(body, &doc) == nil && doc.SchemaVersion == 1
}

// emptyIndex is the answer for a subject without referrers.
const emptyIndex = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`

// referrersTag is the tag of the referrers tag schema for subject d:
// "<alg>-<ref>", with <ref> the encoded digest cut to 64 characters
// (distribution-spec v1.1, "Referrers Tag Schema"). Uncut, a sha512
// subject's tag would be 135 characters, over the 128 a tag may have.
func referrersTag(d digest.Digest) string {
	enc := d.Encoded()
	if len(enc) > 64 {
		enc = enc[:64]
	}
	return d.Algorithm().String() + "-" + enc
}

// Referrers returns the referrers of manifest d as the raw image index the
// upstream sent (GET /v2/<repo>/referrers/<d>, unfiltered); an answer paged
// with Link rel="next" headers is read to its end and its pages merged into
// one index (see referrersPages). An upstream without the referrers API
// (404, 405 or 400, or a 200 that is no image index) is asked for the OCI
// 1.1 tag schema fallback, the index tagged referrersTag(d); if that is
// absent too, or is not an OCI image index, the result is an empty index,
// not an error.
//
// References:
//   - https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#listing-referrers
//   - https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#referrers-tag-schema
func (c *Client) Referrers(ctx context.Context, repo string, d digest.Digest) (Manifest, error) {
	op := opInfo{name: "referrers", repo: repo, ref: d.String()}
	if err := checkRepo(repo); err != nil {
		return Manifest{}, c.fail(op, err)
	}
	if err := d.Validate(); err != nil {
		return Manifest{}, c.fail(op, fmt.Errorf("digest: %w", errdef.ErrInvalid))
	}
	accept := []string{ocispec.MediaTypeImageIndex}
	path := repo + "/referrers/" + d.String()
	resp, err := c.do(ctx, op, request{method: http.MethodGet, path: path, accept: accept})
	if err != nil {
		return Manifest{}, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		m, err := c.referrersPages(ctx, op, path, resp)
		if err != nil || isIndex(m) {
			return m, err
		}
		// A 200 that is no index (a web page behind a catch-all route, a
		// registry that does not know the API) says the API is not there,
		// as go-containerregistry (cosign, crane) reads it: the tag then.
		c.log.LogAttrs(ctx, slog.LevelDebug, "referrers answer is not an image index; reading the tag schema",
			slog.String("repo", repo), slog.String("ref", d.String()))
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusBadRequest:
		// 404 is how the spec has a registry without the API answer;
		// 405, and 400 (the digest was checked above, so the registry
		// does not know the route: an old Harbor or Nexus), say the same,
		// and go-containerregistry (cosign, crane) takes the tag then too,
		// so signatures pushed by those tools are found where they put them.
		drain(resp.Body)
	default:
		return Manifest{}, c.statusError(op, resp)
	}

	tag := referrersTag(d)
	op = opInfo{name: "referrers tag", repo: repo, ref: tag}
	m, err := c.manifest(ctx, op, repo, tag, accept, MaxReferrersSize)
	switch {
	case errors.Is(err, errdef.ErrNotFound):
		return newManifest(ocispec.MediaTypeImageIndex, []byte(emptyIndex)), nil
	case err != nil:
		return Manifest{}, err
	case !isIndex(m):
		c.log.LogAttrs(ctx, slog.LevelDebug, "referrers tag is not an image index",
			slog.String("repo", repo), slog.String("ref", tag))
		return newManifest(ocispec.MediaTypeImageIndex, []byte(emptyIndex)), nil
	}
	m.Descriptor.MediaType = ocispec.MediaTypeImageIndex
	return m, nil
}

// referrersPages reads a 200 referrers answer, resp to the request for
// path, and the pages its Link headers lead to as ocipage.Pager allows
// (other pages of the same URL only, a link back to a page read ends the
// list), at most ocipage.MaxPages pages and MaxReferrersSize bytes in all
// (errdef.ErrTooLarge past either). A single page is returned as the
// upstream sent it.
func (c *Client) referrersPages(ctx context.Context, op opInfo, path string, resp *http.Response) (Manifest, error) {
	var (
		merged ocipage.Index
		pager  ocipage.Pager
		mt     string
		total  int64
	)
	q := url.Values(nil)
	for pages := 1; ; pages++ {
		reqURL := *c.base
		reqURL.Path = c.base.Path + "/v2/" + path
		reqURL.RawQuery = q.Encode()
		body, err := c.readAll(resp.Body, MaxReferrersSize-total)
		drain(resp.Body)
		if err != nil {
			if errors.Is(err, errdef.ErrTooLarge) {
				return Manifest{}, c.fail(op, fmt.Errorf("referrers index of more than %d bytes in all its pages: %w", MaxReferrersSize, err))
			}
			return Manifest{}, c.fail(op, fmt.Errorf("read body: %w: %w", errdef.ErrUnavailable, redactError(err)))
		}
		total += int64(len(body))
		if pages == 1 {
			if mt = mediaType(resp.Header.Get("Content-Type")); mt == "" {
				mt = ocispec.MediaTypeImageIndex
			}
		}
		next, err := pager.Next(&reqURL, resp.Header.Values("Link"))
		switch {
		case errors.Is(err, ocipage.ErrOtherPath):
			// Read with the mirror's credentials and served as this
			// manifest's referrers, to devices that may have no access
			// to that repository: refused.
			return Manifest{}, c.fail(op, fmt.Errorf("referrers page %d: not to the referrers of this manifest (%s): %w: %w", pages, reqURL.Path, errdef.ErrUnavailable, err))
		case errors.Is(err, ocipage.ErrTooManyPages):
			return Manifest{}, c.fail(op, fmt.Errorf("referrers index of more than %d pages: %w", ocipage.MaxPages, errdef.ErrTooLarge))
		case err != nil:
			return Manifest{}, c.fail(op, fmt.Errorf("referrers page %d: %w: %w", pages, errdef.ErrUnavailable, err))
		}
		if pages == 1 && next == nil {
			return newManifest(mt, body), nil
		}
		if err := merged.Add(body); err != nil {
			if pages == 1 {
				// Not an index: judged (and refused) as the one page it is.
				return newManifest(mt, body), nil
			}
			return Manifest{}, c.fail(op, fmt.Errorf("%w: %w", errdef.ErrUnavailable, err))
		}
		if next == nil {
			break
		}
		q = next.Query()
		resp, err = c.do(ctx, op, request{method: http.MethodGet, path: path, query: q, accept: []string{ocispec.MediaTypeImageIndex}})
		if err != nil {
			return Manifest{}, err
		}
		if resp.StatusCode != http.StatusOK {
			return Manifest{}, c.statusError(op, resp)
		}
	}
	body, err := merged.Bytes()
	if err != nil {
		return Manifest{}, c.fail(op, err)
	}
	return newManifest(mt, body), nil
}

// isIndex reports whether m is an OCI image index by its Content-Type or,
// failing that, by its own mediaType field.
func isIndex(m Manifest) bool {
	var doc struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
	}
	if err := json.Unmarshal(m.Body, &doc); err != nil || doc.SchemaVersion != 2 {
		return false
	}
	switch m.Descriptor.MediaType {
	case ocispec.MediaTypeImageIndex:
		return doc.MediaType == "" || doc.MediaType == ocispec.MediaTypeImageIndex
	case "", "application/json", "application/octet-stream":
		return doc.MediaType == ocispec.MediaTypeImageIndex
	}
	return false
}

func newManifest(mt string, body []byte) Manifest {
	sum := sha256.Sum256(body)
	return Manifest{
		Descriptor: ocispec.Descriptor{MediaType: mt, Digest: digest.NewDigestFromBytes(digest.SHA256, sum[:]), Size: int64(len(body))},
		Body:       body,
	}
}
