package blobstore

import (
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

func TestReadCheck(t *testing.T) {
	t.Parallel()
	content := []byte("0123456789")
	d := digest.FromBytes(content)
	read := func(c *ReadCheck, at int64, b []byte) (bool, error) { return c.Saw(at, b) }

	// In order, in pieces: the last piece completes and checks it.
	c := NewReadCheck(d, int64(len(content)))
	if whole, err := read(c, 0, content[:4]); whole || err != nil {
		t.Fatalf("first piece: whole %v, %v", whole, err)
	}
	if whole, err := read(c, 4, content[4:]); !whole || err != nil {
		t.Fatalf("last piece: whole %v, %v; want whole and right", whole, err)
	}
	// Altered: the completing read fails.
	bad := append([]byte{}, content...)
	bad[9] ^= 1
	c = NewReadCheck(d, int64(len(content)))
	read(c, 0, bad[:5])
	if whole, err := read(c, 5, bad[5:]); !whole || !errors.Is(err, errdef.ErrDigestMismatch) {
		t.Fatalf("altered: whole %v, %v; want a digest mismatch", whole, err)
	}
	// A range is not checked (its bytes may be anything), and a read from
	// the start afterwards checks again.
	c = NewReadCheck(d, int64(len(content)))
	if whole, err := read(c, 3, bad[3:]); whole || err != nil {
		t.Fatalf("range: whole %v, %v; want neither", whole, err)
	}
	read(c, 0, bad[:5])
	if _, err := read(c, 5, bad[5:]); !errors.Is(err, errdef.ErrDigestMismatch) {
		t.Fatalf("whole read after a range: %v, want a digest mismatch", err)
	}
	// An empty blob is checked at its end; one that should not be empty is
	// not checked by an empty read.
	if whole, err := NewReadCheck(digest.FromBytes(nil), 0).Saw(0, nil); !whole || err != nil {
		t.Fatalf("empty blob: whole %v, %v", whole, err)
	}
	if whole, err := NewReadCheck(d, 0).Saw(0, nil); !whole || !errors.Is(err, errdef.ErrDigestMismatch) {
		t.Fatalf("emptied blob: whole %v, %v; want a digest mismatch", whole, err)
	}
}
