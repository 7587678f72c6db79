package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/delta"
	"github.com/registry-edge/registry-edge/internal/layerdelta"
)

const diffUsage = `usage: deltactl diff [flags] OLD NEW

Computes the deltas that rebuild the layers of NEW that OLD lacks from layers
of OLD, for every platform of NEW (or those of --platform) that OLD has too,
and prints one line per layer: its size, its delta's size and kind, or why it
has none. OLD and NEW are image references ([registry/]repo[:tag|@digest]) of
an index or of one image manifest; the platforms of an index include those of
the indexes nested in it.

The bases of a new layer are the layers of OLD's manifest for the same
platform that NEW lacks, nearest layer index first, at most --max-bases; when
OLD has no such layer, the layer of OLD at the same index (or its last).
Layers that OLD and NEW share and that hold files at the paths of the new
layer's files are tried as bases too (a site holding OLD has them): the
smaller delta is kept.

--push publishes, for each platform manifest of NEW that got a delta, the
deltas and an artifact manifest (artifact type
application/vnd.registry-edge.layer-deltas.v1) whose subject is that manifest,
in NEW's repository: a registry-edge mirror finds them as referrers. The
right to push there is checked before any layer is fetched.
--output-dir writes each delta as DIR/<hex>.delta with its descriptor in
DIR/<hex>.json, for 'deltactl apply'.

flags:
`

// diffOptions are the flags of diff that shape the work.
type diffOptions struct {
	platforms platformList
	maxBases  int
	maxRatio  float64
	min       layerdelta.Minimums
	push      bool
	outputDir string
	level     delta.Level
}

// levels are the values of --level, from fastest to smallest delta.
var levels = map[string]delta.Level{
	"fastest": delta.LevelFastest, "default": delta.LevelDefault, "better": delta.LevelBetter, "best": delta.LevelBest,
}

func diffCmd(ctx context.Context, e *env, args []string) (err error) {
	f := newFlags(e, "diff", diffUsage)
	var o diffOptions
	f.platformFlag(&o.platforms)
	f.IntVar(&o.maxBases, "max-bases", 2, fmt.Sprintf("most base layers per delta, 1 to %d", delta.DefaultMaxBases))
	f.Float64Var(&o.maxRatio, "max-ratio", 1, "keep a delta only if it is smaller than this fraction of its layer's size, in (0, 1]")
	f.minimumsFlags(&o.min)
	f.BoolVar(&o.push, "push", false, "publish the deltas to NEW's repository (referrers of NEW's platform manifests)")
	f.StringVar(&o.outputDir, "output-dir", "", "write each delta and its descriptor to `directory` (created if missing)")
	level := f.String("level", "best", "compression of the changed bytes: fastest, default, better (about 2-4 times as fast as best, deltas 1-18% larger on our corpus) or best")
	f.registryFlags()
	f.tmpFlag()
	f.formatFlag()
	pos, err := f.parse(args, 2, 2)
	if err != nil {
		return err
	}
	if o.maxBases < 1 || o.maxBases > delta.DefaultMaxBases {
		return f.usageErr("--max-bases %d: want 1 to %d", o.maxBases, delta.DefaultMaxBases)
	}
	if !(o.maxRatio > 0 && o.maxRatio <= 1) {
		return f.usageErr("--max-ratio %g: want a number in (0, 1]", o.maxRatio)
	}
	if err := f.checkMinimums(o.min); err != nil {
		return err
	}
	lv, ok := levels[*level]
	if !ok {
		return f.usageErr("--level %q: want fastest, default, better or best", *level)
	}
	o.level = lv
	c := newClient(ctx, f.insecure, f.timeout, &e.creds)
	oldRef, err := c.parseRef(pos[0])
	if err != nil {
		return f.usageErr("OLD: %v", err)
	}
	newRef, err := c.parseRef(pos[1])
	if err != nil {
		return f.usageErr("NEW: %v", err)
	}
	if o.outputDir != "" {
		// Made now, so that a directory that cannot be made fails the
		// command before any download; removed again if the command fails
		// before writing to it (an empty directory tells nothing).
		_, serr := os.Stat(o.outputDir)
		if err := os.MkdirAll(o.outputDir, 0o755); err != nil {
			return fmt.Errorf("--output-dir %s: %w", o.outputDir, err)
		}
		if errors.Is(serr, fs.ErrNotExist) {
			defer func() {
				if err != nil {
					os.Remove(o.outputDir) // only if still empty
				}
			}()
		}
	}

	d := &differ{c: c, o: o, tmp: f.tmp, prog: newProgress(e.stderr), cache: map[string]*made{}, written: map[digest.Digest]deltaFiles{}, paths: map[digest.Digest]map[string]int64{}}
	d.blobs = newBlobFiles(c, f.tmp, d.prog)
	defer d.close()
	rep, err := d.run(ctx, oldRef, newRef, pos[0], pos[1])
	if err != nil {
		return err
	}
	if f.format == formatJSON {
		return writeJSON(e.stdout, rep)
	}
	rep.writeTable(e)
	return nil
}

// partialPushError is a diff --push that failed after it published the
// artifacts of some platforms.
type partialPushError struct {
	err       error
	published []string // "<artifact> for <manifest> (<platform>)"
}

func (e *partialPushError) Error() string {
	return fmt.Sprintf("%v; published before the failure: %s", e.err, strings.Join(e.published, ", "))
}

func (e *partialPushError) Unwrap() error { return e.err }

// diffReport is the result of diff (--format json).
type diffReport struct {
	Old       imageRef       `json:"old"`
	New       imageRef       `json:"new"`
	Platforms []diffPlatform `json:"platforms"`
	Totals    diffTotals     `json:"totals"`
}

// imageRef is an image reference as given, and the digest it resolved to.
type imageRef struct {
	Ref    string        `json:"ref"`
	Digest digest.Digest `json:"digest"`
}

// diffPlatform is one platform manifest of NEW.
type diffPlatform struct {
	Platform string `json:"platform"`
	// Manifest is NEW's platform manifest, From OLD's ("" when OLD has
	// none, and then Skipped says so).
	Manifest digest.Digest `json:"manifest"`
	From     digest.Digest `json:"from,omitempty"`
	Skipped  string        `json:"skipped,omitempty"`
	// Layers are NEW's layers that OLD lacks, in NEW's order.
	Layers []diffLayer `json:"layers"`
	// Artifact is the delta artifact manifest pushed for this platform.
	Artifact *layerdelta.Blob `json:"artifact,omitempty"`
}

// diffLayer is one layer of NEW that OLD lacks, and its delta.
type diffLayer struct {
	Index  int               `json:"index"`
	Target layerdelta.Blob   `json:"target"`
	Bases  []layerdelta.Blob `json:"bases"`
	// Delta is nil when there is no delta (Reason says why).
	Delta  *layerdelta.Blob `json:"delta,omitempty"`
	Kind   layerdelta.Kind  `json:"kind,omitempty"`
	Recipe string           `json:"recipe,omitempty"`
	Reason string           `json:"reason"`
	// Error is set when computing the delta failed (the layer is not a
	// tar, or is too large): the layer has no delta, the others go on.
	Error         string  `json:"error,omitempty"`
	SavingPercent float64 `json:"savingPercent"`
	// Files are the files written with --output-dir.
	Files *deltaFiles `json:"files,omitempty"`
	// foreign marks a non-distributable layer: listed, but no one fetches
	// it from the registry, so the totals leave it out (as plan does).
	foreign bool
}

// deltaFiles are the paths of a delta written with --output-dir.
type deltaFiles struct {
	Delta      string `json:"delta"`
	Descriptor string `json:"descriptor"`
}

// diffTotals sum the layers of every platform that are fetched from the
// registry: not the non-distributable ones (as plan).
type diffTotals struct {
	Layers int `json:"layers"`
	Deltas int `json:"deltas"`
	// Size is the bytes of the layers, DeltaSize those of their deltas,
	// Transfer those of the deltas plus the layers without one.
	Size          int64   `json:"size"`
	DeltaSize     int64   `json:"deltaSize"`
	Transfer      int64   `json:"transfer"`
	SavingPercent float64 `json:"savingPercent"`
}

// differ computes the deltas of one diff command.
type differ struct {
	c     *client
	o     diffOptions
	tmp   string
	prog  *progress
	blobs *blobFiles
	// cache holds the deltas computed, by target and bases: platforms
	// that share a layer share its delta.
	cache map[string]*made
	// written are the deltas written to --output-dir.
	written map[digest.Digest]deltaFiles
	// paths are the files of the layers listed (sharedBases).
	paths map[digest.Digest]map[string]int64
}

// made is the outcome of layerdelta.Make for one target and its bases.
type made struct {
	res layerdelta.Result
	err error
}

func (d *differ) close() {
	for _, m := range d.cache {
		m.res.Close()
	}
	d.blobs.removeAll()
}

// run diffs the images oldRef and newRef (given as oldArg and newArg).
func (d *differ) run(ctx context.Context, oldRef, newRef name.Reference, oldArg, newArg string) (*diffReport, error) {
	oldImg, err := d.c.resolve(oldRef)
	if err != nil {
		return nil, err
	}
	newImg, err := d.c.resolve(newRef)
	if err != nil {
		return nil, err
	}
	if d.o.push {
		// Before minutes of fetching and encoding that would be thrown away.
		if err := d.c.checkPush(newRef); err != nil {
			return nil, fmt.Errorf("--push: cannot push to %s: %w", newImg.repo(), err)
		}
	}
	pms, err := newImg.selectPlatforms(d.o.platforms)
	if err != nil {
		return nil, err
	}
	rep := &diffReport{
		Old:       imageRef{Ref: oldArg, Digest: digest.Digest(oldImg.desc.Digest.String())},
		New:       imageRef{Ref: newArg, Digest: digest.Digest(newImg.desc.Digest.String())},
		Platforms: []diffPlatform{},
	}
	for _, pm := range pms {
		dp, err := d.platform(ctx, oldImg, newImg, pm)
		if err != nil {
			// What was published stays published: say which, so that
			// the user knows what a second run will find.
			var done []string
			for _, p := range rep.Platforms {
				if p.Artifact != nil {
					done = append(done, fmt.Sprintf("%s for %s (%s)", p.Artifact.Digest, p.Manifest, p.Platform))
				}
			}
			if len(done) > 0 {
				err = &partialPushError{err: err, published: done}
			}
			return nil, err
		}
		rep.Platforms = append(rep.Platforms, dp)
		for _, l := range dp.Layers {
			if l.foreign {
				continue
			}
			rep.Totals.Layers++
			rep.Totals.Size += l.Target.Size
			if l.Delta != nil {
				rep.Totals.Deltas++
				rep.Totals.DeltaSize += l.Delta.Size
				rep.Totals.Transfer += l.Delta.Size
			} else {
				rep.Totals.Transfer += l.Target.Size
			}
		}
	}
	rep.Totals.SavingPercent = savingPercent(rep.Totals.Size, rep.Totals.Transfer)
	return rep, nil
}

// platform computes the deltas of one platform manifest of NEW, then
// pushes and writes them as asked.
func (d *differ) platform(ctx context.Context, oldImg, newImg *image, pm platformManifest) (diffPlatform, error) {
	dp := diffPlatform{Platform: platformString(pm.platform), Manifest: digest.Digest(pm.desc.Digest.String()), Layers: []diffLayer{}}
	oldPM := oldImg.counterpart(newImg, pm)
	if oldPM == nil {
		dp.Skipped = "OLD has no manifest for this platform"
		return dp, nil
	}
	defer d.blobs.removeAll() // the bases of this platform
	dp.From = digest.Digest(oldPM.desc.Digest.String())
	inOld, inNew := map[v1.Hash]bool{}, map[v1.Hash]bool{}
	for _, l := range oldPM.manifest.Layers {
		inOld[l.Digest] = true
	}
	for _, l := range pm.manifest.Layers {
		inNew[l.Digest] = true
	}
	var deltas []*made
	seen := map[v1.Hash]bool{}
	for i, l := range pm.manifest.Layers {
		if inOld[l.Digest] || seen[l.Digest] {
			continue
		}
		seen[l.Digest] = true
		if !distributable(l) {
			dp.Layers = append(dp.Layers, diffLayer{Index: i, Target: blobOf(l), Bases: []layerdelta.Blob{}, Reason: nonDistributableReason, foreign: true})
			continue
		}
		bases := selectBases(oldPM.manifest.Layers, inNew, i, d.o.maxBases)
		more, err := d.sharedBases(ctx, oldImg, newImg, l, oldPM.manifest.Layers, inNew, bases)
		if err != nil {
			return diffPlatform{}, err
		}
		row, m, err := d.layer(ctx, oldImg, newImg, i, l, bases, more, dp.Platform)
		if err != nil {
			return diffPlatform{}, err
		}
		if m != nil {
			deltas = append(deltas, m)
		}
		dp.Layers = append(dp.Layers, row)
	}
	if d.o.push && len(deltas) > 0 {
		a, err := d.push(newImg.repo(), pm.desc, dp.From, deltas)
		if err != nil {
			return diffPlatform{}, fmt.Errorf("push deltas of %s (%s): %w", pm.desc.Digest, dp.Platform, err)
		}
		dp.Artifact = &a
	}
	return dp, nil
}

// layer computes the delta of layer l (at index i) of newImg from bases,
// layers of oldImg, and, when more is not empty, from more too (bases with
// layers that both images share); it keeps the smaller, writes it to
// --output-dir if asked, and returns its row, with the delta if there is
// one.
func (d *differ) layer(ctx context.Context, oldImg, newImg *image, i int, l v1.Descriptor, bases, more []v1.Descriptor, platform string) (diffLayer, *made, error) {
	row := diffLayer{Index: i, Target: blobOf(l), Bases: []layerdelta.Blob{}}
	defer d.blobs.release(row.Target.Digest) // a layer of NEW only: no base of another
	if len(bases) == 0 {
		row.Reason = "OLD has no layer"
		return row, nil, nil
	}
	m, err := d.make(ctx, newImg, oldImg, row.Target, blobsOf(bases), platform)
	if err != nil {
		return diffLayer{}, nil, err
	}
	if len(more) > 0 {
		m2, err := d.make(ctx, newImg, oldImg, row.Target, blobsOf(more), platform)
		if err != nil {
			return diffLayer{}, nil, err
		}
		if m2.err == nil && m2.res.OK() && (m.err != nil || !m.res.OK() || m2.res.Layer.Delta.Size < m.res.Layer.Delta.Size) {
			m = m2
		}
	}
	row.Bases = append(row.Bases, m.res.Layer.Bases...)
	if m.err != nil {
		row.Bases = blobsOf(bases)
	}
	row.Reason = m.res.Reason
	if m.err != nil {
		row.Reason, row.Error = "error: "+m.err.Error(), m.err.Error()
		return row, nil, nil
	}
	if !m.res.OK() {
		return row, nil, nil
	}
	dl := m.res.Layer
	row.Delta = &layerdelta.Blob{Digest: dl.Delta.Digest, Size: dl.Delta.Size}
	row.Kind = dl.Kind
	if dl.Recipe != nil {
		row.Recipe = dl.Recipe.String()
	}
	row.SavingPercent = savingPercent(row.Target.Size, row.Delta.Size)
	if d.o.outputDir != "" {
		files, err := d.write(m.res)
		if err != nil {
			return diffLayer{}, nil, err
		}
		row.Files = &files
	}
	return row, m, nil
}

// make computes (once) the delta that rebuilds target, a layer of newImg,
// from bases, layers of oldImg. Failures to fetch a blob are returned;
// failures of layerdelta.Make are recorded in the result.
func (d *differ) make(ctx context.Context, newImg, oldImg *image, target layerdelta.Blob, bases []layerdelta.Blob, platform string) (*made, error) {
	key := target.Digest.String()
	for _, b := range bases {
		key += "," + b.Digest.String()
	}
	if m, ok := d.cache[key]; ok {
		return m, nil
	}
	tc, err := d.blobs.open(newImg.repo(), target)
	if err != nil {
		return nil, err
	}
	var bcs []layerdelta.Content
	for _, b := range bases {
		bc, err := d.blobs.open(oldImg.repo(), b)
		if err != nil {
			return nil, err
		}
		bcs = append(bcs, bc)
	}
	label := fmt.Sprintf("delta %s %s", platform, shortDigest(target.Digest))
	d.prog.status(label + ": reading layers")
	opts := layerdelta.Options{
		TempDir:  d.tmp,
		MaxRatio: d.o.maxRatio,
		Min:      d.o.min,
		Encode:   delta.EncodeOptions{Level: d.o.level, Progress: func(done, total int64) { d.prog.bar(label, done, total) }},
	}
	res, err := layerdelta.Make(ctx, tc, bcs, opts)
	d.prog.clear()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	m := &made{res: res, err: err}
	d.cache[key] = m
	return m, nil
}

// nonDistributableReason is the reason a non-distributable layer has no
// delta.
const nonDistributableReason = "non-distributable layer: clients fetch it from the URLs in its manifest, not from the registry"

// distributable reports whether the registry holds layer d: a
// non-distributable layer (Docker's foreign layers of Windows base images,
// OCI's nondistributable media types) is fetched from its URLs instead.
func distributable(d v1.Descriptor) bool {
	return d.MediaType != types.DockerForeignLayer && !strings.Contains(string(d.MediaType), ".nondistributable.")
}

// blobsOf returns the blobs of ds.
func blobsOf(ds []v1.Descriptor) []layerdelta.Blob {
	out := []layerdelta.Blob{}
	for _, d := range ds {
		out = append(out, blobOf(d))
	}
	return out
}

// sharedBases returns, for the new layer l, a second set of bases to try:
// bases (those selectBases chose) with the layers that old and the new
// image share, and that hold files at the paths of l's files, in place of
// the last of them (at most --max-bases; the first of bases stays). A site
// that holds old holds the shared layers too, and a file that moved from a
// shared layer into a changed one (a package upgraded in the top layer
// that the base layer had) is found there rather than sent in full. It
// returns nil when no shared layer has such a file, or --max-bases is 1.
func (d *differ) sharedBases(ctx context.Context, oldImg, newImg *image, l v1.Descriptor, old []v1.Descriptor, inNew map[v1.Hash]bool, bases []v1.Descriptor) ([]v1.Descriptor, error) {
	if d.o.maxBases < 2 || len(bases) == 0 || blobOf(l).Size < d.o.min.LayerSize {
		return nil, nil
	}
	type cand struct {
		l       v1.Descriptor
		overlap int64 // bytes of l's files at paths the layer has too
	}
	var cands []cand
	taken := map[v1.Hash]bool{}
	for _, b := range bases {
		taken[b.Digest] = true
	}
	var target map[string]int64
	for _, o := range old {
		if !inNew[o.Digest] || taken[o.Digest] || !distributable(o) {
			continue
		}
		taken[o.Digest] = true
		if target == nil {
			t, err := d.files(ctx, newImg, blobOf(l))
			if err != nil || len(t) == 0 {
				return nil, err
			}
			target = t
		}
		files, err := d.files(ctx, oldImg, blobOf(o))
		if err != nil {
			return nil, err
		}
		var overlap int64
		for p, size := range target {
			if _, ok := files[p]; ok {
				overlap += size
			}
		}
		if overlap > 0 {
			cands = append(cands, cand{o, overlap})
		}
	}
	if len(cands) == 0 {
		return nil, nil
	}
	slices.SortStableFunc(cands, func(a, b cand) int { return cmp.Compare(b.overlap, a.overlap) })
	keep := min(len(bases), d.o.maxBases-min(len(cands), d.o.maxBases-1))
	out := slices.Clone(bases[:keep])
	for _, c := range cands[:min(len(cands), d.o.maxBases-keep)] {
		out = append(out, c.l)
	}
	return out, nil
}

// files returns the regular files of layer b of img, by path (listed once
// per layer; a layer that is no tar lists none).
func (d *differ) files(ctx context.Context, img *image, b layerdelta.Blob) (map[string]int64, error) {
	if f, ok := d.paths[b.Digest]; ok {
		return f, nil
	}
	c, err := d.blobs.open(img.repo(), b)
	if err != nil {
		return nil, err
	}
	d.prog.status("list files of " + shortDigest(b.Digest))
	f, err := layerdelta.Files(ctx, c, 0)
	d.prog.clear()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err != nil {
		f = map[string]int64{} // no tar: the bases selectBases chose will say why
	}
	d.paths[b.Digest] = f
	return f, nil
}

// selectBases returns the layers of old to use as bases for the new layer at
// index i: the layers of old that the new manifest lacks (inNew), nearest
// index first (the lower on a tie), at most max; when old has no such layer,
// its layer at index i, or its last one when it has fewer layers (the
// nearest index). Non-distributable layers are never bases: the registry
// does not hold them.
func selectBases(old []v1.Descriptor, inNew map[v1.Hash]bool, i, max int) []v1.Descriptor {
	type cand struct{ j, dist int }
	var cs, fallback []cand
	seen := map[v1.Hash]bool{}
	for j, l := range old {
		if !distributable(l) {
			continue
		}
		dist := j - i
		if dist < 0 {
			dist = -dist
		}
		fallback = append(fallback, cand{j, dist})
		if inNew[l.Digest] || seen[l.Digest] {
			continue
		}
		seen[l.Digest] = true
		cs = append(cs, cand{j, dist})
	}
	if len(cs) == 0 {
		if len(fallback) == 0 {
			return nil
		}
		c := slices.MinFunc(fallback, func(a, b cand) int { return cmp.Compare(a.dist, b.dist) }) // the first of the nearest
		return []v1.Descriptor{old[c.j]}
	}
	slices.SortStableFunc(cs, func(a, b cand) int { return cmp.Compare(a.dist, b.dist) })
	var out []v1.Descriptor
	for _, c := range cs[:min(max, len(cs))] {
		out = append(out, old[c.j])
	}
	return out
}

func (r *diffReport) writeTable(e *env) {
	tw := newTable(e.stdout)
	fmt.Fprintln(tw, "PLATFORM\tLAYER\tSIZE\tDELTA\tSAVING\tKIND / REASON")
	for _, p := range r.Platforms {
		if p.Skipped != "" {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\tskipped: %s\n", p.Platform, p.Skipped)
			continue
		}
		if len(p.Layers) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\tno new layer\n", p.Platform)
		}
		for _, l := range p.Layers {
			dsize, saving, what := "-", "-", "no delta: "+l.Reason
			if l.Delta != nil {
				dsize, saving = humanSize(l.Delta.Size), fmt.Sprintf("%.1f%%", l.SavingPercent)
				what = string(l.Kind) + ": " + l.Recipe
				if l.Kind == layerdelta.KindBlob {
					what = "blob: " + l.Reason
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Platform, shortDigest(l.Target.Digest), humanSize(l.Target.Size), dsize, saving, what)
		}
	}
	t := r.Totals
	fmt.Fprintf(tw, "total\t%d layer(s)\t%s\t%s\t%.1f%%\t%d delta(s); %s to transfer with deltas\n",
		t.Layers, humanSize(t.Size), humanSize(t.DeltaSize), t.SavingPercent, t.Deltas, humanSize(t.Transfer))
	tw.Flush()
	for _, p := range r.Platforms {
		if p.Artifact != nil {
			fmt.Fprintf(escapeWriter{e.stdout}, "pushed %s (%d bytes) for %s (%s)\n", p.Artifact.Digest, p.Artifact.Size, p.Manifest, p.Platform)
		}
	}
	var files []string
	for _, p := range r.Platforms {
		for _, l := range p.Layers {
			if l.Files != nil && !slices.Contains(files, l.Files.Delta) {
				files = append(files, l.Files.Delta)
				fmt.Fprintf(e.stdout, "wrote %s and %s\n", l.Files.Delta, filepath.Base(l.Files.Descriptor))
			}
		}
	}
}
