package recipe

import (
	"bytes"
	gogzip "compress/gzip"
	"fmt"
	"io"
	"runtime"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// candidateStages returns the encoder settings Detect tries for a format, in
// stages, most likely first. Detect runs the candidates of a stage side by
// side on one decompression of the blob, and starts the next stage, from the
// beginning of the blob, only when all of them have failed. The first stage
// holds the tools' defaults, so that a typical layer costs one pass and no
// memory for the encoders it does not need (zstd's best level alone
// allocates 34 MiB of match tables). Within a stage, when several candidates
// reproduce a blob, the first wins.
//
// Levels that are aliases are tried once: compress/gzip's default (-1) is
// level 6, and klauspost/compress's default is level 5, for pgzip and
// klauspost gzip alike.
func candidateStages(f Format) [][]Recipe {
	gz := func(e Encoder, level int) Recipe {
		r := Recipe{Format: FormatGzip, Encoder: e, Level: level}
		if e == EncoderPgzip {
			r.BlockSize = DefaultPgzipBlockSize
		}
		return r
	}
	zs := func(level, first int) Recipe {
		return Recipe{Format: FormatZstd, Encoder: EncoderZstd, Level: level, FirstBlock: first}
	}
	switch f {
	case FormatGzip:
		defaults := []Recipe{
			// Docker (moby pkg/archive), BuildKit and containerd:
			// gzip.DefaultCompression.
			gz(EncoderGoGzip, gogzip.DefaultCompression),
			// go-containerregistry v0.22.1 (crane, ko and tools built on
			// it): internal/gzip and tarball.LayerFromOpener default to
			// gzip.BestSpeed.
			gz(EncoderGoGzip, gogzip.BestSpeed),
			// containers/image (podman, buildah, skopeo): pgzip.NewWriter,
			// default level and block size.
			gz(EncoderPgzip, pgzip.DefaultCompression),
			gz(EncoderKlauspostGzip, kgzip.DefaultCompression),
		}
		// Explicit levels: BuildKit's compression-level, podman's
		// --compression-level, skopeo's --dest-compress-level.
		var levels []Recipe
		for _, l := range []int{9, 2, 3, 4, 5, 7, 8} {
			levels = append(levels, gz(EncoderGoGzip, l))
		}
		for _, l := range []int{1, 9, 2, 3, 4, 6, 7, 8} {
			levels = append(levels, gz(EncoderPgzip, l))
		}
		return [][]Recipe{defaults, levels}
	case FormatZstd:
		// containers/image, containerd and BuildKit default to zstd level 3
		// (SpeedDefault); go-containerregistry passes its default level 1
		// (SpeedFastest); explicit levels map to the other two.
		// containers/image hands the encoder the 8 bytes it sniffed first
		// (see Recipe.FirstBlock); the others stream whole blocks.
		return [][]Recipe{
			{zs(3, containersImageSniff), zs(3, 0), zs(1, 0), zs(1, containersImageSniff)},
			{zs(7, containersImageSniff), zs(7, 0), zs(11, containersImageSniff), zs(11, 0)},
		}
	}
	return nil
}

// newTrialEncoder is newEncoder for Detect: the same output, produced as
// early as possible, so that a wrong candidate is dropped soon.
func newTrialEncoder(r Recipe, w io.Writer) (*encoder, error) {
	if r.Encoder != EncoderPgzip {
		return newEncoder(r, w)
	}
	z, err := newPgzipStream(w, r.Level, r.BlockSize)
	if err != nil {
		return nil, err
	}
	return &encoder{Writer: z, close: z.Close, abort: func() {}}, nil
}

// encoder is a compressing writer: close finishes the stream, abort releases
// its goroutines and buffers without finishing it. Exactly one of them must
// be called.
type encoder struct {
	io.Writer
	close func() error
	abort func()
}

// newEncoder returns an encoder for r that writes to w everything r's
// encoder writes except, for gzip, the 10-byte member header, which the
// caller writes from r.Header.
func newEncoder(r Recipe, w io.Writer) (*encoder, error) {
	switch r.Encoder {
	case EncoderGoGzip:
		z, err := gogzip.NewWriterLevel(&headerSkipper{w: w}, r.Level)
		if err != nil {
			return nil, fmt.Errorf("compress/gzip level %d: %w", r.Level, errdef.ErrInvalid)
		}
		return &encoder{Writer: z, close: z.Close, abort: func() {}}, nil
	case EncoderKlauspostGzip:
		z, err := kgzip.NewWriterLevel(&headerSkipper{w: w}, r.Level)
		if err != nil {
			return nil, fmt.Errorf("klauspost gzip level %d: %w", r.Level, errdef.ErrInvalid)
		}
		return &encoder{Writer: z, close: z.Close, abort: func() {}}, nil
	case EncoderPgzip:
		z, err := pgzip.NewWriterLevel(&headerSkipper{w: w}, r.Level)
		if err != nil {
			return nil, fmt.Errorf("pgzip level %d: %w", r.Level, errdef.ErrInvalid)
		}
		// Blocks start at multiples of BlockSize however many are
		// compressed at once, so the concurrency does not change the
		// output. Each block in flight holds about three BlockSize
		// buffers; four at once compress faster than a site's uplink or
		// disk can take.
		if err := z.SetConcurrency(r.BlockSize, min(runtime.GOMAXPROCS(0), maxPgzipConcurrency)); err != nil {
			return nil, fmt.Errorf("pgzip block size %d: %w", r.BlockSize, errdef.ErrInvalid)
		}
		// After an error, pgzip's Close returns early and leaves its
		// writer goroutine waiting; Reset closes its queue and waits.
		abort := func() { z.Reset(io.Discard) }
		closeFn := func() error {
			err := z.Close()
			if err != nil {
				abort()
			}
			return err
		}
		return &encoder{Writer: z, close: closeFn, abort: abort}, nil
	case EncoderZstd:
		// The same call as containers/image and go-containerregistry make.
		// The stream encoder compresses one block at a time (it only
		// overlaps compressing with writing), so the default concurrency
		// does not change the output.
		z, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(r.Level)))
		if err != nil {
			return nil, fmt.Errorf("zstd level %d: %w", r.Level, errdef.ErrInvalid)
		}
		// Reset waits for the blocks being compressed and written.
		abort := func() { z.Reset(io.Discard) }
		if r.FirstBlock == 0 {
			return &encoder{Writer: z, close: z.Close, abort: abort}, nil
		}
		s := &firstBlockWriter{z: z, first: r.FirstBlock}
		return &encoder{Writer: s, close: s.Close, abort: abort}, nil
	}
	return nil, fmt.Errorf("encoder %q: %w", r.Encoder, errdef.ErrInvalid)
}

// maxPgzipConcurrency bounds the blocks Rebuild compresses at once.
const maxPgzipConcurrency = 4

// containersImageSniff is how many bytes containers/image reads to detect
// a layer's compression (DetectCompressionFormat) before it compresses it.
const containersImageSniff = 8

// firstBlockWriter makes a zstd encoder end its first block after first
// bytes, as Encoder.ReadFrom does with what was written before it: the block
// is compressed on its own and later blocks are full.
type firstBlockWriter struct {
	z       *zstd.Encoder
	first   int
	n       int
	flushed bool
}

func (f *firstBlockWriter) Write(p []byte) (int, error) {
	if f.flushed || f.n+len(p) < f.first {
		n, err := f.z.Write(p)
		f.n += n
		return n, err
	}
	k := f.first - f.n
	n, err := f.z.Write(p[:k])
	f.n += n
	if err != nil {
		return n, err
	}
	if err := f.z.Flush(); err != nil {
		return n, err
	}
	f.flushed = true
	m, err := f.z.Write(p[k:])
	f.n += m
	return n + m, err
}

// Close ends the stream. A stream shorter than the first block still had
// its bytes written before ReadFrom, which ends a block with them.
func (f *firstBlockWriter) Close() error {
	if !f.flushed && f.n > 0 {
		if err := f.z.Flush(); err != nil {
			return err
		}
	}
	return f.z.Close()
}

// Every gzip member starts with ID1, ID2 and CM (8, deflate).
const (
	gzipID1     = 0x1f
	gzipID2     = 0x8b
	gzipDeflate = 8
)

// headerSkipper drops the 10-byte header that a gzip writer with an empty
// Header writes first, and passes on the rest.
type headerSkipper struct {
	w       io.Writer
	skipped int
}

func (s *headerSkipper) Write(p []byte) (int, error) {
	n := 0
	if s.skipped < 10 {
		k := min(10-s.skipped, len(p))
		// Guard against an encoder that writes something else first.
		magic := [3]byte{gzipID1, gzipID2, gzipDeflate}
		for i := range k {
			if at := s.skipped + i; at < len(magic) && p[i] != magic[at] {
				return 0, fmt.Errorf("gzip encoder wrote %x at header byte %d, want %x", p[i], at, magic[at])
			}
		}
		s.skipped += k
		n, p = k, p[k:]
		if len(p) == 0 {
			return n, nil
		}
	}
	m, err := s.w.Write(p)
	return n + m, err
}

var _ io.Writer = (*headerSkipper)(nil)

// isGzip and isZstd test a blob's first bytes for the format magic.
func isGzip(b []byte) bool { return bytes.HasPrefix(b, []byte{gzipID1, gzipID2}) }
func isZstd(b []byte) bool { return bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}) }
