package delta

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

type rtCase struct {
	name     string
	bases    [][]byte
	target   []byte
	maxDelta int // delta size bound in bytes; proves that matching worked
}

func roundTripCases(t testing.TB) []rtCase {
	r := rng(1)
	files := genLayer(r, 60)
	base := layerTar(t, files)

	with := func(f func([]layerFile) []layerFile) []byte {
		fs := make([]layerFile, len(files))
		copy(fs, files)
		return layerTar(t, f(fs))
	}
	bin := randBytes(r, 1<<20)
	txt := text(r, 200<<10)
	so := randBytes(r, 300<<10)
	binBase := mkTar(t, tar.FormatPAX, tfile{name: "usr/bin/tool", body: bin}, tfile{name: "etc/notes.txt", body: txt},
		tfile{name: "usr/lib/libfoo.so.1.2", body: so})

	other := layerTar(t, genLayer(rng(2), 40))
	otherFiles := genLayer(rng(2), 40)

	return []rtCase{
		{name: "unchanged", bases: [][]byte{base}, target: base, maxDelta: 200},
		{
			name: "modified text file", bases: [][]byte{binBase},
			target: mkTar(t, tar.FormatPAX, tfile{name: "usr/bin/tool", body: bin},
				tfile{name: "etc/notes.txt", body: insert(edit(r, txt, 3, 40), 5000, []byte("a new line of text\n"))},
				tfile{name: "usr/lib/libfoo.so.1.2", body: so}),
			maxDelta: 1200,
		},
		{
			name: "modified binary", bases: [][]byte{binBase},
			target: mkTar(t, tar.FormatPAX, tfile{name: "usr/bin/tool", body: edit(r, bin, 5, 200)},
				tfile{name: "etc/notes.txt", body: txt}, tfile{name: "usr/lib/libfoo.so.1.2", body: so}),
			maxDelta: 2500,
		},
		{
			name: "appended to file", bases: [][]byte{binBase},
			target: mkTar(t, tar.FormatPAX, tfile{name: "usr/bin/tool", body: bin},
				tfile{name: "etc/notes.txt", body: append(bytes.Clone(txt), "appended line\n"...)},
				tfile{name: "usr/lib/libfoo.so.1.2", body: so}),
			maxDelta: 500,
		},
		{
			name: "renamed file", bases: [][]byte{binBase},
			target: mkTar(t, tar.FormatPAX, tfile{name: "opt/tool/bin/tool-renamed", body: bin},
				tfile{name: "etc/notes.txt", body: txt}, tfile{name: "usr/lib/libfoo.so.1.2", body: so}),
			maxDelta: 500,
		},
		{
			name: "versioned so rename", bases: [][]byte{binBase},
			target: mkTar(t, tar.FormatPAX, tfile{name: "usr/bin/tool", body: bin},
				tfile{name: "etc/notes.txt", body: txt}, tfile{name: "usr/lib/libfoo.so.1.3", body: edit(r, so, 4, 100)}),
			maxDelta: 1500,
		},
		{
			name: "added and removed files", bases: [][]byte{base},
			target: with(func(fs []layerFile) []layerFile {
				fs = append(fs[:10], fs[13:]...)                          // removed
				fs = append(fs, layerFile{"etc/new.conf", text(r, 3000)}) // added
				return fs
			}),
			maxDelta: 3000 + 600,
		},
		{
			name: "modified files among many", bases: [][]byte{base},
			target: with(func(fs []layerFile) []layerFile {
				for _, i := range []int{4, 17, 33} {
					fs[i].body = edit(r, fs[i].body, 2, 20)
				}
				return fs
			}),
			maxDelta: 1000,
		},
		{
			name: "links dirs pax long names",
			bases: [][]byte{mkTar(t, tar.FormatPAX,
				tfile{name: "usr/", typ: tar.TypeDir},
				tfile{name: "usr/share/" + string(bytes.Repeat([]byte("long-directory-name/"), 8)) + "file.txt", body: txt},
				tfile{name: "usr/bin/tool", body: bin},
				tfile{name: "usr/bin/tool-link", typ: tar.TypeLink, link: "usr/bin/tool"},
				tfile{name: "usr/bin/tool-sym", typ: tar.TypeSymlink, link: "tool"},
			)},
			target: mkTar(t, tar.FormatPAX,
				tfile{name: "usr/", typ: tar.TypeDir},
				tfile{name: "usr/share/" + string(bytes.Repeat([]byte("long-directory-name/"), 8)) + "file.txt", body: edit(r, txt, 1, 10),
					pax: map[string]string{"user.comment": "changed"}},
				tfile{name: "usr/bin/tool", body: bin},
				tfile{name: "usr/bin/tool-link", typ: tar.TypeLink, link: "usr/bin/tool"},
				tfile{name: "usr/bin/tool-sym2", typ: tar.TypeSymlink, link: "tool"},
				tfile{name: "usr/lib/", typ: tar.TypeDir},
				tfile{name: "dev/null", typ: tar.TypeChar},
			),
			maxDelta: 1200,
		},
		{
			name: "gnu format long names", bases: [][]byte{binBase},
			target: mkTar(t, tar.FormatGNU,
				tfile{name: string(bytes.Repeat([]byte("gnu-long-name/"), 12)) + "tool", body: bin},
				tfile{name: "etc/notes.txt", body: txt}),
			maxDelta: 800,
		},
		{name: "empty target", bases: [][]byte{base}, target: []byte{}, maxDelta: 200},
		{name: "empty tar", bases: [][]byte{base}, target: mkTar(t, tar.FormatPAX), maxDelta: 200},
		{name: "no bases", target: base, maxDelta: len(base)},
		{
			name: "several bases", bases: [][]byte{base, other},
			target:   layerTar(t, append(append([]layerFile{}, files[:20]...), otherFiles[5:25]...)),
			maxDelta: 1200,
		},
		{name: "target is second base", bases: [][]byte{base, other}, target: other, maxDelta: 200},
		{
			name: "not a tar", bases: [][]byte{bin},
			target: insert(edit(r, bin, 3, 100), 1000, randBytes(r, 500)), maxDelta: 1500,
		},
		{name: "garbage base", bases: [][]byte{randBytes(r, 5000)}, target: base, maxDelta: len(base)},
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tt := range roundTripCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bases := basesOf(tt.bases...)
			delta, st := encode(t, tt.target, bases, EncodeOptions{})
			got, err := decode(delta, bases, Limits{})
			if err != nil {
				t.Fatalf("Decode() error = %v", err)
			}
			if !bytes.Equal(got, tt.target) {
				t.Fatalf("Decode() = %d bytes, want the %d target bytes", len(got), len(tt.target))
			}
			if len(delta) > tt.maxDelta {
				t.Errorf("delta = %d bytes, want <= %d (stats %+v)", len(delta), tt.maxDelta, st)
			}
			h, err := ReadHeader(bytes.NewReader(delta))
			if err != nil {
				t.Fatalf("ReadHeader() error = %v", err)
			}
			if h.Target != digest.FromBytes(tt.target) || h.TargetSize != int64(len(tt.target)) || len(h.Bases) != len(tt.bases) {
				t.Errorf("ReadHeader() = %+v, want target %s of %d bytes", h, digest.FromBytes(tt.target), len(tt.target))
			}
		})
	}
}

// TestRoundTripOptions runs every case with small blocks and dictionaries,
// another level and one worker, so that block splitting is exercised.
func TestRoundTripOptions(t *testing.T) {
	t.Parallel()
	opts := []EncodeOptions{
		{BlockSize: 4 << 10, MaxDict: 8 << 10, Concurrency: 1, Level: LevelFastest},
		{BlockSize: 64 << 10, MaxDict: 0, MinCopy: 64, Concurrency: 3, Level: LevelDefault},
	}
	for _, tt := range roundTripCases(t) {
		for i, o := range opts {
			bases := basesOf(tt.bases...)
			delta, _ := encode(t, tt.target, bases, o)
			got, err := decode(delta, bases, Limits{})
			if err != nil || !bytes.Equal(got, tt.target) {
				t.Errorf("%s, options %d: Decode() = %d bytes, %v; want the %d target bytes", tt.name, i, len(got), err, len(tt.target))
			}
		}
	}
}

// TestLargeFile checks long-range matching: a 40 MiB file with a few edits
// and an insertion near the start must give a delta under 2% of its size
// (klauspost zstd alone, with the base as one raw dictionary, loses most
// matches at this distance).
func TestLargeFile(t *testing.T) {
	t.Parallel()
	size := 40 << 20
	if testing.Short() || raceEnabled {
		size = 8 << 20
	}
	r := rng(7)
	big := randBytes(r, size)
	base := mkTar(t, tar.FormatPAX, tfile{name: "data/model.bin", body: big}, tfile{name: "etc/x", body: text(r, 1000)})
	nb := insert(edit(r, big, 6, 300), 4096, randBytes(r, 777))
	target := mkTar(t, tar.FormatPAX, tfile{name: "data/model.bin", body: nb}, tfile{name: "etc/x", body: text(r, 1000)})
	bases := basesOf(base)
	delta, st := encode(t, target, bases, EncodeOptions{})
	got, err := decode(delta, bases, Limits{})
	if err != nil || !bytes.Equal(got, target) {
		t.Fatalf("Decode() = %d bytes, %v; want the %d target bytes", len(got), err, len(target))
	}
	if limit := size / 50; len(delta) >= limit {
		t.Errorf("delta = %d bytes, want < %d (2%% of the file); stats %+v", len(delta), limit, st)
	}
	if st.CopyBytes < int64(size)*9/10 {
		t.Errorf("Stats.CopyBytes = %d, want most of %d", st.CopyBytes, size)
	}
}

func TestEncodeVerifiesBases(t *testing.T) {
	t.Parallel()
	base := layerTar(t, genLayer(rng(3), 5))
	bases := basesOf(base)
	bases[0].Digest = digest.FromString("something else")
	_, err := Encode(context.Background(), &bytes.Buffer{}, bytes.NewReader(base), int64(len(base)), bases, EncodeOptions{})
	if !errors.Is(err, errdef.ErrDigestMismatch) {
		t.Errorf("Encode() with a wrong base digest: error = %v, want %v", err, errdef.ErrDigestMismatch)
	}
	// A base without a digest gets it computed.
	bases = basesOf(base)
	bases[0].Digest = ""
	delta, _ := encode(t, base, bases, EncodeOptions{})
	h, err := ReadHeader(bytes.NewReader(delta))
	if err != nil || h.Bases[0].Digest != digest.FromBytes(base) {
		t.Errorf("ReadHeader() = %+v, %v; want base %s", h, err, digest.FromBytes(base))
	}
}

func TestEncodeOptionsInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts EncodeOptions
	}{
		{"level", EncodeOptions{Level: 9}},
		{"block size", EncodeOptions{BlockSize: 10}},
		{"dict", EncodeOptions{MaxDict: -1}},
		{"min copy", EncodeOptions{MinCopy: 8}},
		{"concurrency", EncodeOptions{Concurrency: -1}},
	}
	for _, tt := range tests {
		_, err := Encode(context.Background(), &bytes.Buffer{}, bytes.NewReader(nil), 0, nil, tt.opts)
		if !errors.Is(err, errdef.ErrInvalid) {
			t.Errorf("Encode(%s) error = %v, want %v", tt.name, err, errdef.ErrInvalid)
		}
	}
}

func TestEncodeCanceled(t *testing.T) {
	t.Parallel()
	base := layerTar(t, genLayer(rng(4), 30))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Encode(ctx, &bytes.Buffer{}, bytes.NewReader(base), int64(len(base)), basesOf(base), EncodeOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Encode() error = %v, want %v", err, context.Canceled)
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(b []byte) (int, error) {
	if f.n -= len(b); f.n < 0 {
		return 0, errors.New("disk full")
	}
	return len(b), nil
}

func TestEncodeWriteError(t *testing.T) {
	t.Parallel()
	target := layerTar(t, genLayer(rng(5), 200))
	_, err := Encode(context.Background(), &failWriter{n: 100}, bytes.NewReader(target), int64(len(target)), nil,
		EncodeOptions{BlockSize: 4 << 10})
	if err == nil || err.Error() == "" {
		t.Errorf("Encode() to a failing writer: error = %v, want an error", err)
	}
}

func TestProgress(t *testing.T) {
	t.Parallel()
	target := layerTar(t, genLayer(rng(6), 100))
	var last, total int64
	calls := 0
	_, err := Encode(context.Background(), &bytes.Buffer{}, bytes.NewReader(target), int64(len(target)), nil,
		EncodeOptions{BlockSize: 16 << 10, Progress: func(done, tot int64) {
			if done < last {
				t.Errorf("Progress(%d) after %d: not monotonic", done, last)
			}
			last, total = done, tot
			calls++
		}})
	if err != nil {
		t.Fatal(err)
	}
	if calls < 2 || last != int64(len(target)) || total != int64(len(target)) {
		t.Errorf("Progress: %d calls, last (%d, %d), want several ending at (%d, %d)", calls, last, total, len(target), len(target))
	}
}

// relink imitates a program rebuilt after a small change: code is inserted
// near the start, so everything after it moves and every 4-byte address
// field that points past the insertion changes, every few hundred bytes.
// Exact runs are short; at the right alignment almost every byte matches.
func relink(r *rand.Rand, size, shift int) (old, new []byte) {
	old = randBytes(r, size)
	var fields []int
	for p := 100 + r.IntN(400); p+4 < size; p += 50 + r.IntN(350) {
		fields = append(fields, p)
		binary.LittleEndian.PutUint32(old[p:], uint32(r.IntN(size)))
	}
	at := size / 5
	new = insert(old, at, randBytes(r, shift))
	for _, p := range fields {
		q := p
		if p >= at {
			q += shift
		}
		if a := binary.LittleEndian.Uint32(old[p:]); int(a) >= at {
			binary.LittleEndian.PutUint32(new[q:], a+uint32(shift))
		}
	}
	return old, new
}

// TestApproximateMatches checks ADD operations: on a relinked program
// most target bytes must come from ADDs, and the delta must be a small
// fraction of what literals against a dictionary cost (about 3 bytes per
// changed address field), the gap bsdiff opened over byte-exact deltas.
func TestApproximateMatches(t *testing.T) {
	t.Parallel()
	r := rng(11)
	old, nb := relink(r, 4<<20, 4096+37)
	base := mkTar(t, tar.FormatPAX, tfile{name: "usr/bin/app", body: old})
	target := mkTar(t, tar.FormatPAX, tfile{name: "usr/bin/app", body: nb})
	bases := basesOf(base)
	delta, st := encode(t, target, bases, EncodeOptions{})
	got, err := decode(delta, bases, Limits{})
	if err != nil || !bytes.Equal(got, target) {
		t.Fatalf("Decode() = %d bytes, %v; want the %d target bytes", len(got), err, len(target))
	}
	if st.AddBytes < int64(len(nb))/2 {
		t.Errorf("Stats.AddBytes = %d, want most of the %d bytes; stats %+v", st.AddBytes, len(nb), st)
	}
	// The reference is what this codec did before ADD existed: zstd
	// (best level) with the base as raw dictionary, which codes each changed
	// field as literals and a repeat match. As ADD differences the changed
	// bytes are the same few values, cheaper to code (at least 10% here,
	// where the fields are random; 2-3x on real Go binaries, whose changes
	// repeat more: benchmarks/README.md).
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithEncoderDictRaw(0, base),
		zstd.WithWindowSize(8<<20), zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	ref := len(enc.EncodeAll(target, nil))
	enc.Close()
	if len(delta) > ref*9/10 {
		t.Errorf("delta = %d bytes, want at most 90%% of zstd with the base as dictionary (%d); stats %+v", len(delta), ref, st)
	}
	t.Logf("delta %d bytes, zstd patch-from %d bytes", len(delta), ref)
}

// TestEncodeFileBases encodes against bases that are files, which the
// encoder maps instead of reading (mapBase), twice in a row so that the
// second Encode reuses the first one's pooled encoders after the first
// base was unmapped: both deltas must rebuild their targets.
func TestEncodeFileBases(t *testing.T) {
	t.Parallel()
	r := rng(41)
	for round := range 2 {
		files := genLayer(r, 60)
		base := layerTar(t, files)
		for i := 0; i < len(files); i += 7 {
			files[i].body = edit(r, files[i].body, 3, 40)
		}
		target := layerTar(t, files)
		path := filepath.Join(t.TempDir(), "base.tar")
		if err := os.WriteFile(path, base, 0o444); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		delta, st := encode(t, target, []Base{{Size: int64(len(base)), R: f}}, EncodeOptions{})
		f.Close()
		got, err := decode(delta, basesOf(base), Limits{})
		if err != nil || !bytes.Equal(got, target) {
			t.Fatalf("round %d: Decode() = %d bytes, %v; want the %d target bytes", round, len(got), err, len(target))
		}
		if st.CopyBytes == 0 || st.DeltaSize >= int64(len(target))/4 {
			t.Errorf("round %d: stats %+v: want COPYs from the mapped base and a small delta", round, st)
		}
	}
}
