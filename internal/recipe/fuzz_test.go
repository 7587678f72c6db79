package recipe

import (
	"bytes"
	gogzip "compress/gzip"
	"context"
	"encoding/json"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

func FuzzReadGzipHeader(f *testing.F) {
	f.Add([]byte{gzipID1, gzipID2, gzipDeflate, 0, 0, 0, 0, 0, 0, 255})
	f.Add([]byte{gzipID1, gzipID2, gzipDeflate, 0x1e, 1, 2, 3, 4, 0, 3, 2, 0, 'a', 'b', 'n', 0, 'c', 0, 0, 0})
	f.Add([]byte{gzipID1, gzipID2, gzipDeflate, 0x04, 0, 0, 0, 0, 0, 0, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := readGzipHeader(bytes.NewReader(data), 1<<10)
		if err != nil {
			return
		}
		if !bytes.HasPrefix(data, h) {
			t.Fatalf("header %x is not a prefix of the input %x", h, data)
		}
		again, err := readGzipHeader(bytes.NewReader(h), 1<<10)
		if err != nil || !bytes.Equal(again, h) {
			t.Fatalf("header %x does not parse again: %x, %v", h, again, err)
		}
	})
}

// FuzzRecipe feeds Rebuild recipes as they arrive from the network.
func FuzzRecipe(f *testing.F) {
	for _, r := range []Recipe{
		validGzip(EncoderGoGzip, 1), validGzip(EncoderPgzip, -1), validGzip(EncoderKlauspostGzip, 9),
		{Format: FormatZstd, Encoder: EncoderZstd, Level: 3, FirstBlock: 8, Generation: generation(EncoderZstd)},
		{Format: FormatNone},
	} {
		b, err := json.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	tar := makeTar(f, 30, 4<<10)
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Recipe
		if err := json.Unmarshal(data, &r); err != nil {
			return
		}
		var out bytes.Buffer
		if err := Rebuild(context.Background(), &out, bytes.NewReader(tar), r); err != nil {
			if r.Reproducible() == nil {
				t.Fatalf("Rebuild(%+v) = %v for a reproducible recipe", r, err)
			}
			return
		}
		if !bytes.HasPrefix(out.Bytes(), r.Header) {
			t.Fatalf("Rebuild(%+v) output does not start with the header", r)
		}
	})
}

// FuzzDetect feeds Detect arbitrary blobs. Whenever it finds a recipe,
// Rebuild must make the blob again from its decompressed content.
func FuzzDetect(f *testing.F) {
	tar := makeTar(f, 31, 8<<10)
	for _, p := range producers() {
		switch p.name {
		case "go gzip default", "go gzip header fields", "pgzip default (containers/image)", "zstd default (containers/image)", "zstd 1 stream, 4 goroutines":
			b := p.make(f, tar)
			f.Add(b)
			f.Add(b[:len(b)-5])
		}
	}
	f.Add(tar)
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x68, 0x13, 0x00, 0x10, 0x00})
	f.Fuzz(func(t *testing.T, blob []byte) {
		ctx := context.Background()
		r, err := Detect(ctx, bytes.NewReader(blob), int64(len(blob)), digest.FromBytes(blob), WithMaxTarSize(1<<20))
		if err != nil {
			return
		}
		var content []byte
		switch r.Format {
		case FormatNone:
			content = blob
		case FormatGzip:
			zr, err := gogzip.NewReader(bytes.NewReader(blob))
			if err != nil {
				t.Fatalf("Detect() = %s for a blob compress/gzip cannot read: %v", r, err)
			}
			if content, err = io.ReadAll(zr); err != nil {
				t.Fatalf("Detect() = %s for a blob compress/gzip cannot read: %v", r, err)
			}
		case FormatZstd:
			zr, err := zstd.NewReader(bytes.NewReader(blob))
			if err != nil {
				t.Fatal(err)
			}
			content, err = io.ReadAll(zr)
			zr.Close()
			if err != nil {
				t.Fatalf("Detect() = %s for a blob the zstd decoder cannot read: %v", r, err)
			}
		}
		var out bytes.Buffer
		if err := Rebuild(ctx, &out, bytes.NewReader(content), r); err != nil || !bytes.Equal(out.Bytes(), blob) {
			t.Fatalf("Rebuild(%s) = %d bytes, %v; want the %d-byte blob", r, out.Len(), err, len(blob))
		}
	})
}
