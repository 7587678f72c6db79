package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// A prefetch image whose first segment names a registry no upstream has
// goes to the default upstream with that segment in its repository name:
// a warning says so. Bare names, upstream prefixes and namespaces are no
// registry names and get none.
func TestPrefetchWarnings(t *testing.T) {
	t.Parallel()
	c, err := Load(strings.NewReader(`
upstreams:
  - {registry: docker.io, url: https://registry-1.docker.io}
  - {registry: central.example.com:5000, url: https://central.example.com:5000}
prefetch:
  images:
    - ref: alpine:3.20
    - ref: fleet/app:1
    - ref: docker.io/library/redis:7
    - ref: central.example.com:5000/fleet/app:2
    - ref: ghcr.io/org/app:1
    - ref: localhost/app
`))
	if err != nil {
		t.Fatalf("Load() error = %v", err)
	}
	want := []string{
		`prefetch.images[4].ref: "ghcr.io/org/app:1" names registry ghcr.io, which no upstream has (upstreams: docker.io, central.example.com:5000): it is fetched from the default upstream docker.io as repository ghcr.io/org/app`,
		`prefetch.images[5].ref: "localhost/app" names registry localhost, which no upstream has (upstreams: docker.io, central.example.com:5000): it is fetched from the default upstream docker.io as repository localhost/app`,
	}
	if diff := cmp.Diff(want, c.PrefetchWarnings()); diff != "" {
		t.Errorf("PrefetchWarnings() mismatch (-want +got):\n%s", diff)
	}
}

func TestDeltaWarnings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		yaml string
		want []string
	}{
		{"deltas: {serve: false, serveTo: [10.0.0.0/8]}", []string{"deltas.serveTo: has no effect with deltas.serve: false (this mirror computes no deltas for lower tiers)"}},
		{"deltas: {serve: true, serveTo: [10.0.0.0/8]}", nil},
		{"deltas: {serve: false}", nil},
	} {
		c, err := Load(strings.NewReader(tc.yaml))
		if err != nil {
			t.Fatalf("Load(%q) error = %v", tc.yaml, err)
		}
		if diff := cmp.Diff(tc.want, c.DeltaWarnings()); diff != "" {
			t.Errorf("%s: DeltaWarnings() mismatch (-want +got):\n%s", tc.yaml, diff)
		}
	}
}
