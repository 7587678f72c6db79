package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/pgzip"
	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/layerdelta"
	"github.com/registry-edge/registry-edge/internal/testutil/layergen"
)

// result is what one in-process run of deltactl did.
type result struct {
	code           int
	stdout, stderr string
}

// deltactl runs the command in-process.
func deltactl(t *testing.T, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// mustRun runs deltactl and fails the test unless it exits 0.
func mustRun(t *testing.T, args ...string) result {
	t.Helper()
	r := deltactl(t, args...)
	if r.code != 0 {
		t.Fatalf("deltactl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// mustJSON runs deltactl with --format json and decodes its output into v.
func mustJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	r := mustRun(t, append(args, "--format", "json")...)
	decodeStrict(t, r.stdout, v)
}

// decodeStrict decodes one JSON value with no unknown field from s: the
// documented shape, nothing more.
func decodeStrict(t *testing.T, s string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("output is not the documented JSON: %v\n%s", err, s)
	}
	if dec.More() {
		t.Fatalf("more than one JSON value:\n%s", s)
	}
}

// checkFailure checks that r failed with exit status code and one line on
// stderr, "deltactl: " and a reason containing want (for a usage error, the
// usage follows on stderr).
func checkFailure(t *testing.T, r result, code int, want string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit status %d, want %d (stderr: %s)", r.code, code, r.stderr)
	}
	first, rest, _ := strings.Cut(r.stderr, "\n")
	if !strings.HasPrefix(first, "deltactl: ") || !strings.Contains(first, want) {
		t.Errorf("stderr first line %q, want \"deltactl: ...%s...\"", first, want)
	}
	if code == 1 && rest != "" {
		t.Errorf("stderr has more than one line: %q", r.stderr)
	}
	if code == 2 && !strings.Contains(rest, "usage: deltactl") {
		t.Errorf("a usage error without the usage: %q", r.stderr)
	}
}

// newRegistry starts go-containerregistry's in-memory registry, with or
// without the referrers API, and returns its host:port.
func newRegistry(t *testing.T, referrers bool) string {
	t.Helper()
	s := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(referrers)))
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

// blobLayer is a layer made of given compressed bytes and its tar.
type blobLayer struct {
	blob, tar []byte
}

func (l blobLayer) Digest() (v1.Hash, error) { return v1.NewHash(digest.FromBytes(l.blob).String()) }
func (l blobLayer) DiffID() (v1.Hash, error) { return v1.NewHash(digest.FromBytes(l.tar).String()) }
func (l blobLayer) Size() (int64, error)     { return int64(len(l.blob)), nil }
func (l blobLayer) MediaType() (types.MediaType, error) {
	return types.OCILayer, nil
}
func (l blobLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.blob)), nil
}
func (l blobLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.tar)), nil
}

func (l blobLayer) Blob() layerdelta.Blob {
	return layerdelta.Blob{Digest: digest.FromBytes(l.blob), Size: int64(len(l.blob))}
}

// Compressors, as the tools that make layers call them.
func goGzip(_ testing.TB, tar []byte) []byte { return layergen.Gzip(tar, gzip.DefaultCompression) }

func pgzipDefault(t testing.TB, tar []byte) []byte {
	var buf bytes.Buffer
	zw := pgzip.NewWriter(&buf)
	zw.Write(tar)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gnuGzip compresses with GNU gzip -n, an encoder without a recipe; it
// skips the test when gzip is not installed.
func gnuGzip(t testing.TB, tar []byte) []byte {
	gz, err := exec.LookPath("gzip")
	if err != nil {
		t.Skip("no gzip binary")
	}
	cmd := exec.Command(gz, "-n", "-c")
	cmd.Stdin = bytes.NewReader(tar)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func layer(t testing.TB, compress func(testing.TB, []byte) []byte, tree layergen.Tree) blobLayer {
	tar := tree.Tar()
	return blobLayer{blob: compress(t, tar), tar: tar}
}

// testImage is an OCI image of layers for linux/arch.
func testImage(t *testing.T, arch string, layers ...blobLayer) v1.Image {
	t.Helper()
	var ls []v1.Layer
	for _, l := range layers {
		ls = append(ls, l)
	}
	img, err := mutate.AppendLayers(empty.Image, ls...)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	if arch == "arm" {
		cf.Variant = "v7"
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// testIndex is an OCI index of imgs, with the platforms of their configs.
func testIndex(t *testing.T, imgs ...v1.Image) v1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: cf.Platform()}})
	}
	return mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
}

func ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func pushImage(t *testing.T, at string, img v1.Image) {
	t.Helper()
	if err := remote.Write(ref(t, at), img); err != nil {
		t.Fatalf("push %s: %v", at, err)
	}
}

func pushIndex(t *testing.T, at string, idx v1.ImageIndex) {
	t.Helper()
	if err := remote.WriteIndex(ref(t, at), idx); err != nil {
		t.Fatalf("push %s: %v", at, err)
	}
}

// descriptorOf returns the descriptor (digest, size) of a manifest.
func descriptorOf(t *testing.T, m interface {
	Digest() (v1.Hash, error)
	Size() (int64, error)
}) layerdelta.Blob {
	t.Helper()
	d, err := m.Digest()
	if err != nil {
		t.Fatal(err)
	}
	n, err := m.Size()
	if err != nil {
		t.Fatal(err)
	}
	return layerdelta.Blob{Digest: digest.Digest(d.String()), Size: n}
}

// fetchBlob writes blob d of repo to a file in dir and returns its path.
func fetchBlob(t *testing.T, repo string, d digest.Digest, dir string) string {
	t.Helper()
	r, err := name.NewDigest(repo + "@" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	l, err := remote.Layer(r)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, d.Encoded()+".blob")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// fileDigest returns the sha256 digest of a file.
func fileDigest(t *testing.T, path string) digest.Digest {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return digest.FromBytes(b)
}

// dirEntries lists the names in dir.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}
