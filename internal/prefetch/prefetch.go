// Package prefetch pre-stages images on a site before a rollout: it fetches
// the images of a list (tags or digests; chosen platforms or all platforms
// of an index; their signatures and referrers) through the proxy, in the
// background, with bounded concurrency, optionally only within daily time
// windows (off-peak cellular hours), and pins what it fetched against
// eviction until the image leaves the list.
//
// Fetches go through proxy fills, so they resume like any fill: a broken
// link, a restart or a crash loses no received byte.
package prefetch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/indexwalk"
	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/metrics"
	"github.com/registry-edge/registry-edge/internal/ociapi"
	"github.com/registry-edge/registry-edge/internal/proxy"
	"github.com/registry-edge/registry-edge/internal/timewindow"
)

// Image is one entry of a prefetch list.
type Image struct {
	// Ref is the image as a device would pull it from the mirror:
	// [registry/]repository[:tag|@digest], e.g. "ghcr.io/org/app:1.4" or
	// "org/app@sha256:...". No tag means "latest".
	Ref string `json:"ref"`
	// Platforms selects the children of an index ("linux/arm64",
	// "linux/arm/v7"); empty means all of them. Ignored for an image.
	Platforms []string `json:"platforms,omitempty"`
}

// State of an image in the list.
const (
	StatePending  = "pending"
	StateRunning  = "running"
	StateComplete = "complete"
	StateFailed   = "failed"
	StateWaiting  = "waiting" // for the next time window
)

// Status is the progress of one image.
type Status struct {
	Image
	State string `json:"state"`
	// Digest is what Ref resolved to.
	Digest string `json:"digest,omitempty"`
	// Blobs and Bytes count the content found so far (manifests excluded);
	// the Done fields count what is stored.
	Blobs     int   `json:"blobs"`
	BlobsDone int   `json:"blobsDone"`
	Bytes     int64 `json:"bytes"`
	BytesDone int64 `json:"bytesDone"`
	// Referrers counts signatures, attestations and other referrers stored
	// with the image.
	Referrers int       `json:"referrers"`
	Error     string    `json:"error,omitempty"`
	Updated   time.Time `json:"updated"`

	run   int    // runs of the image begun, so that a run ending knows whether a later one owns the status
	again string // requested while running: the state to show when this run ends (a run follows)
}

// Proxy is what the prefetcher needs of the pull-through proxy.
type Proxy interface {
	Manifest(ctx context.Context, t proxy.Target, ref string) (proxy.ManifestResult, error)
	Evidence(ctx context.Context, t proxy.Target, d digest.Digest) ([]digest.Digest, error)
	EnsureBlob(ctx context.Context, t proxy.Target, d digest.Digest) (int64, error)
	FillProgress(d digest.Digest) (written, size int64, ok bool)
}

// Store keeps what the prefetcher pinned and the images added at run
// time; *meta.DB implements it.
type Store interface {
	SetPins(ctx context.Context, owner string, ds []digest.Digest) error
	Pins(ctx context.Context, owner string) ([]digest.Digest, error)
	PinOwners(ctx context.Context) ([]string, error)
	PutPrefetch(ctx context.Context, r meta.PrefetchRequest) error
	DeletePrefetch(ctx context.Context, ref string) error
	Prefetches(ctx context.Context) ([]meta.PrefetchRequest, error)
}

var _ Store = (*meta.DB)(nil)

// Options configures a Prefetcher.
type Options struct {
	// Images is the configured list, fetched at start-up and every
	// Interval.
	Images []Image
	// Concurrency bounds the blobs fetched at once (default 2).
	Concurrency int
	// Windows are the daily times the background run may fetch in; none
	// means any time. On-demand runs may ignore them.
	Windows []timewindow.Window
	// Interval is how often the list is checked again (tags move);
	// default 1h.
	Interval time.Duration
	// RetryAfter is how soon a run that left an image failed (the uplink
	// was down) is tried again, doubling up to Interval; default 1m.
	RetryAfter time.Duration
	Logger     *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Prefetcher runs prefetches.
type Prefetcher struct {
	p      Proxy
	router *proxy.Router
	store  Store
	opts   Options
	log    *slog.Logger

	// pinMu orders a run's "still listed? then pin" against Remove's
	// unpin: a removal landing between the two would leave pins behind.
	pinMu  sync.Mutex
	mu     sync.Mutex
	status map[string]*Status // by Ref
	order  []string           // Refs in the order they were listed
	added  map[string]Image   // listed at run time (stored), by Ref
	// On-demand requests: those that ignore the time windows and those
	// that wait for one, each queue with its own runner.
	triggerNow, triggerLater *queue
	// retrySoon is a token when an on-demand run left an image failed:
	// the background loop then tries the list again soon too.
	retrySoon chan struct{}
}

// queue holds the images of on-demand requests until its runner takes
// them: each image once (a request for an image already queued updates its
// platforms), however many requests come while the runner is busy or waits
// for a time window.
type queue struct {
	mu     sync.Mutex
	images []Image
	wake   chan struct{} // a token when images is not empty
}

func newQueue() *queue { return &queue{wake: make(chan struct{}, 1)} }

func (q *queue) add(images []Image) {
	q.mu.Lock()
	for _, img := range images {
		if i := slices.IndexFunc(q.images, func(x Image) bool { return x.Ref == img.Ref }); i >= 0 {
			q.images[i] = img
		} else {
			q.images = append(q.images, img)
		}
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default: // the runner has a token already
	}
}

// take returns the queued images and empties the queue.
func (q *queue) take() []Image {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.images
	q.images = nil
	return out
}

// New returns a Prefetcher; Run starts it.
func New(p Proxy, router *proxy.Router, store Store, opts Options) (*Prefetcher, error) {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 2
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = time.Minute
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Hour
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	images, err := canonical(opts.Images)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, img := range images {
		if seen[img.Ref] {
			return nil, fmt.Errorf("prefetch image %s: listed twice: %w", img.Ref, errdef.ErrInvalid)
		}
		seen[img.Ref] = true
	}
	opts.Images = images
	pf := &Prefetcher{p: p, router: router, store: store, opts: opts, log: opts.Logger,
		status: map[string]*Status{}, added: map[string]Image{}, triggerNow: newQueue(), triggerLater: newQueue(),
		retrySoon: make(chan struct{}, 1)}
	for _, img := range opts.Images {
		pf.track(img)
	}
	return pf, nil
}

// configured reports whether ref is in the configured list.
func (pf *Prefetcher) configured(ref string) bool {
	for _, img := range pf.opts.Images {
		if img.Ref == ref {
			return true
		}
	}
	return false
}

// list is the whole prefetch list: the configured images, then those added
// at run time.
func (pf *Prefetcher) list() []Image {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	out := slices.Clone(pf.opts.Images)
	for _, ref := range pf.order {
		if img, ok := pf.added[ref]; ok {
			out = append(out, img)
		}
	}
	return out
}

// loadAdded restores the images added at run time before a restart.
func (pf *Prefetcher) loadAdded(ctx context.Context) {
	reqs, err := pf.store.Prefetches(ctx)
	if err != nil {
		pf.log.LogAttrs(ctx, slog.LevelWarn, "cannot read the stored prefetch list", slog.Any("err", err))
		return
	}
	for _, r := range reqs {
		ref, err := CanonicalRef(r.Ref)
		if err != nil {
			pf.log.LogAttrs(ctx, slog.LevelWarn, "ignoring a stored prefetch entry", slog.String("image", r.Ref), slog.Any("err", err))
			continue
		}
		if ref != r.Ref {
			// Stored by an older version, as the admin wrote it.
			err := pf.store.PutPrefetch(ctx, meta.PrefetchRequest{Ref: ref, Platforms: r.Platforms})
			if err == nil {
				err = pf.store.DeletePrefetch(ctx, r.Ref)
			}
			if err != nil {
				pf.log.LogAttrs(ctx, slog.LevelWarn, "cannot store a prefetch entry in canonical form", slog.String("image", r.Ref), slog.Any("err", err))
			}
		}
		if pf.configured(ref) {
			continue
		}
		img := Image{Ref: ref, Platforms: r.Platforms}
		pf.track(img)
		pf.mu.Lock()
		pf.added[ref] = img
		pf.mu.Unlock()
	}
}

// PinnedTags returns the tags on the list, as the metadata names them
// (<registry>/<repo>:<tag>): eviction keeps the image each names now,
// also after the tag moved and before the next run pins the new image.
// References by digest are pinned by digest already.
func (pf *Prefetcher) PinnedTags() []string {
	var out []string
	for _, img := range pf.list() {
		name, ref, err := ParseRef(img.Ref)
		if err != nil || strings.Contains(ref, ":") {
			continue // a digest
		}
		t, err := pf.router.Route(name, "")
		if err != nil {
			continue
		}
		out = append(out, t.Repo.String()+":"+ref)
	}
	return out
}

// Remove takes an image added at run time off the list and unpins it. An
// image of the configuration is removed there instead.
func (pf *Prefetcher) Remove(ctx context.Context, ref string) error {
	asGiven := ref
	ref, err := CanonicalRef(ref)
	if err != nil {
		return err
	}
	if pf.configured(ref) {
		return fmt.Errorf("prefetch image %q is listed in the configuration (prefetch.images); remove it there: %w", ref, errdef.ErrInvalid)
	}
	pf.pinMu.Lock()
	defer pf.pinMu.Unlock()
	pf.mu.Lock()
	_, ok := pf.added[ref]
	pf.mu.Unlock()
	if !ok {
		return fmt.Errorf("prefetch image %q is not listed: %w", asGiven, errdef.ErrNotFound)
	}
	if err := pf.store.DeletePrefetch(ctx, ref); err != nil {
		return err
	}
	if err := pf.store.SetPins(ctx, pinOwner(ref), nil); err != nil {
		return err
	}
	pf.mu.Lock()
	delete(pf.added, ref)
	delete(pf.status, ref)
	pf.order = slices.DeleteFunc(pf.order, func(r string) bool { return r == ref })
	pf.mu.Unlock()
	pf.log.LogAttrs(ctx, slog.LevelInfo, "image removed from the prefetch list and unpinned", slog.String("image", ref))
	return nil
}

// Run fetches the configured list now (or when its window opens) and every
// Interval, and runs on-demand requests, until ctx is done. It also unpins
// images that left the configured list.
func (pf *Prefetcher) Run(ctx context.Context) {
	pf.loadAdded(ctx)
	pf.unpinUnlisted(ctx)
	// On-demand requests run on their own, so that a background run
	// waiting for its window does not hold them up; those that ignore the
	// windows are not held up by those that wait for one either.
	var wg sync.WaitGroup
	for _, q := range []*queue{pf.triggerNow, pf.triggerLater} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case <-q.wake:
					if images := q.take(); len(images) > 0 {
						pf.run(ctx, images, q == pf.triggerNow)
						if pf.anyFailed() {
							select {
							case pf.retrySoon <- struct{}{}:
							default:
							}
						}
					}
				}
			}
		}()
	}
	defer wg.Wait()
	retry := pf.opts.RetryAfter
	// soon is the wait before the next try of a list that failed (a
	// pre-stage before an outage or a rollout must not wait an hour for
	// the link's return), longer the longer it fails.
	soon := func() time.Duration {
		d := min(retry, pf.opts.Interval)
		retry = min(2*retry, pf.opts.Interval)
		return d
	}
	for {
		wait := pf.opts.Interval
		if images := pf.list(); len(images) > 0 {
			pf.run(ctx, images, false)
			if pf.anyFailed() {
				wait = soon()
			} else {
				retry = pf.opts.RetryAfter
			}
		}
		next := time.Now().Add(wait)
		for waiting := true; waiting; {
			timer := time.NewTimer(time.Until(next))
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-pf.retrySoon:
				// An on-demand run failed: tried again soon, unless
				// the next run comes sooner anyway.
				timer.Stop()
				if t := time.Now().Add(soon()); t.Before(next) {
					next = t
				}
			case <-timer.C:
				waiting = false
			}
		}
	}
}

// Trigger queues images for a run now; now ignores the time windows. The
// images join the list (stored, so that they stay listed after a restart,
// until Remove) and are pinned like configured ones.
func (pf *Prefetcher) Trigger(images []Image, now bool) error {
	images, err := canonical(images)
	if err != nil {
		return err
	}
	for _, img := range images {
		if !pf.configured(img.Ref) {
			if err := pf.store.PutPrefetch(context.Background(), meta.PrefetchRequest{Ref: img.Ref, Platforms: img.Platforms}); err != nil {
				return err
			}
			pf.mu.Lock()
			pf.added[img.Ref] = img
			pf.mu.Unlock()
		}
		pf.track(img)
		// What a caller waits for is this request's run, not an earlier
		// one's outcome.
		state := StatePending
		if !now && timewindow.Next(pf.opts.Windows, pf.opts.Now()) > 0 {
			state = StateWaiting
		}
		pf.update(img.Ref, func(s *Status) {
			if s.State != StateRunning {
				s.State, s.Error = state, ""
			} else {
				// The running fetch began before this request (the
				// tag may have moved since): its outcome is not this
				// request's, whose own run follows.
				s.again = state
			}
		})
	}
	q := pf.triggerLater
	if now {
		q = pf.triggerNow
	}
	q.add(images)
	return nil
}

// anyFailed reports whether an image of the list failed its last run.
func (pf *Prefetcher) anyFailed() bool {
	return slices.ContainsFunc(pf.Status(), func(s Status) bool { return s.State == StateFailed })
}

// Status returns the progress of every image, in list order.
func (pf *Prefetcher) Status() []Status {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	out := make([]Status, 0, len(pf.order))
	for _, ref := range pf.order {
		out = append(out, *pf.status[ref])
	}
	return out
}

// Progress sums the status list for the metrics.
func (pf *Prefetcher) Progress() metrics.PrefetchProgress {
	p := metrics.PrefetchProgress{Images: map[string]int{}}
	for _, s := range pf.Status() {
		p.Images[s.State]++
		p.Bytes += s.Bytes
		p.BytesDone += s.BytesDone
	}
	return p
}

func (pf *Prefetcher) track(img Image) {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	if st, ok := pf.status[img.Ref]; ok {
		st.Platforms = img.Platforms
		return
	}
	pf.status[img.Ref] = &Status{Image: img, State: StatePending, Updated: pf.opts.Now()}
	pf.order = append(pf.order, img.Ref)
}

func (pf *Prefetcher) update(ref string, fn func(*Status)) {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	st := pf.status[ref]
	if st == nil {
		return // removed from the list meanwhile
	}
	fn(st)
	st.Updated = pf.opts.Now()
}

// run fetches images one after the other (their blobs concurrently),
// waiting for a time window first unless now is set.
func (pf *Prefetcher) run(ctx context.Context, images []Image, now bool) {
	for i, img := range images {
		if !now {
			if wait := timewindow.Next(pf.opts.Windows, pf.opts.Now()); wait > 0 {
				for _, w := range images[i:] {
					pf.update(w.Ref, func(s *Status) {
						if s.State != StateRunning {
							s.State = StateWaiting
						}
					})
				}
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		if !pf.listed(img.Ref) {
			continue // removed since it was queued or the run began
		}
		pf.fetchImage(ctx, img)
	}
}

// CanonicalRef is image reference s with its tag written out ("latest" if
// none): the form the list, its status and its pins are keyed by, so that
// "edge/app" and "edge/app:latest" are one entry. See
// ociapi.CanonicalReference.
func CanonicalRef(s string) (string, error) {
	ref, err := ociapi.CanonicalReference(s)
	if err != nil {
		return "", fmt.Errorf("prefetch image: %w", err)
	}
	return ref, nil
}

// canonical returns images with their references in canonical form.
func canonical(images []Image) ([]Image, error) {
	out := slices.Clone(images)
	for i := range out {
		ref, err := CanonicalRef(out[i].Ref)
		if err != nil {
			return nil, err
		}
		out[i].Ref = ref
	}
	return out, nil
}

// ParseRef splits an image reference; see ociapi.ParseReference.
func ParseRef(s string) (name, ref string, err error) {
	name, ref, err = ociapi.ParseReference(s)
	if err != nil {
		return "", "", fmt.Errorf("prefetch image: %w", err)
	}
	return name, ref, nil
}

// fetchImage resolves one image and stores everything it needs.
func (pf *Prefetcher) fetchImage(ctx context.Context, img Image) {
	log := pf.log.With(slog.String("image", img.Ref))
	var run int
	pf.update(img.Ref, func(s *Status) {
		s.State, s.Error, s.Blobs, s.BlobsDone, s.Bytes, s.BytesDone, s.Referrers = StateRunning, "", 0, 0, 0, 0, 0
		s.run++
		run, s.again = s.run, ""
	})
	pinned, stale, err := pf.fetch(ctx, img, log)
	if err == nil && stale {
		// Evidence that could not be looked up again (the uplink is
		// down) stays pinned: it is what devices verify the image with
		// offline. The next run that reaches the upstream drops what is
		// no longer referred to.
		var old []digest.Digest
		if old, err = pf.store.Pins(ctx, pinOwner(img.Ref)); err == nil {
			pinned = append(pinned, old...)
		}
	}
	if err != nil && ctx.Err() != nil {
		// The mirror is stopping: not a failure. The image runs again
		// at the next start, resuming what its blobs received.
		pf.end(img.Ref, run, StatePending, "")
		log.LogAttrs(context.Background(), slog.LevelInfo, "prefetch stopped by the shutdown")
		return
	}
	if err != nil {
		pf.end(img.Ref, run, StateFailed, err.Error())
		log.LogAttrs(ctx, slog.LevelWarn, "prefetch failed", slog.Any("err", err))
		return
	}
	pf.pinMu.Lock()
	if !pf.listed(img.Ref) {
		pf.pinMu.Unlock()
		return // removed while it ran
	}
	err = pf.store.SetPins(ctx, pinOwner(img.Ref), pinned)
	pf.pinMu.Unlock()
	if err != nil {
		pf.end(img.Ref, run, StateFailed, err.Error())
		return
	}
	pf.end(img.Ref, run, StateComplete, "")
	st := pf.statusOf(img.Ref)
	log.LogAttrs(ctx, slog.LevelInfo, "prefetch complete", slog.String("digest", st.Digest),
		slog.Int("blobs", st.Blobs), slog.Int64("bytes", st.Bytes), slog.Int("referrers", st.Referrers))
}

// end records the outcome of run of ref, unless a later run owns the
// status, or the image was requested again while it ran: then it shows
// what that request's own run waits in (pending or waiting).
func (pf *Prefetcher) end(ref string, run int, state, errText string) {
	pf.update(ref, func(s *Status) {
		switch {
		case s.run != run:
		case s.again != "":
			s.State, s.Error, s.again = s.again, "", ""
		default:
			s.State, s.Error = state, errText
		}
	})
}

func (pf *Prefetcher) statusOf(ref string) Status {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	if st := pf.status[ref]; st != nil {
		return *st
	}
	return Status{}
}

// movePins adds the pins of owner from to those of owner to, and drops
// from's.
func (pf *Prefetcher) movePins(ctx context.Context, from, to string) {
	pf.pinMu.Lock()
	defer pf.pinMu.Unlock()
	moved, err := pf.store.Pins(ctx, from)
	var have []digest.Digest
	if err == nil {
		have, err = pf.store.Pins(ctx, to)
	}
	if err == nil {
		err = pf.store.SetPins(ctx, to, append(have, moved...))
	}
	if err == nil {
		err = pf.store.SetPins(ctx, from, nil)
	}
	if err != nil {
		pf.log.LogAttrs(ctx, slog.LevelWarn, "cannot move pins", slog.String("from", from), slog.String("to", to), slog.Any("err", err))
	}
}

// pinOwner names the pins of one list entry.
func pinOwner(ref string) string { return "prefetch:" + ref }

// listed reports whether ref is on the list.
func (pf *Prefetcher) listed(ref string) bool {
	pf.mu.Lock()
	_, added := pf.added[ref]
	pf.mu.Unlock()
	return added || pf.configured(ref)
}

// unpinUnlisted drops the pins of prefetch entries no longer listed.
func (pf *Prefetcher) unpinUnlisted(ctx context.Context) {
	owners, err := pf.store.PinOwners(ctx)
	if err != nil {
		pf.log.LogAttrs(ctx, slog.LevelWarn, "cannot list pins", slog.Any("err", err))
		return
	}
	listed := map[string]bool{}
	for _, img := range pf.list() {
		listed[pinOwner(img.Ref)] = true
	}
	for _, o := range owners {
		if strings.HasPrefix(o, "prefetch:") && !listed[o] {
			if ref, err := CanonicalRef(strings.TrimPrefix(o, "prefetch:")); err == nil && listed[pinOwner(ref)] {
				// Pinned by an older version under the reference as the
				// admin wrote it: the pins move, so that the image stays
				// pinned until a run reaches the upstream.
				pf.movePins(ctx, o, pinOwner(ref))
				continue
			}
			if err := pf.store.SetPins(ctx, o, nil); err != nil {
				pf.log.LogAttrs(ctx, slog.LevelWarn, "cannot unpin", slog.String("owner", o), slog.Any("err", err))
			} else {
				pf.log.LogAttrs(ctx, slog.LevelInfo, "unpinned an image no longer in the prefetch list", slog.String("image", strings.TrimPrefix(o, "prefetch:")))
			}
		}
	}
}

// fetch stores img's manifests, blobs and referrers and returns every
// digest it stored; stale reports that some referrers could not be looked
// up again (the upstream is unreachable).
func (pf *Prefetcher) fetch(ctx context.Context, img Image, log *slog.Logger) (_ []digest.Digest, stale bool, _ error) {
	name, ref, err := ParseRef(img.Ref)
	if err != nil {
		return nil, false, err
	}
	t, err := pf.router.Route(name, "")
	if err != nil {
		return nil, false, err
	}
	top, err := pf.p.Manifest(ctx, t, ref)
	if err != nil {
		return nil, false, fmt.Errorf("manifest %s: %w", ref, err)
	}
	pf.update(img.Ref, func(s *Status) { s.Digest = top.Descriptor.Digest.String() })

	var manifests []digest.Digest // every manifest stored, for pins and referrers
	var blobs []ocispec.Descriptor
	chosen := 0          // image manifests of the image's index(es) that the platforms select
	var offered []string // the platforms of the image's index(es), for the error when none is chosen
	// contents notes manifest m and its blobs.
	contents := func(m proxy.ManifestResult, doc manifestDoc) {
		manifests = append(manifests, m.Descriptor.Digest)
		if doc.Config != nil && doc.Config.Size > 0 {
			blobs = append(blobs, *doc.Config)
		}
		for _, l := range doc.Layers {
			if distributable(l) {
				blobs = append(blobs, l)
			}
		}
		blobs = append(blobs, doc.Blobs...)
	}
	fetchIndex := func(ctx context.Context, d ocispec.Descriptor) ([]byte, error) {
		m, err := pf.p.Manifest(ctx, t, d.Digest.String())
		if err != nil {
			return nil, err
		}
		manifests = append(manifests, m.Descriptor.Digest)
		return m.Body, nil
	}
	// walk notes m and, for an index, what it lists and the indexes nested
	// in it list (indexwalk's bounds), only the children that the
	// platforms pick when pick is set: a nested index's descriptor seldom
	// names a platform, its children do.
	walk := func(m proxy.ManifestResult, pick bool) error {
		doc, err := parseManifestDoc(m)
		if err != nil {
			return err
		}
		if !ociapi.IsIndex(m.Descriptor.MediaType) && !ociapi.IsIndex(doc.MediaType) && len(doc.Manifests) == 0 {
			contents(m, doc)
			return nil
		}
		// BuildKit's attestation manifests (provenance, SBOM) are
		// children of the index too, platform unknown/unknown: one goes
		// with the image its annotation names.
		picked := map[digest.Digest]bool{}
		onIndex := func(ix indexwalk.Index) error {
			var idx ocispec.Index
			if err := json.Unmarshal(ix.Body, &idx); err != nil {
				return fmt.Errorf("manifest %s: %w: %w", ix.Descriptor.Digest, errdef.ErrInvalid, err)
			}
			for _, child := range idx.Manifests {
				if matchPlatform(img.Platforms, child.Platform) {
					picked[child.Digest] = true
				}
			}
			return nil
		}
		onEntry := func(e indexwalk.Entry) error {
			child := e.Descriptor
			if pick {
				attests := digest.Digest(child.Annotations[annotationReferenceDigest])
				if attests != "" {
					if len(img.Platforms) > 0 && !picked[attests] {
						return nil
					}
				} else {
					if child.Platform != nil && !slices.Contains(offered, platformString(child.Platform)) { // an index of hundreds repeats them
						offered = append(offered, platformString(child.Platform))
					}
					if !picked[child.Digest] {
						return nil
					}
					chosen++
				}
			}
			cm, err := pf.p.Manifest(ctx, t, child.Digest.String())
			if err != nil {
				return fmt.Errorf("manifest %s: %w", child.Digest, err)
			}
			cdoc, err := parseManifestDoc(cm)
			if err != nil {
				return err
			}
			contents(cm, cdoc)
			return nil
		}
		manifests = append(manifests, m.Descriptor.Digest) // fetchIndex notes the nested ones
		return indexwalk.Walk(ctx, m.Descriptor, m.Body, fetchIndex, onIndex, onEntry)
	}
	if err := walk(top, true); err != nil {
		return nil, false, err
	}
	if len(img.Platforms) > 0 && len(offered) > 0 && chosen == 0 {
		// Reported complete, it would leave the site without the image
		// its devices pull (a typo, or a platform the image lacks).
		return nil, false, fmt.Errorf("index %s has no manifest for %s (it has %s): %w",
			top.Descriptor.Digest, strings.Join(img.Platforms, ", "), strings.Join(offered, ", "), errdef.ErrNotFound)
	}

	// Signatures, attestations, SBOMs: the referrers of every manifest (OCI
	// 1.1, or cosign's sha256-<hex>.sig style tags through the proxy's
	// fallback), with their own blobs.
	// With the upstream unreachable (a site that restarts during an outage
	// refreshes its list), what could not be looked up again is left as
	// it is: the image and the evidence stored before still serve.
	nref := 0
	for _, d := range slices.Clone(manifests) {
		refs, err := pf.p.Evidence(ctx, t, d)
		if errors.Is(err, errdef.ErrUnavailable) {
			// What the cache answered for (refs) is stored with the
			// image still; the rest is kept as it is.
			log.LogAttrs(ctx, slog.LevelWarn, "prefetch: signatures and referrers not refreshed", slog.String("manifest", d.String()), slog.Any("err", err))
			stale = true
		} else if err != nil {
			return nil, false, err
		}
		for _, r := range refs {
			rm, err := pf.p.Manifest(ctx, t, r.String())
			if errors.Is(err, errdef.ErrUnavailable) {
				log.LogAttrs(ctx, slog.LevelWarn, "prefetch: referrer not refreshed", slog.String("referrer", r.String()), slog.Any("err", err))
				continue
			}
			if err != nil {
				return nil, false, fmt.Errorf("referrer %s of %s: %w", r, d, err)
			}
			if err := walk(rm, false); err != nil {
				return nil, false, err
			}
			nref++
		}
	}
	pf.update(img.Ref, func(s *Status) { s.Referrers = nref })

	blobs = uniqueBlobs(blobs)
	var total int64
	for _, b := range blobs {
		total += b.Size
	}
	pf.update(img.Ref, func(s *Status) { s.Blobs, s.Bytes = len(blobs), total })
	if err := pf.fetchBlobs(ctx, img.Ref, t, blobs); err != nil {
		return nil, false, err
	}
	out := manifests
	for _, b := range blobs {
		out = append(out, b.Digest)
	}
	log.LogAttrs(ctx, slog.LevelDebug, "prefetch stored", slog.Int("manifests", len(manifests)), slog.Int("blobs", len(blobs)))
	return out, stale, nil
}

// manifestDoc is what a prefetch reads of a manifest.
type manifestDoc struct {
	MediaType string               `json:"mediaType"`
	Manifests []ocispec.Descriptor `json:"manifests"`
	Config    *ocispec.Descriptor  `json:"config"`
	Layers    []ocispec.Descriptor `json:"layers"`
	Blobs     []ocispec.Descriptor `json:"blobs"` // artifact manifests
}

func parseManifestDoc(m proxy.ManifestResult) (manifestDoc, error) {
	var doc manifestDoc
	if err := json.Unmarshal(m.Body, &doc); err != nil {
		return doc, fmt.Errorf("manifest %s: %w: %w", m.Descriptor.Digest, errdef.ErrInvalid, err)
	}
	return doc, nil
}

// fetchBlobs stores blobs with at most Concurrency fills at once, and keeps
// the image's byte count current for progress reports.
func (pf *Prefetcher) fetchBlobs(ctx context.Context, ref string, t proxy.Target, blobs []ocispec.Descriptor) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, pf.opts.Concurrency)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		done     int64 // bytes of finished blobs
		running  = map[digest.Digest]bool{}
	)
	progress := func() {
		mu.Lock()
		b := done
		for d := range running {
			if w, _, ok := pf.p.FillProgress(d); ok {
				b += w
			}
		}
		mu.Unlock()
		pf.update(ref, func(s *Status) { s.BytesDone = b })
	}
	stop := make(chan struct{})
	go func() {
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				progress()
			case <-stop:
				return
			}
		}
	}()
	for _, b := range blobs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		mu.Lock()
		running[b.Digest] = true
		mu.Unlock()
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			size, err := pf.p.EnsureBlob(ctx, t, b.Digest)
			if err == nil && b.Size >= 0 && size != b.Size {
				err = fmt.Errorf("blob %s: %d bytes, the manifest says %d: %w", b.Digest, size, b.Size, errdef.ErrSizeMismatch)
			}
			mu.Lock()
			delete(running, b.Digest)
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("blob %s: %w", b.Digest, err)
				cancel()
			}
			if err == nil {
				done += size
			}
			mu.Unlock()
			if err == nil {
				pf.update(ref, func(s *Status) { s.BlobsDone++ })
			}
		}()
	}
	wg.Wait()
	close(stop)
	progress()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// distributable reports whether the registry holds layer d. A
// non-distributable layer (the foreign base layers of Windows images, OCI's
// nondistributable media types) is not in the registry: devices fetch it
// from the URLs its descriptor names, so the mirror cannot store it.
func distributable(d ocispec.Descriptor) bool {
	return d.MediaType != "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" &&
		!strings.Contains(d.MediaType, ".nondistributable.")
}

func uniqueBlobs(in []ocispec.Descriptor) []ocispec.Descriptor {
	seen := map[digest.Digest]bool{}
	var out []ocispec.Descriptor
	for _, b := range in {
		if !seen[b.Digest] {
			seen[b.Digest] = true
			out = append(out, b)
		}
	}
	return out
}

// annotationReferenceDigest names, on a BuildKit attestation manifest in an
// index, the image manifest it is about.
const annotationReferenceDigest = "vnd.docker.reference.digest"

// matchPlatform reports whether p is one of want ("os/arch[/variant]");
// an empty want matches everything. A variant that names the default
// version of its architecture (arm64/v8, amd64/v1) is the same as none:
// indexes write linux/arm64 or linux/arm64/v8 for the same devices.
func matchPlatform(want []string, p *ocispec.Platform) bool {
	if len(want) == 0 {
		return true
	}
	if p == nil {
		return false
	}
	for _, w := range want {
		parts := strings.Split(w, "/")
		if len(parts) >= 2 && parts[0] == p.OS && parts[1] == p.Architecture &&
			(len(parts) < 3 || normalVariant(parts[1], parts[2]) == normalVariant(p.Architecture, p.Variant)) {
			return true
		}
	}
	return false
}

// normalVariant is variant, or "" for the default version of arch.
func normalVariant(arch, variant string) string {
	if arch == "arm64" && variant == "v8" || arch == "amd64" && variant == "v1" {
		return ""
	}
	return variant
}

// platformString is p as os/arch[/variant].
func platformString(p *ocispec.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}
