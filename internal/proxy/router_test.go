package proxy

import (
	"errors"
	"slices"
	"testing"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

func TestRouter(t *testing.T) {
	t.Parallel()
	hub := &Remote{Name: "docker.io", Library: true}
	ghcr := &Remote{Name: "ghcr.io"}
	central := &Remote{Name: "central.example.com:5000"}
	r, err := NewRouter([]*Remote{hub, ghcr, central}, 0)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, ns   string
		wantRemote *Remote
		wantRepo   string
	}{
		{"alpine", "", hub, "library/alpine"},
		{"org/app", "", hub, "org/app"},
		{"ghcr.io/org/app", "", ghcr, "org/app"},
		{"docker.io/alpine", "", hub, "library/alpine"},
		{"org/app", "ghcr.io", ghcr, "org/app"},
		{"alpine", "docker.io", hub, "library/alpine"},
		{"alpine", "registry-1.docker.io", hub, "library/alpine"},
		{"fleet/app", "central.example.com:5000", central, "fleet/app"},
		{"ghcr.io/org/app", "docker.io", hub, "ghcr.io/org/app"}, // ns decides: a copy of ghcr.io's image on Docker Hub, under its source path
		{"ghcr.io/org/app", "ghcr.io", ghcr, "org/app"},          // a path that repeats ns's registry
		{"docker.io/library/alpine", "central.example.com:5000", central, "docker.io/library/alpine"},
		{"ghcr.io", "", hub, "library/ghcr.io"}, // a lone component is a repository
	}
	for _, tt := range tests {
		got, err := r.Route(tt.name, tt.ns)
		if err != nil {
			t.Errorf("Route(%q, %q) error = %v", tt.name, tt.ns, err)
			continue
		}
		if got.Remote != tt.wantRemote || got.Repo.Name != tt.wantRepo || got.Repo.Registry != tt.wantRemote.Name {
			t.Errorf("Route(%q, %q) = %s %s, want %s %s", tt.name, tt.ns, got.Remote.Name, got.Repo.Name, tt.wantRemote.Name, tt.wantRepo)
		}
	}
	if _, err := r.Route("app", "quay.io"); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("Route with an unknown ns error = %v, want not found", err)
	}
	if _, err := NewRouter(nil, 0); err == nil {
		t.Error("NewRouter(nil) succeeded")
	}
}

// Access rules see a repository under every name it goes by.
func TestAccessNames(t *testing.T) {
	t.Parallel()
	r, err := NewRouter([]*Remote{{Name: "docker.io", Library: true}, {Name: "ghcr.io"}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, ns string
		want     []string
	}{
		{"alpine", "", []string{"alpine", "alpine", "docker.io/alpine", "docker.io/library/alpine", "library/alpine"}},
		{"library/alpine", "docker.io", []string{"library/alpine", "alpine", "docker.io/alpine", "docker.io/library/alpine", "library/alpine"}},
		{"docker.io/org/app", "", []string{"docker.io/org/app", "docker.io/org/app", "org/app"}},
		{"ghcr.io/org/app", "", []string{"ghcr.io/org/app", "ghcr.io/org/app"}},
		{"ghcr.io/library/x", "", []string{"ghcr.io/library/x", "ghcr.io/library/x"}}, // not Docker Hub: no short form
		{"org/app", "ghcr.io", []string{"org/app", "ghcr.io/org/app"}},
		{"org/app", "quay.io", []string{"org/app"}}, // does not route: the name as sent
	} {
		if got := r.AccessNames(tt.name, tt.ns); !slices.Equal(got, tt.want) {
			t.Errorf("AccessNames(%q, %q) = %q, want %q", tt.name, tt.ns, got, tt.want)
		}
	}
}
