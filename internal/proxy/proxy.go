// Package proxy is the pull-through orchestration of registry-edge: a local
// hit is served from the store; a miss is fetched from the upstream once per
// digest (concurrent requests share one fill), verified, committed and
// served while it arrives; when the upstream is down, what is cached keeps
// being served.
package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/layerdelta"
	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/metrics"
	"github.com/registry-edge/registry-edge/internal/sigpolicy"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

// Upstream is what the proxy needs from an origin registry;
// *upstream.Client implements it, and tests substitute fakes.
type Upstream interface {
	Manifest(ctx context.Context, repo, ref string, accept []string, maxSize int64) (upstream.Manifest, error)
	Resolve(ctx context.Context, repo, ref string, accept []string) (upstream.Resolved, error)
	Blob(ctx context.Context, repo string, d digest.Digest, offset int64, ifRange string) (*upstream.BlobResponse, error)
	BlobRange(ctx context.Context, repo string, d digest.Digest, offset, n int64) ([]byte, error)
	StatBlob(ctx context.Context, repo string, d digest.Digest) (int64, error)
	Tags(ctx context.Context, repo string, n int, last string) (upstream.TagPage, error)
	Referrers(ctx context.Context, repo string, d digest.Digest) (upstream.Manifest, error)
}

var _ Upstream = (*upstream.Client)(nil)

// Store is the content store the proxy fills.
type Store interface {
	blobstore.Store
	blobstore.Ingester
}

// Cache outcomes, used in logs and metrics.
const (
	CacheHit   = "hit"   // served from the store, no upstream request
	CacheMiss  = "miss"  // fetched from the upstream by this request
	CacheFill  = "fill"  // joined a fill another request started
	CacheStale = "stale" // served from the store because the upstream could not confirm it
)

// TagNotFound policies: what to do when the upstream answers 404 for a tag
// that is cached.
const (
	TagNotFoundServeCached = "serve-cached"
	TagNotFoundForget      = "not-found"
)

// Options configures a Proxy.
type Options struct {
	// TagTTL is how long a cached tag is answered without asking upstream.
	TagTTL time.Duration
	// RevalidateTimeout bounds the request that revalidates a stale tag.
	RevalidateTimeout time.Duration
	// FillTimeout bounds one blob fill, across its resumes.
	FillTimeout time.Duration
	// FillStallTimeout is how long a fill waits for body bytes before it
	// drops the upstream connection and resumes.
	FillStallTimeout time.Duration
	// ClientStallTimeout is how long a client of a fill waits for new bytes
	// before its request fails.
	ClientStallTimeout time.Duration
	// OnDiskFull is called (in its own goroutine) when a write to the store
	// fails with ENOSPC, to make room; nil does nothing. Its context ends
	// when the proxy closes, and Close waits for it to return: an eviction
	// must not go on deleting while the store and metadata close.
	OnDiskFull func(context.Context)
	// MaxManifestSize is the largest manifest accepted from upstream.
	MaxManifestSize int64
	// StoreBudget returns the store's byte budget (storage.maxSize), 0 for
	// none. A fill of a blob whose size neither the upstream nor a manifest
	// gave stops there: a larger blob could not be kept. Nil: no budget.
	StoreBudget func() int64
	// Deltas enables layer deltas: published deltas of the layers of a
	// pulled image are looked for, and used when their bases are stored.
	Deltas bool
	// NegotiateDeltas asks an upstream registry-edge for deltas of missing
	// layers against stored layers of the same repository.
	NegotiateDeltas bool
	// MaxBaseCandidates bounds the layers offered in one negotiation.
	MaxBaseCandidates int
	// MaxDeltaRatio is the largest delta computed for a lower tier, as a
	// fraction of the layer (DeltaFor).
	MaxDeltaRatio float64
	// DeltaMinimums are the smallest layer a delta is negotiated or
	// computed for, and the fewest bytes a delta (published or
	// negotiated) must save to be used; nil means
	// layerdelta.DefaultMinimums.
	DeltaMinimums *layerdelta.Minimums
	// PrecomputeDeltas computes, when an image manifest is fetched, the
	// deltas of its layers against the repository's other stored images,
	// for lower tiers.
	PrecomputeDeltas bool
	// DeltaWorkers bounds the deltas computed at once.
	DeltaWorkers int
	// DeltaMemoryBudget bounds the estimated memory of the deltas computed
	// at once (deltaMemory); 0 means 1 GiB. A computation estimated larger
	// runs alone.
	DeltaMemoryBudget int64
	// DeltaDiscoveryTimeout bounds the lookup of an image's deltas when its
	// manifest is fetched.
	DeltaDiscoveryTimeout time.Duration
	// RedirectBlobs answers GETs of stored blobs above 64 KiB with the
	// store's URL for them (BlobResult.Redirect), when it has one.
	RedirectBlobs bool
	// Policy is the signature policy; nil verifies nothing.
	Policy *sigpolicy.Policy
	// TagNotFound is TagNotFoundServeCached (default) or TagNotFoundForget.
	TagNotFound string
	Logger      *slog.Logger
	Metrics     *metrics.Metrics
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Elapsed is the time passed since an arbitrary start, on a clock that
	// steps of the wall clock do not move (NTP setting the time of a
	// gateway that booted without an RTC). Access times are measured on
	// it and written in the wall clock's frame of their flush, so a step
	// does not age (or rejuvenate) them. nil: Now's monotonic reading
	// (time.Now has one).
	Elapsed func() time.Duration
	// After is the clock's timer: the channel it returns receives once d
	// has passed on the clock Now reads. A fill waits on it between
	// resumes of a broken transfer, and a client of a fill waits on it for
	// new bytes (ClientStallTimeout). nil means time.After.
	After func(d time.Duration) <-chan time.Time
}

// Proxy serves manifests, blobs, tags and referrers through the cache.
type Proxy struct {
	store  Store
	db     *meta.DB
	router *Router
	opts   Options
	log    *slog.Logger
	m      *metrics.Metrics
	now    func() time.Time

	manifests singleflight.Group
	// resolving shares one upstream HEAD among the clients revalidating
	// the same stale tag at once.
	resolving singleflight.Group
	// staleLogged keeps an outage from logging a warning per pull of
	// each stale tag.
	staleLogged staleNotes
	// verifying shares a signature verification among the requests of
	// one manifest (verdict); storingEvidence holds the images whose
	// evidence is being stored (storeEvidence).
	verifying       singleflight.Group
	storingEvidence sync.Map
	// computing shares one delta computation per layer and bases;
	// deltaWorkers bounds them; noDelta remembers (until a time) the layers
	// and bases that gave no delta worth sending.
	computing    singleflight.Group
	deltaWorkers chan struct{}
	deltaMemory  *semaphore.Weighted
	noDelta      sync.Map
	// noDeltaStores counts noDelta records, to prune it now and then.
	noDeltaStores atomic.Uint64
	layerHints    layerHints
	// askedForDeltas is set once a lower tier asked for a delta (DeltaFor;
	// recorded in meta, so that it holds across restarts):
	// only then are deltas precomputed.
	askedForDeltas atomic.Bool
	askedNoted     atomic.Int64 // unix seconds askedForDeltas was last recorded
	// deltasQueued counts computations waiting for a worker.
	deltasQueued atomic.Int32
	// fetchingBases holds the layers whose offered bases are being
	// fetched (fetchOfferedBase).
	fetchingBases sync.Map
	// verified holds the content known trusted under a rule revision
	// (manifests verified or served as evidence, blobs they reference):
	// verifiedKey. It spares the hot paths a bbolt read.
	verified trustCache
	hot      *hotCache
	links    *linkCache
	// evictions keeps eviction from racing the recording of content
	// stored again meanwhile (Evict).
	evictions *evictGuard
	access    accessTracker

	mu    sync.Mutex
	fills map[digest.Digest]*fill
	// fillsEnded counts fills removed from fills (under mu): joinFill
	// looks at the store again when one ended while it did.
	fillsEnded uint64
	wg         sync.WaitGroup
	// diskFullUntil (unix nanoseconds) is when misses stop passing
	// through after a write failed with ENOSPC.
	diskFullUntil atomic.Int64
	// makingRoom is set while OnDiskFull runs.
	makingRoom atomic.Bool
	// closing is cancelled by Close: running fills stop and keep their
	// partial downloads.
	closing context.Context
	close   context.CancelFunc
}

// New returns a Proxy.
func New(store Store, db *meta.DB, router *Router, opts Options) *Proxy {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.After == nil {
		opts.After = time.After
	}
	if opts.Elapsed == nil {
		start, now := opts.Now(), opts.Now
		opts.Elapsed = func() time.Duration { return now().Sub(start) }
	}
	if opts.TagNotFound == "" {
		opts.TagNotFound = TagNotFoundServeCached
	}
	if opts.MaxManifestSize <= 0 {
		opts.MaxManifestSize = 4 << 20
	}
	if opts.FillTimeout <= 0 {
		opts.FillTimeout = 30 * time.Minute
	}
	if opts.RevalidateTimeout <= 0 {
		opts.RevalidateTimeout = 2 * time.Second
	}
	if opts.MaxBaseCandidates <= 0 {
		opts.MaxBaseCandidates = 16
	}
	if opts.MaxDeltaRatio <= 0 {
		opts.MaxDeltaRatio = 0.5
	}
	if opts.DeltaMinimums == nil {
		opts.DeltaMinimums = &layerdelta.DefaultMinimums
	}
	if opts.DeltaWorkers <= 0 {
		opts.DeltaWorkers = 1
	}
	if opts.DeltaMemoryBudget <= 0 {
		opts.DeltaMemoryBudget = 1 << 30
	}
	if opts.DeltaDiscoveryTimeout <= 0 {
		opts.DeltaDiscoveryTimeout = 5 * time.Second
	}
	if opts.FillStallTimeout <= 0 {
		opts.FillStallTimeout = 30 * time.Second
	}
	if opts.ClientStallTimeout <= 0 {
		opts.ClientStallTimeout = 2 * time.Minute
	}
	closing, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		store: store, db: db, router: router, opts: opts,
		log: opts.Logger, m: opts.Metrics, now: opts.Now,
		fills:        map[digest.Digest]*fill{},
		deltaWorkers: make(chan struct{}, opts.DeltaWorkers),
		deltaMemory:  semaphore.NewWeighted(opts.DeltaMemoryBudget),
		hot:          newHotCache(hotTotalMax),
		links:        newLinkCache(),
		evictions:    newEvictGuard(),
		access:       accessTracker{elapsed: opts.Elapsed},
		closing:      closing, close: cancel,
	}
	if at, asked, err := db.State(context.Background(), meta.StateDeltasAsked); err == nil && asked && p.now().Sub(at) < deltasAskedFor {
		p.askedForDeltas.Store(true)
	}
	return p
}

// within reports whether at, a wall time recorded earlier, is less than ttl
// ago. A time after now was recorded before the wall clock was stepped back
// (one that ran ahead, set by NTP): it is not, or it would count as fresh
// for as long as the step, years maybe.
func (p *Proxy) within(at time.Time, ttl time.Duration) bool {
	age := p.now().Sub(at)
	return age >= 0 && age < ttl
}

// deltasAskedFor is how long after the last delta request of a lower tier
// a restarted mirror still precomputes deltas.
const deltasAskedFor = 30 * 24 * time.Hour

// Router returns the proxy's router.
func (p *Proxy) Router() *Router { return p.router }

// Close stops every running fill, keeping what it received on disk for a
// later fill to resume, and waits for them to end or ctx to be done.
func (p *Proxy) Close(ctx context.Context) error {
	// Under mu: work started in the background (fills, evidence, deltas)
	// is counted before Wait, or not started at all (startBackground).
	p.mu.Lock()
	p.close()
	p.mu.Unlock()
	err := p.Wait(ctx)
	if ferr := p.FlushAccess(context.WithoutCancel(ctx)); ferr != nil && err == nil {
		err = ferr
	}
	return err
}

// startBackground counts background work about to start, unless the proxy
// is closing: then it reports false and nothing may start.
func (p *Proxy) startBackground() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing.Err() != nil {
		return false
	}
	p.wg.Add(1)
	return true
}

// Wait blocks until every running fill has ended or ctx is done. Fills are
// not tied to client connections, so a graceful shutdown waits here.
func (p *Proxy) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Proxy) countUpstream(t Target, op string, err error) {
	result := "ok"
	switch {
	case errors.Is(err, errdef.ErrNotFound):
		result = "not_found" // an answer, not a failure
	case err != nil:
		result = "error"
	}
	p.m.UpstreamRequests.WithLabelValues(t.Remote.Name, op, result).Inc()
}
