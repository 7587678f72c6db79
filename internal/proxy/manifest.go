package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/ociapi"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

// ManifestResult is a manifest ready to serve.
type ManifestResult struct {
	Descriptor ocispec.Descriptor
	Body       []byte
	Cache      string
	// Age, for a tag answered from the cache, is how long ago its origin
	// registry last confirmed it (sent as the Age header, for a tier
	// below to apply its own offline.maxStale).
	Age time.Duration
}

// Manifest returns the manifest ref (a tag or a digest) of t, once the
// signature policy (if any) allows it.
func (p *Proxy) Manifest(ctx context.Context, t Target, ref string) (ManifestResult, error) {
	res, err := p.manifest(ctx, t, ref)
	if err == nil {
		err = p.checkManifest(ctx, t, ref, res)
	}
	if err != nil {
		return ManifestResult{}, err
	}
	p.access.touch(res.Descriptor.Digest)
	return res, nil
}

// manifest returns the manifest ref of t, without the signature policy.
func (p *Proxy) manifest(ctx context.Context, t Target, ref string) (ManifestResult, error) {
	if d, perr := digest.Parse(ref); perr == nil {
		return p.manifestByDigest(ctx, t, d)
	}
	return p.manifestByTag(ctx, t, ref)
}

func (p *Proxy) manifestByDigest(ctx context.Context, t Target, d digest.Digest) (ManifestResult, error) {
	if res, err := p.localManifest(ctx, t, d); err == nil {
		return res, nil
	} else if !errors.Is(err, errdef.ErrNotFound) && !errors.Is(err, errStoreAnswer) {
		return ManifestResult{}, err
	}
	m, err := p.fetchManifest(ctx, t, d.String())
	if err != nil {
		return ManifestResult{}, err
	}
	return ManifestResult{Descriptor: m.Descriptor, Body: m.Body, Cache: CacheMiss}, nil
}

// localManifest serves a stored manifest if t's repository is known to
// hold it. Content stored for another repository of the same upstream is
// confirmed with one upstream HEAD before it is linked to this one; content
// stored from another upstream only is not served (the caller fetches it).
func (p *Proxy) localManifest(ctx context.Context, t Target, d digest.Digest) (ManifestResult, error) {
	rec, err := p.db.Manifest(ctx, d)
	if err != nil {
		return ManifestResult{}, err
	}
	body, err := p.readStored(ctx, d, rec.Size)
	if err != nil {
		return ManifestResult{}, err
	}
	cache := CacheHit
	linked, err := p.linked(ctx, t, d)
	if err != nil {
		return ManifestResult{}, err
	}
	if !linked {
		fromThere, err := p.db.LinkedInRegistry(ctx, t.Repo.Registry, d)
		if err != nil {
			return ManifestResult{}, err
		}
		if !fromThere {
			// Stored from another upstream only: this one's word (a HEAD)
			// is not enough; fetching it verifies that it has it.
			return ManifestResult{}, fmt.Errorf("manifest %s: %w", d, errdef.ErrNotFound)
		}
		_, err = t.Remote.Client.Resolve(ctx, t.Repo.Name, d.String(), ociapi.ManifestMediaTypes)
		p.countUpstream(t, "resolve", err)
		if err != nil && !errors.Is(err, errdef.ErrUnsupported) {
			return ManifestResult{}, err
		}
		if errors.Is(err, errdef.ErrUnsupported) {
			// The upstream gave no digest on HEAD: fetch instead.
			return ManifestResult{}, fmt.Errorf("manifest %s: %w", d, errdef.ErrNotFound)
		}
		if err := p.recorded(ctx, p.db.Link(ctx, t.Repo, d)); err != nil {
			return ManifestResult{}, err
		}
		cache = CacheMiss
	}
	if p.opts.Deltas && p.layerHints.firstSight(t.Repo, d) {
		// Stored before this process started (fetched by one that was
		// killed or restarted in the middle of a pull): its layers still
		// to fetch are layers, that a delta may bring.
		p.noteLayers(t, upstream.Manifest{Descriptor: ocispec.Descriptor{Digest: d}, Body: body})
	}
	return ManifestResult{
		Descriptor: ocispec.Descriptor{MediaType: rec.MediaType, Digest: d, Size: int64(len(body))},
		Body:       body,
		Cache:      cache,
	}, nil
}

// readStored reads stored manifest d of size bytes, -1 if unknown; at most
// MaxManifestSize bytes: a larger one is an error, never cut short.
func (p *Proxy) readStored(ctx context.Context, d digest.Digest, size int64) ([]byte, error) {
	return p.readStoredAtMost(ctx, d, size, p.opts.MaxManifestSize)
}

// readStoredAtMost is readStored with another bound (referrers lists are
// bounded by upstream.MaxReferrersSize).
func (p *Proxy) readStoredAtMost(ctx context.Context, d digest.Digest, size, limit int64) ([]byte, error) {
	if size > limit {
		return nil, fmt.Errorf("manifest %s: %w", d, errdef.ErrTooLarge)
	}
	if b, ok := p.hot.get(d); ok {
		return b, nil
	}
	epoch := p.hot.epoch()
	f, err := p.store.Open(ctx, d)
	if err != nil {
		return nil, storeFailed(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	switch {
	case err != nil:
		return nil, p.readFailed(ctx, "manifest", d, errdef.ErrNotFound, err)
	case int64(len(b)) > limit:
		return nil, fmt.Errorf("manifest %s: more than %d bytes: %w", d, limit, errdef.ErrTooLarge)
	case size >= 0 && int64(len(b)) != size:
		return nil, fmt.Errorf("manifest %s: %d bytes stored, %d recorded: %w", d, len(b), size, errdef.ErrSizeMismatch)
	}
	p.hot.add(d, b, epoch)
	return b, nil
}

// fetchManifest fetches ref from upstream (one request for concurrent
// callers), verifies and stores it, and links it to t's repository.
func (p *Proxy) fetchManifest(ctx context.Context, t Target, ref string) (upstream.Manifest, error) {
	key := t.Repo.String() + "@" + ref
	ch := p.manifests.DoChan(key, func() (_ any, err error) {
		// DoChan re-raises a panic where nothing can recover it (the
		// whole process would go): it is this fetch's error instead.
		defer func() {
			if r := recover(); r != nil {
				p.log.Error("panic in a manifest fetch", slog.Any("panic", r), slog.String("stack", string(debug.Stack())))
				err = fmt.Errorf("manifest %s: internal error", ref)
			}
		}()
		// Detached from the first caller, so that its disconnect does not
		// fail the other callers sharing this fetch.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.FillTimeout)
		defer cancel()
		m, err := t.Remote.Client.Manifest(ctx, t.Repo.Name, ref, ociapi.ManifestMediaTypes, p.opts.MaxManifestSize)
		p.countUpstream(t, "manifest", err)
		if errors.Is(err, upstream.ErrSchema1) {
			// The upstream's fault as for any content the mirror cannot
			// serve (a device falls back to the registry itself), said
			// as it is: no captive portal, no integrity failure.
			return upstream.Manifest{}, &ociapi.Error{Status: http.StatusBadGateway, Code: ociapi.CodeManifestInvalid,
				Message: "the upstream has this image only as a Docker schema 1 manifest, a deprecated format registry-edge does not serve"}
		}
		if err != nil {
			return upstream.Manifest{}, err
		}
		p.m.UpstreamBytes.WithLabelValues(t.Remote.Name).Add(float64(len(m.Body)))
		m.Descriptor.MediaType = manifestMediaType(m.Descriptor.MediaType, m.Body)
		if m.Descriptor.MediaType == "" || !json.Valid(m.Body) {
			// A captive portal's page, or a broken upstream: its fault,
			// not the client's request (a 400 would say so), and never
			// cached.
			return upstream.Manifest{}, &ociapi.Error{Status: http.StatusBadGateway, Code: ociapi.CodeManifestInvalid,
				Message: "the upstream answered with something that is not a manifest"}
		}
		if stored, err := p.storeManifest(ctx, t, m); err != nil {
			return upstream.Manifest{}, err
		} else if !stored {
			return m, nil // verified: served uncached, and the next request fetches it again
		}
		if man, ok := p.noteLayers(t, m); ok {
			p.discoverDeltas(ctx, t, m, man)
		}
		p.precomputeDeltas(ctx, t, m)
		return m, nil
	})
	// A caller that leaves (a client gone) does not wait for the shared
	// fetch, which goes on for the others.
	select {
	case r := <-ch:
		if r.Err != nil {
			return upstream.Manifest{}, r.Err
		}
		return r.Val.(upstream.Manifest), nil
	case <-ctx.Done():
		return upstream.Manifest{}, ctx.Err()
	}
}

// storeManifest stores manifest m of t and records it, apart from any
// eviction of it (evictGuard). It reports false when the disk is full:
// the upstream client verified the digest, so m is served uncached.
func (p *Proxy) storeManifest(ctx context.Context, t Target, m upstream.Manifest) (bool, error) {
	defer p.evictions.hold(m.Descriptor.Digest)()
	// Put verifies the digest and size once more before commit.
	if err := p.store.Put(ctx, m.Descriptor, bytes.NewReader(m.Body)); diskFull(err) {
		p.noteWriteError(ctx, err)
		return false, nil
	} else if err != nil {
		return false, err
	}
	p.m.StoreBytes.Add(float64(len(m.Body)))
	if err := p.db.PutManifest(ctx, t.Repo, m.Descriptor.Digest, meta.Manifest{MediaType: m.Descriptor.MediaType, Size: m.Descriptor.Size}); diskFull(err) {
		p.noteWriteError(ctx, err)
		return false, nil
	} else if err != nil {
		return false, err
	}
	return true, nil
}

func (p *Proxy) manifestByTag(ctx context.Context, t Target, tag string) (ManifestResult, error) {
	e, err := p.db.Tag(ctx, t.Repo, tag)
	if err != nil {
		if !errors.Is(err, errdef.ErrNotFound) {
			return ManifestResult{}, err
		}
		return p.fetchTag(ctx, t, tag)
	}
	if p.within(e.GoneAt, p.opts.TagTTL) {
		// The upstream said a moment ago it no longer has the tag: no
		// request per pull to hear it again.
		return p.serveGone(ctx, t, tag, e, nil)
	}
	if _, old := p.beyondMaxStale(t, e.Confirmed()); p.within(e.FetchedAt, p.opts.TagTTL) && !old {
		if res, err := p.localManifest(ctx, t, e.Digest); err == nil {
			res.Age = p.ageOf(e)
			return res, nil
		}
		// The manifest is gone from the store: fetch it again.
		return p.fetchTag(ctx, t, tag)
	}
	return p.revalidateTag(ctx, t, tag, e)
}

// fetchTag resolves a tag with one upstream GET and caches the result.
func (p *Proxy) fetchTag(ctx context.Context, t Target, tag string) (ManifestResult, error) {
	m, err := p.fetchManifest(ctx, t, tag)
	if err != nil {
		return ManifestResult{}, err
	}
	e := p.tagEntry(m.Descriptor, m.Age)
	if err := p.recorded(ctx, p.db.PutTag(ctx, t.Repo, tag, e)); err != nil {
		return ManifestResult{}, err
	}
	if limit, old := p.beyondMaxStale(t, e.Confirmed()); old {
		// A tier above answered from a cache older than this repository
		// allows: as for a tag this mirror holds (serveStale).
		return ManifestResult{}, &StaleTagError{Repo: t.Repo.Name, Tag: tag, Age: p.ageOf(e), MaxStale: limit, Err: errTierStale}
	}
	return ManifestResult{Descriptor: m.Descriptor, Body: m.Body, Cache: CacheMiss, Age: p.ageOf(e)}, nil
}

// ageOf returns how long ago tag record e was confirmed at its origin.
func (p *Proxy) ageOf(e meta.TagEntry) time.Duration {
	return max(p.now().Sub(e.Confirmed()), 0)
}

// tagEntry is the record of a tag the upstream says points at desc, as
// confirmed at its origin age ago (a registry-edge tier's Age).
func (p *Proxy) tagEntry(desc ocispec.Descriptor, age time.Duration) meta.TagEntry {
	e := meta.TagEntry{Digest: desc.Digest, MediaType: desc.MediaType, Size: desc.Size, FetchedAt: p.now()}
	if age > 0 {
		e.ConfirmedAt = e.FetchedAt.Add(-age)
	}
	return e
}

// revalidateTag asks the upstream, within RevalidateTimeout, whether a stale
// tag still points at the cached digest. If the upstream cannot answer, the
// cached digest is served (stale-if-error).
func (p *Proxy) revalidateTag(ctx context.Context, t Target, tag string, e meta.TagEntry) (ManifestResult, error) {
	r, err := p.resolveShared(ctx, t, tag)
	desc := r.Descriptor
	switch {
	case err == nil && desc.Digest == e.Digest:
		ne := p.tagEntry(ocispec.Descriptor{Digest: e.Digest, MediaType: e.MediaType, Size: e.Size}, r.Age)
		if err := p.recorded(ctx, p.db.PutTag(ctx, t.Repo, tag, ne)); err != nil {
			return ManifestResult{}, err
		}
		if _, old := p.beyondMaxStale(t, ne.Confirmed()); old {
			// A registry-edge tier above answered from its cache, last
			// confirmed longer ago than this repository allows.
			return p.serveStale(ctx, t, tag, ne, errTierStale)
		}
		res, lerr := p.localManifest(ctx, t, e.Digest)
		if lerr != nil {
			return p.fetchTag(ctx, t, tag)
		}
		res.Cache = CacheHit
		res.Age = p.ageOf(ne)
		return res, nil
	case err == nil:
		// The tag moved: fetch the new manifest by digest.
		m, ferr := p.fetchManifest(ctx, t, desc.Digest.String())
		if ferr != nil {
			return p.serveStale(ctx, t, tag, e, ferr)
		}
		ne := p.tagEntry(m.Descriptor, r.Age)
		if err := p.recorded(ctx, p.db.PutTag(ctx, t.Repo, tag, ne)); err != nil {
			return ManifestResult{}, err
		}
		if limit, old := p.beyondMaxStale(t, ne.Confirmed()); old {
			return ManifestResult{}, &StaleTagError{Repo: t.Repo.Name, Tag: tag, Age: p.ageOf(ne), MaxStale: limit, Err: errTierStale}
		}
		return ManifestResult{Descriptor: m.Descriptor, Body: m.Body, Cache: CacheMiss, Age: p.ageOf(ne)}, nil
	case errors.Is(err, errdef.ErrUnsupported) || upstreamStatus(err) == http.StatusMethodNotAllowed || upstreamStatus(err) == http.StatusNotImplemented:
		// No digest on HEAD, or no HEAD: one GET by tag instead, within
		// the revalidation's time too (the fetch goes on for the cache).
		fctx, fcancel := context.WithTimeout(ctx, p.opts.RevalidateTimeout)
		res, ferr := p.fetchTag(fctx, t, tag)
		fcancel()
		if ferr != nil && !errors.Is(ferr, errdef.ErrNotFound) {
			return p.serveStale(ctx, t, tag, e, ferr)
		}
		return res, ferr
	case upstreamSaidNo(err):
		// The upstream answered that the tag is not there, or not for
		// this mirror (a repository deleted or made private: Docker Hub
		// answers 401 for both): cache.tagNotFound decides, as for a
		// 404; it is no outage.
		if p.opts.TagNotFound == TagNotFoundForget {
			if derr := p.db.DeleteTag(ctx, t.Repo, tag); derr != nil {
				return ManifestResult{}, derr
			}
			return ManifestResult{}, err
		}
		return p.serveGone(ctx, t, tag, e, err)
	default:
		return p.serveStale(ctx, t, tag, e, err)
	}
}

// resolveShared asks t's upstream what tag names now (a HEAD), within
// RevalidateTimeout: one request for every client revalidating the same
// tag at once, each of which may leave without ending it for the others.
func (p *Proxy) resolveShared(ctx context.Context, t Target, tag string) (upstream.Resolved, error) {
	key := t.Remote.Name + "\x00" + t.Repo.Name + "\x00" + tag
	ch := p.resolving.DoChan(key, func() (any, error) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.RevalidateTimeout)
		defer cancel()
		r, err := t.Remote.Client.Resolve(rctx, t.Repo.Name, tag, ociapi.ManifestMediaTypes)
		p.countUpstream(t, "resolve", err)
		return r, err
	})
	select {
	case res := <-ch:
		r, _ := res.Val.(upstream.Resolved)
		return r, res.Err
	case <-ctx.Done():
		return upstream.Resolved{}, ctx.Err()
	}
}

// upstreamSaidNo reports whether err is the upstream's answer that a tag is
// not there (404), or not for this mirror (401, 403): an answer, not an
// outage.
func upstreamSaidNo(err error) bool {
	return errors.Is(err, errdef.ErrNotFound) || errors.Is(err, errdef.ErrUnauthorized) || errors.Is(err, errdef.ErrDenied)
}

// upstreamStatus returns the HTTP status of the upstream's answer err
// carries, or 0.
func upstreamStatus(err error) int {
	var us interface{ UpstreamStatus() int }
	if errors.As(err, &us) {
		return us.UpstreamStatus()
	}
	return 0
}

// serveStale answers a tag the upstream could not confirm with its cached
// digest, unless its last confirmation at its origin (e.Confirmed: through
// a tier above, possibly older than this mirror's last check) is older
// than the staleness limit of its repository: then the client gets a
// *StaleTagError (503). A 404, 401 or 403 from the upstream is not bounded here: the
// upstream answered, and cache.tagNotFound decides.
func (p *Proxy) serveStale(ctx context.Context, t Target, tag string, e meta.TagEntry, cause error) (ManifestResult, error) {
	if ctx.Err() != nil {
		return ManifestResult{}, ctx.Err() // the client left: nothing was stale
	}
	age := p.now().Sub(e.Confirmed())
	limit, old := p.beyondMaxStale(t, e.Confirmed())
	refused := old && !upstreamSaidNo(cause)
	// One warning per tag and state, not one per pull of a long outage;
	// the repeats are debug records. An upstream's 404 comes here once
	// per tag TTL (serveGone) and warns each time.
	level := slog.LevelWarn
	if !upstreamSaidNo(cause) && !p.staleLogged.first(t.Remote.Name+"\x00"+t.Repo.Name+"\x00"+tag,
		staleNote{confirmed: e.Confirmed(), refused: refused}) {
		level = slog.LevelDebug
	}
	if refused {
		p.m.StaleRefused.WithLabelValues(t.Remote.Name).Inc()
		p.log.LogAttrs(ctx, level, "cached tag beyond max staleness",
			slog.String("upstream", t.Remote.Name), slog.String("repo", t.Repo.Name), slog.String("ref", tag),
			slog.String("digest", e.Digest.String()), slog.Time("fetched_at", e.FetchedAt),
			slog.Duration("age", age), slog.Duration("max_stale", limit), slog.Any("err", cause))
		return ManifestResult{}, &StaleTagError{Repo: t.Repo.Name, Tag: tag, Age: age, MaxStale: limit, Err: cause}
	}
	res, err := p.localManifest(ctx, t, e.Digest)
	if err != nil {
		return ManifestResult{}, cause
	}
	res.Cache = CacheStale
	res.Age = p.ageOf(e)
	p.m.StaleServed.WithLabelValues(t.Remote.Name).Inc()
	p.log.LogAttrs(ctx, level, "serving stale tag",
		slog.String("upstream", t.Remote.Name), slog.String("repo", t.Repo.Name), slog.String("ref", tag),
		slog.String("digest", e.Digest.String()), slog.Time("fetched_at", e.FetchedAt),
		slog.Duration("age", age), slog.Any("err", cause))
	return res, nil
}

// serveGone serves tag e, which the upstream no longer has
// (cache.tagNotFound serve-cached): the upstream's 404 (cause, nil when it
// was heard within the tag TTL) is recorded, logged once and not asked
// again for a TTL.
func (p *Proxy) serveGone(ctx context.Context, t Target, tag string, e meta.TagEntry, cause error) (ManifestResult, error) {
	if cause == nil {
		res, err := p.localManifest(ctx, t, e.Digest)
		if err != nil {
			return ManifestResult{}, fmt.Errorf("tag %s: %w", tag, errdef.ErrNotFound)
		}
		res.Cache, res.Age = CacheStale, p.ageOf(e)
		p.m.StaleServed.WithLabelValues(t.Remote.Name).Inc()
		return res, nil
	}
	e.GoneAt = p.now()
	if err := p.recorded(ctx, p.db.PutTag(ctx, t.Repo, tag, e)); err != nil {
		return ManifestResult{}, err
	}
	return p.serveStale(ctx, t, tag, e, cause)
}

// errTierStale is why a tag is stale that the upstream did answer: a
// registry-edge tier above answered from its cache (Age) beyond this
// repository's offline.maxStale.
var errTierStale = errors.New("the upstream answered from a cache older than that")

// beyondMaxStale returns the staleness limit of t's repository, and
// whether a tag confirmed at its origin at confirmed is older than it. A
// confirmation after now (recorded while the clock ran ahead, before NTP
// set it back) is of unknown age: beyond any limit, as a tag is not fresh
// then either (within).
func (p *Proxy) beyondMaxStale(t Target, confirmed time.Time) (time.Duration, bool) {
	limit := t.Remote.Staleness.MaxStaleFor(t.Repo.Name)
	age := p.now().Sub(confirmed)
	return limit, limit > 0 && (age > limit || age < 0)
}

// registryJSONType reports whether mt is a vendor JSON type (such as the
// OCI 1.1 release candidates' application/vnd.oci.artifact.manifest.v1+json):
// a browser renders none of them.
func registryJSONType(mt string) bool {
	return strings.HasPrefix(mt, "application/vnd.") && strings.HasSuffix(mt, "+json") &&
		!strings.ContainsAny(mt, " ;,\"\\\r\n")
}

// manifestMediaType returns the media type of a manifest: the upstream's
// Content-Type when it names a manifest type, else the document's own
// mediaType field if that names one, else a guess from its shape (OCI
// allows the field to be absent). "" means not a manifest: the type is
// the Content-Type the manifest is served with, and one like text/html
// would make a hostile upstream's document a page on the mirror's origin.
func manifestMediaType(contentType string, body []byte) string {
	var doc struct {
		MediaType string          `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
		Config    json.RawMessage `json:"config"`
	}
	err := json.Unmarshal(body, &doc)
	if err == nil && doc.MediaType != "" && doc.MediaType != contentType && slices.Contains(ociapi.ManifestMediaTypes, doc.MediaType) {
		// The manifest names its own type, which the image spec requires
		// Content-Type to agree with: a header that says otherwise (a
		// proxy's or a CDN's slip) must not become the digest's type here
		// for good.
		return doc.MediaType
	}
	for _, mt := range ociapi.ManifestMediaTypes {
		if contentType == mt {
			return mt
		}
	}
	if err != nil {
		return ""
	}
	switch {
	case doc.MediaType != "":
		if slices.Contains(ociapi.ManifestMediaTypes, doc.MediaType) || registryJSONType(doc.MediaType) {
			return doc.MediaType
		}
		return ""
	case doc.Manifests != nil:
		return ociapi.MediaTypeOCIIndex
	case doc.Config != nil:
		return ociapi.MediaTypeOCIManifest
	}
	return ""
}
