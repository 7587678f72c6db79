package recipe

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"hash/crc32"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/pgzip"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// validGzip returns a valid gzip recipe of this binary for e.
func validGzip(e Encoder, level int) Recipe {
	r := Recipe{Format: FormatGzip, Encoder: e, Level: level, Generation: generation(e), Version: encoderVersion(e),
		Header: []byte{gzipID1, gzipID2, gzipDeflate, 0, 0, 0, 0, 0, 0, 255}}
	if e == EncoderPgzip {
		r.BlockSize = DefaultPgzipBlockSize
	}
	return r
}

func TestRecipeValidate(t *testing.T) {
	t.Parallel()
	zs := Recipe{Format: FormatZstd, Encoder: EncoderZstd, Level: 3, FirstBlock: 8, Generation: generation(EncoderZstd)}
	with := func(r Recipe, f func(*Recipe)) Recipe { f(&r); return r }
	hcrc := func() []byte {
		h := []byte{gzipID1, gzipID2, gzipDeflate, gzipFlagHeaderCRC | gzipFlagName, 1, 2, 3, 4, 0, 3, 'a', 0}
		c := crc32.ChecksumIEEE(h)
		return append(h, byte(c), byte(c>>8))
	}
	tests := []struct {
		name string
		r    Recipe
		want error // nil: valid
	}{
		{"none", Recipe{Format: FormatNone}, nil},
		{"go gzip", validGzip(EncoderGoGzip, -1), nil},
		{"pgzip", validGzip(EncoderPgzip, 9), nil},
		{"klauspost gzip", validGzip(EncoderKlauspostGzip, -2), nil},
		{"zstd", zs, nil},
		{"gzip header with name and crc", with(validGzip(EncoderGoGzip, 1), func(r *Recipe) { r.Header = hcrc() }), nil},
		{"zero", Recipe{}, errdef.ErrInvalid},
		{"unknown format", Recipe{Format: "xz"}, errdef.ErrInvalid},
		{"none with encoder", Recipe{Format: FormatNone, Encoder: EncoderGoGzip}, errdef.ErrInvalid},
		{"gzip with zstd encoder", with(validGzip(EncoderGoGzip, 1), func(r *Recipe) { r.Encoder = EncoderZstd }), errdef.ErrInvalid},
		{"zstd with gzip encoder", with(zs, func(r *Recipe) { r.Encoder = EncoderPgzip }), errdef.ErrInvalid},
		{"gzip level 10", validGzip(EncoderGoGzip, 10), errdef.ErrInvalid},
		{"gzip stateless level", validGzip(EncoderKlauspostGzip, -3), errdef.ErrInvalid},
		{"zstd level 0", with(zs, func(r *Recipe) { r.Level = 0 }), errdef.ErrInvalid},
		{"zstd level 23", with(zs, func(r *Recipe) { r.Level = 23 }), errdef.ErrInvalid},
		{"zstd first block too large", with(zs, func(r *Recipe) { r.FirstBlock = 1 << 20 }), errdef.ErrInvalid},
		{"zstd negative first block", with(zs, func(r *Recipe) { r.FirstBlock = -1 }), errdef.ErrInvalid},
		{"zstd with header", with(zs, func(r *Recipe) { r.Header = []byte{1} }), errdef.ErrInvalid},
		{"pgzip without block size", with(validGzip(EncoderPgzip, 5), func(r *Recipe) { r.BlockSize = 0 }), errdef.ErrInvalid},
		{"pgzip block of 1 GiB", with(validGzip(EncoderPgzip, 5), func(r *Recipe) { r.BlockSize = 1 << 30 }), errdef.ErrInvalid},
		{"go gzip with block size", with(validGzip(EncoderGoGzip, 5), func(r *Recipe) { r.BlockSize = 1 << 20 }), errdef.ErrInvalid},
		{"gzip with first block", with(validGzip(EncoderGoGzip, 5), func(r *Recipe) { r.FirstBlock = 8 }), errdef.ErrInvalid},
		{"gzip without header", with(validGzip(EncoderGoGzip, 5), func(r *Recipe) { r.Header = nil }), errdef.ErrInvalid},
		{"gzip header truncated", with(validGzip(EncoderGoGzip, 5), func(r *Recipe) { r.Header = r.Header[:9] }), errdef.ErrInvalid},
		{"gzip header with trailing byte", with(validGzip(EncoderGoGzip, 5), func(r *Recipe) { r.Header = append(r.Header, 0) }), errdef.ErrInvalid},
		{"gzip header bad crc", with(validGzip(EncoderGoGzip, 5), func(r *Recipe) { r.Header = hcrc(); r.Header[len(r.Header)-1]++ }), errdef.ErrInvalid},
		{"gzip header too long", with(validGzip(EncoderGoGzip, 5), func(r *Recipe) {
			r.Header = append([]byte{gzipID1, gzipID2, gzipDeflate, gzipFlagComment, 0, 0, 0, 0, 0, 3}, bytes.Repeat([]byte{'c'}, maxHeaderSize)...)
			r.Header = append(r.Header, 0)
		}), errdef.ErrInvalid},
		{"no generation", with(zs, func(r *Recipe) { r.Generation = "" }), errdef.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.r.Validate()
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Validate(%+v) = %v, want %v", tt.r, err, tt.want)
			}
			// Reproducible checks validity first.
			if err := tt.r.Reproducible(); tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Reproducible(%+v) = %v, want %v", tt.r, err, tt.want)
			}
		})
	}
}

func TestReproducible(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		r    Recipe
		want error
	}{
		{"this binary's go deflate", validGzip(EncoderGoGzip, 6), nil},
		{"this binary's pgzip", validGzip(EncoderPgzip, 6), nil},
		{"go 1.27 deflate", func() Recipe { r := validGzip(EncoderGoGzip, 6); r.Generation = "go-deflate-1.27"; return r }(), errdef.ErrUnsupported},
		{"older klauspost/compress", func() Recipe {
			r := validGzip(EncoderKlauspostGzip, 6)
			r.Generation = "github.com/klauspost/compress@v1.15.12"
			return r
		}(), errdef.ErrUnsupported},
		{"pgzip with another klauspost/compress", func() Recipe {
			r := validGzip(EncoderPgzip, 6)
			r.Generation = "github.com/klauspost/pgzip@" + pgzipVersion + "+github.com/klauspost/compress@v1.15.12"
			return r
		}(), errdef.ErrUnsupported},
		{"uncompressed", Recipe{Format: FormatNone}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.r.Reproducible(); tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Reproducible() = %v, want %v", err, tt.want)
			}
			// Rebuild refuses what it cannot reproduce, before writing.
			var out bytes.Buffer
			err := Rebuild(context.Background(), &out, strings.NewReader("tar"), tt.r)
			if tt.want != nil && (!errors.Is(err, tt.want) || out.Len() != 0) {
				t.Errorf("Rebuild() = %v after %d bytes, want %v before any", err, out.Len(), tt.want)
			}
		})
	}
}

func TestGoDeflateGeneration(t *testing.T) {
	t.Parallel()
	tests := []struct{ version, want string }{
		{"go1.26.8", "go-deflate-1.8"},
		{"go1.8", "go-deflate-1.8"},
		{"go1.21rc2", "go-deflate-1.8"},
		{"go1.7.6", "go-deflate-1.0"},
		{"go1.27", "go-deflate-1.27"},
		{"go1.27.1", "go-deflate-1.27"},
		{"devel go1.27-4b1a2c3 Tue Jun 2 12:00:00 2026 +0000", "go-deflate-1.27"},
		{"go1.28.0", "go-deflate-1.28"},
		{"gccgo", ""},
		{"go1.x", ""},
	}
	for _, tt := range tests {
		if got := goDeflateGeneration(tt.version); got != tt.want {
			t.Errorf("goDeflateGeneration(%q) = %q, want %q", tt.version, got, tt.want)
		}
	}
	if g := generation(EncoderGoGzip); g != goDeflateGeneration(runtime.Version()) || g == "" {
		t.Errorf("generation(compress/gzip) = %q for %s", g, runtime.Version())
	}
}

// TestModuleVersions ties the encoder versions compiled into recipes to
// go.mod: bumping klauspost/compress or pgzip changes their output, so the
// constants must follow.
func TestModuleVersions(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	for mod, want := range map[string]string{
		"github.com/klauspost/compress": klauspostCompressVersion,
		"github.com/klauspost/pgzip":    pgzipVersion,
	} {
		out, err := exec.Command(goBin, "list", "-m", "-f", "{{.Version}}", mod).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -m %s: %v\n%s", mod, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("go.mod has %s %s, recipes record %s: update the constants in recipe.go", mod, got, want)
		}
	}
}

// TestRecipeJSON fixes the wire form of a recipe, which travels in deltas.
func TestRecipeJSON(t *testing.T) {
	t.Parallel()
	r := Recipe{
		Format: FormatGzip, Encoder: EncoderPgzip, Version: "v1.3.0",
		Generation: "github.com/klauspost/pgzip@v1.3.0+github.com/klauspost/compress@v1.20.3",
		Level:      -1, BlockSize: 1 << 20, Header: []byte{0x1f, 0x8b, 8, 0, 0, 9, 0x6e, 0x88, 0, 0xff},
	}
	const want = `{"format":"gzip","encoder":"github.com/klauspost/pgzip","version":"v1.3.0",` +
		`"generation":"github.com/klauspost/pgzip@v1.3.0+github.com/klauspost/compress@v1.20.3",` +
		`"level":-1,"blockSize":1048576,"header":"H4sIAAAJbogA/w=="}`
	got, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("json.Marshal(recipe) =\n%s\nwant\n%s", got, want)
	}
	var back Recipe
	if err := json.Unmarshal([]byte(want), &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(r, back); diff != "" {
		t.Errorf("json.Unmarshal (-want +got):\n%s", diff)
	}
	if got, want := r.String(), "gzip github.com/klauspost/pgzip level -1 block 1048576"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// A plain tar layer's recipe says what it is: "uncompressed", not "none"
// (which reads as "no recipe"), in deltactl's tables and JSON alike.
func TestRecipeStringUncompressed(t *testing.T) {
	t.Parallel()
	if got, want := (Recipe{Format: FormatNone}).String(), "uncompressed"; got != want {
		t.Errorf("Recipe{Format: none}.String() = %q, want %q", got, want)
	}
}

// TestPgzipStream checks Detect's sequential pgzip against pgzip itself, on
// small blocks so that there are many of them: block boundaries inside and
// at the end of writes, an input that ends on a block boundary, blocks
// shorter and longer than the dictionary.
func TestPgzipStream(t *testing.T) {
	t.Parallel()
	data := makeTar(t, 12, scaled(300<<10))
	sizes := []int{0, 1, 100, pgzipTailSize, pgzipTailSize + 1, 3 * (pgzipTailSize + 1), len(data)}
	levels := []int{-2, -1, 1, 5, 6, 7, 9}
	if raceEnabled {
		levels = []int{-1, 7}
	}
	for _, level := range levels {
		for _, bs := range []int{pgzipTailSize + 1, 50000} {
			for _, n := range sizes {
				in := data[:n]
				var want bytes.Buffer
				z, _ := pgzip.NewWriterLevel(&want, level)
				if err := z.SetConcurrency(bs, 3); err != nil {
					t.Fatal(err)
				}
				writeChunked(t, z, in, uint64(n))
				if err := z.Close(); err != nil {
					t.Fatal(err)
				}
				var got bytes.Buffer
				s, err := newPgzipStream(&got, level, bs)
				if err != nil {
					t.Fatal(err)
				}
				writeChunked(t, s, in, uint64(n+1))
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got.Bytes(), want.Bytes()[10:]) {
					t.Errorf("pgzipStream(level %d, block %d) of %d bytes differs from pgzip", level, bs, n)
				}
			}
		}
	}
}

// TestRebuildWriteError checks that a failing destination stops Rebuild
// with its error, for every encoder, without leaving goroutines blocked.
func TestRebuildWriteError(t *testing.T) {
	t.Parallel()
	tar := makeTar(t, 13, scaled(3<<20))
	errFull := errors.New("disk full")
	recipes := []Recipe{
		validGzip(EncoderGoGzip, 1), validGzip(EncoderPgzip, 1), validGzip(EncoderKlauspostGzip, 1),
		{Format: FormatZstd, Encoder: EncoderZstd, Level: 1, FirstBlock: 8, Generation: generation(EncoderZstd)},
		{Format: FormatNone},
	}
	for _, r := range recipes {
		for _, after := range []int{0, 5, 20000} {
			err := Rebuild(context.Background(), &failWriter{n: after, err: errFull}, bytes.NewReader(tar), r)
			if !errors.Is(err, errFull) {
				t.Errorf("Rebuild(%s) with a writer failing after %d bytes = %v, want %v", r, after, err, errFull)
			}
		}
	}
}
