package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/ocipage"
)

// maxTagsBody bounds a tag list page. 4 MiB holds ~100k tags of typical
// length; registries page long lists (Docker Hub and ECR cap n at 1000).
const maxTagsBody = 4 << 20

// TagPage is one page of a repository's tag list.
type TagPage struct {
	// Name is the repository name the upstream reported.
	Name string
	// Tags are the tags of this page, in the upstream's order (sorted
	// when the upstream pages with a cursor, see Tags).
	Tags []string
	// Next is the "last" value for the next page, taken from the Link
	// header's rel="next" target; "" when there is no next page.
	Next string
}

// Tags lists up to n tags of repo after last: GET /v2/<repo>/tags/list with
// n and last omitted when zero. The body is limited to 4 MiB
// (errdef.ErrTooLarge).
//
// References:
//   - https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#listing-tags
func (c *Client) Tags(ctx context.Context, repo string, n int, last string) (TagPage, error) {
	op := opInfo{name: "tags", repo: repo}
	if err := checkRepo(repo); err != nil {
		return TagPage{}, c.fail(op, err)
	}
	if n < 0 {
		return TagPage{}, c.fail(op, fmt.Errorf("n %d: %w", n, errdef.ErrInvalid))
	}
	q := url.Values{}
	if n > 0 {
		q.Set("n", strconv.Itoa(n))
	}
	if last != "" {
		q.Set("last", last)
	}
	page, next, err := c.tagsPage(ctx, op, repo, q)
	if err != nil || next == nil {
		return page, err
	}
	if l := next.Query().Get("last"); l != "" && len(page.Tags) > 0 && l == page.Tags[len(page.Tags)-1] {
		page.Next = l // pages by tag, as the spec has them: relayed as they are
		return page, nil
	}
	// A cursor that is no tag (quay.io's next_page, an opaque last): it
	// cannot be handed on as the mirror's own "last", so the whole list is
	// read here, page by page from the start, and paged by tag.
	var all []string
	q = url.Values{}
	for pages := 0; ; pages++ {
		if pages == maxTagPages || len(all) > maxTags {
			return TagPage{}, c.fail(op, fmt.Errorf("tag list of more than %d pages or %d tags: %w", maxTagPages, maxTags, errdef.ErrTooLarge))
		}
		p, next, err := c.tagsPage(ctx, op, repo, q)
		if err != nil {
			return TagPage{}, err
		}
		all = append(all, p.Tags...)
		page.Name = p.Name
		if next == nil {
			break
		}
		q = next.Query() // only the continuation: always this repository's list, on this registry
	}
	slices.Sort(all)
	all = slices.Compact(all)
	i := 0
	if last != "" {
		i, _ = slices.BinarySearch(all, last)
		if i < len(all) && all[i] == last {
			i++
		}
	}
	page.Tags, page.Next = all[i:], ""
	if n > 0 && len(page.Tags) > n {
		page.Tags = page.Tags[:n]
		page.Next = page.Tags[n-1]
	}
	return page, nil
}

// Bounds of a tag list read page by page (a cursor the mirror cannot
// relay).
const (
	maxTagPages = 200
	maxTags     = 200_000
)

// tagsPage makes one tag list request with query q and returns the page
// and the upstream's rel="next" target, if any.
func (c *Client) tagsPage(ctx context.Context, op opInfo, repo string, q url.Values) (TagPage, *url.URL, error) {
	resp, err := c.do(ctx, op, request{method: http.MethodGet, path: repo + "/tags/list", query: q, accept: []string{"application/json"}})
	if err != nil {
		return TagPage{}, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return TagPage{}, nil, c.statusError(op, resp)
	}
	defer drain(resp.Body)
	body, err := c.readAll(resp.Body, maxTagsBody)
	if err != nil {
		if errors.Is(err, errdef.ErrTooLarge) {
			return TagPage{}, nil, c.fail(op, err)
		}
		return TagPage{}, nil, c.fail(op, fmt.Errorf("read body: %w: %w", errdef.ErrUnavailable, redactError(err)))
	}
	var doc struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return TagPage{}, nil, c.fail(op, fmt.Errorf("tag list is not JSON: %w", errdef.ErrUnavailable))
	}
	var next *url.URL
	if l := parseLinkNext(resp.Header.Values("Link")); l != "" {
		if u, err := url.Parse(l); err == nil {
			next = u
		}
	}
	return TagPage{Name: doc.Name, Tags: doc.Tags}, next, nil
}

// parseLinkNext returns the target URI of the first rel="next" link in the
// Link header values, "" if there is none (see ocipage.LinkNext).
func parseLinkNext(values []string) string { return ocipage.LinkNext(values) }

// Ping checks that the registry answers the API version check, GET /v2/.
// A 401 challenge counts as reachable; credentials are not exchanged, but
// the challenge is remembered for later requests.
//
// References:
//   - https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#determining-support
func (c *Client) Ping(ctx context.Context) error {
	op := opInfo{name: "ping"}
	resp, err := c.do(ctx, op, request{method: http.MethodGet, path: "", noAuth: true})
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
		drain(resp.Body)
		return nil
	}
	return c.statusError(op, resp)
}

// HasCredentials reports whether the client has credentials to present.
func (c *Client) HasCredentials() bool {
	cr := c.auth.creds
	return cr.basic() || cr.identityToken != "" || cr.registryToken != ""
}

// Challenge returns the authentication scheme the registry asked for
// last ("basic", "bearer" or another it named; "bearer" when it offered
// both, as that is the one answered), or "" if it has not asked (Ping
// learns it).
func (c *Client) Challenge() string {
	c.auth.mu.Lock()
	defer c.auth.mu.Unlock()
	return c.auth.asked
}

// Credential check outcomes (CheckCredentials).
const (
	// CredentialsAccepted: the registry asked for credentials and took
	// the client's.
	CredentialsAccepted = "accepted"
	// CredentialsNotAsked: the registry answered without asking for
	// credentials, so whether it would take them is not known; or the
	// client has none.
	CredentialsNotAsked = "not asked"
)

// CheckCredentials asks the registry whether it accepts the client's
// credentials, as docker login does: GET /v2/ with them, after fetching a
// token for no particular scope where the registry challenges for one. A
// registry that has not asked for credentials (Ping) gets basic ones all
// the same, so that one that lets anonymous clients read /v2/ but refuses
// wrong credentials (a registry-edge tier) still says so; never over
// plain HTTP, though, where they would cross the network unasked.
//
// It returns CredentialsAccepted or CredentialsNotAsked, or an error
// wrapping errdef.ErrUnauthorized if the credentials are refused.
func (c *Client) CheckCredentials(ctx context.Context) (string, error) {
	if !c.HasCredentials() || c.Challenge() == "" && c.base.Scheme != "https" {
		return CredentialsNotAsked, nil
	}
	op := opInfo{name: "login"}
	resp, err := c.do(ctx, op, request{method: http.MethodGet, path: "", login: true})
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", c.statusError(op, resp)
	}
	drain(resp.Body)
	if c.Challenge() == "" {
		return CredentialsNotAsked, nil
	}
	return CredentialsAccepted, nil
}
