package metrics

import "github.com/prometheus/client_golang/prometheus"

// Signatures are the signature-policy metrics (issue #6).
type Signatures struct {
	// Verifications counts signature verifications the mirror ran, by
	// rule and result (verified, failed, error: signatures not fetched).
	Verifications *prometheus.CounterVec
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
			Name: "registry_edge_signature_verifications_total", Help: "Signature verifications run, by policy rule and result (verified, failed, error).",
		}, []string{"rule", "result"}),
		Denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_edge_signature_denials_total", Help: "Requests refused (403) by an enforce rule of the signature policy, by rule and kind (manifest, blob, unverifiable).",
		}, []string{"rule", "kind"}),
		Warnings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_edge_signature_warnings_total", Help: "Manifests served without a valid signature under a warn rule, by rule.",
		}, []string{"rule"}),
	}
	reg.MustRegister(m.Signatures.Verifications, m.Signatures.Denials, m.Signatures.Warnings)
}
