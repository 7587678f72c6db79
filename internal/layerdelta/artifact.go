// Package layerdelta turns the delta codec (internal/delta) and compression
// recipes (internal/recipe) into deltas between layer blobs, as OCI
// artifacts: Make computes the delta that rebuilds a new layer blob from
// older ones, Apply rebuilds and verifies the blob, and the artifact format
// (Manifest, ParseManifest) describes a set of deltas attached to the new
// image through the referrers API.
//
// A delta is trusted through its target digest alone: Apply returns nil only
// when the rebuilt blob has the digest and size of the layer, which the
// caller takes from the image manifest it pulls. The annotations of the
// artifact only say which delta might rebuild which layer.
//
// The format is described in docs/decisions/0009-delta-artifacts-and-negotiation.md.
package layerdelta

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/delta"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/recipe"
)

// ArtifactType is the artifactType of a manifest that carries layer deltas
// for its subject image.
const ArtifactType = "application/vnd.registry-edge.layer-deltas.v1"

// Annotation keys. Those of a delta's descriptor (the artifact's layers)
// describe one delta; From and To annotate the artifact manifest.
const (
	// AnnotationTarget is the digest of the layer blob the delta rebuilds.
	AnnotationTarget = "io.registry-edge.delta.target"
	// AnnotationTargetSize is that blob's size in bytes (decimal).
	AnnotationTargetSize = "io.registry-edge.delta.target.size"
	// AnnotationKind is KindTar or KindBlob.
	AnnotationKind = "io.registry-edge.delta.kind"
	// AnnotationBases lists the layer blobs the delta needs, as a JSON array
	// of {"digest", "size"} objects.
	AnnotationBases = "io.registry-edge.delta.bases"
	// AnnotationRecipe is the JSON recipe (internal/recipe) that compresses
	// the rebuilt tar into the blob; KindTar only.
	AnnotationRecipe = "io.registry-edge.delta.recipe"
	// AnnotationFrom is the digest of the image manifest the deltas start
	// from (informational); AnnotationTo that of the image they lead to.
	AnnotationFrom = "io.registry-edge.delta.from"
	AnnotationTo   = "io.registry-edge.delta.to"
)

// Kind says what a delta's output is.
type Kind string

const (
	// KindTar deltas rebuild the uncompressed tar of the layer, which the
	// recipe compresses into the blob.
	KindTar Kind = "tar"
	// KindBlob deltas rebuild the blob's bytes directly, from the base
	// blobs' bytes: the fallback for layers without a recipe.
	KindBlob Kind = "blob"
)

// Limits of the artifact parser.
const (
	// MaxLayers bounds the deltas one artifact may carry.
	MaxLayers = 1024
	// maxAnnotation bounds the length of one annotation value.
	maxAnnotation = 64 << 10
)

// Blob names a layer blob: its digest and size.
type Blob struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
}

// Layer describes one delta: the blob that holds it (Delta), the layer blob
// it rebuilds (Target) and the layer blobs it needs (Bases).
type Layer struct {
	Delta  ocispec.Descriptor
	Target Blob
	Kind   Kind
	Bases  []Blob
	// Recipe compresses the rebuilt tar into the target blob (KindTar).
	Recipe *recipe.Recipe
}

// Descriptor returns the artifact layer descriptor of l: l.Delta with the
// annotations that describe the delta.
func (l Layer) Descriptor() (ocispec.Descriptor, error) {
	if err := l.validate(); err != nil {
		return ocispec.Descriptor{}, err
	}
	bases, err := json.Marshal(l.Bases)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc := ocispec.Descriptor{
		MediaType: delta.MediaType,
		Digest:    l.Delta.Digest,
		Size:      l.Delta.Size,
		Annotations: map[string]string{
			AnnotationTarget:     l.Target.Digest.String(),
			AnnotationTargetSize: strconv.FormatInt(l.Target.Size, 10),
			AnnotationKind:       string(l.Kind),
			AnnotationBases:      string(bases),
		},
	}
	if l.Recipe != nil {
		r, err := json.Marshal(l.Recipe)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		desc.Annotations[AnnotationRecipe] = string(r)
	}
	return desc, nil
}

// ParseDescriptor reads a delta's description from its artifact layer
// descriptor. Errors wrap errdef.ErrInvalid.
func ParseDescriptor(desc ocispec.Descriptor) (Layer, error) {
	invalid := func(format string, args ...any) (Layer, error) {
		return Layer{}, fmt.Errorf("delta descriptor %s: "+format+": %w", append([]any{desc.Digest}, append(args, errdef.ErrInvalid)...)...)
	}
	if desc.MediaType != delta.MediaType {
		return invalid("media type %q is not %q", desc.MediaType, delta.MediaType)
	}
	for k, v := range desc.Annotations {
		if len(v) > maxAnnotation {
			return invalid("annotation %s is longer than %d bytes", k, maxAnnotation)
		}
	}
	a := desc.Annotations
	l := Layer{
		Delta: ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size},
		Kind:  Kind(a[AnnotationKind]),
	}
	l.Target.Digest = digest.Digest(a[AnnotationTarget])
	size, err := strconv.ParseInt(a[AnnotationTargetSize], 10, 64)
	if err != nil {
		return invalid("annotation %s: %q is not a size", AnnotationTargetSize, a[AnnotationTargetSize])
	}
	l.Target.Size = size
	if err := strictUnmarshal(a[AnnotationBases], &l.Bases); err != nil {
		return invalid("annotation %s: %v", AnnotationBases, err)
	}
	if r, ok := a[AnnotationRecipe]; ok {
		l.Recipe = new(recipe.Recipe)
		if err := strictUnmarshal(r, l.Recipe); err != nil {
			return invalid("annotation %s: %v", AnnotationRecipe, err)
		}
	}
	if err := l.validate(); err != nil {
		return Layer{}, err
	}
	return l, nil
}

// strictUnmarshal decodes one JSON value with no unknown field: an
// annotation that says more than this version understands is not guessed at.
func strictUnmarshal(s string, v any) error {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON value")
	}
	return nil
}

// validate checks that l is well formed; errors wrap errdef.ErrInvalid.
func (l Layer) validate() error {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("delta %s: "+format+": %w", append([]any{l.Delta.Digest}, append(args, errdef.ErrInvalid)...)...)
	}
	if err := validBlob(Blob{l.Delta.Digest, l.Delta.Size}); err != nil {
		return invalid("delta blob: %v", err)
	}
	if err := validBlob(l.Target); err != nil {
		return invalid("target: %v", err)
	}
	if l.Delta.Digest == l.Target.Digest {
		// Its fill would wait for itself.
		return invalid("the delta blob is the target")
	}
	if len(l.Bases) == 0 || len(l.Bases) > delta.DefaultMaxBases {
		return invalid("%d bases, want 1 to %d", len(l.Bases), delta.DefaultMaxBases)
	}
	for i, b := range l.Bases {
		if err := validBlob(b); err != nil {
			return invalid("base %d: %v", i, err)
		}
		if b.Digest == l.Target.Digest {
			return invalid("base %d is the target", i)
		}
		if b.Digest == l.Delta.Digest {
			return invalid("base %d is the delta blob", i)
		}
	}
	switch l.Kind {
	case KindTar:
		if l.Recipe == nil {
			return invalid("a tar delta needs a recipe")
		}
		if err := l.Recipe.Validate(); err != nil {
			return invalid("%v", err)
		}
	case KindBlob:
		if l.Recipe != nil {
			return invalid("a blob delta takes no recipe")
		}
	default:
		return invalid("kind %q is neither %q nor %q", l.Kind, KindTar, KindBlob)
	}
	return nil
}

func validBlob(b Blob) error {
	if err := b.Digest.Validate(); err != nil {
		return fmt.Errorf("digest %q: %w", b.Digest, err)
	}
	if b.Digest.Algorithm() != digest.SHA256 {
		return fmt.Errorf("digest %s: only sha256 is supported", b.Digest)
	}
	if b.Size < 0 {
		return fmt.Errorf("size %d", b.Size)
	}
	return nil
}

// Artifact is a parsed delta artifact manifest.
type Artifact struct {
	// Subject is the image manifest whose layers the deltas rebuild.
	Subject ocispec.Descriptor
	// From is the image manifest the deltas start from, if the artifact
	// says; informational.
	From   digest.Digest
	Layers []Layer
}

// Manifest returns the artifact manifest that attaches layers to subject
// (an image manifest) through the referrers API, and its descriptor.
func Manifest(subject ocispec.Descriptor, from digest.Digest, layers []Layer) ([]byte, ocispec.Descriptor, error) {
	if len(layers) == 0 || len(layers) > MaxLayers {
		return nil, ocispec.Descriptor{}, fmt.Errorf("delta artifact: %d deltas, want 1 to %d: %w", len(layers), MaxLayers, errdef.ErrInvalid)
	}
	m := ocispec.Manifest{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactType,
		Config:       ocispec.DescriptorEmptyJSON,
		Subject:      &ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size},
		Annotations:  map[string]string{AnnotationTo: subject.Digest.String()},
	}
	m.SchemaVersion = 2
	if from != "" {
		m.Annotations[AnnotationFrom] = from.String()
	}
	for _, l := range layers {
		desc, err := l.Descriptor()
		if err != nil {
			return nil, ocispec.Descriptor{}, err
		}
		m.Layers = append(m.Layers, desc)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	return b, ocispec.Descriptor{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactType,
		Digest:       digest.FromBytes(b),
		Size:         int64(len(b)),
		Annotations:  m.Annotations,
	}, nil
}

// ParseManifest parses a delta artifact manifest. Errors wrap
// errdef.ErrInvalid; a manifest of another artifact type wraps
// ErrNotDeltaArtifact too.
func ParseManifest(b []byte) (Artifact, error) {
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return Artifact{}, fmt.Errorf("delta artifact: %w: %w", errdef.ErrInvalid, err)
	}
	if m.ArtifactType != ArtifactType {
		return Artifact{}, fmt.Errorf("delta artifact: artifact type %q: %w: %w", m.ArtifactType, ErrNotDeltaArtifact, errdef.ErrInvalid)
	}
	if m.Subject == nil {
		return Artifact{}, fmt.Errorf("delta artifact: no subject: %w", errdef.ErrInvalid)
	}
	if err := validBlob(Blob{m.Subject.Digest, m.Subject.Size}); err != nil {
		return Artifact{}, fmt.Errorf("delta artifact: subject: %v: %w", err, errdef.ErrInvalid)
	}
	if len(m.Layers) == 0 || len(m.Layers) > MaxLayers {
		return Artifact{}, fmt.Errorf("delta artifact: %d deltas, want 1 to %d: %w", len(m.Layers), MaxLayers, errdef.ErrInvalid)
	}
	a := Artifact{Subject: *m.Subject}
	if from, ok := m.Annotations[AnnotationFrom]; ok {
		a.From = digest.Digest(from)
		if err := a.From.Validate(); err != nil {
			return Artifact{}, fmt.Errorf("delta artifact: annotation %s: %w: %w", AnnotationFrom, errdef.ErrInvalid, err)
		}
	}
	for _, desc := range m.Layers {
		l, err := ParseDescriptor(desc)
		if err != nil {
			return Artifact{}, fmt.Errorf("delta artifact: %w", err)
		}
		a.Layers = append(a.Layers, l)
	}
	return a, nil
}

// ErrNotDeltaArtifact marks a manifest that is not a delta artifact.
var ErrNotDeltaArtifact = errors.New("not a delta artifact")
