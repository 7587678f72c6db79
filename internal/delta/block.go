package delta

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// baseRange is a byte range of a base.
type baseRange struct {
	base int
	off  int64
	n    int64
}

// op is one operation of a block: kind is opLiteral, opCopy or opAdd. tend
// is the target offset just after the bytes it produces.
type op struct {
	kind byte
	base int
	off  int64
	n    int64
	tend int64
}

// block is the unit the decoder holds in memory: up to BlockSize literal
// bytes, a dictionary of up to MaxDict base bytes, and the operations that
// interleave literals with COPYs.
type block struct {
	lit     []byte
	add     []byte // the differences ADD operations add to base bytes
	ranges  []baseRange
	ops     []op
	dictEst int64 // upper bound of the union of ranges
	ctlEst  int   // upper bound of the encoded control section
}

func (b *block) addLiteral(n int, tend int64) {
	if k := len(b.ops); k > 0 && b.ops[k-1].kind == opLiteral {
		b.ops[k-1].n += int64(n)
		b.ops[k-1].tend = tend
		return
	}
	b.ops = append(b.ops, op{kind: opLiteral, n: int64(n), tend: tend})
	b.ctlEst += binary.MaxVarintLen64
}

func (b *block) addCopy(base int, off, n, tend int64) {
	if k := len(b.ops); k > 0 {
		l := &b.ops[k-1]
		if l.kind == opCopy && l.base == base && l.off+l.n == off && l.tend == tend-n {
			l.n += n
			l.tend = tend
			return
		}
	}
	b.ops = append(b.ops, op{kind: opCopy, base: base, off: off, n: n, tend: tend})
	b.ctlEst += 3 * binary.MaxVarintLen64
}

// addAdd appends an ADD of n base bytes at off (n literal bytes of the
// block are their differences to the target).
func (b *block) addAdd(base int, off, n, tend int64) {
	if k := len(b.ops); k > 0 {
		l := &b.ops[k-1]
		if l.kind == opAdd && l.base == base && l.off+l.n == off && l.tend == tend-n {
			l.n += n
			l.tend = tend
			return
		}
	}
	b.ops = append(b.ops, op{kind: opAdd, base: base, off: off, n: n, tend: tend})
	b.ctlEst += 3 * binary.MaxVarintLen64
}

// addRange adds r to the block's dictionary unless the union would exceed
// maxDict bytes or DefaultMaxDictRanges ranges.
func (b *block) addRange(r baseRange, maxDict int) bool {
	if k := len(b.ranges); k > 0 {
		l := &b.ranges[k-1]
		if l.base == r.base && r.off <= l.off+l.n && r.off+r.n >= l.off {
			lo, hi := min(l.off, r.off), max(l.off+l.n, r.off+r.n)
			if add := hi - lo - l.n; b.dictEst+add <= int64(maxDict) {
				l.off, l.n = lo, hi-lo
				b.dictEst += add
				return true
			}
		}
	}
	if len(b.ranges) >= DefaultMaxDictRanges-1 {
		return false
	}
	if b.dictEst+r.n <= int64(maxDict) {
		b.ranges = append(b.ranges, r)
		b.dictEst += r.n
		b.ctlEst += 3 * binary.MaxVarintLen64
		return true
	}
	tmp := normalizeRanges(append(slices.Clone(b.ranges), r))
	var size int64
	for _, x := range tmp {
		size += x.n
	}
	if size > int64(maxDict) {
		return false
	}
	b.ranges, b.dictEst = tmp, size
	b.ctlEst += 3 * binary.MaxVarintLen64
	return true
}

func (b *block) normalize() { b.ranges = normalizeRanges(b.ranges) }

// normalizeRanges sorts ranges by base and offset and merges those that
// overlap or touch, so that the decoder reads each base byte once.
func normalizeRanges(rs []baseRange) []baseRange {
	slices.SortFunc(rs, func(a, b baseRange) int {
		if a.base != b.base {
			return a.base - b.base
		}
		switch {
		case a.off < b.off:
			return -1
		case a.off > b.off:
			return 1
		}
		return 0
	})
	out := rs[:0]
	for _, r := range rs {
		if k := len(out); k > 0 && out[k-1].base == r.base && r.off <= out[k-1].off+out[k-1].n {
			out[k-1].n = max(out[k-1].n, r.off+r.n-out[k-1].off)
			continue
		}
		out = append(out, r)
	}
	return out
}

// ctlState is the state both sides keep to delta-code offsets: the end of
// the previous dictionary range and of the previous COPY in each base, and
// the base of the previous COPY.
type ctlState struct {
	rangePrev []int64
	copyPrev  []int64
	cur       int
}

func newCtlState(n int) *ctlState {
	return &ctlState{rangePrev: make([]int64, n), copyPrev: make([]int64, n), cur: -1}
}

// appendBlock encodes the control section of b: the dictionary ranges, then
// the operations, then opEnd.
func (s *ctlState) appendBlock(dst []byte, b *block) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b.ranges)))
	for _, r := range b.ranges {
		dst = binary.AppendUvarint(dst, uint64(r.base))
		dst = binary.AppendVarint(dst, r.off-s.rangePrev[r.base])
		dst = binary.AppendUvarint(dst, uint64(r.n))
		s.rangePrev[r.base] = r.off + r.n
	}
	for _, o := range b.ops {
		switch o.kind {
		case opLiteral:
			dst = binary.AppendUvarint(dst, uint64(o.n)<<2|opLiteral)
			continue
		case opAdd:
			dst = binary.AppendUvarint(dst, uint64(o.n)<<2|opAdd)
			dst = binary.AppendUvarint(dst, uint64(o.base))
			dst = binary.AppendVarint(dst, o.off-s.copyPrev[o.base])
			s.copyPrev[o.base] = o.off + o.n
			s.cur = o.base
			continue
		}
		if o.base == s.cur {
			dst = binary.AppendUvarint(dst, uint64(o.n)<<2|opCopy)
		} else {
			dst = binary.AppendUvarint(dst, uint64(o.n)<<2|opCopyBase)
			dst = binary.AppendUvarint(dst, uint64(o.base))
			s.cur = o.base
		}
		dst = binary.AppendVarint(dst, o.off-s.copyPrev[o.base])
		s.copyPrev[o.base] = o.off + o.n
	}
	return binary.AppendUvarint(dst, opEnd)
}

// smallBlock is the size of literals plus dictionary below which a block
// is compressed by the smaller encoder.
const smallBlock = 256 << 10

// job is a block on its way through the pipeline.
type job struct {
	ctl    []byte
	lit    []byte
	add    []byte
	ranges []baseRange
	done   int64 // target bytes covered once this block is written
	ready  chan struct{}

	ctlFrame, litFrame, addFrame []byte
	err                          error
}

// pipeline compresses blocks on Concurrency workers and writes them in
// order, after the header, which waits for the target's SHA-256.
type pipeline struct {
	ctx    context.Context
	cancel context.CancelFunc
	work   chan *job
	order  chan *job
	free   chan []byte
	wg     sync.WaitGroup
	result chan error

	mu       sync.Mutex
	err      error
	finished bool
	litCap   int
}

func newPipeline(ctx context.Context, w io.Writer, hdr Header, sumc <-chan hashResult, bases []*baseData, opts EncodeOptions, stats *Stats) *pipeline {
	ctx, cancel := context.WithCancel(ctx)
	n := opts.Concurrency
	p := &pipeline{
		ctx:    ctx,
		cancel: cancel,
		work:   make(chan *job, n),
		order:  make(chan *job, n+1),
		free:   make(chan []byte, 4*n+6),
		result: make(chan error, 1),
		litCap: int(min(int64(opts.BlockSize), max(hdr.TargetSize, 4<<10))),
	}
	for range n {
		p.wg.Add(1)
		go p.worker(bases, opts)
	}
	go func() { p.result <- p.write(w, hdr, sumc, opts, stats) }()
	return p
}

func (p *pipeline) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
	p.cancel()
}

func (p *pipeline) firstErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	return p.ctx.Err()
}

func (p *pipeline) litBuf() []byte {
	select {
	case b := <-p.free:
		return b[:0]
	default:
		return make([]byte, 0, p.litCap)
	}
}

func (p *pipeline) submit(j *job) error {
	select {
	case p.order <- j:
	case <-p.ctx.Done():
		return p.firstErr()
	}
	select {
	case p.work <- j:
	case <-p.ctx.Done():
		return p.firstErr()
	}
	return nil
}

// close ends the pipeline: with err == nil it waits for every block and
// the end marker to be written; otherwise it abandons the output.
func (p *pipeline) close(err error) error {
	if err != nil {
		p.fail(err)
	}
	p.mu.Lock()
	p.finished = err == nil
	p.mu.Unlock()
	close(p.work)
	close(p.order)
	p.wg.Wait()
	werr := <-p.result
	p.cancel()
	if err != nil {
		return err
	}
	return werr
}

func zstdLevel(l Level) zstd.EncoderLevel {
	switch l {
	case LevelFastest:
		return zstd.SpeedFastest
	case LevelDefault:
		return zstd.SpeedDefault
	case LevelBetter:
		return zstd.SpeedBetterCompression
	}
	return zstd.SpeedBestCompression
}

// encoders are one worker's zstd encoders: lit for literal frames (and the
// ADD differences), small for blocks of at most smallBlock bytes, ctl for
// control sections.
type encoders struct {
	lit, small, ctl *zstd.Encoder
}

type encoderKey struct {
	level Level
	win   int
}

// encoderPools keeps encoders between Encode calls (per level and window):
// faulting in the best level's 68 MiB of fresh tables took 0.3 s here, more
// than a typical block costs to compress.
var encoderPools sync.Map // encoderKey -> *sync.Pool

// getEncoders returns a worker's encoders, from the pool if it has some.
func getEncoders(opts EncodeOptions) (*encoders, encoderKey, error) {
	// The window must reach over the dictionary and the block for matches
	// into the dictionary to be found.
	win := 1 << bits.Len(uint(opts.MaxDict+opts.BlockSize-1))
	win = max(min(win, zstd.MaxWindowSize), zstd.MinWindowSize)
	key := encoderKey{level: opts.Level, win: win}
	pool, _ := encoderPools.LoadOrStore(key, &sync.Pool{})
	if e, ok := pool.(*sync.Pool).Get().(*encoders); ok {
		return e, key, nil
	}
	lit, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstdLevel(opts.Level)), zstd.WithWindowSize(win),
		zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, key, err
	}
	small, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(min(zstdLevel(opts.Level), zstd.SpeedBetterCompression)),
		zstd.WithWindowSize(smallBlock), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, key, err
	}
	ctl, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression),
		zstd.WithWindowSize(DefaultMaxControl), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, key, err
	}
	return &encoders{lit: lit, small: small, ctl: ctl}, key, nil
}

// putEncoders returns a worker's encoders to the pool. Their last
// dictionary is the worker's own buffer, never a base's memory (see worker).
func putEncoders(e *encoders, key encoderKey) {
	if pool, ok := encoderPools.Load(key); ok {
		pool.(*sync.Pool).Put(e)
	}
}

func (p *pipeline) worker(bases []*baseData, opts EncodeOptions) {
	defer p.wg.Done()
	var encs *encoders
	var dictBuf []byte
	for j := range p.work {
		if p.ctx.Err() != nil {
			j.err = p.firstErr()
			close(j.ready)
			continue
		}
		if encs == nil {
			// Only when a block comes: a worker without work allocates
			// nothing.
			e, key, err := getEncoders(opts)
			if err != nil {
				j.err = fmt.Errorf("delta encoder: %w", err)
				p.fail(j.err)
				close(j.ready)
				continue
			}
			encs = e
			defer putEncoders(e, key)
		}
		lit, small, ctl := encs.lit, encs.small, encs.ctl
		var dict []byte
		if len(j.ranges) > 0 {
			// Always a copy, also for one range: the encoder keeps a
			// reference to its last dictionary, and a base may be a
			// mapped file that Encode unmaps when it returns.
			if dictBuf == nil {
				dictBuf = make([]byte, 0, opts.MaxDict) // not grown by doubling, block after block
			}
			dictBuf = dictBuf[:0]
			for _, r := range j.ranges {
				dictBuf = append(dictBuf, bases[r.base].b[r.off:r.off+r.n]...)
			}
			dict = dictBuf
		}
		if len(j.lit) > 0 {
			// The best level resets 68 MiB of tables per frame: small
			// blocks go to the next level, whose tables are 16x smaller.
			enc := lit
			if len(j.lit)+len(dict) <= smallBlock {
				enc = small
			}
			// Every block gets a (possibly empty) raw dictionary so that the
			// encoder keeps its dictionary-capable state between blocks.
			// The streaming API loads the dictionary once, in the reset;
			// EncodeAll would load it a second time into another encoder.
			var out bytes.Buffer
			out.Grow(len(j.lit)/2 + 64)
			err := enc.ResetWithOptions(&out, zstd.WithEncoderDictRaw(0, dict))
			if err == nil {
				_, err = enc.Write(j.lit)
			}
			if err == nil {
				err = enc.Close()
			}
			if err != nil {
				j.err = fmt.Errorf("delta encoder: %w", err)
				p.fail(j.err)
				close(j.ready)
				continue
			}
			j.litFrame = out.Bytes()
		}
		if len(j.add) > 0 {
			// Differences are mostly zeros; no dictionary helps them.
			// The literal encoder, with an empty dictionary: a second best
			// level encoder would cost another 136 MiB of tables.
			var out bytes.Buffer
			out.Grow(len(j.add)/8 + 64)
			err := lit.ResetWithOptions(&out, zstd.WithEncoderDictRaw(0, nil))
			if err == nil {
				_, err = lit.Write(j.add)
			}
			if err == nil {
				err = lit.Close()
			}
			if err != nil {
				j.err = fmt.Errorf("delta encoder: %w", err)
				p.fail(j.err)
				close(j.ready)
				continue
			}
			j.addFrame = out.Bytes()
		}
		j.ctlFrame = ctl.EncodeAll(j.ctl, nil)
		close(j.ready)
	}
}

type countWriter struct {
	w io.Writer
	n *int64
}

func (c countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	*c.n += int64(n)
	return n, err
}

func (p *pipeline) write(w io.Writer, hdr Header, sumc <-chan hashResult, opts EncodeOptions, stats *Stats) error {
	err := p.writeBlocks(w, hdr, sumc, opts, stats)
	if err != nil {
		p.fail(err)
	}
	// Drain so that the producer never blocks on a dead writer.
	for range p.order {
	}
	return err
}

func (p *pipeline) writeBlocks(w io.Writer, hdr Header, sumc <-chan hashResult, opts EncodeOptions, stats *Stats) error {
	var sum hashResult
	select {
	case sum = <-sumc:
	case <-p.ctx.Done():
		return p.firstErr()
	}
	if sum.err != nil {
		return sum.err
	}
	hdr.Target = sum.d
	bw := bufio.NewWriterSize(countWriter{w: w, n: &stats.DeltaSize}, 256<<10)
	h, err := appendHeader(nil, hdr)
	if err != nil {
		return err
	}
	if _, err := bw.Write(h); err != nil {
		return fmt.Errorf("delta write: %w", err)
	}
	var rec []byte
	for j := range p.order {
		select {
		case <-j.ready:
		case <-p.ctx.Done():
			return p.firstErr()
		}
		if j.err != nil {
			return j.err
		}
		stats.ControlBytes += int64(len(j.ctlFrame))
		rec = append(rec[:0], tagBlock)
		rec = binary.AppendUvarint(rec, uint64(len(j.ctl)))
		rec = binary.AppendUvarint(rec, uint64(len(j.ctlFrame)))
		rec = append(rec, j.ctlFrame...)
		rec = binary.AppendUvarint(rec, uint64(len(j.lit)))
		rec = binary.AppendUvarint(rec, uint64(len(j.litFrame)))
		if _, err := bw.Write(rec); err != nil {
			return fmt.Errorf("delta write: %w", err)
		}
		if _, err := bw.Write(j.litFrame); err != nil {
			return fmt.Errorf("delta write: %w", err)
		}
		rec = binary.AppendUvarint(rec[:0], uint64(len(j.add)))
		rec = binary.AppendUvarint(rec, uint64(len(j.addFrame)))
		if _, err := bw.Write(rec); err != nil {
			return fmt.Errorf("delta write: %w", err)
		}
		if _, err := bw.Write(j.addFrame); err != nil {
			return fmt.Errorf("delta write: %w", err)
		}
		for _, b := range [][]byte{j.lit, j.add} {
			select {
			case p.free <- b:
			default:
			}
		}
		if opts.Progress != nil {
			opts.Progress(j.done, hdr.TargetSize)
		}
	}
	p.mu.Lock()
	finished := p.finished
	p.mu.Unlock()
	if !finished {
		return nil
	}
	if err := bw.WriteByte(tagEnd); err != nil {
		return fmt.Errorf("delta write: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("delta write: %w", err)
	}
	return nil
}
