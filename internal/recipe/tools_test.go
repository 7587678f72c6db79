package recipe

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// Layers made by real tools: go-containerregistry as a library, and the
// crane, skopeo, gzip and zstd binaries when they are installed. A missing
// binary skips its test, unless REGISTRY_EDGE_REQUIRE_TOOLS=1.

// tool returns the path of a binary, or skips the test.
func tool(t *testing.T, name string, also ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range also {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("REGISTRY_EDGE_REQUIRE_TOOLS") == "1" {
		t.Fatalf("%s not found and REGISTRY_EDGE_REQUIRE_TOOLS=1", name)
	}
	t.Skipf("%s not installed", name)
	return ""
}

// layerBytes returns a layer's compressed or uncompressed bytes.
func layerBytes(t *testing.T, l v1.Layer, compressed bool) []byte {
	t.Helper()
	open := l.Uncompressed
	if compressed {
		open = l.Compressed
	}
	rc, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGoContainerregistry covers layers that go-containerregistry v0.22.1
// (crane, ko) makes from an uncompressed tar: gzip level 1 (BestSpeed) by
// default, zstd at its default level 1 (SpeedFastest).
func TestGoContainerregistry(t *testing.T) {
	t.Parallel()
	tarb := makeTar(t, 20, scaled(500<<10))
	opener := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(tarb)), nil }
	tests := []struct {
		name string
		opts []tarball.LayerOption
		want Recipe
	}{
		{"tarball gzip", nil, Recipe{Format: FormatGzip, Encoder: EncoderGoGzip, Level: 1}},
		{"tarball gzip level 9", []tarball.LayerOption{tarball.WithCompressionLevel(9)}, Recipe{Format: FormatGzip, Encoder: EncoderGoGzip, Level: 9}},
		{"tarball zstd", []tarball.LayerOption{tarball.WithCompression(compression.ZStd)}, Recipe{Format: FormatZstd, Encoder: EncoderZstd, Level: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, err := tarball.LayerFromOpener(opener, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			blob := layerBytes(t, l, true)
			roundTrip(t, tarb, blob, tt.want)
		})
	}
	t.Run("random.Layer", func(t *testing.T) {
		t.Parallel()
		l, err := random.Layer(int64(scaled(300<<10)), types.DockerLayer)
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, layerBytes(t, l, false), layerBytes(t, l, true), Recipe{Format: FormatGzip, Encoder: EncoderGoGzip, Level: 1})
	})
}

// TestCrane runs the crane binary: `crane append -f layer.tar -o image.tar`
// compresses the layer with compress/gzip at level 1, which this binary
// reproduces if its Go writes the same deflate stream.
func TestCrane(t *testing.T) {
	t.Parallel()
	home, _ := os.UserHomeDir()
	crane := tool(t, "crane", filepath.Join(home, ".cache/registry-edge/tools/crane-v0.22.1/crane"))
	dir := t.TempDir()
	tarb := makeTar(t, 21, scaled(500<<10))
	layerPath := filepath.Join(dir, "layer.tar")
	if err := os.WriteFile(layerPath, tarb, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "image.tar")
	cmd := exec.Command(crane, "append", "-f", layerPath, "-t", "registry.invalid/recipe:test", "-o", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("crane append: %v\n%s", err, b)
	}
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("crane image layers = %d, %v; want 1", len(layers), err)
	}
	blob := layerBytes(t, layers[0], true)

	info, err := buildinfo.ReadFile(crane)
	if err != nil {
		t.Fatal(err)
	}
	if goDeflateGeneration(info.GoVersion) != generation(EncoderGoGzip) {
		// Another deflate generation: this binary must not claim it.
		_, err := Detect(context.Background(), bytes.NewReader(blob), int64(len(blob)), digest.FromBytes(blob))
		if !errors.Is(err, errdef.ErrUnsupported) {
			t.Errorf("crane built with %s: Detect() error = %v, want ErrUnsupported", info.GoVersion, err)
		}
		return
	}
	roundTrip(t, tarb, blob, Recipe{Format: FormatGzip, Encoder: EncoderGoGzip, Level: 1})
}

// TestSkopeo runs `skopeo copy --dest-compress-format gzip|zstd` from an OCI
// layout holding an uncompressed layer, so the layer is compressed by
// containers/image as podman and buildah do (pgzip, klauspost zstd). The
// output depends on the klauspost/compress version skopeo was built with,
// which a distribution binary does not record: Debian 12's skopeo 1.9.3 links
// klauspost/compress 1.15.12, whose output differs from this binary's. So the
// blob must either rebuild exactly or have no recipe, never anything else;
// TestRoundTrip checks containers/image's calls with this binary's encoders.
func TestSkopeo(t *testing.T) {
	t.Parallel()
	skopeo := tool(t, "skopeo")
	tarb := makeTar(t, 22, scaled(2<<20))
	src := filepath.Join(t.TempDir(), "src")
	writeOCILayout(t, src, tarb)
	for _, format := range []string{"gzip", "zstd"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			dst := filepath.Join(t.TempDir(), "dst")
			cmd := exec.Command(skopeo, "copy", "--quiet", "--dest-compress", "--dest-compress-format", format, "oci:"+src+":v1", "oci:"+dst+":v1")
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("skopeo copy: %v\n%s", err, b)
			}
			blob := layerOfOCILayout(t, dst)
			got, err := Detect(context.Background(), bytes.NewReader(blob), int64(len(blob)), digest.FromBytes(blob))
			var nm *NoMatchError
			switch {
			case err == nil:
				var out bytes.Buffer
				if err := Rebuild(context.Background(), &out, bytes.NewReader(tarb), got); err != nil || !bytes.Equal(out.Bytes(), blob) {
					t.Fatalf("Rebuild(%s) = %d bytes, %v; want skopeo's %d", got, out.Len(), err, len(blob))
				}
				t.Logf("skopeo %s layer: reproduced by %s", format, got)
			case errors.As(err, &nm) && nm.Reason == "" && nm.Tried > 0:
				t.Logf("skopeo %s layer: no recipe in this binary (%v)", format, err)
			default:
				t.Fatalf("Detect(skopeo %s layer) error = %v, want a recipe or no match", format, err)
			}
		})
	}
}

// writeOCILayout writes an OCI image layout (image-spec image-layout.md)
// with one image, tagged v1, whose only layer is the uncompressed tar.
func writeOCILayout(t *testing.T, dir string, layer []byte) {
	t.Helper()
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	put := func(b []byte) digest.Digest {
		d := digest.FromBytes(b)
		if err := os.WriteFile(filepath.Join(blobs, d.Encoded()), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return d
	}
	mustJSON := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	diffID := put(layer)
	config := mustJSON(v1.ConfigFile{Architecture: "amd64", OS: "linux", RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{{Algorithm: "sha256", Hex: diffID.Encoded()}}}})
	manifest := mustJSON(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: put(config), Size: int64(len(config))},
		Layers:    []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayer, Digest: diffID, Size: int64(len(layer))}},
	})
	index := mustJSON(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{{
			MediaType: ocispec.MediaTypeImageManifest, Digest: put(manifest), Size: int64(len(manifest)),
			Annotations: map[string]string{ocispec.AnnotationRefName: "v1"},
		}},
	})
	if err := os.WriteFile(filepath.Join(dir, "index.json"), index, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ocispec.ImageLayoutFile), mustJSON(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// layerOfOCILayout returns the first layer of the first image of a layout.
func layerOfOCILayout(t *testing.T, dir string) []byte {
	t.Helper()
	read := func(d digest.Digest) []byte {
		b, err := os.ReadFile(filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded()))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var index ocispec.Index
	if err := json.Unmarshal(b, &index); err != nil || len(index.Manifests) == 0 {
		t.Fatalf("index.json: %v", err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(read(index.Manifests[0].Digest), &m); err != nil || len(m.Layers) != 1 {
		t.Fatalf("manifest: %d layers, %v", len(m.Layers), err)
	}
	return read(m.Layers[0].Digest)
}

// TestCLICompressors covers encoders no candidate reproduces: zlib's deflate
// (GNU gzip) and the reference zstd.
func TestCLICompressors(t *testing.T) {
	t.Parallel()
	tarb := makeTar(t, 23, scaled(300<<10))
	tests := []struct {
		tool string
		args []string
	}{
		{"gzip", []string{"-9", "-n", "-c"}},
		{"zstd", []string{"-3", "-q", "-c"}},
	}
	if !raceEnabled {
		tests = append(tests, []struct {
			tool string
			args []string
		}{
			{"gzip", []string{"-6", "-c"}}, // with name and mtime
			{"zstd", []string{"-19", "-q", "-c"}},
		}...)
	}
	for _, tt := range tests {
		t.Run(tt.tool+strings.Join(tt.args, ""), func(t *testing.T) {
			t.Parallel()
			bin := tool(t, tt.tool)
			in := filepath.Join(t.TempDir(), "layer.tar")
			if err := os.WriteFile(in, tarb, 0o644); err != nil {
				t.Fatal(err)
			}
			blob, err := exec.Command(bin, append(tt.args, in)...).Output()
			if err != nil {
				t.Fatalf("%s: %v", tt.tool, err)
			}
			_, err = Detect(context.Background(), bytes.NewReader(blob), int64(len(blob)), digest.FromBytes(blob))
			var nm *NoMatchError
			if !errors.As(err, &nm) || !errors.Is(err, errdef.ErrUnsupported) || nm.Tried == 0 {
				t.Errorf("Detect(%s %v output) error = %v, want no match", tt.tool, tt.args, err)
			}
		})
	}
}

// TestDetectTarFromTool checks that an uncompressed tar written by GNU tar
// is recognised as such.
func TestDetectTarFromTool(t *testing.T) {
	t.Parallel()
	bin := tool(t, "tar")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	blob, err := exec.Command(bin, "-C", dir, "-cf", "-", "f").Output()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tar.NewReader(bytes.NewReader(blob)).Next(); err != nil {
		t.Fatal(err)
	}
	got, err := Detect(context.Background(), bytes.NewReader(blob), int64(len(blob)), digest.FromBytes(blob))
	if err != nil || got.Format != FormatNone {
		t.Errorf("Detect(tar) = %v, %v; want format none", got, err)
	}
}
