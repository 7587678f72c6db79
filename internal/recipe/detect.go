package recipe

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync/atomic"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/verify"
)

// DefaultMaxTarSize is the default bound on the uncompressed size Detect
// accepts (WithMaxTarSize). It is above the largest layers seen in practice
// (CUDA and model images); deflate cannot expand more than about 1032:1,
// but a zstd frame of RLE blocks can, so a bound is needed either way.
const DefaultMaxTarSize int64 = 32 << 30

// maxZstdWindow is the largest window any zstd candidate writes
// (klauspost/compress/zstd's default, 8 MiB). A frame asking for more cannot
// be reproduced, so the decoder refuses it rather than allocate it.
const maxZstdWindow = 8 << 20

// chunkSize is how much uncompressed data Detect feeds the candidates at a
// time, and the read buffer of the blob.
const chunkSize = 128 << 10

// Option configures Detect.
type Option func(*options) error

type options struct {
	maxTarSize int64
}

// WithMaxTarSize bounds the uncompressed size of the blob: Detect fails with
// errdef.ErrTooLarge as soon as decompression passes n bytes, so a
// decompression bomb costs at most n bytes of work. It does not apply to
// uncompressed blobs. The default is DefaultMaxTarSize.
func WithMaxTarSize(n int64) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("max tar size %d: must be positive: %w", n, errdef.ErrInvalid)
		}
		o.maxTarSize = n
		return nil
	}
}

// NoMatchError reports a blob that none of the candidate encoders
// reproduces. Callers fall back to fetching the full blob. It matches
// errdef.ErrUnsupported.
type NoMatchError struct {
	Digest digest.Digest
	Format Format
	// Reason says why when it is not simply that every candidate's output
	// differed ("multi-member gzip", "unknown format").
	Reason string
	// Tried is the number of candidates tried.
	Tried int
	// Closest is the candidate whose output matched the longest prefix of
	// the blob, and ClosestPrefix the length of that prefix in bytes.
	Closest       Recipe
	ClosestPrefix int64
}

func (e *NoMatchError) Error() string {
	switch {
	case e.Reason != "":
		return fmt.Sprintf("recipe %s: %s: no recipe", e.Digest, e.Reason)
	case e.Tried == 0:
		return fmt.Sprintf("recipe %s: no candidate for %s: no recipe", e.Digest, e.Format)
	default:
		return fmt.Sprintf("recipe %s: none of %d %s candidates reproduces it (closest: %s, first %d bytes): no recipe",
			e.Digest, e.Tried, e.Format, e.Closest, e.ClosestPrefix)
	}
}

// Unwrap returns errdef.ErrUnsupported.
func (e *NoMatchError) Unwrap() error { return errdef.ErrUnsupported }

// Detect finds how blob (size bytes, expected to hash to d) was compressed.
//
// It decompresses the blob as a stream and feeds the uncompressed bytes to
// the candidate encoders of a stage at once (see candidateStages). Each
// candidate writes into a comparer that reads the original bytes back from
// blob and drops the candidate at its first differing byte, so a wrong
// candidate costs only the prefix it takes to diverge, usually under 200
// KiB, and memory stays bounded whatever the size of the layer. A layer made
// with a tool's default settings is decompressed once; when every candidate
// of the first stage fails, the next stage starts again from the beginning
// of the blob. The first candidate that reproduces the whole blob is
// returned, with the blob's gzip header. An uncompressed tar gives a
// FormatNone recipe. blob is read from several goroutines at once, as
// io.ReaderAt allows.
//
// Errors: a blob that no candidate reproduces (another encoder, a
// multi-member gzip, a multi-frame zstd, an unknown format) is a
// *NoMatchError, which matches errdef.ErrUnsupported; a corrupt or truncated
// blob wraps errdef.ErrInvalid; content that does not hash to d matches
// errdef.ErrDigestMismatch; a blob that decompresses to more than the
// maximum tar size wraps errdef.ErrTooLarge.
func Detect(ctx context.Context, blob io.ReaderAt, size int64, d digest.Digest, opts ...Option) (Recipe, error) {
	o := options{maxTarSize: DefaultMaxTarSize}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return Recipe{}, fmt.Errorf("detect recipe: %w", err)
		}
	}
	if err := d.Validate(); err != nil {
		return Recipe{}, fmt.Errorf("detect recipe: digest %q: %w", d, errdef.ErrInvalid)
	}
	if size < 0 {
		return Recipe{}, fmt.Errorf("detect recipe %s: size %d: %w", d, size, errdef.ErrInvalid)
	}
	magic := make([]byte, min(4, size))
	if n, err := blob.ReadAt(magic, 0); n < len(magic) {
		return Recipe{}, fmt.Errorf("detect recipe %s: %w", d, err)
	}
	var f Format
	switch {
	case isGzip(magic):
		f = FormatGzip
	case isZstd(magic):
		f = FormatZstd
	case isTar(blob, size):
		f = FormatNone
	}
	dt := &detector{ctx: ctx, blob: blob, size: size, d: d, opts: o}
	if f == "" || f == FormatNone {
		// Only the digest to check.
		if _, err := dt.pass(f, nil, true); err != nil {
			return Recipe{}, err
		}
		if f == "" {
			return Recipe{}, &NoMatchError{Digest: d, Reason: fmt.Sprintf("unknown format (magic %x)", magic)}
		}
		return Recipe{Format: FormatNone}, nil
	}
	noMatch := &NoMatchError{Digest: d, Format: f}
	stages := candidateStages(f)
	for i, stage := range stages {
		res, err := dt.pass(f, stage, i == len(stages)-1)
		if err != nil {
			return Recipe{}, err
		}
		if res.found {
			return res.recipe, nil
		}
		noMatch.Tried += res.tried
		if res.closestPrefix > noMatch.ClosestPrefix || noMatch.Closest.Format == "" {
			noMatch.Closest, noMatch.ClosestPrefix = res.closest, res.closestPrefix
		}
	}
	return Recipe{}, noMatch
}

// detector holds the state of one Detect call.
type detector struct {
	ctx  context.Context
	blob io.ReaderAt
	size int64
	d    digest.Digest
	opts options
	// src reads the blob from the start, once per pass; br buffers it
	// after hashing.
	src *readErrRecorder
	br  *bufio.Reader
}

// result is the outcome of a pass.
type result struct {
	found  bool
	recipe Recipe
	tried  int
	// closest is the candidate whose output matched the longest prefix of
	// the blob, closestPrefix the length of that prefix.
	closest       Recipe
	closestPrefix int64
	// abandoned says that every candidate failed before the end of the
	// blob and that the pass stopped there, without checking the rest.
	abandoned bool
}

// pass reads the blob from its start and tries cands on it. A pass that is
// not the last stops as soon as every candidate has failed; the last reads
// the blob to the end, so that a corrupt blob or one that does not hash to
// d is reported as such rather than as having no recipe.
func (dt *detector) pass(f Format, cands []Recipe, last bool) (result, error) {
	dig, err := verify.NewDigester(dt.d)
	if err != nil {
		return result{}, fmt.Errorf("detect recipe: %w", err)
	}
	dt.src = &readErrRecorder{r: io.NewSectionReader(dt.blob, 0, dt.size)}
	dt.br = bufio.NewReaderSize(io.TeeReader(dt.src, dig), chunkSize)
	var res result
	switch f {
	case FormatGzip:
		res, err = dt.detectGzip(cands, !last)
	case FormatZstd:
		res, err = dt.detectZstd(cands, !last)
	}
	var noMatch *NoMatchError
	if (err != nil && !errors.As(err, &noMatch)) || res.abandoned {
		return res, err
	}
	// Read what the decoder left, so that the digest covers the whole blob.
	if _, err := io.Copy(io.Discard, ctxReader{ctx: dt.ctx, r: dt.br}); err != nil {
		return result{}, fmt.Errorf("detect recipe %s: %w", dt.d, err)
	}
	if err := dig.Verify(dt.size); err != nil {
		return result{}, fmt.Errorf("detect recipe: %w", err)
	}
	return res, err
}

// detectGzip handles a gzip blob: one member, header kept verbatim.
func (dt *detector) detectGzip(cands []Recipe, stopEarly bool) (result, error) {
	header, err := readGzipHeader(dt.br, maxHeaderSize)
	if err != nil {
		if errors.Is(err, errdef.ErrUnsupported) {
			reason := fmt.Sprintf("gzip header longer than %d bytes", maxHeaderSize)
			return result{}, &NoMatchError{Digest: dt.d, Format: FormatGzip, Reason: reason}
		}
		return result{}, dt.readErr("gzip header", err)
	}
	fr := flate.NewReader(dt.br)
	defer fr.Close()
	res, err := dt.try(&gzipPayload{dt: dt, br: dt.br, fr: fr}, cands, int64(len(header)), stopEarly)
	if err != nil || res.abandoned {
		return res, err
	}
	// A second member or trailing bytes: the candidates write one member.
	switch b, err := dt.br.Peek(2); {
	case len(b) == 2 && b[0] == gzipID1 && b[1] == gzipID2:
		return result{}, &NoMatchError{Digest: dt.d, Format: FormatGzip, Reason: "multi-member gzip"}
	case len(b) > 0:
		return result{}, &NoMatchError{Digest: dt.d, Format: FormatGzip, Reason: "trailing data after the gzip member"}
	case !errors.Is(err, io.EOF):
		return result{}, dt.readErr("gzip", err)
	}
	if res.found {
		res.recipe.Header = header
	}
	return res, nil
}

// detectZstd handles a zstd blob.
func (dt *detector) detectZstd(cands []Recipe, stopEarly bool) (result, error) {
	// One decoder, synchronous: the hash of the blob is written by the
	// goroutine that reads it.
	zr, err := zstd.NewReader(dt.br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow))
	if err != nil {
		return result{}, fmt.Errorf("detect recipe %s: zstd decoder: %w", dt.d, err)
	}
	defer zr.Close()
	return dt.try(&zstdPayload{dt: dt, zr: zr}, cands, 0, stopEarly)
}

// readErr classifies an error from reading the blob: the blob's own read
// errors pass through, anything else means the stream is corrupt.
func (dt *detector) readErr(what string, err error) error {
	if dt.src.err != nil {
		return fmt.Errorf("detect recipe %s: %w", dt.d, dt.src.err)
	}
	if errors.Is(err, errdef.ErrInvalid) || errors.Is(err, errdef.ErrUnsupported) {
		return fmt.Errorf("detect recipe %s: %w", dt.d, err)
	}
	return fmt.Errorf("detect recipe %s: %s: %w: %w", dt.d, what, errdef.ErrInvalid, err)
}

// trial is one candidate being tried.
type trial struct {
	r    Recipe
	enc  *encoder
	cmp  *comparer
	done bool // enc closed or aborted
}

func (t *trial) abort() {
	if !t.done {
		t.done = true
		t.enc.abort()
	}
}

// try feeds payload to every candidate, whose output is compared with the
// blob from offset start, and reports the first candidate that reproduces
// the blob to its end. Every candidate sees the same bytes in the same
// order; only their output is compared. With stopEarly, it gives up as soon
// as every candidate has failed.
func (dt *detector) try(payload io.Reader, cands []Recipe, start int64, stopEarly bool) (result, error) {
	var trials []*trial
	defer func() {
		for _, t := range trials {
			t.abort()
		}
	}()
	for _, c := range cands {
		c.Generation, c.Version = generation(c.Encoder), encoderVersion(c.Encoder)
		if c.Generation == "" {
			continue // this binary could not say what it reproduces
		}
		cmp := &comparer{ra: dt.blob, off: start, end: dt.size, buf: make([]byte, 64<<10)}
		enc, err := newTrialEncoder(c, cmp)
		if err != nil {
			return result{}, fmt.Errorf("detect recipe %s: candidate %s: %w", dt.d, c, err)
		}
		trials = append(trials, &trial{r: c, enc: enc, cmp: cmp})
	}
	res := result{tried: len(trials)}
	// closest fills in the candidate that got furthest; encoders must be
	// closed or aborted first, as they may write from their goroutines.
	closest := func() error {
		for _, t := range trials {
			t.abort()
			if t.cmp.ioErr != nil {
				return fmt.Errorf("detect recipe %s: %w", dt.d, t.cmp.ioErr)
			}
			if p := t.cmp.off; p > res.closestPrefix || res.closest.Format == "" {
				res.closest, res.closestPrefix = t.r, p
			}
		}
		return nil
	}
	buf := make([]byte, chunkSize)
	var total int64
	alive := len(trials)
	for {
		if err := dt.ctx.Err(); err != nil {
			return result{}, fmt.Errorf("detect recipe %s: %w", dt.d, err)
		}
		if alive == 0 && stopEarly {
			res.abandoned = true
			return res, closest()
		}
		n, rerr := payload.Read(buf)
		total += int64(n)
		if total > dt.opts.maxTarSize {
			return result{}, fmt.Errorf("detect recipe %s: uncompressed size exceeds %d bytes: %w", dt.d, dt.opts.maxTarSize, errdef.ErrTooLarge)
		}
		if n > 0 && alive > 0 {
			for _, t := range trials {
				if t.done {
					continue
				}
				// Asynchronous encoders (zstd) report a mismatch on a
				// later call; the comparer knows at once.
				if _, err := t.enc.Write(buf[:n]); err != nil || t.cmp.bad.Load() {
					t.abort()
					alive--
				}
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return result{}, rerr
		}
	}
	for _, t := range trials {
		if t.done {
			continue
		}
		t.done = true
		if err := t.enc.close(); err == nil && t.cmp.complete() {
			res.found, res.recipe = true, t.r
			return res, nil
		}
	}
	return res, closest()
}

// gzipPayload reads the uncompressed data of one gzip member and checks its
// trailer (CRC-32 and size) before it returns io.EOF.
type gzipPayload struct {
	dt   *detector
	br   *bufio.Reader
	fr   io.Reader
	crc  uint32
	n    uint32 // size modulo 2^32, as the trailer stores it
	done bool
}

func (g *gzipPayload) Read(p []byte) (int, error) {
	if g.done {
		return 0, io.EOF
	}
	n, err := g.fr.Read(p)
	g.crc = crc32.Update(g.crc, crc32.IEEETable, p[:n])
	g.n += uint32(n)
	if err == nil {
		return n, nil
	}
	if !errors.Is(err, io.EOF) {
		return n, g.dt.readErr("gzip", err)
	}
	var trailer [8]byte
	if _, err := io.ReadFull(g.br, trailer[:]); err != nil {
		return n, g.dt.readErr("gzip trailer", io.ErrUnexpectedEOF)
	}
	if binary.LittleEndian.Uint32(trailer[:4]) != g.crc || binary.LittleEndian.Uint32(trailer[4:]) != g.n {
		return n, fmt.Errorf("detect recipe %s: gzip trailer: checksum or size mismatch: %w", g.dt.d, errdef.ErrInvalid)
	}
	g.done = true
	return n, io.EOF
}

// zstdPayload reads the uncompressed data of a zstd stream.
type zstdPayload struct {
	dt *detector
	zr *zstd.Decoder
}

func (z *zstdPayload) Read(p []byte) (int, error) {
	n, err := z.zr.Read(p)
	switch {
	case err == nil || errors.Is(err, io.EOF):
		return n, err
	case errors.Is(err, zstd.ErrWindowSizeExceeded):
		return n, &NoMatchError{Digest: z.dt.d, Format: FormatZstd, Reason: fmt.Sprintf("zstd window larger than %d bytes", maxZstdWindow)}
	default:
		return n, z.dt.readErr("zstd", err)
	}
}

// errMismatch is what a comparer returns to the encoder writing into it
// once the output has differed from the blob.
var errMismatch = errors.New("output differs from the blob")

// comparer is the output of one candidate encoder: it compares what it is
// written with the blob's bytes from off to end, and fails at the first
// difference. It is written by one goroutine at a time (the encoder's);
// bad may be polled from any.
type comparer struct {
	ra  io.ReaderAt
	off int64 // next offset to compare; after a mismatch, its offset
	end int64
	buf []byte
	bad atomic.Bool
	// ioErr is a read error of the blob, set before bad.
	ioErr error
}

func (c *comparer) Write(p []byte) (int, error) {
	if c.bad.Load() {
		return 0, errMismatch
	}
	written := 0
	for len(p) > 0 {
		k := min(len(p), len(c.buf))
		if rest := c.end - c.off; int64(k) > rest {
			k = int(rest)
		}
		if k == 0 { // longer than the blob
			c.bad.Store(true)
			return written, errMismatch
		}
		if n, err := c.ra.ReadAt(c.buf[:k], c.off); n < k {
			c.ioErr = err
			c.bad.Store(true)
			return written, fmt.Errorf("read blob at %d: %w", c.off, err)
		}
		if !bytes.Equal(c.buf[:k], p[:k]) {
			i := 0
			for c.buf[i] == p[i] {
				i++
			}
			c.off += int64(i)
			c.bad.Store(true)
			return written + i, errMismatch
		}
		c.off += int64(k)
		written += k
		p = p[k:]
	}
	return written, nil
}

// complete reports whether the output matched the blob to its end.
func (c *comparer) complete() bool { return !c.bad.Load() && c.off == c.end }

// readErrRecorder remembers the first error, other than io.EOF, of the
// reader it wraps, so that a failing disk is not mistaken for a corrupt
// stream.
type readErrRecorder struct {
	r   io.Reader
	err error
}

func (r *readErrRecorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && r.err == nil {
		r.err = err
	}
	return n, err
}

// ctxReader stops reading when its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// isTar reports whether blob starts with a tar header, or is an empty
// archive.
func isTar(blob io.ReaderAt, size int64) bool {
	_, err := tar.NewReader(io.NewSectionReader(blob, 0, size)).Next()
	return err == nil || errors.Is(err, io.EOF)
}
