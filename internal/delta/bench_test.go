package delta

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"testing"
)

// benchPair is a layer-like update: 400 small files of which 5% changed,
// plus a 16 MiB binary with scattered edits and an insertion.
func benchPair(b *testing.B) (base, target []byte) {
	b.Helper()
	r := rng(31)
	files := genLayer(r, 400)
	bin := randBytes(r, 16<<20)
	old := append([]tfile{{name: "usr/bin/app", body: bin}}, toTfiles(files)...)
	for i := 0; i < len(files); i += 20 {
		files[i].body = edit(r, files[i].body, 2, 30)
	}
	nbin := insert(edit(r, bin, 20, 200), 1<<20, randBytes(r, 4096))
	nw := append([]tfile{{name: "usr/bin/app", body: nbin}}, toTfiles(files)...)
	return mkTar(b, tar.FormatPAX, old...), mkTar(b, tar.FormatPAX, nw...)
}

func toTfiles(fs []layerFile) []tfile {
	out := make([]tfile, len(fs))
	for i, f := range fs {
		out[i] = tfile{name: f.name, body: f.body}
	}
	return out
}

// BenchmarkEncode reports MB/s of target (uncompressed tar) input.
func BenchmarkEncode(b *testing.B) {
	base, target := benchPair(b)
	bases := basesOf(base)
	b.SetBytes(int64(len(target)))
	b.ResetTimer()
	var size int64
	for b.Loop() {
		st, err := Encode(context.Background(), io.Discard, bytes.NewReader(target), int64(len(target)), bases, EncodeOptions{})
		if err != nil {
			b.Fatal(err)
		}
		size = st.DeltaSize
	}
	b.ReportMetric(100*float64(size)/float64(len(target)), "delta%")
}

// BenchmarkDecode reports MB/s of rebuilt output.
func BenchmarkDecode(b *testing.B) {
	base, target := benchPair(b)
	bases := basesOf(base)
	delta, _ := encode(b, target, bases, EncodeOptions{})
	b.SetBytes(int64(len(target)))
	b.ResetTimer()
	for b.Loop() {
		if err := Decode(context.Background(), io.Discard, bytes.NewReader(delta), bases, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}
