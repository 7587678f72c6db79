package main

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/layerdelta"
)

const planUsage = `usage: deltactl plan [flags] --site-has OLD NEW

Prints the bytes that a site holding OLD downloads to pull NEW, per platform of
NEW and in total, without and with the deltas published for NEW.

Without deltas: the index and those nested in it on the way to the platform
(but those OLD has), the platform manifest, the config and the layers that
OLD's manifest for the same platform lacks.
With deltas: the same, but each such layer that has a published delta whose
bases are all layers of OLD's manifest (and whose recipe this build can
replay) counts as its smallest such delta, plus the delta artifact manifests
read. The total is the sum over the platforms: one site per platform.

flags:
`

// planReport is the result of plan (--format json).
type planReport struct {
	Site      imageRef       `json:"site"`
	New       imageRef       `json:"new"`
	Platforms []planPlatform `json:"platforms"`
	Totals    planTotals     `json:"totals"`
}

// planPlatform is what a site of one platform downloads.
type planPlatform struct {
	Platform string        `json:"platform"`
	Manifest digest.Digest `json:"manifest"`
	// SiteManifest is OLD's manifest for the platform ("" when OLD has
	// none: the site then holds nothing of it).
	SiteManifest digest.Digest `json:"siteManifest,omitempty"`
	// Manifests and Config are the bytes of the index, platform manifest
	// and config the site lacks; both figures include them.
	Manifests int64 `json:"manifests"`
	Config    int64 `json:"config"`
	// Layers are the layers the site lacks, each with the delta that
	// replaces it, if any.
	Layers []planLayer `json:"layers"`
	// Artifacts are the delta artifact manifests the site reads to find
	// the deltas used; With includes them.
	Artifacts     []layerdelta.Blob `json:"artifacts"`
	Without       int64             `json:"without"`
	With          int64             `json:"with"`
	SavingPercent float64           `json:"savingPercent"`
}

// planLayer is a layer the site lacks.
type planLayer struct {
	Target layerdelta.Blob `json:"target"`
	// Delta is the smallest usable delta, if any, and Artifact the
	// artifact that carries it.
	Delta    *layerdelta.Blob `json:"delta,omitempty"`
	Artifact digest.Digest    `json:"artifact,omitempty"`
}

// planTotals sum the platforms.
type planTotals struct {
	Without       int64   `json:"without"`
	With          int64   `json:"with"`
	SavingPercent float64 `json:"savingPercent"`
}

func planCmd(ctx context.Context, e *env, args []string) error {
	f := newFlags(e, "plan", planUsage)
	var platforms platformList
	var siteHas string
	f.StringVar(&siteHas, "site-has", "", "the `image` the site holds (required)")
	var minimums layerdelta.Minimums
	f.minimumsFlags(&minimums)
	f.platformFlag(&platforms)
	f.registryFlags()
	f.formatFlag()
	pos, err := f.parse(args, 1, 1)
	if err != nil {
		return err
	}
	if err := f.checkMinimums(minimums); err != nil {
		return err
	}
	if siteHas == "" {
		return f.usageErr("--site-has is required")
	}
	c := newClient(ctx, f.insecure, f.timeout, &e.creds)
	oldRef, err := c.parseRef(siteHas)
	if err != nil {
		return f.usageErr("--site-has: %v", err)
	}
	newRef, err := c.parseRef(pos[0])
	if err != nil {
		return f.usageErr("NEW: %v", err)
	}
	oldImg, err := c.resolve(oldRef)
	if err != nil {
		return err
	}
	newImg, err := c.resolve(newRef)
	if err != nil {
		return err
	}
	pms, err := newImg.selectPlatforms(platforms)
	if err != nil {
		return err
	}
	rep := planReport{
		Site:      imageRef{Ref: siteHas, Digest: digest.Digest(oldImg.desc.Digest.String())},
		New:       imageRef{Ref: pos[0], Digest: digest.Digest(newImg.desc.Digest.String())},
		Platforms: []planPlatform{},
	}
	for _, pm := range pms {
		arts, err := c.deltaArtifacts(newImg.repo(), pm.desc)
		if err != nil {
			return err
		}
		p := planPlatformOf(oldImg, newImg, pm, arts, minimums)
		rep.Platforms = append(rep.Platforms, p)
		rep.Totals.Without += p.Without
		rep.Totals.With += p.With
	}
	rep.Totals.SavingPercent = savingPercent(rep.Totals.Without, rep.Totals.With)
	if f.format == formatJSON {
		return writeJSON(e.stdout, rep)
	}
	rep.writeTable(e)
	return nil
}

// planPlatformOf counts what a site holding old's manifest for pm's
// platform downloads for pm, with arts the delta artifacts of pm. A site
// uses a delta only if it passes min (deltas.minLayerSize, .minSaving).
func planPlatformOf(oldImg, newImg *image, pm platformManifest, arts []artifact, min layerdelta.Minimums) planPlatform {
	p := planPlatform{Platform: platformString(pm.platform), Manifest: digest.Digest(pm.desc.Digest.String()), Layers: []planLayer{}, Artifacts: []layerdelta.Blob{}}
	has := map[layerdelta.Blob]bool{}
	oldPM := oldImg.counterpart(newImg, pm)
	if oldPM != nil {
		p.SiteManifest = digest.Digest(oldPM.desc.Digest.String())
		has = layerSet(oldPM.manifest)
		has[blobOf(oldPM.desc)] = true
		has[blobOf(oldPM.manifest.Config)] = true
	}
	// The site fetches the index and those nested in it that lead to pm,
	// but for those it holds.
	for _, d := range pm.path {
		if ix := newImg.nestedIndex(d); ix != nil && oldImg.nestedIndex(d) == nil {
			p.Manifests += ix.desc.Size
		}
	}
	if !has[blobOf(pm.desc)] {
		p.Manifests += pm.desc.Size
	}
	if !has[blobOf(pm.manifest.Config)] {
		p.Config = pm.manifest.Config.Size
	}
	p.Without = p.Manifests + p.Config
	p.With = p.Without

	usedArtifacts := map[digest.Digest]bool{}
	seen := map[layerdelta.Blob]bool{}
	held := func(b layerdelta.Blob) bool { return has[b] }
	for _, l := range pm.manifest.Layers {
		target := blobOf(l)
		if has[target] || seen[target] || !distributable(l) {
			// A non-distributable layer is no download of the site's:
			// its devices fetch it from the URLs in the manifest.
			continue
		}
		seen[target] = true
		pl := planLayer{Target: target}
		var art layerdelta.Blob
		for _, a := range arts {
			for _, dl := range a.parsed.Layers {
				if dl.Target != target || min.NotWorth(target.Size, dl.Delta.Size) != "" || dl.Usable(held) != nil {
					continue
				}
				if pl.Delta == nil || dl.Delta.Size < pl.Delta.Size {
					pl.Delta = &layerdelta.Blob{Digest: dl.Delta.Digest, Size: dl.Delta.Size}
					art = blobOf(a.desc)
				}
			}
		}
		p.Without += target.Size
		if pl.Delta == nil {
			p.With += target.Size
			p.Layers = append(p.Layers, pl)
			continue
		}
		pl.Artifact = art.Digest
		p.With += pl.Delta.Size
		if !usedArtifacts[art.Digest] {
			usedArtifacts[art.Digest] = true
			p.Artifacts = append(p.Artifacts, art)
			p.With += art.Size
		}
		p.Layers = append(p.Layers, pl)
	}
	p.SavingPercent = savingPercent(p.Without, p.With)
	return p
}

func (r planReport) writeTable(e *env) {
	tw := newTable(e.stdout)
	fmt.Fprintln(tw, "PLATFORM\tNEW LAYERS\tBY DELTA\tWITHOUT DELTAS\tWITH DELTAS\tSAVING")
	for _, p := range r.Platforms {
		byDelta := 0
		for _, l := range p.Layers {
			if l.Delta != nil {
				byDelta++
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%.1f%%\n", p.Platform, len(p.Layers), byDelta, humanSize(p.Without), humanSize(p.With), p.SavingPercent)
	}
	fmt.Fprintf(tw, "total\t\t\t%s\t%s\t%.1f%%\n", humanSize(r.Totals.Without), humanSize(r.Totals.With), r.Totals.SavingPercent)
	tw.Flush()
}
