package proxy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/ociapi"
)

// Remote is one upstream registry as the router knows it.
type Remote struct {
	// Name is the registry host name the mirror answers for ("docker.io").
	Name string
	// Library adds Docker Hub's "library/" to single-component names.
	Library bool
	// Client talks to the registry.
	Client Upstream
	// Staleness bounds how long a cached tag of this upstream is served
	// when the upstream cannot confirm it; the zero value has no bound.
	Staleness Staleness
}

// Target is where a request goes: an upstream and the repository name at it.
type Target struct {
	Remote *Remote
	Repo   meta.Repo
}

// Router picks the upstream of a request: by a registry-name prefix of the
// repository (/v2/ghcr.io/org/app/...), by containerd's ?ns= query parameter
// (sent to mirrors declared in hosts.toml), or the default upstream.
type Router struct {
	remotes []*Remote
	byName  map[string]*Remote
	def     *Remote
}

// dockerHubAliases are the names containerd and Docker use for Docker Hub.
var dockerHubAliases = []string{"docker.io", "registry-1.docker.io", "index.docker.io"}

// NewRouter returns a router over remotes; def indexes the default one.
func NewRouter(remotes []*Remote, def int) (*Router, error) {
	if len(remotes) == 0 {
		return nil, fmt.Errorf("router: no upstreams: %w", errdef.ErrInvalid)
	}
	if def < 0 || def >= len(remotes) {
		return nil, fmt.Errorf("router: default upstream %d out of range: %w", def, errdef.ErrInvalid)
	}
	r := &Router{remotes: remotes, byName: map[string]*Remote{}, def: remotes[def]}
	for _, rm := range remotes {
		name := strings.ToLower(rm.Name)
		r.byName[name] = rm
		if name == "docker.io" {
			for _, a := range dockerHubAliases {
				if _, ok := r.byName[a]; !ok {
					r.byName[a] = rm
				}
			}
		}
	}
	return r, nil
}

// Remotes returns the configured upstreams.
func (r *Router) Remotes() []*Remote { return r.remotes }

// AccessNames returns the names access rules are matched against for a
// request of repository name (with containerd's ns): the name as sent,
// and, if the request routes, the upstream's registry name with the
// repository, and for the default upstream the repository alone; for
// Docker Hub's library/x also x. So a rule covers a repository however a
// client addresses it: with a registry prefix, with ?ns= or through the
// default upstream, and however the rule writes a library image.
func (r *Router) AccessNames(name, ns string) []string {
	names := []string{name}
	t, err := r.Route(name, ns)
	if err != nil {
		return names
	}
	repos := []string{t.Repo.Name}
	if short, ok := strings.CutPrefix(t.Repo.Name, "library/"); ok && t.Remote.Library && !strings.Contains(short, "/") {
		repos = append(repos, short) // Docker Hub's short form: alpine for library/alpine
	}
	for _, repo := range repos {
		names = append(names, t.Remote.Name+"/"+repo)
		if t.Remote == r.def {
			names = append(names, repo)
		}
	}
	slices.Sort(names[1:])
	return append(names[:1], slices.Compact(names[1:])...)
}

// Route resolves a client's repository name and ns parameter.
func (r *Router) Route(name, ns string) (Target, error) {
	rm := r.def
	repo := name
	first, rest, nested := strings.Cut(name, "/")
	switch {
	case ns != "":
		// containerd names the image's registry in ns and sends the
		// repository as it is on that registry, which may well start
		// with another registry's name (images copied with their source
		// path): ns decides, and the name is taken as it is, unless it
		// repeats ns's registry (a mirror path that names it).
		p, found := r.byName[strings.ToLower(ns)]
		if !found {
			return Target{}, ociapi.NewError(404, ociapi.CodeNameUnknown, "no upstream configured for registry "+ociapi.Sanitize(ns))
		}
		rm = p
		if nested && r.byName[first] == p {
			repo = rest
		}
	case nested:
		if p, found := r.byName[first]; found {
			rm, repo = p, rest
		}
	}
	if rm.Library && !strings.Contains(repo, "/") {
		repo = "library/" + repo
	}
	return Target{Remote: rm, Repo: meta.Repo{Registry: rm.Name, Name: repo}}, nil
}
