// Package indexwalk walks an OCI image index (or Docker manifest list) whose
// manifests include other indexes, as multi-platform build pipelines and
// `oras`/`crane index append` produce, down to the manifests that are not
// indexes, within bounds.
//
// Reference: https://github.com/opencontainers/image-spec/blob/v1.1.0/image-index.md
// ("manifests ... MAY also be an image index").
package indexwalk

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/ociapi"
)

// Bounds of a walk. Pipelines nest one or two levels (an index of
// per-platform indexes, each with its attestations); the bounds only stop
// an index built to make a reader fetch without end. Digests make a cycle
// impossible, but not a diamond: an index listed twice is walked once.
const (
	// MaxDepth is how many indexes deep below the top one a walk goes.
	MaxDepth = 4
	// MaxIndexes is how many indexes a walk reads, the top one included.
	MaxIndexes = 64
)

// Fetcher returns the body of the index d names.
type Fetcher func(ctx context.Context, d ocispec.Descriptor) ([]byte, error)

// Entry is a manifest that is not an index, reached through indexes.
type Entry struct {
	// Descriptor is the manifest's descriptor as the index that lists it
	// wrote it (platform and annotations included).
	Descriptor ocispec.Descriptor
	// Path is the digests of the indexes that lead to it, the top one
	// first and the one that lists it last.
	Path []digest.Digest
}

// Index is an index read during a walk.
type Index struct {
	// Descriptor is the index's descriptor: as its parent listed it, or
	// top's.
	Descriptor ocispec.Descriptor
	// Body is the index as fetched.
	Body []byte
	// Path is the digests of the indexes above it, top first; empty for
	// the top index.
	Path []digest.Digest
}

// Walk reads the index top (whose body is body) and, depth first and in the
// order each index lists them, every index nested in it, calling onIndex
// (if not nil) for each index as it is read and onEntry for each listing
// of a manifest that is not an index: one listed twice (in one index, or in
// two) is reported twice, each time with its path, and a caller that wants
// each manifest once keeps the first. An index deeper than MaxDepth, or more than
// MaxIndexes of them, is an error wrapping errdef.ErrInvalid; so is a body
// that is not an index.
func Walk(ctx context.Context, top ocispec.Descriptor, body []byte, fetch Fetcher, onIndex func(Index) error, onEntry func(Entry) error) error {
	w := walker{fetch: fetch, onIndex: onIndex, onEntry: onEntry, seen: map[digest.Digest]bool{}}
	return w.walk(ctx, top, body, nil)
}

type walker struct {
	fetch   Fetcher
	onIndex func(Index) error
	onEntry func(Entry) error
	seen    map[digest.Digest]bool
}

func (w *walker) walk(ctx context.Context, desc ocispec.Descriptor, body []byte, path []digest.Digest) error {
	w.seen[desc.Digest] = true
	var idx ocispec.Index
	if err := json.Unmarshal(body, &idx); err != nil {
		return fmt.Errorf("index %s: %w: %w", desc.Digest, errdef.ErrInvalid, err)
	}
	if w.onIndex != nil {
		if err := w.onIndex(Index{Descriptor: desc, Body: body, Path: path}); err != nil {
			return err
		}
	}
	path = append(path[:len(path):len(path)], desc.Digest)
	for _, child := range idx.Manifests {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !ociapi.IsIndex(child.MediaType) {
			if err := w.onEntry(Entry{Descriptor: child, Path: path}); err != nil {
				return err
			}
			continue
		}
		if w.seen[child.Digest] {
			continue
		}
		// Bounds are checked before the fetch: a reader stops before it
		// asks for what it would not read.
		if len(path) > MaxDepth {
			return fmt.Errorf("index %s: nested more than %d indexes deep: %w", child.Digest, MaxDepth, errdef.ErrInvalid)
		}
		if len(w.seen) >= MaxIndexes {
			return fmt.Errorf("index %s: more than %d indexes: %w", path[0], MaxIndexes, errdef.ErrInvalid)
		}
		b, err := w.fetch(ctx, child)
		if err != nil {
			return fmt.Errorf("index %s: %w", child.Digest, err)
		}
		if err := w.walk(ctx, child, b, path); err != nil {
			return err
		}
	}
	return nil
}
