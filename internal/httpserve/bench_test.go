package httpserve_test

import (
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/registry-edge/registry-edge/internal/httpserve"
	"github.com/registry-edge/registry-edge/internal/proxy"
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

// BenchmarkColdMissFirstByte is the time a client waits for the first body
// byte of an uncached 256 KiB blob through the mirror, next to the same
// request made straight to the mirror's upstream (a fake that answers at
// once, on loopback), both on a connection the client opened before. The
// difference is the mirror's own cost on the path of a cold miss: routing,
// the store's lookups, opening the download, the upstream request and
// handing the first bytes to the client (benchmarks/run.sh measures the
// same against a real registry). Reported as us/first-byte.
func BenchmarkColdMissFirstByte(b *testing.B) {
	benchColdMiss(b, 1)
}

// BenchmarkColdMissFanInFirstByte is BenchmarkColdMissFirstByte with 64
// clients asking for the blob at once, each on a connection it opened
// before: the time until the first of them has its first body byte, the
// figure benchmarks/run.sh's fan-in reports against a real registry.
// "direct" sends the 64 requests to the fake upstream itself.
func BenchmarkColdMissFanInFirstByte(b *testing.B) {
	benchColdMiss(b, 64)
}

// benchColdMiss has n clients, each on its own connection opened before,
// ask at once for a new 256 KiB blob, through the mirror and straight from
// its upstream, and reports the first client's time to its first body byte.
func benchColdMiss(b *testing.B, n int) {
	const size = 256 << 10
	for _, via := range []string{"direct", "mirror"} {
		b.Run(via, func(b *testing.B) {
			m := newMirror(b, func(o *proxy.Options) { o.Deltas, o.NegotiateDeltas = true, true })
			base := m.srv.URL
			if via == "direct" {
				base = m.upstream.URL
			}
			cs := make([]*http.Client, n)
			for i := range cs {
				// One transport per client: each keeps its own connection,
				// opened here.
				tr := &http.Transport{}
				defer tr.CloseIdleConnections()
				cs[i] = &http.Client{Transport: tr}
				resp, err := cs[i].Get(base + "/v2/")
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			blob := make([]byte, size)
			var total time.Duration
			for b.Loop() {
				b.StopTimer()
				rand.Read(blob)
				d := m.fake.AddBlob(blob).Digest
				m.fake.LinkBlob("app", d)
				url := base + blobPath("app", d)
				firsts := make(chan time.Duration, n)
				errs := make(chan error, n)
				release := make(chan struct{})
				var ready sync.WaitGroup
				ready.Add(n)
				for _, c := range cs {
					go func() {
						ready.Done()
						<-release
						errs <- firstByte(c, url, size, firsts)
					}()
				}
				ready.Wait()
				b.StartTimer()
				close(release)
				for range n {
					if err := <-errs; err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				close(firsts)
				first := time.Duration(-1)
				for f := range firsts {
					if first < 0 || f < first {
						first = f
					}
				}
				total += first
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Microseconds())/float64(b.N), "us/first-byte")
		})
	}
}

// firstByte GETs url with c, sends the time to its first body byte to
// firsts, and reads the rest, checking the status and the size.
func firstByte(c *http.Client, url string, size int64, firsts chan<- time.Duration) error {
	start := time.Now()
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var one [1]byte
	if _, err := io.ReadFull(resp.Body, one[:]); err != nil {
		return err
	}
	firsts <- time.Since(start)
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && (resp.StatusCode != http.StatusOK || n+1 != size) {
		err = fmt.Errorf("status %d, %d bytes", resp.StatusCode, n+1)
	}
	return err
}
