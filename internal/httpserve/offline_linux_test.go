package httpserve_test

import (
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/testutil/hangnet"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

// blackholeRelay is a TCP relay in front of an upstream that, once
// blackholed, behaves like a link that silently drops every packet:
// established connections go quiet (nothing is forwarded either way, and
// nothing is closed), and new connections hang in connect, because the
// relay stops accepting and its listen backlog is 0, so the kernel drops
// their SYNs. It needs Linux for the backlog behaviour.
type blackholeRelay struct {
	ln      net.Listener
	target  string
	dead    chan struct{}
	once    sync.Once
	stopped chan struct{} // closed when the accept loop has stopped

	mu    sync.Mutex
	conns []net.Conn
}

func newBlackholeRelay(t *testing.T, target string) *blackholeRelay {
	t.Helper()
	ln := hangnet.ZeroBacklog(t)
	r := &blackholeRelay{ln: ln, target: target, dead: make(chan struct{}), stopped: make(chan struct{})}
	go r.serve()
	t.Cleanup(r.close)
	return r
}

func (r *blackholeRelay) addr() string { return r.ln.Addr().String() }

// blackhole drops everything from now on. It fills the listen queue
// itself, so that any later connection attempt hangs.
func (r *blackholeRelay) blackhole(t *testing.T) {
	t.Helper()
	r.once.Do(func() { close(r.dead) })
	// Wake the accept loop, which holds this connection and stops.
	if c, err := net.DialTimeout("tcp", r.addr(), 5*time.Second); err == nil {
		r.track(c)
	}
	select {
	case <-r.stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("relay still accepting after the blackhole")
	}
	// Backlog 0 queues one connection; the SYNs of the next are dropped.
	for range 3 {
		c, err := net.DialTimeout("tcp", r.addr(), 300*time.Millisecond)
		if err != nil {
			return
		}
		r.track(c)
	}
	t.Fatal("connections to the blackholed relay still complete: connect does not hang on this system")
}

func (r *blackholeRelay) isDead() bool {
	select {
	case <-r.dead:
		return true
	default:
		return false
	}
}

func (r *blackholeRelay) track(c net.Conn) {
	r.mu.Lock()
	r.conns = append(r.conns, c)
	r.mu.Unlock()
}

func (r *blackholeRelay) close() {
	r.once.Do(func() { close(r.dead) })
	r.ln.Close()
	r.mu.Lock()
	for _, c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
}

func (r *blackholeRelay) serve() {
	defer close(r.stopped)
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.track(c)
		if r.isDead() {
			// Hold this one silently and accept no more: the queue fills
			// and later connection attempts hang.
			return
		}
		go r.forward(c)
	}
}

func (r *blackholeRelay) forward(c net.Conn) {
	up, err := net.Dial("tcp", r.target)
	if err != nil {
		c.Close()
		return
	}
	r.track(up)
	go r.pipe(up, c)
	r.pipe(c, up)
}

// pipe copies src to dst until the relay is blackholed; then it reads and
// drops, keeping both connections open.
func (r *blackholeRelay) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !r.isDead() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err == io.EOF && !r.isDead() {
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
			}
			return
		}
	}
}

// The benchmark case of issue #4: an upstream that silently drops packets.
// A cached tag is answered within cache.revalidateTimeout although the
// connect timeout is much longer, both on a connection opened before the
// outage and on new connections whose connect hangs; once the breaker is
// open nothing waits and nothing is sent.
func TestOfflineBlackholedUpstream(t *testing.T) {
	t.Parallel()
	const revalidate = 500 * time.Millisecond
	var relay *blackholeRelay
	m := newOfflineMirror(t, offlineSetup{
		connectTimeout:    time.Minute,
		responseHeader:    time.Minute,
		revalidateTimeout: revalidate,
		retryMax:          3,
		breaker:           upstream.BreakerOptions{Failures: 2, MinProbe: time.Minute, MaxProbe: time.Minute},
	}, func(fakeAddr string) string {
		relay = newBlackholeRelay(t, fakeAddr)
		return "http://" + relay.addr()
	})
	layer := []byte("cached layer")
	mdesc, layers := m.fake.Image("app", "v1", layer)
	_, other := m.fake.Image("app", "v2", []byte("uncached"))
	if resp, body := m.get(http.MethodGet, manifestPath("app", "v1")); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET tag through the relay: %d %s", resp.StatusCode, body)
	}
	m.get(http.MethodGet, blobPath("app", layers[0].Digest))
	m.waitFills()

	relay.blackhole(t)
	m.clock.Advance(time.Hour)
	before := m.fake.Total()
	// Two revalidations fail by the revalidation timeout, the first on the
	// connection pooled before the outage, which goes quiet, the next in a
	// connect that never completes; the breaker opens.
	for i := range 2 {
		start := time.Now()
		resp, body := m.get(http.MethodGet, manifestPath("app", "v1"))
		elapsed := time.Since(start)
		if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != mdesc.Digest {
			t.Fatalf("GET cached tag #%d, upstream blackholed: %d %s", i, resp.StatusCode, body)
		}
		if resp.Header.Get("Docker-Content-Digest") != mdesc.Digest.String() {
			t.Errorf("Docker-Content-Digest = %q, want %s", resp.Header.Get("Docker-Content-Digest"), mdesc.Digest)
		}
		// Generous bound; the connect and header timeouts are 1 minute.
		if elapsed > revalidate+20*time.Second {
			t.Errorf("GET cached tag #%d took %s, want about %s", i, elapsed, revalidate)
		}
	}
	if got := metricValue(t, m.metrics, "registry_edge_upstream_breaker_state"); got != 1 {
		t.Fatalf("breaker state = %v after two timed-out revalidations, want 1 (open)", got)
	}

	// Breaker open: every request is answered without touching the link.
	refused := metricValue(t, m.metrics, "registry_edge_upstream_breaker_refused_total")
	const n = 10
	for range n {
		if resp, _ := m.get(http.MethodGet, manifestPath("app", "v1")); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET cached tag with the breaker open: %d", resp.StatusCode)
		}
	}
	if resp, body := m.get(http.MethodGet, blobPath("app", layers[0].Digest)); resp.StatusCode != http.StatusOK || string(body) != string(layer) {
		t.Errorf("GET cached blob: %d", resp.StatusCode)
	}
	resp, body := m.get(http.MethodGet, manifestPath("app", "v2"))
	m.wantCode(resp, body, http.StatusServiceUnavailable, "UNAVAILABLE")
	resp, body = m.get(http.MethodGet, blobPath("app", other[0].Digest))
	m.wantCode(resp, body, http.StatusServiceUnavailable, "UNAVAILABLE")
	if got := metricValue(t, m.metrics, "registry_edge_upstream_breaker_refused_total") - refused; got < n+2 {
		t.Errorf("requests refused by the breaker = %v, want at least %d: something tried the dead link", got, n+2)
	}
	if got := m.fake.Total() - before; got != 0 {
		t.Errorf("the fake upstream received %d requests through a blackholed relay", got)
	}
}
