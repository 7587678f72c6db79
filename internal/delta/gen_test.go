package delta

import (
	"archive/tar"
	"bytes"
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// tfile is one entry of a generated tar.
type tfile struct {
	name string
	body []byte
	typ  byte // 0: regular file
	link string
	pax  map[string]string
	mod  time.Time
}

// mkTar writes files as a tar in the given format (tar.FormatUnknown lets
// archive/tar choose).
func mkTar(t testing.TB, format tar.Format, files ...tfile) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{
			Name:       f.name,
			Mode:       0o644,
			ModTime:    time.Unix(1704067200, 0),
			Typeflag:   f.typ,
			Linkname:   f.link,
			Format:     format,
			PAXRecords: f.pax,
		}
		if !f.mod.IsZero() {
			h.ModTime = f.mod
		}
		if f.typ == 0 {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(f.body))
		}
		if f.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %s: %v", f.name, err)
		}
		if f.typ == 0 {
			if _, err := tw.Write(f.body); err != nil {
				t.Fatalf("tar write %s: %v", f.name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func rng(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x5eed)) }

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for k := 0; k < 8 && i+k < n; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b
}

var words = strings.Fields(`func return if else for range var const type struct interface map chan go defer
	select case default package import error nil true false string int byte len cap make new append copy
	delete panic recover context reader writer buffer config registry layer digest manifest blob tag`)

// text generates n bytes of source-like text.
func text(r *rand.Rand, n int) []byte {
	var b bytes.Buffer
	for b.Len() < n {
		line := r.IntN(10) + 2
		b.WriteString(strings.Repeat("\t", r.IntN(3)))
		for i := 0; i < line; i++ {
			b.WriteString(words[r.IntN(len(words))])
			b.WriteByte(' ')
		}
		b.WriteByte('\n')
	}
	return b.Bytes()[:n]
}

// edit returns a copy of b with k regions of up to m bytes overwritten.
func edit(r *rand.Rand, b []byte, k, m int) []byte {
	out := bytes.Clone(b)
	for range k {
		n := r.IntN(m) + 1
		at := r.IntN(max(1, len(out)-n))
		copy(out[at:], randBytes(r, n))
	}
	return out
}

func insert(b []byte, at int, ins []byte) []byte {
	out := make([]byte, 0, len(b)+len(ins))
	out = append(out, b[:at]...)
	out = append(out, ins...)
	return append(out, b[at:]...)
}

func basesOf(bs ...[]byte) []Base {
	out := make([]Base, len(bs))
	for i, b := range bs {
		out[i] = Base{Digest: digest.FromBytes(b), Size: int64(len(b)), R: bytes.NewReader(b)}
	}
	return out
}

// encode returns the delta of target against bases.
func encode(t testing.TB, target []byte, bases []Base, opts EncodeOptions) ([]byte, Stats) {
	t.Helper()
	var buf bytes.Buffer
	st, err := Encode(context.Background(), &buf, bytes.NewReader(target), int64(len(target)), bases, opts)
	if err != nil {
		t.Fatalf("Encode() error = %v", err)
	}
	if st.DeltaSize != int64(buf.Len()) {
		t.Fatalf("Encode() Stats.DeltaSize = %d, wrote %d", st.DeltaSize, buf.Len())
	}
	return buf.Bytes(), st
}

// decode rebuilds the target.
func decode(delta []byte, bases []Base, lim Limits) ([]byte, error) {
	var out bytes.Buffer
	err := Decode(context.Background(), &out, bytes.NewReader(delta), bases, lim)
	return out.Bytes(), err
}

// layer generates a layer-like tar: text files, binaries, links, dirs.
type layerFile struct {
	name string
	body []byte
}

func genLayer(r *rand.Rand, nfiles int) []layerFile {
	var fs []layerFile
	for i := range nfiles {
		dir := []string{"usr/lib", "usr/share/doc/pkg", "app/node_modules/pkg", "etc", "usr/bin"}[i%5]
		var body []byte
		if i%7 == 3 {
			body = randBytes(r, r.IntN(64<<10)+100)
		} else {
			body = text(r, r.IntN(16<<10)+10)
		}
		fs = append(fs, layerFile{name: dir + "/file" + string(rune('a'+i%26)) + "-" + itoa(i) + ".txt", body: body})
	}
	return fs
}

func itoa(i int) string {
	const d = "0123456789"
	if i < 10 {
		return d[i : i+1]
	}
	return itoa(i/10) + d[i%10:i%10+1]
}

func layerTar(t testing.TB, fs []layerFile) []byte {
	files := make([]tfile, len(fs))
	for i, f := range fs {
		files[i] = tfile{name: f.name, body: f.body}
	}
	return mkTar(t, tar.FormatPAX, files...)
}
