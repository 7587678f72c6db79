package recipe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// Gzip member header flags, RFC 1952 section 2.3.1.
const (
	gzipFlagHeaderCRC = 1 << 1
	gzipFlagExtra     = 1 << 2
	gzipFlagName      = 1 << 3
	gzipFlagComment   = 1 << 4
	gzipFlagReserved  = 0xe0
)

// readGzipHeader reads one gzip member header (RFC 1952 section 2.3) from r
// and returns its bytes verbatim. It reads nothing past the header. A header
// longer than limit is unsupported; a malformed or truncated one is invalid.
func readGzipHeader(r io.ByteReader, limit int) ([]byte, error) {
	h := make([]byte, 0, 10)
	next := func() (byte, error) {
		if len(h) >= limit {
			return 0, fmt.Errorf("gzip header longer than %d bytes: %w", limit, errdef.ErrUnsupported)
		}
		b, err := r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return 0, fmt.Errorf("gzip header: truncated: %w", errdef.ErrInvalid)
			}
			return 0, fmt.Errorf("gzip header: %w", err)
		}
		h = append(h, b)
		return b, nil
	}
	for range 10 {
		if _, err := next(); err != nil {
			return nil, err
		}
	}
	if h[0] != gzipID1 || h[1] != gzipID2 || h[2] != gzipDeflate {
		return nil, fmt.Errorf("gzip header: magic %x, want 1f8b08: %w", h[:3], errdef.ErrInvalid)
	}
	flags := h[3]
	if flags&gzipFlagReserved != 0 {
		return nil, fmt.Errorf("gzip header: reserved flags %#x set: %w", flags, errdef.ErrInvalid)
	}
	if flags&gzipFlagExtra != 0 {
		var xlen [2]byte
		for i := range xlen {
			b, err := next()
			if err != nil {
				return nil, err
			}
			xlen[i] = b
		}
		for range binary.LittleEndian.Uint16(xlen[:]) {
			if _, err := next(); err != nil {
				return nil, err
			}
		}
	}
	for _, f := range []byte{gzipFlagName, gzipFlagComment} {
		if flags&f == 0 {
			continue
		}
		for {
			b, err := next()
			if err != nil {
				return nil, err
			}
			if b == 0 {
				break
			}
		}
	}
	if flags&gzipFlagHeaderCRC != 0 {
		want := uint16(crc32.ChecksumIEEE(h))
		var got [2]byte
		for i := range got {
			b, err := next()
			if err != nil {
				return nil, err
			}
			got[i] = b
		}
		if binary.LittleEndian.Uint16(got[:]) != want {
			return nil, fmt.Errorf("gzip header: header CRC mismatch: %w", errdef.ErrInvalid)
		}
	}
	return h, nil
}
