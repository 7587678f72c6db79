package blobstore

import (
	"fmt"
	"hash"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// ReadCheck checks a stored blob as a reader returns it: the bytes read
// from its start, in order, are hashed, and the read that completes the
// blob is refused (its bytes withheld) unless they hash to the digest, so
// that a client never sees a clean end of content altered in the store.
// Reads elsewhere (a Range) are not checked: the store has no digest of a
// part. A read from the start checks again.
type ReadCheck struct {
	d      digest.Digest
	size   int64
	h      hash.Hash // nil when d's algorithm is not available here
	hashed int64     // bytes hashed from the start; -1 after a read elsewhere
}

// NewReadCheck returns the check of stored blob d of size bytes.
func NewReadCheck(d digest.Digest, size int64) *ReadCheck {
	c := &ReadCheck{d: d, size: size, hashed: -1}
	if d.Algorithm().Available() {
		c.h = d.Algorithm().Hash()
	}
	return c
}

// Saw takes the bytes p a read returned at offset at (none, at the end of
// an empty blob). whole is set when they complete a read of the whole blob
// from its start; err (ErrDigestMismatch) when that content is wrong.
func (c *ReadCheck) Saw(at int64, p []byte) (whole bool, err error) {
	if c.h == nil {
		return false, nil
	}
	if at == 0 && (len(p) > 0 || c.size == 0) {
		c.h.Reset()
		c.hashed = 0
	}
	if at != c.hashed {
		c.hashed = -1 // a range: not checked
		return false, nil
	}
	c.h.Write(p)
	c.hashed += int64(len(p))
	if c.hashed != c.size {
		return false, nil
	}
	c.hashed = -1 // checked: only a read from the start checks again
	if digest.NewDigest(c.d.Algorithm(), c.h) != c.d {
		return true, fmt.Errorf("stored blob %s does not match its digest: %w", c.d, errdef.ErrDigestMismatch)
	}
	return true, nil
}

// SeekOffset returns the offset a Seek(offset, whence) of a reader at off
// in content of size bytes moves to.
func SeekOffset(off, size, offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = off + offset
	case io.SeekEnd:
		abs = size + offset
	default:
		return 0, fmt.Errorf("seek: whence %d: %w", whence, errdef.ErrInvalid)
	}
	if abs < 0 {
		return 0, fmt.Errorf("seek to %d: %w", abs, errdef.ErrInvalid)
	}
	return abs, nil
}
