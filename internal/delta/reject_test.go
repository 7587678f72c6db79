package delta

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// craftBlock is a block written by hand, to build hostile deltas.
type craftBlock struct {
	ranges []baseRange
	ops    []op
	lit    []byte
	// litLen overrides the declared literal length when non-zero.
	litLen int
	add    []byte // ADD differences (version 2)
}

// appendSection appends a declared raw length and the zstd frame of raw.
func appendSection(out []byte, enc *zstd.Encoder, raw []byte, n int) []byte {
	out = binary.AppendUvarint(out, uint64(n))
	if len(raw) == 0 {
		return binary.AppendUvarint(out, 0)
	}
	f := enc.EncodeAll(raw, nil)
	out = binary.AppendUvarint(out, uint64(len(f)))
	return append(out, f...)
}

// craft serialises a delta with the encoder's own framing.
func craft(t *testing.T, h Header, blocks ...craftBlock) []byte {
	t.Helper()
	if h.Version == 0 {
		h.Version = formatVersion
	}
	if h.MaxLiteral == 0 {
		h.MaxLiteral, h.MaxDict, h.MaxControl = DefaultMaxLiteral, DefaultMaxDict, DefaultMaxControl
	}
	out, err := appendHeader(nil, h)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { enc.Close() })
	st := newCtlState(len(h.Bases) + 2) // room for out-of-range bases
	for _, b := range blocks {
		blk := block{ranges: b.ranges, ops: b.ops}
		ctl := st.appendBlock(nil, &blk)
		out = append(out, tagBlock)
		out = binary.AppendUvarint(out, uint64(len(ctl)))
		f := enc.EncodeAll(ctl, nil)
		out = binary.AppendUvarint(out, uint64(len(f)))
		out = append(out, f...)
		n := len(b.lit)
		if b.litLen != 0 {
			n = b.litLen
		}
		out = appendSection(out, enc, b.lit, n)
		if h.Version >= 2 {
			out = appendSection(out, enc, b.add, len(b.add))
		}
	}
	return append(out, tagEnd)
}

func lit(n int64) op { return op{kind: opLiteral, n: n} }
func add(base int, off, n int64) op {
	return op{kind: opAdd, base: base, off: off, n: n}
}
func cp(base int, off, n int64) op {
	return op{kind: opCopy, base: base, off: off, n: n}
}

func TestCraftedValid(t *testing.T) {
	t.Parallel()
	base := []byte("0123456789abcdefghijklmnopqrstuvwxyz")
	target := []byte("hello 0123456789 world xyz")
	bases := basesOf(base)
	h := Header{Target: digest.FromBytes(target), TargetSize: int64(len(target)), Bases: []BaseRef{{bases[0].Digest, bases[0].Size}}}
	d := craft(t, h, craftBlock{
		ranges: []baseRange{{0, 0, 10}},
		ops:    []op{lit(6), cp(0, 0, 10), lit(7), cp(0, 33, 3)},
		lit:    []byte("hello  world "),
	})
	got, err := decode(d, bases, Limits{})
	if err != nil || !bytes.Equal(got, target) {
		t.Fatalf("Decode(crafted) = %q, %v; want %q", got, err, target)
	}
}

func TestCraftedAdd(t *testing.T) {
	t.Parallel()
	base := []byte("0123456789abcdefghij")
	target := []byte("0123556789abcdefgHij!")
	bases := basesOf(base)
	diff := make([]byte, 20)
	for i := range diff {
		diff[i] = target[i] - base[i]
	}
	h := Header{Target: digest.FromBytes(target), TargetSize: int64(len(target)), Bases: []BaseRef{{bases[0].Digest, bases[0].Size}}}
	// ADD, then a COPY that continues from the ADD's end in the same base
	// (offsets are coded relative to it), then a literal.
	d := craft(t, h, craftBlock{
		ops: []op{add(0, 0, 12), cp(0, 12, 5), add(0, 17, 3), lit(1)},
		lit: []byte("!"),
		add: append(slices.Clone(diff[:12]), diff[17:20]...),
	})
	got, err := decode(d, bases, Limits{})
	if err != nil || !bytes.Equal(got, target) {
		t.Fatalf("Decode(crafted) = %q, %v; want %q", got, err, target)
	}
}

func TestRejectCrafted(t *testing.T) {
	t.Parallel()
	base := bytes.Repeat([]byte("base layer bytes "), 100)
	bases := basesOf(base)
	ref := []BaseRef{{bases[0].Digest, bases[0].Size}}
	hdr := func(target []byte) Header {
		return Header{Target: digest.FromBytes(target), TargetSize: int64(len(target)), Bases: ref}
	}
	small := []byte("small")
	big := bytes.Repeat(base, 1000) // 1.7 MB from a tiny delta
	tests := []struct {
		name  string
		delta []byte
		lim   Limits
		want  error
	}{
		{
			name:  "copy past end of base",
			delta: craft(t, hdr(small), craftBlock{ops: []op{cp(0, int64(len(base))-2, 5)}}),
			want:  errdef.ErrInvalid,
		},
		{
			name:  "copy at negative offset",
			delta: craft(t, hdr(small), craftBlock{ops: []op{cp(0, -1, 5)}}),
			want:  errdef.ErrInvalid,
		},
		{
			name:  "dictionary range outside base",
			delta: craft(t, hdr(small), craftBlock{ranges: []baseRange{{0, 10, int64(len(base))}}, ops: []op{lit(5)}, lit: small}),
			want:  errdef.ErrInvalid,
		},
		{
			name:  "copy from a base not in the header",
			delta: craft(t, hdr(small), craftBlock{ops: []op{cp(1, 0, 5)}}),
			want:  errdef.ErrInvalid,
		},
		{
			name: "output beyond declared size",
			delta: craft(t, Header{Target: digest.FromBytes(small), TargetSize: 5, Bases: ref},
				craftBlock{ops: []op{cp(0, 0, 5), cp(0, 0, 5)}}),
			want: errdef.ErrInvalid,
		},
		{
			name:  "output short of declared size",
			delta: craft(t, Header{Target: digest.FromBytes(small), TargetSize: 6, Bases: ref}, craftBlock{ops: []op{lit(5)}, lit: small}),
			want:  errdef.ErrSizeMismatch,
		},
		{
			name:  "wrong output digest",
			delta: craft(t, hdr(small), craftBlock{ops: []op{lit(5)}, lit: []byte("SMALL")}),
			want:  errdef.ErrDigestMismatch,
		},
		{
			name:  "literal op beyond literals",
			delta: craft(t, hdr(small), craftBlock{ops: []op{lit(5)}, lit: []byte("sma")}),
			want:  errdef.ErrInvalid,
		},
		{
			name:  "unused literals",
			delta: craft(t, hdr(small), craftBlock{ops: []op{lit(5)}, lit: []byte("small!")}),
			want:  errdef.ErrInvalid,
		},
		{
			name:  "frame larger than declared literals",
			delta: craft(t, hdr(small), craftBlock{ops: []op{lit(5)}, lit: bytes.Repeat([]byte{'a'}, 100000), litLen: 5}),
			want:  errdef.ErrInvalid,
		},
		{
			name:  "zero-length operation",
			delta: craft(t, hdr(small), craftBlock{ops: []op{lit(0), lit(5)}, lit: small}),
			want:  errdef.ErrInvalid,
		},
		{
			name:  "block without output",
			delta: craft(t, hdr(small), craftBlock{}, craftBlock{ops: []op{lit(5)}, lit: small}),
			want:  errdef.ErrInvalid,
		},
		{
			name:  "delta bomb: declared size over the limit",
			delta: craft(t, Header{Target: digest.FromBytes(big), TargetSize: 1 << 40, Bases: ref}, craftBlock{ops: []op{cp(0, 0, 1)}}),
			want:  errdef.ErrTooLarge,
		},
		{
			name:  "delta bomb: copies beyond the caller's limit",
			delta: craft(t, hdr(big), craftBlock{ops: repeatOp(cp(0, 0, int64(len(base))), 1000)}),
			lim:   Limits{MaxTargetSize: 1 << 20},
			want:  errdef.ErrTooLarge,
		},
		{
			name: "delta bomb: literal block over the limit",
			delta: craft(t, Header{Target: digest.FromBytes(small), TargetSize: 5, Bases: ref, MaxLiteral: 1 << 30, MaxDict: 1, MaxControl: 1 << 10},
				craftBlock{ops: []op{lit(5)}, lit: small}),
			want: errdef.ErrTooLarge,
		},
		{
			name:  "too many operations",
			delta: craft(t, hdr(small), craftBlock{ops: []op{lit(1), cp(0, 0, 1), lit(1), cp(0, 1, 1), lit(1)}, lit: []byte("sal")}),
			lim:   Limits{MaxOps: 4},
			want:  errdef.ErrTooLarge,
		},
		{
			name:  "base not held",
			delta: craft(t, Header{Target: digest.FromBytes(small), TargetSize: 5, Bases: []BaseRef{{digest.FromString("x"), 1}}}, craftBlock{ops: []op{lit(5)}, lit: small}),
			want:  errdef.ErrNotFound,
		},
		{
			name:  "base of another size",
			delta: craft(t, Header{Target: digest.FromBytes(small), TargetSize: 5, Bases: []BaseRef{{ref[0].Digest, 7}}}, craftBlock{ops: []op{lit(5)}, lit: small}),
			want:  errdef.ErrSizeMismatch,
		},
		{
			name:  "trailing bytes",
			delta: append(craft(t, hdr(small), craftBlock{ops: []op{lit(5)}, lit: small}), 0),
			want:  errdef.ErrInvalid,
		},
		{
			name:  "add past end of base",
			delta: craft(t, hdr(small), craftBlock{ops: []op{add(0, int64(len(base))-2, 5)}, add: make([]byte, 5)}),
			want:  errdef.ErrInvalid,
		},
		{
			name:  "add from a base not in the header",
			delta: craft(t, hdr(small), craftBlock{ops: []op{add(1, 0, 5)}, add: make([]byte, 5)}),
			want:  errdef.ErrInvalid,
		},
		{
			name:  "add beyond its differences",
			delta: craft(t, hdr(small), craftBlock{ops: []op{add(0, 0, 5)}, add: make([]byte, 4)}),
			want:  errdef.ErrInvalid,
		},
		{
			name:  "unused differences",
			delta: craft(t, hdr(small), craftBlock{ops: []op{lit(5)}, lit: small, add: make([]byte, 1)}),
			want:  errdef.ErrInvalid,
		},
		{
			name:  "add in a version 1 delta",
			delta: craft(t, Header{Version: 1, Target: digest.FromBytes(small), TargetSize: 5, Bases: ref}, craftBlock{ops: []op{add(0, 0, 5)}}),
			want:  errdef.ErrInvalid,
		},
		{
			name: "literals and differences over the block limit",
			delta: craft(t, Header{Target: digest.FromBytes(small), TargetSize: 5, Bases: ref, MaxLiteral: 8, MaxDict: 8, MaxControl: 1 << 10},
				craftBlock{ops: []op{lit(5)}, lit: small, add: make([]byte, 4)}),
			want: errdef.ErrTooLarge,
		},
		{
			name:  "unknown version",
			delta: craft(t, Header{Version: formatVersion + 1, Target: digest.FromBytes(small), TargetSize: 5, Bases: ref}, craftBlock{ops: []op{lit(5)}, lit: small}),
			want:  errdef.ErrUnsupported,
		},
		{name: "empty", delta: nil, want: errdef.ErrInvalid},
		{name: "not a delta", delta: []byte("\x89PNG\r\n\x1a\n0000000000000000"), want: errdef.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := decode(tt.delta, bases, tt.lim)
			if !errors.Is(err, tt.want) {
				t.Errorf("Decode() error = %v, want %v", err, tt.want)
			}
		})
	}
}

func repeatOp(o op, n int) []op {
	ops := make([]op, n)
	for i := range ops {
		ops[i] = o
	}
	return ops
}

// realDelta returns a delta with several blocks, COPYs, literals and a
// dictionary, small enough to corrupt at every byte.
func realDelta(t testing.TB) (delta, target []byte, bases []Base) {
	r := rng(11)
	files := genLayer(r, 12)
	base := layerTar(t, files)
	files[3].body = edit(r, files[3].body, 2, 10)
	files[7].body = text(r, 6000)
	target = layerTar(t, files)
	bases = basesOf(base)
	delta, _ = encode(t, target, bases, EncodeOptions{BlockSize: 4 << 10, Concurrency: 1})
	return delta, target, bases
}

func TestRejectCorruption(t *testing.T) {
	t.Parallel()
	delta, target, bases := realDelta(t)
	if len(delta) > 20000 {
		t.Fatalf("test delta is %d bytes; keep it small", len(delta))
	}
	rejected, tried := 0, 0
	step := 1
	if raceEnabled || testing.Short() {
		step = 7
	}
	for i := 0; i < len(delta); i += step {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			bad := bytes.Clone(delta)
			bad[i] ^= mask
			tried++
			got, err := decode(bad, bases, Limits{})
			if err == nil {
				// Only a change that does not alter the output may pass
				// (for example an unused bit of a zstd header).
				if !bytes.Equal(got, target) {
					t.Fatalf("Decode(byte %d ^ %#x) = nil error with wrong output", i, mask)
				}
				continue
			}
			rejected++
			if !errors.Is(err, errdef.ErrInvalid) && !errors.Is(err, errdef.ErrDigestMismatch) &&
				!errors.Is(err, errdef.ErrSizeMismatch) && !errors.Is(err, errdef.ErrTooLarge) &&
				!errors.Is(err, errdef.ErrUnsupported) && !errors.Is(err, errdef.ErrNotFound) {
				t.Errorf("Decode(byte %d ^ %#x) error = %v, want an errdef category", i, mask, err)
			}
		}
	}
	if rejected < tried*9/10 {
		t.Errorf("rejected %d of %d corruptions, want nearly all", rejected, tried)
	}
}

func TestRejectTruncation(t *testing.T) {
	t.Parallel()
	delta, _, bases := realDelta(t)
	step := 1
	if raceEnabled || testing.Short() {
		step = 5
	}
	for n := 0; n < len(delta); n += step {
		if _, err := decode(delta[:n], bases, Limits{}); err == nil {
			t.Fatalf("Decode(first %d of %d bytes) error = nil, want an error", n, len(delta))
		}
	}
}

func TestRejectWrongBase(t *testing.T) {
	t.Parallel()
	delta, _, bases := realDelta(t)
	// Same digest claimed, different content of the same size.
	content := make([]byte, bases[0].Size)
	if _, err := bases[0].R.ReadAt(content, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	content = edit(rng(12), content, 3, 64)
	forged := []Base{{Digest: bases[0].Digest, Size: bases[0].Size, R: bytes.NewReader(content)}}
	if _, err := decode(delta, forged, Limits{}); !errors.Is(err, errdef.ErrDigestMismatch) {
		t.Errorf("Decode() with altered base content: error = %v, want %v", err, errdef.ErrDigestMismatch)
	}
	other := basesOf(mkTar(t, tar.FormatPAX, tfile{name: "x", body: []byte("other")}))
	if _, err := decode(delta, other, Limits{}); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("Decode() with another base: error = %v, want %v", err, errdef.ErrNotFound)
	}
	short := []Base{{Digest: bases[0].Digest, Size: bases[0].Size, R: bytes.NewReader(content[:len(content)/2])}}
	if _, err := decode(delta, short, Limits{}); !errors.Is(err, errdef.ErrSizeMismatch) {
		t.Errorf("Decode() with a truncated base file: error = %v, want %v", err, errdef.ErrSizeMismatch)
	}
}

func TestRejectLimits(t *testing.T) {
	t.Parallel()
	delta, _, bases := realDelta(t)
	tests := []struct {
		name string
		lim  Limits
	}{
		{"target size", Limits{MaxTargetSize: 100}},
		{"dictionary", Limits{MaxDict: 1024}},
		{"block", Limits{MaxLiteral: 1024}},
		{"control", Limits{MaxControl: 16}},
		{"operations", Limits{MaxOps: 3}},
	}
	for _, tt := range tests {
		if _, err := decode(delta, bases, tt.lim); !errors.Is(err, errdef.ErrTooLarge) {
			t.Errorf("Decode() with limit on %s: error = %v, want %v", tt.name, err, errdef.ErrTooLarge)
		}
	}
}

func TestDecodeCanceled(t *testing.T) {
	t.Parallel()
	delta, _, bases := realDelta(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Decode(ctx, io.Discard, bytes.NewReader(delta), bases, Limits{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Decode() error = %v, want %v", err, context.Canceled)
	}
}

func TestReadHeaderReadsOnlyHeader(t *testing.T) {
	t.Parallel()
	delta, _, _ := realDelta(t)
	r := bytes.NewReader(delta)
	if _, err := ReadHeader(io.LimitReader(r, int64(len(delta)))); err != nil {
		t.Fatal(err)
	}
	if b, _ := r.ReadByte(); b != tagBlock {
		t.Errorf("byte after ReadHeader() = %#x, want the first block tag %#x", b, tagBlock)
	}
}
