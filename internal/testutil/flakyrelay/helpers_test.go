package flakyrelay

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// upstream is a loopback TCP server whose connections the test drives by
// hand.
type upstream struct {
	ln       net.Listener
	conns    chan net.Conn
	accepted atomic.Int64
	wg       sync.WaitGroup
	once     sync.Once
	mu       sync.Mutex
	all      []net.Conn
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{ln: ln, conns: make(chan net.Conn, 16)}
	u.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.accepted.Add(1)
			u.mu.Lock()
			u.all = append(u.all, c)
			u.mu.Unlock()
			u.conns <- c
		}
	})
	t.Cleanup(u.close)
	return u
}

func (u *upstream) addr() string { return u.ln.Addr().String() }

// next returns the next connection the upstream accepted.
func (u *upstream) next(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-u.conns:
		return c
	case <-time.After(guard):
		t.Fatal("upstream: no connection")
		return nil
	}
}

// do runs f in a goroutine that close waits for.
func (u *upstream) do(f func()) { u.wg.Go(f) }

// close closes the listener and every connection, then waits for the
// accept loop and every do.
func (u *upstream) close() {
	u.once.Do(func() {
		u.ln.Close()
		u.mu.Lock()
		for _, c := range u.all {
			c.Close()
		}
		u.mu.Unlock()
		u.wg.Wait()
	})
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, guard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// fetch opens a connection through r, has the upstream send payload and
// close, and returns what the client read.
func fetch(t *testing.T, r *Relay, up *upstream, payload []byte) ([]byte, error) {
	t.Helper()
	cc := dial(t, r.Addr())
	sc := up.next(t)
	up.do(func() { sc.Write(payload); sc.Close() })
	return readAll(cc)
}

func readAll(c net.Conn) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(guard))
	return io.ReadAll(c)
}

// readN reads len(want) bytes from c and checks they are want.
func readN(t *testing.T, c net.Conn, want []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(guard))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read %d bytes: %v", len(want), err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes that differ from those sent", len(want))
	}
}

// assertSilent checks that nothing arrives on c for a while.
func assertSilent(t *testing.T, who string, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(silence))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || !isTimeout(err) {
		t.Fatalf("%s read %d bytes, %v; want 0 and a timeout", who, n, err)
	}
	c.SetReadDeadline(time.Time{})
}

// assertCut checks a client read that the relay cut: it ended in an error
// (a reset, not EOF) after at most max bytes, which are payload's first.
func assertCut(t *testing.T, got []byte, err error, payload []byte, max int) {
	t.Helper()
	if err == nil || isTimeout(err) {
		t.Fatalf("client read ended with %v, want a reset", err)
	}
	if len(got) > max || !bytes.Equal(got, payload[:len(got)]) {
		t.Fatalf("client read %d bytes before the cut, want at most %d of the payload", len(got), max)
	}
}

type counters struct {
	down, up    int64
	conns, cuts int
}

func assertCounters(t *testing.T, r *Relay, want counters) {
	t.Helper()
	got := counters{down: r.BytesDown(), up: r.BytesUp(), conns: r.Conns(), cuts: r.Cuts()}
	if got != want {
		t.Errorf("counters (BytesDown, BytesUp, Conns, Cuts) = %+v, want %+v", got, want)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// dialAndRead dials addr and reads once, returning the first error.
func dialAndRead(addr string) error {
	c, err := net.DialTimeout("tcp", addr, guard)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(guard))
	_, err = c.Read(make([]byte, 1))
	return err
}

func newHTTPClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: guard}
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// relayGoroutines returns the stacks of goroutines running relay code.
func relayGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "flakyrelay.(*Relay).") || strings.Contains(g, "flakyrelay.(*conn).") {
			out = append(out, g)
		}
	}
	return out
}

// waitFor polls cond for up to guard; goroutines take a moment to exit
// after the code that ends them returns.
func waitFor(t *testing.T, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
