package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// PrefetchProgress is the state of the prefetch list, read at every scrape.
type PrefetchProgress struct {
	// Images counts listed images by state (pending, waiting, running,
	// complete, failed).
	Images map[string]int
	// Bytes and BytesDone sum the blob bytes of the listed images, and
	// those stored, as of their latest run.
	Bytes, BytesDone int64
}

// SetPrefetchSource makes the prefetch collectors report what progress
// returns; it must be safe for concurrent use.
func (m *Metrics) SetPrefetchSource(progress func() PrefetchProgress) {
	m.prefetch.mu.Lock()
	m.prefetch.source = progress
	m.prefetch.mu.Unlock()
}

// prefetchStates are always reported, so that a state's series exists at 0.
var prefetchStates = []string{"pending", "waiting", "running", "complete", "failed"}

type prefetchCollector struct {
	images, bytes *prometheus.Desc

	mu     sync.Mutex
	source func() PrefetchProgress
}

func newPrefetchCollector() *prefetchCollector {
	return &prefetchCollector{
		images: prometheus.NewDesc("registry_edge_prefetch_images",
			"Images of the prefetch list by state (pending, waiting for a time window, running, complete, failed).",
			[]string{"state"}, nil),
		bytes: prometheus.NewDesc("registry_edge_prefetch_bytes",
			"Blob bytes of the prefetch list as of each image's latest run: total, and done (stored).",
			[]string{"kind"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *prefetchCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.images
	ch <- c.bytes
}

// Collect implements prometheus.Collector.
func (c *prefetchCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	src := c.source
	c.mu.Unlock()
	if src == nil {
		return
	}
	p := src()
	for _, s := range prefetchStates {
		ch <- prometheus.MustNewConstMetric(c.images, prometheus.GaugeValue, float64(p.Images[s]), s)
	}
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(p.Bytes), "total")
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(p.BytesDone), "done")
}
