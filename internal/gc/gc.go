// Package gc keeps the content store within its budget. It evicts whole
// image closures, least recently used first: a top-level manifest (an image
// or an index), its child manifests, their configs and layers, and the
// signatures, attestations and other referrers attached to any of them.
// Eviction is reference-aware: a blob shared with an image that stays is
// never deleted, pinned content (pre-staged images) is never evicted, and
// metadata is forgotten before files are deleted, so a crash in between
// leaves only unreferenced files, which the next run removes.
package gc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/ociapi"
)

// maxManifestRead bounds what is read of a stored manifest to find its
// references (the proxy accepts at most 64 MiB).
const maxManifestRead = 64 << 20

// Store is the content the collector inspects and deletes.
type Store interface {
	blobstore.Reader
	blobstore.Walker
	Delete(ctx context.Context, d digest.Digest) error
}

// DB is the metadata the collector reads and forgets; *meta.DB implements
// it.
type DB interface {
	ManifestDigests(ctx context.Context) (map[digest.Digest]bool, error)
	AllTags(ctx context.Context) ([]meta.TagRecord, error)
	AllReferrers(ctx context.Context) ([]meta.ReferrersRecord, error)
	AccessTimes(ctx context.Context) (map[digest.Digest]time.Time, error)
	AllPinned(ctx context.Context) (map[digest.Digest]bool, error)
	Forget(ctx context.Context, ds []digest.Digest) error
}

var _ DB = (*meta.DB)(nil)

// Options sets the budget.
type Options struct {
	// MaxSize is the byte budget of the store; 0 means none. Above it,
	// closures are evicted until the store is at LowWatermark × MaxSize.
	MaxSize int64
	// LowWatermark is the fraction of MaxSize eviction brings the store
	// down to (default 0.9).
	LowWatermark float64
	// MaxAge evicts closures not served for longer; 0 means no age limit.
	MaxAge time.Duration
	// KeepDeltaBases evicts the most recently served image of each
	// repository only after every other image: its layers are the bases
	// of the deltas that will bring the repository's next version (issue
	// #5). The budget and the age limit still apply to it.
	KeepDeltaBases bool
	// MinIdle spares units any part of which (a manifest or a blob) was
	// served (or stored) less than this long ago, whatever the budget: a
	// device may be pulling them, and replicas sharing a bucket learn of
	// each other's accesses late. 0: none.
	MinIdle time.Duration
	// PinnedTags, if set, returns the tags (<registry>/<repo>:<tag>)
	// whose current image is pinned whatever digest it has: pre-staged
	// tags, which may have moved since their image was fetched and pinned
	// (the next prefetch run pins the new one).
	PinnedTags func() []string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Unit is one image closure, or one piece of content no manifest refers
// to.
type Unit struct {
	Root       digest.Digest   `json:"root"`
	Tags       []string        `json:"tags,omitempty"`
	Manifests  []digest.Digest `json:"manifests,omitempty"`
	Blobs      []digest.Digest `json:"blobs,omitempty"`
	LastAccess time.Time       `json:"lastAccess"`
	// LastUsed is when any part of it, a blob included, was last served
	// (or stored): what Options.MinIdle looks at. A pull reads the
	// manifests first and the layers after, for minutes maybe.
	LastUsed time.Time `json:"lastUsed"`
	Pinned   bool      `json:"pinned,omitempty"`
	// DeltaBase marks the most recently served image of a repository,
	// evicted last (Options.KeepDeltaBases).
	DeltaBase bool `json:"deltaBase,omitempty"`
}

// Victim is a unit the plan evicts.
type Victim struct {
	Unit
	// Reason is "over budget" or "not served for <age>".
	Reason string `json:"reason"`
	// Freed is the bytes its eviction frees: content no remaining unit
	// refers to.
	Freed int64 `json:"freed"`
}

// Plan is what a collection would do.
type Plan struct {
	// Used is the size of the store before; Budget is Options.MaxSize.
	Used   int64 `json:"used"`
	Budget int64 `json:"budget"`
	// Victims are evicted in this order; Delete is every digest that goes.
	Victims []Victim        `json:"victims"`
	Delete  []digest.Digest `json:"delete"`
	Freed   int64           `json:"freed"`
	// Units counts all closures; PinnedUnits those pinned (never evicted).
	Units       int `json:"units"`
	PinnedUnits int `json:"pinnedUnits"`
	// BaseUnits counts the images that are delta bases (evicted last).
	BaseUnits int `json:"baseUnits,omitempty"`
	// RecentUnits counts the unpinned closures spared because some of
	// their content was served (or stored) within Options.MinIdle.
	RecentUnits int `json:"recentUnits,omitempty"`
	// OverBudget is set when even evicting everything neither pinned nor
	// recent leaves the store above its budget.
	OverBudget bool `json:"overBudget,omitempty"`

	// manifests are the manifests recorded when the plan was made.
	manifests map[digest.Digest]bool
	// forget is content never stored (or no longer) that only the
	// manifests the plan deletes name: layers a site's devices already had
	// or never pulled. Their records (the deltas found to rebuild them,
	// links) go with those manifests; nothing else would ever forget them.
	forget []digest.Digest
	// sizes and victimOf are the size of each digest of Delete and the
	// index in Victims of the victim whose eviction frees it.
	sizes    map[digest.Digest]int64
	victimOf map[digest.Digest]int
}

// keep takes content ds, which Apply kept (pinned or pulled since the plan
// was made), out of the plan, so that the plan says what was done: the
// bytes freed, the victims evicted (one whose root stayed was not) and
// whether the store is still over its budget. A plan not made by MakePlan
// is left as it is.
func (p *Plan) keep(ds map[digest.Digest]bool) {
	if len(ds) == 0 || p.sizes == nil {
		return
	}
	spared := map[int]bool{}
	p.Delete = slices.DeleteFunc(p.Delete, func(d digest.Digest) bool {
		if !ds[d] {
			return false
		}
		i := p.victimOf[d]
		p.Victims[i].Freed -= p.sizes[d]
		p.Freed -= p.sizes[d]
		if p.Victims[i].Root == d {
			spared[i] = true
		}
		return true
	})
	var victims []Victim
	for i, v := range p.Victims {
		if !spared[i] {
			victims = append(victims, v)
		}
	}
	p.Victims = victims
	p.victimOf = nil // indices into the old Victims
	p.sizes = nil
	p.OverBudget = p.Budget > 0 && p.Used-p.Freed > p.Budget
}

// content is what the collector knows of one stored digest.
type content struct {
	size    int64
	modTime time.Time
	refs    int // units whose closure holds it
}

// refs is what a manifest points at.
type refs struct {
	children []digest.Digest // manifests of an index
	blobs    []digest.Digest // config, layers, artifact blobs
	subject  digest.Digest
}

// MakePlan inspects the store and metadata and decides what to evict.
func MakePlan(ctx context.Context, store Store, db DB, opts Options) (*Plan, error) {
	return makePlan(ctx, store, db, opts, nil)
}

// refCache keeps what stored manifests point at between the plans of one
// Maintainer: a manifest never changes, and with storage.maxAge set a plan
// is made every minute, which read and decoded every stored manifest each
// time (20,000 images: seconds of CPU and hundreds of MiB of garbage a
// minute). It holds the manifests of the last plan only. It is used under
// Maintainer.mu.
type refCache struct {
	m map[digest.Digest]refs
}

func makePlan(ctx context.Context, store Store, db DB, opts Options, cache *refCache) (*Plan, error) {
	if opts.LowWatermark <= 0 || opts.LowWatermark > 1 {
		opts.LowWatermark = 0.9
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	var pinnedTags map[string]bool
	if opts.PinnedTags != nil {
		pinnedTags = map[string]bool{}
		for _, t := range opts.PinnedTags() {
			pinnedTags[t] = true
		}
	}
	stored := map[digest.Digest]*content{}
	var used int64
	if err := store.Walk(ctx, func(i blobstore.Info) error {
		stored[i.Digest] = &content{size: i.Size, modTime: i.ModTime}
		used += i.Size
		return nil
	}); err != nil {
		return nil, fmt.Errorf("gc: walk the store: %w", err)
	}
	units, records, manifests, err := buildUnits(ctx, store, db, stored, cache)
	if err != nil {
		return nil, err
	}
	plan := &Plan{Used: used, Budget: opts.MaxSize, Units: len(units), manifests: records,
		sizes: map[digest.Digest]int64{}, victimOf: map[digest.Digest]int{}}
	if opts.KeepDeltaBases {
		markDeltaBases(units)
	}
	for _, u := range units {
		for _, t := range u.Tags {
			if pinnedTags[t] {
				u.Pinned = true // the image a pre-staged tag names now
			}
		}
		if u.Pinned {
			plan.PinnedUnits++
		}
		if u.DeltaBase {
			plan.BaseUnits++
		}
	}

	// Least recently used first; ties by root digest, for stable output.
	// Delta bases go after every other unit.
	sort.Slice(units, func(i, j int) bool {
		if units[i].DeltaBase != units[j].DeltaBase {
			return !units[i].DeltaBase
		}
		if !units[i].LastAccess.Equal(units[j].LastAccess) {
			return units[i].LastAccess.Before(units[j].LastAccess)
		}
		return units[i].Root < units[j].Root
	})
	target := int64(-1)
	if opts.MaxSize > 0 && used > opts.MaxSize {
		target = int64(float64(opts.MaxSize) * opts.LowWatermark)
	}
	now := opts.Now()
	deleted := map[digest.Digest]bool{}
	for _, u := range units {
		if u.Pinned {
			continue
		}
		if opts.MinIdle > 0 && now.Sub(u.LastUsed) < opts.MinIdle {
			plan.RecentUnits++
			continue
		}
		reason := ""
		switch {
		case opts.MaxAge > 0 && now.Sub(u.LastAccess) > opts.MaxAge:
			reason = fmt.Sprintf("not served for %s", now.Sub(u.LastAccess).Round(time.Second))
		case target >= 0 && used-plan.Freed > target:
			reason = "over budget"
		default:
			continue
		}
		v := Victim{Unit: *u, Reason: reason}
		for _, d := range slices.Concat(u.Manifests, u.Blobs) {
			c := stored[d]
			if c == nil || deleted[d] {
				continue
			}
			c.refs--
			if c.refs <= 0 {
				deleted[d] = true
				v.Freed += c.size
				plan.Delete = append(plan.Delete, d)
				plan.sizes[d], plan.victimOf[d] = c.size, len(plan.Victims)
			}
		}
		plan.Freed += v.Freed
		plan.Victims = append(plan.Victims, v)
	}
	plan.OverBudget = opts.MaxSize > 0 && used-plan.Freed > opts.MaxSize
	plan.forget = unstoredOnlyIn(plan.Delete, manifests, stored)
	return plan, nil
}

// unstoredOnlyIn returns the content that the manifests among deleted
// name, that is not stored, and that no other stored manifest names.
func unstoredOnlyIn(deleted []digest.Digest, manifests map[digest.Digest]refs, stored map[digest.Digest]*content) []digest.Digest {
	gone := map[digest.Digest]bool{}
	for _, d := range deleted {
		if _, ok := manifests[d]; ok {
			gone[d] = true
		}
	}
	if len(gone) == 0 {
		return nil
	}
	named := map[digest.Digest]bool{} // by a manifest that stays
	for m, r := range manifests {
		if !gone[m] {
			for _, b := range r.blobs {
				named[b] = true
			}
		}
	}
	var out []digest.Digest
	for _, m := range deleted {
		for _, b := range manifests[m].blobs {
			if stored[b] == nil && !named[b] {
				named[b] = true // once
				out = append(out, b)
			}
		}
	}
	return out
}

// Evictor is the serving side of an eviction; *proxy.Proxy implements it.
type Evictor interface {
	// Evict runs remove, which forgets and deletes content ds, while no
	// request records any of ds as stored: a manifest fetched again while
	// it is evicted finds its file still there, and recording it then
	// would leave metadata pointing at a file deleted a moment later.
	Evict(ds []digest.Digest, remove func() error) error
	// Forget drops evicted content d from memory caches.
	Forget(d digest.Digest)
	// UsedSinceFlush returns the content served since access times were
	// last flushed (the plan flushes them first), and the blobs being
	// sent now: an image pulled again from the store between the plan
	// and its deletion stays.
	UsedSinceFlush() map[digest.Digest]bool
}

// evictBatch is how many digests one Evict covers: requests for them wait
// for one batch's metadata transaction and deletions, not for the whole
// plan.
const evictBatch = 64

// Apply carries out plan, batch after batch: it forgets the metadata of the
// content to delete, then deletes the files, telling ev (nil: nothing is
// served from the store meanwhile); last, it forgets the records of content
// never stored that only the deleted manifests named. Content already gone
// is not an error. What it keeps (pinned or pulled since the plan was made)
// it takes out of plan, which then says what was done.
func Apply(ctx context.Context, store Store, db DB, plan *Plan, ev Evictor) error {
	forgotten := map[digest.Digest]bool{} // by earlier batches
	kept := map[digest.Digest]bool{}
	defer func() { plan.keep(kept) }()
	// forget forgets the metadata of batch but for what must stay now
	// (the plan was made a while ago: what was pinned or pulled since
	// then stays), and returns what it forgot.
	forget := func(batch []digest.Digest, kept map[digest.Digest]bool) ([]digest.Digest, error) {
		var used map[digest.Digest]bool
		if ev != nil {
			used = ev.UsedSinceFlush()
		}
		keep, err := keptSince(ctx, store, db, plan, forgotten, used)
		if err != nil {
			return nil, err
		}
		ds := slices.DeleteFunc(slices.Clone(batch), func(d digest.Digest) bool {
			if keep[d] && kept != nil {
				kept[d] = true
			}
			return keep[d]
		})
		if err := db.Forget(ctx, ds); err != nil {
			return nil, fmt.Errorf("gc: forget metadata: %w", err)
		}
		return ds, nil
	}
	err := inBatches(slices.Clone(plan.Delete), ev, func(batch []digest.Digest) error {
		ds, err := forget(batch, kept)
		if err != nil {
			return err
		}
		for _, d := range ds {
			forgotten[d] = true
			err := store.Delete(ctx, d)
			if ev != nil {
				// After the file: a read that started before the
				// deletion must not put the content back in memory.
				ev.Forget(d)
			}
			if err != nil && !isNotFound(err) {
				return fmt.Errorf("gc: delete %s: %w", d, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Then the records of what was never stored and only the deleted
	// manifests named, unless a manifest recorded since names it.
	return inBatches(plan.forget, ev, func(batch []digest.Digest) error {
		ds, err := forget(batch, nil)
		if err != nil {
			return err
		}
		for _, d := range ds {
			if ev != nil {
				ev.Forget(d)
			}
		}
		return nil
	})
}

// inBatches runs remove on ds, evictBatch digests at a time, each batch
// while ev (if set) holds requests for its digests.
func inBatches(ds []digest.Digest, ev Evictor, remove func(batch []digest.Digest) error) error {
	for batch := range slices.Chunk(ds, evictBatch) {
		run := func() error { return remove(batch) }
		var err error
		if ev != nil {
			err = ev.Evict(batch, run)
		} else {
			err = run()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// keptSince returns what must stay of plan now: content pinned, content
// used since the plan was made (used), and the content of manifests
// recorded or served since the plan was made, or recorded again since an
// earlier batch forgot them (an image pulled or pre-staged meanwhile may
// share layers with a victim).
func keptSince(ctx context.Context, store Store, db DB, plan *Plan, forgotten, used map[digest.Digest]bool) (map[digest.Digest]bool, error) {
	keep, err := db.AllPinned(ctx)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	if plan.manifests == nil {
		// A plan made elsewhere: pins only, and what was used since.
		for d := range used {
			keep[d] = true
		}
		return keep, nil
	}
	records, err := db.ManifestDigests(ctx)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	var walk func(d digest.Digest)
	walk = func(d digest.Digest) {
		if keep[d] {
			return
		}
		keep[d] = true
		r, err := readRefs(ctx, store, d)
		if err != nil {
			return
		}
		for _, c := range r.children {
			walk(c)
		}
		for _, b := range r.blobs {
			keep[b] = true
		}
	}
	for d := range records {
		// New since the plan, recorded again since an earlier batch
		// forgot it, or served since the plan (a device pulled it again).
		if !plan.manifests[d] || forgotten[d] || used[d] {
			walk(d)
		}
	}
	for d := range used {
		keep[d] = true // a blob served since, whatever names it
	}
	return keep, nil
}

// buildUnits groups the stored content into closures. It also returns the
// manifests recorded, and what the stored ones point at.
func buildUnits(ctx context.Context, store Store, db DB, stored map[digest.Digest]*content, cache *refCache) ([]*Unit, map[digest.Digest]bool, map[digest.Digest]refs, error) {
	records, err := db.ManifestDigests(ctx)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("gc: %w", err)
	}
	tags, err := db.AllTags(ctx)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("gc: %w", err)
	}
	lists, err := db.AllReferrers(ctx)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("gc: %w", err)
	}
	access, err := db.AccessTimes(ctx)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("gc: %w", err)
	}
	pinned, err := db.AllPinned(ctx)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("gc: %w", err)
	}

	manifests := map[digest.Digest]refs{}
	child := map[digest.Digest]bool{}
	referrers := map[digest.Digest][]digest.Digest{} // subject -> manifests with that subject
	for d := range records {
		if stored[d] == nil {
			// Metadata of content already gone, or a manifest stored and
			// recorded after the walk: the plan does not know it, and Apply
			// keeps what it refers to as it does for any manifest recorded
			// since the plan. Known, its layers (already stored, shared
			// with an older image that goes) were deleted from under it.
			delete(records, d)
			continue
		}
		r, cached := refs{}, false
		if cache != nil {
			r, cached = cache.m[d]
		}
		if !cached {
			var err error
			if r, err = readRefs(ctx, store, d); err != nil {
				continue // unreadable: treated as content no manifest refers to
			}
		}
		manifests[d] = r
		for _, c := range r.children {
			child[c] = true
		}
		if r.subject != "" {
			referrers[r.subject] = append(referrers[r.subject], d)
		}
	}
	if cache != nil {
		cache.m = manifests
	}
	listsOf := map[digest.Digest][]digest.Digest{}
	for _, l := range lists {
		listsOf[l.Subject] = append(listsOf[l.Subject], l.List)
	}
	tagsOf := map[digest.Digest][]string{}
	about := map[digest.Digest]bool{} // evidence under a tag that names its stored subject
	for _, t := range tags {
		d := t.Entry.Digest
		tagsOf[d] = append(tagsOf[d], t.Key)
		// cosign's signatures, attestations and SBOMs, and the tag
		// schema's referrers index, name their subject in their tag, not
		// in a subject field: they go with it.
		if s := tagSubject(t.Key); s != "" && s != d && !about[d] {
			if _, ok := manifests[s]; ok {
				if _, ok := manifests[d]; ok {
					referrers[s] = append(referrers[s], d)
					about[d] = true
				}
			}
		}
	}

	var units []*Unit
	inUnit := map[digest.Digest]bool{}
	for d, r := range manifests {
		if _, subjectStored := manifests[r.subject]; child[d] || about[d] || (r.subject != "" && subjectStored) {
			continue // part of its parent's or its subject's closure
		}
		u := &Unit{Root: d}
		seen := map[digest.Digest]bool{}
		var walk func(m digest.Digest)
		walk = func(m digest.Digest) {
			if seen[m] {
				return
			}
			seen[m] = true
			u.Manifests = append(u.Manifests, m)
			mr := manifests[m]
			for _, c := range mr.children {
				if _, ok := manifests[c]; ok {
					walk(c)
				}
			}
			for _, b := range mr.blobs {
				if stored[b] != nil && !seen[b] {
					seen[b] = true
					u.Blobs = append(u.Blobs, b)
				}
			}
			for _, l := range listsOf[m] {
				if stored[l] != nil && !seen[l] {
					seen[l] = true
					u.Blobs = append(u.Blobs, l)
				}
			}
			for _, ref := range referrers[m] {
				walk(ref)
			}
		}
		walk(d)
		units = append(units, u)
	}
	// Content no manifest refers to: each piece is its own unit.
	for _, u := range units {
		for _, d := range slices.Concat(u.Manifests, u.Blobs) {
			inUnit[d] = true
		}
	}
	for d := range stored {
		if !inUnit[d] {
			units = append(units, &Unit{Root: d, Blobs: []digest.Digest{d}})
		}
	}

	// A manifest of a unit whose root is pinned is kept by that unit: an
	// older index that shares a child manifest with a pre-staged one (a
	// release that changed the amd64 image, not the arm64 one) is not
	// pinned by that child, or every such release stayed for good, with
	// the children and layers of its own.
	pinnedByRoot := map[digest.Digest]bool{}
	for _, u := range units {
		if pinned[u.Root] {
			for _, d := range u.Manifests {
				pinnedByRoot[d] = true
			}
		}
	}
	for _, u := range units {
		for _, d := range slices.Concat(u.Manifests, u.Blobs) {
			stored[d].refs++
		}
		// A unit was last used when any of its manifests was served (every
		// pull reads them); content without manifests, when it was. It is
		// pinned when one of them is, and no unit pinned by its root holds
		// it: a layer it shares with a pinned image stays anyway (it goes
		// only when no unit refers to it), and the rest of it is no
		// pre-staged image's.
		keys := u.Manifests
		if len(keys) == 0 {
			keys = u.Blobs
		}
		for _, d := range keys {
			if pinned[d] && (d == u.Root || !pinnedByRoot[d]) {
				u.Pinned = true
			}
			t, ok := access[d]
			if !ok {
				t = stored[d].modTime
			}
			if t.After(u.LastAccess) {
				u.LastAccess = t
			}
			u.Tags = append(u.Tags, tagsOf[d]...)
		}
		u.LastUsed = u.LastAccess
		for _, d := range u.Blobs {
			t, ok := access[d]
			if !ok {
				t = stored[d].modTime
			}
			if t.After(u.LastUsed) {
				u.LastUsed = t
			}
		}
		sort.Strings(u.Tags)
	}
	return units, records, manifests, nil
}

// markDeltaBases marks, for each repository, its unit served most recently
// under a tag that is not evidence's (a signature is no image to take
// deltas from).
func markDeltaBases(units []*Unit) {
	newest := map[string]*Unit{}
	for _, u := range units {
		for _, key := range u.Tags { // <registry>/<repo>:<tag>
			i := strings.LastIndexByte(key, ':')
			if i < 0 || tagSubject(key) != "" {
				continue
			}
			repo := key[:i]
			if n := newest[repo]; n == nil || u.LastAccess.After(n.LastAccess) || (u.LastAccess.Equal(n.LastAccess) && u.Root > n.Root) {
				newest[repo] = u
			}
		}
	}
	for _, u := range newest {
		u.DeltaBase = true
	}
}

// tagSubject returns the manifest that the tag of key
// (<registry>/<repo>:<tag>) is evidence about, or "".
func tagSubject(key string) digest.Digest {
	i := strings.LastIndexByte(key, ':')
	if i < 0 {
		return ""
	}
	return ociapi.EvidenceTagSubject(key[i+1:])
}

func isNotFound(err error) bool { return errors.Is(err, errdef.ErrNotFound) }

// readRefs reads what stored manifest d points at.
func readRefs(ctx context.Context, store Store, d digest.Digest) (refs, error) {
	rc, err := store.Open(ctx, d)
	if err != nil {
		return refs{}, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxManifestRead))
	if err != nil {
		return refs{}, err
	}
	var doc struct {
		Manifests []struct{ Digest digest.Digest } `json:"manifests"`
		Config    *struct{ Digest digest.Digest }  `json:"config"`
		Layers    []struct{ Digest digest.Digest } `json:"layers"`
		Blobs     []struct{ Digest digest.Digest } `json:"blobs"`
		Subject   *struct{ Digest digest.Digest }  `json:"subject"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return refs{}, err
	}
	var r refs
	for _, m := range doc.Manifests {
		r.children = append(r.children, m.Digest)
	}
	if doc.Config != nil {
		r.blobs = append(r.blobs, doc.Config.Digest)
	}
	for _, l := range doc.Layers {
		r.blobs = append(r.blobs, l.Digest)
	}
	for _, l := range doc.Blobs {
		r.blobs = append(r.blobs, l.Digest)
	}
	if doc.Subject != nil {
		r.subject = doc.Subject.Digest
	}
	return r, nil
}
