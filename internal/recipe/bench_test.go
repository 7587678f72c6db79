package recipe

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// benchLayers compresses a layer the way common tools do: a generated
// 64 MiB tar, or the tar named by REGISTRY_EDGE_BENCH_TAR.
func benchLayers(b *testing.B) (tar []byte, blobs []struct {
	name string
	blob []byte
}) {
	b.Helper()
	if p := os.Getenv("REGISTRY_EDGE_BENCH_TAR"); p != "" {
		var err error
		if tar, err = os.ReadFile(p); err != nil {
			b.Fatal(err)
		}
	} else {
		tar = makeTar(b, 40, 64<<20)
	}
	byName := map[string]producer{}
	for _, p := range producers() {
		byName[p.name] = p
	}
	for _, name := range []string{"go gzip default", "go gzip 1", "pgzip default (containers/image)", "zstd default (containers/image)", "go gzip 9"} {
		blobs = append(blobs, struct {
			name string
			blob []byte
		}{name, byName[name].make(b, tar)})
	}
	var kb bytes.Buffer
	z, _ := kgzip.NewWriterLevel(&kb, 1) // no candidate: a full pass for nothing
	z.Write(tar)
	z.Close()
	blobs = append(blobs, struct {
		name string
		blob []byte
	}{"no match", kb.Bytes()})
	return tar, blobs
}

// BenchmarkDetect reports Detect's speed in MB/s of uncompressed tar.
func BenchmarkDetect(b *testing.B) {
	tar, blobs := benchLayers(b)
	for _, bl := range blobs {
		b.Run(bl.name, func(b *testing.B) {
			b.SetBytes(int64(len(tar)))
			d := digest.FromBytes(bl.blob)
			for b.Loop() {
				_, err := Detect(context.Background(), bytes.NewReader(bl.blob), int64(len(bl.blob)), d)
				if err != nil && !(bl.name == "no match" && errors.Is(err, errdef.ErrUnsupported)) {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRebuild reports Rebuild's speed in MB/s of uncompressed tar.
func BenchmarkRebuild(b *testing.B) {
	tar, blobs := benchLayers(b)
	for _, bl := range blobs {
		if bl.name == "no match" {
			continue
		}
		r, err := Detect(context.Background(), bytes.NewReader(bl.blob), int64(len(bl.blob)), digest.FromBytes(bl.blob))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bl.name, func(b *testing.B) {
			b.SetBytes(int64(len(tar)))
			for b.Loop() {
				if err := Rebuild(context.Background(), io.Discard, bytes.NewReader(tar), r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
