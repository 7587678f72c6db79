package layerdelta

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/delta"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/testutil/layergen"
)

func content(b []byte) Content {
	return Content{Blob: Blob{Digest: digest.FromBytes(b), Size: int64(len(b))}, R: bytes.NewReader(b)}
}

// opener serves the given blobs to Apply.
func opener(blobs ...[]byte) func(Blob) (Content, error) {
	return func(b Blob) (Content, error) {
		for _, c := range blobs {
			if digest.FromBytes(c) == b.Digest {
				return content(c), nil
			}
		}
		return Content{}, errdef.ErrNotFound
	}
}

func mustMake(t *testing.T, target []byte, bases ...[]byte) Result {
	t.Helper()
	var cs []Content
	for _, b := range bases {
		cs = append(cs, content(b))
	}
	res, err := Make(context.Background(), content(target), cs, Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatalf("Make: %v", err)
	}
	t.Cleanup(func() { res.Close() })
	return res
}

func deltaBytes(t *testing.T, res Result) []byte {
	t.Helper()
	b, err := io.ReadAll(res.File)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := res.File.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if digest.FromBytes(b) != res.Layer.Delta.Digest || int64(len(b)) != res.Layer.Delta.Size {
		t.Fatalf("delta file does not match its descriptor %v", res.Layer.Delta)
	}
	return b
}

func apply(t *testing.T, l Layer, d []byte, bases ...[]byte) ([]byte, error) {
	t.Helper()
	var out bytes.Buffer
	err := Apply(context.Background(), &out, l, bytes.NewReader(d), opener(bases...), ApplyOptions{TempDir: t.TempDir()})
	return out.Bytes(), err
}

// compressors are the encoders of the tools that make layers, as those
// tools call them.
var compressors = map[string]func(tb testing.TB, tar []byte) []byte{
	"go-gzip-default": func(_ testing.TB, b []byte) []byte { return layergen.Gzip(b, gzip.DefaultCompression) },
	"go-gzip-1":       func(_ testing.TB, b []byte) []byte { return layergen.Gzip(b, gzip.BestSpeed) },
	"go-gzip-9":       func(_ testing.TB, b []byte) []byte { return layergen.Gzip(b, gzip.BestCompression) },
	"pgzip-default": func(tb testing.TB, b []byte) []byte {
		var buf bytes.Buffer
		zw := pgzip.NewWriter(&buf)
		zw.Write(b)
		if err := zw.Close(); err != nil {
			tb.Fatal(err)
		}
		return buf.Bytes()
	},
	"zstd-default": func(tb testing.TB, b []byte) []byte {
		var buf bytes.Buffer
		zw, err := zstd.NewWriter(&buf)
		if err != nil {
			tb.Fatal(err)
		}
		zw.Write(b)
		if err := zw.Close(); err != nil {
			tb.Fatal(err)
		}
		return buf.Bytes()
	},
	"uncompressed": func(_ testing.TB, b []byte) []byte { return b },
}

func TestRoundTrip(t *testing.T) {
	v1 := layergen.New(1, 60, 24<<10)
	v2 := v1.Update(2)
	for name, compress := range compressors {
		t.Run(name, func(t *testing.T) {
			old, nw := compress(t, v1.Tar()), compress(t, v2.Tar())
			res := mustMake(t, nw, old)
			if !res.OK() {
				t.Fatalf("no delta: %s", res.Reason)
			}
			if res.Layer.Kind != KindTar || res.Layer.Recipe == nil {
				t.Fatalf("kind %q recipe %v, want a tar delta with a recipe (%s)", res.Layer.Kind, res.Layer.Recipe, res.Reason)
			}
			d := deltaBytes(t, res)
			if len(d) > len(nw)/5 {
				t.Errorf("delta of %d bytes for a %d-byte layer with a few files changed", len(d), len(nw))
			}
			got, err := apply(t, res.Layer, d, old)
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if !bytes.Equal(got, nw) {
				t.Fatalf("rebuilt %d bytes differ from the %d-byte layer", len(got), len(nw))
			}
		})
	}
}

// TestSeveralBases rebuilds a layer whose content comes from two bases.
func TestSeveralBases(t *testing.T) {
	a, b := layergen.New(3, 30, 16<<10), layergen.New(4, 30, 16<<10)
	merged := layergen.Tree{}
	for p, c := range a {
		merged[p] = c
	}
	for p, c := range b {
		merged["b/"+p] = c
	}
	merged = merged.Update(5)
	oa, ob, nw := layergen.Gzip(a.Tar(), -1), layergen.Gzip(b.Tar(), -1), layergen.Gzip(merged.Tar(), -1)
	res := mustMake(t, nw, oa, ob)
	d := deltaBytes(t, res)
	if len(d) > len(nw)/5 {
		t.Errorf("delta of %d bytes for a %d-byte layer made of its bases", len(d), len(nw))
	}
	got, err := apply(t, res.Layer, d, ob, oa)
	if err != nil || !bytes.Equal(got, nw) {
		t.Fatalf("Apply: %v (equal %v)", err, bytes.Equal(got, nw))
	}
	if _, err := apply(t, res.Layer, d, oa); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("Apply without one of the bases: %v, want ErrNotFound", err)
	}
}

// TestNoRecipe: a layer compressed by GNU gzip has no recipe; a delta of
// its compressed bytes is useless, so Make says there is no delta, and why.
func TestNoRecipe(t *testing.T) {
	gz, err := exec.LookPath("gzip")
	if err != nil {
		t.Skip("no gzip binary")
	}
	v1 := layergen.New(6, 40, 16<<10)
	v2 := v1.Update(7)
	gnu := func(b []byte) []byte {
		cmd := exec.Command(gz, "-n", "-c")
		cmd.Stdin = bytes.NewReader(b)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	old, nw := gnu(v1.Tar()), gnu(v2.Tar())
	res := mustMake(t, nw, old)
	if res.OK() {
		t.Fatalf("a %d-byte %s delta of GNU gzip bytes (%s)", res.Layer.Delta.Size, res.Layer.Kind, res.Reason)
	}
	if !strings.Contains(res.Reason, "no recipe") || !strings.Contains(res.Reason, "not smaller") {
		t.Errorf("reason %q does not say there is no recipe and the blob delta is too big", res.Reason)
	}

	// The same bytes, with the tail of the old blob unchanged, make a blob
	// delta worth having: one that rebuilds the compressed bytes.
	nw2 := append(gnu(layergen.New(8, 2, 1<<10).Tar()), old...)
	res = mustMake(t, nw2, old)
	if !res.OK() || res.Layer.Kind != KindBlob || res.Layer.Recipe != nil {
		t.Fatalf("OK %v kind %q: want a blob delta (%s)", res.OK(), res.Layer.Kind, res.Reason)
	}
	got, err := apply(t, res.Layer, deltaBytes(t, res), old)
	if err != nil || !bytes.Equal(got, nw2) {
		t.Fatalf("Apply blob delta: %v", err)
	}
}

func TestApplyRejects(t *testing.T) {
	v1 := layergen.New(9, 40, 16<<10)
	v2 := v1.Update(10)
	other := layergen.Gzip(layergen.New(11, 40, 16<<10).Tar(), -1)
	old, nw := layergen.Gzip(v1.Tar(), -1), layergen.Gzip(v2.Tar(), -1)
	res := mustMake(t, nw, old)
	d := deltaBytes(t, res)

	t.Run("corrupted", func(t *testing.T) {
		for _, at := range []int{10, len(d) / 2, len(d) - 3} {
			bad := append([]byte(nil), d...)
			bad[at] ^= 0x5a
			if _, err := apply(t, res.Layer, bad, old); !errors.Is(err, errdef.ErrInvalid) && !errors.Is(err, errdef.ErrDigestMismatch) && !errors.Is(err, errdef.ErrSizeMismatch) {
				t.Errorf("byte %d flipped: %v, want a rejection", at, err)
			}
		}
	})
	t.Run("truncated", func(t *testing.T) {
		for _, n := range []int{0, 7, len(d) / 2, len(d) - 1} {
			if _, err := apply(t, res.Layer, d[:n], old); err == nil {
				t.Errorf("delta cut at %d of %d bytes applied", n, len(d))
			}
		}
	})
	t.Run("wrong base", func(t *testing.T) {
		// The artifact names another blob as the base: the decoder does not
		// find the tar the delta was made against.
		l := res.Layer
		l.Bases = []Blob{content(other).Blob}
		if _, err := apply(t, l, d, other); !errors.Is(err, errdef.ErrNotFound) {
			t.Errorf("delta applied to another base: %v, want ErrNotFound", err)
		}
		// The opener returns a blob that is not the one asked for.
		err := Apply(context.Background(), io.Discard, res.Layer, bytes.NewReader(d),
			func(Blob) (Content, error) { return content(other), nil }, ApplyOptions{TempDir: t.TempDir()})
		if !errors.Is(err, errdef.ErrDigestMismatch) {
			t.Errorf("base swapped by the opener: %v, want ErrDigestMismatch", err)
		}
	})
	t.Run("wrong target", func(t *testing.T) {
		// A delta that rebuilds a valid layer, but not the one the manifest
		// names: the digest check stops it.
		l := res.Layer
		l.Target = content(other).Blob
		l.Target.Size = int64(len(nw))
		if _, err := apply(t, l, d, old); !errors.Is(err, errdef.ErrDigestMismatch) {
			t.Errorf("rebuilt a blob other than the target: %v, want ErrDigestMismatch", err)
		}
	})
	t.Run("wrong recipe", func(t *testing.T) {
		l := res.Layer
		r := *l.Recipe
		r.Level = 1
		l.Recipe = &r
		if _, err := apply(t, l, d, old); !errors.Is(err, errdef.ErrDigestMismatch) && !errors.Is(err, errdef.ErrSizeMismatch) {
			t.Errorf("rebuilt with another level: %v, want a digest or size mismatch", err)
		}
	})
	t.Run("unreproducible recipe", func(t *testing.T) {
		l := res.Layer
		r := *l.Recipe
		r.Generation = "go-deflate-1.27"
		l.Recipe = &r
		if _, err := apply(t, l, d, old); !errors.Is(err, errdef.ErrUnsupported) {
			t.Errorf("recipe of another encoder generation: %v, want ErrUnsupported", err)
		}
	})
	t.Run("base larger uncompressed than allowed", func(t *testing.T) {
		// A base that is a compression bomb is decompressed to disk only up
		// to its bound (by default set from its compressed size).
		var out countingDiscard
		err := Apply(context.Background(), &out, res.Layer, bytes.NewReader(d), opener(old),
			ApplyOptions{TempDir: t.TempDir(), MaxBaseTarSize: int64(len(v1.Tar())) - 1})
		if !errors.Is(err, errdef.ErrTooLarge) {
			t.Errorf("base over its bound: %v, want ErrTooLarge", err)
		}
		if out > 0 {
			t.Errorf("wrote %d bytes", out)
		}
		if got, err := apply(t, res.Layer, d, old); err != nil || !bytes.Equal(got, nw) {
			t.Errorf("with the default bound: %v", err)
		}
	})
	t.Run("bomb", func(t *testing.T) {
		// A blob delta that declares 64 MiB of output for a 1000-byte
		// target is refused before it writes anything.
		zeros := make([]byte, 64<<20)
		var buf bytes.Buffer
		if _, err := delta.Encode(context.Background(), &buf, bytes.NewReader(zeros), int64(len(zeros)),
			[]delta.Base{{R: bytes.NewReader(old), Size: int64(len(old))}}, delta.EncodeOptions{Level: delta.LevelFastest}); err != nil {
			t.Fatal(err)
		}
		l := Layer{Delta: ocispec.Descriptor{MediaType: delta.MediaType, Digest: digest.FromBytes(buf.Bytes()), Size: int64(buf.Len())},
			Target: Blob{Digest: digest.FromBytes(zeros[:1000]), Size: 1000}, Kind: KindBlob, Bases: []Blob{content(old).Blob}}
		var out countingDiscard
		err := Apply(context.Background(), &out, l, bytes.NewReader(buf.Bytes()), opener(old), ApplyOptions{TempDir: t.TempDir()})
		if !errors.Is(err, errdef.ErrTooLarge) {
			t.Errorf("delta bomb: %v, want ErrTooLarge", err)
		}
		if out > 0 {
			t.Errorf("delta bomb wrote %d bytes", out)
		}
	})
}

type countingDiscard int64

func (c *countingDiscard) Write(p []byte) (int, error) {
	*c += countingDiscard(len(p))
	return len(p), nil
}

func TestMakeLeavesNoTempFiles(t *testing.T) {
	dir := t.TempDir()
	v1 := layergen.New(12, 20, 8<<10)
	old, nw := layergen.Gzip(v1.Tar(), -1), layergen.Gzip(v1.Update(13).Tar(), -1)
	res, err := Make(context.Background(), content(nw), []Content{content(old)}, Options{TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("%d files in the temp dir after Make, want the delta only", len(ents))
	}
	if err := Apply(context.Background(), io.Discard, res.Layer, res.File, opener(old), ApplyOptions{TempDir: dir}); err != nil {
		t.Fatal(err)
	}
	res.Close()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("%d files left in the temp dir", len(ents))
	}
	// A target that is not what its digest says fails, and leaves nothing.
	bad := content(nw)
	bad.Digest = digest.FromString("other")
	if _, err := Make(context.Background(), bad, []Content{content(old)}, Options{TempDir: dir}); !errors.Is(err, errdef.ErrDigestMismatch) {
		t.Errorf("Make of a blob that does not match its digest: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("%d files left in the temp dir after a failure", len(ents))
	}
}

func TestManifestRoundTrip(t *testing.T) {
	v1 := layergen.New(14, 20, 8<<10)
	old, nw := layergen.Gzip(v1.Tar(), -1), layergen.Gzip(v1.Update(15).Tar(), -1)
	res := mustMake(t, nw, old)
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("image"), Size: 1234}
	from := digest.FromString("old image")
	b, desc, err := Manifest(subject, from, []Layer{res.Layer})
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != digest.FromBytes(b) || desc.ArtifactType != ArtifactType {
		t.Errorf("descriptor %v does not describe the manifest", desc)
	}
	a, err := ParseManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	if a.Subject.Digest != subject.Digest || a.From != from || len(a.Layers) != 1 {
		t.Fatalf("parsed %+v", a)
	}
	got := a.Layers[0]
	if got.Delta.Digest != res.Layer.Delta.Digest || got.Target != res.Layer.Target || got.Kind != res.Layer.Kind ||
		len(got.Bases) != 1 || got.Bases[0] != res.Layer.Bases[0] || got.Recipe.String() != res.Layer.Recipe.String() ||
		!bytes.Equal(got.Recipe.Header, res.Layer.Recipe.Header) {
		t.Errorf("parsed layer %+v, want %+v", got, res.Layer)
	}
	// The parsed description applies.
	if err := Apply(context.Background(), io.Discard, got, res.File, opener(old), ApplyOptions{TempDir: t.TempDir()}); err != nil {
		t.Errorf("Apply with the parsed description: %v", err)
	}
}

func TestParseManifestRejects(t *testing.T) {
	v1 := layergen.New(16, 10, 4<<10)
	old, nw := layergen.Gzip(v1.Tar(), -1), layergen.Gzip(v1.Update(17).Tar(), -1)
	res := mustMake(t, nw, old)
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("image"), Size: 1}
	good, _, err := Manifest(subject, "", []Layer{res.Layer})
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(string) string{
		"not json":      func(s string) string { return s[:len(s)/2] },
		"other type":    func(s string) string { return strings.Replace(s, ArtifactType, "application/example", 1) },
		"no subject":    func(s string) string { return strings.Replace(s, `"subject"`, `"x-subject"`, 1) },
		"bad target":    func(s string) string { return strings.Replace(s, res.Layer.Target.Digest.String(), "sha256:zz", 1) },
		"negative size": func(s string) string { return strings.Replace(s, `size":"`, `size":"-`, 1) },
		"bad kind":      func(s string) string { return strings.Replace(s, `kind":"tar"`, `kind":"zip"`, 1) },
		"no bases":      func(s string) string { return strings.Replace(s, `"io.registry-edge.delta.bases"`, `"x"`, 1) },
		"media type":    func(s string) string { return strings.Replace(s, delta.MediaType, "application/octet-stream", 1) },
		"recipe field":  func(s string) string { return strings.Replace(s, `\"level\"`, `\"lvl\"`, 1) },
		"base is target": func(s string) string {
			return strings.Replace(s, res.Layer.Bases[0].Digest.String(), res.Layer.Target.Digest.String(), 1)
		},
		"no layers": func(s string) string { return s[:strings.Index(s, `"layers"`)] + `"layers":[]}` },
		// Either would have the delta's fill wait for itself.
		"delta is target": func(s string) string {
			return strings.Replace(s, res.Layer.Delta.Digest.String(), res.Layer.Target.Digest.String(), 1)
		},
		"base is delta": func(s string) string {
			return strings.Replace(s, res.Layer.Bases[0].Digest.String(), res.Layer.Delta.Digest.String(), 1)
		},
		"md5 delta digest": func(s string) string {
			return strings.Replace(s, res.Layer.Delta.Digest.String(), "md5:d41d8cd98f00b204e9800998ecf8427e", 1)
		},
	} {
		t.Run(name, func(t *testing.T) {
			b := []byte(edit(string(good)))
			if string(b) == string(good) {
				t.Fatal("edit changed nothing")
			}
			if _, err := ParseManifest(b); !errors.Is(err, errdef.ErrInvalid) {
				t.Errorf("ParseManifest: %v, want ErrInvalid", err)
			}
		})
	}
}

// A delta is kept only if it is smaller than MaxRatio of the layer: one of
// exactly that size is dropped, and the reason names the ratio as given.
func TestMaxRatio(t *testing.T) {
	v1 := layergen.New(5, 40, 16<<10)
	old := layergen.Gzip(v1.Tar(), -1)
	nw := layergen.Gzip(v1.Update(6).Tar(), -1)
	full := mustMake(t, nw, old)
	if !full.OK() {
		t.Fatalf("no delta: %s", full.Reason)
	}
	size := full.Layer.Delta.Size
	full.Close()
	makeAt := func(ratio float64) Result {
		t.Helper()
		res, err := Make(context.Background(), content(nw), []Content{content(old)}, Options{TempDir: t.TempDir(), MaxRatio: ratio})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { res.Close() })
		return res
	}
	if res := makeAt((float64(size) + 1.5) / float64(len(nw))); !res.OK() {
		t.Errorf("a delta one byte under the limit was dropped: %s", res.Reason)
	}
	// The limit is int64(ratio × layer size): half a byte above an integer
	// keeps the product on it despite float rounding.
	exact := (float64(size) + 0.5) / float64(len(nw))
	if res := makeAt(exact); res.OK() {
		t.Errorf("a delta of exactly the limit (%d bytes) was kept", size)
	}
	if res := makeAt(0.001); res.OK() || !strings.Contains(res.Reason, "not smaller than 0.1% of") {
		t.Errorf("ratio 0.001: ok %v, reason %q; want no delta and the ratio as 0.1%%", res.OK(), res.Reason)
	}
}

// Layers under Min.LayerSize get no delta (not even read), and a delta that
// saves less than Min.Saving is dropped even when MaxRatio would keep it.
func TestMinimums(t *testing.T) {
	v1 := layergen.New(5, 40, 16<<10)
	old := layergen.Gzip(v1.Tar(), -1)
	nw := layergen.Gzip(v1.Update(6).Tar(), -1)
	full := mustMake(t, nw, old)
	if !full.OK() {
		t.Fatalf("no delta: %s", full.Reason)
	}
	saving := int64(len(nw)) - full.Layer.Delta.Size
	full.Close()
	makeWith := func(m Minimums) Result {
		t.Helper()
		res, err := Make(context.Background(), content(nw), []Content{content(old)}, Options{TempDir: t.TempDir(), Min: m})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { res.Close() })
		return res
	}
	if res := makeWith(Minimums{LayerSize: int64(len(nw)), Saving: saving}); !res.OK() {
		t.Errorf("a delta at both minimums was dropped: %s", res.Reason)
	}
	if res := makeWith(Minimums{Saving: saving + 1}); res.OK() || !strings.Contains(res.Reason, "less than the") {
		t.Errorf("saving one byte under the minimum: ok %v, reason %q; want no delta and the saving named", res.OK(), res.Reason)
	}
	if res := makeWith(Minimums{LayerSize: int64(len(nw)) + 1}); res.OK() || !strings.Contains(res.Reason, "smaller than the") {
		t.Errorf("layer one byte under the minimum: ok %v, reason %q", res.OK(), res.Reason)
	}
	// The default rule: a delta of a few-KiB layer is never worth it.
	small := layergen.New(7, 4, 1<<10)
	so, sn := layergen.Gzip(small.Tar(), -1), layergen.Gzip(small.Update(8).Tar(), -1)
	res, err := Make(context.Background(), content(sn), []Content{content(so)}, Options{TempDir: t.TempDir(), Min: DefaultMinimums})
	if err != nil || res.OK() {
		t.Errorf("a %d-byte layer with the default minimums: ok %v, err %v", len(sn), res.OK(), err)
	}
}

// Files lists a layer's regular files, compressed or not, and checks the
// blob's digest on the way.
func TestFiles(t *testing.T) {
	tree := layergen.New(9, 12, 2<<10)
	for name, compress := range map[string]func(testing.TB, []byte) []byte{"gzip": compressors["go-gzip-default"], "zstd": compressors["zstd-default"], "uncompressed": compressors["uncompressed"]} {
		b := compress(t, tree.Tar())
		got, err := Files(context.Background(), content(b), 0)
		if err != nil || len(got) != len(tree) {
			t.Fatalf("%s: %d files, %v; want %d", name, len(got), err, len(tree))
		}
		for p, c := range tree {
			if got[p] != int64(len(c)) {
				t.Errorf("%s: %s: %d bytes, want %d", name, p, got[p], len(c))
			}
		}
		bad := content(b)
		bad.Digest = digest.FromString("other")
		if _, err := Files(context.Background(), bad, 0); err == nil {
			t.Errorf("%s: a blob of another digest was listed", name)
		}
	}
}
