package config

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLoadOfflineAndBreaker(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want func() Upstream
	}{
		{
			name: "defaults",
			in:   "upstreams:\n  - {registry: ghcr.io, url: 'https://ghcr.io'}\n",
			want: func() Upstream {
				u := newUpstream("ghcr.io", "https://ghcr.io")
				if u.Offline.MaxStale != 0 || u.Offline.Repositories != nil ||
					u.Breaker != (Breaker{Failures: 3, MinProbe: Duration(time.Second), MaxProbe: Duration(time.Minute)}) {
					t.Errorf("newUpstream() offline = %+v, breaker = %+v, want no limit and 3/1s/1m", u.Offline, u.Breaker)
				}
				return u
			},
		},
		{
			name: "limits per repository, first match wins",
			in: `
upstreams:
  - registry: ghcr.io
    url: https://ghcr.io
    offline:
      maxStale: 168h
      repositories:
        - match: org/releases/*
          maxStale: 24h
        - match: org/*
        - {match: "base/[a-m]*", maxStale: 1h}
`,
			want: func() Upstream {
				u := newUpstream("ghcr.io", "https://ghcr.io")
				u.Offline = Offline{MaxStale: Duration(168 * time.Hour), Repositories: []OfflineRepository{
					{Match: "org/releases/*", MaxStale: Duration(24 * time.Hour)},
					{Match: "org/*"},
					{Match: "base/[a-m]*", MaxStale: Duration(time.Hour)},
				}}
				return u
			},
		},
		{
			name: "breaker keys left out keep their defaults",
			in:   "upstreams:\n  - {registry: ghcr.io, url: 'https://ghcr.io', breaker: {failures: 1, maxProbe: 10m}}\n",
			want: func() Upstream {
				u := newUpstream("ghcr.io", "https://ghcr.io")
				u.Breaker.Failures = 1
				u.Breaker.MaxProbe = Duration(10 * time.Minute)
				return u
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Load(strings.NewReader(tt.in))
			if err != nil {
				t.Fatalf("Load() error = %v", err)
			}
			if diff := cmp.Diff(tt.want(), c.Upstreams[0]); diff != "" {
				t.Errorf("Load() upstream mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadOfflineAndBreakerInvalid(t *testing.T) {
	t.Parallel()
	const up = "upstreams:\n  - registry: docker.io\n    url: https://registry-1.docker.io\n"
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"negative maxStale", up + "    offline: {maxStale: -1h}\n", []string{"upstreams[0].offline.maxStale: must not be negative"}},
		{"maxStale below tagTTL", "cache: {tagTTL: 10m}\n" + up + "    offline: {maxStale: 5m}\n",
			[]string{"upstreams[0].offline.maxStale: must be 0 (no limit) or at least cache.tagTTL (10m), got 5m"}},
		{"invalid glob", up + "    offline:\n      repositories:\n        - {match: 'org/*', maxStale: 1h}\n        - {match: 'org/[', maxStale: 1h}\n",
			[]string{"upstreams[0].offline.repositories[1].match: invalid glob \"org/[\""}},
		{"match that no name matches", up + "    offline:\n      repositories:\n        - {match: 'Org/*', maxStale: 1h}\n        - {match: '/org/*', maxStale: 1h}\n        - {match: 'docker.io/org/*', maxStale: 1h}\n        - {match: 'org//*', maxStale: 1h}\n",
			[]string{`upstreams[0].offline.repositories[0].match: "Org/*" matches no repository: repository names are lower case`,
				`upstreams[0].offline.repositories[1].match: "/org/*" matches no repository: empty path segment`,
				`upstreams[0].offline.repositories[2].match: "docker.io/org/*" matches no repository: patterns match the name as routed to this upstream, without its registry docker.io`,
				`upstreams[0].offline.repositories[3].match: "org//*" matches no repository: empty path segment`}},
		{"missing match", up + "    offline: {repositories: [{maxStale: 1h}]}\n", []string{"upstreams[0].offline.repositories[0].match: required"}},
		{"duplicate match", up + "    offline: {repositories: [{match: 'a/*'}, {match: 'a/*', maxStale: 1h}]}\n",
			[]string{"upstreams[0].offline.repositories[1].match: duplicate of repositories[0].match"}},
		{"repository maxStale below tagTTL", up + "    offline: {repositories: [{match: 'a/*', maxStale: 1m}]}\n",
			[]string{"upstreams[0].offline.repositories[0].maxStale: must be 0 (no limit) or at least cache.tagTTL (5m)"}},
		{"unknown offline key", up + "    offline: {max: 1h}\n", []string{`unknown key "max" (the keys here: maxStale, repositories)`}},
		{"unknown repository key", up + "    offline: {repositories: [{pattern: 'a/*'}]}\n", []string{`unknown key "pattern" (the keys here: match, maxStale)`}},
		{"zero failures", up + "    breaker: {failures: 0}\n", []string{"upstreams[0].breaker.failures: must be at least 1, got 0"}},
		{"zero minProbe", up + "    breaker: {minProbe: 0s}\n", []string{"upstreams[0].breaker.minProbe: must be greater than 0"}},
		{"probes inverted", up + "    breaker: {minProbe: 2m, maxProbe: 1m}\n", []string{"upstreams[0].breaker.maxProbe: must be at least breaker.minProbe (2m)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			wantLoadErrors(t, tt.in, tt.want)
		})
	}
}

func TestEmptyRepositoriesRoundTrip(t *testing.T) {
	t.Parallel()
	c, err := Load(strings.NewReader("upstreams:\n  - {registry: ghcr.io, url: 'https://ghcr.io', offline: {repositories: []}}\n"))
	if err != nil {
		t.Fatalf("Load() error = %v", err)
	}
	out, err := render(c)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Load(strings.NewReader(out))
	if err != nil {
		t.Fatalf("Load(render()) error = %v", err)
	}
	if diff := cmp.Diff(c, again); diff != "" {
		t.Errorf("round trip mismatch (-loaded +reloaded):\n%s", diff)
	}
}
