// Package verify checks that content hashes to the digest, and has the size,
// it is expected to have. Every byte that enters the registry-edge cache goes
// through a Digester.
package verify

import (
	// The OCI image spec registers sha256 and sha512 digests; go-digest
	// needs their hashes linked in.
	_ "crypto/sha256"
	_ "crypto/sha512"
	"encoding"
	"encoding/binary"
	"fmt"
	"hash"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// Error reports content that did not match its descriptor.
type Error struct {
	Want, Got digest.Digest
	// WantSize is the expected size (-1 if unknown) and Read the number of
	// bytes actually seen.
	WantSize, Read int64
}

func (e *Error) Error() string {
	if e.Got == "" {
		return fmt.Sprintf("content %s: read %d bytes, want %d: size mismatch", e.Want, e.Read, e.WantSize)
	}
	return fmt.Sprintf("content %s: got digest %s after %d bytes: digest mismatch", e.Want, e.Got, e.Read)
}

// Is maps the error to its category.
func (e *Error) Is(target error) bool {
	if e.Got == "" {
		return target == errdef.ErrSizeMismatch
	}
	return target == errdef.ErrDigestMismatch
}

// Digester hashes and counts bytes written to it.
type Digester struct {
	want digest.Digest
	h    hash.Hash
	n    int64
}

// NewDigester returns a Digester for content expected to hash to want. It
// fails if want's algorithm is not available.
func NewDigester(want digest.Digest) (*Digester, error) {
	if err := want.Validate(); err != nil {
		return nil, fmt.Errorf("digest %q: %w", want, errdef.ErrInvalid)
	}
	return &Digester{want: want, h: want.Algorithm().Hash()}, nil
}

// Write hashes p.
func (d *Digester) Write(p []byte) (int, error) {
	d.h.Write(p)
	d.n += int64(len(p))
	return len(p), nil
}

// Written returns the number of bytes hashed so far.
func (d *Digester) Written() int64 { return d.n }

// State returns the hash state after the bytes written so far, for
// RestoreDigester. It fails if the algorithm's hash cannot be saved.
func (d *Digester) State() ([]byte, error) {
	m, ok := d.h.(encoding.BinaryMarshaler)
	if !ok {
		return nil, fmt.Errorf("hash %s: cannot save its state: %w", d.want.Algorithm(), errdef.ErrUnsupported)
	}
	return m.MarshalBinary()
}

// RestoreDigester returns a Digester for want that continues from state,
// saved by State after n bytes. A state of another algorithm, or one that
// does not count n bytes, is an error wrapping errdef.ErrInvalid.
func RestoreDigester(want digest.Digest, state []byte, n int64) (*Digester, error) {
	d, err := NewDigester(want)
	if err != nil {
		return nil, err
	}
	u, ok := d.h.(encoding.BinaryUnmarshaler)
	if !ok {
		return nil, fmt.Errorf("hash %s: cannot restore its state: %w", want.Algorithm(), errdef.ErrUnsupported)
	}
	if n < 0 {
		return nil, fmt.Errorf("hash state after %d bytes: %w", n, errdef.ErrInvalid)
	}
	if err := u.UnmarshalBinary(state); err != nil {
		return nil, fmt.Errorf("hash state: %w: %w", errdef.ErrInvalid, err)
	}
	// The saved state counts the bytes it has seen in its last 8 bytes
	// (big-endian), for every hash of crypto/sha256 and crypto/sha512.
	if len(state) < 8 || binary.BigEndian.Uint64(state[len(state)-8:]) != uint64(n) {
		return nil, fmt.Errorf("hash state does not cover %d bytes: %w", n, errdef.ErrInvalid)
	}
	d.n = n
	return d, nil
}

// Verify checks the bytes seen so far against the expected digest and, if
// size is not negative, the expected size.
func (d *Digester) Verify(size int64) error {
	if size >= 0 && d.n != size {
		return &Error{Want: d.want, WantSize: size, Read: d.n}
	}
	got := digest.NewDigestFromBytes(d.want.Algorithm(), d.h.Sum(nil))
	if got != d.want {
		return &Error{Want: d.want, Got: got, WantSize: size, Read: d.n}
	}
	return nil
}

// Reader verifies the content read through it. It never returns more than
// size bytes (when size >= 0), and at the end of the stream it returns a
// *Error instead of io.EOF if the content did not match.
type Reader struct {
	r    io.Reader
	d    *Digester
	size int64
	err  error
}

// NewReader wraps r so that reading it to the end verifies it against want
// and size (size < 0: any size).
func NewReader(r io.Reader, want digest.Digest, size int64) (*Reader, error) {
	d, err := NewDigester(want)
	if err != nil {
		return nil, err
	}
	if size >= 0 {
		// One byte more than allowed, so that excess content is detected.
		r = io.LimitReader(r, size+1)
	}
	return &Reader{r: r, d: d, size: size}, nil
}

// Read implements io.Reader.
func (v *Reader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	if v.size >= 0 && v.d.n+int64(n) > v.size {
		n = int(v.size - v.d.n)
		v.d.Write(p[:n])
		v.d.n++ // count the excess byte so that Verify reports it
		v.err = v.d.Verify(v.size)
		return n, v.err
	}
	v.d.Write(p[:n])
	if err == io.EOF {
		if verr := v.d.Verify(v.size); verr != nil {
			err = verr
		}
	}
	if err != nil {
		v.err = err
	}
	return n, err
}
