package metrics

import "github.com/prometheus/client_golang/prometheus"

// Delta results of a blob fill that found published or negotiated deltas
// for its layer (DeltaFills).
const (
	DeltaApplied        = "applied"        // the layer was rebuilt from a delta and verified
	DeltaFailed         = "failed"         // fetching or applying the delta failed: full fetch
	DeltaNoBase         = "no_base"        // no delta whose bases are stored: full fetch
	DeltaUnreproducible = "unreproducible" // the recipe needs another encoder generation: full fetch
	DeltaNotConfirmed   = "not_confirmed"  // published for another repository, which the upstream did not confirm holds the layer: full fetch
)

// Deltas are the layer-delta metrics (issue #5).
type Deltas struct {
	// Fills counts blob fills that had deltas to consider, by result.
	Fills *prometheus.CounterVec
	// FetchedBytes counts delta bytes received from upstream for layers
	// rebuilt from them; FullBytes the sizes of those layers, what a full
	// fetch would have cost. 1 - Fetched/Full is the savings ratio.
	FetchedBytes prometheus.Counter
	FullBytes    prometheus.Counter
	// RebuildDuration observes the time to apply a delta and verify the
	// rebuilt layer (without fetching the delta).
	RebuildDuration prometheus.Histogram
	// Recipes counts recipe detections when this mirror computes deltas,
	// by result (found, none).
	Recipes *prometheus.CounterVec
	// Served counts answers to delta negotiations from a lower tier, by
	// result (delta, full).
	Served *prometheus.CounterVec
}

func (m *Metrics) registerDeltas(reg *prometheus.Registry) {
	m.Deltas = Deltas{
		Fills: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_edge_delta_fills_total", Help: "Blob fills that had layer deltas to consider, by result (applied, failed, no_base, unreproducible, not_confirmed).",
		}, []string{"result"}),
		FetchedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "registry_edge_delta_fetched_bytes_total", Help: "Delta bytes fetched for layers rebuilt from deltas.",
		}),
		FullBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "registry_edge_delta_full_bytes_total", Help: "Size of the layers rebuilt from deltas: what full fetches would have cost.",
		}),
		RebuildDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "registry_edge_delta_rebuild_duration_seconds", Help: "Time to apply a delta, recompress and verify the rebuilt layer (the delta's fetch excluded).",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 9),
		}),
		Recipes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_edge_delta_recipes_total", Help: "Compression recipe detections when computing deltas, by result (found, none).",
		}, []string{"result"}),
		Served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_edge_delta_negotiations_total", Help: "Delta requests from lower tiers (A-IM), by answer (delta, full, pending: 202, still computing; refused: the client is not in deltas.serveTo; unreadable: it reads none of the delta formats made here).",
		}, []string{"result"}),
	}
	reg.MustRegister(m.Deltas.Fills, m.Deltas.FetchedBytes, m.Deltas.FullBytes, m.Deltas.RebuildDuration, m.Deltas.Recipes, m.Deltas.Served)
}
