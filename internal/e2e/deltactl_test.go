package e2e

import (
	"bytes"
	"compress/gzip"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/layerdelta"
	"github.com/registry-edge/registry-edge/internal/testutil/layergen"
)

// The JSON that deltactl documents (docs/deltactl.md), as far as these tests
// read it.
type (
	dcBlob struct {
		Digest digest.Digest `json:"digest"`
		Size   int64         `json:"size"`
	}
	dcDiff struct {
		New       struct{ Digest digest.Digest } `json:"new"`
		Platforms []struct {
			Platform string        `json:"platform"`
			Manifest digest.Digest `json:"manifest"`
			From     digest.Digest `json:"from"`
			Layers   []struct {
				Index  int      `json:"index"`
				Target dcBlob   `json:"target"`
				Bases  []dcBlob `json:"bases"`
				Delta  *dcBlob  `json:"delta"`
				Kind   string   `json:"kind"`
				Recipe string   `json:"recipe"`
				Reason string   `json:"reason"`
				Error  string   `json:"error"`
				Files  *struct {
					Delta      string `json:"delta"`
					Descriptor string `json:"descriptor"`
				} `json:"files"`
			} `json:"layers"`
			Artifact *dcBlob `json:"artifact"`
		} `json:"platforms"`
		Totals struct {
			Size     int64 `json:"size"`
			Transfer int64 `json:"transfer"`
		} `json:"totals"`
	}
	dcInspect struct {
		Platforms []struct {
			Manifest  digest.Digest `json:"manifest"`
			Artifacts []struct {
				Digest digest.Digest `json:"digest"`
				Error  string        `json:"error"`
				Deltas []struct {
					Delta            dcBlob `json:"delta"`
					Target           dcBlob `json:"target"`
					TargetInManifest bool   `json:"targetInManifest"`
					Reproducible     bool   `json:"reproducible"`
				} `json:"deltas"`
			} `json:"artifacts"`
		} `json:"platforms"`
	}
	dcPlan struct {
		Platforms []struct {
			Manifests int64 `json:"manifests"`
			Config    int64 `json:"config"`
			Without   int64 `json:"without"`
			With      int64 `json:"with"`
		} `json:"platforms"`
		Totals struct {
			Without int64 `json:"without"`
			With    int64 `json:"with"`
		} `json:"totals"`
	}
)

// TestDeltactl runs the deltactl binary against the reference registry
// (distribution v3), on images whose layers were compressed by real tools:
// crane (compress/gzip level 1, as crane append writes), skopeo
// (containers/image's pgzip, linked against the klauspost/compress of the
// distribution's build) and Go programs with compress/gzip, pgzip and zstd.
// It publishes the deltas (diff --push), lists them (inspect), plans a
// site's download (plan), then writes them to files (diff --output-dir),
// fetches the bases with crane blob and rebuilds every layer with apply,
// byte for byte.
func TestDeltactl(t *testing.T) {
	t.Parallel()
	crane := need(t, "crane")
	skopeo := optionalTool(t, "skopeo")
	c := startCentral(t)
	deltactl := buildDeltactl(t)
	repo := c.addr + "/edge/app"
	dc := func(t *testing.T, v any, args ...string) string {
		t.Helper()
		out := run(t, nil, deltactl, append([]string{"--insecure"}, args...)...)
		if v != nil {
			if err := json.Unmarshal([]byte(out), v); err != nil {
				t.Fatalf("deltactl %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		return out
	}

	// One tree per tool; v2 changes a few files of each, but not the base.
	type toolLayer struct {
		tool string
		make func(t *testing.T, tag string, tar []byte) v1.Layer
		// recipe is a part of the recipe a tar delta must have; "" for a
		// tool whose layers this build may not reproduce.
		recipe string
	}
	// compress/gzip's output changes with Go 1.27 (internal/recipe): crane
	// layers have a recipe here only if crane was built with a Go of this
	// test's deflate generation.
	craneRecipe := "gzip compress/gzip level 1"
	craneGo := "an unknown Go"
	if info, err := buildinfo.ReadFile(crane); err == nil {
		craneGo = info.GoVersion
	}
	if deflateGeneration(craneGo) != deflateGeneration(runtime.Version()) {
		t.Logf("crane built with %s, this test with %s: its layers may have no recipe", craneGo, runtime.Version())
		craneRecipe = ""
	}
	tools := []toolLayer{
		{"crane", func(t *testing.T, tag string, tar []byte) v1.Layer { return craneLayer(t, crane, c.addr, tag, tar) }, craneRecipe},
		{"go-gzip-9", func(t *testing.T, _ string, tar []byte) v1.Layer {
			return compressedLayer(t, layergen.Gzip(tar, gzip.BestCompression), tar, types.OCILayer)
		}, "gzip compress/gzip level 9"},
		{"pgzip", func(t *testing.T, _ string, tar []byte) v1.Layer {
			return compressedLayer(t, pgzipBytes(t, tar), tar, types.OCILayer)
		}, "github.com/klauspost/pgzip"},
		{"zstd", func(t *testing.T, _ string, tar []byte) v1.Layer {
			return compressedLayer(t, zstdBytes(t, tar), tar, types.OCILayerZStd)
		}, "zstd github.com/klauspost/compress/zstd"},
	}
	if skopeo != "" {
		tools = append(tools, toolLayer{"skopeo", func(t *testing.T, tag string, tar []byte) v1.Layer {
			return skopeoLayer(t, skopeo, c.addr, tag, tar)
		}, ""})
	}
	base := layergen.Gzip(layergen.New(900, 10, 4<<10).Tar(), gzip.DefaultCompression)
	baseTar := layergen.New(900, 10, 4<<10).Tar()
	var l1, l2 []v1.Layer
	for i, tl := range tools {
		tree := layergen.New(uint64(910+i), 30, 16<<10)
		l1 = append(l1, tl.make(t, fmt.Sprintf("%s-v1", tl.tool), tree.Tar()))
		l2 = append(l2, tl.make(t, fmt.Sprintf("%s-v2", tl.tool), tree.Update(uint64(920+i)).Tar()))
	}
	shared := compressedLayer(t, base, baseTar, types.OCILayer)
	img1 := pushDeltaImage(t, repo+":v1", append([]v1.Layer{shared}, l1...))
	img2 := pushDeltaImage(t, repo+":v2", append([]v1.Layer{shared}, l2...))

	// diff --push
	var diff dcDiff
	dc(t, &diff, "diff", "--push", "--format", "json", repo+":v1", repo+":v2")
	if len(diff.Platforms) != 1 || len(diff.Platforms[0].Layers) != len(tools) {
		t.Fatalf("diff: %+v, want 1 platform with %d new layers", diff.Platforms, len(tools))
	}
	p := diff.Platforms[0]
	if p.Manifest != img2.digest || p.From != img1.digest || p.Artifact == nil {
		t.Fatalf("diff: manifest %s from %s artifact %v, want %s from %s and an artifact", p.Manifest, p.From, p.Artifact, img2.digest, img1.digest)
	}
	deltas := 0
	for i, l := range p.Layers {
		tl := tools[i]
		switch {
		case l.Error != "":
			t.Errorf("%s layer: error %s", tl.tool, l.Error)
		case tl.recipe != "" && (l.Delta == nil || l.Kind != "tar" || !strings.Contains(l.Recipe, tl.recipe)):
			t.Errorf("%s layer: delta %v kind %q recipe %q (%s), want a tar delta with recipe %q", tl.tool, l.Delta, l.Kind, l.Recipe, l.Reason, tl.recipe)
		case tl.recipe == "" && l.Delta == nil && !strings.Contains(l.Reason, "no recipe"):
			t.Errorf("%s layer: no delta, and the reason %q does not say there is no recipe", tl.tool, l.Reason)
		case l.Delta != nil && l.Delta.Size*4 > l.Target.Size:
			t.Errorf("%s layer: a %d-byte delta for a %d-byte layer with a few files changed", tl.tool, l.Delta.Size, l.Target.Size)
		}
		if l.Delta != nil {
			deltas++
		}
		t.Logf("%-9s layer %d: %d bytes, delta %v, %s %s (%s)", tl.tool, l.Index, l.Target.Size, l.Delta, l.Kind, l.Recipe, l.Reason)
	}
	if diff.Totals.Transfer >= diff.Totals.Size {
		t.Errorf("diff totals: %d bytes to transfer with deltas, not fewer than %d", diff.Totals.Transfer, diff.Totals.Size)
	}

	// The artifact is a referrer of v2's manifest: through the referrers
	// API if central has it, else through the tag schema's index.
	resp, body := httpDo(t, "GET", fmt.Sprintf("http://%s/v2/edge/app/referrers/%s", c.addr, p.Manifest), nil, nil)
	fallback := strings.Replace(p.Manifest.String(), ":", "-", 1)
	if resp.StatusCode == 200 {
		t.Logf("central has the referrers API")
		if !strings.Contains(string(body), p.Artifact.Digest.String()) {
			t.Errorf("referrers of %s: %s, want %s", p.Manifest, body, p.Artifact.Digest)
		}
	} else {
		t.Logf("central has no referrers API (%s): the tag schema is used", resp.Status)
		if tags := craneRun(t, crane, "ls", repo); !strings.Contains(tags, fallback) {
			t.Errorf("crane ls %s = %q, want the fallback tag %s", repo, tags, fallback)
		}
		if idx := craneRun(t, crane, "manifest", repo+":"+fallback); !strings.Contains(idx, p.Artifact.Digest.String()) || !strings.Contains(idx, layerdelta.ArtifactType) {
			t.Errorf("fallback tag index %s does not list the delta artifact %s", idx, p.Artifact.Digest)
		}
	}
	art := craneRun(t, crane, "manifest", repo+"@"+p.Artifact.Digest.String())
	if a, err := layerdelta.ParseManifest([]byte(art)); err != nil || a.Subject.Digest != p.Manifest || len(a.Layers) != deltas {
		t.Errorf("the artifact crane fetches: %+v, %v; want %d deltas for %s", a, err, deltas, p.Manifest)
	}

	// inspect
	var insp dcInspect
	dc(t, &insp, "inspect", "--format", "json", repo+":v2")
	if len(insp.Platforms) != 1 || len(insp.Platforms[0].Artifacts) != 1 || len(insp.Platforms[0].Artifacts[0].Deltas) != deltas {
		t.Fatalf("inspect: %+v, want one artifact with %d deltas", insp, deltas)
	}
	for _, d := range insp.Platforms[0].Artifacts[0].Deltas {
		if !d.TargetInManifest || !d.Reproducible {
			t.Errorf("inspect: delta %v of %v: in manifest %v, reproducible %v", d.Delta, d.Target, d.TargetInManifest, d.Reproducible)
		}
	}
	t.Logf("deltactl inspect:\n%s", dc(t, nil, "inspect", repo+":v2"))

	// plan: the manifest, the config and the new layers without deltas.
	var plan dcPlan
	dc(t, &plan, "plan", "--format", "json", "--site-has", repo+":v1", repo+":v2")
	cfg := craneRun(t, crane, "config", repo+":v2")
	wantWithout := img2.size + int64(len(cfg)) + diff.Totals.Size
	if len(plan.Platforms) != 1 || plan.Totals.Without != wantWithout || plan.Platforms[0].Config != int64(len(cfg)) {
		t.Errorf("plan: %+v, want %d bytes without deltas (manifest %d, config %d, layers %d)", plan, wantWithout, img2.size, len(cfg), diff.Totals.Size)
	}
	if wantWith := img2.size + int64(len(cfg)) + diff.Totals.Transfer + p.Artifact.Size; plan.Totals.With != wantWith || plan.Totals.With >= plan.Totals.Without {
		t.Errorf("plan: %d bytes with deltas, want %d (< %d)", plan.Totals.With, wantWith, plan.Totals.Without)
	}
	t.Logf("deltactl plan:\n%s", dc(t, nil, "plan", "--site-has", repo+":v1", repo+":v2"))

	// diff --output-dir, crane blob, apply.
	dir := filepath.Join(t.TempDir(), "deltas")
	var offline dcDiff
	dc(t, &offline, "diff", "--output-dir", dir, "--format", "json", repo+":v1", repo+":v2")
	blobs := t.TempDir()
	applied := 0
	for _, l := range offline.Platforms[0].Layers {
		if l.Delta == nil {
			continue
		}
		if l.Files == nil {
			t.Fatalf("diff --output-dir: layer %s has a delta but no files", l.Target.Digest)
		}
		args := []string{"apply", "--delta", l.Files.Delta, "-o", filepath.Join(blobs, "rebuilt-"+l.Target.Digest.Encoded())}
		for _, b := range l.Bases {
			path := filepath.Join(blobs, b.Digest.Encoded())
			writeFile(t, path, craneRun(t, crane, "blob", repo+"@"+b.Digest.String()))
			args = append(args, "--base", path)
		}
		run(t, nil, deltactl, args...)
		if got := fileDigest(t, args[4]); got != l.Target.Digest.String() {
			t.Errorf("deltactl apply rebuilt %s, want the layer %s", got, l.Target.Digest)
		}
		applied++
	}
	if applied != deltas {
		t.Errorf("applied %d deltas from files, want the %d pushed", applied, deltas)
	}
}

// deflateGeneration maps a Go version ("go1.26.8") to the generation of
// its compress/flate output: the same from Go 1.8 to 1.26, then each
// release its own (see internal/recipe).
func deflateGeneration(v string) string {
	var minor int
	if _, err := fmt.Sscanf(strings.TrimPrefix(v, "go1."), "%d", &minor); err != nil {
		return v
	}
	if minor >= 8 && minor <= 26 {
		return "1.8-1.26"
	}
	return fmt.Sprint(minor)
}

// optionalTool returns the path of tool, or "" when it is missing (a
// failure when REGISTRY_EDGE_REQUIRE_TOOLS=1).
func optionalTool(t *testing.T, tool string) string {
	t.Helper()
	p, err := toolPath(tool)
	if err != nil {
		if requireTools() {
			t.Fatalf("required tool %s missing: %v", tool, err)
		}
		t.Logf("tool %s missing, its layers are left out: %v", tool, err)
		return ""
	}
	return p
}

// buildDeltactl builds cmd/deltactl into a temporary directory.
func buildDeltactl(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "deltactl")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, "../../cmd/deltactl")...).CombinedOutput()
	if err != nil {
		t.Fatalf("building deltactl: %v\n%s", err, out)
	}
	return bin
}

// craneLayer pushes tar with crane append (an OCI image of one layer, as
// crane compresses it) to central and returns that layer.
func craneLayer(t *testing.T, crane, host, tag string, tar []byte) v1.Layer {
	t.Helper()
	path := filepath.Join(t.TempDir(), "layer.tar")
	writeFile(t, path, string(tar))
	ref := host + "/edge/crane-src:" + tag
	run(t, nil, crane, "--insecure", "append", "--oci-empty-base", "-f", path, "-t", ref)
	return onlyLayer(t, ref)
}

// skopeoLayer copies an image with tar as an uncompressed layer from an OCI
// layout to central with skopeo, which compresses it, and returns that
// layer.
func skopeoLayer(t *testing.T, skopeo, host, tag string, tar []byte) v1.Layer {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "oci")
	img, err := mutate.AppendLayers(empty.Image, static.NewLayer(tar, types.OCIUncompressedLayer))
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(mutate.ConfigMediaType(img, types.OCIConfigJSON), types.OCIManifestSchema1)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	ref := host + "/edge/skopeo-src:" + tag
	run(t, nil, skopeo, "--policy", writePolicy(t), "copy", "--quiet", "--dest-tls-verify=false",
		"--dest-compress", "--dest-compress-format", "gzip", "oci:"+dir, "docker://"+ref)
	l := onlyLayer(t, ref)
	if mt, _ := l.MediaType(); mt != types.OCILayer {
		t.Fatalf("skopeo pushed a %s layer, want gzip", mt)
	}
	return l
}

// onlyLayer returns the single layer of the image at ref.
func onlyLayer(t *testing.T, ref string) v1.Layer {
	t.Helper()
	img, err := remote.Image(parseRef(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil || len(ls) != 1 {
		t.Fatalf("%s: layers %v, %v; want 1", ref, ls, err)
	}
	return ls[0]
}

// compressedLayer is a layer of given compressed bytes and tar.
func compressedLayer(t *testing.T, blob, tar []byte, mt types.MediaType) v1.Layer {
	t.Helper()
	return &fixedLayer{blob: blob, diffID: digest.FromBytes(tar), mt: mt}
}

type fixedLayer struct {
	blob   []byte
	diffID digest.Digest
	mt     types.MediaType
}

func (l *fixedLayer) Digest() (v1.Hash, error) { return v1.NewHash(digest.FromBytes(l.blob).String()) }
func (l *fixedLayer) DiffID() (v1.Hash, error) { return v1.NewHash(l.diffID.String()) }
func (l *fixedLayer) Size() (int64, error)     { return int64(len(l.blob)), nil }
func (l *fixedLayer) MediaType() (types.MediaType, error) {
	return l.mt, nil
}
func (l *fixedLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.blob)), nil
}
func (l *fixedLayer) Uncompressed() (io.ReadCloser, error) {
	return nil, fmt.Errorf("not needed")
}

func pgzipBytes(t *testing.T, tar []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := pgzip.NewWriter(&buf)
	zw.Write(tar)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstdBytes(t *testing.T, tar []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(tar)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// deltaImage is an image pushed for TestDeltactl.
type deltaImage struct {
	digest digest.Digest
	size   int64
}

// pushDeltaImage pushes an OCI image of layers for linux/<host arch> to
// ref.
func pushDeltaImage(t *testing.T, ref string, layers []v1.Layer) deltaImage {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(mutate.ConfigMediaType(img, types.OCIConfigJSON), types.OCIManifestSchema1)
	img = withPlatform(t, img, runtime.GOARCH)
	if err := remote.Write(parseRef(t, ref), img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	n, err := img.Size()
	if err != nil {
		t.Fatal(err)
	}
	return deltaImage{digest: digest.Digest(d.String()), size: n}
}
