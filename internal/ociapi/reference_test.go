package ociapi

import (
	"errors"
	"testing"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

func TestCanonicalReference(t *testing.T) {
	const dgst = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	for in, want := range map[string]string{
		"edge/app":                         "edge/app:latest",
		"edge/app:latest":                  "edge/app:latest",
		"edge/app:v1.2":                    "edge/app:v1.2",
		"edge/app@" + dgst:                 "edge/app@" + dgst,
		"localhost:5000/edge/app":          "localhost:5000/edge/app:latest",
		"localhost:5000/edge/app:v1":       "localhost:5000/edge/app:v1",
		"ghcr.io/org/app@" + dgst:          "ghcr.io/org/app@" + dgst,
		"docker.io/library/alpine:3.20":    "docker.io/library/alpine:3.20",
		"registry.local:443/a/b/c:1.0-rc1": "registry.local:443/a/b/c:1.0-rc1",
	} {
		got, err := CanonicalReference(in)
		if err != nil || got != want {
			t.Errorf("CanonicalReference(%q) = %q, %v; want %q", in, got, err, want)
		}
		if again, err := CanonicalReference(got); err != nil || again != got {
			t.Errorf("CanonicalReference(%q) = %q, %v; want it unchanged", got, again, err)
		}
	}
	for _, in := range []string{"", "Edge/App", "edge/app:", "edge/app@sha256:12", "localhost:x/app", "edge/app:v1@" + dgst} {
		if got, err := CanonicalReference(in); !errors.Is(err, errdef.ErrInvalid) {
			t.Errorf("CanonicalReference(%q) = %q, %v; want ErrInvalid", in, got, err)
		}
	}
}
