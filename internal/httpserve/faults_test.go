package httpserve_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/proxy"
	"github.com/registry-edge/registry-edge/internal/testutil/fakeupstream"
	"github.com/registry-edge/registry-edge/internal/testutil/syncbuf"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

// A fill whose bytes prove wrong must fail the client's transfer and commit
// (and keep) nothing. (Broken transfers resume: see resume_test.go.)
func TestBrokenBlobFromUpstream(t *testing.T) {
	t.Parallel()
	layer := fakeupstream.Random(t, 200_000)
	corrupt := append([]byte{}, layer...)
	corrupt[len(corrupt)/2] ^= 0xff
	tests := []struct {
		name  string
		fault func() fakeupstream.Fault
	}{
		{"wrong digest", func() fakeupstream.Fault { return fakeupstream.Body(corrupt, len(corrupt), false) }},
		{"too long", func() fakeupstream.Fault { return fakeupstream.Body(append(layer, 'x'), len(layer)+1, false) }},
		{"wrong digest without Content-Length", func() fakeupstream.Fault { return fakeupstream.Body(corrupt, -1, false) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var logs syncbuf.Buffer
			m := newMirror(t, func(o *proxy.Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
			_, layers := m.fake.Image("app", "v1", layer)
			m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), tt.fault()))
			before := m.storedBlobs()
			resp, body, err := m.do(http.MethodGet, blobPath("app", layers[0].Digest))
			switch {
			case err == nil && resp.StatusCode == http.StatusOK:
				t.Fatalf("GET of a broken blob ended cleanly with %d bytes (equal to the real blob: %v)", len(body), bytes.Equal(body, layer))
			case err == nil && resp.StatusCode < 500:
				t.Fatalf("GET of a broken blob answered %d, want a failed transfer or 5xx", resp.StatusCode)
			}
			m.waitFills()
			if got := m.storedBlobs(); got != before {
				t.Errorf("store holds %d blobs after a broken fill, want %d", got, before)
			}
			if left := m.ingestFiles(); len(left) != 0 {
				t.Errorf("ingest files left behind: %v", left)
			}
			if got := metricValue(t, m.metrics, "registry_edge_fill_failures_total"); got != 1 {
				t.Errorf("fill failures metric = %v, want 1", got)
			}
			// The wrong bytes are discarded, and the log says so.
			if line := logs.Line("blob fill failed"); !strings.Contains(line, " kept=0 ") {
				t.Errorf("fill failure logged as %q, want kept=0", line)
			}
			// Once the upstream is healthy again, the blob is fetched anew and verified.
			m.fake.ClearFaults()
			resp, body = m.get(http.MethodGet, blobPath("app", layers[0].Digest))
			if resp.StatusCode != 200 || !bytes.Equal(body, layer) {
				t.Fatalf("GET after recovery: %d, equal=%v", resp.StatusCode, bytes.Equal(body, layer))
			}
		})
	}
}

// An HTTP/1.0 client reads a body without a length up to the close: a
// blob of unknown size that fails its digest check must end with a reset,
// never with a close after every byte.
func TestBrokenBlobOfUnknownSizeEndsWithAResetForHTTP10(t *testing.T) {
	t.Parallel()
	layer := fakeupstream.Random(t, 200_000)
	corrupt := append([]byte{}, layer...)
	corrupt[len(corrupt)-1] ^= 0xff // only the last byte is wrong
	m := newMirror(t)
	_, layers := m.fake.Image("app", "v1", layer)
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), fakeupstream.Body(corrupt, -1, false)))

	c, err := net.Dial("tcp", m.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: mirror.test\r\n\r\n", blobPath("app", layers[0].Digest))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("response head: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("the HTTP/1.0 body (%d bytes, Content-Length %d) ended cleanly; want a reset", len(body), resp.ContentLength)
	}
	if bytes.Equal(body, corrupt) {
		t.Errorf("the client got every byte of the broken blob before the reset")
	}
	m.waitFills()
}

// An upstream that answers a manifest request with something that is not a
// manifest (a captive portal's page; garbage under a manifest media type)
// is the upstream's fault: 502, and nothing is cached.
func TestNotAManifestFromUpstream(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct{ mediaType, body string }{
		"captive portal": {"text/html", "<html><body>Sign in to the network</body></html>"},
		"not JSON":       {ocispec.MediaTypeImageManifest, "not json at all"},
		// JSON that names a type a browser renders: served with it, it
		// would be a page on the mirror's origin.
		"JSON page": {"text/html", `{"schemaVersion":2,"mediaType":"text/html","config":{},"layers":[],"annotations":{"x":"<script>alert(1)</script>"}}`},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := newMirror(t)
			m.fake.AddManifest("app", "v1", tc.mediaType, []byte(tc.body))
			before := m.storedBlobs()
			resp, body := m.get(http.MethodGet, manifestPath("app", "v1"), "Accept", ocispec.MediaTypeImageManifest)
			m.wantCode(resp, body, http.StatusBadGateway, "MANIFEST_INVALID")
			if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options = %q, want nosniff", got)
			}
			if got := m.storedBlobs(); got != before {
				t.Errorf("the store holds %d items after the upstream's junk, want %d", got, before)
			}
		})
	}
}

// An OCI artifact manifest (image-spec 1.1 release candidates), as
// registries that implemented them serve it, is a manifest: vendor JSON
// types are served, types a browser renders are not.
// TestSchema1ManifestFromUpstream checks that a device asking for an image
// the upstream has only as a Docker schema 1 manifest is told so (502, a
// device falls back to the registry itself), not that the upstream sent
// something that is no manifest.
func TestSchema1ManifestFromUpstream(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	body := `{"schemaVersion":1,"name":"old","tag":"v1","architecture":"amd64","fsLayers":[],"history":[]}`
	m.fake.AddManifest("old", "v1", "application/vnd.docker.distribution.manifest.v1+prettyjws", []byte(body))
	resp, b := m.get(http.MethodGet, manifestPath("old", "v1"))
	m.wantCode(resp, b, http.StatusBadGateway, "MANIFEST_INVALID")
	if !strings.Contains(string(b), "schema 1") {
		t.Errorf("error body %s does not say the manifest is of schema 1", b)
	}
}

func TestArtifactManifestIsServed(t *testing.T) {
	t.Parallel()
	const mt = "application/vnd.oci.artifact.manifest.v1+json"
	body := `{"mediaType":"` + mt + `","artifactType":"application/vnd.cncf.notary.signature","blobs":[],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1}}`
	m := newMirror(t)
	m.fake.AddManifest("app", "sig", mt, []byte(body))
	resp, b := m.get(http.MethodGet, manifestPath("app", "sig"), "Accept", mt)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != mt || string(b) != body {
		t.Errorf("artifact manifest: %d %s %q, want 200 with its type and bytes", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
}

func TestWrongManifestFromUpstream(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	mdesc, _ := m.fake.Image("app", "v1", []byte("x"))
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, "/manifests/"+mdesc.Digest.String(), func(w http.ResponseWriter, r *http.Request, n int) bool {
		w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
		io.WriteString(w, `{"schemaVersion":2,"tampered":true}`)
		return true
	}))
	resp, body := m.get(http.MethodGet, manifestPath("app", mdesc.Digest.String()))
	if resp.StatusCode < 500 {
		t.Fatalf("tampered manifest by digest: %d %s, want 5xx", resp.StatusCode, body)
	}
	if got := m.storedBlobs(); got != 0 {
		t.Errorf("store holds %d blobs, want 0", got)
	}
}

func TestOversizeManifestIsRejected(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	big := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"pad":"` + strings.Repeat("a", 4<<20) + `"}}`)
	m.fake.AddManifest("app", "huge", ocispec.MediaTypeImageManifest, big)
	resp, body := m.get(http.MethodGet, manifestPath("app", "huge"))
	if resp.StatusCode < 400 {
		t.Fatalf("oversize manifest: %d", resp.StatusCode)
	}
	m.wantCode(resp, body, resp.StatusCode, "MANIFEST_INVALID")
	if got := m.storedBlobs(); got != 0 {
		t.Errorf("store holds %d blobs after an oversize manifest, want 0", got)
	}
}

func TestRetries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		fault fakeupstream.Fault
	}{
		{"429 with Retry-After", fakeupstream.Status(http.StatusTooManyRequests, "1", 1)},
		{"503 twice", fakeupstream.Status(http.StatusServiceUnavailable, "", 2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := newMirror(t)
			layer := []byte("retry me")
			_, layers := m.fake.Image("app", "v1", layer)
			m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), tt.fault))
			resp, body := m.get(http.MethodGet, blobPath("app", layers[0].Digest))
			if resp.StatusCode != 200 || !bytes.Equal(body, layer) {
				t.Fatalf("GET after retryable errors: %d %s", resp.StatusCode, body)
			}
			if n := m.fake.Count(http.MethodGet, blobPath("app", layers[0].Digest)); n < 2 {
				t.Errorf("upstream GETs = %d, want the failure(s) plus one success", n)
			}
		})
	}
}

func TestRateLimitWithLongRetryAfterIsPassedOn(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	_, layers := m.fake.Image("app", "v1", []byte("x"))
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), fakeupstream.Status(http.StatusTooManyRequests, "3600", 0)))
	resp, body := m.get(http.MethodGet, blobPath("app", layers[0].Digest))
	m.wantCode(resp, body, http.StatusTooManyRequests, "TOOMANYREQUESTS")
	if resp.Header.Get("Retry-After") == "" {
		t.Error("no Retry-After passed on to the client")
	}
}

// Concurrent cold misses of one blob cause exactly one upstream fetch, and
// Cold misses of blobs of every size, with and without a Content-Length
// from the upstream, reach the client whole and are stored.
func TestColdMissSizes(t *testing.T) {
	t.Parallel()
	for _, size := range []int{0, 1, 100, 32 << 10, 32<<10 + 1, 300_000} {
		for _, chunked := range []bool{false, true} {
			t.Run(fmt.Sprintf("%d bytes, chunked=%v", size, chunked), func(t *testing.T) {
				t.Parallel()
				m := newMirror(t)
				layer := fakeupstream.Random(t, size)
				_, layers := m.fake.Image("app", "v1", layer)
				if chunked {
					m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), fakeupstream.Body(layer, -1, false)))
				}
				resp, body := m.get(http.MethodGet, blobPath("app", layers[0].Digest))
				if resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
					t.Fatalf("GET: %d, %d bytes, equal=%v", resp.StatusCode, len(body), bytes.Equal(body, layer))
				}
				if cl := resp.Header.Get("Content-Length"); !chunked && cl != strconv.Itoa(size) {
					t.Errorf("Content-Length = %q, want %d", cl, size)
				}
				m.waitFills()
				if _, err := m.store.Stat(context.Background(), layers[0].Digest); err != nil {
					t.Errorf("blob not committed: %v", err)
				}
			})
		}
	}
}

// every client, including one that joins mid-fill, gets the verified bytes,
// the first ones before the upstream has sent the whole blob.
func TestConcurrentColdMissesShareOneFill(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 1<<20)
	_, layers := m.fake.Image("app", "v1", layer)
	started, release := make(chan struct{}), make(chan struct{})
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), fakeupstream.Gate(layer, started, release)))

	// The first client receives the first half while the upstream is held.
	resp, err := http.Get(m.srv.URL + blobPath("app", layers[0].Digest))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-started
	head := make([]byte, 1000)
	if _, err := io.ReadFull(resp.Body, head); err != nil || !bytes.Equal(head, layer[:1000]) {
		t.Fatalf("first bytes before the upstream finished: %v", err)
	}

	const clients = 16
	var wg sync.WaitGroup
	bodies := make([][]byte, clients)
	errs := make([]error, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, bodies[i], errs[i] = m.do(http.MethodGet, blobPath("app", layers[0].Digest))
		}()
	}
	// A client that leaves mid-fill does not stop the fill.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.srv.URL+blobPath("app", layers[0].Digest), nil)
	if leaver, err := http.DefaultClient.Do(req); err == nil {
		io.ReadFull(leaver.Body, make([]byte, 10))
		cancel()
		leaver.Body.Close()
	} else {
		cancel()
	}
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(append(head, rest...), layer) {
		t.Fatalf("first client: %v, equal=%v", err, bytes.Equal(append(head, rest...), layer))
	}
	wg.Wait()
	for i := range bodies {
		if errs[i] != nil || !bytes.Equal(bodies[i], layer) {
			t.Errorf("client %d: %v, %d bytes, equal=%v", i, errs[i], len(bodies[i]), bytes.Equal(bodies[i], layer))
		}
	}
	m.waitFills()
	if n := m.fake.Count(http.MethodGet, blobPath("app", layers[0].Digest)); n != 1 {
		t.Errorf("upstream GETs of the blob = %d, want 1", n)
	}
	if _, err := m.store.Stat(context.Background(), layers[0].Digest); err != nil {
		t.Errorf("blob not committed: %v", err)
	}
}

// A client that disconnects before anyone else asked still leaves a
// committed blob behind: the fill belongs to the mirror.
func TestClientLeavingDoesNotStopFill(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 512<<10)
	_, layers := m.fake.Image("app", "v1", layer)
	started, release := make(chan struct{}), make(chan struct{})
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), fakeupstream.Gate(layer, started, release)))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.srv.URL+blobPath("app", layers[0].Digest), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	io.ReadFull(resp.Body, make([]byte, 100))
	cancel()
	resp.Body.Close()
	close(release)
	m.waitFills()
	if _, err := m.store.Stat(context.Background(), layers[0].Digest); err != nil {
		t.Fatalf("blob not committed after its only client left: %v", err)
	}
	before := m.fake.Total()
	resp2, body := m.get(http.MethodGet, blobPath("app", layers[0].Digest))
	if resp2.StatusCode != 200 || !bytes.Equal(body, layer) || m.fake.Total() != before {
		t.Errorf("GET after the fill: %d, equal=%v, upstream requests %d", resp2.StatusCode, bytes.Equal(body, layer), m.fake.Total()-before)
	}
}

// holdGET holds the upstream's answers to GETs of path until the returned
// function is called (at the latest when the test ends).
func holdGET(t *testing.T, m *mirror, path string) (unblock func()) {
	t.Helper()
	release := make(chan struct{})
	var once sync.Once
	unblock = func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	m.fake.Fail(func(w http.ResponseWriter, r *http.Request, n int) bool {
		if r.Method == http.MethodGet && r.URL.Path == path {
			<-release
		}
		return false
	})
	return unblock
}

// leaveManifest asks the mirror's proxy for app:ref as a client that
// leaves once the upstream was asked for held (a path holdGET holds), and
// returns where Manifest's error arrives.
func leaveManifest(t *testing.T, m *mirror, ref, held string) <-chan error {
	t.Helper()
	target, err := m.router.Route("app", "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := m.proxy.Manifest(ctx, target, ref)
		done <- err
	}()
	for m.fake.Count(http.MethodGet, held) == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	return done
}

// newMirrorWithAccessLog is newMirror whose access log goes to the buffer
// it returns.
func newMirrorWithAccessLog(t *testing.T, opts ...mirrorOpt) (*mirror, *syncbuf.Buffer) {
	t.Helper()
	var log syncbuf.Buffer
	m := newMirror(t, opts...)
	m.accessLog = &log
	m.restart()
	return m, &log
}

// A client that gives up before its answer (a layer being rebuilt, a
// region still computing) is logged and counted as 499, not as a server
// error.
func TestClientLeavingIsNoServerError(t *testing.T) {
	t.Parallel()
	m, log := newMirrorWithAccessLog(t)
	m.fake.Image("app", "v1", []byte("layer"))
	unblock := holdGET(t, m, manifestPath("app", "v1"))
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.srv.URL+manifestPath("app", "v1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for m.fake.Count(http.MethodGet, manifestPath("app", "v1")) == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the request was answered %d after its client left", resp.StatusCode)
	}
	// The upstream still holds its answer: the handler ends when it
	// notices its client's connection is gone.
	for i := 0; i < 1000 && !strings.Contains(log.String(), "status=499"); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	unblock()
	if !strings.Contains(log.String(), "status=499") {
		t.Errorf("access log has no status=499 for the client that left:\n%s", log.String())
	}
	if got := metricValue(t, m.metrics, "registry_edge_http_requests_total", "code", "500"); got != 0 {
		t.Errorf("%v requests counted as 500 for a client that left", got)
	}
}

// A client that leaves while its stale tag is being revalidated (the tag
// moved, the new manifest is on its way) is not counted as a stale serve:
// the upstream is fine.
func TestClientLeavingARevalidationIsNoStaleServe(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	m.fake.Image("app", "v1", []byte("old layer"))
	pullImage(t, m, "v1", []byte("old layer"))
	moved, _ := m.fake.Image("app", "v1", []byte("new layer"))
	m.clock.Advance(2 * time.Minute) // past the tag TTL
	unblock := holdGET(t, m, manifestPath("app", moved.Digest.String()))
	if err := <-leaveManifest(t, m, "v1", manifestPath("app", moved.Digest.String())); !errors.Is(err, context.Canceled) {
		t.Errorf("client that left: %v, want context.Canceled", err)
	}
	unblock()
	// The fetch went on: wait for it (it writes to the store).
	target, err := m.router.Route("app", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.proxy.Manifest(context.Background(), target, moved.Digest.String()); err != nil {
		t.Fatal(err)
	}
	if got := metricValue(t, m.metrics, "registry_edge_stale_tags_served_total"); got != 0 {
		t.Errorf("stale serves = %v for a client that left a healthy revalidation, want 0", got)
	}
}

// A client that leaves while the manifest it asked for is being fetched
// returns at once; the fetch, shared with any other client of the tag,
// goes on and is stored.
func TestClientLeavingAManifestFetchReturns(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	m.fake.Image("app", "v1", []byte("layer"))
	unblock := holdGET(t, m, manifestPath("app", "v1"))
	done := leaveManifest(t, m, "v1", manifestPath("app", "v1"))
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("client that left: %v, want context.Canceled", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the client that left still waits for the upstream")
	}
	unblock()
	target, err := m.router.Route("app", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.proxy.Manifest(context.Background(), target, "v1"); err != nil {
		t.Fatal(err)
	}
	if n := m.fake.Count(http.MethodGet, manifestPath("app", "v1")); n != 1 {
		t.Errorf("manifest fetched %d times, want 1 (the first fetch went on)", n)
	}
}

// Made-up methods are answered, counted and logged without growing the
// metrics: one label value for all of them, and a bounded log field.
func TestMadeUpMethodsDoNotGrowTheMetrics(t *testing.T) {
	t.Parallel()
	m, log := newMirrorWithAccessLog(t)
	long := strings.Repeat("X", 10000)
	for i := range 50 {
		resp, _, err := m.do(fmt.Sprintf("M%d%s", i, long), "/v2/")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode < 400 {
			t.Errorf("made-up method: %d, want an error", resp.StatusCode)
		}
	}
	mfs, err := m.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "registry_edge_http_requests_total" {
			continue
		}
		for _, mm := range mf.GetMetric() {
			for _, l := range mm.GetLabel() {
				if l.GetName() == "method" && len(l.GetValue()) > 8 {
					t.Errorf("method label %.40q...: a label value per made-up method", l.GetValue())
				}
			}
		}
		if n := len(mf.GetMetric()); n > 5 {
			t.Errorf("%d series after 50 made-up methods, want a handful", n)
		}
	}
	if strings.Contains(log.String(), long) {
		t.Error("the access log holds a whole 10 KB method")
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	d := digest.FromString("x").String()
	tests := []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v2/UPPER/manifests/latest", 400, "NAME_INVALID"},
		{"GET", "/v2/a..b/manifests/latest", 400, "NAME_INVALID"},
		{"GET", "/v2/../../etc/passwd/manifests/latest", 400, "NAME_INVALID"},
		{"GET", "/v2/%2e%2e/%2e%2e/etc/manifests/latest", 400, "NAME_INVALID"},
		{"GET", "/v2/app/blobs/sha256:1234", 400, "DIGEST_INVALID"},
		{"GET", "/v2/app/blobs/sha256:../../../../etc/passwd", 400, "NAME_INVALID"},
		{"HEAD", "/v2/app/blobs/notadigest", 400, ""},
		{"GET", "/v2/app/manifests/bad$tag", 400, "MANIFEST_INVALID"},
		{"PUT", "/v2/app/manifests/latest", 405, "UNSUPPORTED"},
		{"DELETE", "/v2/app/manifests/" + d, 405, "UNSUPPORTED"},
		{"DELETE", "/v2/app/blobs/" + d, 405, "UNSUPPORTED"},
		{"POST", "/v2/app/blobs/uploads/", 405, "UNSUPPORTED"},
		{"PATCH", "/v2/app/blobs/uploads/some-session", 405, "UNSUPPORTED"},
		{"PUT", "/v2/app/blobs/uploads/some-session?digest=" + d, 405, "UNSUPPORTED"},
		{"GET", "/v2/app/unknown/endpoint", 404, "UNSUPPORTED"},
		{"GET", "/v2/app/manifests/missing", 404, "MANIFEST_UNKNOWN"},
		{"GET", "/v2/app/blobs/" + d, 404, "BLOB_UNKNOWN"},
	}
	for _, tt := range tests {
		resp, body, err := m.do(tt.method, tt.path)
		if err != nil {
			t.Fatalf("%s %s: %v", tt.method, tt.path, err)
		}
		if resp.StatusCode != tt.status {
			t.Errorf("%s %s: status %d, want %d (%s)", tt.method, tt.path, resp.StatusCode, tt.status, body)
			continue
		}
		if tt.code != "" && !strings.Contains(string(body), `"code":"`+tt.code+`"`) {
			t.Errorf("%s %s: body %s, want code %s", tt.method, tt.path, body, tt.code)
		}
	}
	if got := m.storedBlobs(); got != 0 {
		t.Errorf("bad input left %d blobs in the store", got)
	}
	if left := m.ingestFiles(); len(left) != 0 {
		t.Errorf("bad input left ingest files: %v", left)
	}
}

// A 405 names the methods its resource has (RFC 9110 section 15.5.6
// makes Allow a MUST), and OPTIONS is answered with them rather than
// refused as a push.
func TestMethodNotAllowedSaysWhatIsAllowed(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	d := digest.FromString("x").String()
	tests := []struct {
		method, path string
		status       int
		allow        string
	}{
		{"POST", "/v2/", 405, "GET, HEAD, OPTIONS"},
		{"PUT", "/v2/app/manifests/latest", 405, "GET, HEAD, OPTIONS"},
		{"DELETE", "/v2/app/blobs/" + d, 405, "GET, HEAD, OPTIONS"},
		{"DELETE", "/v2/app/tags/list", 405, "GET, HEAD, OPTIONS"},
		{"POST", "/v2/app/blobs/uploads/", 405, "OPTIONS"},
		{"GET", "/v2/app/blobs/uploads/some-session", 405, "OPTIONS"},
		{"OPTIONS", "/v2/", 204, "GET, HEAD, OPTIONS"},
		{"OPTIONS", "/v2/app/manifests/latest", 204, "GET, HEAD, OPTIONS"},
		{"OPTIONS", "/v2/app/blobs/uploads/", 204, "OPTIONS"},
		{"GET", "/v2/", 200, ""},
	}
	for _, tt := range tests {
		resp, body := m.get(tt.method, tt.path)
		if resp.StatusCode != tt.status {
			t.Errorf("%s %s: status %d, want %d (%s)", tt.method, tt.path, resp.StatusCode, tt.status, body)
		}
		if got := resp.Header.Get("Allow"); got != tt.allow {
			t.Errorf("%s %s: Allow = %q, want %q", tt.method, tt.path, got, tt.allow)
		}
		if tt.status == 204 && len(body) != 0 {
			t.Errorf("%s %s: body %q, want none", tt.method, tt.path, body)
		}
	}
	if got := m.storedBlobs(); got != 0 {
		t.Errorf("OPTIONS and refused writes left %d blobs in the store", got)
	}
}

func TestBaseAndHealth(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	resp, body := m.get(http.MethodGet, "/v2/")
	if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("GET /v2/: X-Content-Type-Options = %q, want nosniff on every answer", got)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" || string(body) != "{}" {
		t.Errorf("GET /v2/: %d %q %s", resp.StatusCode, resp.Header.Get("Docker-Distribution-API-Version"), body)
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if resp, _ := m.get(http.MethodGet, p); resp.StatusCode != 200 {
			t.Errorf("GET %s: %d", p, resp.StatusCode)
		}
	}
	_, body = m.get(http.MethodGet, "/metrics")
	for _, name := range []string{"registry_edge_http_requests_total", "registry_edge_fills_in_flight"} {
		if !bytes.Contains(body, []byte(name)) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

var _ = errors.Is

// The mirror marks the 5xx answers it gives because its upstream failed,
// so that a registry-edge tier below knows the mirror itself answered (see
// upstream.HeaderTierError); other answers carry no mark.
func TestUpstreamFailuresAreMarkedForTiersBelow(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	_, layers := m.fake.Image("app", "v1", fakeupstream.Random(t, 1000))
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), fakeupstream.Status(http.StatusServiceUnavailable, "", 0)))
	resp, _ := m.get(http.MethodGet, blobPath("app", layers[0].Digest))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(upstream.HeaderTierError) != "upstream" {
		t.Errorf("upstream 503: %d, %s %q; want 503 marked", resp.StatusCode, upstream.HeaderTierError, resp.Header.Get(upstream.HeaderTierError))
	}
	resp, _ = m.get(http.MethodGet, blobPath("app", digest.FromString("absent")))
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get(upstream.HeaderTierError) != "" {
		t.Errorf("404: %d, %s %q; want no mark", resp.StatusCode, upstream.HeaderTierError, resp.Header.Get(upstream.HeaderTierError))
	}
}

// addUpstream restarts m with one more upstream, named name, in front of a
// new fake registry, which it returns with its request log.
func addUpstream(t *testing.T, m *mirror, name string) *fakeupstream.Registry {
	t.Helper()
	fake := fakeupstream.New()
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	client, err := upstream.New(upstream.Options{URL: srv.URL, RegistryName: name, ConnectTimeout: time.Second, ResponseHeaderTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	router, err := proxy.NewRouter(append(slices.Clone(m.router.Remotes()), &proxy.Remote{Name: name, Client: client}), 0)
	if err != nil {
		t.Fatal(err)
	}
	m.stop()
	m.router = router
	m.start()
	return fake
}

// Content stored from one upstream is served for another only if that one
// sends bytes of it: its word (a HEAD) would let an upstream that lies, or
// a man in the middle of a plain-HTTP one, read any other registry's
// content by digest. An upstream that has the blob gets it served without
// sending it all.
func TestAnotherUpstreamMustShowTheBytes(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	secret := fakeupstream.Random(t, 100_000)
	_, layers := m.fake.Image("private/app", "v1", secret)
	d := layers[0].Digest
	if resp, body := m.get(http.MethodGet, blobPath("private/app", d)); resp.StatusCode != http.StatusOK || !bytes.Equal(body, secret) {
		t.Fatalf("GET from central: %d", resp.StatusCode)
	}
	m.waitFills()

	liar := addUpstream(t, m, "liar.test")
	liar.Fail(liesAbout(d, len(secret)))
	honest := addUpstream(t, m, "honest.test")
	honest.AddBlob(secret)
	honest.LinkBlob("mirror/app", d)

	for _, path := range []string{"/v2/liar.test/x/blobs/" + d.String(), "/v2/x/blobs/" + d.String() + "?ns=liar.test"} {
		if resp, body := m.get(http.MethodGet, path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s through a lying upstream: %d (%d bytes), want 404", path, resp.StatusCode, len(body))
		}
	}
	resp, body := m.get(http.MethodGet, "/v2/honest.test/mirror/app/blobs/"+d.String())
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, secret) {
		t.Errorf("GET through an upstream that has the blob: %d", resp.StatusCode)
	}
	rs := honest.Ranges(http.MethodGet, "/v2/mirror/app/blobs/"+d.String())
	var first, last int
	if len(rs) != 1 {
		t.Errorf("the honest upstream's GETs had ranges %q, want one", rs)
	} else if _, err := fmt.Sscanf(rs[0], "bytes=%d-%d", &first, &last); err != nil || last-first+1 != 256 {
		t.Errorf("the honest upstream was asked for %q, want 256 bytes", rs[0])
	}
}

// liesAbout answers every request as if it held blob d of size bytes, with
// zeros for a body.
func liesAbout(d digest.Digest, size int) fakeupstream.Fault {
	return func(w http.ResponseWriter, r *http.Request, _ int) bool {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.Header().Set("Docker-Content-Digest", d.String())
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			w.Write(make([]byte, size))
		}
		return true
	}
}

// The same holds for a complete partial download a fill of another
// upstream left: it does not say whose it is.
func TestAnotherUpstreamMustShowTheBytesOfAPartial(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	secret := fakeupstream.Random(t, 100_000)
	_, layers := m.fake.Image("private/app", "v1", secret)
	d := layers[0].Digest
	leavePartial(t, m, d, secret, int64(len(secret)))
	liar := addUpstream(t, m, "liar.test")
	liar.Fail(liesAbout(d, len(secret)))
	resp, body, err := m.do(http.MethodGet, "/v2/liar.test/x/blobs/"+d.String())
	if err == nil && resp.StatusCode == http.StatusOK && bytes.Equal(body, secret) {
		t.Fatal("a lying upstream's client read another upstream's partial download")
	}
	m.waitFills()
	// The partial is still there for its own upstream.
	resp, body = m.get(http.MethodGet, blobPath("private/app", d))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, secret) {
		t.Errorf("GET from central: %d", resp.StatusCode)
	}
}

// A client of another repository of the same upstream joins a running fill
// of a blob both hold, on the upstream's word, before the blob is stored.
func TestJoinAnotherRepositorysFill(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	d := layers[0].Digest
	m.fake.LinkBlob("other", d)
	release := make(chan struct{})
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, "/v2/app/blobs/"+d.String(), fakeupstream.Stall(layer, 1000, release)))
	first := make(chan []byte)
	go func() {
		_, body, _ := m.do(http.MethodGet, blobPath("app", d))
		first <- body
	}()
	for {
		if _, _, ok := m.proxy.FillProgress(d); ok {
			break
		}
		time.Sleep(time.Millisecond)
	}
	type answer struct {
		status int
		body   []byte
	}
	second := make(chan answer, 1)
	go func() {
		resp, b, _ := m.do(http.MethodGet, blobPath("other", d))
		a := answer{body: b}
		if resp != nil {
			a.status = resp.StatusCode
		}
		second <- a
	}()
	// The second client asks the upstream about its repository, then
	// joins the fill (or fails at once).
	var got *answer
	for deadline := time.Now().Add(10 * time.Second); got == nil && m.fake.Count(http.MethodHead, blobPath("other", d)) == 0; {
		select {
		case a := <-second:
			got = &a
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the second client neither asked the upstream nor answered")
		}
	}
	close(release)
	if b := <-first; !bytes.Equal(b, layer) {
		t.Errorf("first client: %d bytes, equal %v", len(b), bytes.Equal(b, layer))
	}
	if got == nil {
		a := <-second
		got = &a
	}
	if got.status != http.StatusOK || !bytes.Equal(got.body, layer) {
		t.Errorf("second client, another repository: %d, %d bytes", got.status, len(got.body))
	}
}

// lookupSignal is a store that tells, once armed, when a client looks for
// blob d in it (the store lookup that precedes joining a running fill).
type lookupSignal struct {
	*blobstore.FS
	d        digest.Digest
	mu       sync.Mutex
	armed    bool
	lookedUp chan struct{}
}

func (s *lookupSignal) Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, error) {
	s.mu.Lock()
	if s.armed && d == s.d {
		s.armed = false
		close(s.lookedUp)
	}
	s.mu.Unlock()
	return s.FS.Open(ctx, d)
}

// A client of another upstream that finds a fill of the blob running waits
// for it; if that fill fails, the client's own upstream is asked.
func TestOtherUpstreamsFailedFillDoesNotFailThisClient(t *testing.T) {
	t.Parallel()
	ls := &lookupSignal{lookedUp: make(chan struct{})}
	m := newMirrorWrapped(t, func(fs *blobstore.FS) proxy.Store { ls.FS = fs; return ls })
	layer := fakeupstream.Random(t, 100_000)
	_, layers := m.fake.Image("app", "v1", layer)
	d := layers[0].Digest
	honest := addUpstream(t, m, "honest.test")
	honest.AddBlob(layer)
	honest.LinkBlob("mirror/app", d)
	release := make(chan struct{})
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, "/v2/app/blobs/"+d.String(), func(w http.ResponseWriter, r *http.Request, _ int) bool {
		<-release
		w.WriteHeader(http.StatusNotFound)
		return true
	}))
	go m.do(http.MethodGet, blobPath("app", d))
	for {
		if _, _, ok := m.proxy.FillProgress(d); ok {
			break
		}
		time.Sleep(time.Millisecond) // the test's deadline bounds the wait
	}
	ls.mu.Lock()
	ls.d, ls.armed = d, true
	ls.mu.Unlock()
	type answer struct {
		status int
		body   []byte
	}
	done := make(chan answer, 1)
	go func() {
		resp, b, _ := m.do(http.MethodGet, "/v2/honest.test/mirror/app/blobs/"+d.String())
		a := answer{body: b}
		if resp != nil {
			a.status = resp.StatusCode
		}
		done <- a
	}()
	// The client found the blob not stored while central's fill is held
	// (it cannot end before release): it finds that fill running.
	<-ls.lookedUp
	close(release)
	if a := <-done; a.status != http.StatusOK || !bytes.Equal(a.body, layer) {
		t.Fatalf("client of an upstream that holds the blob: %d, %d bytes", a.status, len(a.body))
	}
}

// The same holds for manifests: one stored from another upstream only is
// fetched from the upstream asked, and verified, not taken on its word.
func TestAnotherUpstreamMustSendTheManifest(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	desc, _ := m.fake.Image("private/app", "v1", fakeupstream.Random(t, 1000))
	resp, private := m.get(http.MethodGet, manifestPath("private/app", "v1"), "Accept", ocispec.MediaTypeImageManifest)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET from central: %d", resp.StatusCode)
	}
	liar := addUpstream(t, m, "liar.test")
	liar.Fail(liesAbout(desc.Digest, int(desc.Size)))
	resp, body := m.get(http.MethodGet, "/v2/liar.test/x/manifests/"+desc.Digest.String(), "Accept", ocispec.MediaTypeImageManifest)
	if resp.StatusCode == http.StatusOK || bytes.Equal(body, private) {
		t.Errorf("GET the manifest through a lying upstream: %d, %d bytes", resp.StatusCode, len(body))
	}
}

// slowLookup is a store whose first lookup of blob gate (an Open or a
// Stat, whichever the proxy asks first) waits for release, after closing
// reached: a bucket that is slow to answer a GET or a HEAD.
type slowLookup struct {
	*blobstore.FS
	gate             digest.Digest
	reached, release chan struct{}
	once             sync.Once
}

func (s *slowLookup) wait(d digest.Digest) {
	if d == s.gate {
		s.once.Do(func() { close(s.reached); <-s.release })
	}
}

func (s *slowLookup) Stat(ctx context.Context, d digest.Digest) (blobstore.Info, error) {
	s.wait(d)
	return s.FS.Stat(ctx, d)
}

func (s *slowLookup) Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, error) {
	s.wait(d)
	return s.FS.Open(ctx, d)
}

// A miss waiting on the store (a slow bucket) does not hold up misses of
// other blobs.
func TestSlowStoreDoesNotSerializeMisses(t *testing.T) {
	t.Parallel()
	a, b := fakeupstream.Random(t, 1000), fakeupstream.Random(t, 1000)
	s := &slowLookup{gate: digest.FromBytes(a), reached: make(chan struct{}), release: make(chan struct{})}
	m := newMirrorWrapped(t, func(fs *blobstore.FS) proxy.Store { s.FS = fs; return s })
	for _, blob := range [][]byte{a, b} {
		m.fake.LinkBlob("app", m.fake.AddBlob(blob).Digest)
	}
	aDone := make(chan struct{})
	go func() { defer close(aDone); m.do(http.MethodGet, blobPath("app", digest.FromBytes(a))) }()
	<-s.reached
	bDone := make(chan int, 1)
	go func() {
		resp, _, err := m.do(http.MethodGet, blobPath("app", digest.FromBytes(b)))
		if err != nil {
			bDone <- -1
			return
		}
		bDone <- resp.StatusCode
	}()
	select {
	case code := <-bDone:
		if code != http.StatusOK {
			t.Errorf("GET of another blob while the store is slow: %d", code)
		}
	case <-time.After(10 * time.Second): // only reached when the misses are serialized
		t.Error("a miss waited for another blob's store lookup")
	}
	close(s.release)
	<-aDone
}
