package upstream

import (
	"context"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// natRelay forwards TCP connections to target. cut makes every connection
// open at that moment go silent for good (nothing is forwarded, nothing is
// closed), as a cellular link does whose carrier NAT lost its mappings
// during an outage, while new connections go through: the link is back.
type natRelay struct {
	ln     net.Listener
	target string

	// gone receives once for every cut connection the client closed.
	gone chan struct{}

	mu      sync.Mutex
	conns   map[net.Conn]*bool // both sides of each connection → its dead flag
	clients map[net.Conn]bool  // the client sides
}

func newNATRelay(t *testing.T, target string) *natRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &natRelay{ln: ln, target: target, gone: make(chan struct{}, 100),
		conns: map[net.Conn]*bool{}, clients: map[net.Conn]bool{}}
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		for c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.forward(c)
		}
	}()
	return r
}

func (r *natRelay) forward(c net.Conn) {
	up, err := net.Dial("tcp", r.target)
	if err != nil {
		c.Close()
		return
	}
	dead := new(bool)
	r.mu.Lock()
	r.conns[c], r.conns[up] = dead, dead
	r.clients[c] = true
	r.mu.Unlock()
	go r.pipe(up, c, dead)
	r.pipe(c, up, dead)
}

func (r *natRelay) isDead(dead *bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return *dead
}

func (r *natRelay) pipe(dst, src net.Conn, dead *bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !r.isDead(dead) {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			r.mu.Lock()
			client := r.clients[src]
			r.mu.Unlock()
			if client && r.isDead(dead) {
				r.gone <- struct{}{}
			}
			if err == io.EOF && !r.isDead(dead) {
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
			}
			return
		}
	}
}

// cut silences every connection open now.
func (r *natRelay) cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range r.conns {
		*d = true
	}
}

// An HTTP/2 connection that the outage killed silently (a carrier NAT that
// dropped it: nothing arrives, nothing is closed) is closed by its
// unanswered ping, and the next probe of the breaker dials a new one: the
// link is back, the breaker closes. Before, the pool kept sending every
// request into the dead connection, each waiting the response-header
// timeout, and the mirror stayed offline until the kernel gave up on the
// connection, about 15 minutes after the link came back.
func TestClientDropsAConnectionTheOutageKilled(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Docker-Content-Digest", "sha256:"+strings.Repeat("0", 64))
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	relay := newNATRelay(t, srv.Listener.Addr().String())
	clk := newFakeClock()
	c := newTestClient(t, "https://"+relay.ln.Addr().String(), breakerOptions(clk, 1), func(o *Options) {
		o.CAFile = ca
		o.ConnectTimeout = time.Second
		o.ResponseHeaderTimeout = 500 * time.Millisecond
	})
	if _, err := c.Resolve(context.Background(), "a", "v1", nil); err != nil {
		t.Fatalf("Resolve() before the outage: %v", err)
	}
	if got := hits.Load(); got != 1 {
		t.Fatalf("the upstream got %d requests, want 1", got)
	}

	// The outage kills the connection; the link comes back at once for
	// new connections.
	relay.cut()
	if _, err := c.Resolve(context.Background(), "a", "v1", nil); !isTimeout(err) {
		t.Fatalf("Resolve() on the dead connection: %v, want a response-header timeout", err)
	}
	if s := c.Health().State; s != BreakerOpen {
		t.Fatalf("breaker %s after the timeout, want open", s)
	}
	select {
	case <-relay.gone:
	case <-time.After(time.Minute):
		t.Fatal("the client still holds the dead connection a minute later (it pings after 500ms of silence and gives up 1s later)")
	}
	clk.Add(time.Hour) // the probe is due
	if _, err := c.Resolve(context.Background(), "a", "v1", nil); err != nil {
		t.Fatalf("the breaker's probe with the link back: %v", err)
	}
	if s := c.Health().State; s != BreakerClosed {
		t.Errorf("breaker %s after a successful probe, want closed", s)
	}
}
