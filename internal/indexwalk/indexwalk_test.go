package indexwalk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// store holds indexes by digest and counts the fetches.
type store struct {
	bodies  map[digest.Digest][]byte
	fetched []digest.Digest
}

func (s *store) index(t *testing.T, children ...ocispec.Descriptor) ocispec.Descriptor {
	t.Helper()
	b, err := json.Marshal(ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: children})
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(b)
	s.bodies[d] = b
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: d, Size: int64(len(b))}
}

func (s *store) fetch(_ context.Context, d ocispec.Descriptor) ([]byte, error) {
	s.fetched = append(s.fetched, d.Digest)
	b, ok := s.bodies[d.Digest]
	if !ok {
		return nil, fmt.Errorf("manifest %s: %w", d.Digest, errdef.ErrNotFound)
	}
	return b, nil
}

func image(arch string) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString(arch), Size: 2,
		Platform: &ocispec.Platform{OS: "linux", Architecture: arch}}
}

func walkAll(s *store, top ocispec.Descriptor) (entries []string, indexes []digest.Digest, err error) {
	err = Walk(context.Background(), top, s.bodies[top.Digest], s.fetch,
		func(i Index) error { indexes = append(indexes, i.Descriptor.Digest); return nil },
		func(e Entry) error {
			entries = append(entries, fmt.Sprintf("%s via %d", e.Descriptor.Platform.Architecture, len(e.Path)))
			return nil
		})
	return entries, indexes, err
}

// Nested indexes are walked depth first in the order listed, each once
// however often it is listed, and an entry's path names the indexes above
// it.
func TestWalkNested(t *testing.T) {
	t.Parallel()
	s := &store{bodies: map[digest.Digest][]byte{}}
	arm := s.index(t, image("arm64"))
	mid := s.index(t, image("amd64"), arm)
	top := s.index(t, image("s390x"), mid, arm, mid)

	var paths [][]digest.Digest
	err := Walk(context.Background(), top, s.bodies[top.Digest], s.fetch, nil, func(e Entry) error {
		paths = append(paths, e.Path)
		return nil
	})
	if err != nil {
		t.Fatalf("Walk() error = %v", err)
	}
	want := [][]digest.Digest{{top.Digest}, {top.Digest, mid.Digest}, {top.Digest, mid.Digest, arm.Digest}}
	if diff := cmp.Diff(want, paths); diff != "" {
		t.Errorf("Walk() paths (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]digest.Digest{mid.Digest, arm.Digest}, s.fetched); diff != "" {
		t.Errorf("Walk() fetched (-want +got):\n%s", diff)
	}
}

// The bounds stop a walk before it fetches what it would not read.
func TestWalkBounds(t *testing.T) {
	t.Parallel()
	t.Run("depth", func(t *testing.T) {
		t.Parallel()
		s := &store{bodies: map[digest.Digest][]byte{}}
		idx := s.index(t, image("amd64"))
		for range MaxDepth {
			idx = s.index(t, idx)
		}
		if _, _, err := walkAll(s, idx); err != nil {
			t.Fatalf("Walk() of %d nested indexes: %v", MaxDepth, err)
		}
		top := s.index(t, idx)
		s.fetched = nil
		_, _, err := walkAll(s, top)
		if !errors.Is(err, errdef.ErrInvalid) {
			t.Fatalf("Walk() of %d nested indexes: error = %v, want ErrInvalid", MaxDepth+1, err)
		}
		if len(s.fetched) != MaxDepth {
			t.Errorf("Walk() fetched %d indexes, want %d", len(s.fetched), MaxDepth)
		}
	})
	t.Run("count", func(t *testing.T) {
		t.Parallel()
		s := &store{bodies: map[digest.Digest][]byte{}}
		var children []ocispec.Descriptor
		for i := range MaxIndexes {
			children = append(children, s.index(t, image(fmt.Sprint("arch", i))))
		}
		if _, idx, err := walkAll(s, s.index(t, children[1:]...)); err != nil || len(idx) != MaxIndexes {
			t.Fatalf("Walk() of %d indexes: %d read, error %v", MaxIndexes, len(idx), err)
		}
		s.fetched = nil
		entries, _, err := walkAll(s, s.index(t, children...))
		if !errors.Is(err, errdef.ErrInvalid) {
			t.Fatalf("Walk() of %d indexes: error = %v, want ErrInvalid", MaxIndexes+1, err)
		}
		if len(s.fetched) != MaxIndexes-1 || len(entries) != MaxIndexes-1 {
			t.Errorf("Walk() fetched %d indexes (%d entries), want %d", len(s.fetched), len(entries), MaxIndexes-1)
		}
	})
	t.Run("not an index", func(t *testing.T) {
		t.Parallel()
		s := &store{bodies: map[digest.Digest][]byte{}}
		child := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromString("x"), Size: 1}
		s.bodies[child.Digest] = []byte("not json")
		if _, _, err := walkAll(s, s.index(t, child)); !errors.Is(err, errdef.ErrInvalid) {
			t.Errorf("Walk() of a nested index that is not JSON: error = %v, want ErrInvalid", err)
		}
	})
}

// A manifest listed twice is reported for each listing, with its path:
// deltactl verify needs every index that lists it (any of them may cover
// it), so the walk does not keep only the first.
func TestWalkReportsEachListing(t *testing.T) {
	t.Parallel()
	s := &store{bodies: map[digest.Digest][]byte{}}
	inner := s.index(t, image("amd64"))
	entries, _, err := walkAll(s, s.index(t, image("amd64"), inner, image("amd64")))
	if err != nil {
		t.Fatalf("Walk() error = %v", err)
	}
	if diff := cmp.Diff([]string{"amd64 via 1", "amd64 via 2", "amd64 via 1"}, entries); diff != "" {
		t.Errorf("Walk() entries (-want +got):\n%s", diff)
	}
}
