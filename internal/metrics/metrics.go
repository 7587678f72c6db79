// Package metrics builds the Prometheus collectors of registry-edge and
// registers them explicitly on a registry owned by the caller (no init()
// registration, no global registry). Names are documented in
// docs/metrics.md.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds every collector.
type Metrics struct {
	Registry *prometheus.Registry

	// Requests counts downstream requests by endpoint kind, method and status.
	Requests *prometheus.CounterVec
	// Cache counts cache outcomes by endpoint kind and result (hit, miss, fill,
	// stale, pass, delta, pending).
	Cache *prometheus.CounterVec
	// BytesServed counts body bytes of successful responses sent to
	// clients, by endpoint kind.
	BytesServed *prometheus.CounterVec
	// UpstreamBytes counts manifest and blob bytes received from each upstream.
	UpstreamBytes *prometheus.CounterVec
	// UpstreamRequests counts requests the mirror made to each upstream, by operation.
	UpstreamRequests *prometheus.CounterVec
	// FillDuration observes how long blob fills took, by result.
	FillDuration *prometheus.HistogramVec
	// FillsInFlight is the number of blob fills running now.
	FillsInFlight prometheus.Gauge
	// FillFailures counts failed fills by reason.
	FillFailures *prometheus.CounterVec
	// StaleServed counts tags served from cache because the upstream could not confirm them.
	StaleServed *prometheus.CounterVec
	// RequestDuration observes request latency by endpoint kind.
	RequestDuration *prometheus.HistogramVec
	// FillResumes counts fills that continued from bytes already on disk,
	// by upstream and cause (link: after a broken transfer; restart: a
	// partial left by an earlier process or fill).
	FillResumes *prometheus.CounterVec
	// FillRefetchedBytes counts bytes fetched again from an upstream that
	// had been received before (an upstream that ignored Range, or a
	// partial that failed its check): the waste.
	FillRefetchedBytes *prometheus.CounterVec
	// FillStalls counts upstream transfers dropped for sending nothing for
	// storage.fillStallTimeout, by upstream.
	FillStalls *prometheus.CounterVec
	// ClientStalls counts clients disconnected after waiting
	// storage.clientStallTimeout for a fill to make progress.
	ClientStalls prometheus.Counter
	// StoreBytes is the size of the content store at the last check.
	StoreBytes prometheus.Gauge
	// EvictedBytes and EvictedImages count what eviction removed.
	EvictedBytes  prometheus.Counter
	EvictedImages prometheus.Counter
	// DiskFull counts writes to the store that failed with ENOSPC.
	DiskFull prometheus.Counter

	// Offline mode (upstream.go): StaleRefused counts cached tags not
	// served because their last upstream confirmation is older than the
	// staleness limit, by upstream. The per-upstream reachability gauges
	// are read from the clients at scrape time (AddUpstream).
	StaleRefused *prometheus.CounterVec
	// Deltas are the layer-delta metrics (delta.go).
	Deltas Deltas
	// Signatures are the signature-policy metrics (signatures.go).
	Signatures Signatures

	upstreams *upstreamCollector
	prefetch  *prefetchCollector
}

// New builds and registers the collectors on a new registry, together with
// the Go runtime and process collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_edge_http_requests_total", Help: "Downstream HTTP requests by endpoint, method and status code.",
		}, []string{"endpoint", "method", "code"}),
		Cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_edge_cache_requests_total", Help: "Cache outcomes by endpoint and result (hit, miss, fill, stale, pass, delta, pending).",
		}, []string{"endpoint", "result"}),
		BytesServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_edge_served_bytes_total", Help: "Body bytes of successful responses (status below 400) sent to clients, by endpoint.",
		}, []string{"endpoint"}),
		UpstreamBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_edge_upstream_fetched_bytes_total", Help: "Blob and manifest bytes received from each upstream registry.",
		}, []string{"upstream"}),
		UpstreamRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_edge_upstream_requests_total", Help: "Operations the mirror sent to each upstream registry, by operation and result.",
		}, []string{"upstream", "op", "result"}),
		FillDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "registry_edge_fill_duration_seconds", Help: "Duration of blob fills from upstream, by result.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
		}, []string{"result"}),
		FillsInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "registry_edge_fills_in_flight", Help: "Blob fills from upstream running now.",
		}),
		FillFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_edge_fill_failures_total", Help: "Failed blob fills by reason (verify, upstream, not_found, io).",
		}, []string{"reason"}),
		StaleServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_edge_stale_tags_served_total", Help: "Tags answered from cache without upstream confirmation, by upstream.",
		}, []string{"upstream"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "registry_edge_http_request_duration_seconds", Help: "Downstream request duration by endpoint.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"endpoint"}),
		FillResumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_edge_fill_resumes_total", Help: "Blob fills continued from bytes already on disk, by upstream and cause (link, restart).",
		}, []string{"upstream", "cause"}),
		FillRefetchedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_edge_fill_refetched_bytes_total", Help: "Bytes fetched again from an upstream after they had already been received (waste), by upstream.",
		}, []string{"upstream"}),
		FillStalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_edge_fill_stalls_total", Help: "Upstream blob transfers dropped after sending nothing for storage.fillStallTimeout, by upstream.",
		}, []string{"upstream"}),
		ClientStalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "registry_edge_client_stalls_total", Help: "Clients disconnected after waiting storage.clientStallTimeout for a blob fill to make progress.",
		}),
	}
	m.StoreBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "registry_edge_store_bytes", Help: "Size of the content store (blobs and manifests) at the last check.",
	})
	m.EvictedBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "registry_edge_evicted_bytes_total", Help: "Bytes of content removed by eviction.",
	})
	m.EvictedImages = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "registry_edge_evicted_images_total", Help: "Image closures (or unreferenced blobs) removed by eviction.",
	})
	m.DiskFull = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "registry_edge_store_full_total", Help: "Writes to the store that failed because the disk was full; misses pass through uncached for a minute after each.",
	})
	reg.MustRegister(m.FillResumes, m.FillRefetchedBytes, m.FillStalls, m.ClientStalls, m.StoreBytes, m.EvictedBytes, m.EvictedImages, m.DiskFull)
	m.registerOffline(reg)
	m.registerDeltas(reg)
	m.registerSignatures(reg)
	m.prefetch = newPrefetchCollector()
	reg.MustRegister(m.prefetch)
	reg.MustRegister(m.Requests, m.Cache, m.BytesServed, m.UpstreamBytes, m.UpstreamRequests,
		m.FillDuration, m.FillsInFlight, m.FillFailures, m.StaleServed, m.RequestDuration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
