package metrics

import "github.com/prometheus/client_golang/prometheus"

// Signatures are the signature-policy metrics (issue #6).
type Signatures struct {
	// Verifications counts signature verifications the mirror ran, by
	// rule and reason (verified, a sigpolicy failure reason, or error:
	// signatures not fetched).
	Verifications *prometheus.CounterVec
	// Duration observes how long verifications took (signatures fetched
	// and checked).
	Duration prometheus.Histogram
	// Cache counts verdict lookups, by result: hit (a recorded verdict or a
	// verified index decided) or miss (verified now).
	Cache *prometheus.CounterVec
	// Denials counts requests refused with 403 by an enforce rule, by rule
	// and kind (manifest, blob, unverifiable).
	Denials *prometheus.CounterVec
	// Warnings counts manifests served without a valid signature under a
	// warn rule.
	Warnings *prometheus.CounterVec
}

func (m *Metrics) registerSignatures(reg *prometheus.Registry) {
	m.Signatures = Signatures{
		Verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_edge_signature_verifications_total", Help: "Signature verifications run, by policy rule and reason (verified, no_signature, wrong_key, identity_mismatch, bad_tlog, missing_annotation, invalid_signature, not_covered, error).",
		}, []string{"rule", "reason"}),
		Duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "registry_edge_signature_verification_duration_seconds", Help: "Time to verify a manifest's signatures (fetching them included).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}),
		Cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_edge_signature_verdict_cache_total", Help: "Signature verdict lookups, by result (hit: a recorded verdict or a verified index decided; miss: verified now).",
		}, []string{"result"}),
		Denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_edge_signature_denials_total", Help: "Requests refused (403) by an enforce rule of the signature policy, by rule and kind (manifest, blob, unverifiable).",
		}, []string{"rule", "kind"}),
		Warnings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_edge_signature_warnings_total", Help: "Manifests served without a valid signature under a warn rule, by rule.",
		}, []string{"rule"}),
	}
	reg.MustRegister(m.Signatures.Verifications, m.Signatures.Duration, m.Signatures.Cache, m.Signatures.Denials, m.Signatures.Warnings)
}
