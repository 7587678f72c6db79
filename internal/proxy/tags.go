package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/ociapi"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

// TagPage is one page of a tag list.
type TagPage struct {
	Tags []string
	// Next is the "last" parameter of the next page, "" if this is the last.
	Next  string
	Cache string
}

// Tags lists the tags of t, n at most (n <= 0: the upstream's default)
// after last. When the upstream cannot answer, the tags the mirror has
// cached are listed instead, paginated the same way.
func (p *Proxy) Tags(ctx context.Context, t Target, n int, last string) (TagPage, error) {
	page, err := t.Remote.Client.Tags(ctx, t.Repo.Name, n, last)
	p.countUpstream(t, "tags", err)
	// A tag list's key among the stale tags: no tag is empty.
	key := t.Remote.Name + "\x00" + t.Repo.Name + "\x00"
	if err == nil {
		p.staleLogged.forget(key)
		tags := page.Tags
		if tags == nil {
			tags = []string{}
		}
		return TagPage{Tags: tags, Next: page.Next, Cache: CacheMiss}, nil
	}
	if errors.Is(err, errdef.ErrNotFound) || errors.Is(err, errdef.ErrInvalid) {
		return TagPage{}, err
	}
	cached, lerr := p.db.Tags(ctx, t.Repo)
	if lerr != nil || len(cached) == 0 {
		return TagPage{}, err
	}
	// One warning per repository and outage, as for stale tags.
	level := slog.LevelWarn
	if !p.staleLogged.first(key, staleNote{}) {
		level = slog.LevelDebug
	}
	p.log.LogAttrs(ctx, level, "serving cached tag list", slog.String("upstream", t.Remote.Name),
		slog.String("repo", t.Repo.Name), slog.Any("err", err))
	return paginate(cached, n, last), nil
}

func paginate(sorted []string, n int, last string) TagPage {
	i := 0
	if last != "" {
		i = sort.SearchStrings(sorted, last)
		if i < len(sorted) && sorted[i] == last {
			i++
		}
	}
	rest := sorted[i:]
	page := TagPage{Cache: CacheStale}
	if n > 0 && len(rest) > n {
		page.Tags = append([]string{}, rest[:n]...)
		page.Next = rest[n-1]
	} else {
		page.Tags = append([]string{}, rest...)
	}
	return page
}

// Referrers returns the referrers of subject d in t as an OCI image index,
// keeping only manifests of artifactType when it is not empty. A list
// fetched within the tag TTL is served without asking upstream; when the
// upstream cannot answer, the last list fetched is served.
func (p *Proxy) Referrers(ctx context.Context, t Target, d digest.Digest, artifactType string) ([]byte, string, error) {
	body, cache, err := p.referrers(ctx, t, d)
	if err != nil {
		return nil, "", err
	}
	if artifactType == "" {
		return body, cache, nil
	}
	var idx ocispec.Index
	if err := json.Unmarshal(body, &idx); err != nil {
		return nil, "", fmt.Errorf("referrers of %s: %w: %w", d, errdef.ErrInvalid, err)
	}
	kept := []ocispec.Descriptor{}
	for _, m := range idx.Manifests {
		if m.ArtifactType == artifactType {
			kept = append(kept, m)
		}
	}
	idx.Manifests = kept
	out, err := json.Marshal(idx)
	return out, cache, err
}

// freshReferrersKey, in a context, asks referrers for the upstream's list
// even when the cached one is within its TTL (the cached list still serves
// when the upstream fails).
type freshReferrersKey struct{}

func (p *Proxy) referrers(ctx context.Context, t Target, d digest.Digest) ([]byte, string, error) {
	rec, recErr := p.db.Referrers(ctx, t.Repo, d)
	if recErr == nil && p.within(rec.FetchedAt, p.opts.TagTTL) && ctx.Value(freshReferrersKey{}) == nil {
		if body, err := p.readStoredAtMost(ctx, rec.Digest, -1, upstream.MaxReferrersSize); err == nil {
			return body, CacheHit, nil
		}
	}
	m, err := t.Remote.Client.Referrers(ctx, t.Repo.Name, d)
	p.countUpstream(t, "referrers", err)
	if err != nil {
		if recErr == nil && !errors.Is(err, errdef.ErrNotFound) {
			if body, lerr := p.readStoredAtMost(ctx, rec.Digest, -1, upstream.MaxReferrersSize); lerr == nil {
				return body, CacheStale, nil
			}
		}
		return nil, "", err
	}
	if err := validIndex(m); err != nil {
		return nil, "", err
	}
	if recErr != nil && emptyIndex(m.Body) {
		// A registry answers an empty list for any digest: kept only for
		// a subject stored here, or a client naming made-up digests would
		// add a record each, for good.
		if _, err := p.store.Stat(ctx, d); err != nil {
			return m.Body, CacheMiss, nil
		}
	}
	release := p.evictions.hold(m.Descriptor.Digest)
	defer release()
	if err := p.store.Put(ctx, m.Descriptor, bytes.NewReader(m.Body)); err != nil {
		return nil, "", err
	}
	if err := p.db.PutReferrers(ctx, t.Repo, d, meta.Referrers{Digest: m.Descriptor.Digest, FetchedAt: p.now()}); err != nil {
		return nil, "", err
	}
	return m.Body, CacheMiss, nil
}

// emptyIndex reports whether body is an index that lists nothing.
func emptyIndex(body []byte) bool {
	var idx ocispec.Index
	return json.Unmarshal(body, &idx) == nil && len(idx.Manifests) == 0
}

// validIndex checks that the upstream's referrers answer is an image
// index. Anything else (a web page behind a catch-all route, a broken
// upstream) is the upstream's fault, not the client's request: 502.
func validIndex(m upstream.Manifest) error {
	var idx ocispec.Index
	if err := json.Unmarshal(m.Body, &idx); err != nil || idx.SchemaVersion != 2 {
		return &ociapi.Error{Status: http.StatusBadGateway, Code: ociapi.CodeUnknown,
			Message: "the upstream answered the referrers request with something that is not an image index"}
	}
	return nil
}
