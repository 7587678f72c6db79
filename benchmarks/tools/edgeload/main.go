// edgeload: a small, bounded HTTP load tool for registry mirrors (wrk cannot do HEAD:
// it waits for a body after a HEAD response with Content-Length).
//
// Copied from shared/bench/peer/tools/edgeload (the reference harness) and adapted for
// registry-edge's benchmarks/run.sh: it also measures the time to the first BODY byte
// (fb_ms; ttfb_ms is the time to the response headers, which a mirror may send before
// it has any byte of a cold blob), and -once prints an ONCE summary line.
//
//	edgeload -url URL [-method GET|HEAD] [-c 16] [-d 10s] [-n 0] [-H 'K: V' ...]
//	-once : every one of the -c workers sends exactly ONE request, all released at the
//	        same instant (used for the cold-miss / coalescing test); prints per-request
//	        status, bytes, time-to-first-byte and total time, then one ONCE line.
//	-warm : with -once, each worker first opens its own connection and sends GET /v2/ on it
//	        (as every registry client does before it asks for a blob), then waits for the
//	        release; the timed request reuses that connection, so the times start at the
//	        request, not at a burst of 64 TCP handshakes on the same cores.
//
// Always bounded: stops at -d or after -n requests (whichever first); loopback targets only.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type hdrs []string

func (h *hdrs) String() string     { return strings.Join(*h, ",") }
func (h *hdrs) Set(v string) error { *h = append(*h, v); return nil }

type res struct {
	status          int
	bytes           int64
	ttfb, fb, total time.Duration
	err             error
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func main() {
	url := flag.String("url", "", "target URL")
	method := flag.String("method", "GET", "GET or HEAD")
	conc := flag.Int("c", 16, "concurrent workers (connections)")
	dur := flag.Duration("d", 10*time.Second, "duration bound")
	maxN := flag.Int64("n", 0, "max requests in total (0 = only the duration bound)")
	once := flag.Bool("once", false, "each worker sends exactly one request, released together")
	expect := flag.Int64("expect-bytes", -1, "with -once: body size a complete response has (counted in ONCE ok=)")
	warm := flag.Bool("warm", false, "with -once: each worker opens its own connection with GET /v2/ before the release")
	var hs hdrs
	flag.Var(&hs, "H", "request header 'Name: value' (repeatable)")
	flag.Parse()
	if *url == "" || !(strings.HasPrefix(*url, "http://127.") || strings.HasPrefix(*url, "http://localhost") || strings.HasPrefix(*url, "http://10.200.")) {
		fmt.Fprintln(os.Stderr, "need -url http://127.x... (loopback) or a test-netns address 10.200.x")
		os.Exit(2)
	}
	if *warm && !*once {
		fmt.Fprintln(os.Stderr, "-warm needs -once")
		os.Exit(2)
	}
	pingURL := *url
	if i := strings.Index(pingURL, "/v2/"); i >= 0 {
		pingURL = pingURL[:i] + "/v2/"
	}
	newClient := func() *http.Client {
		tr := &http.Transport{MaxIdleConnsPerHost: *conc, MaxConnsPerHost: *conc, DisableCompression: true}
		return &http.Client{Transport: tr, Timeout: *dur + 30*time.Second}
	}
	shared := newClient()
	do := func(cl *http.Client) res {
		req, _ := http.NewRequest(*method, *url, nil)
		req.Header.Set("User-Agent", "edgeload/1.0") // distinct from the mirrors' user agents in upstream logs
		for _, h := range hs {
			if k, v, ok := strings.Cut(h, ":"); ok {
				req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
			}
		}
		t0 := time.Now()
		resp, err := cl.Do(req)
		if err != nil {
			return res{err: err, total: time.Since(t0)}
		}
		ttfb := time.Since(t0)
		var fb time.Duration
		buf := make([]byte, 32<<10)
		var n int64
		for {
			k, rerr := resp.Body.Read(buf)
			if k > 0 && n == 0 {
				fb = time.Since(t0)
			}
			n += int64(k)
			if rerr == io.EOF {
				err = nil
				break
			}
			if rerr != nil {
				err = rerr
				break
			}
		}
		resp.Body.Close()
		return res{status: resp.StatusCode, bytes: n, ttfb: ttfb, fb: fb, total: time.Since(t0), err: err}
	}
	var mu sync.Mutex
	var all []res
	var sent atomic.Int64
	deadline := time.Now().Add(*dur)
	var wg, ready sync.WaitGroup
	gate := make(chan struct{})
	for i := 0; i < *conc; i++ {
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			cl := shared
			if *warm {
				// One connection per worker, opened and used once before the release.
				cl = newClient()
				ping, _ := http.NewRequest(http.MethodGet, pingURL, nil)
				ping.Header.Set("User-Agent", "edgeload/1.0")
				if resp, err := cl.Do(ping); err != nil {
					fmt.Fprintln(os.Stderr, "warm-up:", err)
				} else {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
			ready.Done()
			<-gate
			local := []res{}
			for time.Now().Before(deadline) {
				if *maxN > 0 && sent.Add(1) > *maxN {
					break
				}
				local = append(local, do(cl))
				if *once {
					break
				}
			}
			mu.Lock()
			all = append(all, local...)
			mu.Unlock()
		}()
	}
	ready.Wait()
	start := time.Now()
	deadline = start.Add(*dur)
	close(gate)
	wg.Wait()
	el := time.Since(start).Seconds()
	var bytes int64
	non2xx, errs := 0, 0
	lat := make([]float64, 0, len(all))
	for _, r := range all {
		bytes += r.bytes
		if r.err != nil {
			errs++
		} else if r.status < 200 || r.status > 299 {
			non2xx++
		}
		lat = append(lat, ms(r.total))
	}
	sort.Float64s(lat)
	pct := func(v []float64, p float64) float64 {
		if len(v) == 0 {
			return 0
		}
		return v[int(p*float64(len(v)-1))]
	}
	if *once {
		var fbs []float64
		ok := 0
		for i, r := range all {
			e := ""
			if r.err != nil {
				e = r.err.Error()
			}
			fmt.Printf("req %2d status=%d bytes=%d ttfb_ms=%.1f fb_ms=%.1f total_ms=%.1f %s\n", i, r.status, r.bytes,
				ms(r.ttfb), ms(r.fb), ms(r.total), e)
			if r.err == nil && r.status == 200 && (*expect < 0 || r.bytes == *expect) {
				ok++
			}
			if r.bytes > 0 {
				fbs = append(fbs, ms(r.fb))
			}
		}
		sort.Float64s(fbs)
		fmt.Printf("ONCE n=%d ok=%d fb_min_ms=%.2f fb_p50_ms=%.2f fb_max_ms=%.2f total_min_ms=%.1f total_p50_ms=%.1f total_max_ms=%.1f wall_s=%.2f\n",
			len(all), ok, pct(fbs, 0), pct(fbs, 0.5), pct(fbs, 1), pct(lat, 0), pct(lat, 0.5), pct(lat, 1), el)
	}
	fmt.Printf("RESULT reqs=%d secs=%.2f rps=%.1f MBps=%.1f p50ms=%.2f p99ms=%.2f non2xx=%d sockerr=%d\n",
		len(all), el, float64(len(all))/el, float64(bytes)/el/1e6, pct(lat, 0.5), pct(lat, 0.99), non2xx, errs)
}
