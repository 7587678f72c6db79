package delta

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"hash/maphash"
	"io"
	"runtime"
	"slices"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/thp"
)

// Level trades encoding speed for delta size. It maps onto the zstd
// encoder levels of the literal frames.
type Level int

// Levels, from fastest to smallest delta.
const (
	LevelFastest Level = iota + 1
	LevelDefault
	LevelBetter
	LevelBest
)

// EncodeOptions tune Encode. The zero value gives the defaults.
type EncodeOptions struct {
	// Level of the literal frames; zero means LevelBest.
	Level Level
	// BlockSize is the number of literal bytes per block, the unit of
	// compression, of parallelism and of decoder memory; zero means
	// DefaultBlockSize. A decoder rejects deltas whose BlockSize exceeds
	// its Limits.MaxLiteral.
	BlockSize int
	// MaxDict bounds the dictionary of one block; zero means DefaultDictSize.
	// A decoder rejects deltas whose MaxDict exceeds its Limits.MaxDict.
	MaxDict int
	// MinCopy is the shortest identical run turned into a COPY operation;
	// shorter runs are left to zstd, which finds them in the dictionary
	// and codes them in context. Zero means 1024.
	MinCopy int
	// Concurrency is the number of blocks compressed in parallel; zero
	// means min(2, GOMAXPROCS). Each adds about 100 MiB of encoder tables.
	Concurrency int
	// Progress, if set, is called after each block is written with the
	// number of target bytes covered so far and the target size.
	Progress func(done, total int64)
}

func (o EncodeOptions) withDefaults() (EncodeOptions, error) {
	if o.Level == 0 {
		o.Level = LevelBest
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.MaxDict == 0 {
		o.MaxDict = DefaultDictSize
	}
	if o.MinCopy == 0 {
		o.MinCopy = 1024
	}
	if o.Concurrency == 0 {
		o.Concurrency = min(2, runtime.GOMAXPROCS(0))
	}
	switch {
	case o.Level < LevelFastest || o.Level > LevelBest:
		return o, fmt.Errorf("delta level %d: %w", o.Level, errdef.ErrInvalid)
	case o.BlockSize < 4<<10 || o.BlockSize > 256<<20:
		return o, fmt.Errorf("delta block size %d outside [4 KiB, 256 MiB]: %w", o.BlockSize, errdef.ErrInvalid)
	case o.MaxDict < 0 || o.MaxDict > 1<<30:
		return o, fmt.Errorf("delta dictionary size %d outside [0, 1 GiB]: %w", o.MaxDict, errdef.ErrInvalid)
	case o.MinCopy < gearWindow:
		return o, fmt.Errorf("delta minimum copy %d below %d: %w", o.MinCopy, gearWindow, errdef.ErrInvalid)
	case o.Concurrency < 1:
		return o, fmt.Errorf("delta concurrency %d: %w", o.Concurrency, errdef.ErrInvalid)
	}
	return o, nil
}

// Stats describe an encoded delta.
type Stats struct {
	TargetSize   int64 // bytes of the target tar
	DeltaSize    int64 // bytes written to the delta
	CopyBytes    int64 // target bytes produced by COPY operations
	LiteralBytes int64 // target bytes produced from zstd literals
	AddBytes     int64 // target bytes produced by ADD operations (base bytes plus literal differences)
	DictBytes    int64 // dictionary bytes over all blocks
	ControlBytes int64 // delta bytes spent on compressed control sections
	Ops          int64 // operations
	Blocks       int64 // blocks
	Entries      int   // tar entries found in the target
	Exact        int   // entries whose content was found unchanged
	Paired       int   // changed entries encoded against a paired base entry
}

const (
	// tableHeap is the heap one worker fills with encoder tables at the best
	// level (68 MiB) and their neighbours (two encoders of the next level,
	// the dictionary buffer, the block's literals and frames).
	tableHeap = 96 << 20
	// exactMax bounds the files looked up by content hash; larger identical
	// files are found by the anchor index instead.
	exactMax = 4 << 20
	// wholeDictMax: a changed file up to this size gets its whole paired
	// base file as dictionary; larger ones get the neighbourhood of the
	// literal run: its length on each side, at least minSlack and at most
	// maxSlack. Loading a dictionary costs the best zstd level 20-90 ns a
	// byte (random writes into a 32 MiB table), so it must not be much
	// larger than what it serves; since ADD operations cover the stretches
	// that line up with the base, wider neighbourhoods measured no smaller
	// deltas (ADR 0007).
	wholeDictMax = 2 << 20
	minSlack     = 4 << 10
	maxSlack     = 64 << 10
	// windowSize is the target read-ahead; scanPiece the unit of anchor
	// scanning and extendChunk that of match extension.
	windowSize  = 16 << 20
	scanPiece   = 4 << 20
	extendChunk = 1 << 20
)

// Encode writes to w a delta that rebuilds target (size bytes, an
// uncompressed tar; other content works, matched without tar structure)
// from bases. It holds every base in memory, mapped read-only when the base
// is a regular *os.File (which must not be truncated until Encode returns)
// and read into the heap otherwise; the encoder's memory is about the
// bases' size plus a few hundred MiB. It reads target through ReaderAt,
// three times and concurrently, so target and bases must allow concurrent
// ReadAt (files and bytes.Reader do). A base with a Digest is verified
// against it (errdef.ErrDigestMismatch); one without gets its digest
// computed.
func Encode(ctx context.Context, w io.Writer, target io.ReaderAt, size int64, bases []Base, opts EncodeOptions) (Stats, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return Stats{}, err
	}
	if size < 0 || target == nil {
		return Stats{}, fmt.Errorf("delta target: %w", errdef.ErrInvalid)
	}
	if len(bases) > DefaultMaxBases {
		return Stats{}, fmt.Errorf("delta: %d bases, at most %d: %w", len(bases), DefaultMaxBases, errdef.ErrTooLarge)
	}
	// The encoder tables are most of what a fresh process touches: back
	// them with huge pages where the kernel allows it (ADR 0019).
	thp.PreferForHeap(opts.Concurrency * tableHeap)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	sumc := make(chan hashResult, 1)
	go func() { sumc <- hashTarget(ctx, target, size) }()

	e := &encoder{
		ctx:     ctx,
		opts:    opts,
		t:       target,
		tsize:   size,
		seed:    maphash.MakeSeed(),
		lastEnd: -1,
	}
	e.stats.TargetSize = size
	// Deferred before the pipeline exists, so it runs after out.close has
	// waited for every worker: nothing reads a mapped base afterwards.
	defer func() {
		for _, f := range e.unmap {
			f()
		}
	}()
	if err := e.loadBases(bases); err != nil {
		return e.stats, err
	}
	hdr := Header{
		Version:    formatVersion,
		TargetSize: size,
		MaxLiteral: opts.BlockSize,
		MaxDict:    opts.MaxDict,
		MaxControl: DefaultMaxControl,
	}
	for _, b := range e.bases {
		hdr.Bases = append(hdr.Bases, b.ref)
	}
	e.out = newPipeline(ctx, w, hdr, sumc, e.bases, opts, &e.stats)
	e.state = newCtlState(len(e.bases))
	e.dictBudget = 4*size + 64<<20
	e.cur.lit = e.out.litBuf()
	e.cur.add = e.out.litBuf()

	err = e.encodeTarget()
	if err == nil {
		err = e.flush()
	}
	if cerr := e.out.close(err); err == nil {
		err = cerr
	}
	return e.stats, err
}

type hashResult struct {
	d   digest.Digest
	err error
}

func hashTarget(ctx context.Context, r io.ReaderAt, size int64) hashResult {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return hashResult{err: err}
		}
		n := int(min(int64(len(buf)), size-off))
		if err := readTarget(r, buf[:n], off); err != nil {
			return hashResult{err: err}
		}
		h.Write(buf[:n])
		off += int64(n)
	}
	return hashResult{d: digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))}
}

func readTarget(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		return fmt.Errorf("delta target: short read at %d: %w", off, errdef.ErrSizeMismatch)
	}
	return fmt.Errorf("delta target: read at %d: %w", off, err)
}

// baseData is a base held in memory with the layout of its entries.
type baseData struct {
	ref   BaseRef
	b     []byte
	start int64 // position in the global address space of the anchor index
	tail  int64 // where its tar entries end
}

// bent is a base entry.
type bent struct {
	base int
	e    entry
}

type contentKey struct {
	size int64
	sum  uint64
}

type encoder struct {
	ctx   context.Context
	opts  EncodeOptions
	stats Stats
	seed  maphash.Seed

	bases     []*baseData
	unmap     []func() // releases bases mapped from files, once every worker is done
	idx       *anchorIndex
	all       []bent
	byPath    map[string]int32
	byVer     map[string][]int32 // path modulo digits, sorted by size
	byName    map[string][]int32 // basename modulo digits, sorted by size
	byContent map[contentKey]int32

	t        io.ReaderAt
	tsize    int64
	win      []byte
	winStart int64

	p          int64 // target bytes before p are covered by operations
	last       op    // last COPY, for continuation
	lastIsCopy bool
	lastAlign  align // alignment of the last COPY or ADD, if it ended at lastEnd
	lastEnd    int64 // -1: none
	seeds      []seed

	cur        block
	state      *ctlState
	dictBudget int64
	out        *pipeline
}

func (e *encoder) loadBases(bases []Base) error {
	var total int64
	for i, b := range bases {
		if b.R == nil || b.Size < 0 {
			return fmt.Errorf("delta base %d: %w", i, errdef.ErrInvalid)
		}
		total += b.Size
	}
	e.idx = newAnchorIndex(total)
	e.byPath = make(map[string]int32)
	e.byVer = make(map[string][]int32)
	e.byName = make(map[string][]int32)
	e.byContent = make(map[contentKey]int32)
	var start int64
	for i, b := range bases {
		if err := e.ctx.Err(); err != nil {
			return err
		}
		buf, unmap, mapped := mapBase(b.R, b.Size)
		if mapped {
			e.unmap = append(e.unmap, unmap)
		} else {
			buf = make([]byte, b.Size)
			n, err := b.R.ReadAt(buf, 0)
			if n != len(buf) {
				if err == nil || err == io.EOF {
					err = errdef.ErrSizeMismatch
				}
				return fmt.Errorf("delta base %d: read: %w", i, err)
			}
		}
		d := digest.FromBytes(buf)
		if b.Digest != "" && b.Digest != d {
			return fmt.Errorf("delta base %d: content is %s, want %s: %w", i, d, b.Digest, errdef.ErrDigestMismatch)
		}
		bd := &baseData{ref: BaseRef{Digest: d, Size: b.Size}, b: buf, start: start}
		e.bases = append(e.bases, bd)
		tail, err := walkTar(bytes.NewReader(buf), b.Size, func(en entry) error {
			id := int32(len(e.all))
			e.all = append(e.all, bent{base: i, e: en})
			if _, ok := e.byPath[en.name]; !ok {
				e.byPath[en.name] = id
			}
			v := versionless(en.name)
			e.byVer[v] = append(e.byVer[v], id)
			bn := versionless(baseName(en.name))
			e.byName[bn] = append(e.byName[bn], id)
			if en.size > 0 {
				k := contentKey{en.size, maphash.Bytes(e.seed, buf[en.data:en.end()])}
				if _, ok := e.byContent[k]; !ok {
					e.byContent[k] = id
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		bd.tail = tail
		e.idx.add(buf, start)
		start += b.Size
	}
	bySize := func(a, b int32) int {
		return int(e.all[a].e.size - e.all[b].e.size)
	}
	for _, m := range []map[string][]int32{e.byVer, e.byName} {
		for _, c := range m {
			slices.SortStableFunc(c, bySize)
		}
	}
	return nil
}

// locate maps a global anchor position to a base and an offset in it.
func (e *encoder) locate(g int64) (int, int64) {
	i, _ := slices.BinarySearchFunc(e.bases, g, func(b *baseData, g int64) int {
		if b.start+int64(len(b.b)) <= g {
			return -1
		}
		if b.start > g {
			return 1
		}
		return 0
	})
	i = min(i, len(e.bases)-1)
	return i, g - e.bases[i].start
}

// tbytes returns target[off:off+n] (n <= windowSize). The slice is valid
// until the next call.
func (e *encoder) tbytes(off int64, n int) ([]byte, error) {
	if off >= e.winStart && off+int64(n) <= e.winStart+int64(len(e.win)) {
		return e.win[off-e.winStart : off-e.winStart+int64(n)], nil
	}
	if e.win == nil {
		e.win = make([]byte, min(int64(windowSize), e.tsize))
	}
	m := int(min(int64(cap(e.win)), e.tsize-off))
	e.win = e.win[:m]
	if err := readTarget(e.t, e.win, off); err != nil {
		return nil, err
	}
	e.winStart = off
	return e.win[:n], nil
}

// encodeTarget walks the target's entries and covers every byte with
// operations, in order.
func (e *encoder) encodeTarget() error {
	var prev hint
	end, err := walkTar(e.t, e.tsize, func(te entry) error {
		if err := e.ctx.Err(); err != nil {
			return err
		}
		e.stats.Entries++
		// Padding of the previous entry, or anything the walk skipped.
		if err := e.region(e.p, te.hdr, &prev, -1, false); err != nil {
			return err
		}
		hp := e.pairHeader(te)
		hh := hint{base: -1}
		at := int64(-1)
		if hp >= 0 {
			be := e.all[hp]
			hh = hint{base: be.base, delta: be.e.hdr - te.hdr, lo: be.e.hdr, hi: be.e.data, whole: true, paired: true}
			at = be.e.hdr
		}
		if err := e.region(te.hdr, te.data, &hh, at, false); err != nil {
			return err
		}
		if te.size == 0 {
			prev = hh
			return nil
		}
		ch, err := e.content(te, hp)
		prev = ch
		return err
	})
	if err != nil {
		return err
	}
	// The end marker, padding, or whatever is not a tar: matched as opaque
	// bytes, first against the tail of the first base.
	th := hint{base: -1}
	at := int64(-1)
	if len(e.bases) > 0 {
		b := e.bases[0]
		th = hint{base: 0, delta: b.tail - end, lo: 0, hi: int64(len(b.b))}
		at = b.tail
	}
	return e.region(end, e.tsize, &th, at, true)
}

// content covers one entry's content: unchanged content is copied, changed
// content is matched against its paired base entry and the anchor index.
func (e *encoder) content(te entry, hp int32) (hint, error) {
	if e.p >= te.end() {
		e.stats.Exact++
		return hint{base: -1}, nil
	}
	if e.p == te.data && te.size <= exactMax {
		b, err := e.tbytes(te.data, int(te.size))
		if err != nil {
			return hint{}, err
		}
		if id, ok := e.byContent[contentKey{te.size, maphash.Bytes(e.seed, b)}]; ok {
			be := e.all[id]
			if bytes.Equal(b, e.bases[be.base].b[be.e.data:be.e.end()]) {
				e.stats.Exact++
				e.emitCopy(te.data, be.base, be.e.data, te.size)
				return hint{base: be.base, delta: be.e.data - te.data, lo: 0, hi: int64(len(e.bases[be.base].b))}, nil
			}
		}
	}
	cp := e.pairContent(te, hp)
	if cp < 0 {
		return hint{base: -1}, e.region(te.data, te.end(), &hint{base: -1}, -1, true)
	}
	e.stats.Paired++
	be := e.all[cp]
	h := hint{base: be.base, delta: be.e.data - te.data, lo: be.e.data, hi: be.e.end(), whole: be.e.size <= wholeDictMax, paired: true}
	return h, e.region(te.data, te.end(), &h, be.e.data, true)
}

func (e *encoder) pairHeader(te entry) int32 {
	if id, ok := e.byPath[te.name]; ok {
		return id
	}
	if c := e.byVer[versionless(te.name)]; len(c) > 0 {
		return e.closest(c, te.size)
	}
	if c := e.byName[versionless(baseName(te.name))]; len(c) > 0 {
		return e.closest(c, te.size)
	}
	return -1
}

func (e *encoder) pairContent(te entry, hp int32) int32 {
	if hp >= 0 && e.all[hp].e.size > 0 && !headerOnly(e.all[hp].e.typ) {
		return hp
	}
	for _, c := range [][]int32{e.byVer[versionless(te.name)], e.byName[versionless(baseName(te.name))]} {
		if id := e.closest(c, te.size); id >= 0 && e.all[id].e.size > 0 {
			return id
		}
	}
	return -1
}

// closest returns the candidate (sorted by size) nearest in size.
func (e *encoder) closest(c []int32, size int64) int32 {
	if len(c) == 0 {
		return -1
	}
	i, _ := slices.BinarySearchFunc(c, size, func(id int32, s int64) int {
		return int(e.all[id].e.size - s)
	})
	switch {
	case i == len(c):
		return c[i-1]
	case i == 0:
		return c[0]
	case size-e.all[c[i-1]].e.size < e.all[c[i]].e.size-size:
		return c[i-1]
	}
	return c[i]
}

// hint says which base bytes correspond to a target range: target position
// p corresponds to base offset p+delta; the dictionary for literals at
// [x, y) is [lo, hi) if whole, else [x+delta-slack, y+delta+slack) clipped
// to [lo, hi).
type hint struct {
	base   int // -1: none
	delta  int64
	lo, hi int64
	whole  bool
	paired bool // set by entry pairing; anchors only refine delta
}

func (h *hint) rangeFor(x, y int64) (baseRange, bool) {
	if h.base < 0 {
		return baseRange{}, false
	}
	a, b := h.lo, h.hi
	if !h.whole {
		slack := min(maxSlack, max(minSlack, y-x))
		a, b = max(a, x+h.delta-slack), min(b, y+h.delta+slack)
	}
	if b <= a {
		return baseRange{}, false
	}
	return baseRange{base: h.base, off: a, n: b - a}, true
}

// observe records anchor evidence that target position tp corresponds to
// base offset bo.
func (e *encoder) observe(h *hint, base int, tp, bo int64) {
	if h.paired {
		if base == h.base && bo >= h.lo && bo < h.hi {
			h.delta = bo - tp
		}
		return
	}
	*h = hint{base: base, delta: bo - tp, lo: 0, hi: int64(len(e.bases[base].b))}
}

// region covers target [start, end) (or what is left of it): continue the
// previous COPY, try the base offset at (which corresponds to start), then
// scan for anchors (scan) or emit literals.
func (e *encoder) region(start, end int64, h *hint, at int64, scan bool) error {
	if start != e.p {
		// Earlier operations may have run past start; nothing is skipped.
		if at >= 0 {
			if at += e.p - start; at < 0 {
				at = -1
			}
		}
		start = e.p
	}
	if start >= end {
		return nil
	}
	n, err := e.continueCopy(start)
	if err != nil {
		return err
	}
	if start += n; start >= end {
		return nil
	}
	if at >= 0 && n > 0 {
		at += n
	}
	if at >= 0 && h.base >= 0 && at < int64(len(e.bases[h.base].b)) {
		n, err := e.extend(start, h.base, at)
		if err != nil {
			return err
		}
		if n >= int64(e.opts.MinCopy) {
			e.emitCopy(start, h.base, at, n)
			if start += n; start >= end {
				return nil
			}
		}
	}
	if scan {
		return e.scan(start, end, h)
	}
	return e.literal(start, end, h)
}

// continueCopy extends the last operation if it is a COPY ending at start.
func (e *encoder) continueCopy(start int64) (int64, error) {
	if !e.lastIsCopy || e.last.tend != start {
		return 0, nil
	}
	n, err := e.extend(start, e.last.base, e.last.off+e.last.n)
	if err != nil || n == 0 {
		return 0, err
	}
	e.emitCopy(start, e.last.base, e.last.off+e.last.n, n)
	return n, nil
}

// extend returns the length of the identical run at target start and base
// offset at.
func (e *encoder) extend(start int64, base int, at int64) (int64, error) {
	b := e.bases[base].b
	var n int64
	for start+n < e.tsize && at+n < int64(len(b)) {
		c := int(min(extendChunk, e.tsize-start-n, int64(len(b))-at-n))
		t, err := e.tbytes(start+n, c)
		if err != nil {
			return 0, err
		}
		k := commonPrefix(t, b[at+n:])
		n += int64(k)
		if k < c {
			break
		}
	}
	return n, nil
}

// literal emits target [start, end) as literal bytes.
func (e *encoder) literal(start, end int64, h *hint) error {
	for start < end {
		n := int(min(extendChunk, end-start))
		b, err := e.tbytes(start, n)
		if err != nil {
			return err
		}
		if err := e.cover(start, b, h, nil); err != nil {
			return err
		}
		start += int64(n)
	}
	return nil
}

// scan covers target [start, end) by looking up content-defined anchors in
// the index: runs of at least MinCopy identical bytes around a hit become
// COPY operations, the rest literals.
func (e *encoder) scan(start, end int64, h *hint) error {
	minCopy := e.opts.MinCopy
	for start < end {
		if err := e.ctx.Err(); err != nil {
			return err
		}
		n, err := e.continueCopy(start)
		if err != nil {
			return err
		}
		if start += n; start >= end {
			return nil
		}
		t, err := e.tbytes(start, int(min(scanPiece, end-start)))
		if err != nil {
			return err
		}
		lit := 0
		var g uint64
		rolled := 0
		limit := e.idx.limit
		for j := 0; j < len(t); j++ {
			g = g<<1 + gearTable[t[j]]
			rolled++
			if g >= limit || rolled < gearWindow {
				continue
			}
			pos, ok := e.idx.m[g]
			if !ok {
				continue
			}
			bi, bo := e.locate(pos)
			b := e.bases[bi].b
			back := commonSuffix(t[lit:j+1], b[:bo])
			if back < gearWindow {
				continue // hash collision
			}
			fwd := commonPrefix(t[j+1:], b[bo:])
			ms := j + 1 - back
			ml := back + fwd
			e.observe(h, bi, start+int64(j)+1, bo)
			if ml < minCopy {
				// Too short for a COPY, but it tells how the target lines
				// up with a base: cover uses it for ADD operations.
				e.seeds = append(e.seeds, seed{t: start + int64(ms), n: ml, a: align{base: bi, d: bo - (start + int64(j) + 1)}})
				j = ms + ml - 1
				rolled = 0
				g = 0
				continue
			}
			if ms > lit {
				if err := e.cover(start+int64(lit), t[lit:ms], h, e.seeds); err != nil {
					return err
				}
			}
			e.seeds = e.seeds[:0]
			e.emitCopy(start+int64(ms), bi, bo-int64(back), int64(ml))
			lit = ms + ml
			j = lit - 1
			rolled = 0
			g = 0
		}
		if lit < len(t) {
			if err := e.cover(start+int64(lit), t[lit:], h, e.seeds); err != nil {
				return err
			}
		}
		e.seeds = e.seeds[:0]
		start += int64(len(t))
	}
	return nil
}

func (e *encoder) emitCopy(tpos int64, base int, off, n int64) {
	e.cur.addCopy(base, off, n, tpos+n)
	e.last = e.cur.ops[len(e.cur.ops)-1]
	e.lastIsCopy = true
	e.lastAlign, e.lastEnd = align{base: base, d: off - tpos}, tpos+n
	e.p = tpos + n
	e.stats.CopyBytes += n
	e.cur.ctlEst += 24
}

// addLiteral appends target bytes at tpos to the current block as literals,
// with the dictionary range the hint gives.
func (e *encoder) addLiteral(tpos int64, b []byte, h *hint) error {
	return e.put(tpos, b, h, nil)
}

// addAdd appends target bytes at tpos to the current block as an ADD
// against the base bytes alignment a gives: their differences become
// literal bytes, which need no dictionary.
func (e *encoder) addAdd(tpos int64, b []byte, a align) error {
	return e.put(tpos, b, nil, &a)
}

// put appends target bytes at tpos to the current block, splitting them at
// block boundaries: as literals with the dictionary range h gives, or, if
// add is set, as an ADD.
func (e *encoder) put(tpos int64, b []byte, h *hint, add *align) error {
	e.lastIsCopy = false
	if add == nil {
		e.lastEnd = -1
	}
	for len(b) > 0 {
		room := e.opts.BlockSize - len(e.cur.lit) - len(e.cur.add)
		if room == 0 || e.cur.ctlEst >= DefaultMaxControl-1024 {
			if err := e.flush(); err != nil {
				return err
			}
			continue
		}
		k := min(room, len(b))
		if add != nil {
			off := tpos + add.d
			base := e.bases[add.base].b[off : off+int64(k)]
			n := len(e.cur.add)
			e.cur.add = append(e.cur.add, b[:k]...)
			subBytes(e.cur.add[n:], base)
			e.cur.addAdd(add.base, off, int64(k), tpos+int64(k))
			e.stats.AddBytes += int64(k)
			e.lastAlign, e.lastEnd = *add, tpos+int64(k)
		} else {
			if r, ok := h.rangeFor(tpos, tpos+int64(k)); ok && e.dictBudget-e.cur.dictEst-r.n >= 0 {
				if !e.cur.addRange(r, e.opts.MaxDict) {
					if len(e.cur.lit) > 0 {
						if err := e.flush(); err != nil {
							return err
						}
						continue
					}
					// One literal piece wants more than MaxDict: keep the part
					// of the range centred on it.
					c := r.off + (r.n-int64(e.opts.MaxDict))/2
					r = baseRange{base: r.base, off: c, n: int64(e.opts.MaxDict)}
					if r.n > 0 {
						e.cur.addRange(r, e.opts.MaxDict)
					}
				}
			}
			e.cur.lit = append(e.cur.lit, b[:k]...)
			e.cur.addLiteral(k, tpos+int64(k))
			e.stats.LiteralBytes += int64(k)
		}
		e.p = tpos + int64(k)
		tpos += int64(k)
		b = b[k:]
	}
	return nil
}

// subBytes sets dst[i] -= src[i] for every i (len(src) >= len(dst)).
func subBytes(dst, src []byte) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] -= src[i]
	}
}

// flush hands the current block to the pipeline.
func (e *encoder) flush() error {
	if len(e.cur.ops) == 0 {
		return nil
	}
	if len(e.cur.lit) == 0 {
		e.cur.ranges = e.cur.ranges[:0]
	}
	e.cur.normalize()
	var dict int64
	for _, r := range e.cur.ranges {
		dict += r.n
	}
	e.dictBudget -= dict
	e.stats.DictBytes += dict
	e.stats.Ops += int64(len(e.cur.ops))
	e.stats.Blocks++
	j := &job{
		ctl:    e.state.appendBlock(nil, &e.cur),
		lit:    e.cur.lit,
		add:    e.cur.add,
		ranges: slices.Clone(e.cur.ranges),
		done:   e.cur.ops[len(e.cur.ops)-1].tend,
		ready:  make(chan struct{}),
	}
	if err := e.out.submit(j); err != nil {
		return err
	}
	e.cur = block{lit: e.out.litBuf(), add: e.out.litBuf(), ranges: e.cur.ranges[:0], ops: e.cur.ops[:0]}
	return nil
}
