package glob

import (
	"strings"
	"testing"
)

func TestGlob(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern string
		name    string
		want    bool
	}{
		{"central.example.com/fleet/**", "central.example.com/fleet/app", true},
		{"central.example.com/fleet/**", "central.example.com/fleet/a/b/c", true},
		{"central.example.com/fleet/**", "central.example.com/fleet", true},
		{"central.example.com/fleet/**", "central.example.com/fleetx/app", false},
		{"central.example.com/fleet/**", "other.example.com/fleet/app", false},
		{"central.example.com/fleet/*", "central.example.com/fleet/app", true},
		{"central.example.com/fleet/*", "central.example.com/fleet/a/b", false},
		{"central.example.com/*/app", "central.example.com/fleet/app", true},
		{"central.example.com/*/app", "central.example.com/a/b/app", false},
		{"*/fleet/**", "localhost:5000/fleet/app", true},
		{"**/app", "docker.io/library/app", true},
		{"**/app", "docker.io/library/app2", false},
		{"**", "anything/at/all", true},
		{"central.example.com/fleet-*/**", "central.example.com/fleet-eu/app", true},
		{"central.example.com/fleet-*/**", "central.example.com/fleet/app", false},
		{"central.example.com/*-edge/**", "central.example.com/eu-edge/x", true},
		{"central.example.com/a*b*c", "central.example.com/aXbYc", true},
		{"central.example.com/a*b*c", "central.example.com/aXbYcd", false},
		{"central.example.com/**/x/**/y", "central.example.com/1/x/2/3/y", true},
		{"central.example.com/**/x/**/y", "central.example.com/1/x/2/3/z", false},
		{"central.example.com/fleet/app", "central.example.com/fleet/app", true},
		{"central.example.com/fleet/app", "central.example.com/fleet/app/sub", false},
	}
	for _, tt := range tests {
		g, err := Compile(tt.pattern)
		if err != nil {
			t.Fatalf("Compile(%q) error = %v", tt.pattern, err)
		}
		if got := g.Match(tt.name); got != tt.want {
			t.Errorf("Glob(%q).Match(%q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
	for _, bad := range []string{"", "/fleet", "fleet/", "a//b", "a/**b", "a/***", "Central.example.com/x", "a/b c", "a/[x]"} {
		if _, err := Compile(bad); err == nil {
			t.Errorf("Compile(%q) error = nil, want bad glob", bad)
		}
	}
}

func FuzzGlob(f *testing.F) {
	f.Add("central.example.com/fleet/**", "central.example.com/fleet/app")
	f.Add("**/a*b*c*d/**", "x/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab/y")
	f.Fuzz(func(t *testing.T, pattern, name string) {
		g, err := Compile(pattern)
		if err != nil {
			return
		}
		g.Match(name)
		if !strings.Contains(pattern, "*") && g.Match(name) != (pattern == name) {
			t.Errorf("Glob(%q).Match(%q) = %v without wildcards", pattern, name, g.Match(name))
		}
	})
}
