package main

import (
	"context"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/layerdelta"
)

const inspectUsage = `usage: deltactl inspect [flags] IMAGE

Lists the deltas published for IMAGE: for each of its platform manifests, the
delta artifacts that refer to it (OCI referrers of artifact type
application/vnd.registry-edge.layer-deltas.v1, read through the referrers API
or the referrers tag schema), and for each delta its digest, size, kind, the
layer it rebuilds (and whether that is a layer of the manifest), its bases and
its compression recipe.

flags:
`

// inspectReport is the result of inspect (--format json).
type inspectReport struct {
	Image     imageRef          `json:"image"`
	Platforms []inspectPlatform `json:"platforms"`
}

// inspectPlatform is one platform manifest of the image and its deltas.
type inspectPlatform struct {
	Platform  string            `json:"platform"`
	Manifest  digest.Digest     `json:"manifest"`
	Artifacts []inspectArtifact `json:"artifacts"`
}

// inspectArtifact is one delta artifact.
type inspectArtifact struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	// From is the image manifest the deltas start from, if the artifact
	// says.
	From digest.Digest `json:"from,omitempty"`
	// Error says why the artifact is unusable (malformed, or attached to
	// another manifest); Deltas is then empty.
	Error  string         `json:"error,omitempty"`
	Deltas []inspectDelta `json:"deltas"`
}

// inspectDelta is one delta of an artifact.
type inspectDelta struct {
	Delta  layerdelta.Blob   `json:"delta"`
	Kind   layerdelta.Kind   `json:"kind"`
	Target layerdelta.Blob   `json:"target"`
	Bases  []layerdelta.Blob `json:"bases"`
	Recipe string            `json:"recipe,omitempty"`
	// TargetInManifest says whether the target is a layer of the manifest
	// (digest and size).
	TargetInManifest bool `json:"targetInManifest"`
	// Reproducible says whether this deltactl (and a registry-edge of the
	// same build) can replay the recipe; Unusable says why not.
	Reproducible bool   `json:"reproducible"`
	Unusable     string `json:"unusable,omitempty"`
}

func inspectCmd(ctx context.Context, e *env, args []string) error {
	f := newFlags(e, "inspect", inspectUsage)
	var platforms platformList
	f.platformFlag(&platforms)
	f.registryFlags()
	f.formatFlag()
	pos, err := f.parse(args, 1, 1)
	if err != nil {
		return err
	}
	c := newClient(ctx, f.insecure, f.timeout, &e.creds)
	ref, err := c.parseRef(pos[0])
	if err != nil {
		return f.usageErr("IMAGE: %v", err)
	}
	img, err := c.resolve(ref)
	if err != nil {
		return err
	}
	pms, err := img.selectPlatforms(platforms)
	if err != nil {
		return err
	}
	rep := inspectReport{Image: imageRef{Ref: pos[0], Digest: digest.Digest(img.desc.Digest.String())}, Platforms: []inspectPlatform{}}
	for _, pm := range pms {
		arts, err := c.deltaArtifacts(img.repo(), pm.desc)
		if err != nil {
			return err
		}
		rep.Platforms = append(rep.Platforms, describeArtifacts(pm, arts))
	}
	if f.format == formatJSON {
		return writeJSON(e.stdout, rep)
	}
	rep.writeTable(e)
	return nil
}

// describeArtifacts describes the delta artifacts of pm.
func describeArtifacts(pm platformManifest, arts []artifact) inspectPlatform {
	ip := inspectPlatform{Platform: platformString(pm.platform), Manifest: digest.Digest(pm.desc.Digest.String()), Artifacts: []inspectArtifact{}}
	layers := layerSet(pm.manifest)
	for _, a := range arts {
		ia := inspectArtifact{Digest: digest.Digest(a.desc.Digest.String()), Size: a.desc.Size, From: a.parsed.From, Deltas: []inspectDelta{}}
		if a.err != nil {
			ia.Error = a.err.Error()
		}
		for _, l := range a.parsed.Layers {
			d := inspectDelta{
				Delta:            layerdelta.Blob{Digest: l.Delta.Digest, Size: l.Delta.Size},
				Kind:             l.Kind,
				Target:           l.Target,
				Bases:            l.Bases,
				TargetInManifest: layers[l.Target],
			}
			if l.Recipe != nil {
				d.Recipe = l.Recipe.String()
			}
			if err := l.Usable(func(layerdelta.Blob) bool { return true }); err != nil {
				d.Unusable = err.Error()
			} else {
				d.Reproducible = true
			}
			ia.Deltas = append(ia.Deltas, d)
		}
		ip.Artifacts = append(ip.Artifacts, ia)
	}
	return ip
}

func (r inspectReport) writeTable(e *env) {
	tw := newTable(e.stdout)
	fmt.Fprintln(tw, "PLATFORM\tARTIFACT\tDELTA\tSIZE\tKIND\tTARGET\tIN IMAGE\tBASES\tRECIPE")
	n := 0
	for _, p := range r.Platforms {
		if len(p.Artifacts) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\tno delta published\n", p.Platform)
		}
		for _, a := range p.Artifacts {
			if a.Error != "" {
				fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\tunusable: %s\n", p.Platform, shortDigest(a.Digest), a.Error)
				continue
			}
			for _, d := range a.Deltas {
				n++
				var bases []string
				for _, b := range d.Bases {
					bases = append(bases, shortDigest(b.Digest))
				}
				in := "no"
				if d.TargetInManifest {
					in = "yes"
				}
				recipe := d.Recipe
				if recipe == "" {
					recipe = "-"
				}
				if !d.Reproducible {
					recipe += " (not reproducible here)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Platform, shortDigest(a.Digest), shortDigest(d.Delta.Digest),
					humanSize(d.Delta.Size), d.Kind, shortDigest(d.Target.Digest), in, strings.Join(bases, ","), recipe)
			}
		}
	}
	tw.Flush()
	fmt.Fprintf(e.stdout, "%d delta(s) for %s (%s)\n", n, r.Image.Ref, r.Image.Digest)
}

// layerSet returns the layers of a manifest.
func layerSet(m *v1.Manifest) map[layerdelta.Blob]bool {
	s := map[layerdelta.Blob]bool{}
	for _, l := range m.Layers {
		s[blobOf(l)] = true
	}
	return s
}
