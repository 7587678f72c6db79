package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/registry-edge/registry-edge/internal/ocipage"
	"github.com/registry-edge/registry-edge/internal/version"
)

// maxReferrersSize bounds a referrers index, all its pages together (as the
// mirror does: the distribution-spec suggests manifests stay below 4 MiB).
const maxReferrersSize = 4 << 20

// emptyReferrers is the index of a subject without referrers.
const emptyReferrers = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`

// referrersClient reads referrers indexes itself: go-containerregistry's
// remote.Referrers reads only the first page of an answer the registry
// pages (Link rel="next"), so deltas or signatures listed further on were
// not seen.
type referrersClient struct {
	keychain authn.Keychain
	rt       http.RoundTripper
	mu       sync.Mutex
	auth     map[string]http.RoundTripper // per repository, authorized to pull
}

// transport returns a round tripper authorized to pull from repo.
func (rc *referrersClient) transport(ctx context.Context, repo name.Repository) (http.RoundTripper, error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if t, ok := rc.auth[repo.String()]; ok {
		return t, nil
	}
	a, err := authn.Resolve(ctx, rc.keychain, repo)
	if err != nil {
		return nil, err
	}
	t, err := transport.NewWithContext(ctx, repo.Registry, a, transport.NewUserAgent(rc.rt, "deltactl/"+version.String()), []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, err
	}
	if rc.auth == nil {
		rc.auth = map[string]http.RoundTripper{}
	}
	rc.auth[repo.String()] = t
	return t, nil
}

// referrers returns the referrers index of manifest d: the referrers API's
// answer read to its last page (links to the same URL with another query
// only, at most ocipage.MaxPages pages and maxReferrersSize bytes in all,
// its pages merged into one index), or, on a registry without the API (404, 400, 405,
// 406, or a 200 that is not an index, as go-containerregistry has it), the
// tag schema's index under sha256-<hex>; none is an empty index.
func (c *client) referrers(ctx context.Context, d name.Digest) ([]byte, error) {
	repo := d.Context()
	rt, err := c.refs.transport(ctx, repo)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Transport: rt}
	u := &url.URL{Scheme: repo.Scheme(), Host: repo.RegistryStr(), Path: "/v2/" + repo.RepositoryStr() + "/referrers/" + d.DigestStr()}
	var (
		merged ocipage.Index
		pager  ocipage.Pager
		total  int64
	)
	for pages := 1; ; pages++ {
		body, resp, err := getIndex(ctx, hc, u, maxReferrersSize-total)
		if err != nil {
			return nil, err
		}
		if pages == 1 && !isIndexAnswer(resp) {
			switch resp.StatusCode {
			case http.StatusOK, http.StatusNotFound, http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusNotAcceptable:
				return c.referrersTag(ctx, d)
			}
		}
		if resp.StatusCode != http.StatusOK {
			return nil, transport.CheckError(resp, http.StatusOK)
		}
		total += int64(len(body))
		if err := merged.Add(body); err != nil {
			return nil, fmt.Errorf("%s: %w", u.Redacted(), err)
		}
		next, err := pager.Next(u, resp.Header.Values("Link"))
		switch {
		case errors.Is(err, ocipage.ErrOtherPath):
			// Another repository's referrers (or another subject's, or
			// another endpoint) would list what is not about d, read
			// with this repository's credentials.
			return nil, fmt.Errorf("%s: the next page link leads elsewhere, not to the referrers of %s; the registry's paging is broken: %w", u.Redacted(), d, err)
		case errors.Is(err, ocipage.ErrTooManyPages):
			return nil, fmt.Errorf("referrers of %s: more than %d pages; the registry pages without end", d, ocipage.MaxPages)
		case err != nil:
			return nil, fmt.Errorf("%s: %w", u.Redacted(), err)
		}
		if next == nil {
			return merged.Bytes()
		}
		u = next
	}
}

// getIndex GETs an image index from u, reading at most limit bytes of a 200
// answer's body; the response comes back with its body closed (and read,
// for CheckError, if it is not a 200).
func getIndex(ctx context.Context, hc *http.Client, u *url.URL, limit int64) ([]byte, *http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", string(types.OCIImageIndex))
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK || !isIndexAnswer(resp) {
		return nil, resp, nil // the body stays for CheckError
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: read: %w", u.Redacted(), err)
	}
	if int64(len(body)) > limit {
		return nil, nil, fmt.Errorf("referrers index %s: more than %d bytes in all its pages", u.Redacted(), maxReferrersSize)
	}
	return body, resp, nil
}

// isIndexAnswer reports whether resp is a 200 with an image index.
func isIndexAnswer(resp *http.Response) bool {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return resp.StatusCode == http.StatusOK && strings.EqualFold(mt, string(types.OCIImageIndex))
}

// referrersTag returns the tag schema's index of d (tag sha256-<hex>), an
// empty index if there is none or it is not an index.
func (c *client) referrersTag(ctx context.Context, d name.Digest) ([]byte, error) {
	tag := d.Context().Tag(strings.Replace(d.DigestStr(), ":", "-", 1))
	desc, err := remote.Get(tag, append(slices.Clip(c.opts), remote.WithContext(ctx))...)
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
		return []byte(emptyReferrers), nil
	}
	if err != nil {
		return nil, err
	}
	if desc.MediaType != types.OCIImageIndex {
		return []byte(emptyReferrers), nil
	}
	return desc.Manifest, nil
}
