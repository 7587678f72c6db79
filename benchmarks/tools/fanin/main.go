// fanin: cold-miss fan-in from many simulated sites, for benchmarks/replicas.sh.
//
//	fanin -c 16 [-d 180s] URL...
//
// Every URL is a blob URL ending in its digest (/v2/<name>/blobs/sha256:<hex>). For each URL, -c
// clients ("sites") GET it; all len(URL) x c requests are released at the same instant (a fleet
// pulling a new image: every site asks for every layer at once). Each client hashes the body while
// reading it, so a response counts as ok only if it is 200 and its sha256 is the digest in the URL.
// Prints one "req" line per request, one "blob" line per URL, then one FANIN summary line.
// Bounded by -d; loopback targets only. Standard library only (its own go.mod, like edgeload).
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

type result struct {
	url       string
	client    int
	status    int
	bytes     int64
	fb, total time.Duration
	digestOK  bool
	err       error
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func main() {
	clients := flag.Int("c", 16, "clients per URL")
	dur := flag.Duration("d", 180*time.Second, "bound for every request")
	flag.Parse()
	urls := flag.Args()
	if len(urls) == 0 || *clients < 1 {
		fmt.Fprintln(os.Stderr, "usage: fanin -c N [-d 180s] URL...")
		os.Exit(2)
	}
	for _, u := range urls {
		if !strings.HasPrefix(u, "http://127.") && !strings.HasPrefix(u, "http://localhost") {
			fmt.Fprintf(os.Stderr, "fanin: %s: loopback URLs only\n", u)
			os.Exit(2)
		}
		if _, d, ok := strings.Cut(u, "/blobs/"); !ok || !strings.HasPrefix(d, "sha256:") {
			fmt.Fprintf(os.Stderr, "fanin: %s: not a /blobs/sha256:... URL\n", u)
			os.Exit(2)
		}
	}
	n := len(urls) * *clients
	// One connection per client, as separate sites would have.
	tr := &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n, DisableCompression: true}
	cl := &http.Client{Transport: tr, Timeout: *dur}
	get := func(url string, client int) result {
		r := result{url: url, client: client}
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			r.err = err
			return r
		}
		req.Header.Set("User-Agent", "fanin/1.0") // distinct from registry-edge's in central's log
		t0 := time.Now()
		resp, err := cl.Do(req)
		if err != nil {
			r.err, r.total = err, time.Since(t0)
			return r
		}
		defer resp.Body.Close()
		r.status = resp.StatusCode
		h := sha256.New()
		buf := make([]byte, 64<<10)
		for {
			k, rerr := resp.Body.Read(buf)
			if k > 0 {
				if r.bytes == 0 {
					r.fb = time.Since(t0)
				}
				h.Write(buf[:k])
				r.bytes += int64(k)
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				r.err = rerr
				break
			}
		}
		r.total = time.Since(t0)
		want := url[strings.LastIndex(url, "/blobs/")+len("/blobs/sha256:"):]
		r.digestOK = r.err == nil && hex.EncodeToString(h.Sum(nil)) == want
		return r
	}

	results := make([]result, n)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i, u := range urls {
		for c := 0; c < *clients; c++ {
			wg.Add(1)
			go func(slot int, u string, c int) {
				defer wg.Done()
				<-gate
				results[slot] = get(u, c)
			}(i**clients+c, u, c)
		}
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	wall := time.Since(start)

	ok := 0
	var bytes int64
	var fbs, totals []float64
	perURL := map[string][2]int{}
	for _, r := range results {
		e := ""
		if r.err != nil {
			e = r.err.Error()
		}
		good := r.status == http.StatusOK && r.digestOK
		fmt.Printf("req blob=%s client=%d status=%d bytes=%d sha256_ok=%t fb_ms=%.1f total_ms=%.1f %s\n",
			r.url[strings.LastIndex(r.url, "/")+1:], r.client, r.status, r.bytes, good, ms(r.fb), ms(r.total), e)
		c := perURL[r.url]
		c[1]++
		if good {
			ok++
			c[0]++
		}
		perURL[r.url] = c
		bytes += r.bytes
		if r.bytes > 0 {
			fbs = append(fbs, ms(r.fb))
		}
		totals = append(totals, ms(r.total))
	}
	for _, u := range urls {
		fmt.Printf("blob %s ok=%d of=%d\n", u[strings.LastIndex(u, "/")+1:], perURL[u][0], perURL[u][1])
	}
	sort.Float64s(fbs)
	sort.Float64s(totals)
	pct := func(v []float64, p float64) float64 {
		if len(v) == 0 {
			return 0
		}
		return v[int(p*float64(len(v)-1))]
	}
	fmt.Printf("FANIN n=%d ok=%d bytes=%d fb_p50_ms=%.1f fb_max_ms=%.1f total_p50_ms=%.1f total_max_ms=%.1f wall_s=%.2f MBps=%.1f\n",
		n, ok, bytes, pct(fbs, 0.5), pct(fbs, 1), pct(totals, 0.5), pct(totals, 1), wall.Seconds(), float64(bytes)/wall.Seconds()/1e6)
	if ok != n {
		os.Exit(1)
	}
}
