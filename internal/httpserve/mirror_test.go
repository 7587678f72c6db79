package httpserve_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/httpserve"
	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/metrics"
	"github.com/registry-edge/registry-edge/internal/proxy"
	"github.com/registry-edge/registry-edge/internal/testutil/fakeclock"
	"github.com/registry-edge/registry-edge/internal/testutil/fakeupstream"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

// mirror is a registry-edge under test in front of a fake upstream.
type mirror struct {
	t        testing.TB
	fake     *fakeupstream.Registry
	upstream *httptest.Server
	srv      *httptest.Server
	root     string
	store    *blobstore.FS
	clock    *fakeclock.Clock
	metrics  *metrics.Metrics

	proxy  *proxy.Proxy
	db     *meta.DB
	router *proxy.Router
	opts   proxy.Options
	// wrap, if set, puts a fault-injecting layer around the store.
	wrap func(*blobstore.FS) proxy.Store
	// access, if set, is the access policy; limit the rate limit.
	access httpserve.Access
	limit  httpserve.RateLimit
	// trusted are the proxies whose X-Forwarded-For is believed.
	trusted []netip.Prefix
	// deltasTo are the networks whose delta negotiations are answered;
	// maxDeltaWait bounds a negotiation's wait for its delta.
	deltasTo     []netip.Prefix
	maxDeltaWait time.Duration
	writeStall   time.Duration
	http2        bool // serve over TLS with HTTP/2 (clients: m.srv.Client())
	// accessLog, if set, receives the access log (text lines).
	accessLog io.Writer
	// served tracks the requests of do to their end in the handler.
	served served
	// server is the handler srv serves.
	server *httpserve.Server
}

type proxyOptions = proxy.Options

type mirrorOpt func(*proxy.Options)

func newMirror(t testing.TB, opts ...mirrorOpt) *mirror {
	t.Helper()
	return newMirrorWrapped(t, nil, opts...)
}

// newMirrorWrapped is newMirror with the store wrapped by wrap.
func newMirrorWrapped(t testing.TB, wrap func(*blobstore.FS) proxy.Store, opts ...mirrorOpt) *mirror {
	t.Helper()
	fake := fakeupstream.New()
	up := httptest.NewServer(fake)
	t.Cleanup(up.Close)
	m := newMirrorOver(t, up.URL, wrap, opts...)
	m.fake, m.upstream = fake, up
	return m
}

// newMirrorOver is a mirror of the registry at upURL (another mirror, for
// tier tests).
func newMirrorOver(t testing.TB, upURL string, wrap func(*blobstore.FS) proxy.Store, opts ...mirrorOpt) *mirror {
	t.Helper()
	client, err := upstream.New(upstream.Options{
		URL: upURL, RegistryName: "central.test",
		ConnectTimeout: time.Second, ResponseHeaderTimeout: 10 * time.Second,
		RetryMax: 3, RetryMinWait: time.Millisecond, RetryMaxWait: 5 * time.Millisecond, MaxRetryAfter: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	router, err := proxy.NewRouter([]*proxy.Remote{{Name: "central.test", Client: client}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	clk := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	po := proxy.Options{TagTTL: time.Minute, RevalidateTimeout: 2 * time.Second, FillTimeout: time.Minute, Now: clk.Now, Elapsed: clk.Elapsed}
	for _, o := range opts {
		o(&po)
	}
	m := &mirror{t: t, root: t.TempDir(), clock: clk, router: router, opts: po, wrap: wrap}
	m.start()
	t.Cleanup(m.stop)
	return m
}

// start opens the store, metadata and proxy under m.root and serves them.
func (m *mirror) start() {
	t := m.t
	store, err := blobstore.NewFS(m.root, blobstore.FSOptions{TempMaxAge: time.Hour, PartialMaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	db, err := meta.Open(filepath.Join(m.root, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	m.metrics = metrics.New()
	po := m.opts
	po.Metrics = m.metrics
	var ps proxy.Store = store
	if m.wrap != nil {
		ps = m.wrap(store)
	}
	m.store, m.db, m.proxy = store, db, proxy.New(ps, db, m.router, po)
	so := httpserve.Options{Metrics: m.metrics, Access: m.access, RateLimit: m.limit, ServeDeltas: po.Deltas, ServeDeltasTo: m.deltasTo, TrustedProxies: m.trusted,
		MaxDeltaWait: m.maxDeltaWait, WriteStallTimeout: m.writeStall}
	if m.accessLog != nil {
		so.AccessLog, so.Logger = true, slog.New(slog.NewTextHandler(m.accessLog, nil))
	}
	m.server = httpserve.New(m.proxy, so)
	m.srv = httptest.NewUnstartedServer(&m.served)
	m.served.h = m.server
	m.srv.Config.ConnContext = httpserve.ConnContext // as registry-edge serve does
	if m.http2 {
		m.srv.EnableHTTP2 = true
		m.srv.StartTLS()
		return
	}
	m.srv.Start()
}

// stop shuts the mirror down like the process does: running fills stop
// and keep their partial downloads.
func (m *mirror) stop() {
	if m.srv == nil {
		return
	}
	m.srv.CloseClientConnections()
	m.srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A meta.db a test damaged fails the last flush of access times too.
	if err := m.proxy.Close(ctx); err != nil && !errors.Is(err, errdef.ErrDamaged) {
		m.t.Errorf("fills still running at stop: %v", err)
	}
	m.db.Close()
	m.srv = nil
}

// restart stops the mirror and starts a new one on the same storage.
func (m *mirror) restart() {
	m.stop()
	m.start()
}

// do sends a request to the mirror and returns status, headers and body
// (the body error, if any, is returned too).
func (m *mirror) do(method, path string, hdr ...string) (*http.Response, []byte, error) {
	m.t.Helper()
	req, err := http.NewRequest(method, m.srv.URL+path, nil)
	if err != nil {
		m.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	ended := m.served.track(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil {
		// The client has the whole answer before the handler has
		// returned: what it counts and logs after the body (served bytes,
		// the access log line) is there once do returns.
		select {
		case <-ended:
		case <-time.After(30 * time.Second):
			m.t.Errorf("%s %s: the handler had not returned 30 s after its answer was read", method, path)
		}
	}
	return resp, body, err
}

// served is the mirror's handler, which tells do when a request it sent
// has ended in the handler.
type served struct {
	h    http.Handler
	mu   sync.Mutex
	n    int
	ends map[string]chan struct{}
}

// track marks req to be followed, and returns what is closed when the
// handler has returned from it.
func (s *served) track(req *http.Request) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h == nil {
		panic("the mirror's server does not serve through its served handler")
	}
	s.n++
	id := strconv.Itoa(s.n)
	if s.ends == nil {
		s.ends = map[string]chan struct{}{}
	}
	ch := make(chan struct{})
	s.ends[id] = ch
	req.Header.Set(trackHeader, id)
	return ch
}

const trackHeader = "X-Test-Request"

func (s *served) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get(trackHeader)
	if id == "" {
		s.h.ServeHTTP(w, r)
		return
	}
	s.mu.Lock()
	ch := s.ends[id]
	delete(s.ends, id)
	s.mu.Unlock()
	if ch != nil {
		defer close(ch)
	}
	s.h.ServeHTTP(w, r)
}

// get is do for requests that must succeed at the transport level.
func (m *mirror) get(method, path string, hdr ...string) (*http.Response, []byte) {
	m.t.Helper()
	resp, body, err := m.do(method, path, hdr...)
	if err != nil {
		m.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp, body
}

func (m *mirror) wantCode(resp *http.Response, body []byte, status int, code string) {
	m.t.Helper()
	if resp.StatusCode != status {
		m.t.Fatalf("status = %d, want %d (body %s)", resp.StatusCode, status, body)
	}
	if code == "" {
		return
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		m.t.Errorf("error Content-Type = %q, want application/json", ct)
	}
	var env struct {
		Errors []struct{ Code, Message string }
	}
	if resp.Request.Method != http.MethodHead {
		if err := json.Unmarshal(body, &env); err != nil || len(env.Errors) == 0 {
			m.t.Fatalf("error body %q is not an OCI error envelope: %v", body, err)
		}
		if env.Errors[0].Code != code {
			m.t.Errorf("error code = %s, want %s (message %q)", env.Errors[0].Code, code, env.Errors[0].Message)
		}
	}
}

// storedBlobs counts committed blobs; ingestFiles counts partial files.
func (m *mirror) storedBlobs() int {
	m.t.Helper()
	n := 0
	if err := m.store.Walk(context.Background(), func(blobstore.Info) error { n++; return nil }); err != nil {
		m.t.Fatal(err)
	}
	return n
}

func (m *mirror) ingestFiles() []string {
	m.t.Helper()
	var names []string
	for _, dir := range []string{"ingest", "partial"} {
		entries, err := os.ReadDir(filepath.Join(m.root, dir))
		if err != nil {
			m.t.Fatal(err)
		}
		for _, e := range entries {
			names = append(names, dir+"/"+e.Name())
		}
	}
	return names
}

// cached puts one layer of size random bytes in team/app:v1 upstream,
// pulls it through the mirror once and waits for the fill to commit. It
// returns the blob's path and content.
func (m *mirror) cached(size int) (string, []byte) {
	m.t.Helper()
	layer := fakeupstream.Random(m.t, size)
	_, layers := m.fake.Image("team/app", "v1", layer)
	path := blobPath("team/app", layers[0].Digest)
	if resp, body := m.get(http.MethodGet, path); resp.StatusCode != 200 || !bytes.Equal(body, layer) {
		m.t.Fatalf("cold GET: %d, %d bytes", resp.StatusCode, len(body))
	}
	m.waitFills()
	return path, layer
}

// waitIdle waits until no fill is running (fills outlive requests).
func (m *mirror) waitFills() {
	m.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if metricValue(m.t, m.metrics, "registry_edge_fills_in_flight") == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	m.t.Fatal("fills still running after 10s")
}

func metricValue(t testing.TB, m *metrics.Metrics, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, mm := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range mm.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			switch {
			case mm.Counter != nil:
				total += mm.Counter.GetValue()
			case mm.Gauge != nil:
				total += mm.Gauge.GetValue()
			}
		}
	}
	return total
}

func blobPath(repo string, d interface{ String() string }) string {
	return "/v2/" + repo + "/blobs/" + d.String()
}

func manifestPath(repo, ref string) string { return "/v2/" + repo + "/manifests/" + ref }

var _ = bytes.Equal
var _ = strings.Contains
