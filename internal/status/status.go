// Package status renders the site admin's status page: one server-side
// HTML page (no JavaScript) with what the mirror holds, serves and fetches,
// the health of its upstreams, recent pulls and pre-staging progress. Every
// figure on it is also a Prometheus metric (docs/metrics.md).
package status

import (
	"fmt"
	"net/http"
	"sort"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/registry-edge/registry-edge/internal/httpserve"
	"github.com/registry-edge/registry-edge/internal/metrics"
	"github.com/registry-edge/registry-edge/internal/prefetch"
)

// Options are the page's sources.
type Options struct {
	Metrics  *metrics.Metrics
	Prefetch func() []prefetch.Status
	Recent   func() []httpserve.Pull
	// Budget returns storage.maxSize in force (0: none; nil: none);
	// Root is storage.root.
	Budget  func() int64
	Root    string
	Version string
	// SignaturePolicy says a signature policy is configured.
	SignaturePolicy bool
	Now             func() time.Time
}

// Handler serves the page.
type Handler struct{ o Options }

// New returns the status page handler.
func New(o Options) *Handler {
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Handler{o: o}
}

// Upstream is one upstream's health on the page.
type Upstream struct {
	Name        string
	State       string
	LastContact string
}

// Page is what the template shows.
type Page struct {
	Version, Root, Now              string
	StoreUsed, Budget, BudgetPct    string
	HitRatio, Hits, Misses, Stale   string
	Served, Fetched, Saved, Evicted string
	Resumes, Stalls, FillFailures   string
	SignatureDenials, DeltaSavings  string
	SignaturePolicy                 string
	DeltaLayers, DeltaFallbacks     string
	DeltaRatio                      string
	Upstreams                       []Upstream
	Pulls                           []httpserve.Pull
	Prefetch                        []prefetch.Status
	PrefetchDone, PrefetchTotal     int
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p, err := h.page()
	if err != nil {
		http.Error(w, "status: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	if err := pageTemplate.Execute(w, p); err != nil {
		return // the client went away, or the template is wrong (tests catch that)
	}
}

func (o Options) budget() int64 {
	if o.Budget == nil {
		return 0
	}
	return o.Budget()
}

// page gathers the figures.
func (h *Handler) page() (*Page, error) {
	mfs, err := h.o.Metrics.Registry.Gather()
	if err != nil {
		return nil, err
	}
	g := index(mfs)
	now := h.o.Now()
	p := &Page{Version: h.o.Version, Root: h.o.Root, Now: now.Format(time.RFC3339)}
	used := g.sum("registry_edge_store_bytes")
	p.StoreUsed = bytesStr(used)
	p.Budget, p.BudgetPct = "none", "-"
	if budget := h.o.budget(); budget > 0 {
		p.Budget = bytesStr(float64(budget))
		p.BudgetPct = fmt.Sprintf("%.0f %%", 100*used/float64(budget))
	}
	hits := g.sum("registry_edge_cache_requests_total", "result", "hit")
	misses := g.sum("registry_edge_cache_requests_total", "result", "miss") + g.sum("registry_edge_cache_requests_total", "result", "fill")
	stale := g.sum("registry_edge_cache_requests_total", "result", "stale")
	p.Hits, p.Misses, p.Stale = count(hits), count(misses), count(stale)
	p.HitRatio = "-"
	if total := hits + misses + stale; total > 0 {
		p.HitRatio = fmt.Sprintf("%.1f %%", 100*(hits+stale)/total)
	}
	p.Served = bytesStr(g.sum("registry_edge_served_bytes_total"))
	p.Fetched = bytesStr(g.sum("registry_edge_upstream_fetched_bytes_total"))
	p.Saved = bytesStr(max(g.sum("registry_edge_served_bytes_total")-g.sum("registry_edge_upstream_fetched_bytes_total"), 0))
	p.Evicted = bytesStr(g.sum("registry_edge_evicted_bytes_total"))
	p.Resumes = count(g.sum("registry_edge_fill_resumes_total"))
	p.Stalls = count(g.sum("registry_edge_fill_stalls_total"))
	p.FillFailures = count(g.sum("registry_edge_fill_failures_total"))
	p.SignatureDenials = count(g.sum("registry_edge_signature_denials_total"))
	p.SignaturePolicy = "signature policy: off"
	if h.o.SignaturePolicy {
		p.SignaturePolicy = fmt.Sprintf("%s verified, %s served unverified (warn)",
			count(g.sum("registry_edge_signature_verifications_total", "reason", "verified")), count(g.sum("registry_edge_signature_warnings_total")))
	}
	full, fetched := g.sum("registry_edge_delta_full_bytes_total"), g.sum("registry_edge_delta_fetched_bytes_total")
	p.DeltaSavings = bytesStr(max(full-fetched, 0))
	p.DeltaLayers = count(g.sum("registry_edge_delta_fills_total", "result", "applied"))
	p.DeltaFallbacks = count(g.sum("registry_edge_delta_fills_total", "result", "failed"))
	p.DeltaRatio = "-"
	if full > 0 {
		p.DeltaRatio = fmt.Sprintf("%.1f %%", 100*fetched/full)
	}

	for _, name := range g.labelValues("registry_edge_upstream_breaker_state", "upstream") {
		u := Upstream{Name: name, State: "reachable", LastContact: "never since start"}
		ts := g.sum("registry_edge_upstream_last_contact_timestamp_seconds", "upstream", name)
		switch g.sum("registry_edge_upstream_breaker_state", "upstream", name) {
		case 1:
			u.State = "unreachable (circuit open)"
		case 2:
			u.State = "probing"
		default:
			if ts <= 0 {
				// The breaker is closed, but the upstream has not
				// answered anything, not even the check at start: a
				// gateway started during an outage (before the breaker
				// opens) or an upstream whose certificate is refused.
				u.State = "no answer since start"
			}
		}
		if ts > 0 {
			ago := now.Sub(time.Unix(int64(ts), 0)).Round(time.Second)
			u.LastContact = ago.String() + " ago"
		}
		p.Upstreams = append(p.Upstreams, u)
	}
	if h.o.Recent != nil {
		p.Pulls = h.o.Recent()
	}
	if h.o.Prefetch != nil {
		p.Prefetch = h.o.Prefetch()
		for _, s := range p.Prefetch {
			p.PrefetchTotal++
			if s.State == prefetch.StateComplete {
				p.PrefetchDone++
			}
		}
	}
	return p, nil
}

// figures indexes gathered metric families by name.
type figures map[string]*dto.MetricFamily

func index(mfs []*dto.MetricFamily) figures {
	g := figures{}
	for _, mf := range mfs {
		g[mf.GetName()] = mf
	}
	return g
}

// sum adds the values of name's series whose label equals value (all
// series without a label filter).
func (g figures) sum(name string, labelValue ...string) float64 {
	mf := g[name]
	if mf == nil {
		return 0
	}
	total := 0.0
	for _, m := range mf.GetMetric() {
		if len(labelValue) == 2 && !hasLabel(m, labelValue[0], labelValue[1]) {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		}
	}
	return total
}

func (g figures) labelValues(name, label string) []string {
	mf := g[name]
	if mf == nil {
		return nil
	}
	var out []string
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label {
				out = append(out, lp.GetValue())
			}
		}
	}
	sort.Strings(out)
	return out
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name && lp.GetValue() == value {
			return true
		}
	}
	return false
}

func count(v float64) string { return fmt.Sprintf("%.0f", v) }

func bytesStr(v float64) string {
	switch {
	case v >= 1<<30:
		return fmt.Sprintf("%.2f GiB", v/(1<<30))
	case v >= 1<<20:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%.1f KiB", v/(1<<10))
	}
	return fmt.Sprintf("%.0f B", v)
}
