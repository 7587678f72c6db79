package httpserve_test

import (
	"testing"

	"github.com/registry-edge/registry-edge/internal/proxy"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

// The API version check of a tier that serves deltas says so, as its
// manifests do: a lower tier restarted with the manifest of its pull
// stored asks nothing else of it before the layers, and must know then
// that it may negotiate a delta (TestSiteKilledMidDeltaRebuildsAfterRestart
// in internal/e2e runs the whole case).
func TestAPIVersionCheckSaysDeltasAreServed(t *testing.T) {
	for _, deltas := range []bool{true, false} {
		m := newMirror(t, func(o *proxy.Options) { o.Deltas = deltas })
		resp, _ := m.get("GET", "/v2/")
		if got := resp.Header.Get(upstream.HeaderDeltas) != ""; got != deltas {
			t.Errorf("deltas %v: GET /v2/ has %s %q", deltas, upstream.HeaderDeltas, resp.Header.Get(upstream.HeaderDeltas))
		}
	}
}
