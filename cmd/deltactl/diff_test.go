package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/layerdelta"
	"github.com/registry-edge/registry-edge/internal/testutil/layergen"
)

// release is a v1 and a v2 of a multi-platform image: per platform, a
// shared base layer and three layers that change: one compressed with Go's
// compress/gzip (Docker, BuildKit, crane), one with pgzip (podman,
// skopeo), one with GNU gzip (no recipe: no delta). v2 also has a
// linux/arm/v7 image that v1 lacks.
type release struct {
	old, new        v1.ImageIndex
	oldRef, newRef  string
	repo            string
	layers          map[string][2][]blobLayer // by platform: v1's and v2's layers
	oldImgs, newImg map[string]v1.Image
}

func makeRelease(t *testing.T, host string) release {
	t.Helper()
	r := release{
		repo:    host + "/edge/app",
		layers:  map[string][2][]blobLayer{},
		oldImgs: map[string]v1.Image{},
		newImg:  map[string]v1.Image{},
	}
	r.oldRef, r.newRef = r.repo+":1.0", r.repo+":1.1"
	base := layer(t, goGzip, layergen.New(100, 8, 4<<10))
	var olds, news []v1.Image
	for i, arch := range []string{"amd64", "arm64"} {
		seed := uint64(10 * (i + 1))
		app, data, blob := layergen.New(seed, 40, 16<<10), layergen.New(seed+1, 30, 16<<10), layergen.New(seed+2, 20, 16<<10)
		v1s := []blobLayer{base, layer(t, goGzip, app), layer(t, pgzipDefault, data), layer(t, gnuGzip, blob)}
		v2s := []blobLayer{base, layer(t, goGzip, app.Update(seed+5)), layer(t, pgzipDefault, data.Update(seed+6)), layer(t, gnuGzip, blob.Update(seed+7))}
		p := "linux/" + arch
		r.layers[p] = [2][]blobLayer{v1s, v2s}
		r.oldImgs[p], r.newImg[p] = testImage(t, arch, v1s...), testImage(t, arch, v2s...)
		olds, news = append(olds, r.oldImgs[p]), append(news, r.newImg[p])
	}
	arm := testImage(t, "arm", base, layer(t, goGzip, layergen.New(50, 4, 4<<10)))
	r.newImg["linux/arm/v7"] = arm
	r.old, r.new = testIndex(t, olds...), testIndex(t, append(news, arm)...)
	pushIndex(t, r.oldRef, r.old)
	pushIndex(t, r.newRef, r.new)
	return r
}

// TestDiffPushInspectPlan publishes the deltas of a release, then lists
// them and plans a site's download, against a registry with the referrers
// API and one without (the referrers tag schema).
func TestDiffPushInspectPlan(t *testing.T) {
	for _, referrers := range []bool{true, false} {
		name := "referrers-api"
		if !referrers {
			name = "tag-schema"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			host := newRegistry(t, referrers)
			r := makeRelease(t, host)

			var diff diffReport
			res := mustRun(t, "diff", "--push", "--format", "json", r.oldRef, r.newRef)
			if res.stderr != "" {
				t.Errorf("diff wrote to a stderr that is not a terminal: %q", res.stderr)
			}
			decodeStrict(t, res.stdout, &diff)
			checkDiff(t, r, diff)
			checkPublished(t, r, diff, referrers)

			t.Run("inspect", func(t *testing.T) { checkInspect(t, r, diff) })
			t.Run("plan", func(t *testing.T) { checkPlan(t, r, diff) })
			t.Run("table", func(t *testing.T) {
				var out strings.Builder
				diff.writeTable(&env{stdout: &out})
				for _, want := range []string{"linux/amd64", "tar: gzip compress/gzip level -1", "tar: gzip github.com/klauspost/pgzip", "no delta: no recipe", "skipped: OLD has no manifest", "total", "pushed sha256:"} {
					if !strings.Contains(out.String(), want) {
						t.Errorf("diff table lacks %q:\n%s", want, out.String())
					}
				}
			})
		})
	}
}

// checkDiff checks the deltas diff found, layer by layer.
func checkDiff(t *testing.T, r release, diff diffReport) {
	t.Helper()
	if diff.Old.Digest != descriptorOf(t, r.old).Digest || diff.New.Digest != descriptorOf(t, r.new).Digest {
		t.Errorf("diff old/new = %v/%v, want the pushed indexes", diff.Old, diff.New)
	}
	var got []string
	for _, p := range diff.Platforms {
		got = append(got, p.Platform)
	}
	if want := []string{"linux/amd64", "linux/arm64", "linux/arm/v7"}; !cmp.Equal(got, want) {
		t.Fatalf("diff platforms = %v, want %v", got, want)
	}
	var size, transfer int64
	for _, p := range diff.Platforms[:2] {
		ls := r.layers[p.Platform]
		if p.Manifest != descriptorOf(t, r.newImg[p.Platform]).Digest || p.From != descriptorOf(t, r.oldImgs[p.Platform]).Digest {
			t.Errorf("%s: manifest %s from %s, want the pushed images", p.Platform, p.Manifest, p.From)
		}
		if len(p.Layers) != 3 {
			t.Fatalf("%s: %d layers, want the 3 that changed", p.Platform, len(p.Layers))
		}
		for i, l := range p.Layers {
			if l.Index != i+1 || l.Target != ls[1][i+1].Blob() {
				t.Errorf("%s layer %d: index %d target %v, want %d %v", p.Platform, i, l.Index, l.Target, i+1, ls[1][i+1].Blob())
			}
			// The nearest layers of v1 that v2 lacks: the same index first.
			if len(l.Bases) != 2 || l.Bases[0] != ls[0][i+1].Blob() {
				t.Errorf("%s layer %d: bases %v, want 2 starting with v1's layer %d %v", p.Platform, i, l.Bases, i+1, ls[0][i+1].Blob())
			}
			size += l.Target.Size
			transfer += l.Target.Size
			if l.Delta != nil {
				transfer += l.Delta.Size - l.Target.Size
			}
		}
		gz, pgz, gnu := p.Layers[0], p.Layers[1], p.Layers[2]
		if gz.Delta == nil || gz.Kind != layerdelta.KindTar || !strings.Contains(gz.Recipe, "compress/gzip") {
			t.Errorf("%s: compress/gzip layer: delta %v kind %q recipe %q (%s), want a tar delta", p.Platform, gz.Delta, gz.Kind, gz.Recipe, gz.Reason)
		}
		if pgz.Delta == nil || pgz.Kind != layerdelta.KindTar || !strings.Contains(pgz.Recipe, "pgzip") {
			t.Errorf("%s: pgzip layer: delta %v kind %q recipe %q (%s), want a tar delta", p.Platform, pgz.Delta, pgz.Kind, pgz.Recipe, pgz.Reason)
		}
		for _, l := range []diffLayer{gz, pgz} {
			if l.Delta != nil && (l.Delta.Size*5 > l.Target.Size || l.SavingPercent < 80) {
				t.Errorf("%s: a %d-byte delta (saving %.1f%%) for a %d-byte layer with a few files changed", p.Platform, l.Delta.Size, l.SavingPercent, l.Target.Size)
			}
		}
		if gnu.Delta != nil || !strings.Contains(gnu.Reason, "no recipe") || gnu.Error != "" {
			t.Errorf("%s: GNU gzip layer: delta %v reason %q error %q, want none because there is no recipe", p.Platform, gnu.Delta, gnu.Reason, gnu.Error)
		}
		if p.Artifact == nil {
			t.Errorf("%s: no artifact pushed", p.Platform)
		}
	}
	if arm := diff.Platforms[2]; arm.Skipped == "" || len(arm.Layers) != 0 || arm.Artifact != nil {
		t.Errorf("linux/arm/v7, which v1 lacks: %+v, want skipped", arm)
	}
	want := diffTotals{Layers: 6, Deltas: 4, Size: size, Transfer: transfer, SavingPercent: savingPercent(size, transfer)}
	want.DeltaSize = transfer
	for _, p := range diff.Platforms {
		for _, l := range p.Layers {
			if l.Delta == nil {
				want.DeltaSize -= l.Target.Size
			}
		}
	}
	if diff.Totals != want {
		t.Errorf("diff totals = %+v, want %+v", diff.Totals, want)
	}
}

// checkPublished checks, with go-containerregistry, that each artifact
// pushed is a referrer of its platform manifest that rebuilds its layers,
// through the referrers API or the fallback tag.
func checkPublished(t *testing.T, r release, diff diffReport, referrers bool) {
	t.Helper()
	for _, p := range diff.Platforms[:2] {
		subject, err := name.NewDigest(r.repo + "@" + p.Manifest.String())
		if err != nil {
			t.Fatal(err)
		}
		idx, err := remote.Referrers(subject)
		if err != nil {
			t.Fatal(err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(im.Manifests) != 1 || im.Manifests[0].Digest.String() != p.Artifact.Digest.String() {
			t.Fatalf("%s: referrers %v, want the artifact %s", p.Platform, im.Manifests, p.Artifact.Digest)
		}
		tag := subject.Context().Tag(strings.Replace(p.Manifest.String(), ":", "-", 1))
		_, err = remote.Get(tag)
		if referrers && err == nil {
			t.Errorf("%s: a fallback tag %s on a registry with the referrers API", p.Platform, tag)
		}
		if !referrers && err != nil {
			t.Errorf("%s: no fallback tag %s on a registry without the referrers API: %v", p.Platform, tag, err)
		}
		art, err := remote.Get(subject.Context().Digest(p.Artifact.Digest.String()))
		if err != nil {
			t.Fatal(err)
		}
		a, err := layerdelta.ParseManifest(art.Manifest)
		if err != nil {
			t.Fatalf("%s: the artifact pushed does not parse: %v", p.Platform, err)
		}
		if a.Subject.Digest != p.Manifest || a.From != p.From || len(a.Layers) != 2 {
			t.Errorf("%s: artifact subject %s from %s with %d deltas, want %s from %s with 2", p.Platform, a.Subject.Digest, a.From, len(a.Layers), p.Manifest, p.From)
		}
		for _, l := range a.Layers {
			if _, err := remote.Layer(subject.Context().Digest(l.Delta.Digest.String())); err != nil {
				t.Errorf("%s: delta blob %s: %v", p.Platform, l.Delta.Digest, err)
			}
		}
	}
}

func checkInspect(t *testing.T, r release, diff diffReport) {
	var rep inspectReport
	mustJSON(t, &rep, "inspect", r.newRef)
	if len(rep.Platforms) != 3 {
		t.Fatalf("inspect: %d platforms, want 3", len(rep.Platforms))
	}
	for i, p := range rep.Platforms[:2] {
		dp := diff.Platforms[i]
		if p.Platform != dp.Platform || p.Manifest != dp.Manifest || len(p.Artifacts) != 1 {
			t.Fatalf("inspect %s: %+v, want one artifact for %s", dp.Platform, p, dp.Manifest)
		}
		a := p.Artifacts[0]
		if a.Digest != dp.Artifact.Digest || a.Size != dp.Artifact.Size || a.From != dp.From || a.Error != "" {
			t.Errorf("inspect %s: artifact %s (%d bytes) from %s, error %q; pushed %v from %s", p.Platform, a.Digest, a.Size, a.From, a.Error, dp.Artifact, dp.From)
		}
		var want []inspectDelta
		for _, l := range dp.Layers {
			if l.Delta != nil {
				want = append(want, inspectDelta{Delta: *l.Delta, Kind: l.Kind, Target: l.Target, Bases: l.Bases, Recipe: l.Recipe, TargetInManifest: true, Reproducible: true})
			}
		}
		if diff := cmp.Diff(want, a.Deltas); diff != "" {
			t.Errorf("inspect %s: deltas differ from those pushed (-want +got):\n%s", p.Platform, diff)
		}
	}
	if arm := rep.Platforms[2]; len(arm.Artifacts) != 0 {
		t.Errorf("inspect linux/arm/v7: %v, want no artifact", arm.Artifacts)
	}

	// One platform, and the old image, which has no delta.
	mustJSON(t, &rep, "inspect", "--platform", "linux/arm64", r.newRef)
	if len(rep.Platforms) != 1 || rep.Platforms[0].Platform != "linux/arm64" || len(rep.Platforms[0].Artifacts) != 1 {
		t.Errorf("inspect --platform linux/arm64: %+v", rep.Platforms)
	}
	mustJSON(t, &rep, "inspect", r.oldRef)
	for _, p := range rep.Platforms {
		if len(p.Artifacts) != 0 {
			t.Errorf("inspect of the old image: %s has artifacts %v", p.Platform, p.Artifacts)
		}
	}
	table := mustRun(t, "inspect", r.newRef).stdout
	for _, want := range []string{"linux/amd64", "sha256:", "yes", "gzip compress/gzip level -1", "no delta published", "4 delta(s)"} {
		if !strings.Contains(table, want) {
			t.Errorf("inspect table lacks %q:\n%s", want, table)
		}
	}
}

func checkPlan(t *testing.T, r release, diff diffReport) {
	var rep planReport
	mustJSON(t, &rep, "plan", "--site-has", r.oldRef, r.newRef)
	if len(rep.Platforms) != 3 {
		t.Fatalf("plan: %d platforms, want 3", len(rep.Platforms))
	}
	indexSize := descriptorOf(t, r.new).Size
	var without, with int64
	for i, p := range rep.Platforms[:2] {
		dp := diff.Platforms[i]
		img := r.newImg[dp.Platform]
		cfg, err := img.RawConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		meta := indexSize + descriptorOf(t, img).Size + int64(len(cfg))
		wantWithout, wantWith := meta, meta+dp.Artifact.Size
		var wantLayers []planLayer
		for _, l := range dp.Layers {
			wantWithout += l.Target.Size
			pl := planLayer{Target: l.Target}
			if l.Delta != nil {
				wantWith += l.Delta.Size
				pl.Delta, pl.Artifact = l.Delta, dp.Artifact.Digest
			} else {
				wantWith += l.Target.Size
			}
			wantLayers = append(wantLayers, pl)
		}
		want := planPlatform{
			Platform: dp.Platform, Manifest: dp.Manifest, SiteManifest: dp.From,
			Manifests: indexSize + descriptorOf(t, img).Size, Config: int64(len(cfg)),
			Layers: wantLayers, Artifacts: []layerdelta.Blob{*dp.Artifact},
			Without: wantWithout, With: wantWith, SavingPercent: savingPercent(wantWithout, wantWith),
		}
		if d := cmp.Diff(want, p); d != "" {
			t.Errorf("plan %s (-want +got):\n%s", dp.Platform, d)
		}
		if p.With >= p.Without {
			t.Errorf("plan %s: %d bytes with deltas, not fewer than %d without", dp.Platform, p.With, p.Without)
		}
		without, with = without+p.Without, with+p.With
	}
	// linux/arm/v7: the site holds nothing of it, so no delta helps.
	arm := rep.Platforms[2]
	armImg := r.newImg["linux/arm/v7"]
	armLayers, _ := armImg.Layers()
	wantArm := indexSize + descriptorOf(t, armImg).Size
	cfg, _ := armImg.RawConfigFile()
	wantArm += int64(len(cfg))
	for _, l := range armLayers {
		n, _ := l.Size()
		wantArm += n
	}
	if arm.SiteManifest != "" || arm.Without != wantArm || arm.With != wantArm {
		t.Errorf("plan linux/arm/v7: site manifest %q, %d/%d bytes, want none and %d both ways", arm.SiteManifest, arm.Without, arm.With, wantArm)
	}
	without, with = without+arm.Without, with+arm.With
	if rep.Totals != (planTotals{Without: without, With: with, SavingPercent: savingPercent(without, with)}) {
		t.Errorf("plan totals = %+v, want %d without, %d with", rep.Totals, without, with)
	}

	// A site that holds v2 already downloads nothing.
	mustJSON(t, &rep, "plan", "--site-has", r.newRef, "--platform", "linux/amd64", r.newRef)
	if len(rep.Platforms) != 1 || rep.Totals.Without != 0 || rep.Totals.With != 0 {
		t.Errorf("plan from v2 to v2: %+v, want 0 bytes", rep)
	}
	table := mustRun(t, "plan", "--site-has", r.oldRef, r.newRef).stdout
	for _, want := range []string{"linux/amd64", "WITHOUT DELTAS", "total"} {
		if !strings.Contains(table, want) {
			t.Errorf("plan table lacks %q:\n%s", want, table)
		}
	}
}

// TestSelectBases checks the choice of base layers for a new layer.
func TestSelectBases(t *testing.T) {
	t.Parallel()
	l := func(s string) v1.Descriptor {
		h, _ := v1.NewHash(digest.FromString(s).String())
		return v1.Descriptor{Digest: h, Size: int64(len(s))}
	}
	a, b, c, d, e := l("a"), l("b"), l("c"), l("d"), l("e")
	tests := []struct {
		name  string
		old   []v1.Descriptor
		inNew []v1.Descriptor
		i     int
		max   int
		want  []v1.Descriptor
	}{
		{"same index first", []v1.Descriptor{a, b, c}, []v1.Descriptor{a}, 1, 2, []v1.Descriptor{b, c}},
		{"nearest, lower on a tie", []v1.Descriptor{a, b, c, d, e}, nil, 2, 3, []v1.Descriptor{c, b, d}},
		{"layers new has are skipped", []v1.Descriptor{a, b, c, d}, []v1.Descriptor{b, c}, 2, 2, []v1.Descriptor{d, a}},
		{"at most max", []v1.Descriptor{a, b, c}, nil, 0, 1, []v1.Descriptor{a}},
		{"duplicates once", []v1.Descriptor{a, b, b, c}, []v1.Descriptor{a}, 3, 2, []v1.Descriptor{c, b}},
		{"none lacking: same index", []v1.Descriptor{a, b, c}, []v1.Descriptor{a, b, c}, 1, 2, []v1.Descriptor{b}},
		{"none lacking, past the end: last", []v1.Descriptor{a, b}, []v1.Descriptor{a, b}, 4, 2, []v1.Descriptor{b}},
		{"old has no layer", nil, nil, 0, 2, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inNew := map[v1.Hash]bool{}
			for _, d := range tt.inNew {
				inNew[d.Digest] = true
			}
			if got := selectBases(tt.old, inNew, tt.i, tt.max); !cmp.Equal(got, tt.want) {
				t.Errorf("selectBases(i=%d, max=%d) = %v, want %v", tt.i, tt.max, got, tt.want)
			}
		})
	}
}

// A layer of a few KiB gets no delta, and nothing is pushed for it: the
// artifact and the round trips would cost a site more than the delta
// saves. --min-layer-size and --min-saving lower the rule.
func TestDiffSkipsTinyLayers(t *testing.T) {
	t.Parallel()
	host := newRegistry(t, true)
	repo := host + "/edge/tiny"
	gen := layergen.New(700, 6, 4<<10)
	pushImage(t, repo+":1", testImage(t, "amd64", layer(t, goGzip, gen)))
	pushImage(t, repo+":2", testImage(t, "amd64", layer(t, goGzip, gen.Update(701))))
	var diff diffReport
	mustJSON(t, &diff, "diff", "--push", repo+":1", repo+":2")
	p := diff.Platforms[0]
	if l := p.Layers[0]; l.Delta != nil || p.Artifact != nil || !strings.Contains(l.Reason, "minimum for a delta") {
		t.Errorf("diff --push of a %d-byte layer: delta %v, artifact %v, reason %q; want none, nothing pushed, the minimum named", l.Target.Size, l.Delta, p.Artifact, l.Reason)
	}
	diff = diffReport{}
	mustJSON(t, &diff, "diff", "--min-layer-size", "0", "--min-saving", "0", repo+":1", repo+":2")
	if l := diff.Platforms[0].Layers[0]; l.Delta == nil {
		t.Errorf("diff --min-layer-size 0 --min-saving 0: no delta (%s)", l.Reason)
	}
}

// A file of a layer that OLD and NEW share, upgraded in NEW's changed top
// layer (a package the base layer had), is found in the shared layer: a
// site that holds OLD holds it too. The delta names it as a base, and is
// smaller than the one against OLD's top layer alone.
func TestDiffUsesSharedLayersAsBases(t *testing.T) {
	t.Parallel()
	host := newRegistry(t, true)
	repo := host + "/edge/moved"
	base := layergen.New(800, 24, 16<<10)
	top := layergen.New(801, 12, 8<<10)
	next := top.Update(802)
	upgraded := base.Update(803)
	for _, p := range base.Paths()[:8] {
		if c, ok := upgraded[p]; ok {
			next[p] = c
		}
	}
	s, t1, t2 := layer(t, goGzip, base), layer(t, goGzip, top), layer(t, goGzip, next)
	pushImage(t, repo+":1", testImage(t, "amd64", s, t1))
	pushImage(t, repo+":2", testImage(t, "amd64", s, t2))

	var plain, diff diffReport
	mustJSON(t, &plain, "diff", "--max-bases", "1", repo+":1", repo+":2")
	mustJSON(t, &diff, "diff", "--push", repo+":1", repo+":2")
	p, l := plain.Platforms[0].Layers[0], diff.Platforms[0].Layers[0]
	if p.Delta == nil || l.Delta == nil {
		t.Fatalf("no delta: %s / %s", p.Reason, l.Reason)
	}
	if want := []layerdelta.Blob{t1.Blob(), s.Blob()}; !cmp.Equal(l.Bases, want) {
		t.Errorf("bases %v, want OLD's top layer then the shared layer %v", l.Bases, want)
	}
	if l.Delta.Size >= p.Delta.Size {
		t.Errorf("delta with the shared layer %d bytes, against the top layer alone %d", l.Delta.Size, p.Delta.Size)
	}
	t.Logf("delta %d bytes with the shared layer, %d without, layer %d", l.Delta.Size, p.Delta.Size, l.Target.Size)
	// More room than layers: the same two bases.
	var wide diffReport
	mustJSON(t, &wide, "diff", "--max-bases", "4", repo+":1", repo+":2")
	if got := wide.Platforms[0].Layers[0].Bases; !cmp.Equal(got, l.Bases) {
		t.Errorf("--max-bases 4: bases %v, want %v", got, l.Bases)
	}
	// What was published names bases a site holding OLD has: plan counts it.
	var plan planReport
	mustJSON(t, &plan, "plan", "--site-has", repo+":1", repo+":2")
	if pl := plan.Platforms[0].Layers[0]; pl.Delta == nil || *pl.Delta != *l.Delta {
		t.Errorf("plan: delta %v, want the published %v", pl.Delta, l.Delta)
	}
}

// windowsImage is a Docker image whose first layer is a foreign
// (non-distributable) base layer, as Windows base images were pushed: its
// manifest names URLs to fetch it from, and the registry does not hold it.
func windowsImage(t *testing.T, foreign blobLayer, layers ...blobLayer) v1.Image {
	t.Helper()
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: foreignLayer{foreign}, MediaType: types.DockerForeignLayer,
		URLs: []string{"https://mcr.example.com/v2/windows/servercore/blobs/" + foreign.Blob().Digest.String()}})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		if img, err = mutate.Append(img, mutate.Addendum{Layer: l, MediaType: types.DockerLayer}); err != nil {
			t.Fatal(err)
		}
	}
	img = mutate.MediaType(img, types.DockerManifestSchema2)
	img = mutate.ConfigMediaType(img, types.DockerConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.OSVersion = "windows", "amd64", "10.0.17763.5820"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// foreignLayer is a layer that remote.Write does not upload.
type foreignLayer struct{ blobLayer }

func (foreignLayer) MediaType() (types.MediaType, error) { return types.DockerForeignLayer, nil }

// Foreign (non-distributable) layers are not in the registry: clients
// fetch them from their URLs. diff neither fetches one as a base or to list
// its files, nor computes a delta for one (it says why), and the other
// layers get their deltas.
func TestDiffForeignLayers(t *testing.T) {
	t.Parallel()
	host := newRegistry(t, true)
	repo := host + "/edge/windows"
	gen := layergen.New(900, 24, 16<<10)
	base1, base2 := layer(t, goGzip, layergen.New(901, 24, 16<<10)), layer(t, goGzip, layergen.New(902, 24, 16<<10))
	app1, app2 := layer(t, goGzip, gen), layer(t, goGzip, gen.Update(903))
	pushImage(t, repo+":1", windowsImage(t, base1, app1))
	pushImage(t, repo+":2", windowsImage(t, base1, app2)) // same base: shared, not in the registry
	pushImage(t, repo+":3", windowsImage(t, base2, app2)) // the monthly base update

	var diff diffReport
	mustJSON(t, &diff, "diff", repo+":1", repo+":2")
	if ls := diff.Platforms[0].Layers; len(ls) != 1 || ls[0].Delta == nil || slices.Contains(ls[0].Bases, base1.Blob()) {
		t.Errorf("diff of the app layer over a shared foreign layer: %+v; want one delta, the foreign layer no base", ls)
	}
	diff = diffReport{}
	mustJSON(t, &diff, "diff", repo+":2", repo+":3")
	ls := diff.Platforms[0].Layers
	if len(ls) != 1 || ls[0].Target != base2.Blob() || ls[0].Delta != nil || ls[0].Error != "" || !strings.Contains(ls[0].Reason, "non-distributable") {
		t.Errorf("diff of a new foreign layer: %+v; want one row, no delta, the reason naming it non-distributable", ls)
	}
	// Listed, but not counted: no one fetches it from the registry (plan
	// leaves it out too).
	if want := (diffTotals{}); diff.Totals != want {
		t.Errorf("diff of a new foreign layer: totals %+v, want %+v", diff.Totals, want)
	}
	r := mustRun(t, "diff", repo+":2", repo+":3")
	if !strings.Contains(r.stdout, "\ntotal ") || !strings.HasPrefix(strings.Join(strings.Fields(r.stdout[strings.Index(r.stdout, "\ntotal "):]), " "), "total 0 layer(s) 0 B 0 B") {
		t.Errorf("diff table of a new foreign layer counts it:\n%s", r.stdout)
	}
}

// An index of Windows images holds one windows/amd64 manifest per Windows
// build (ltsc2019, ltsc2022), whose os.version revision changes every
// month: each of NEW's is diffed against OLD's of the same build, whatever
// the revisions and the order, and the rows say which build they are.
func TestDiffWindowsBuilds(t *testing.T) {
	t.Parallel()
	host := newRegistry(t, true)
	repo := host + "/edge/winbuilds"
	windows := func(osVersion string, seed uint64) mutate.IndexAddendum {
		img := testImage(t, "amd64", layer(t, goGzip, layergen.New(seed, 4, 4<<10)))
		return mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: osVersion}}}
	}
	oldIdx := mutate.AppendManifests(empty.Index, windows("10.0.20348.2340", 1), windows("10.0.17763.5576", 2))
	newIdx := mutate.AppendManifests(empty.Index, windows("10.0.17763.5696", 3), windows("10.0.20348.2402", 4))
	pushIndex(t, repo+":1", mutate.IndexMediaType(oldIdx, types.OCIImageIndex))
	pushIndex(t, repo+":2", mutate.IndexMediaType(newIdx, types.OCIImageIndex))
	oldM, err := oldIdx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}

	var diff diffReport
	mustJSON(t, &diff, "diff", repo+":1", repo+":2")
	var got []string
	for _, p := range diff.Platforms {
		got = append(got, p.Platform+" from "+string(p.From))
	}
	want := []string{
		"windows(10.0.17763.5696)/amd64 from " + oldM.Manifests[1].Digest.String(),
		"windows(10.0.20348.2402)/amd64 from " + oldM.Manifests[0].Digest.String(),
	}
	if !cmp.Equal(got, want) {
		t.Errorf("diff of two Windows builds: %v, want %v", got, want)
	}
}

// indexOf is an OCI index listing adds (images or indexes).
func indexOf(adds ...mutate.IndexAddendum) v1.ImageIndex {
	return mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
}

// Indexes nested in an index are read (diff, plan, inspect): their
// platform manifests are NEW's platforms, selected by --platform as for a
// flat index (arm64/v8 is arm64), and paired with OLD's whatever the
// nesting of each.
func TestNestedIndexes(t *testing.T) {
	t.Parallel()
	host := newRegistry(t, true)
	repo := host + "/edge/nested"
	amdGen, armGen := layergen.New(980, 24, 16<<10), layergen.New(981, 24, 16<<10)
	oldAMD, oldARM := testImage(t, "amd64", layer(t, goGzip, amdGen)), testImage(t, "arm64", layer(t, goGzip, armGen))
	newAMD, newARM := testImage(t, "amd64", layer(t, goGzip, amdGen.Update(982))), testImage(t, "arm64", layer(t, goGzip, armGen.Update(983)))
	// OLD is flat; NEW nests amd64 one index deep and arm64 (its
	// descriptor says arm64/v8) two deep, next to an attestation.
	pushIndex(t, repo+":1", testIndex(t, oldAMD, oldARM))
	armV8 := &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	attestation := mutate.IndexAddendum{Add: testImage(t, "amd64"), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"}}}
	armIdx := indexOf(mutate.IndexAddendum{Add: newARM, Descriptor: v1.Descriptor{Platform: armV8}}, attestation)
	midIdx := indexOf(mutate.IndexAddendum{Add: armIdx})
	amdIdx := testIndex(t, newAMD)
	top := indexOf(mutate.IndexAddendum{Add: amdIdx}, mutate.IndexAddendum{Add: midIdx})
	pushIndex(t, repo+":2", top)
	d := func(m interface {
		Digest() (v1.Hash, error)
		Size() (int64, error)
	}) digest.Digest {
		return descriptorOf(t, m).Digest
	}

	var diff diffReport
	mustJSON(t, &diff, "diff", repo+":1", repo+":2")
	var got []string
	for _, p := range diff.Platforms {
		got = append(got, fmt.Sprintf("%s %s from %s, %d layer(s)", p.Platform, p.Manifest, p.From, len(p.Layers)))
	}
	want := []string{
		fmt.Sprintf("linux/amd64 %s from %s, 1 layer(s)", d(newAMD), d(oldAMD)),
		fmt.Sprintf("linux/arm64/v8 %s from %s, 1 layer(s)", d(newARM), d(oldARM)),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("diff of a flat and a nested index (-want +got):\n%s", diff)
	}

	// The other way round: OLD nested, NEW flat; and --platform.
	var back diffReport
	mustJSON(t, &back, "diff", "--platform", "linux/arm64/v8", repo+":2", repo+":1")
	if len(back.Platforms) != 1 || back.Platforms[0].Manifest != d(oldARM) || back.Platforms[0].From != d(newARM) {
		t.Errorf("diff --platform linux/arm64/v8 of a nested OLD: %+v, want %s from %s", back.Platforms, d(oldARM), d(newARM))
	}
	r := deltactl(t, "diff", "--platform", "linux/s390x", repo+":1", repo+":2")
	checkFailure(t, r, 1, "has no platform linux/s390x (it has linux/amd64, linux/arm64/v8)")

	// plan counts the indexes a site fetches on the way to a platform.
	var plan planReport
	mustJSON(t, &plan, "plan", "--platform", "linux/arm64", "--site-has", repo+":1", repo+":2")
	wantManifests := descriptorOf(t, top).Size + descriptorOf(t, midIdx).Size + descriptorOf(t, armIdx).Size + descriptorOf(t, newARM).Size
	if len(plan.Platforms) != 1 || plan.Platforms[0].Manifests != wantManifests || plan.Platforms[0].SiteManifest != d(oldARM) {
		t.Errorf("plan of a nested arm64: %+v; want site manifest %s, %d bytes of manifests (3 indexes and the manifest)", plan.Platforms, d(oldARM), wantManifests)
	}

	// Published deltas of nested platform manifests are found.
	mustRun(t, "diff", "--push", repo+":1", repo+":2")
	var ins inspectReport
	mustJSON(t, &ins, "inspect", repo+":2")
	got = nil
	for _, p := range ins.Platforms {
		got = append(got, fmt.Sprintf("%s %s: %d artifact(s)", p.Platform, p.Manifest, len(p.Artifacts)))
	}
	want = []string{
		fmt.Sprintf("linux/amd64 %s: 1 artifact(s)", d(newAMD)),
		fmt.Sprintf("linux/arm64/v8 %s: 1 artifact(s)", d(newARM)),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("inspect of a nested index (-want +got):\n%s", diff)
	}
}

// A site does not download a Windows image's foreign base layer (its
// devices fetch it from the URLs in the manifest): plan counts only what
// the site's mirror fetches.
func TestPlanLeavesOutForeignLayers(t *testing.T) {
	t.Parallel()
	host := newRegistry(t, true)
	repo := host + "/edge/winplan"
	app := layer(t, goGzip, layergen.New(910, 8, 4<<10))
	base1, base2 := layer(t, goGzip, layergen.New(911, 24, 16<<10)), layer(t, goGzip, layergen.New(912, 24, 16<<10))
	pushImage(t, repo+":1", windowsImage(t, base1, app))
	pushImage(t, repo+":2", windowsImage(t, base2, app))
	var plan planReport
	mustJSON(t, &plan, "plan", "--site-has", repo+":1", repo+":2")
	if p := plan.Platforms[0]; len(p.Layers) != 0 || p.Without >= base2.Blob().Size {
		t.Errorf("plan of a new foreign base layer: %d layer(s), %d bytes without deltas; want none, less than the %d-byte foreign layer", len(p.Layers), p.Without, base2.Blob().Size)
	}
}

// A layer stored as a plain tar gets a tar delta whose recipe is said as
// what it is, "uncompressed" (not "none"), in diff's table and JSON and in
// inspect's.
func TestDiffUncompressedLayerRecipe(t *testing.T) {
	t.Parallel()
	host := newRegistry(t, true)
	repo := host + "/edge/plain"
	plain := func(_ testing.TB, tar []byte) []byte { return tar }
	gen := layergen.New(970, 24, 16<<10)
	pushImage(t, repo+":1", testImage(t, "amd64", layer(t, plain, gen)))
	pushImage(t, repo+":2", testImage(t, "amd64", layer(t, plain, gen.Update(971))))

	var diff diffReport
	mustJSON(t, &diff, "diff", repo+":1", repo+":2")
	if ls := diff.Platforms[0].Layers; len(ls) != 1 || ls[0].Kind != layerdelta.KindTar || ls[0].Recipe != "uncompressed" {
		t.Fatalf("diff of an uncompressed layer: %+v; want a tar delta, recipe \"uncompressed\"", ls)
	}
	r := mustRun(t, "diff", "--push", repo+":1", repo+":2")
	if !strings.Contains(r.stdout, "tar: uncompressed") || strings.Contains(r.stdout, "none") {
		t.Errorf("diff table of an uncompressed layer:\n%s", r.stdout)
	}
	var ins inspectReport
	mustJSON(t, &ins, "inspect", repo+":2")
	if a := ins.Platforms[0].Artifacts; len(a) != 1 || len(a[0].Deltas) != 1 || a[0].Deltas[0].Recipe != "uncompressed" {
		t.Errorf("inspect of an uncompressed layer's delta: %+v; want recipe \"uncompressed\"", a)
	}
	if r := mustRun(t, "inspect", repo+":2"); !strings.Contains(r.stdout, " uncompressed") || strings.Contains(r.stdout, "none") {
		t.Errorf("inspect table of an uncompressed layer's delta:\n%s", r.stdout)
	}
}

// A manifest listed more than once (under two nested indexes, and again in
// the top one) is one platform of NEW: one row in diff, plan and inspect,
// its layers counted once in the totals, with its first listing's platform
// and the path to it.
func TestManifestListedTwice(t *testing.T) {
	t.Parallel()
	host := newRegistry(t, true)
	repo := host + "/edge/twice"
	gen := layergen.New(990, 24, 16<<10)
	oldAMD, newAMD := testImage(t, "amd64", layer(t, goGzip, gen)), testImage(t, "amd64", layer(t, goGzip, gen.Update(991)))
	pushIndex(t, repo+":1", testIndex(t, oldAMD))
	first := testIndex(t, newAMD)
	// The second listing says another variant: the first one's platform
	// is kept.
	second := indexOf(mutate.IndexAddendum{Add: newAMD, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64", Variant: "v3"}}})
	top := indexOf(mutate.IndexAddendum{Add: first}, mutate.IndexAddendum{Add: second}, mutate.IndexAddendum{Add: newAMD})
	pushIndex(t, repo+":2", top)
	dNew := descriptorOf(t, newAMD).Digest

	var diff diffReport
	mustJSON(t, &diff, "diff", repo+":1", repo+":2")
	if len(diff.Platforms) != 1 || diff.Platforms[0].Platform != "linux/amd64" || diff.Platforms[0].Manifest != dNew {
		t.Fatalf("diff of a manifest listed three times: platforms %+v, want one, linux/amd64 %s", diff.Platforms, dNew)
	}
	if l := diff.Platforms[0].Layers; diff.Totals.Layers != 1 || diff.Totals.Size != l[0].Target.Size {
		t.Errorf("diff totals %+v, want 1 layer of %d bytes", diff.Totals, l[0].Target.Size)
	}

	var plan planReport
	mustJSON(t, &plan, "plan", "--site-has", repo+":1", repo+":2")
	wantManifests := descriptorOf(t, top).Size + descriptorOf(t, first).Size + descriptorOf(t, newAMD).Size
	if len(plan.Platforms) != 1 || plan.Platforms[0].Manifests != wantManifests || plan.Totals.Without != plan.Platforms[0].Without {
		t.Errorf("plan of a manifest listed three times: %+v, totals %+v; want one platform, %d bytes of manifests (the first path's)", plan.Platforms, plan.Totals, wantManifests)
	}

	mustRun(t, "diff", "--push", repo+":1", repo+":2")
	var ins inspectReport
	mustJSON(t, &ins, "inspect", repo+":2")
	if len(ins.Platforms) != 1 || len(ins.Platforms[0].Artifacts) != 1 {
		t.Errorf("inspect of a manifest listed three times: %+v, want one platform with one artifact", ins.Platforms)
	}
}
