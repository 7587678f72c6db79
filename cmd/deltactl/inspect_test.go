package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/delta"
	"github.com/registry-edge/registry-edge/internal/layerdelta"
	"github.com/registry-edge/registry-edge/internal/recipe"
	"github.com/registry-edge/registry-edge/internal/testutil/layergen"
)

// TestPublishedDeltasThatDoNotHelp publishes, next to an image, delta
// artifacts that a site cannot use or that are not the best, and an
// unrelated referrer: inspect shows what each is, plan counts only the
// smallest usable delta and the artifact that carries it.
func TestPublishedDeltasThatDoNotHelp(t *testing.T) {
	t.Parallel()
	host := newRegistry(t, false) // the tag schema keeps artifactType
	repo := host + "/edge/crafted"
	a := layer(t, goGzip, layergen.New(600, 10, 4<<10))
	b := layer(t, goGzip, layergen.New(601, 10, 4<<10))
	other := layergen.Gzip([]byte("not in the old image"), -1)
	oldImg, newImg := testImage(t, "amd64", a), testImage(t, "amd64", b)
	pushImage(t, repo+":1", oldImg)
	pushImage(t, repo+":2", newImg)
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: descriptorOf(t, newImg).Digest, Size: descriptorOf(t, newImg).Size}

	blobDelta := func(size int64, base layerdelta.Blob) layerdelta.Layer {
		return layerdelta.Layer{
			Delta:  ocispec.Descriptor{MediaType: delta.MediaType, Digest: digest.FromString(fmt.Sprintf("%s %d", base.Digest, size)), Size: size},
			Target: b.Blob(), Kind: layerdelta.KindBlob, Bases: []layerdelta.Blob{base},
		}
	}
	gz := layergen.Gzip(nil, -1)
	future := layerdelta.Layer{
		Delta:  ocispec.Descriptor{MediaType: delta.MediaType, Digest: digest.FromString("future"), Size: 10},
		Target: b.Blob(), Kind: layerdelta.KindTar, Bases: []layerdelta.Blob{a.Blob()},
		Recipe: &recipe.Recipe{Format: recipe.FormatGzip, Encoder: recipe.EncoderGoGzip, Generation: "go-deflate-1.27", Level: -1, Header: gz[:10]},
	}
	push := func(layers ...layerdelta.Layer) layerdelta.Blob {
		raw, desc, err := layerdelta.Manifest(subject, descriptorOf(t, oldImg).Digest, layers)
		if err != nil {
			t.Fatal(err)
		}
		putManifest(t, repo, raw)
		return layerdelta.Blob{Digest: desc.Digest, Size: desc.Size}
	}
	big := push(blobDelta(100, a.Blob()), future)
	small := push(blobDelta(50, a.Blob()))
	push(blobDelta(20, layerdelta.Blob{Digest: digest.FromBytes(other), Size: int64(len(other))}))
	push(blobDelta(b.Blob().Size+1, a.Blob()))
	// A delta artifact that does not parse, and an unrelated referrer.
	malformed, _ := json.Marshal(ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest, ArtifactType: layerdelta.ArtifactType, Config: ocispec.DescriptorEmptyJSON,
		Subject: &subject, Layers: []ocispec.Descriptor{{MediaType: delta.MediaType, Digest: digest.FromString("x"), Size: 1}},
	})
	putManifest(t, repo, malformed)
	sbom, _ := json.Marshal(ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "application/vnd.example.sbom", Config: ocispec.DescriptorEmptyJSON,
		Subject: &subject, Layers: []ocispec.Descriptor{ocispec.DescriptorEmptyJSON},
	})
	putManifest(t, repo, sbom)

	var insp inspectReport
	mustJSON(t, &insp, "inspect", repo+":2")
	arts := insp.Platforms[0].Artifacts
	if len(arts) != 5 {
		t.Fatalf("inspect: %d artifacts, want the 5 delta artifacts (not the SBOM): %+v", len(arts), arts)
	}
	var unusable, notReproducible, deltas int
	for _, a := range arts {
		if a.Error != "" {
			unusable++
			if len(a.Deltas) != 0 || a.Digest != digest.FromBytes(malformed) {
				t.Errorf("unusable artifact %s with deltas %v", a.Digest, a.Deltas)
			}
		}
		for _, d := range a.Deltas {
			deltas++
			if !d.TargetInManifest {
				t.Errorf("delta %s: target %v not in the manifest", d.Delta.Digest, d.Target)
			}
			if !d.Reproducible {
				notReproducible++
				if d.Delta.Digest != future.Delta.Digest || !strings.Contains(d.Unusable, "go-deflate-1.27") {
					t.Errorf("delta %s: not reproducible (%s)", d.Delta.Digest, d.Unusable)
				}
			}
		}
	}
	if unusable != 1 || notReproducible != 1 || deltas != 5 {
		t.Errorf("inspect: %d unusable artifacts, %d deltas of which %d not reproducible; want 1, 5 and 1", unusable, deltas, notReproducible)
	}
	table := mustRun(t, "inspect", repo+":2").stdout
	for _, want := range []string{"unusable: delta artifact", "(not reproducible here)"} {
		if !strings.Contains(table, want) {
			t.Errorf("inspect table lacks %q:\n%s", want, table)
		}
	}

	// The layer is a few KiB: by default no delta of it counts, it costs
	// more round trips than it saves.
	var plan planReport
	mustJSON(t, &plan, "plan", "--site-has", repo+":1", repo+":2")
	if p := plan.Platforms[0]; len(p.Artifacts) != 0 || p.With != p.Without || p.Layers[0].Delta != nil {
		t.Errorf("plan of a %d-byte layer: artifacts %v, delta %v, %d bytes with deltas, %d without; want no delta counted", b.Blob().Size, p.Artifacts, p.Layers[0].Delta, p.With, p.Without)
	}
	plan = planReport{}
	mustJSON(t, &plan, "plan", "--min-layer-size", "0", "--site-has", repo+":1", repo+":2")
	p := plan.Platforms[0]
	wantLayers := []planLayer{{Target: b.Blob(), Delta: &layerdelta.Blob{Digest: blobDelta(50, a.Blob()).Delta.Digest, Size: 50}, Artifact: small.Digest}}
	if d := cmp.Diff(wantLayers, p.Layers); d != "" {
		t.Errorf("plan layers (-want +got):\n%s", d)
	}
	if !cmp.Equal(p.Artifacts, []layerdelta.Blob{small}) || p.With != p.Without-b.Blob().Size+50+small.Size {
		t.Errorf("plan: artifacts %v, %d bytes with deltas, %d without; want only %v (not %v) counted", p.Artifacts, p.With, p.Without, small, big)
	}
}

// putManifest puts an OCI manifest by digest; go-containerregistry keeps
// the referrers tag schema's index of its subject.
func putManifest(t *testing.T, repo string, raw []byte) {
	t.Helper()
	r := ref(t, repo+"@"+digest.FromBytes(raw).String())
	if err := remote.Put(r, rawManifest{b: raw, mt: types.OCIManifestSchema1}); err != nil {
		t.Fatal(err)
	}
}

// A delta artifact deleted from the registry but still listed by its
// referrers tag (registries without the referrers API do not clean it up)
// is shown as unusable; inspect and plan go on with the others.
func TestDeletedArtifactIsUnusable(t *testing.T) {
	t.Parallel()
	host := newRegistry(t, false)
	repo := host + "/edge/gone"
	app := layergen.New(610, 20, 8<<10)
	a, b := layer(t, goGzip, app), layer(t, goGzip, app.Update(611))
	oldImg, newImg := testImage(t, "amd64", a), testImage(t, "amd64", b)
	pushImage(t, repo+":1", oldImg)
	pushImage(t, repo+":2", newImg)
	mustRun(t, "diff", "--push", repo+":1", repo+":2")

	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: descriptorOf(t, newImg).Digest, Size: descriptorOf(t, newImg).Size}
	extra := layerdelta.Layer{
		Delta:  ocispec.Descriptor{MediaType: delta.MediaType, Digest: digest.FromString("deleted"), Size: 7},
		Target: b.Blob(), Kind: layerdelta.KindBlob, Bases: []layerdelta.Blob{a.Blob()},
	}
	raw, desc, err := layerdelta.Manifest(subject, descriptorOf(t, oldImg).Digest, []layerdelta.Layer{extra})
	if err != nil {
		t.Fatal(err)
	}
	putManifest(t, repo, raw)
	if err := remote.Delete(ref(t, repo+"@"+desc.Digest.String())); err != nil {
		t.Fatal(err)
	}

	var insp inspectReport
	mustJSON(t, &insp, "inspect", repo+":2")
	var gone, usable int
	for _, art := range insp.Platforms[0].Artifacts {
		switch {
		case art.Digest == desc.Digest && strings.Contains(art.Error, "gone"):
			gone++
		case art.Error == "" && len(art.Deltas) == 1:
			usable++
		}
	}
	if gone != 1 || usable != 1 {
		t.Errorf("inspect: %+v; want the deleted artifact as unusable (gone) and the pushed one usable", insp.Platforms[0].Artifacts)
	}
	var plan planReport
	mustJSON(t, &plan, "plan", "--site-has", repo+":1", repo+":2")
	if l := plan.Platforms[0].Layers; len(l) != 1 || l[0].Delta == nil {
		t.Errorf("plan layers %+v: want the layer by the pushed delta", l)
	}
}
