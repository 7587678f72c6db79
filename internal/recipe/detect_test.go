package recipe

import (
	"bytes"
	gogzip "compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// producer compresses a tar the way a tool does, and says which recipe
// Detect must find for it.
type producer struct {
	name string
	make func(tb testing.TB, tar []byte) []byte
	want Recipe // Format, Encoder, Level, BlockSize, FirstBlock
}

func goGzip(level int, hdr gogzip.Header) func(testing.TB, []byte) []byte {
	return func(tb testing.TB, tar []byte) []byte {
		var b bytes.Buffer
		z, err := gogzip.NewWriterLevel(&b, level)
		if err != nil {
			tb.Fatal(err)
		}
		z.Header = hdr
		writeChunked(tb, z, tar, uint64(level+10))
		if err := z.Close(); err != nil {
			tb.Fatal(err)
		}
		return b.Bytes()
	}
}

// containersImageCopy feeds a compressor as containers/image does: the 8
// bytes DetectCompressionFormat sniffed, then the rest of the stream, both
// through io.Copy from an io.MultiReader.
func containersImageCopy(tb testing.TB, w io.WriteCloser, tar []byte) {
	tb.Helper()
	src := io.MultiReader(bytes.NewReader(tar[:8]), onlyReader{bytes.NewReader(tar[8:])})
	if _, err := io.Copy(w, src); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
}

func pgzipLevel(level, blocks int) func(testing.TB, []byte) []byte {
	return func(tb testing.TB, tar []byte) []byte {
		var b bytes.Buffer
		z, err := pgzip.NewWriterLevel(&b, level)
		if err != nil {
			tb.Fatal(err)
		}
		if blocks > 0 {
			if err := z.SetConcurrency(DefaultPgzipBlockSize, blocks); err != nil {
				tb.Fatal(err)
			}
		}
		containersImageCopy(tb, z, tar)
		return b.Bytes()
	}
}

func zstdContainersImage(level int) func(testing.TB, []byte) []byte {
	return func(tb testing.TB, tar []byte) []byte {
		var b bytes.Buffer
		z, err := zstd.NewWriter(&b, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)))
		if err != nil {
			tb.Fatal(err)
		}
		containersImageCopy(tb, z, tar)
		return b.Bytes()
	}
}

func zstdStream(level, concurrency int, readFrom bool) func(testing.TB, []byte) []byte {
	return func(tb testing.TB, tar []byte) []byte {
		var b bytes.Buffer
		z, err := zstd.NewWriter(&b, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)), zstd.WithEncoderConcurrency(concurrency))
		if err != nil {
			tb.Fatal(err)
		}
		if readFrom {
			if _, err := z.ReadFrom(onlyReader{bytes.NewReader(tar)}); err != nil {
				tb.Fatal(err)
			}
		} else {
			writeChunked(tb, z, tar, uint64(level))
		}
		if err := z.Close(); err != nil {
			tb.Fatal(err)
		}
		return b.Bytes()
	}
}

func producers() []producer {
	gz := func(e Encoder, level, block int) Recipe {
		return Recipe{Format: FormatGzip, Encoder: e, Level: level, BlockSize: block}
	}
	zs := func(level, first int) Recipe {
		return Recipe{Format: FormatZstd, Encoder: EncoderZstd, Level: level, FirstBlock: first}
	}
	ps := []producer{
		{"go gzip default", goGzip(gogzip.DefaultCompression, gogzip.Header{}), gz(EncoderGoGzip, -1, 0)},
		// Level 6 is the default's alias and is recorded as -1.
		{"go gzip 6", goGzip(6, gogzip.Header{}), gz(EncoderGoGzip, -1, 0)},
		{"go gzip header fields", goGzip(gogzip.BestSpeed, gogzip.Header{
			Name: "layer.tar", Comment: "a comment", Extra: []byte("XY\x02\x00hi"),
			ModTime: time.Unix(1234567890, 0), OS: 3,
		}), gz(EncoderGoGzip, 1, 0)},
		{"pgzip default (containers/image)", pgzipLevel(pgzip.DefaultCompression, 0), gz(EncoderPgzip, -1, DefaultPgzipBlockSize)},
		{"pgzip 5 one block at a time", pgzipLevel(5, 1), gz(EncoderPgzip, -1, DefaultPgzipBlockSize)},
		{"klauspost gzip default", func(tb testing.TB, tar []byte) []byte {
			var b bytes.Buffer
			z := kgzip.NewWriter(&b)
			writeChunked(tb, z, tar, 3)
			if err := z.Close(); err != nil {
				tb.Fatal(err)
			}
			return b.Bytes()
		}, gz(EncoderKlauspostGzip, -1, 0)},
		{"zstd default (containers/image)", zstdContainersImage(3), zs(3, 8)},
		{"zstd 1 (containers/image)", zstdContainersImage(1), zs(1, 8)},
		{"zstd 1 stream, 4 goroutines", zstdStream(1, 4, true), zs(1, 0)},
		{"zstd 3 writes, 1 goroutine", zstdStream(3, 1, false), zs(3, 0)},
		{"zstd 7 stream", zstdStream(7, 2, true), zs(7, 0)},
		{"zstd 11 writes", zstdStream(11, 3, false), zs(11, 0)},
	}
	for _, l := range []int{1, 2, 3, 4, 5, 7, 8, 9} {
		ps = append(ps, producer{"go gzip " + string(rune('0'+l)), goGzip(l, gogzip.Header{}), gz(EncoderGoGzip, l, 0)})
	}
	for _, l := range []int{1, 2, 3, 4, 6, 7, 8, 9} {
		ps = append(ps, producer{"pgzip " + string(rune('0'+l)), pgzipLevel(l, 3), gz(EncoderPgzip, l, DefaultPgzipBlockSize)})
	}
	return ps
}

// roundTrip checks that Detect finds want for blob, that the recipe
// survives JSON, and that Rebuild makes blob again from tar.
func roundTrip(t *testing.T, tar, blob []byte, want Recipe) {
	t.Helper()
	ctx := context.Background()
	got, err := Detect(ctx, bytes.NewReader(blob), int64(len(blob)), digest.FromBytes(blob))
	if err != nil {
		t.Fatalf("Detect() error = %v", err)
	}
	ignore := func(r Recipe) Recipe { r.Version, r.Generation, r.Header = "", "", nil; return r }
	if diff := cmp.Diff(ignore(want), ignore(got)); diff != "" {
		t.Errorf("Detect() recipe mismatch (-want +got):\n%s", diff)
	}
	if want.Format == FormatGzip {
		h, err := readGzipHeader(bytes.NewReader(blob), maxHeaderSize)
		if err != nil || !bytes.Equal(got.Header, h) {
			t.Errorf("Detect() header = %x, want %x (%v)", got.Header, h, err)
		}
	}
	js, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	var back Recipe
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, back); diff != "" {
		t.Errorf("recipe JSON round trip (-before +after):\n%s\n%s", diff, js)
	}
	var out bytes.Buffer
	if err := Rebuild(ctx, &out, bytes.NewReader(tar), back); err != nil {
		t.Fatalf("Rebuild(%s) error = %v", back, err)
	}
	if !bytes.Equal(out.Bytes(), blob) {
		t.Errorf("Rebuild(%s) = %d bytes, %s; want %d bytes, %s", back, out.Len(), digest.FromBytes(out.Bytes()), len(blob), digest.FromBytes(blob))
	}
}

// explicitLevel matches the producers of TestRoundTrip that the race
// detector skips.
var explicitLevel = regexp.MustCompile(`^(go gzip|pgzip) [1-8]$`)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	// 700 KB: several deflate and zstd blocks, one pgzip block.
	small := makeTar(t, 1, scaled(700<<10))
	for _, p := range producers() {
		// Under the race detector, which looks for concurrency bugs, one
		// explicit level of each gzip encoder stands for the others.
		if raceEnabled && explicitLevel.MatchString(p.name) {
			continue
		}
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			roundTrip(t, small, p.make(t, small), p.want)
		})
	}
}

func TestRoundTripLarge(t *testing.T) {
	t.Parallel()
	if testing.Short() || raceEnabled {
		t.Skip("large layer")
	}
	// 2.5 MB: three pgzip blocks, each with the previous one's tail as
	// dictionary, and zstd's 8 MiB window in use.
	large := makeTar(t, 2, 2500<<10)
	for _, p := range producers() {
		switch p.name {
		case "go gzip default", "pgzip default (containers/image)", "pgzip 9", "zstd default (containers/image)", "zstd 11 writes":
		default:
			continue
		}
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			roundTrip(t, large, p.make(t, large), p.want)
		})
	}
}

func TestRoundTripEdgeCases(t *testing.T) {
	t.Parallel()
	empty := makeTar(t, 3, 0) // two zero blocks
	tests := []struct {
		name string
		tar  []byte
		p    producer
	}{
		{"empty tar go gzip", empty, producers()[0]},
		{"empty tar pgzip", empty, producers()[3]},
		{"empty tar zstd containers/image", empty, producers()[6]},
	}
	if !raceEnabled {
		tests = append(tests, struct {
			name string
			tar  []byte
			p    producer
		}{"exactly one pgzip block", makeTarSize(t, DefaultPgzipBlockSize), producers()[3]})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			roundTrip(t, tt.tar, tt.p.make(t, tt.tar), tt.p.want)
		})
	}
}

// makeTarSize returns a tar of exactly n bytes (a multiple of 512).
func makeTarSize(tb testing.TB, n int) []byte {
	tb.Helper()
	tar := makeTar(tb, 4, n-100<<10)
	tar = tar[:len(tar)-1024] // drop the end-of-archive blocks
	return append(tar, make([]byte, n-len(tar))...)
}

func TestDetectUncompressed(t *testing.T) {
	t.Parallel()
	tar := makeTar(t, 5, 100<<10)
	got, err := Detect(context.Background(), bytes.NewReader(tar), int64(len(tar)), digest.FromBytes(tar))
	if err != nil {
		t.Fatalf("Detect() error = %v", err)
	}
	if diff := cmp.Diff(Recipe{Format: FormatNone}, got); diff != "" {
		t.Errorf("Detect() (-want +got):\n%s", diff)
	}
	var out bytes.Buffer
	if err := Rebuild(context.Background(), &out, bytes.NewReader(tar), got); err != nil || !bytes.Equal(out.Bytes(), tar) {
		t.Errorf("Rebuild() = %d bytes, %v; want the tar", out.Len(), err)
	}
}

// TestDetectHeaderCRC covers the one header field Go's writers cannot
// write: the header CRC (FHCRC), as GNU gzip never writes but RFC 1952
// allows.
func TestDetectHeaderCRC(t *testing.T) {
	t.Parallel()
	tar := makeTar(t, 6, scaled(100<<10))
	plain := producers()[0].make(t, tar)
	h := append([]byte(nil), plain[:10]...)
	h[3] |= gzipFlagHeaderCRC
	crc := uint16(crc32.ChecksumIEEE(h))
	h = append(h, byte(crc), byte(crc>>8))
	blob := append(h, plain[10:]...)
	roundTrip(t, tar, blob, Recipe{Format: FormatGzip, Encoder: EncoderGoGzip, Level: -1})
}

// TestDetectNoMatch covers blobs no candidate reproduces.
func TestDetectNoMatch(t *testing.T) {
	t.Parallel()
	tar := makeTar(t, 7, scaled(100<<10))
	goDefault := producers()[0].make(t, tar)
	tests := []struct {
		name   string
		blob   []byte
		reason string // NoMatchError.Reason, if any
	}{
		{"klauspost gzip level 1 (not a candidate)", func() []byte {
			var b bytes.Buffer
			z, _ := kgzip.NewWriterLevel(&b, 1)
			z.Write(tar)
			z.Close()
			return b.Bytes()
		}(), ""},
		{"go gzip huffman only", goGzip(gogzip.HuffmanOnly, gogzip.Header{})(t, tar), ""},
		{"go gzip default with a flush", func() []byte {
			var b bytes.Buffer
			z := gogzip.NewWriter(&b)
			z.Write(tar[:1000])
			z.Flush()
			z.Write(tar[1000:])
			z.Close()
			return b.Bytes()
		}(), ""},
		{"gzip header of 200 KB", goGzip(-1, gogzip.Header{Comment: strings.Repeat("c", 200<<10)})(t, tar), "gzip header longer than 131072 bytes"},
		{"multi-member gzip", append(append([]byte(nil), goDefault...), goDefault...), "multi-member gzip"},
		{"trailing zeros", append(append([]byte(nil), goDefault...), 0, 0, 0, 0), "trailing data after the gzip member"},
		{"zstd window 16 MiB", func() []byte {
			var b bytes.Buffer
			z, _ := zstd.NewWriter(&b, zstd.WithWindowSize(16<<20))
			// More than one block, or the frame header gives the
			// content's size as window, which a candidate reproduces.
			z.ReadFrom(bytes.NewReader(makeTar(t, 11, 300<<10)))
			z.Close()
			return b.Bytes()
		}(), "zstd window larger than 8388608 bytes"},
		{"zstd two frames", func() []byte {
			z, _ := zstd.NewWriter(nil)
			return z.EncodeAll(tar[len(tar)/2:], z.EncodeAll(tar[:len(tar)/2], nil))
		}(), ""},
		{"zstd with a skippable padding frame", func() []byte {
			// Only the padding differs from a candidate's output.
			var b bytes.Buffer
			z, _ := zstd.NewWriter(&b, zstd.WithEncoderPadding(1<<12))
			z.ReadFrom(bytes.NewReader(tar))
			z.Close()
			return b.Bytes()
		}(), ""},
		{"zstd without checksum", func() []byte {
			var b bytes.Buffer
			z, _ := zstd.NewWriter(&b, zstd.WithEncoderCRC(false))
			z.Write(tar)
			z.Close()
			return b.Bytes()
		}(), ""},
		{"xz", []byte("\xfd7zXZ\x00\x00\x04\xe6\xd6\xb4\x46"), "unknown format (magic fd377a58)"},
		{"random bytes", bytes.Repeat([]byte("not a layer "), 100), "unknown format (magic 6e6f7420)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Detect(context.Background(), bytes.NewReader(tt.blob), int64(len(tt.blob)), digest.FromBytes(tt.blob))
			var nm *NoMatchError
			if !errors.As(err, &nm) || !errors.Is(err, errdef.ErrUnsupported) {
				t.Fatalf("Detect() error = %v, want a *NoMatchError", err)
			}
			if nm.Reason != tt.reason {
				t.Errorf("Detect() reason = %q, want %q", nm.Reason, tt.reason)
			}
		})
	}
}

// TestDetectInvalid covers corrupt blobs, wrong digests and limits.
func TestDetectInvalid(t *testing.T) {
	t.Parallel()
	tar := makeTar(t, 8, scaled(100<<10))
	gz := producers()[0].make(t, tar)
	zs := producers()[6].make(t, tar)
	flip := func(b []byte, at int) []byte {
		c := append([]byte(nil), b...)
		c[at] ^= 0x40
		return c
	}
	zeros := func(f producer, n int) []byte { return f.make(t, make([]byte, n)) }
	tests := []struct {
		name string
		blob []byte
		d    digest.Digest // default: digest of blob
		opts []Option
		want error
	}{
		{"gzip truncated", gz[:len(gz)/2], "", nil, errdef.ErrInvalid},
		{"gzip truncated in trailer", gz[:len(gz)-3], "", nil, errdef.ErrInvalid},
		{"gzip truncated in header", gz[:6], "", nil, errdef.ErrInvalid},
		{"gzip corrupt deflate", flip(gz, len(gz)/3), "", nil, errdef.ErrInvalid},
		{"gzip bad crc", flip(gz, len(gz)-6), "", nil, errdef.ErrInvalid},
		{"gzip reserved flag", flip(gz, 3), "", nil, errdef.ErrInvalid},
		{"zstd truncated", zs[:len(zs)/2], "", nil, errdef.ErrInvalid},
		{"zstd corrupt", flip(zs, len(zs)/3), "", nil, errdef.ErrInvalid},
		{"gzip wrong digest", gz, digest.FromString("other"), nil, errdef.ErrDigestMismatch},
		{"zstd wrong digest", zs, digest.FromString("other"), nil, errdef.ErrDigestMismatch},
		{"tar wrong digest", tar, digest.FromString("other"), nil, errdef.ErrDigestMismatch},
		{"no match wrong digest", append(append([]byte(nil), gz...), gz...), digest.FromString("other"), nil, errdef.ErrDigestMismatch},
		{"unknown format wrong digest", bytes.Repeat([]byte("not a layer "), 100), digest.FromString("other"), nil, errdef.ErrDigestMismatch},
		{"bad digest", gz, "sha256:abc", nil, errdef.ErrInvalid},
		{"bad option", gz, "", []Option{WithMaxTarSize(0)}, errdef.ErrInvalid},
		{"gzip bomb", zeros(producers()[0], 2<<20), "", []Option{WithMaxTarSize(1 << 20)}, errdef.ErrTooLarge},
		{"zstd bomb", zeros(producers()[6], 2<<20), "", []Option{WithMaxTarSize(1 << 20)}, errdef.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := tt.d
			if d == "" {
				d = digest.FromBytes(tt.blob)
			}
			_, err := Detect(context.Background(), bytes.NewReader(tt.blob), int64(len(tt.blob)), d, tt.opts...)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Detect() error = %v, want %v", err, tt.want)
			}
			if errors.Is(err, errdef.ErrUnsupported) {
				t.Errorf("Detect() error = %v, must not be ErrUnsupported", err)
			}
		})
	}
}

// TestDetectBombBounded checks that the limit stops decompression early. The
// blob is a hand-made zstd frame of 2^18 RLE blocks of 128 KiB: 1 MiB that
// decompresses to 32 GiB.
func TestDetectBombBounded(t *testing.T) {
	t.Parallel()
	const blocks = 1 << 18
	h := uint32(128<<10)<<3 | 1<<1 // RLE block of 128 KiB, of zeros
	block := []byte{byte(h), byte(h >> 8), byte(h >> 16), 0}
	blob := append([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 13 << 3}, bytes.Repeat(block, blocks)...) // no checksum, 8 MiB window
	blob[len(blob)-4] |= 1                                                                        // last block
	read := &countingReaderAt{r: bytes.NewReader(blob)}
	_, err := Detect(context.Background(), read, int64(len(blob)), digest.FromBytes(blob), WithMaxTarSize(4<<20))
	if !errors.Is(err, errdef.ErrTooLarge) {
		t.Fatalf("Detect() error = %v, want ErrTooLarge", err)
	}
	if n := read.n.Load(); n > 512<<10 {
		t.Errorf("Detect() read %d bytes of the %d-byte bomb, want at most 512 KiB", n, len(blob))
	}
}

type countingReaderAt struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

func TestDetectCanceled(t *testing.T) {
	t.Parallel()
	tar := makeTar(t, 9, 100<<10)
	blob := producers()[0].make(t, tar)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Detect(ctx, bytes.NewReader(blob), int64(len(blob)), digest.FromBytes(blob)); !errors.Is(err, context.Canceled) {
		t.Errorf("Detect() error = %v, want context.Canceled", err)
	}
	var out bytes.Buffer
	r := Recipe{Format: FormatGzip, Encoder: EncoderGoGzip, Level: -1, Generation: generation(EncoderGoGzip), Header: blob[:10]}
	if err := Rebuild(ctx, &out, bytes.NewReader(tar), r); !errors.Is(err, context.Canceled) {
		t.Errorf("Rebuild() error = %v, want context.Canceled", err)
	}
}

// TestDetectReadError checks that a failing disk is reported as such, not
// as a corrupt blob or a missing recipe.
func TestDetectReadError(t *testing.T) {
	t.Parallel()
	tar := makeTar(t, 10, scaled(100<<10))
	for _, p := range []producer{producers()[0], producers()[6]} {
		blob := p.make(t, tar)
		errDisk := errors.New("disk on fire")
		r := &failingReaderAt{r: bytes.NewReader(blob), after: int64(len(blob)) / 2, err: errDisk}
		_, err := Detect(context.Background(), r, int64(len(blob)), digest.FromBytes(blob))
		if !errors.Is(err, errDisk) || errors.Is(err, errdef.ErrInvalid) || errors.Is(err, errdef.ErrUnsupported) {
			t.Errorf("%s: Detect() error = %v, want %v only", p.name, err, errDisk)
		}
	}
}

type failingReaderAt struct {
	r     io.ReaderAt
	after int64
	err   error
}

func (f *failingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.after {
		return 0, f.err
	}
	return f.r.ReadAt(p, off)
}

func TestComparer(t *testing.T) {
	t.Parallel()
	blob := []byte("0123456789abcdefghij")
	errDisk := errors.New("disk on fire")
	tests := []struct {
		name     string
		ra       io.ReaderAt
		start    int64
		writes   []string
		wantOff  int64
		wantBad  bool
		complete bool
	}{
		{"equal to the end", bytes.NewReader(blob), 0, []string{"0123", "456789abcdefghij"}, 20, false, true},
		{"equal from an offset", bytes.NewReader(blob), 10, []string{"abcdefghij"}, 20, false, true},
		{"prefix only", bytes.NewReader(blob), 0, []string{"01234"}, 5, false, false},
		{"differs", bytes.NewReader(blob), 0, []string{"0123", "45X"}, 6, true, false},
		{"longer", bytes.NewReader(blob), 15, []string{"fghijK"}, 20, true, false},
		{"write after a difference", bytes.NewReader(blob), 0, []string{"X", "0"}, 0, true, false},
		{"read error", &failingReaderAt{r: bytes.NewReader(blob), after: 8, err: errDisk}, 0, []string{"0123", "456789ab"}, 7, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := &comparer{ra: tt.ra, off: tt.start, end: int64(len(blob)), buf: make([]byte, 3)}
			for _, w := range tt.writes {
				c.Write([]byte(w))
			}
			if c.off != tt.wantOff || c.bad.Load() != tt.wantBad || c.complete() != tt.complete {
				t.Errorf("comparer after %q: off %d, bad %v, complete %v; want %d, %v, %v",
					tt.writes, c.off, c.bad.Load(), c.complete(), tt.wantOff, tt.wantBad, tt.complete)
			}
			if (c.ioErr != nil) != (tt.name == "read error") {
				t.Errorf("comparer ioErr = %v", c.ioErr)
			}
		})
	}
}
