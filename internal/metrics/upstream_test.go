package metrics

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// gather returns the value of every sample of name by its upstream label.
func gather(t *testing.T, m *Metrics, name string) map[string]float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatalf("Gather() error = %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, s := range mf.GetMetric() {
			var up string
			for _, l := range s.GetLabel() {
				if l.GetName() == "upstream" {
					up = l.GetValue()
				}
			}
			// Counters end in _total; everything else here is a gauge.
			switch {
			case strings.HasSuffix(name, "_total") && s.Counter != nil:
				out[up] = s.GetCounter().GetValue()
			case !strings.HasSuffix(name, "_total") && s.Gauge != nil:
				out[up] = s.GetGauge().GetValue()
			default:
				t.Fatalf("%s has the wrong type: %v", name, s)
			}
		}
	}
	return out
}

func TestAddUpstream(t *testing.T) {
	t.Parallel()
	m := New()
	if got := gather(t, m, "registry_edge_upstream_breaker_state"); len(got) != 0 {
		t.Errorf("breaker state before any upstream = %v, want none", got)
	}
	contact := time.Date(2026, 3, 1, 12, 0, 0, 500_000_000, time.UTC)
	var refused atomic.Uint64
	refused.Store(7)
	m.AddUpstream("docker.io", func() UpstreamHealth {
		return UpstreamHealth{LastContact: contact, BreakerState: 1, Refused: refused.Load()}
	})
	m.AddUpstream("ghcr.io", func() UpstreamHealth { return UpstreamHealth{} })

	tests := []struct {
		name string
		want map[string]float64
	}{
		{"registry_edge_upstream_last_contact_timestamp_seconds", map[string]float64{"docker.io": 1772366400.5, "ghcr.io": 0}},
		{"registry_edge_upstream_breaker_state", map[string]float64{"docker.io": 1, "ghcr.io": 0}},
		{"registry_edge_upstream_breaker_refused_total", map[string]float64{"docker.io": 7, "ghcr.io": 0}},
	}
	for _, tt := range tests {
		got := gather(t, m, tt.name)
		if len(got) != len(tt.want) {
			t.Errorf("%s = %v, want %v", tt.name, got, tt.want)
			continue
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("%s{upstream=%q} = %v, want %v", tt.name, k, got[k], v)
			}
		}
	}
	// Values are read at scrape time.
	refused.Store(9)
	if got := gather(t, m, "registry_edge_upstream_breaker_refused_total")["docker.io"]; got != 9 {
		t.Errorf("refused after an update = %v, want 9", got)
	}
	m.StaleRefused.WithLabelValues("docker.io").Inc()
	if got := gather(t, m, "registry_edge_stale_tags_refused_total")["docker.io"]; got != 1 {
		t.Errorf("stale tags refused = %v, want 1", got)
	}
}
