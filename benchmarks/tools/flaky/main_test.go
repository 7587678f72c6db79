package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// upstream serves blob on every connection, then closes it.
func upstream(t *testing.T, blob []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = c.Write(blob) }()
		}
	}()
	return ln.Addr().String()
}

func start(t *testing.T, r *relay) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go r.serve(ln)
	return ln.Addr().String()
}

func fetch(t *testing.T, addr string) ([]byte, time.Duration) {
	t.Helper()
	t0 := time.Now()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(c)
	return b, time.Since(t0)
}

func TestCutEvery(t *testing.T) {
	blob := make([]byte, 100_000)
	rand.Read(blob)
	r := newRelay(upstream(t, blob))
	r.cutEvery.Store(30_000)
	addr := start(t, r)
	for i := 0; i < 2; i++ {
		b, _ := fetch(t, addr)
		if len(b) != 30_000 || !bytes.Equal(b, blob[:30_000]) {
			t.Fatalf("got %d bytes, want the first 30000", len(b))
		}
	}
	if r.cuts.Load() != 2 || r.down.Load() != 60_000 {
		t.Fatalf("cuts=%d down=%d", r.cuts.Load(), r.down.Load())
	}
	r.maxCuts.Store(2) // reached: no more cuts
	if b, _ := fetch(t, addr); len(b) != len(blob) {
		t.Fatalf("after max-cuts: %d bytes", len(b))
	}
}

func TestCutAtOnce(t *testing.T) {
	blob := make([]byte, 50_000)
	r := newRelay(upstream(t, blob))
	r.cutAt.Store(70_000)
	r.cutAtOn.Store(true)
	addr := start(t, r)
	b1, _ := fetch(t, addr)
	b2, _ := fetch(t, addr)
	b3, _ := fetch(t, addr)
	if len(b1) != 50_000 || len(b2) != 20_000 || len(b3) != 50_000 {
		t.Fatalf("lengths %d %d %d, want 50000 20000 50000", len(b1), len(b2), len(b3))
	}
	if r.cuts.Load() != 1 {
		t.Fatalf("cuts=%d", r.cuts.Load())
	}
}

func TestLinkRate(t *testing.T) {
	blob := make([]byte, 40_000)
	r := newRelay(upstream(t, blob))
	r.linkRate.Store(200_000)
	addr := start(t, r)
	b, d := fetch(t, addr)
	if len(b) != len(blob) || d < 150*time.Millisecond {
		t.Fatalf("%d bytes in %v, want 40000 in >= ~200ms", len(b), d)
	}
}

func TestBlackholeAndControl(t *testing.T) {
	blob := []byte("hello")
	r := newRelay(upstream(t, blob))
	addr := start(t, r)
	srv := httptest.NewServer(r.handler())
	defer srv.Close()
	post := func(q string) statsDoc {
		resp, err := http.Post(srv.URL+"/config?"+q, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("%s: %d %s", q, resp.StatusCode, b)
		}
		var d statsDoc
		_ = json.NewDecoder(resp.Body).Decode(&d)
		return d
	}
	if d := post("blackhole=1&cut_every=7&cut_mode=stall"); !d.Blackhole || d.CutEvery != 7 || d.CutMode != "stall" {
		t.Fatalf("config not applied: %+v", d)
	}
	post("cut_every=0")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c.Read(make([]byte, 10)); n != 0 || err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("blackholed: read %d, %v", n, err)
	}
	post("blackhole=0")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	if string(b) != "hello" {
		t.Fatalf("after the blackhole: %q", b)
	}
	if resp, _ := http.Post(srv.URL+"/config?rate=x", "", nil); resp.StatusCode != 400 {
		t.Fatalf("bad value accepted")
	}
	req, _ := http.NewRequest(http.MethodDelete, srv.URL+"/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var d statsDoc
	_ = json.NewDecoder(resp.Body).Decode(&d)
	resp.Body.Close()
	if d.Down != 0 || d.Conns != 0 {
		t.Fatalf("not reset: %+v", d)
	}
}

// A fast paced link must not be slowed down by per-chunk sleeps (about 1 ms each on a loaded VM).
func TestLinkRateFast(t *testing.T) {
	blob := make([]byte, 4_000_000)
	r := newRelay(upstream(t, blob))
	r.linkRate.Store(20_000_000)
	addr := start(t, r)
	b, d := fetch(t, addr)
	if len(b) != len(blob) || d < 150*time.Millisecond || d > 800*time.Millisecond {
		t.Fatalf("%d bytes in %v, want 4 MB in ~200ms at 20 MB/s", len(b), d)
	}
}
