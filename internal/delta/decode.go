package delta

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/bits"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// Base is a layer the receiver holds (decoder) or the sender compares
// against (encoder): the uncompressed tar, addressed by its SHA-256 digest
// (the layer's diffID) and read at random offsets, typically from a file.
type Base struct {
	Digest digest.Digest
	Size   int64
	R      io.ReaderAt
}

// copyBufSize is the chunk in which COPY operations move base bytes to the
// output: large enough for efficient reads, small next to the block buffers.
const copyBufSize = 256 << 10

// Decode rebuilds the target tar from delta and bases, writing it to w as it
// goes. bases must include every base the header names (matched by digest,
// in any order; extra ones are ignored). It returns nil only if the output
// had exactly the declared size and SHA-256; otherwise the bytes already
// written to w must be discarded. Errors wrap errdef.ErrInvalid (malformed
// delta), errdef.ErrTooLarge (a limit was hit), errdef.ErrNotFound (a base
// is missing), errdef.ErrSizeMismatch or errdef.ErrDigestMismatch (wrong
// base or corrupted delta).
func Decode(ctx context.Context, w io.Writer, delta io.Reader, bases []Base, lim Limits) error {
	lim = lim.withDefaults()
	br := bufio.NewReaderSize(delta, 64<<10)
	h, err := readHeader(br, br)
	if err != nil {
		return err
	}
	if err := lim.check(h); err != nil {
		return err
	}
	d := &decoder{
		ctx:       ctx,
		br:        br,
		h:         h,
		lim:       lim,
		w:         w,
		sum:       sha256.New(),
		rangePrev: make([]int64, len(h.Bases)),
		copyPrev:  make([]int64, len(h.Bases)),
		cur:       -1,
	}
	if d.bases, err = resolveBases(h.Bases, bases); err != nil {
		return err
	}
	// Dictionary bytes read per block are bounded by MaxDict, and their sum
	// by a multiple of the target size, so that decoding work stays linear
	// in the (limited) output even for a hostile delta.
	d.dictBudget = 4*h.TargetSize + 64<<20
	// DecodeAll decodes into our buffers, so the window a frame declares
	// costs no memory; it only has to reach over dictionary and block.
	win := uint64(1) << bits.Len64(uint64(h.MaxDict+max(h.MaxLiteral, h.MaxControl)))
	d.zd, err = zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxWindow(win),
		// MaxMemory also caps the window; output is capped by the
		// capacity of the destination (WithDecodeAllCapLimit).
		zstd.WithDecoderMaxMemory(win))
	if err != nil {
		return fmt.Errorf("delta decoder: %w", err)
	}
	defer d.zd.Close()
	return d.run()
}

func resolveBases(refs []BaseRef, have []Base) ([]Base, error) {
	out := make([]Base, len(refs))
	for i, ref := range refs {
		found := false
		for _, b := range have {
			if b.Digest != ref.Digest {
				continue
			}
			if b.R == nil {
				return nil, fmt.Errorf("delta base %s: no reader: %w", ref.Digest, errdef.ErrInvalid)
			}
			if b.Size != ref.Size {
				return nil, fmt.Errorf("delta base %s: size %d, delta expects %d: %w", ref.Digest, b.Size, ref.Size, errdef.ErrSizeMismatch)
			}
			out[i], found = b, true
			break
		}
		if !found {
			return nil, fmt.Errorf("delta base %s: %w", ref.Digest, errdef.ErrNotFound)
		}
	}
	return out, nil
}

type decoder struct {
	ctx   context.Context
	br    *bufio.Reader
	h     Header
	lim   Limits
	bases []Base
	zd    *zstd.Decoder

	w       io.Writer
	sum     hash.Hash
	written int64

	ops        int64
	dictBudget int64
	rangePrev  []int64 // end of the previous dictionary range, per base
	copyPrev   []int64 // end of the previous COPY, per base
	cur        int     // base of the previous COPY

	in, ctl, dict, lit, add []byte
	copyBuf                 []byte
	ranges                  []baseRange
}

func (d *decoder) run() error {
	for {
		if err := d.ctx.Err(); err != nil {
			return err
		}
		tag, err := d.br.ReadByte()
		if err != nil {
			return fmt.Errorf("delta block: %w: %w", errdef.ErrInvalid, noEOF(err))
		}
		switch tag {
		case tagBlock:
			if err := d.block(); err != nil {
				return err
			}
		case tagEnd:
			return d.finish()
		default:
			return fmt.Errorf("delta block tag %#x: %w", tag, errdef.ErrInvalid)
		}
	}
}

func (d *decoder) finish() error {
	if d.written != d.h.TargetSize {
		return fmt.Errorf("delta output %d bytes, header declares %d: %w", d.written, d.h.TargetSize, errdef.ErrSizeMismatch)
	}
	got := digest.NewDigestFromBytes(digest.SHA256, d.sum.Sum(nil))
	if got != d.h.Target {
		return fmt.Errorf("delta output %s, header declares %s: %w", got, d.h.Target, errdef.ErrDigestMismatch)
	}
	if _, err := d.br.ReadByte(); !errors.Is(err, io.EOF) {
		if err != nil {
			return fmt.Errorf("delta end: %w", err)
		}
		return fmt.Errorf("delta: trailing bytes after end: %w", errdef.ErrInvalid)
	}
	return nil
}

// frame reads a length-prefixed zstd frame that decodes to exactly rawLen
// bytes into buf, using dict (nil for none).
func (d *decoder) frame(buf []byte, rawLen int, dict []byte, what string) ([]byte, error) {
	n, err := readUvarintLimit(d.br, uint64(frameBound(rawLen)), what+" frame length")
	if err != nil {
		return nil, err
	}
	if rawLen == 0 {
		if n != 0 {
			return nil, fmt.Errorf("delta %s: frame for empty section: %w", what, errdef.ErrInvalid)
		}
		return buf[:0], nil
	}
	d.in = grow(d.in, int(n))
	if _, err := io.ReadFull(d.br, d.in[:n]); err != nil {
		return nil, fmt.Errorf("delta %s frame: %w: %w", what, errdef.ErrInvalid, noEOF(err))
	}
	opt := zstd.WithDecoderDictDelete()
	if len(dict) > 0 {
		opt = zstd.WithDecoderDictRaw(0, dict)
	}
	if err := d.zd.ResetWithOptions(nil, opt); err != nil {
		return nil, fmt.Errorf("delta %s frame: %w", what, err)
	}
	buf = grow(buf, rawLen)
	out, err := d.zd.DecodeAll(d.in[:n], buf[:0:rawLen])
	if err != nil {
		return nil, fmt.Errorf("delta %s frame: %w: %w", what, errdef.ErrInvalid, err)
	}
	if len(out) != rawLen {
		return nil, fmt.Errorf("delta %s frame decoded to %d bytes, want %d: %w", what, len(out), rawLen, errdef.ErrInvalid)
	}
	return out, nil
}

func (d *decoder) block() error {
	ctlLen, err := readUvarintLimit(d.br, uint64(d.h.MaxControl), "control length")
	if err != nil {
		return err
	}
	if ctlLen == 0 {
		return fmt.Errorf("delta: empty control section: %w", errdef.ErrInvalid)
	}
	if d.ctl, err = d.frame(d.ctl, int(ctlLen), nil, "control"); err != nil {
		return err
	}
	p := &parser{b: d.ctl}
	dict, err := d.readDict(p)
	if err != nil {
		return err
	}
	litLen, err := readUvarintLimit(d.br, uint64(d.h.MaxLiteral), "literal length")
	if err != nil {
		return err
	}
	if litLen == 0 && len(dict) > 0 {
		return fmt.Errorf("delta: dictionary without literals: %w", errdef.ErrInvalid)
	}
	if d.lit, err = d.frame(d.lit, int(litLen), dict, "literal"); err != nil {
		return err
	}
	d.add = d.add[:0]
	if d.h.Version >= 2 {
		// ADD differences; together with the literals at most MaxLiteral.
		addLen, err := readUvarintLimit(d.br, uint64(d.h.MaxLiteral)-litLen, "add length")
		if err != nil {
			return err
		}
		if d.add, err = d.frame(d.add, int(addLen), nil, "add"); err != nil {
			return err
		}
	}
	return d.execute(p, d.lit, d.add)
}

// readDict parses the block's dictionary ranges and reads them from the
// bases into one buffer.
func (d *decoder) readDict(p *parser) ([]byte, error) {
	n := p.uvarint(uint64(d.lim.MaxDictRanges))
	d.ranges = d.ranges[:0]
	var total int64
	for i := uint64(0); i < n && p.err == nil; i++ {
		if len(d.bases) == 0 {
			p.fail("dictionary range without bases")
			break
		}
		bi := int(p.uvarint(uint64(len(d.bases) - 1)))
		off, ok := rel(d.rangePrev[bi], p.varint(), d.bases[bi].Size)
		ln := int64(p.uvarint(uint64(d.h.MaxDict)))
		if p.err != nil {
			break
		}
		if !ok || ln <= 0 || ln > d.bases[bi].Size-off {
			return nil, fmt.Errorf("delta dictionary range %d+%d outside base %d: %w", off, ln, bi, errdef.ErrInvalid)
		}
		if total += ln; total > int64(d.h.MaxDict) {
			return nil, fmt.Errorf("delta dictionary exceeds %d bytes: %w", d.h.MaxDict, errdef.ErrTooLarge)
		}
		d.rangePrev[bi] = off + ln
		d.ranges = append(d.ranges, baseRange{base: bi, off: off, n: ln})
	}
	if p.err != nil {
		return nil, fmt.Errorf("delta dictionary: %w", p.err)
	}
	if d.dictBudget -= total; d.dictBudget < 0 {
		return nil, fmt.Errorf("delta dictionaries exceed budget: %w", errdef.ErrTooLarge)
	}
	if cap(d.dict) < int(total) {
		d.dict = make([]byte, total)
	}
	d.dict = d.dict[:total]
	at := 0
	for _, r := range d.ranges {
		if err := readFullAt(d.bases[r.base], d.dict[at:at+int(r.n)], r.off); err != nil {
			return nil, err
		}
		at += int(r.n)
	}
	return d.dict, nil
}

// execute runs the block's operations.
func (d *decoder) execute(p *parser, lit, add []byte) error {
	produced := false
	for {
		tag := p.uvarint(1<<63 - 1)
		kind, n := tag&3, int64(tag>>2)
		if p.err != nil {
			return fmt.Errorf("delta operation: %w", p.err)
		}
		if kind == opEnd && n == 0 {
			break
		}
		if kind == opAdd && d.h.Version < 2 {
			return fmt.Errorf("delta: ADD operation in a version %d delta: %w", d.h.Version, errdef.ErrInvalid)
		}
		if d.ops++; d.ops > d.lim.MaxOps {
			return fmt.Errorf("delta has more than %d operations: %w", d.lim.MaxOps, errdef.ErrTooLarge)
		}
		if n <= 0 {
			return fmt.Errorf("delta operation of length 0: %w", errdef.ErrInvalid)
		}
		if n > d.h.TargetSize-d.written {
			return fmt.Errorf("delta output exceeds declared size %d: %w", d.h.TargetSize, errdef.ErrInvalid)
		}
		produced = true
		switch kind {
		case opLiteral:
			if n > int64(len(lit)) {
				return fmt.Errorf("delta literal of %d bytes, %d left: %w", n, len(lit), errdef.ErrInvalid)
			}
			if err := d.write(lit[:n]); err != nil {
				return err
			}
			lit = lit[n:]
		case opAdd:
			bi := int(p.uvarint(uint64(max(len(d.bases)-1, 0))))
			if len(d.bases) == 0 {
				p.fail("add without bases")
			}
			delta := p.varint()
			if p.err != nil {
				return fmt.Errorf("delta add: %w", p.err)
			}
			b := d.bases[bi]
			off, ok := rel(d.copyPrev[bi], delta, b.Size)
			if !ok || n > b.Size-off {
				return fmt.Errorf("delta add %d+%d outside base %d of %d bytes: %w", off, n, bi, b.Size, errdef.ErrInvalid)
			}
			if n > int64(len(add)) {
				return fmt.Errorf("delta add of %d bytes, %d difference bytes left: %w", n, len(add), errdef.ErrInvalid)
			}
			if err := d.addBase(b, off, add[:n]); err != nil {
				return err
			}
			add = add[n:]
			d.cur = bi
			d.copyPrev[bi] = off + n
		case opCopyBase, opCopy:
			if kind == opCopyBase {
				d.cur = int(p.uvarint(uint64(len(d.bases) - 1)))
				if len(d.bases) == 0 {
					p.fail("copy without bases")
				}
			} else if d.cur < 0 {
				p.fail("copy before any base was named")
			}
			delta := p.varint()
			if p.err != nil {
				return fmt.Errorf("delta copy: %w", p.err)
			}
			b := d.bases[d.cur]
			off, ok := rel(d.copyPrev[d.cur], delta, b.Size)
			if !ok || n > b.Size-off {
				return fmt.Errorf("delta copy %d+%d outside base %d of %d bytes: %w", off, n, d.cur, b.Size, errdef.ErrInvalid)
			}
			if err := d.copyBase(b, off, n); err != nil {
				return err
			}
			d.copyPrev[d.cur] = off + n
		}
	}
	switch {
	case len(lit) != 0:
		return fmt.Errorf("delta block leaves %d literal bytes unused: %w", len(lit), errdef.ErrInvalid)
	case len(add) != 0:
		return fmt.Errorf("delta block leaves %d difference bytes unused: %w", len(add), errdef.ErrInvalid)
	case len(p.b) != 0:
		return fmt.Errorf("delta block has %d trailing control bytes: %w", len(p.b), errdef.ErrInvalid)
	case !produced:
		return fmt.Errorf("delta block produces no output: %w", errdef.ErrInvalid)
	}
	return nil
}

// rel returns prev+delta if it lies within [0, size].
func rel(prev, delta, size int64) (int64, bool) {
	if delta < -prev || delta > size-prev {
		return 0, false
	}
	return prev + delta, true
}

func (d *decoder) copyBase(b Base, off, n int64) error {
	if d.copyBuf == nil {
		d.copyBuf = make([]byte, copyBufSize)
	}
	for n > 0 {
		if err := d.ctx.Err(); err != nil {
			return err
		}
		c := d.copyBuf[:min(n, int64(len(d.copyBuf)))]
		if err := readFullAt(b, c, off); err != nil {
			return err
		}
		if err := d.write(c); err != nil {
			return err
		}
		off += int64(len(c))
		n -= int64(len(c))
	}
	return nil
}

// addBase writes base bytes at off plus the literal bytes lit, bytewise
// modulo 256 (bsdiff's diff bytes: mostly zero where an approximately
// matching base region lines up with the target).
func (d *decoder) addBase(b Base, off int64, lit []byte) error {
	if d.copyBuf == nil {
		d.copyBuf = make([]byte, copyBufSize)
	}
	for len(lit) > 0 {
		if err := d.ctx.Err(); err != nil {
			return err
		}
		c := d.copyBuf[:min(len(lit), len(d.copyBuf))]
		if err := readFullAt(b, c, off); err != nil {
			return err
		}
		addBytes(c, lit[:len(c)])
		if err := d.write(c); err != nil {
			return err
		}
		off += int64(len(c))
		lit = lit[len(c):]
	}
	return nil
}

// addBytes sets dst[i] += src[i] for every i (len(src) >= len(dst)).
func addBytes(dst, src []byte) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] += src[i]
	}
}

func (d *decoder) write(b []byte) error {
	d.sum.Write(b)
	d.written += int64(len(b))
	if _, err := d.w.Write(b); err != nil {
		return fmt.Errorf("delta output: %w", err)
	}
	return nil
}

func readFullAt(b Base, p []byte, off int64) error {
	n, err := b.R.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("delta base %s: short read at %d: %w", b.Digest, off, errdef.ErrSizeMismatch)
	}
	return fmt.Errorf("delta base %s: read at %d: %w", b.Digest, off, err)
}

// grow returns b with capacity for at least n bytes, keeping its contents.
func grow(b []byte, n int) []byte {
	if cap(b) >= n {
		return b
	}
	nb := make([]byte, len(b), n)
	copy(nb, b)
	return nb
}
