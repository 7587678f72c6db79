package config

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/registry-edge/registry-edge/internal/ociapi"
	"github.com/registry-edge/registry-edge/internal/timewindow"
)

// MaxPrefetchConcurrency is the largest accepted prefetch.concurrency: a
// site's uplink gains nothing from more parallel transfers.
const MaxPrefetchConcurrency = 16

// Prefetch lists the images a site must hold before a rollout: they are
// fetched in the background, resumably, and pinned against eviction until
// they leave the list.
type Prefetch struct {
	// Images are fetched at start-up and every Interval.
	Images []PrefetchImage `yaml:"images,omitempty"`
	// Concurrency bounds the blobs fetched at once.
	Concurrency int `yaml:"concurrency"`
	// Windows are daily local times ("22:00-06:00") the background fetch
	// may run in; none means any time.
	Windows []string `yaml:"windows,omitempty"`
	// Interval is how often the list is checked again (tags move).
	Interval Duration `yaml:"interval"`
}

// PrefetchImage is one image to pre-stage.
type PrefetchImage struct {
	// Ref is the image as devices pull it from this mirror:
	// [registry/]repository[:tag|@digest].
	Ref string `yaml:"ref"`
	// Platforms selects children of an index, "os/arch[/variant]"; empty
	// means all of them.
	Platforms []string `yaml:"platforms,omitempty"`
}

// Admin configures the site admin's API (prefetch requests and progress),
// served under /admin/v1/ on the registry listener.
type Admin struct {
	// AllowFrom lists the networks (CIDR) whose clients may use the admin
	// API; others get 403. Empty disables the API. It has no other
	// authentication: keep it to loopback or a management network.
	AllowFrom []string `yaml:"allowFrom"`
	// Hosts are the names by which browsers may address the admin API and
	// the status page (the Host header), besides IP addresses, localhost
	// and the machine's host name: a web page whose own name resolves to
	// the mirror (DNS rebinding) is refused.
	Hosts []string `yaml:"hosts,omitempty"`
}

// AllowedNetworks returns AllowFrom parsed; Validate has checked it.
func (a Admin) AllowedNetworks() []netip.Prefix { return parsePrefixes(a.AllowFrom) }

// ServeToNetworks returns ServeTo parsed (nil: every client).
func (d Deltas) ServeToNetworks() []netip.Prefix { return parsePrefixes(d.ServeTo) }

// parsePrefixes parses CIDR networks, skipping what does not parse (which
// Validate reports).
func parsePrefixes(ss []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// validatePrefixes reports each entry of ss at path[i] that is no CIDR
// network.
func validatePrefixes(add addFunc, path string, ss []string) {
	for i, s := range ss {
		if _, err := netip.ParsePrefix(s); err != nil {
			add(fmt.Sprintf("%s[%d]", path, i), "%q is not a network in CIDR notation (such as 127.0.0.1/32)", s)
		}
	}
}

// ParsedWindows returns Windows parsed; Validate has checked them.
func (p Prefetch) ParsedWindows() []timewindow.Window {
	var out []timewindow.Window
	for _, s := range p.Windows {
		if w, err := timewindow.Parse(s); err == nil {
			out = append(out, w)
		}
	}
	return out
}

func (p Prefetch) validate(add addFunc) {
	if p.Concurrency < 1 || p.Concurrency > MaxPrefetchConcurrency {
		add("prefetch.concurrency", "must be between 1 and %d", MaxPrefetchConcurrency)
	}
	positive(add, "prefetch.interval", p.Interval)
	for i, s := range p.Windows {
		if _, err := timewindow.Parse(s); err != nil {
			add(fmt.Sprintf("prefetch.windows[%d]", i), "%q is not HH:MM-HH:MM", s)
		}
	}
	seen := map[string]int{}
	for i, img := range p.Images {
		path := fmt.Sprintf("prefetch.images[%d]", i)
		if ref, err := ociapi.CanonicalReference(img.Ref); err != nil {
			add(path+".ref", "%q is not [registry/]repository[:tag|@digest]", img.Ref)
		} else if j, ok := seen[ref]; ok {
			add(path+".ref", "%q is the image of prefetch.images[%d].ref (%s)", img.Ref, j, ref)
		} else {
			seen[ref] = i
		}
		for k, pl := range img.Platforms {
			parts := strings.Split(pl, "/")
			if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
				add(fmt.Sprintf("%s.platforms[%d]", path, k), "%q is not os/arch[/variant]", pl)
			}
		}
	}
}

func (a Admin) validate(add addFunc) {
	validatePrefixes(add, "admin.allowFrom", a.AllowFrom)
	for i, h := range a.Hosts {
		if !isHostname(strings.TrimSuffix(h, ".")) {
			add(fmt.Sprintf("admin.hosts[%d]", i), "%q is not a host name (letters, digits, '-' and '.'; no scheme or port)", h)
		}
	}
}

// DeltaWarnings lists delta settings that have no effect as configured:
// networks allowed to ask for deltas on a mirror that answers none.
func (c Config) DeltaWarnings() []string {
	if len(c.Deltas.ServeTo) > 0 && !c.Deltas.Serve {
		return []string{"deltas.serveTo: has no effect with deltas.serve: false (this mirror computes no deltas for lower tiers)"}
	}
	return nil
}

// PrefetchWarnings lists the prefetch.images whose first name segment is a
// registry name (a '.', a ':port' or localhost) that no upstream has. They
// are routed like a pull, so to the default upstream with that segment as
// part of the repository name, which is seldom what was meant
// (ghcr.io/org/app on a mirror of Docker Hub alone). Only a warning: a
// default upstream may hold images copied with their source path.
func (c Config) PrefetchWarnings() []string {
	def := c.DefaultUpstream()
	if def < 0 {
		return nil
	}
	var out []string
	for i, img := range c.Prefetch.Images {
		name, _, err := ociapi.ParseReference(img.Ref)
		first, rest, ok := strings.Cut(name, "/")
		if err != nil || !ok || c.UpstreamIndex(first) >= 0 ||
			!(strings.ContainsAny(first, ".:") || strings.EqualFold(first, "localhost")) {
			continue
		}
		names := make([]string, len(c.Upstreams))
		for j, u := range c.Upstreams {
			names[j] = u.Registry
		}
		out = append(out, fmt.Sprintf("prefetch.images[%d].ref: %q names registry %s, which no upstream has (upstreams: %s): it is fetched from the default upstream %s as repository %s/%s",
			i, img.Ref, first, strings.Join(names, ", "), c.Upstreams[def].Registry, first, rest))
	}
	return out
}
