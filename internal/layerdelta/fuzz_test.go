package layerdelta

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/testutil/layergen"
)

// FuzzParseManifest feeds the artifact parser arbitrary bytes, seeded with
// a real artifact: it must never panic, must reject with ErrInvalid, and
// what it accepts must describe deltas that Descriptor writes back and
// ParseDescriptor reads the same.
func FuzzParseManifest(f *testing.F) {
	v1 := layergen.New(20, 8, 2<<10)
	old, nw := layergen.Gzip(v1.Tar(), -1), layergen.Gzip(v1.Update(21).Tar(), -1)
	dir, err := os.MkdirTemp("", "fuzz-layerdelta-")
	if err != nil {
		f.Fatal(err)
	}
	defer os.RemoveAll(dir)
	res, err := Make(context.Background(), content(nw), []Content{content(old)}, Options{TempDir: dir})
	if err != nil || !res.OK() {
		f.Fatalf("Make: %v %s", err, res.Reason)
	}
	res.Close()
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("x"), Size: 2}
	good, _, err := Manifest(subject, digest.FromString("y"), []Layer{res.Layer})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"artifactType":"` + ArtifactType + `","subject":{"digest":"sha256:` + digest.FromString("").Encoded() + `","size":1},"layers":[{}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseManifest(b)
		if err != nil {
			if !errors.Is(err, errdef.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		for _, l := range a.Layers {
			desc, err := l.Descriptor()
			if err != nil {
				t.Fatalf("accepted layer does not describe itself: %v", err)
			}
			again, err := ParseDescriptor(desc)
			if err != nil {
				t.Fatalf("re-parse: %v", err)
			}
			x, _ := json.Marshal(l)
			y, _ := json.Marshal(again)
			if string(x) != string(y) {
				t.Fatalf("re-parse changed the layer:\n%s\n%s", x, y)
			}
		}
	})
}
