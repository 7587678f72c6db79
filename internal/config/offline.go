package config

import (
	"fmt"
	"path"
	"strings"
)

// Offline is the bounded-staleness policy of an upstream: how long after
// the upstream last confirmed a tag the edge still answers it from cache
// when the upstream cannot be asked. Content addressed by digest is
// immutable and always served from cache, whatever these settings.
type Offline struct {
	// MaxStale is the limit for repositories that no entry of Repositories
	// matches. 0 means no limit: a disconnected site keeps running on what
	// it has.
	MaxStale Duration `yaml:"maxStale"`
	// Repositories override MaxStale per repository; the first entry that
	// matches applies.
	Repositories []OfflineRepository `yaml:"repositories,omitempty"`
}

// OfflineRepository sets the staleness limit of the repositories matching
// a pattern.
type OfflineRepository struct {
	// Match is a path.Match glob on the repository name as routed to the
	// upstream (registry prefix removed, Docker Hub's library/ added), such
	// as "org/*" or "library/*". A '*' does not match '/'.
	Match string `yaml:"match"`
	// MaxStale is the limit for matching repositories; 0 means no limit.
	MaxStale Duration `yaml:"maxStale"`
}

// Breaker configures an upstream's circuit breaker: after Failures
// consecutive failed requests (connection errors, timeouts, 429, 5xx) the
// upstream is not contacted until a probe is due; one request is then let
// through as the probe, after a backoff that doubles, with jitter, from
// MinProbe up to MaxProbe.
type Breaker struct {
	// Failures is the number of consecutive failures that opens the
	// breaker.
	Failures int `yaml:"failures"`
	// MinProbe is the wait before the first probe.
	MinProbe Duration `yaml:"minProbe"`
	// MaxProbe caps the wait between probes.
	MaxProbe Duration `yaml:"maxProbe"`
}

// validate checks o at path p of the upstream named registry; tagTTL is
// cache.tagTTL.
func (o Offline) validate(p, registry string, tagTTL Duration) []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fieldErr(path, fmt.Sprintf(format, args...)))
	}
	maxStale := func(path string, d Duration) {
		switch {
		case d < 0:
			add(path, "must not be negative, got %s", d)
		case d > 0 && d < tagTTL:
			// A tag younger than tagTTL is served without asking the
			// upstream, so a smaller limit could never apply as written.
			add(path, "must be 0 (no limit) or at least cache.tagTTL (%s), got %s", tagTTL, d)
		}
	}
	maxStale(p+".maxStale", o.MaxStale)
	seen := map[string]int{}
	for i, r := range o.Repositories {
		rp := fmt.Sprintf("%s.repositories[%d]", p, i)
		switch _, err := path.Match(r.Match, ""); {
		case r.Match == "":
			add(rp+".match", "required")
		case err != nil:
			add(rp+".match", "invalid glob %q: %v", r.Match, err)
		case r.Match != strings.ToLower(r.Match):
			// Repository names are lower case: the limit would never
			// apply, and the repositories would go by the upstream's.
			add(rp+".match", "%q matches no repository: repository names are lower case", r.Match)
		case strings.HasPrefix(r.Match, "/") || strings.HasSuffix(r.Match, "/") || strings.Contains(r.Match, "//"):
			add(rp+".match", "%q matches no repository: empty path segment (leading, trailing or double \"/\")", r.Match)
		case registry != "" && strings.EqualFold(strings.SplitN(r.Match, "/", 2)[0], registry):
			add(rp+".match", "%q matches no repository: patterns match the name as routed to this upstream, without its registry %s", r.Match, registry)
		default:
			if j, ok := seen[r.Match]; ok {
				add(rp+".match", "duplicate of repositories[%d].match %q, which always matches first", j, r.Match)
			} else {
				seen[r.Match] = i
			}
		}
		maxStale(rp+".maxStale", r.MaxStale)
	}
	return errs
}

// validate checks b at path p.
func (b Breaker) validate(p string) []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fieldErr(path, fmt.Sprintf(format, args...)))
	}
	if b.Failures < 1 {
		add(p+".failures", "must be at least 1, got %d", b.Failures)
	}
	positive(add, p+".minProbe", b.MinProbe)
	positive(add, p+".maxProbe", b.MaxProbe)
	if b.MinProbe > 0 && b.MaxProbe > 0 && b.MaxProbe < b.MinProbe {
		add(p+".maxProbe", "must be at least breaker.minProbe (%s)", b.MinProbe)
	}
	return errs
}
