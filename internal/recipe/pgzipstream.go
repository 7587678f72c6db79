package recipe

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/flate"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// pgzipStream writes, after the header, the bytes pgzip writes, but in one
// goroutine and as it goes. pgzip compresses each block of blockSize bytes
// into a buffer, in parallel, and writes nothing of a block before all of
// it is compressed; a wrong candidate would then cost a whole block (1 MiB)
// before Detect could drop it. Each pgzip block is a klauspost/compress/flate
// writer at the same level, reset with the last pgzipTailSize bytes of the
// previous block as dictionary, given the block in full and flushed; the last
// block is also closed; the trailer follows (github.com/klauspost/pgzip
// gzip.go, compressBlock). Doing the same on a stream gives the same bytes,
// because flate's output does not depend on how its input is split into
// writes. Rebuild uses pgzip itself; the round-trip tests check that the two
// agree.
type pgzipStream struct {
	w         io.Writer
	blockSize int
	fw        *flate.Writer
	n         int  // bytes of the current block written
	started   bool // fw is set up for the current block
	tail      []byte
	cur       []byte // last bytes of the current block, up to pgzipTailSize
	crc       uint32
	size      uint32
}

func newPgzipStream(w io.Writer, level, blockSize int) (*pgzipStream, error) {
	if blockSize < minPgzipBlockSize {
		return nil, fmt.Errorf("pgzip block size %d: %w", blockSize, errdef.ErrInvalid)
	}
	// pgzip makes its writers with NewWriterDict(w, level, nil) and resets
	// them with ResetDict for each block.
	fw, err := flate.NewWriterDict(w, level, nil)
	if err != nil {
		return nil, fmt.Errorf("pgzip level %d: %w", level, errdef.ErrInvalid)
	}
	return &pgzipStream{w: w, blockSize: blockSize, fw: fw}, nil
}

func (p *pgzipStream) start() {
	if !p.started {
		p.fw.ResetDict(p.w, p.tail)
		p.started = true
	}
}

func (p *pgzipStream) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		p.start()
		k := min(len(b), p.blockSize-p.n)
		if _, err := p.fw.Write(b[:k]); err != nil {
			return written, err
		}
		p.crc = crc32.Update(p.crc, crc32.IEEETable, b[:k])
		p.size += uint32(k)
		p.keepTail(b[:k])
		p.n += k
		written += k
		b = b[k:]
		if p.n == p.blockSize {
			if err := p.fw.Flush(); err != nil {
				return written, err
			}
			// The block is longer than the tail, so cur holds a full tail.
			p.tail, p.cur = p.cur, p.tail[:0]
			p.n, p.started = 0, false
		}
	}
	return written, nil
}

// keepTail keeps the last pgzipTailSize bytes written to the current block.
func (p *pgzipStream) keepTail(b []byte) {
	if len(b) >= pgzipTailSize {
		p.cur = append(p.cur[:0], b[len(b)-pgzipTailSize:]...)
		return
	}
	if over := len(p.cur) + len(b) - pgzipTailSize; over > 0 {
		p.cur = p.cur[:copy(p.cur, p.cur[over:])]
	}
	p.cur = append(p.cur, b...)
}

// Close writes the last block, which may be empty, and the trailer.
func (p *pgzipStream) Close() error {
	p.start()
	if err := p.fw.Flush(); err != nil {
		return err
	}
	if err := p.fw.Close(); err != nil {
		return err
	}
	var trailer [8]byte
	binary.LittleEndian.PutUint32(trailer[:4], p.crc)
	binary.LittleEndian.PutUint32(trailer[4:], p.size)
	_, err := p.w.Write(trailer[:])
	return err
}
