package recipe

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// scaled shrinks a test layer size under the race detector, which slows
// compression down about twentyfold.
func scaled(n int) int {
	if raceEnabled {
		return n / 20
	}
	return n
}

// makeTar returns a deterministic tar of about size bytes that compresses
// like a real layer: text files, incompressible ones and structured binary.
func makeTar(tb testing.TB, seed uint64, size int) []byte {
	tb.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	words := strings.Fields(`the of and to in is for that on with as func return err nil if
		package import type struct string int byte error context ctx usr lib share doc
		copyright license permission software warranty install configure make debian
		{ } ( ) := == != // # include define static const void char unsigned long`)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; buf.Len() < size; i++ {
		var body []byte
		switch i % 5 {
		case 0, 1, 2: // text
			var b strings.Builder
			for n := 2<<10 + rng.IntN(48<<10); b.Len() < n; {
				for range 4 + rng.IntN(10) {
					b.WriteString(words[rng.IntN(len(words))])
					b.WriteByte(' ')
				}
				b.WriteByte('\n')
			}
			body = []byte(b.String())
		case 3: // already compressed or random
			body = make([]byte, 1<<10+rng.IntN(24<<10))
			for j := range body {
				body[j] = byte(rng.Uint32())
			}
		case 4: // structured binary: records with counters and small variations
			n := 4<<10 + rng.IntN(40<<10)
			for len(body) < n {
				body = binary.LittleEndian.AppendUint32(body, uint32(len(body)))
				body = binary.LittleEndian.AppendUint16(body, uint16(rng.IntN(16)))
				body = append(body, 0, 0, 0x48, 0x89, 0xe5, byte(rng.IntN(4)))
			}
		}
		hdr := &tar.Header{
			Name:     fmt.Sprintf("usr/share/pkg%02d/file%04d", i%7, i),
			Mode:     0o644,
			Size:     int64(len(body)),
			ModTime:  time.Unix(1700000000+int64(i), 0),
			Typeflag: tar.TypeReg,
			Format:   tar.FormatPAX,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// writeChunked writes data to w in pseudo-random pieces of 1 byte to 200
// KiB, to check that output does not depend on how input is split.
func writeChunked(tb testing.TB, w io.Writer, data []byte, seed uint64) {
	tb.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	for len(data) > 0 {
		n := min(len(data), 1+rng.IntN(200<<10))
		if rng.IntN(8) == 0 {
			n = min(len(data), 1+rng.IntN(16))
		}
		if _, err := w.Write(data[:n]); err != nil {
			tb.Fatal(err)
		}
		data = data[n:]
	}
}

// onlyReader hides every method but Read (such as WriterTo), as the
// wrapping readers of real tools do.
type onlyReader struct{ io.Reader }

// failWriter fails after n bytes.
type failWriter struct {
	n   int
	err error
}

func (f *failWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		k := f.n
		f.n = 0
		return k, f.err
	}
	f.n -= len(p)
	return len(p), nil
}
