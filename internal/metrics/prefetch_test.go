package metrics

import (
	"testing"
)

func TestPrefetchCollector(t *testing.T) {
	m := New()
	gather := func() map[string]float64 {
		t.Helper()
		mfs, err := m.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, mf := range mfs {
			for _, mm := range mf.GetMetric() {
				if mf.GetName() == "registry_edge_prefetch_images" || mf.GetName() == "registry_edge_prefetch_bytes" {
					out[mf.GetName()+"/"+mm.GetLabel()[0].GetValue()] = mm.GetGauge().GetValue()
				}
			}
		}
		return out
	}
	if got := gather(); len(got) != 0 {
		t.Fatalf("without a source: %v, want no series", got)
	}
	m.SetPrefetchSource(func() PrefetchProgress {
		return PrefetchProgress{Images: map[string]int{"complete": 2, "running": 1}, Bytes: 300, BytesDone: 250}
	})
	want := map[string]float64{
		"registry_edge_prefetch_images/complete": 2, "registry_edge_prefetch_images/running": 1,
		"registry_edge_prefetch_images/pending": 0, "registry_edge_prefetch_images/waiting": 0, "registry_edge_prefetch_images/failed": 0,
		"registry_edge_prefetch_bytes/total": 300, "registry_edge_prefetch_bytes/done": 250,
	}
	got := gather()
	if len(got) != len(want) {
		t.Errorf("series = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}
