// flaky is a TCP relay that imitates a bad cellular uplink between a mirror and its upstream.
//
// Copied from shared/bench/flaky (the reference harness) and extended for benchmarks/resume.sh:
// every setting can be changed while it runs (POST /config on the stats address), and it can
//
//   - limit the upstream->client byte rate per connection (-rate) and for the whole link, shared by
//     all connections (-link-rate), so the link behaves like one modem and not N of them;
//   - cut every connection after N upstream->client bytes of that connection (-cut-every, -max-cuts);
//   - cut once, at byte N of the link's total upstream->client bytes (-cut-at), e.g. "the link broke
//     at 100 MiB";
//   - cut by closing (FIN), by reset (RST), or by stalling: stop forwarding on that connection and
//     leave it open, as a modem that lost its carrier does (-cut-mode close|reset|stall);
//   - blackhole the link (-blackhole): nothing is forwarded in either direction on any connection,
//     and new connections are accepted but neither answered nor forwarded, until it is lifted
//     (then held connections carry on, like TCP after a link that came back);
//   - count the bytes that crossed the link in each direction (what a metered uplink bills).
//
// Stats and control (on -stats, JSON):
//
//	GET    /        counters and current settings
//	DELETE /        reset the counters (and re-arm -cut-at)
//	POST   /config?rate=&link_rate=&cut_every=&max_cuts=&cut_at=&cut_mode=&blackhole=0|1
//	                change the given settings (the others are kept), answer like GET /
//
// Loopback tool: it relays to -to and nowhere else.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

const (
	modeClose = iota
	modeReset
	modeStall
)

var modeNames = []string{"close", "reset", "stall"}

func parseMode(s string) (int64, error) {
	for i, n := range modeNames {
		if n == s {
			return int64(i), nil
		}
	}
	return 0, fmt.Errorf("cut mode %q: want close, reset or stall", s)
}

// relay holds the settings (atomics: changed at run time) and the counters.
type relay struct {
	to string

	rate     atomic.Int64 // per connection, upstream->client bytes/s, 0 = unlimited
	linkRate atomic.Int64 // whole link, upstream->client bytes/s, 0 = unlimited
	cutEvery atomic.Int64 // per connection, 0 = never
	maxCuts  atomic.Int64 // cut-every stops after this many cuts, -1 = unlimited
	cutAt    atomic.Int64 // cut once when the link total reaches this, 0 = off
	cutMode  atomic.Int64

	conns   atomic.Int64 // accepted since the last reset
	active  atomic.Int64 // open now
	held    atomic.Int64 // connections waiting for a blackhole to lift before dialing
	cuts    atomic.Int64 // cuts since the last reset (every kind)
	down    atomic.Int64 // upstream -> client bytes since the last reset
	up      atomic.Int64 // client -> upstream bytes since the last reset
	cutAtOn atomic.Bool  // -cut-at armed

	mu       sync.Mutex
	bh       bool          // blackhole on
	bhOpen   chan struct{} // closed when the blackhole is lifted (replaced when it goes on)
	linkFree time.Time     // link pacer: when the link is free again
}

func newRelay(to string) *relay {
	r := &relay{to: to, bhOpen: make(chan struct{})}
	close(r.bhOpen)
	r.maxCuts.Store(-1)
	return r
}

func (r *relay) setBlackhole(on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if on == r.bh {
		return
	}
	r.bh = on
	if on {
		r.bhOpen = make(chan struct{})
	} else {
		close(r.bhOpen)
	}
}

// gate blocks while the link is blackholed. It returns false if done is closed first.
func (r *relay) gate(done <-chan struct{}) bool {
	r.mu.Lock()
	ch := r.bhOpen
	r.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-done:
		return false
	}
}

// pace reserves n bytes of the shared link and returns how long to wait before sending them. The
// reservations accumulate (the link's clock runs ahead of now), so a caller that skips a short wait
// (see minSleep) pays it with the next one: the average rate stays exact.
func (r *relay) pace(n int) time.Duration {
	lr := r.linkRate.Load()
	if lr <= 0 {
		return 0
	}
	d := time.Duration(float64(n) / float64(lr) * float64(time.Second))
	r.mu.Lock()
	now := time.Now()
	// An idle link does not save up more than maxCredit: that much lag behind now is kept, so a
	// sleep that overshoots (they do, on a loaded VM) is made up by the next chunks.
	if floor := now.Add(-maxCredit); r.linkFree.Before(floor) {
		r.linkFree = floor
	}
	r.linkFree = r.linkFree.Add(d)
	wait := r.linkFree.Sub(now)
	r.mu.Unlock()
	return wait
}

// minSleep: shorter waits are skipped (and paid by a later one). A sleep costs about a millisecond on
// a loaded VM; sleeping for every 4 KiB chunk would cap a 20 MB/s link at a few MB/s.
const minSleep = 2 * time.Millisecond

// maxCredit is the burst an idle link may send at once (20 ms of its rate).
const maxCredit = 20 * time.Millisecond

// chunkFor is the read size for a paced connection: about 1/200 s of the rate, 4-64 KiB.
func chunkFor(rate int64) int {
	c := rate / 200
	if c < 4<<10 {
		c = 4 << 10
	}
	if c > 64<<10 {
		c = 64 << 10
	}
	return int(c)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:6000", "address to accept on")
	to := flag.String("to", "127.0.0.1:5000", "upstream address")
	rate := flag.Int64("rate", 0, "upstream->client bytes per second per connection (0 = unlimited)")
	linkRate := flag.Int64("link-rate", 0, "upstream->client bytes per second for the whole link, shared by all connections (0 = unlimited)")
	cutEvery := flag.Int64("cut-every", 0, "cut a connection after this many upstream->client bytes (0 = never)")
	maxCuts := flag.Int64("max-cuts", -1, "stop cutting (-cut-every) after this many cuts (-1 = unlimited)")
	cutAt := flag.Int64("cut-at", 0, "cut once, when the link's total upstream->client bytes reach this (0 = off)")
	cutMode := flag.String("cut-mode", "close", "how to cut: close (FIN), reset (RST) or stall (stop forwarding, keep it open)")
	blackhole := flag.Bool("blackhole", false, "start with the link blackholed")
	statsAddr := flag.String("stats", "127.0.0.1:6001", "address for the JSON stats and control endpoint")
	flag.Parse()

	r := newRelay(*to)
	r.rate.Store(*rate)
	r.linkRate.Store(*linkRate)
	r.cutEvery.Store(*cutEvery)
	r.maxCuts.Store(*maxCuts)
	r.cutAt.Store(*cutAt)
	r.cutAtOn.Store(*cutAt > 0)
	m, err := parseMode(*cutMode)
	if err != nil {
		log.Fatal(err)
	}
	r.cutMode.Store(m)
	r.setBlackhole(*blackhole)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	sl, err := net.Listen("tcp", *statsAddr)
	if err != nil {
		log.Fatal(err)
	}
	go func() { log.Fatal(http.Serve(sl, r.handler())) }()
	log.Printf("flaky: %s -> %s, stats on %s", ln.Addr(), *to, sl.Addr())
	log.Fatal(r.serve(ln))
}

func (r *relay) serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		r.conns.Add(1)
		r.active.Add(1)
		go func() { defer r.active.Add(-1); r.relay(c) }()
	}
}

func (r *relay) relay(c net.Conn) {
	defer c.Close()
	var once sync.Once
	done := make(chan struct{})
	var u net.Conn
	var umu sync.Mutex
	stop := func() {
		once.Do(func() {
			close(done)
			c.Close()
			umu.Lock()
			if u != nil {
				u.Close()
			}
			umu.Unlock()
		})
	}
	// While the link is blackholed a new connection is accepted (the listener cannot drop a SYN) but
	// nothing is dialed or answered until the blackhole is lifted.
	r.held.Add(1)
	ok := r.gate(done)
	r.held.Add(-1)
	if !ok {
		return
	}
	uc, err := net.DialTimeout("tcp", r.to, 5*time.Second)
	if err != nil {
		return
	}
	umu.Lock()
	u = uc
	umu.Unlock()
	defer uc.Close()

	go func() { // client -> upstream
		buf := make([]byte, 16<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if !r.gate(done) {
					break
				}
				w, werr := uc.Write(buf[:n])
				r.up.Add(int64(w))
				if werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		stop()
	}()

	buf := make([]byte, 64<<10)
	var sent int64
	start := time.Now()
	for {
		chunk := buf[:16<<10]
		rt, lr := r.rate.Load(), r.linkRate.Load()
		if rt > 0 || lr > 0 {
			slowest := rt
			if slowest <= 0 || (lr > 0 && lr < slowest) {
				slowest = lr
			}
			chunk = buf[:chunkFor(slowest)]
		}
		ce := r.cutEvery.Load()
		everyOn := ce > 0 && (r.maxCuts.Load() < 0 || r.cuts.Load() < r.maxCuts.Load())
		if everyOn {
			if left := ce - sent%ce; int64(len(chunk)) > left {
				chunk = chunk[:left]
			}
		}
		if r.cutAtOn.Load() {
			if left := r.cutAt.Load() - r.down.Load(); left > 0 && int64(len(chunk)) > left {
				chunk = chunk[:left]
			}
		}
		n, err := uc.Read(chunk)
		if n > 0 {
			if !r.gate(done) {
				break
			}
			if rt := r.rate.Load(); rt > 0 {
				want := time.Duration(float64(sent+int64(n)) / float64(rt) * float64(time.Second))
				if d := want - time.Since(start); d >= minSleep {
					time.Sleep(d)
				}
			}
			if d := r.pace(n); d >= minSleep {
				time.Sleep(d)
			}
			w, werr := c.Write(chunk[:n])
			sent += int64(w)
			total := r.down.Add(int64(w))
			if werr != nil {
				break
			}
			cut := false
			if everyOn && sent%ce == 0 {
				cut = true
			}
			if r.cutAtOn.Load() && total >= r.cutAt.Load() && r.cutAtOn.CompareAndSwap(true, false) {
				cut = true
			}
			if cut {
				r.cuts.Add(1)
				r.cut(c, done)
				break
			}
		}
		if err != nil {
			break
		}
	}
	stop()
	<-done
}

// cut ends a connection the configured way. stall returns only when the client gives up (its side
// closes) or the process ends.
func (r *relay) cut(c net.Conn, done <-chan struct{}) {
	switch r.cutMode.Load() {
	case modeReset:
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	case modeStall:
		<-done // the client->upstream goroutine calls stop() when the client closes
	}
}

type statsDoc struct {
	Conns     int64  `json:"conns"`
	Active    int64  `json:"active"`
	Held      int64  `json:"held"`
	Cuts      int64  `json:"cuts"`
	Down      int64  `json:"down_bytes"`
	Up        int64  `json:"up_bytes"`
	Rate      int64  `json:"rate"`
	LinkRate  int64  `json:"link_rate"`
	CutEvery  int64  `json:"cut_every"`
	MaxCuts   int64  `json:"max_cuts"`
	CutAt     int64  `json:"cut_at"`
	CutAtOn   bool   `json:"cut_at_armed"`
	CutMode   string `json:"cut_mode"`
	Blackhole bool   `json:"blackhole"`
}

func (r *relay) doc() statsDoc {
	r.mu.Lock()
	bh := r.bh
	r.mu.Unlock()
	return statsDoc{
		Conns: r.conns.Load(), Active: r.active.Load(), Held: r.held.Load(), Cuts: r.cuts.Load(),
		Down: r.down.Load(), Up: r.up.Load(), Rate: r.rate.Load(), LinkRate: r.linkRate.Load(),
		CutEvery: r.cutEvery.Load(), MaxCuts: r.maxCuts.Load(), CutAt: r.cutAt.Load(),
		CutAtOn: r.cutAtOn.Load(), CutMode: modeNames[r.cutMode.Load()], Blackhole: bh,
	}
}

func (r *relay) reset() {
	r.conns.Store(0)
	r.cuts.Store(0)
	r.down.Store(0)
	r.up.Store(0)
	r.cutAtOn.Store(r.cutAt.Load() > 0)
}

// configure applies the query parameters that are present.
func (r *relay) configure(q map[string][]string) error {
	get := func(k string) (string, bool) {
		v, ok := q[k]
		if !ok || len(v) == 0 {
			return "", false
		}
		return v[len(v)-1], true
	}
	ints := map[string]*atomic.Int64{"rate": &r.rate, "link_rate": &r.linkRate, "cut_every": &r.cutEvery, "max_cuts": &r.maxCuts, "cut_at": &r.cutAt}
	vals := map[string]int64{}
	for k := range ints {
		if s, ok := get(k); ok {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil || (v < 0 && k != "max_cuts") {
				return fmt.Errorf("%s=%q: want a number >= 0", k, s)
			}
			vals[k] = v
		}
	}
	var mode int64 = -1
	if s, ok := get("cut_mode"); ok {
		m, err := parseMode(s)
		if err != nil {
			return err
		}
		mode = m
	}
	bh := -1
	if s, ok := get("blackhole"); ok {
		switch s {
		case "1", "true", "on":
			bh = 1
		case "0", "false", "off":
			bh = 0
		default:
			return errors.New("blackhole: want 0 or 1")
		}
	}
	for k, v := range vals {
		ints[k].Store(v)
	}
	if _, ok := vals["cut_at"]; ok {
		r.cutAtOn.Store(vals["cut_at"] > 0)
	}
	if mode >= 0 {
		r.cutMode.Store(mode)
	}
	if bh >= 0 {
		r.setBlackhole(bh == 1)
	}
	return nil
}

func (r *relay) handler() http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(r.doc())
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		switch req.Method {
		case http.MethodGet, http.MethodHead:
		case http.MethodDelete:
			r.reset()
		default:
			http.Error(w, "GET, DELETE", http.StatusMethodNotAllowed)
			return
		}
		reply(w)
	})
	mux.HandleFunc("/config", func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost {
			http.Error(w, "POST", http.StatusMethodNotAllowed)
			return
		}
		if err := r.configure(req.URL.Query()); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		reply(w)
	})
	return mux
}
