package metrics

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// UpstreamHealth is what the mirror knows about one upstream's
// reachability. AddUpstream reads it at every scrape, so the request path
// pays nothing for these metrics.
type UpstreamHealth struct {
	// LastContact is when the upstream last answered, with any status;
	// zero if it never did since the process started.
	LastContact time.Time
	// BreakerState is the circuit breaker state: 0 closed, 1 open,
	// 2 half-open (one probe in flight).
	BreakerState int
	// Refused counts requests the open breaker refused without contacting
	// the upstream. It must never decrease.
	Refused uint64
}

// AddUpstream makes the upstream collectors report the upstream name,
// calling health at every scrape. health must be safe for concurrent use.
// Adding a name twice replaces its source.
func (m *Metrics) AddUpstream(name string, health func() UpstreamHealth) {
	m.upstreams.add(name, health)
}

func (m *Metrics) registerOffline(reg *prometheus.Registry) {
	m.StaleRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "registry_edge_stale_tags_refused_total",
		Help: "Cached tags not served because the upstream could not confirm them and their last confirmation is older than the staleness limit, by upstream.",
	}, []string{"upstream"})
	m.upstreams = &upstreamCollector{
		lastContact: prometheus.NewDesc("registry_edge_upstream_last_contact_timestamp_seconds",
			"Unix time at which the upstream last answered a request, with any status; 0 if it has not since the process started.",
			[]string{"upstream"}, nil),
		state: prometheus.NewDesc("registry_edge_upstream_breaker_state",
			"Circuit breaker state of the upstream: 0 closed, 1 open, 2 half-open.",
			[]string{"upstream"}, nil),
		refused: prometheus.NewDesc("registry_edge_upstream_breaker_refused_total",
			"Requests to the upstream refused at once by its open circuit breaker.",
			[]string{"upstream"}, nil),
		sources: map[string]func() UpstreamHealth{},
	}
	reg.MustRegister(m.StaleRefused, m.upstreams)
}

// upstreamCollector reports UpstreamHealth of every added upstream.
type upstreamCollector struct {
	lastContact, state, refused *prometheus.Desc

	mu      sync.Mutex
	sources map[string]func() UpstreamHealth
}

func (c *upstreamCollector) add(name string, health func() UpstreamHealth) {
	c.mu.Lock()
	c.sources[name] = health
	c.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (c *upstreamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lastContact
	ch <- c.state
	ch <- c.refused
}

// Collect implements prometheus.Collector.
func (c *upstreamCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	names := make([]string, 0, len(c.sources))
	for n := range c.sources {
		names = append(names, n)
	}
	slices.Sort(names)
	sources := make([]func() UpstreamHealth, len(names))
	for i, n := range names {
		sources[i] = c.sources[n]
	}
	c.mu.Unlock()
	for i, name := range names {
		h := sources[i]()
		last := 0.0
		if !h.LastContact.IsZero() {
			last = float64(h.LastContact.UnixNano()) / 1e9
		}
		ch <- prometheus.MustNewConstMetric(c.lastContact, prometheus.GaugeValue, last, name)
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, float64(h.BreakerState), name)
		ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(h.Refused), name)
	}
}
