package delta

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/opencontainers/go-digest"
)

// v1Inputs makes the base and the target of testdata/v1/delta-v1.bin; it is
// the generator's inputs() (testdata/v1/gen.sh): change both or neither.
func v1Inputs() (base, target []byte) {
	r := rand.New(rand.NewPCG(1, 2))
	words := []string{"layer ", "usr/lib/", "registry ", "edge ", "0x", "\n", "delta ", "libc.so.6 "}
	for len(base) < 256<<10 {
		base = append(base, words[r.IntN(len(words))]...)
	}
	base = base[:256<<10]
	target = append(target, base[:100<<10]...)
	for i := 0; i < 3000; i++ {
		target = append(target, byte(r.IntN(256)))
	}
	target = append(target, base[120<<10:]...)
	for i := 0; i < len(target); i += 9000 {
		target[i] ^= 0x5a
	}
	return base, target
}

// Deltas published by deltactl releases of format 1 (before ADD
// operations) stay in registries and in the stores of sites: a decoder of
// this version rebuilds them. The fixture was written by the format-1
// encoder itself (testdata/v1/gen.sh), not crafted by this one.
func TestDecodesFormat1FromItsEncoder(t *testing.T) {
	t.Parallel()
	d, err := os.ReadFile("testdata/v1/delta-v1.bin")
	if err != nil {
		t.Fatal(err)
	}
	h, err := ReadHeader(bytes.NewReader(d))
	if err != nil {
		t.Fatalf("ReadHeader of a format-1 delta: %v", err)
	}
	if h.Version != 1 {
		t.Fatalf("fixture header version = %d, want 1 (regenerate it with testdata/v1/gen.sh)", h.Version)
	}
	base, target := v1Inputs()
	if h.Target != digest.FromBytes(target) {
		t.Fatalf("fixture target = %s, want %s: v1Inputs and gen.sh's inputs differ", h.Target, digest.FromBytes(target))
	}
	var out bytes.Buffer
	b := Base{Digest: digest.FromBytes(base), Size: int64(len(base)), R: bytes.NewReader(base)}
	if err := Decode(context.Background(), &out, bytes.NewReader(d), []Base{b}, Limits{}); err != nil {
		t.Fatalf("Decode of a format-1 delta: %v", err)
	}
	if !bytes.Equal(out.Bytes(), target) {
		t.Fatalf("Decode of a format-1 delta: %d bytes, not the target's %d", out.Len(), len(target))
	}
}
