package httpserve_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/registry-edge/registry-edge/internal/httpserve"
)

// discardWriter is a ResponseWriter that keeps nothing, so that a benchmark
// measures the handler and not a recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

// BenchmarkCachedSmallBlob is the handler's cost of a cache hit of a 4 KiB
// blob (served from memory), access log on: the hot path of
// benchmarks/run.sh's small-blob test without the network.
func BenchmarkCachedSmallBlob(b *testing.B) {
	m := newMirror(b)
	path, _ := m.cached(4 << 10)
	h := httpserve.New(m.proxy, httpserve.Options{Metrics: m.metrics, AccessLog: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.RemoteAddr = "192.0.2.1:40000"
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(&discardWriter{h: make(http.Header, 8)}, req)
	}
}
