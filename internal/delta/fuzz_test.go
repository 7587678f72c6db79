package delta

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
)

// fuzzLimits keep each fuzz input cheap: a hostile delta may claim more,
// and must then be rejected.
var fuzzLimits = Limits{
	MaxTargetSize: 1 << 20,
	MaxDict:       DefaultMaxDict,
	MaxLiteral:    DefaultMaxLiteral,
	MaxControl:    DefaultMaxControl,
	MaxOps:        1 << 16,
}

// fuzzSeeds returns real deltas against the fixed fuzz bases.
func fuzzSeeds(t testing.TB) ([]Base, [][]byte) {
	r := rng(21)
	files := genLayer(r, 10)
	base := layerTar(t, files)
	other := mkTar(t, tar.FormatGNU, tfile{name: "bin/tool", body: randBytes(r, 3000)}, tfile{name: "lnk", typ: tar.TypeSymlink, link: "bin/tool"})
	bases := basesOf(base, other)
	var seeds [][]byte
	add := func(target []byte, opts EncodeOptions) {
		d, _ := encode(t, target, bases, opts)
		seeds = append(seeds, d)
	}
	add(base, EncodeOptions{})
	files[2].body = edit(r, files[2].body, 2, 10)
	files[5].body = text(r, 5000)
	add(layerTar(t, files), EncodeOptions{BlockSize: 4 << 10, Concurrency: 1})
	add(mkTar(t, tar.FormatPAX, tfile{name: "bin/tool2", body: randBytes(r, 100)}), EncodeOptions{})
	add(nil, EncodeOptions{})
	add(append(bytes.Clone(other[:2000]), base[:3000]...), EncodeOptions{MinCopy: 64})
	// A changed byte every 150: ADD operations.
	tool := bytes.Clone(other[512 : 512+3000])
	for i := 75; i < len(tool); i += 150 {
		tool[i]++
	}
	target := mkTar(t, tar.FormatGNU, tfile{name: "bin/tool", body: tool})
	if _, st := encode(t, target, bases, EncodeOptions{}); st.AddBytes == 0 {
		t.Fatalf("fuzz seed without ADD operations: %+v", st)
	}
	add(target, EncodeOptions{})
	return bases, seeds
}

// FuzzDecode feeds arbitrary deltas to the decoder. It must never panic or
// exceed its limits, and may return nil only for output that matches the
// header's size and digest.
func FuzzDecode(f *testing.F) {
	bases, seeds := fuzzSeeds(f)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, delta []byte) {
		var out bytes.Buffer
		err := Decode(context.Background(), &out, bytes.NewReader(delta), bases, fuzzLimits)
		if int64(out.Len()) > fuzzLimits.MaxTargetSize {
			t.Fatalf("Decode() wrote %d bytes, over the %d limit", out.Len(), fuzzLimits.MaxTargetSize)
		}
		if err != nil {
			return
		}
		h, herr := ReadHeader(bytes.NewReader(delta))
		if herr != nil {
			t.Fatalf("Decode() = nil but ReadHeader() error = %v", herr)
		}
		sum := sha256.Sum256(out.Bytes())
		if h.Target != digest.NewDigestFromBytes(digest.SHA256, sum[:]) || h.TargetSize != int64(out.Len()) {
			t.Fatalf("Decode() = nil with output %d bytes not matching header %+v", out.Len(), h)
		}
	})
}

// FuzzReadHeader checks that header parsing never panics and round-trips
// what it accepts.
func FuzzReadHeader(f *testing.F) {
	_, seeds := fuzzSeeds(f)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		h, err := ReadHeader(io.Reader(struct{ io.Reader }{r}))
		if err != nil {
			return
		}
		again, err := appendHeader(nil, h)
		if err != nil {
			t.Fatalf("appendHeader(ReadHeader()) error = %v", err)
		}
		h2, err := ReadHeader(bytes.NewReader(again))
		if err != nil {
			t.Fatalf("ReadHeader(appendHeader(h)) error = %v", err)
		}
		if diff := cmp.Diff(h, h2); diff != "" {
			t.Fatalf("ReadHeader(appendHeader(h)) mismatch (-want +got):\n%s", diff)
		}
	})
}
