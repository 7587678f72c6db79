package flakyrelay

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// guard bounds every blocking read and write in these tests, so that a
// relay bug fails a test instead of hanging it. Nothing asserts on it.
const guard = 5 * time.Second

// silence is how long a test listens to a link that must stay silent. A
// relay that works forwards nothing however long it is; a short value only
// risks missing a bug, never a false failure.
const silence = 50 * time.Millisecond

func TestForward(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	r := New(t, up.addr())
	down, upPayload := random(t, 100<<10), random(t, 50<<10)

	cc := dial(t, r.Addr())
	sc := up.next(t)
	received := make(chan []byte, 1)
	up.do(func() {
		sc.Write(down)
		sc.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(sc)
		received <- b
	})
	up.do(func() {
		cc.Write(upPayload)
		cc.CloseWrite()
	})
	got, err := readAll(cc)
	if err != nil {
		t.Fatalf("client read: %v", err)
	}
	if !bytes.Equal(got, down) {
		t.Errorf("client read %d bytes, want the %d sent", len(got), len(down))
	}
	if b := <-received; !bytes.Equal(b, upPayload) {
		t.Errorf("upstream read %d bytes, want the %d sent", len(b), len(upPayload))
	}
	assertCounters(t, r, counters{down: int64(len(down)), up: int64(len(upPayload)), conns: 1})
}

func TestURL(t *testing.T) {
	t.Parallel()
	r := New(t, "127.0.0.1:1")
	if want := "http://" + r.Addr(); r.URL() != want {
		t.Errorf("URL() = %q, want %q", r.URL(), want)
	}
	if !strings.HasPrefix(r.Addr(), "127.0.0.1:") {
		t.Errorf("Addr() = %q, want a loopback address", r.Addr())
	}
}

func TestCutEvery(t *testing.T) {
	t.Parallel()
	const n = 10_000
	up := newUpstream(t)
	r := New(t, up.addr())
	payload := random(t, 3*n)
	r.CutEvery(n)

	for i := range 2 { // counted per connection: each one is cut at n
		got, err := fetch(t, r, up, payload)
		assertCut(t, got, err, payload, n)
		assertCounters(t, r, counters{down: int64(i+1) * n, conns: i + 1, cuts: i + 1})
	}
	r.CutEvery(0)
	got, err := fetch(t, r, up, payload)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("after CutEvery(0): read %d bytes, %v; want %d, nil", len(got), err, len(payload))
	}
	assertCounters(t, r, counters{down: 2*n + 3*n, conns: 3, cuts: 2})
}

func TestCutEveryOpenConnection(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	r := New(t, up.addr())
	cc := dial(t, r.Addr())
	sc := up.next(t)
	a := random(t, 1000)
	sc.Write(a)
	readN(t, cc, a)

	r.CutEvery(500) // already carried more: cut before the next byte
	sc.Write(random(t, 1000))
	got, err := readAll(cc)
	assertCut(t, got, err, nil, 0)
	assertCounters(t, r, counters{down: 1000, conns: 1, cuts: 1})
}

func TestCutAfterTotal(t *testing.T) {
	t.Parallel()
	const n = 20_000
	up := newUpstream(t)
	r := New(t, up.addr())
	payload := random(t, n)
	full := func(step string) {
		t.Helper()
		got, err := fetch(t, r, up, payload)
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("%s: read %d bytes, %v; want %d, nil", step, len(got), err, n)
		}
	}

	full("before arming") // not counted: the total starts at the call
	r.CutAfterTotal(n + n/2)
	full("first armed connection")
	got, err := fetch(t, r, up, payload)
	assertCut(t, got, err, payload, n/2)
	assertCounters(t, r, counters{down: n + n + n/2, conns: 3, cuts: 1})

	full("after the cut") // once only
	r.CutAfterTotal(1)
	r.CutAfterTotal(0)
	full("disarmed")
	assertCounters(t, r, counters{down: 4*n + n/2, conns: 5, cuts: 1})
}

func TestCutAfterTotalConcurrent(t *testing.T) {
	t.Parallel()
	const n = 64 << 10
	up := newUpstream(t)
	r := New(t, up.addr())
	payload := random(t, n)
	r.CutAfterTotal(n)

	var ccs []*net.TCPConn
	for range 2 {
		cc := dial(t, r.Addr())
		sc := up.next(t)
		up.do(func() { sc.Write(payload); sc.Close() })
		ccs = append(ccs, cc)
	}
	errs := make(chan error, len(ccs))
	for _, cc := range ccs {
		go func() { _, err := readAll(cc); errs <- err }()
	}
	failed := 0
	for range ccs {
		if err := <-errs; err != nil {
			if isTimeout(err) {
				t.Fatalf("client read: %v", err)
			}
			failed++
		}
	}
	if failed != 1 || r.Cuts() != 1 {
		t.Errorf("%d clients failed, Cuts() = %d; want 1, 1", failed, r.Cuts())
	}
}

// TestSilence checks the faults that silence open connections: nothing
// read after the fault is forwarded either way, and everything is once it
// is lifted.
func TestSilence(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		on, off func(r *Relay)
	}{
		{"stall", (*Relay).Stall, (*Relay).Resume},
		{"blackhole", func(r *Relay) { r.Blackhole(true) }, func(r *Relay) { r.Blackhole(false) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up := newUpstream(t)
			r := New(t, up.addr())
			cc := dial(t, r.Addr())
			sc := up.next(t)
			a, b, x := random(t, 4000), random(t, 3000), random(t, 2000)
			sc.Write(a)
			readN(t, cc, a)

			tt.on(r)
			sc.Write(b)
			sc.(*net.TCPConn).CloseWrite() // an EOF does not cross a silent link either
			cc.Write(x)
			assertSilent(t, "client", cc)
			assertSilent(t, "upstream", sc)
			assertCounters(t, r, counters{down: 4000, conns: 1})

			tt.off(r)
			readN(t, cc, b)
			if rest, err := readAll(cc); err != nil || len(rest) != 0 {
				t.Fatalf("client read %d more bytes, %v; want EOF", len(rest), err)
			}
			readN(t, sc, x)
			assertCounters(t, r, counters{down: 7000, up: 2000, conns: 1})
		})
	}
}

func TestStallNewConnection(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	r := New(t, up.addr())
	r.Stall()
	cc := dial(t, r.Addr())
	sc := up.next(t) // a stall keeps the path: the connection is dialed
	x := random(t, 100)
	cc.Write(x)
	assertSilent(t, "upstream", sc)
	r.Resume()
	readN(t, sc, x)
	assertCounters(t, r, counters{up: 100, conns: 1})
}

func TestStallAndBlackholeAreIndependent(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	r := New(t, up.addr())
	cc := dial(t, r.Addr())
	sc := up.next(t)

	r.Stall()
	r.Blackhole(true)
	r.Blackhole(false)
	b := random(t, 100)
	sc.Write(b)
	assertSilent(t, "client after the blackhole lifted", cc)
	r.Blackhole(true)
	r.Resume()
	assertSilent(t, "client after Resume", cc)
	r.Blackhole(false)
	readN(t, cc, b)
}

func TestBlackholeHoldsNewConnections(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	r := New(t, up.addr())
	r.Blackhole(true)
	cc := dial(t, r.Addr()) // accepted: a blackhole does not refuse
	req := random(t, 200)
	cc.Write(req)
	assertSilent(t, "client", cc)
	if n := up.accepted.Load(); n != 0 {
		t.Fatalf("upstream accepted %d connections during the blackhole, want 0", n)
	}

	r.Blackhole(false) // the held connection carries on
	sc := up.next(t)
	readN(t, sc, req)
	resp := random(t, 300)
	sc.Write(resp)
	readN(t, cc, resp)
	assertCounters(t, r, counters{down: 300, up: 200, conns: 1})
}

func TestBlackholeHTTPClientTimesOut(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	r := New(t, srv.Listener.Addr().String())
	r.Blackhole(true)

	c := newHTTPClient(t)
	c.Timeout = 100 * time.Millisecond
	_, err := c.Get(r.URL() + "/v2/")
	if !isTimeout(err) {
		t.Fatalf("GET through a blackhole: error = %v, want a timeout", err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("upstream answered %d requests during the blackhole, want 0", n)
	}

	r.Blackhole(false)
	c.Timeout = guard
	if body, err := get(c, r.URL()+"/v2/"); err != nil || body != "ok" {
		t.Fatalf("GET after the blackhole = %q, %v; want ok", body, err)
	}
}

func TestRefuse(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	r := New(t, up.addr())
	r.Refuse(true)

	if err := dialAndRead(r.Addr()); err == nil || isTimeout(err) {
		t.Fatalf("read through a refusing relay: error = %v, want a reset or EOF", err)
	}
	c := newHTTPClient(t)
	if _, err := c.Get(r.URL() + "/v2/"); err == nil || isTimeout(err) {
		t.Fatalf("GET through a refusing relay: error = %v, want a reset or EOF", err)
	}
	if n := up.accepted.Load(); n != 0 {
		t.Fatalf("upstream accepted %d connections, want 0", n)
	}
	if r.Conns() < 2 {
		t.Fatalf("Conns() = %d, want at least 2 (refused connections count)", r.Conns())
	}

	r.Refuse(false)
	conns := r.Conns()
	payload := random(t, 1000)
	if got, err := fetch(t, r, up, payload); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("after Refuse(false): read %d bytes, %v; want %d, nil", len(got), err, len(payload))
	}
	assertCounters(t, r, counters{down: 1000, conns: conns + 1})
}

func TestRefuseKeepsOpenConnections(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	r := New(t, up.addr())
	cc := dial(t, r.Addr())
	sc := up.next(t)
	r.Refuse(true)
	b := random(t, 100)
	sc.Write(b)
	readN(t, cc, b)
}

func TestDropAll(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	r := New(t, up.addr())
	a := random(t, 500)
	var ccs []*net.TCPConn
	for range 2 {
		cc := dial(t, r.Addr())
		sc := up.next(t)
		sc.Write(a)
		readN(t, cc, a)
		ccs = append(ccs, cc)
	}
	r.Blackhole(true)
	held := dial(t, r.Addr()) // DropAll also resets connections a blackhole holds
	waitFor(t, func() bool { return r.Conns() == 3 }, func() string { return "relay did not accept the third connection" })
	r.DropAll()
	r.Blackhole(false)
	for _, cc := range append(ccs, held) {
		got, err := readAll(cc)
		assertCut(t, got, err, nil, 0)
	}
	assertCounters(t, r, counters{down: 1000, conns: 3, cuts: 3})

	payload := random(t, 100)
	if got, err := fetch(t, r, up, payload); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("after DropAll: read %d bytes, %v; want %d, nil", len(got), err, len(payload))
	}
}

// TestThrottle asserts only a lower bound on the time a throttled transfer
// takes. The token bucket cannot release bytes faster than that, and a slow
// machine only makes the transfer longer, so the test cannot flake.
func TestThrottle(t *testing.T) {
	t.Parallel()
	const (
		rate = 200 << 10
		each = 40 << 10
	)
	up := newUpstream(t)
	r := New(t, up.addr())
	payload := random(t, each)
	r.Throttle(rate)

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 { // the bucket is shared by all connections
		cc := dial(t, r.Addr())
		sc := up.next(t)
		up.do(func() { sc.Write(payload); sc.Close() })
		wg.Go(func() {
			got, err := readAll(cc)
			if err == nil && !bytes.Equal(got, payload) {
				err = fmt.Errorf("read %d bytes, want %d", len(got), len(payload))
			}
			errs <- err
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("throttled read: %v", err)
		}
	}
	burst := rate / 10
	least := time.Duration(float64(2*each-burst) / rate * float64(time.Second))
	if elapsed < least*9/10 {
		t.Errorf("2×%d bytes at %d B/s took %v, want at least %v", each, rate, elapsed, least)
	}
	assertCounters(t, r, counters{down: 2 * each, conns: 2})
}

func TestThrottleLifted(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	r := New(t, up.addr())
	r.Throttle(1) // 1000 bytes would take 1000 s
	cc := dial(t, r.Addr())
	sc := up.next(t)
	payload := random(t, 1000)
	up.do(func() { sc.Write(payload); sc.Close() })
	readN(t, cc, payload[:1]) // the first byte is in the initial burst

	r.Throttle(0) // wakes the waiting connection
	got, err := readAll(cc)
	if err != nil || !bytes.Equal(got, payload[1:]) {
		t.Fatalf("after Throttle(0): read %d bytes, %v; want %d, nil", len(got), err, len(payload)-1)
	}
}

// TestHTTPResumeThroughCuts is the use the package exists for: a blob
// fetched over a link cut every 128 KiB completes with Range requests.
func TestHTTPResumeThroughCuts(t *testing.T) {
	t.Parallel()
	const cut = 128 << 10
	blob := random(t, 1<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		http.ServeContent(w, req, "blob", time.Time{}, bytes.NewReader(blob))
	}))
	t.Cleanup(srv.Close)
	r := New(t, srv.Listener.Addr().String())
	r.CutEvery(cut)

	c := newHTTPClient(t)
	var got []byte
	for attempt := 0; len(got) < len(blob); attempt++ {
		if attempt == 100 {
			t.Fatalf("blob incomplete after %d attempts: %d of %d bytes", attempt, len(got), len(blob))
		}
		req, _ := http.NewRequest(http.MethodGet, r.URL()+"/blob", nil)
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", len(got)))
		resp, err := c.Do(req)
		if err != nil {
			continue
		}
		if resp.StatusCode != http.StatusPartialContent {
			resp.Body.Close()
			t.Fatalf("GET Range bytes=%d-: status %d, want 206", len(got), resp.StatusCode)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got = append(got, b...)
	}
	if !bytes.Equal(got, blob) {
		t.Fatal("resumed blob differs from the original")
	}
	// Every connection but the last carried exactly cut bytes, headers
	// included, so there were at least len(blob)/cut - 1 cuts.
	if want := len(blob)/cut - 1; r.Cuts() < want {
		t.Errorf("Cuts() = %d, want at least %d", r.Cuts(), want)
	}
}

// TestConcurrentSettings changes every setting while connections run; it
// is for the race detector. At the end the link is healthy again.
func TestConcurrentSettings(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	r := New(t, up.addr())
	payload := random(t, 256<<10)
	var received atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		cc := dial(t, r.Addr())
		sc := up.next(t)
		up.do(func() { sc.Write(payload); sc.Close() })
		wg.Go(func() {
			got, err := readAll(cc)
			received.Add(int64(len(got)))
			if isTimeout(err) {
				t.Errorf("client read: %v", err)
			}
		})
	}
	for i := range 200 {
		switch i % 8 {
		case 0:
			r.Stall()
		case 1:
			r.Resume()
		case 2:
			r.Throttle(int64(1 + i<<10))
		case 3:
			r.CutEvery(int64(64<<10 + i))
		case 4:
			r.Blackhole(i%16 == 4)
		case 5:
			r.CutAfterTotal(int64(i << 10))
		case 6:
			r.Refuse(i%16 == 6)
		case 7:
			if i%64 == 7 {
				r.DropAll()
			}
			_ = r.BytesDown() + r.BytesUp() + int64(r.Conns()+r.Cuts())
		}
	}
	r.Resume()
	r.Blackhole(false)
	r.Refuse(false)
	r.Throttle(0)
	r.CutEvery(0)
	r.CutAfterTotal(0)
	wg.Wait()
	if got := r.BytesDown(); got < received.Load() {
		t.Errorf("BytesDown() = %d, want at least the %d bytes clients read", got, received.Load())
	}
	if got, err := fetch(t, r, up, payload); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("healthy link: read %d bytes, %v; want %d, nil", len(got), err, len(payload))
	}
}

// TestCloseLeavesNoGoroutines is not parallel: it counts goroutines.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	up := newUpstream(t)
	var relays []*Relay
	var clients []net.Conn
	open := func(r *Relay, write []byte) {
		cc := dial(t, r.Addr())
		clients = append(clients, cc)
		if write == nil {
			return
		}
		sc := up.next(t)
		up.do(func() { sc.Write(write) })
	}

	stalled := New(t, up.addr()) // a pump waiting in admit
	stalled.Stall()
	open(stalled, random(t, 1000))
	throttled := New(t, up.addr()) // a pump waiting for tokens
	throttled.Throttle(1)
	open(throttled, random(t, 1000))
	blackholed := New(t, up.addr()) // a connection held before dialing
	blackholed.Blackhole(true)
	open(blackholed, nil)
	blocked := New(t, up.addr()) // a pump blocked writing to a client that does not read
	open(blocked, random(t, 8<<20))
	idle := New(t, up.addr()) // both pumps blocked reading
	open(idle, []byte{})
	unreachable := New(t, closedAddr(t)) // the dial fails
	if err := dialAndRead(unreachable.Addr()); err == nil || isTimeout(err) {
		t.Fatalf("read through a relay to a closed port: error = %v, want a reset", err)
	}
	relays = append(relays, stalled, throttled, blackholed, blocked, idle, unreachable)

	for _, r := range relays {
		r.Close()
		r.Close() // idempotent; t.Cleanup calls it once more
	}
	waitFor(t, func() bool { return len(relayGoroutines()) == 0 }, func() string {
		return "relay goroutines left after Close:\n" + strings.Join(relayGoroutines(), "\n\n")
	})
	for _, cc := range clients {
		cc.Close()
	}
	up.close()
	waitFor(t, func() bool { return runtime.NumGoroutine() <= base }, func() string {
		return fmt.Sprintf("%d goroutines after closing everything, want at most %d", runtime.NumGoroutine(), base)
	})
}

func TestThrottleUp(t *testing.T) {
	t.Parallel()
	const (
		rate = 200 << 10
		each = 80 << 10
	)
	up := newUpstream(t)
	r := New(t, up.addr())
	payload := random(t, each)
	r.ThrottleUp(rate)

	start := time.Now()
	cc := dial(t, r.Addr())
	sc := up.next(t)
	go func() { cc.Write(payload); cc.CloseWrite() }()
	got, err := readAll(sc)
	elapsed := time.Since(start)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("throttled upload: read %d bytes, %v; want %d", len(got), err, len(payload))
	}
	burst := rate / 10
	least := time.Duration(float64(each-burst) / rate * float64(time.Second))
	if elapsed < least*9/10 {
		t.Errorf("%d bytes up at %d B/s took %v, want at least %v", each, rate, elapsed, least)
	}
	assertCounters(t, r, counters{up: each, conns: 1})
}
