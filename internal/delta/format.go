package delta

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// MediaType is the media type of a delta produced by this package, for use
// in OCI artifact manifests and in the A-IM negotiation between tiers.
const MediaType = "application/vnd.registry-edge.delta.v1"

// magic starts every delta. The high-bit first byte keeps it from looking
// like text; the trailing version digit changes with incompatible formats.
var magic = [8]byte{0x89, 'R', 'E', 'D', 'L', 'T', '\r', '1'}

const (
	// formatVersion is the version this encoder writes; minVersion the
	// oldest a decoder reads. Version 2 added the ADD operation.
	formatVersion = 2
	minVersion    = 1

	// FormatVersion is the format this package writes, MinFormatVersion
	// the oldest it reads: what a registry-edge tier states in a delta
	// negotiation, and checks before it answers one.
	FormatVersion    = formatVersion
	MinFormatVersion = minVersion

	tagBlock = 'B'
	tagEnd   = 'E'

	opEnd      = 0 // end of a block's operations (n = 0)
	opAdd      = 0 // n > 0: n literal bytes added to n bytes of a named base (version 2)
	opLiteral  = 1 // n bytes from the block's literals
	opCopy     = 2 // n bytes from the current base
	opCopyBase = 3 // n bytes from an explicitly named base, which becomes current

	// maxHeaderBody bounds the header before it is parsed: with MaxBases
	// bases of about 45 bytes each it stays far below this.
	maxHeaderBody = 64 << 10
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// BaseRef names a base layer a delta was computed against: the SHA-256 of
// its uncompressed tar (the layer's diffID) and its size.
type BaseRef struct {
	Digest digest.Digest
	Size   int64
}

// Header is the fixed part at the start of a delta.
type Header struct {
	// Version is the format version (1 or 2; 2 adds ADD operations).
	Version int
	// Target is the SHA-256 digest of the uncompressed tar the delta rebuilds.
	Target digest.Digest
	// TargetSize is its size in bytes.
	TargetSize int64
	// Bases are the layers the delta refers to, in the order COPY operations
	// and dictionary ranges index them.
	Bases []BaseRef
	// MaxLiteral is the largest number of literal bytes in one block.
	MaxLiteral int
	// MaxDict is the largest dictionary of one block.
	MaxDict int
	// MaxControl is the largest decoded control section of one block.
	MaxControl int
}

// Limits bound the resources a decoder spends on one delta. A zero field
// takes the default shown in DefaultLimits. Deltas whose header asks for
// more than a limit allows are rejected before any output is written.
type Limits struct {
	// MaxTargetSize bounds the declared size of the rebuilt tar. Set it to
	// what the caller expects (for example a few times the compressed layer
	// size) to reject a delta bomb as early as possible.
	MaxTargetSize int64
	// MaxDict bounds the dictionary of one block (held in memory).
	MaxDict int
	// MaxLiteral bounds the literal bytes of one block (held in memory).
	MaxLiteral int
	// MaxControl bounds the decoded control section of one block.
	MaxControl int
	// MaxBases bounds the number of bases a delta may name.
	MaxBases int
	// MaxOps bounds the number of operations in the whole delta.
	MaxOps int64
	// MaxDictRanges bounds the number of base ranges in one dictionary.
	MaxDictRanges int
}

// Defaults of Limits and EncodeOptions. The decoder holds one block: its
// dictionary, its literals, its ADD differences (literals and differences
// together at most MaxLiteral, but each in its own buffer), the compressed
// frame being read, and its control section: about MaxDict + 3*MaxLiteral +
// 2*MaxControl, 42 MiB at most with these limits and 18 MiB for deltas made
// with the default block and dictionary sizes, within the 64 MiB budget of a
// site gateway.
const (
	// DefaultBlockSize is the encoder's literal bytes per block. 4 MiB
	// blocks measured slightly smaller deltas than 8 MiB ones on the shared
	// corpus and give two workers more blocks to share.
	DefaultBlockSize = 4 << 20
	// DefaultDictSize is the encoder's dictionary bound per block. Since
	// ADD operations (format version 2) cover the aligned stretches, 4 MiB
	// measured deltas as small as 16 MiB did, with less memory and time
	// on both sides. DefaultMaxDict is what a decoder accepts.
	DefaultDictSize      = 4 << 20
	DefaultMaxTargetSize = 16 << 30
	DefaultMaxDict       = 16 << 20
	DefaultMaxLiteral    = 8 << 20
	DefaultMaxControl    = 1 << 20
	DefaultMaxBases      = 64
	DefaultMaxOps        = 1 << 26
	DefaultMaxDictRanges = 1 << 16
)

// DefaultLimits returns the limits a zero Limits stands for.
func DefaultLimits() Limits {
	return Limits{
		MaxTargetSize: DefaultMaxTargetSize,
		MaxDict:       DefaultMaxDict,
		MaxLiteral:    DefaultMaxLiteral,
		MaxControl:    DefaultMaxControl,
		MaxBases:      DefaultMaxBases,
		MaxOps:        DefaultMaxOps,
		MaxDictRanges: DefaultMaxDictRanges,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxTargetSize <= 0 {
		l.MaxTargetSize = d.MaxTargetSize
	}
	if l.MaxDict <= 0 {
		l.MaxDict = d.MaxDict
	}
	if l.MaxLiteral <= 0 {
		l.MaxLiteral = d.MaxLiteral
	}
	if l.MaxControl <= 0 {
		l.MaxControl = d.MaxControl
	}
	if l.MaxBases <= 0 {
		l.MaxBases = d.MaxBases
	}
	if l.MaxOps <= 0 {
		l.MaxOps = d.MaxOps
	}
	if l.MaxDictRanges <= 0 {
		l.MaxDictRanges = d.MaxDictRanges
	}
	return l
}

// check reports whether h stays within l.
func (l Limits) check(h Header) error {
	switch {
	case h.TargetSize > l.MaxTargetSize:
		return fmt.Errorf("delta target size %d exceeds limit %d: %w", h.TargetSize, l.MaxTargetSize, errdef.ErrTooLarge)
	case len(h.Bases) > l.MaxBases:
		return fmt.Errorf("delta names %d bases, limit %d: %w", len(h.Bases), l.MaxBases, errdef.ErrTooLarge)
	case h.MaxDict > l.MaxDict:
		return fmt.Errorf("delta dictionary size %d exceeds limit %d: %w", h.MaxDict, l.MaxDict, errdef.ErrTooLarge)
	case h.MaxLiteral > l.MaxLiteral:
		return fmt.Errorf("delta block size %d exceeds limit %d: %w", h.MaxLiteral, l.MaxLiteral, errdef.ErrTooLarge)
	case h.MaxControl > l.MaxControl:
		return fmt.Errorf("delta control size %d exceeds limit %d: %w", h.MaxControl, l.MaxControl, errdef.ErrTooLarge)
	}
	return nil
}

// appendHeader serialises h: magic, uvarint body length, body, CRC-32C of
// everything before it.
func appendHeader(dst []byte, h Header) ([]byte, error) {
	tb, err := sha256Bytes(h.Target)
	if err != nil {
		return nil, fmt.Errorf("delta target: %w", err)
	}
	var body []byte
	body = binary.AppendUvarint(body, uint64(h.Version))
	body = binary.AppendUvarint(body, 0) // flags, none defined
	body = binary.AppendUvarint(body, uint64(h.TargetSize))
	body = append(body, tb...)
	body = binary.AppendUvarint(body, uint64(len(h.Bases)))
	for i, b := range h.Bases {
		bb, err := sha256Bytes(b.Digest)
		if err != nil {
			return nil, fmt.Errorf("delta base %d: %w", i, err)
		}
		body = append(body, bb...)
		body = binary.AppendUvarint(body, uint64(b.Size))
	}
	body = binary.AppendUvarint(body, uint64(h.MaxLiteral))
	body = binary.AppendUvarint(body, uint64(h.MaxDict))
	body = binary.AppendUvarint(body, uint64(h.MaxControl))
	start := len(dst)
	dst = append(dst, magic[:]...)
	dst = binary.AppendUvarint(dst, uint64(len(body)))
	dst = append(dst, body...)
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], crcTable)), nil
}

func sha256Bytes(d digest.Digest) ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("digest %q: %w", d, errdef.ErrInvalid)
	}
	if d.Algorithm() != digest.SHA256 {
		return nil, fmt.Errorf("digest %s: only sha256 is supported: %w", d, errdef.ErrUnsupported)
	}
	b, err := hex.DecodeString(d.Encoded())
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("digest %s: %w", d, errdef.ErrInvalid)
	}
	return b, nil
}

// ReadHeader reads and validates the header at the start of a delta. It
// reads exactly the header's bytes from r, so a caller can go on reading the
// blocks (Decode does so itself).
func ReadHeader(r io.Reader) (Header, error) {
	br, ok := r.(io.ByteReader)
	if !ok {
		br = &byteReader{r: r}
	}
	return readHeader(r, br)
}

// byteReader adapts an io.Reader without reading ahead of the bytes asked for.
type byteReader struct {
	r io.Reader
	b [1]byte
}

func (b *byteReader) ReadByte() (byte, error) {
	_, err := io.ReadFull(b.r, b.b[:])
	return b.b[0], err
}

func readHeader(r io.Reader, br io.ByteReader) (Header, error) {
	var h Header
	var m [8]byte
	if _, err := io.ReadFull(r, m[:]); err != nil {
		return h, fmt.Errorf("delta header: %w: %w", errdef.ErrInvalid, noEOF(err))
	}
	if m != magic {
		return h, fmt.Errorf("delta header: bad magic: %w", errdef.ErrInvalid)
	}
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return h, fmt.Errorf("delta header length: %w: %w", errdef.ErrInvalid, noEOF(err))
	}
	if n > maxHeaderBody {
		return h, fmt.Errorf("delta header length %d: %w", n, errdef.ErrInvalid)
	}
	raw := make([]byte, 0, len(m)+binary.MaxVarintLen64+int(n))
	raw = append(raw, m[:]...)
	raw = binary.AppendUvarint(raw, n)
	bodyStart := len(raw)
	raw = raw[:bodyStart+int(n)+4]
	if _, err := io.ReadFull(r, raw[bodyStart:]); err != nil {
		return h, fmt.Errorf("delta header: %w: %w", errdef.ErrInvalid, noEOF(err))
	}
	sum := binary.LittleEndian.Uint32(raw[len(raw)-4:])
	if crc32.Checksum(raw[:len(raw)-4], crcTable) != sum {
		return h, fmt.Errorf("delta header checksum: %w", errdef.ErrInvalid)
	}
	p := &parser{b: raw[bodyStart : len(raw)-4]}
	h.Version = int(p.uvarint(1 << 20))
	flags := p.uvarint(1 << 20)
	h.TargetSize = int64(p.uvarint(1 << 62))
	h.Target = digest.NewDigestFromBytes(digest.SHA256, p.bytes(32))
	nb := p.uvarint(1 << 12)
	if p.err == nil {
		h.Bases = make([]BaseRef, 0, nb)
	}
	for i := uint64(0); i < nb && p.err == nil; i++ {
		d := digest.NewDigestFromBytes(digest.SHA256, p.bytes(32))
		h.Bases = append(h.Bases, BaseRef{Digest: d, Size: int64(p.uvarint(1 << 62))})
	}
	h.MaxLiteral = int(p.uvarint(1 << 31))
	h.MaxDict = int(p.uvarint(1 << 31))
	h.MaxControl = int(p.uvarint(1 << 31))
	switch {
	case p.err != nil:
		return h, fmt.Errorf("delta header: %w", p.err)
	case len(p.b) != 0:
		return h, fmt.Errorf("delta header: %d trailing bytes: %w", len(p.b), errdef.ErrInvalid)
	case h.Version < minVersion || h.Version > formatVersion:
		return h, fmt.Errorf("delta version %d: %w", h.Version, errdef.ErrUnsupported)
	case flags != 0:
		return h, fmt.Errorf("delta flags %#x: %w", flags, errdef.ErrUnsupported)
	case h.MaxLiteral <= 0 || h.MaxDict < 0 || h.MaxControl <= 0:
		return h, fmt.Errorf("delta header block limits: %w", errdef.ErrInvalid)
	}
	return h, nil
}

// noEOF turns a clean EOF into io.ErrUnexpectedEOF: a delta never ends
// where a read of it fails.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parser reads varints and fixed fields from a byte slice and remembers
// the first error, so a decoding routine checks once at the end.
type parser struct {
	b   []byte
	err error
}

func (p *parser) fail(what string) {
	if p.err == nil {
		p.err = fmt.Errorf("%s: %w", what, errdef.ErrInvalid)
	}
	p.b = nil
}

// uvarint reads an unsigned varint and fails if it exceeds maxV.
func (p *parser) uvarint(maxV uint64) uint64 {
	if p.err != nil {
		return 0
	}
	v, n := binary.Uvarint(p.b)
	if n <= 0 {
		p.fail("truncated or overlong varint")
		return 0
	}
	p.b = p.b[n:]
	if v > maxV {
		p.fail(fmt.Sprintf("value %d exceeds %d", v, maxV))
		return 0
	}
	return v
}

func (p *parser) varint() int64 {
	if p.err != nil {
		return 0
	}
	v, n := binary.Varint(p.b)
	if n <= 0 {
		p.fail("truncated or overlong varint")
		return 0
	}
	p.b = p.b[n:]
	return v
}

func (p *parser) bytes(n int) []byte {
	if p.err != nil {
		return make([]byte, n)
	}
	if len(p.b) < n {
		p.fail("truncated field")
		return make([]byte, n)
	}
	b := p.b[:n]
	p.b = p.b[n:]
	return b
}

// readUvarintLimit reads a uvarint block field from br and checks it.
func readUvarintLimit(br io.ByteReader, maxV uint64, what string) (uint64, error) {
	v, err := binary.ReadUvarint(br)
	if err != nil {
		return 0, fmt.Errorf("delta %s: %w: %w", what, errdef.ErrInvalid, noEOF(err))
	}
	if v > maxV {
		return 0, fmt.Errorf("delta %s %d exceeds %d: %w", what, v, maxV, errdef.ErrTooLarge)
	}
	return v, nil
}

// frameBound is the largest zstd frame accepted for n decoded bytes: zstd
// stores incompressible data in raw blocks with a 3-byte header per 128 KiB
// plus a frame header of at most 18 bytes.
func frameBound(n int) int { return n + n>>10 + 64 }

// HasMagic reports whether head, the first bytes of a blob, starts like a
// delta of this format.
func HasMagic(head []byte) bool {
	return len(head) >= len(magic) && [8]byte(head[:len(magic)]) == magic
}
