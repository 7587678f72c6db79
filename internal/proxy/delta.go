package proxy

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/layerdelta"
	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/metrics"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

// maxDeltaArtifacts bounds the delta artifacts read for one image manifest.
const maxDeltaArtifacts = 8

// tempDirer is a store that has room for temporary files (blobstore.FS).
type tempDirer interface{ TempDir() string }

// discoverDeltas looks, when an image manifest comes from upstream, for
// published deltas of its layers (referrers of artifact type
// layerdelta.ArtifactType) and records those that rebuild one of its layers,
// for the fills of those layers to find. It does nothing when every layer
// is stored or when no other image of the repository is, since then no
// delta could have a base here. Failures are logged, never returned: deltas
// are an optimisation.
func (p *Proxy) discoverDeltas(ctx context.Context, t Target, m upstream.Manifest, man ocispec.Manifest) {
	if !p.opts.Deltas {
		return
	}
	p.layerHints.discovered(m.Descriptor.Digest, p.now())
	layers := map[digest.Digest]int64{}
	for _, l := range man.Layers {
		if _, err := p.store.Stat(ctx, l.Digest); err != nil {
			layers[l.Digest] = l.Size
		}
	}
	if len(layers) == 0 || !p.haveOtherImages(ctx, t, m.Descriptor.Digest) {
		return
	}
	log := p.log.With(slog.String("upstream", t.Remote.Name), slog.String("repo", t.Repo.Name), slog.String("manifest", m.Descriptor.Digest.String()))
	ctx, cancel := context.WithTimeout(ctx, p.opts.DeltaDiscoveryTimeout)
	defer cancel()
	ctx = upstream.Optional(ctx)
	body, _, err := p.Referrers(ctx, t, m.Descriptor.Digest, "")
	if err != nil {
		log.LogAttrs(ctx, slog.LevelDebug, "no delta referrers", slog.Any("err", err))
		return
	}
	var idx ocispec.Index
	if err := json.Unmarshal(body, &idx); err != nil {
		return
	}
	var arts []ocispec.Descriptor
	for _, desc := range idx.Manifests {
		// Some registries report the config media type as the artifact
		// type; the annotation Manifest sets says it too.
		if desc.ArtifactType == layerdelta.ArtifactType || desc.Annotations[layerdelta.AnnotationTo] == m.Descriptor.Digest.String() {
			arts = append(arts, desc)
		}
	}
	// At most maxDeltaArtifacts are read: first those from an image stored
	// here (a release pipeline may publish deltas from many versions).
	held := map[digest.Digest]bool{}
	for _, desc := range arts {
		if from, err := digest.Parse(desc.Annotations[layerdelta.AnnotationFrom]); err == nil {
			if _, err := p.store.Stat(ctx, from); err == nil {
				held[desc.Digest] = true
			}
		}
	}
	slices.SortStableFunc(arts, func(a, b ocispec.Descriptor) int {
		switch {
		case held[a.Digest] && !held[b.Digest]:
			return -1
		case held[b.Digest] && !held[a.Digest]:
			return 1
		}
		return 0
	})
	found := 0
	for i, desc := range arts {
		if i == maxDeltaArtifacts {
			break
		}
		res, err := p.Manifest(ctx, t, desc.Digest.String())
		if err != nil {
			log.LogAttrs(ctx, slog.LevelWarn, "cannot fetch a delta artifact", slog.String("artifact", desc.Digest.String()), slog.Any("err", err))
			continue
		}
		a, err := layerdelta.ParseManifest(res.Body)
		if err != nil || a.Subject.Digest != m.Descriptor.Digest {
			log.LogAttrs(ctx, slog.LevelWarn, "ignoring a malformed delta artifact", slog.String("artifact", desc.Digest.String()), slog.Any("err", err))
			continue
		}
		for _, l := range a.Layers {
			if size, ok := layers[l.Target.Digest]; !ok || size != l.Target.Size {
				continue // a delta of a layer that is stored, or of no layer of this image
			}
			d, err := l.Descriptor()
			if err == nil {
				err = p.db.AddDelta(ctx, l.Target.Digest, meta.DeltaRecord{Repo: t.Repo, Descriptor: d})
			}
			if err != nil {
				log.LogAttrs(ctx, slog.LevelWarn, "cannot record a delta", slog.Any("err", err))
				continue
			}
			found++
		}
	}
	if found > 0 {
		log.LogAttrs(ctx, slog.LevelInfo, "found layer deltas", slog.Int("deltas", found))
	}
}

// haveOtherImages reports whether the store holds a manifest of t's
// repository, tagged or pulled by digest, other than d and the indexes
// that list d.
func (p *Proxy) haveOtherImages(ctx context.Context, t Target, d digest.Digest) bool {
	ms, err := p.db.RepoManifests(ctx, t.Repo)
	if err != nil {
		return false
	}
	for i, m := range ms {
		if i == maxOtherImagesRead {
			return true // many images: surely another one
		}
		if m == d {
			continue
		}
		body, err := p.readStored(ctx, m, -1)
		if err != nil {
			continue
		}
		// Neither d's own index nor a signature, an SBOM or a delta
		// artifact (not an image).
		if c := manifestContent(body); !slices.Contains(c.children, d) && !c.evidence {
			return true
		}
	}
	return false
}

// maxOtherImagesRead bounds the manifests haveOtherImages reads.
const maxOtherImagesRead = 64

// fillFromDelta tries to rebuild f's layer from a recorded delta whose bases
// are stored: it fetches the delta (a blob fill of its own, resumable and
// cached), applies it into a fresh ingest and, if the result has the
// layer's digest and size, makes that ingest the fill's, with every byte
// written. It reports whether it did; on any failure the fill goes on with
// a full fetch, and nothing of the attempt remains.
func (p *Proxy) fillFromDelta(ctx context.Context, f *fill, log *slog.Logger) bool {
	if !p.opts.Deltas || ctx.Value(noDeltasKey{}) != nil {
		return false
	}
	recs, err := p.db.Deltas(ctx, f.d)
	if err != nil {
		return false
	}
	// Asked at most once, and only if a record needs it.
	confirmed := sync.OnceValue(func() bool { return p.confirmed(ctx, f, log) })
	best, bestRec, reason := p.bestDelta(ctx, f, recs, confirmed, log)
	if best.Delta.Digest == "" && p.lookAgain(ctx, f) {
		// None usable (none recorded, or none whose bases are here):
		// deltas published since the manifest was last looked at may be.
		if recs, err = p.db.Deltas(ctx, f.d); err == nil {
			best, bestRec, reason = p.bestDelta(ctx, f, recs, confirmed, log)
		}
	}
	if best.Delta.Digest == "" {
		l, ok := p.negotiateDelta(ctx, f, log)
		if !ok {
			// Published deltas, none usable, and no upstream delta
			// either: one result per fill (a negotiated delta counts as
			// applied or failed below).
			if len(recs) > 0 {
				p.m.Deltas.Fills.WithLabelValues(reason).Inc()
			}
			return false
		}
		best, bestRec = l, meta.DeltaRecord{Repo: f.target.Repo}
	}
	log = log.With(slog.String("delta", best.Delta.Digest.String()))
	start := time.Now()
	// The attempt gets half the time the fill has left, so that a delta
	// fetch that keeps stalling on a bad link leaves the full fetch time
	// to run. The delta blob is fetched as it is, never itself rebuilt
	// from a delta: two deltas that name each other would wait for each
	// other.
	dctx, cancel := ctx, context.CancelFunc(func() {})
	if deadline, ok := ctx.Deadline(); ok {
		dctx, cancel = context.WithTimeout(ctx, time.Until(deadline)/2)
	}
	defer cancel()
	// The attempt's upstream failures do not count against the breaker:
	// the full fetch that follows a failed attempt must not be refused.
	f.setDeltaAttempt(true)
	ing, err := p.applyDelta(upstream.Optional(withoutDeltas(dctx)), Target{Remote: f.target.Remote, Repo: bestRec.Repo}, best)
	f.setDeltaAttempt(false)
	if err != nil {
		p.m.Deltas.Fills.WithLabelValues(metrics.DeltaFailed).Inc()
		log.LogAttrs(ctx, slog.LevelWarn, "cannot rebuild the layer from its delta; fetching it in full", slog.Any("err", err))
		// A rebuild writes the tars too: the disk filling up is a full
		// disk like any other (counted, logged, room asked for).
		p.noteWriteError(ctx, err)
		return false
	}
	// The fill's own ingest (a partial with no bytes) gives way.
	f.ing.Cancel()
	f.ing, f.part, f.etag, f.confirmed = ing, nil, "", true
	f.setSize(best.Target.Size)
	f.advance(best.Target.Size)
	p.m.Deltas.Fills.WithLabelValues(metrics.DeltaApplied).Inc()
	p.m.Deltas.FetchedBytes.Add(float64(best.Delta.Size))
	p.m.Deltas.FullBytes.Add(float64(best.Target.Size))
	log.LogAttrs(ctx, slog.LevelInfo, "layer rebuilt from a delta", slog.Int64("size", best.Target.Size),
		slog.Int64("delta_size", best.Delta.Size), slog.Duration("duration", time.Since(start)))
	return true
}

// applyDelta fetches delta l from t (through the cache) and rebuilds its
// target into a new ingest, which it returns verified and not committed.
func (p *Proxy) applyDelta(ctx context.Context, t Target, l layerdelta.Layer) (_ blobstore.Ingest, err error) {
	// A delta is fetched no larger than its descriptor says (the choice
	// among deltas was made on that size).
	size, err := p.EnsureBlob(context.WithValue(ctx, expectSizeKey{}, l.Delta.Size), t, l.Delta.Digest)
	if err != nil {
		return nil, fmt.Errorf("fetch delta: %w", err)
	}
	if size != l.Delta.Size {
		return nil, fmt.Errorf("delta %s: %d bytes, its descriptor says %d: %w", l.Delta.Digest, size, l.Delta.Size, errdef.ErrSizeMismatch)
	}
	start := time.Now()
	d, err := p.store.Open(ctx, l.Delta.Digest)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	files := &storeFiles{p: p}
	defer files.closeAll()
	ing, err := p.store.Ingest(ctx, l.Target.Digest)
	if err != nil {
		return nil, &localError{err}
	}
	defer func() {
		if err != nil {
			ing.Cancel()
		}
	}()
	open := func(b layerdelta.Blob) (layerdelta.Content, error) { return files.open(ctx, b.Digest) }
	if err := layerdelta.Apply(ctx, ing, l, d, open, layerdelta.ApplyOptions{TempDir: p.tempDir()}); err != nil {
		return nil, err
	}
	if err := ing.Verify(l.Target.Size); err != nil {
		return nil, err
	}
	p.m.Deltas.RebuildDuration.Observe(time.Since(start).Seconds())
	return ing, nil
}

// noDeltasKey marks the context of a fetch that must not use deltas (the
// fill of a delta blob, and the fills it starts).
type noDeltasKey struct{}

func withoutDeltas(ctx context.Context) context.Context {
	return context.WithValue(ctx, noDeltasKey{}, true)
}

// confirmed reports whether f's repository is known to hold f's blob: it
// was linked before, or the upstream says so now. A fill that does not
// start with its own upstream request for the blob (a delta published for
// another repository, a complete partial download left by a fill of
// another) asks this before its bytes reach anyone: see ensureLinked.
func (p *Proxy) confirmed(ctx context.Context, f *fill, log *slog.Logger) bool {
	err := p.confirm(ctx, f)
	if err != nil {
		log.LogAttrs(ctx, slog.LevelDebug, "the upstream does not confirm the repository holds the blob", slog.Any("err", err))
	}
	return err == nil
}

func (p *Proxy) confirm(ctx context.Context, f *fill) error {
	if ok, err := p.linked(ctx, f.target, f.d); err != nil || ok {
		return err
	}
	return p.upstreamHolds(ctx, f.target, f.d)
}

// confirmPartial checks, for a fill that found every byte of its blob in a
// partial download another fill left (of another repository, or of another
// upstream, or one that does not say: older partials), that its upstream
// sends bytes of it (upstreamSends): the upstream's word alone would let
// one that lies read what another upstream sent. A partial whose bytes the
// upstream sent for this very repository needs no such check (and gets
// none with the uplink down).
func (p *Proxy) confirmPartial(ctx context.Context, f *fill) error {
	if f.partRepo != "" && f.partRepo == f.target.Repo.String() {
		return nil // the upstream sent these bytes for this repository
	}
	if ok, err := p.linked(ctx, f.target, f.d); err != nil || ok {
		return err
	}
	return p.upstreamSends(ctx, f.target, f.d, f.keptBytes(), f.ing.OpenReader)
}

// deltaNegotiator is an upstream that can be asked for deltas;
// *upstream.Client implements it.
type deltaNegotiator interface {
	DeltaPeer() bool
	NegotiateDelta(ctx context.Context, repo string, d digest.Digest, bases []digest.Digest) (ocispec.Descriptor, bool, error)
}

var _ deltaNegotiator = (*upstream.Client)(nil)

// negotiateDelta asks an upstream registry-edge for a delta of f's layer
// against layers of the same repository that are stored here, and returns
// it if its bases are stored and it rebuilds f's blob.
func (p *Proxy) negotiateDelta(ctx context.Context, f *fill, log *slog.Logger) (layerdelta.Layer, bool) {
	n, ok := p.mayNegotiate(f)
	if !ok {
		return layerdelta.Layer{}, false
	}
	cands := p.baseCandidates(ctx, f.target, f.d)
	if len(cands) == 0 {
		return layerdelta.Layer{}, false
	}
	desc, ok, err := p.askForDelta(ctx, n, f, cands, log)
	if err != nil || !ok {
		if err != nil {
			log.LogAttrs(ctx, slog.LevelWarn, "delta negotiation failed; fetching the layer in full", slog.Any("err", err))
		}
		return layerdelta.Layer{}, false
	}
	l, err := layerdelta.ParseDescriptor(desc)
	if err == nil && l.Target.Digest != f.d {
		err = fmt.Errorf("delta for %s offered for %s: %w", l.Target.Digest, f.d, errdef.ErrInvalid)
	}
	if size, _ := p.layerHints.get(f.target.Repo, f.d); err == nil && l.Target.Size != size {
		// The manifest's size bounds what the rebuild may write.
		err = fmt.Errorf("delta for %s of %d bytes offered for a layer of %d: %w", f.d, l.Target.Size, size, errdef.ErrInvalid)
	}
	if err == nil {
		err = l.Usable(p.readableBase(ctx, f.target))
	}
	if err != nil {
		p.m.Deltas.Fills.WithLabelValues(metrics.DeltaFailed).Inc()
		log.LogAttrs(ctx, slog.LevelWarn, "upstream offered an unusable delta; fetching the layer in full", slog.Any("err", err))
		return layerdelta.Layer{}, false
	}
	return l, true
}

// maxDeltaPending bounds how long a fill waits for an upstream tier that
// answers it is still computing the delta (also at most half the time the
// fill has left): on a slow uplink a large layer takes far longer to
// fetch in full than its delta to compute.
const maxDeltaPending = 10 * time.Minute

// askForDelta negotiates a delta for f with n, asking again as long as the
// upstream answers it is still computing it (upstream.DeltaPending), within
// maxDeltaPending.
func (p *Proxy) askForDelta(ctx context.Context, n deltaNegotiator, f *fill, cands []digest.Digest, log *slog.Logger) (ocispec.Descriptor, bool, error) {
	budget := maxDeltaPending
	if deadline, ok := ctx.Deadline(); ok {
		budget = min(budget, time.Until(deadline)/2)
	}
	giveUp := time.Now().Add(budget)
	var pending *upstream.DeltaPending // the last "still computing"
	failed := 0                        // failed asks since it
	for asked := 1; ; asked++ {
		desc, ok, err := n.NegotiateDelta(upstream.Optional(ctx), f.target.Repo.Name, f.d, cands)
		if pend := (*upstream.DeltaPending)(nil); errors.As(err, &pend) {
			pending, failed = pend, 0
			p.m.UpstreamRequests.WithLabelValues(f.target.Remote.Name, "negotiate", "pending").Inc()
			if asked == 1 {
				log.LogAttrs(ctx, slog.LevelInfo, "upstream is computing the delta; waiting for it", slog.Duration("up_to", budget))
			}
		} else {
			p.countUpstream(f.target, "negotiate", err)
			// An upstream that said it computes the delta is asked again
			// after a failed ask or two (a 202 written late on a busy
			// upstream arrives after the header timeout).
			if err == nil || pending == nil || failed >= maxFailedPendingAsks {
				return desc, ok, err
			}
			failed++
		}
		if time.Now().Add(pending.RetryAfter).After(giveUp) {
			return ocispec.Descriptor{}, false, fmt.Errorf("upstream still computing the delta after %d requests: %w", asked, errdef.ErrUnavailable)
		}
		// The fill's context ends with the fill, and with the proxy.
		t := time.NewTimer(pending.RetryAfter)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ocispec.Descriptor{}, false, fmt.Errorf("waiting for the upstream's delta: %w", ctx.Err())
		}
	}
}

// maxFailedPendingAsks bounds the failed asks in a row askForDelta makes
// of an upstream that said it computes the delta.
const maxFailedPendingAsks = 2

// mayNegotiate returns f's upstream as a negotiator if it is a tier that
// may offer a delta for f's blob.
func (p *Proxy) mayNegotiate(f *fill) (deltaNegotiator, bool) {
	n, ok := f.target.Remote.Client.(deltaNegotiator)
	if !ok || !p.opts.NegotiateDeltas || !n.DeltaPeer() {
		return nil, false
	}
	// Only layers of images pulled through this mirror, big enough for a
	// delta to pay for the round trip; not configs, not delta blobs.
	if size, ok := p.layerHints.get(f.target.Repo, f.d); !ok || p.opts.DeltaMinimums.TooSmall(size) != "" {
		return nil, false
	}
	return n, true
}

// mayUseDelta reports whether fillFromDelta may find a delta for f: one
// is published, or the upstream may negotiate one.
func (p *Proxy) mayUseDelta(ctx context.Context, f *fill) bool {
	if !p.opts.Deltas || ctx.Value(noDeltasKey{}) != nil {
		return false
	}
	if recs, err := p.db.Deltas(ctx, f.d); err != nil || len(recs) > 0 {
		return true
	}
	if _, ok := p.mayNegotiate(f); ok {
		return true
	}
	return p.mayLookAgain(f)
}

// rediscoverEvery is how long after deltas were looked for for a manifest
// a fill of one of its layers may look again: deltas are published after
// their image, and a site may have fetched the manifest in between (a
// device checking the tag).
const rediscoverEvery = time.Minute

// mayLookAgain reports whether a fill of f's layer would look for deltas
// again (lookAgain).
func (p *Proxy) mayLookAgain(f *fill) bool {
	return p.layerHints.mayLookAgain(f.target.Repo, f.d, p.now(), rediscoverEvery)
}

// lookAgain looks for published deltas of f's layer again, when the
// manifest that named it was checked for deltas rediscoverEvery ago or
// more, asking the upstream for its referrers rather than taking the
// cached list. It reports whether it looked.
func (p *Proxy) lookAgain(ctx context.Context, f *fill) bool {
	md, ok := p.layerHints.lookAgain(f.target.Repo, f.d, p.now(), rediscoverEvery)
	if !ok {
		return false
	}
	body, err := p.readStored(ctx, md, -1)
	if err != nil {
		return false
	}
	m := upstream.Manifest{Descriptor: ocispec.Descriptor{Digest: md, Size: int64(len(body))}, Body: body}
	man, ok := p.noteLayers(f.target, m)
	if !ok {
		return false
	}
	p.discoverDeltas(context.WithValue(ctx, freshReferrersKey{}, true), f.target, m, man)
	return true
}

// bestDelta returns the smallest of recs (deltas recorded for f's layer)
// that rebuilds it from bases held here, or none, with the reason why none
// is usable.
func (p *Proxy) bestDelta(ctx context.Context, f *fill, recs []meta.DeltaRecord, confirmed func() bool, log *slog.Logger) (best layerdelta.Layer, bestRec meta.DeltaRecord, reason string) {
	reason = metrics.DeltaNoBase
	for _, rec := range recs {
		l, err := layerdelta.ParseDescriptor(rec.Descriptor)
		if err != nil || l.Target.Digest != f.d || rec.Repo.Registry != f.target.Repo.Registry {
			continue
		}
		if rec.Repo != f.target.Repo && !confirmed() {
			// Published for another repository of the registry: whether
			// this one may have the layer is the upstream's to say, and
			// the rebuilt layer would reach its clients without any
			// request of theirs going upstream.
			if reason == metrics.DeltaNoBase {
				reason = metrics.DeltaNotConfirmed
			}
			continue
		}
		// Its bases must be readable by the repository it was published
		// for: its author's (the layer's is confirmed above).
		err = l.Usable(p.readableBase(ctx, Target{Remote: f.target.Remote, Repo: rec.Repo}))
		if errors.Is(err, errdef.ErrUnsupported) {
			reason = metrics.DeltaUnreproducible
		}
		if size, ok := p.layerHints.get(f.target.Repo, f.d); ok && err == nil && l.Target.Size != size {
			err = fmt.Errorf("delta for a layer of %d bytes, the manifest says %d", l.Target.Size, size)
		}
		if r := p.opts.DeltaMinimums.NotWorth(l.Target.Size, l.Delta.Size); err == nil && r != "" {
			// Not enough smaller than the layer: the delta's request and
			// rebuild cost more than the full fetch.
			err = errors.New(r)
		}
		if err != nil {
			log.LogAttrs(ctx, slog.LevelDebug, "delta not usable", slog.String("delta", l.Delta.Digest.String()), slog.Any("err", err))
			continue
		}
		if best.Delta.Digest == "" || l.Delta.Size < best.Delta.Size {
			best, bestRec = l, rec
		}
	}
	return best, bestRec, reason
}

// holds returns a predicate: is blob b stored here, in its size?
func (p *Proxy) holds(ctx context.Context) func(layerdelta.Blob) bool {
	return func(b layerdelta.Blob) bool {
		info, err := p.store.Stat(ctx, b.Digest)
		return err == nil && info.Size == b.Size
	}
}

// readableBase returns a predicate: is blob b stored here, in its size, and
// may t's repository, the one a delta was published or negotiated for,
// read it (ensureLinked)? Whether a rebuild succeeds tells the delta's
// author whether a guess of its bases' bytes was right: a base held for
// another (possibly private) repository only, that t's upstream does not
// confirm t holds, is no base. Bases of the repository's own images are
// linked to it and cost no request; the upstream's failures here do not
// count against its breaker (a delta is optional).
func (p *Proxy) readableBase(ctx context.Context, t Target) func(layerdelta.Blob) bool {
	holds := p.holds(ctx)
	return func(b layerdelta.Blob) bool {
		return holds(b) && p.ensureLinked(upstream.Optional(ctx), t, b.Digest) == nil
	}
}

// baseCandidates returns layers of t's repository, other than d, that are
// stored here: those of the images its tags point at (children of indexes
// included), most recently fetched tag first, then those of its images
// pulled by digest only; at most MaxBaseCandidates.
func (p *Proxy) baseCandidates(ctx context.Context, t Target, d digest.Digest) []digest.Digest {
	tags, err := p.db.Tags(ctx, t.Repo)
	if err != nil {
		return nil
	}
	type tagged struct {
		d  digest.Digest
		at time.Time
	}
	var roots []tagged
	for _, tag := range tags {
		if e, err := p.db.Tag(ctx, t.Repo, tag); err == nil {
			roots = append(roots, tagged{e.Digest, e.FetchedAt})
		}
	}
	slices.SortStableFunc(roots, func(a, b tagged) int { return b.at.Compare(a.at) })
	seen := map[digest.Digest]bool{d: true}
	var out []digest.Digest
	var visit func(m digest.Digest, depth int)
	visit = func(m digest.Digest, depth int) {
		if seen[m] || depth > 1 || len(out) >= p.opts.MaxBaseCandidates {
			return
		}
		seen[m] = true
		body, err := p.readStored(ctx, m, -1)
		if err != nil || manifestContent(body).evidence {
			return // signatures, SBOMs and deltas are no bases
		}
		var man struct {
			Manifests []ocispec.Descriptor `json:"manifests"`
			Layers    []ocispec.Descriptor `json:"layers"`
		}
		if json.Unmarshal(body, &man) != nil {
			return
		}
		if slices.ContainsFunc(man.Layers, func(l ocispec.Descriptor) bool { return l.Digest == d }) {
			// The image being pulled: its other layers are other parts of
			// it, not an older version of this one (a region would compute
			// a delta between them, mostly for nothing, while the device
			// waits).
			return
		}
		for _, c := range man.Manifests {
			visit(c.Digest, depth+1)
		}
		// Top layers first: they are the ones an update changes.
		for i := len(man.Layers) - 1; i >= 0 && len(out) < p.opts.MaxBaseCandidates; i-- {
			l := man.Layers[i]
			if seen[l.Digest] {
				continue
			}
			seen[l.Digest] = true
			if p.holds(ctx)(layerdelta.Blob{Digest: l.Digest, Size: l.Size}) {
				out = append(out, l.Digest)
			}
		}
	}
	for _, r := range roots {
		visit(r.d, 0)
	}
	// Fleets that pin images by digest have no tags here.
	if ms, err := p.db.RepoManifests(ctx, t.Repo); err == nil {
		for _, m := range ms {
			visit(m, 0)
		}
	}
	return out
}

// maxNegotiatedBases is the number of offered layers an upper tier uses as
// bases of one delta: the encoder reads every base into memory.
const maxNegotiatedBases = 2

// ErrNoDelta says that no delta worth sending rebuilds a blob from the
// offered bases.
var ErrNoDelta = errors.New("no delta")

// DeltaFor returns a delta, stored here as a blob of t's repository, that
// rebuilds blob d of t from some of the offered blobs (which a lower tier
// holds). It fetches d if needed, uses offered blobs this mirror holds and
// t's repository may read (at most maxRankedBases of them, rankable; of
// those the two that hold most of d's files, chooseBases), reuses a delta
// computed before, and computes one otherwise (one computation per layer
// and bases at a time, at most DeltaWorkers at once). It returns an error
// wrapping ErrNoDelta when no usable delta is smaller than MaxDeltaRatio of
// the blob.
func (p *Proxy) DeltaFor(ctx context.Context, t Target, d digest.Digest, offered []digest.Digest) (l layerdelta.Layer, err error) {
	p.askedForDeltas.Store(true)
	if now := p.now(); now.Sub(time.Unix(p.askedNoted.Load(), 0)) > time.Hour {
		// Precomputation stays on across restarts while lower tiers keep
		// asking (noted at most hourly; a failure to record it only means
		// a restart turns it off until the next ask).
		p.askedNoted.Store(now.Unix())
		if err := p.db.NoteState(ctx, meta.StateDeltasAsked, now); err != nil {
			p.log.LogAttrs(ctx, slog.LevelWarn, "cannot record that lower tiers ask for deltas", slog.Any("err", err))
		}
	}
	defer func() {
		if err == nil {
			err = p.trustDelta(ctx, t, d, l.Delta.Digest)
		}
	}()
	size, err := p.EnsureBlob(ctx, t, d)
	if err != nil {
		return layerdelta.Layer{}, err
	}
	if r := p.opts.DeltaMinimums.TooSmall(size); r != "" {
		return layerdelta.Layer{}, fmt.Errorf("blob %s: %s: %w", d, r, ErrNoDelta)
	}
	var cands []layerdelta.Blob
	for _, o := range offered {
		if o == d {
			continue
		}
		info, err := p.store.Stat(ctx, o)
		if err != nil {
			continue
		}
		if ok, err := p.linked(ctx, t, o); err != nil || !ok {
			continue
		}
		cands = append(cands, layerdelta.Blob{Digest: o, Size: info.Size})
	}
	if len(cands) == 0 {
		p.fetchOfferedBase(ctx, t, layerdelta.Blob{Digest: d, Size: size}, offered)
		return layerdelta.Layer{}, fmt.Errorf("blob %s: none of the %d offered bases is held here: %w", d, len(offered), ErrNoDelta)
	}
	held := map[digest.Digest]bool{}
	for _, c := range cands {
		held[c.Digest] = true
	}
	// The smallest delta computed before against bases the requester
	// holds: for this repository, or computed here for another (the same
	// base layers under several applications' images), then this one's
	// too.
	if recs, err := p.db.Deltas(ctx, d); err == nil {
		var best layerdelta.Layer
		var bestRepo meta.Repo
		for _, rec := range recs {
			l, err := layerdelta.ParseDescriptor(rec.Descriptor)
			if err != nil || rec.Repo != t.Repo && !rec.Computed {
				continue
			}
			if l.Usable(func(b layerdelta.Blob) bool { return held[b.Digest] }) != nil || p.opts.DeltaMinimums.NotWorth(l.Target.Size, l.Delta.Size) != "" {
				continue
			}
			if best.Delta.Digest != "" && l.Delta.Size >= best.Delta.Size {
				continue
			}
			if _, err := p.store.Stat(ctx, l.Delta.Digest); err == nil {
				best, bestRepo = l, rec.Repo
			}
		}
		if best.Delta.Digest != "" {
			if bestRepo != t.Repo {
				if err := p.adoptDelta(ctx, t, d, best); err != nil {
					return layerdelta.Layer{}, err
				}
			}
			return best, nil
		}
	}
	// The candidates computeDelta chooses among (rankable): the first
	// offered (the lower tier's previous version, its top layers first)
	// and those closest in size.
	bases := rankable(cands, size)
	key := d.String()
	for _, b := range bases {
		key += "," + b.Digest.String()
	}
	if until, ok := p.noDelta.Load(key); ok && p.now().Before(until.(time.Time)) {
		return layerdelta.Layer{}, fmt.Errorf("blob %s: %w (cached)", d, ErrNoDelta)
	}
	ch := p.computing.DoChan(key, func() (any, error) {
		// Detached: the requester may give up, the result serves the
		// next; bounded by the fill timeout and the proxy's life, which
		// waits for it.
		if !p.startBackground() {
			return nil, fmt.Errorf("blob %s: the mirror is shutting down: %w", d, errdef.ErrUnavailable)
		}
		defer p.wg.Done()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.FillTimeout)
		defer cancel()
		stop := context.AfterFunc(p.closing, cancel)
		defer stop()
		l, err := p.computeDelta(cctx, t, layerdelta.Blob{Digest: d, Size: size}, bases)
		p.noteWriteError(cctx, err) // a full disk is noted whoever still waits
		if errors.Is(err, ErrNoDelta) && !errors.Is(err, errDeltaQueueFull) && !diskFull(err) {
			// Remembered here, not by a waiting requester: one that gave
			// up (or was answered 202) must not leave it forgotten, and
			// the same delta computed again at the next ask.
			p.rememberNoDelta(key)
		}
		return l, err
	})
	var r singleflight.Result
	select {
	case r = <-ch:
	case <-ctx.Done():
		return layerdelta.Layer{}, ctx.Err()
	}
	if diskFull(r.Err) {
		// The tars did not fit: the lower tier gets the layer in full at
		// once (not a 500 it would retry), room was asked for, and the
		// next negotiation tries again.
		return layerdelta.Layer{}, fmt.Errorf("blob %s: no room to compute a delta: %w", d, ErrNoDelta)
	}
	if r.Err != nil {
		return layerdelta.Layer{}, r.Err
	}
	l = r.Val.(layerdelta.Layer)
	if r.Shared {
		// One computation served every repository that asked for this
		// layer and bases at once, and stored the delta as a blob of the
		// first one's: each of the others gets it as its own, for its
		// lower tier fetches it through that repository.
		if err := p.adoptDelta(ctx, t, d, l); err != nil {
			return layerdelta.Layer{}, err
		}
	}
	return l, nil
}

// adoptDelta makes l, a delta of layer d computed here for another
// repository, one of t's: linked and recorded. Sound because it is made of
// blobs t holds: d and bases DeltaFor found linked to t.
func (p *Proxy) adoptDelta(ctx context.Context, t Target, d digest.Digest, l layerdelta.Layer) error {
	if ok, err := p.linked(ctx, t, l.Delta.Digest); err != nil || ok {
		return err
	}
	desc, err := l.Descriptor()
	if err != nil {
		return err
	}
	if err := p.link(ctx, t, l.Delta.Digest); err != nil {
		return err
	}
	return p.recorded(ctx, p.db.AddDelta(ctx, d, meta.DeltaRecord{Repo: t.Repo, Descriptor: desc, Computed: true}))
}

// maxQueuedDeltas bounds the computations waiting for a worker: past it a
// request is answered in full (its layer, its bases: a new computation
// each), rather than queue work nobody may wait for.
const maxQueuedDeltas = 16

var errDeltaQueueFull = fmt.Errorf("%d delta computations already wait for a worker", maxQueuedDeltas)

// noDeltaTTL is how long "no delta worth it" is remembered for a layer and
// bases.
const noDeltaTTL = time.Hour

// rememberNoDelta records that key (a layer and bases) gives no delta
// worth sending, for noDeltaTTL. Every 256 records, expired ones go: the
// keys come from lower tiers, the map must not grow for the life of the
// process.
func (p *Proxy) rememberNoDelta(key string) {
	now := p.now()
	p.noDelta.Store(key, now.Add(noDeltaTTL))
	if p.noDeltaStores.Add(1)%256 != 0 {
		return
	}
	p.noDelta.Range(func(k, until any) bool {
		if !now.Before(until.(time.Time)) {
			p.noDelta.CompareAndDelete(k, until)
		}
		return true
	})
}

// computeDelta makes the delta of target against the best
// maxNegotiatedBases of cands (chooseBases), all stored here, and stores
// it as a blob of t's repository.
func (p *Proxy) computeDelta(ctx context.Context, t Target, target layerdelta.Blob, cands []layerdelta.Blob) (layerdelta.Layer, error) {
	if p.deltasQueued.Add(1) > maxQueuedDeltas {
		p.deltasQueued.Add(-1)
		return layerdelta.Layer{}, fmt.Errorf("blob %s: %w: %w", target.Digest, errDeltaQueueFull, ErrNoDelta)
	}
	select {
	case p.deltaWorkers <- struct{}{}:
		p.deltasQueued.Add(-1)
		defer func() { <-p.deltaWorkers }()
	case <-ctx.Done():
		p.deltasQueued.Add(-1)
		return layerdelta.Layer{}, ctx.Err()
	}
	bases := p.chooseBases(ctx, target, cands)
	need := min(deltaMemory(bases), p.opts.DeltaMemoryBudget)
	if err := p.deltaMemory.Acquire(ctx, need); err != nil {
		return layerdelta.Layer{}, err
	}
	defer p.deltaMemory.Release(need)
	files := &storeFiles{p: p}
	defer files.closeAll()
	tc, err := files.open(ctx, target.Digest)
	if err != nil {
		return layerdelta.Layer{}, err
	}
	var bcs []layerdelta.Content
	for _, b := range bases {
		c, err := files.open(ctx, b.Digest)
		if err != nil {
			return layerdelta.Layer{}, err
		}
		bcs = append(bcs, c)
	}
	start := time.Now()
	res, err := layerdelta.Make(ctx, tc, bcs, layerdelta.Options{TempDir: p.tempDir(), MaxRatio: p.opts.MaxDeltaRatio, Min: *p.opts.DeltaMinimums})
	if err != nil {
		return layerdelta.Layer{}, err
	}
	defer res.Close()
	log := p.log.With(slog.String("repo", t.Repo.Name), slog.String("digest", target.Digest.String()))
	if res.TarSize > 0 {
		// The uncompressed size: what the codec worked through.
		log = log.With(slog.Int64("tar_size", res.TarSize))
	}
	if strings.HasPrefix(res.Reason, "recipe ") {
		p.m.Deltas.Recipes.WithLabelValues("found").Inc()
	} else {
		p.m.Deltas.Recipes.WithLabelValues("none").Inc()
	}
	if !res.OK() {
		log.LogAttrs(ctx, slog.LevelInfo, "no delta worth sending", slog.String("reason", res.Reason),
			slog.Int64("size", target.Size), slog.Duration("duration", time.Since(start)))
		return layerdelta.Layer{}, fmt.Errorf("blob %s: %s: %w", target.Digest, res.Reason, ErrNoDelta)
	}
	release := p.evictions.hold(res.Layer.Delta.Digest)
	defer release()
	if err := p.store.Put(ctx, res.Layer.Delta, res.File); err != nil {
		return layerdelta.Layer{}, err
	}
	if err := p.db.Link(ctx, t.Repo, res.Layer.Delta.Digest); err != nil {
		return layerdelta.Layer{}, err
	}
	desc, err := res.Layer.Descriptor()
	if err != nil {
		return layerdelta.Layer{}, err
	}
	if err := p.db.AddDelta(ctx, target.Digest, meta.DeltaRecord{Repo: t.Repo, Descriptor: desc, Computed: true}); err != nil {
		return layerdelta.Layer{}, err
	}
	log.LogAttrs(ctx, slog.LevelInfo, "computed a delta for a lower tier", slog.Int64("size", target.Size),
		slog.Int64("delta_size", res.Layer.Delta.Size), slog.String("kind", string(res.Layer.Kind)), slog.Duration("duration", time.Since(start)))
	return res.Layer, nil
}

// maxRankedBases bounds the offered layers chooseBases compares (each is
// read once to list its files).
const maxRankedBases = 8

// rankable returns the offered layers held here (cands, in the order
// offered) that chooseBases compares for a target of size bytes: the first
// half of maxRankedBases as offered (a lower tier lists its newest image's
// top layers first) and, of the rest, those closest in size: the previous
// version of a lower layer of a many-layer image comes late in that list.
func rankable(cands []layerdelta.Blob, size int64) []layerdelta.Blob {
	if len(cands) <= maxRankedBases {
		return cands
	}
	out := slices.Clone(cands[:maxRankedBases/2])
	rest := slices.Clone(cands[maxRankedBases/2:])
	dist := func(b layerdelta.Blob) int64 { return max(b.Size-size, size-b.Size) }
	slices.SortStableFunc(rest, func(a, b layerdelta.Blob) int { return cmp.Compare(dist(a), dist(b)) })
	return append(out, rest[:maxRankedBases-len(out)]...)
}

// chooseBases returns the maxNegotiatedBases of cands (offered layers held
// here, in the order offered) that hold the most bytes of target's files
// at the same paths: a delta finds a file's old bytes in the layer that had
// its path, and the layer closest in size may be another part of the image
// (its base layer) rather than the previous version of this one. Layers
// that share no path (or are no tars: blob deltas) follow, closest in
// size first, as before files were compared. Listing a layer's files reads
// it once, far cheaper than encoding against the wrong one.
func (p *Proxy) chooseBases(ctx context.Context, target layerdelta.Blob, cands []layerdelta.Blob) []layerdelta.Blob {
	if len(cands) <= maxNegotiatedBases {
		return cands
	}
	files := &storeFiles{p: p}
	defer files.closeAll()
	list := func(b layerdelta.Blob) map[string]int64 {
		c, err := files.open(ctx, b.Digest)
		if err != nil {
			return nil
		}
		f, _ := layerdelta.Files(ctx, c, 0)
		return f
	}
	type ranked struct {
		b       layerdelta.Blob
		overlap int64 // bytes of target's files at paths b has too
		dist    int64 // size difference
	}
	want := list(target)
	var rs []ranked
	for _, c := range cands {
		r := ranked{b: c, dist: max(c.Size-target.Size, target.Size-c.Size)}
		if len(want) > 0 {
			for path := range list(c) {
				r.overlap += want[path]
			}
		}
		rs = append(rs, r)
	}
	slices.SortStableFunc(rs, func(a, b ranked) int {
		if c := cmp.Compare(b.overlap, a.overlap); c != 0 || a.overlap > 0 {
			return c
		}
		return cmp.Compare(a.dist, b.dist)
	})
	var out []layerdelta.Blob
	for _, r := range rs[:maxNegotiatedBases] {
		out = append(out, r.b)
	}
	return out
}

// deltaMemory estimates the peak memory of computing a delta against
// bases: the encoder's tables and buffers (about 200 MiB at the best
// level with two block workers), plus the bases' uncompressed content,
// which the encoder maps, taken as 3 times their compressed size
// (measured on the benchmark corpus: 1.8-2.6 times).
func deltaMemory(bases []layerdelta.Blob) int64 {
	n := int64(deltaEncoderMemory)
	for _, b := range bases {
		n += 3 * b.Size
	}
	return n
}

const deltaEncoderMemory = 256 << 20

func (p *Proxy) tempDir() string {
	if td, ok := p.store.(tempDirer); ok {
		return td.TempDir()
	}
	return os.TempDir()
}

// precomputeDeltas starts (once a lower tier has asked this mirror for a
// delta), in the background, the deltas of the layers of
// a newly fetched image manifest against the stored layers of the
// repository's other images (its previous versions), so that lower tiers
// asking for them rarely wait. Each goes through DeltaFor, which fetches
// the layer, and runs at most DeltaWorkers at a time.
func (p *Proxy) precomputeDeltas(ctx context.Context, t Target, m upstream.Manifest) {
	// Only a mirror that lower tiers ask for deltas: a site must not fetch
	// and encode layers nobody will ask for.
	if !p.opts.PrecomputeDeltas || !p.askedForDeltas.Load() {
		return
	}
	var man ocispec.Manifest
	if json.Unmarshal(m.Body, &man) != nil || man.ArtifactType != "" || man.Config.MediaType == ocispec.MediaTypeEmptyJSON || len(man.Layers) == 0 ||
		manifestContent(m.Body).evidence { // a cosign signature has an image's config type
		return
	}
	bases := p.baseCandidates(ctx, t, m.Descriptor.Digest)
	if len(bases) == 0 {
		return
	}
	held := map[digest.Digest]bool{}
	for _, b := range bases {
		held[b] = true
	}
	var todo []digest.Digest
	for _, l := range man.Layers {
		if !held[l.Digest] {
			todo = append(todo, l.Digest)
		}
	}
	if len(todo) == 0 || !p.startBackground() {
		return
	}
	go func() {
		defer p.wg.Done()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.FillTimeout)
		defer cancel()
		stop := context.AfterFunc(p.closing, cancel)
		defer stop()
		for _, d := range todo {
			if _, err := p.DeltaFor(ctx, t, d, bases); err != nil && !errors.Is(err, ErrNoDelta) {
				p.log.LogAttrs(ctx, slog.LevelWarn, "cannot precompute a delta", slog.String("repo", t.Repo.Name),
					slog.String("digest", d.String()), slog.Any("err", err))
			}
		}
	}()
}

// maxOfferedLookups bounds the upstream HEADs that look for the offered
// base closest in size to a layer (fetchOfferedBase).
const maxOfferedLookups = 8

// fetchOfferedBase is for a tier that precomputes and was asked for a delta
// of target against bases it holds none of (it is new, or evicted the
// versions a lagging site still runs): it answers in full now, and in the
// background fetches from its upstream the offered base closest in size to
// target (the bases are layers of the same repository) and computes the
// delta, so that the next site asking for it gets it. One at a time per
// layer.
func (p *Proxy) fetchOfferedBase(ctx context.Context, t Target, target layerdelta.Blob, offered []digest.Digest) {
	if !p.opts.PrecomputeDeltas || len(offered) == 0 {
		return
	}
	if _, busy := p.fetchingBases.LoadOrStore(target.Digest, true); busy {
		return
	}
	if !p.startBackground() {
		p.fetchingBases.Delete(target.Digest)
		return
	}
	log := p.log.With(slog.String("repo", t.Repo.Name), slog.String("digest", target.Digest.String()))
	log.LogAttrs(ctx, slog.LevelInfo, "no delta worth sending: none of the offered bases is held here; fetching one for the next request",
		slog.Int("offered", len(offered)))
	go func() {
		defer p.wg.Done()
		defer p.fetchingBases.Delete(target.Digest)
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.FillTimeout)
		defer cancel()
		stop := context.AfterFunc(p.closing, cancel)
		defer stop()
		var best digest.Digest
		var bestDist int64
		for _, o := range offered[:min(len(offered), maxOfferedLookups)] {
			size, err := t.Remote.Client.StatBlob(upstream.Optional(ctx), t.Repo.Name, o)
			p.countUpstream(t, "stat", err)
			if err != nil || o == target.Digest {
				continue
			}
			if dist := max(size-target.Size, target.Size-size); best == "" || dist < bestDist {
				best, bestDist = o, dist
			}
		}
		if best == "" {
			log.LogAttrs(ctx, slog.LevelInfo, "the upstream holds none of the offered bases")
			return
		}
		if _, err := p.EnsureBlob(ctx, t, best); err != nil {
			log.LogAttrs(ctx, slog.LevelWarn, "cannot fetch an offered base", slog.String("base", best.String()), slog.Any("err", err))
			return
		}
		if _, err := p.DeltaFor(ctx, t, target.Digest, offered); err != nil && !errors.Is(err, ErrNoDelta) {
			log.LogAttrs(ctx, slog.LevelWarn, "cannot precompute a delta", slog.Any("err", err))
		}
	}()
}

// noteLayers records the layers of m, if it is an image manifest (not an
// index, not an artifact such as a delta artifact), in layerHints, and
// returns it parsed.
func (p *Proxy) noteLayers(t Target, m upstream.Manifest) (ocispec.Manifest, bool) {
	var man ocispec.Manifest
	if json.Unmarshal(m.Body, &man) != nil || man.ArtifactType != "" || man.Config.MediaType == ocispec.MediaTypeEmptyJSON || len(man.Layers) == 0 {
		return man, false
	}
	for _, l := range man.Layers {
		p.layerHints.add(t.Repo, l.Digest, l.Size, m.Descriptor.Digest)
	}
	return man, true
}

// layerHints remembers the layers (and their sizes) of image manifests
// fetched recently, by repository, so that a fill knows its blob is a
// layer (deltas are for layers), how large it may be when the upstream does
// not say, and which manifest named it; and when deltas were last looked
// for for each manifest. A manifest speaks for its own repository only:
// another one's could give a layer any size. It is bounded by
// maxLayerHints and forgets everything when full.
type layerHints struct {
	mu     sync.Mutex
	m      map[hintKey]layerHint
	looked map[digest.Digest]time.Time // manifest -> last discovery
	seen   map[hintKey]bool            // stored manifests (by repository) whose layers are in m
}

type hintKey struct {
	repo meta.Repo
	d    digest.Digest
}

type layerHint struct {
	size     int64
	manifest digest.Digest
}

const maxLayerHints = 1 << 14

func (h *layerHints) add(r meta.Repo, d digest.Digest, size int64, manifest digest.Digest) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil || len(h.m) >= maxLayerHints {
		h.m = map[hintKey]layerHint{}
		h.seen = nil // their layers are forgotten too
	}
	h.m[hintKey{r, d}] = layerHint{size, manifest}
}

// firstSight reports whether stored manifest m of r is served for the
// first time since its layers were last noted, and marks it seen.
func (h *layerHints) firstSight(r meta.Repo, m digest.Digest) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := hintKey{r, m}
	if h.seen[k] {
		return false
	}
	if h.seen == nil || len(h.seen) >= maxLayerHints {
		h.seen = map[hintKey]bool{}
	}
	h.seen[k] = true
	return true
}

func (h *layerHints) get(r meta.Repo, d digest.Digest) (int64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	l, ok := h.m[hintKey{r, d}]
	return l.size, ok
}

// lookAgain returns the manifest that named layer d of r, if deltas were
// last looked for for it before now-every (or never), and records now as
// its last discovery.
func (h *layerHints) lookAgain(r meta.Repo, d digest.Digest, now time.Time, every time.Duration) (digest.Digest, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.due(r, d, now, every)
	if ok {
		h.lookedAt(m, now)
	}
	return m, ok
}

// mayLookAgain reports whether lookAgain would return true.
func (h *layerHints) mayLookAgain(r meta.Repo, d digest.Digest, now time.Time, every time.Duration) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.due(r, d, now, every)
	return ok
}

// due returns the manifest that named layer d of r, if deltas were last
// looked for for it before now-every (or never). h.mu is held.
func (h *layerHints) due(r meta.Repo, d digest.Digest, now time.Time, every time.Duration) (digest.Digest, bool) {
	l, ok := h.m[hintKey{r, d}]
	if !ok || now.Sub(h.looked[l.manifest]) < every {
		return "", false
	}
	return l.manifest, true
}

// lookedAt records a discovery of deltas for manifest m.
func (h *layerHints) lookedAt(m digest.Digest, now time.Time) {
	if h.looked == nil || len(h.looked) >= maxLayerHints {
		h.looked = map[digest.Digest]time.Time{}
	}
	h.looked[m] = now
}

func (h *layerHints) discovered(m digest.Digest, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lookedAt(m, now)
}

// storeFiles opens stored blobs as layerdelta.Content (random access, size
// as stored) and closes them all at the end.
type storeFiles struct {
	p     *Proxy
	files []io.Closer
}

// localCopier is a store whose blobs only stream (objects in a bucket) but
// that can copy one, verified, to a local file with random access, which
// the codec needs for its bases.
type localCopier interface {
	OpenLocal(ctx context.Context, d digest.Digest) (blobstore.LocalFile, error)
}

func (s *storeFiles) open(ctx context.Context, d digest.Digest) (layerdelta.Content, error) {
	var rc io.ReadSeekCloser
	var err error
	if lc, ok := s.p.store.(localCopier); ok {
		rc, err = lc.OpenLocal(ctx, d)
	} else {
		rc, err = s.p.store.Open(ctx, d)
	}
	if err != nil {
		return layerdelta.Content{}, err
	}
	s.files = append(s.files, rc)
	ra, ok := rc.(io.ReaderAt)
	if !ok {
		return layerdelta.Content{}, fmt.Errorf("blob %s: store gives no random access: %w", d, errdef.ErrUnsupported)
	}
	size, err := rc.Seek(0, io.SeekEnd)
	if err != nil {
		return layerdelta.Content{}, err
	}
	return layerdelta.Content{Blob: layerdelta.Blob{Digest: d, Size: size}, R: ra}, nil
}

func (s *storeFiles) closeAll() {
	for _, f := range s.files {
		f.Close()
	}
}
