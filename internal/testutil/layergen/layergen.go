// Package layergen makes deterministic layer tars for tests of deltas: a
// version 1 of a file tree and a version 2 with a few files edited, added,
// removed and renamed, the way an image update changes a layer.
package layergen

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"
)

// Tree is a layer's files, by path.
type Tree map[string][]byte

// New returns a tree of n files (text, binary records and random bytes) of
// about avg bytes each, determined by seed.
func New(seed uint64, n, avg int) Tree {
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	t := Tree{}
	for i := range n {
		dir := fmt.Sprintf("usr/lib/pkg%02d", i%7)
		size := avg/2 + rng.IntN(avg+1)
		switch i % 4 {
		case 0, 1:
			t[fmt.Sprintf("%s/file%03d.txt", dir, i)] = text(rng, size)
		case 2:
			t[fmt.Sprintf("%s/lib%03d.so.1", dir, i)] = records(rng, size)
		default:
			t[fmt.Sprintf("%s/blob%03d.bin", dir, i)] = random(rng, size)
		}
	}
	return t
}

// Update returns a copy of t as the next version: about one file in ten
// edited in a few places, one removed, one added, one renamed (a versioned
// library name).
func (t Tree) Update(seed uint64) Tree {
	rng := rand.New(rand.NewPCG(seed, seed^0xda7a))
	next := Tree{}
	paths := t.Paths()
	for _, p := range paths {
		next[p] = t[p]
	}
	for i, p := range paths {
		switch {
		case i == 1:
			delete(next, p)
		case i%10 == 3:
			b := append([]byte(nil), t[p]...)
			for range 3 {
				at := rng.IntN(len(b) + 1)
				b = append(b[:at], append(text(rng, 64), b[at:]...)...)
			}
			next[p] = b
		case strings.HasSuffix(p, ".so.1") && i%10 == 6:
			delete(next, p)
			next[strings.TrimSuffix(p, ".1")+".2"] = t[p]
		}
	}
	next["etc/added.conf"] = text(rng, 4<<10)
	return next
}

// Paths returns t's paths, sorted.
func (t Tree) Paths() []string {
	var ps []string
	for p := range t {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// Tar returns t as a tar with fixed metadata, so equal trees give equal
// bytes.
func (t Tree) Tar() []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, p := range t.Paths() {
		hdr := &tar.Header{Name: p, Mode: 0o644, Size: int64(len(t[p])), ModTime: mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			panic(err)
		}
		if _, err := tw.Write(t[p]); err != nil {
			panic(err)
		}
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// Gzip compresses b with compress/gzip at level, as Docker, BuildKit and
// go-containerregistry do (level gzip.DefaultCompression for most).
func Gzip(b []byte, level int) []byte {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		panic(err)
	}
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

var words = strings.Fields(`the of and to in is for that on with as func return err nil if
	package import type struct string int byte error context usr lib share doc license
	copyright permission software install configure make debian { } ( ) := == !=`)

func text(rng *rand.Rand, n int) []byte {
	var b strings.Builder
	for b.Len() < n {
		for range 4 + rng.IntN(10) {
			b.WriteString(words[rng.IntN(len(words))])
			b.WriteByte(' ')
		}
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

func records(rng *rand.Rand, n int) []byte {
	var b []byte
	for len(b) < n {
		b = append(b, byte(len(b)), byte(len(b)>>8), byte(rng.IntN(16)), 0, 0x48, 0x89, 0xe5, byte(rng.IntN(4)))
	}
	return b
}

func random(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}
