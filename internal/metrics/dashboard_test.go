package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// Every metric the shipped Grafana dashboard queries exists, and every
// metric the mirror exports is documented: the dashboard, the docs and the
// code do not drift apart.
func TestDashboardAndDocsMatchTheMetrics(t *testing.T) {
	m := New()
	m.SetPrefetchSource(func() PrefetchProgress { return PrefetchProgress{} })
	m.AddUpstream("x", func() UpstreamHealth { return UpstreamHealth{} })
	// Touch the vectors so that they are gathered.
	m.Requests.WithLabelValues("blob", "GET", "200")
	m.Cache.WithLabelValues("blob", "hit")
	m.BytesServed.WithLabelValues("blob")
	m.UpstreamBytes.WithLabelValues("x")
	m.UpstreamRequests.WithLabelValues("x", "blob", "ok")
	m.FillDuration.WithLabelValues("ok")
	m.FillFailures.WithLabelValues("verify")
	m.StaleServed.WithLabelValues("x")
	m.StaleRefused.WithLabelValues("x")
	m.RequestDuration.WithLabelValues("blob")
	m.FillResumes.WithLabelValues("x", "link")
	m.FillRefetchedBytes.WithLabelValues("x")
	m.FillStalls.WithLabelValues("x")
	m.Deltas.Fills.WithLabelValues(DeltaApplied)
	m.Deltas.Recipes.WithLabelValues("found")
	m.Deltas.Served.WithLabelValues("delta")
	m.Signatures.Verifications.WithLabelValues("r", "verified")
	m.Signatures.Denials.WithLabelValues("r", "manifest")
	m.Signatures.Warnings.WithLabelValues("r")
	m.Signatures.Cache.WithLabelValues("hit")
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, mf := range mfs {
		name := mf.GetName()
		if strings.HasPrefix(name, "registry_edge_") {
			exported[name] = true
		}
	}

	docs, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	for name := range exported {
		if !strings.Contains(string(docs), "`"+name+"`") {
			t.Errorf("metric %s is not documented in docs/metrics.md", name)
		}
	}

	b, err := os.ReadFile("../../docs/grafana/registry-edge-fleet.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if len(dash.Panels) == 0 {
		t.Fatal("dashboard has no panels")
	}
	re := regexp.MustCompile(`registry_edge_[a-z_]+`)
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, name := range re.FindAllString(tg.Expr, -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
				if !exported[base] {
					t.Errorf("panel %q queries %s, which the mirror does not export", p.Title, name)
				}
			}
		}
	}
}
