package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// BlobResponse is a blob body being received from upstream. The caller
// must close Body and verify what it reads: the client does not hash blobs.
type BlobResponse struct {
	// Body streams the blob from byte Offset on.
	Body io.ReadCloser
	// Offset is the position of Body's first byte within the blob. It is 0
	// when the upstream ignored the requested range and sent the whole blob.
	Offset int64
	// Size is the total size of the blob, -1 if the upstream did not say.
	Size int64
	// End is the position after Body's last byte: the end of the range of
	// a 206 (RFC 9110 lets a server send less than the range asked for:
	// CDNs and object stores cap the length of an answer, and the caller
	// asks again for the rest), Size for a 200 (-1 when unknown). Body
	// ends there even if the upstream sends more.
	End int64
	// ETag is the upstream's ETag header, if any.
	ETag string
}

// ErrRangeMissesOffset is in the chain of Blob's error for a 206 whose
// Content-Range does not contain the offset asked for (it ends before it,
// or starts after it): such as a CDN that holds only the first slice of a
// blob and answers every range with it. It matches errdef.ErrUnavailable
// through the *Error that carries it.
var ErrRangeMissesOffset = errors.New("the upstream's range does not contain the byte asked for")

// Blob fetches blob d of repo from byte offset on:
// GET /v2/<repo>/blobs/<d>, following redirects to object storage or a CDN
// (without the registry's Authorization header). With offset > 0 it sends
// "Range: bytes=<offset>-", and "If-Range: <ifRange>" when ifRange is a
// strong ETag the upstream sent before, and accepts a 206 only with a
// Content-Range that starts at or before offset and ends after it (Offset
// is where it starts, End where it ends: not always at the end of the
// blob); a 200 means the upstream sent the whole blob (Offset 0). Retries
// happen only before Body is returned.
func (c *Client) Blob(ctx context.Context, repo string, d digest.Digest, offset int64, ifRange string) (*BlobResponse, error) {
	op := opInfo{name: "blob", repo: repo, ref: d.String()}
	if err := checkRepo(repo); err != nil {
		return nil, c.fail(op, err)
	}
	if err := d.Validate(); err != nil {
		return nil, c.fail(op, fmt.Errorf("digest: %w", errdef.ErrInvalid))
	}
	if offset < 0 {
		return nil, c.fail(op, fmt.Errorf("offset %d: %w", offset, errdef.ErrInvalid))
	}
	r := request{method: http.MethodGet, path: repo + "/blobs/" + d.String()}
	if offset > 0 {
		r.header = http.Header{"Range": {"bytes=" + strconv.FormatInt(offset, 10) + "-"}}
		// A weak validator must not be used with If-Range (RFC 9110
		// section 13.1.5), nor a value that is no entity-tag (an ETag
		// sent unquoted): a server reads that as a date, which never
		// matches, and every resume would get the whole blob again.
		if strongETag(ifRange) {
			r.header.Set("If-Range", ifRange)
		}
	}
	resp, err := c.do(ctx, op, r)
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return &BlobResponse{Body: resp.Body, Offset: 0, Size: resp.ContentLength, End: resp.ContentLength, ETag: resp.Header.Get("ETag")}, nil
	case http.StatusPartialContent:
		start, end, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		switch {
		// A range that starts before offset is as good as a 200 (the
		// caller passes over the bytes it has, from Offset on); one that
		// starts after it would leave a gap, and one that ends before it
		// brings nothing. A range that ends before the blob does is a
		// capped answer: the caller asks again from End.
		case !ok, resp.ContentLength >= 0 && resp.ContentLength != end-start+1:
			drain(resp.Body)
			return nil, c.fail(op, fmt.Errorf("206 with Content-Range %q for offset %d: %w",
				truncate(resp.Header.Get("Content-Range"), 80), offset, errdef.ErrUnavailable))
		case start > offset, end < offset:
			drain(resp.Body)
			return nil, c.fail(op, fmt.Errorf("206 with Content-Range %q for offset %d: %w: %w",
				truncate(resp.Header.Get("Content-Range"), 80), offset, ErrRangeMissesOffset, errdef.ErrUnavailable))
		}
		// The body stops at the range's end: bytes an upstream sends past
		// it (a body without a length) are not the ones it said they are.
		body := struct {
			io.Reader
			io.Closer
		}{io.LimitReader(resp.Body, end-start+1), resp.Body}
		return &BlobResponse{Body: body, Offset: start, Size: total, End: end + 1, ETag: resp.Header.Get("ETag")}, nil
	default:
		return nil, c.statusError(op, resp)
	}
}

// parseContentRange parses "bytes <start>-<end>/<total|*>" (RFC 9110
// section 14.4): decimal digits only (no sign, no spaces). total is -1
// when unknown.
func parseContentRange(v string) (start, end, total int64, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, size, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	s, e, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	if !digits(s) || !digits(e) || (size != "*" && !digits(size)) {
		return 0, 0, 0, false
	}
	var err error
	if start, err = strconv.ParseInt(s, 10, 64); err != nil || start < 0 {
		return 0, 0, 0, false
	}
	if end, err = strconv.ParseInt(e, 10, 64); err != nil || end < start {
		return 0, 0, 0, false
	}
	if size == "*" {
		if end == math.MaxInt64 { // end+1, the position after it, must be a number
			return 0, 0, 0, false
		}
		return start, end, -1, true
	}
	if total, err = strconv.ParseInt(size, 10, 64); err != nil || total <= end {
		return 0, 0, 0, false
	}
	return start, end, total, true
}

// strongETag reports whether v is a strong entity-tag (RFC 9110 section
// 8.8.3): DQUOTE *etagc DQUOTE, etagc being %x21 / %x23-7E / obs-text.
func strongETag(v string) bool {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return false
	}
	for i := 1; i < len(v)-1; i++ {
		if c := v[i]; c < 0x21 || c == '"' || c == 0x7f {
			return false
		}
	}
	return true
}

// digits reports whether s is one or more ASCII decimal digits (RFC 9110's
// 1*DIGIT: strconv.ParseInt also takes a sign).
func digits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// BlobRange reads bytes [offset, offset+n) of blob d in repo with one
// bounded request ("Range: bytes=<offset>-<offset+n-1>"). From an upstream
// that ignores the range and sends the whole blob, it reads up to
// offset+n only. It returns fewer bytes than asked when the blob ends
// first; the caller checks what they are.
func (c *Client) BlobRange(ctx context.Context, repo string, d digest.Digest, offset, n int64) ([]byte, error) {
	op := opInfo{name: "blob range", repo: repo, ref: d.String()}
	if err := checkRepo(repo); err != nil {
		return nil, c.fail(op, err)
	}
	if err := d.Validate(); err != nil {
		return nil, c.fail(op, fmt.Errorf("digest: %w", errdef.ErrInvalid))
	}
	if offset < 0 || n <= 0 {
		return nil, c.fail(op, fmt.Errorf("range %d+%d: %w", offset, n, errdef.ErrInvalid))
	}
	r := request{method: http.MethodGet, path: repo + "/blobs/" + d.String(),
		header: http.Header{"Range": {"bytes=" + strconv.FormatInt(offset, 10) + "-" + strconv.FormatInt(offset+n-1, 10)}}}
	resp, err := c.do(ctx, op, r)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body := io.Reader(resp.Body)
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, end, _, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != offset || end >= offset+n {
			return nil, c.fail(op, fmt.Errorf("206 with Content-Range %q for bytes %d-%d: %w",
				truncate(resp.Header.Get("Content-Range"), 80), offset, offset+n-1, errdef.ErrUnavailable))
		}
	case http.StatusOK:
		if _, err := io.CopyN(io.Discard, body, offset); err != nil {
			return nil, c.fail(op, fmt.Errorf("skip to byte %d: %w: %w", offset, errdef.ErrUnavailable, err))
		}
	default:
		return nil, c.statusError(op, resp)
	}
	b, err := io.ReadAll(io.LimitReader(body, n))
	if err != nil {
		return nil, c.fail(op, fmt.Errorf("read: %w: %w", errdef.ErrUnavailable, err))
	}
	return b, nil
}

// StatBlob returns the size of blob d in repo: HEAD /v2/<repo>/blobs/<d>.
// The size is -1 if the upstream sent no Content-Length. A
// Docker-Content-Digest of d's algorithm that differs from d is
// errdef.ErrDigestMismatch.
func (c *Client) StatBlob(ctx context.Context, repo string, d digest.Digest) (int64, error) {
	op := opInfo{name: "stat blob", repo: repo, ref: d.String()}
	if err := checkRepo(repo); err != nil {
		return 0, c.fail(op, err)
	}
	if err := d.Validate(); err != nil {
		return 0, c.fail(op, fmt.Errorf("digest: %w", errdef.ErrInvalid))
	}
	resp, err := c.do(ctx, op, request{method: http.MethodHead, path: repo + "/blobs/" + d.String()})
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, c.statusError(op, resp)
	}
	drain(resp.Body)
	if h, err := digest.Parse(resp.Header.Get(HeaderContentDigest)); err == nil && h.Algorithm() == d.Algorithm() && h != d {
		return 0, c.fail(op, fmt.Errorf("upstream says %s: %w", h, errdef.ErrDigestMismatch))
	}
	return resp.ContentLength, nil
}
