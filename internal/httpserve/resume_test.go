package httpserve_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/proxy"
	"github.com/registry-edge/registry-edge/internal/testutil/fakeupstream"
)

func fastStalls(fill, client time.Duration) mirrorOpt {
	return func(o *proxy.Options) { o.FillStallTimeout, o.ClientStallTimeout = fill, client }
}

// A transfer that breaks mid-blob resumes with a Range request from the
// last byte on disk; the client sees one whole, verified body.
func TestBrokenTransferResumes(t *testing.T) {
	t.Parallel()
	layer := fakeupstream.Random(t, 300_000)
	cut := 120_000
	for _, tt := range []struct {
		name  string
		fault fakeupstream.Fault
	}{
		{"truncated body", fakeupstream.Cut(layer, cut, false)},
		{"connection reset", fakeupstream.Cut(layer, cut, true)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := newMirror(t)
			_, layers := m.fake.Image("app", "v1", layer)
			path := blobPath("app", layers[0].Digest)
			m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), fakeupstream.First(1, tt.fault)))

			resp, body := m.get(http.MethodGet, path)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
				t.Fatalf("GET: %d, %d bytes, equal=%v", resp.StatusCode, len(body), bytes.Equal(body, layer))
			}
			m.waitFills()
			ranges := m.fake.Ranges(http.MethodGet, path)
			if want := []string{"", "bytes=" + strconv.Itoa(cut) + "-"}; fmt.Sprint(ranges) != fmt.Sprint(want) {
				t.Errorf("upstream GETs had Range %q, want %q", ranges, want)
			}
			if got := metricValue(t, m.metrics, "registry_edge_fill_resumes_total", "upstream", "central.test", "cause", "link"); got != 1 {
				t.Errorf("resumes metric = %v, want 1", got)
			}
			if got := metricValue(t, m.metrics, "registry_edge_fill_refetched_bytes_total", "upstream", "central.test"); got != 0 {
				t.Errorf("refetched bytes = %v, want 0", got)
			}
			if got := metricValue(t, m.metrics, "registry_edge_upstream_fetched_bytes_total", "upstream", "central.test"); got != float64(len(layer)) {
				t.Errorf("bytes fetched = %v, want exactly the blob's %d", got, len(layer))
			}
			if _, err := m.store.Stat(context.Background(), layers[0].Digest); err != nil {
				t.Errorf("blob not committed: %v", err)
			}
			if left := m.ingestFiles(); len(left) != 0 {
				t.Errorf("files left behind: %v", left)
			}
		})
	}
}

// An upstream that ignores Range sends the whole blob again: the bytes on
// disk are passed over (and counted as waste), the result is still right.
func TestResumeFromUpstreamIgnoringRange(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), fakeupstream.First(1, fakeupstream.Cut(layer, 100_000, true))))
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), fakeupstream.Body(layer, len(layer), false)))

	resp, body := m.get(http.MethodGet, blobPath("app", layers[0].Digest))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Fatalf("GET: %d, equal=%v", resp.StatusCode, bytes.Equal(body, layer))
	}
	m.waitFills()
	if got := metricValue(t, m.metrics, "registry_edge_fill_refetched_bytes_total", "upstream", "central.test"); got != 100_000 {
		t.Errorf("refetched bytes = %v, want 100000", got)
	}
}

// An upstream whose ETag for the blob changed between two attempts (the
// blob re-pushed, another CDN node) answers the resume's stale If-Range
// with the whole blob and its new ETag. The next resume must name that new
// ETag: with the old one, every later resume of the fill is answered with
// the whole blob again, and on a link that drops every few megabytes the
// fill fetches the blob from its start for each of them.
func TestResumeAfterTheETagChangedUsesTheNewOne(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	d := layers[0].Digest
	var (
		mu       sync.Mutex
		ifRanges []string
	)
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, d.String(), func(w http.ResponseWriter, r *http.Request, n int) bool {
		mu.Lock()
		ifRanges = append(ifRanges, r.Header.Get("If-Range"))
		mu.Unlock()
		etag := `"v1"`
		if n > 1 {
			etag = `"v2"`
		}
		// Range and If-Range as a registry honours them (RFC 9110 13.1.5).
		start := 0
		if v, ok := strings.CutPrefix(r.Header.Get("Range"), "bytes="); ok {
			if ir := r.Header.Get("If-Range"); ir == "" || ir == etag {
				start, _ = strconv.Atoi(strings.TrimSuffix(v, "-"))
			}
		}
		w.Header().Set("ETag", etag)
		w.Header().Set("Content-Length", strconv.Itoa(len(layer)-start))
		if start > 0 {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(layer)-1, len(layer)))
			w.WriteHeader(http.StatusPartialContent)
		} else {
			w.WriteHeader(http.StatusOK)
		}
		// The link drops after 100 000 bytes of the first answer and at
		// byte 200 000 of the blob in the second; the third gets through.
		switch n {
		case 1:
			w.Write(layer[:100_000])
		case 2:
			w.Write(layer[:200_000])
		default:
			w.Write(layer[start:])
			return true
		}
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))

	resp, body := m.get(http.MethodGet, blobPath("app", d))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Fatalf("GET: %d, %d bytes, equal=%v", resp.StatusCode, len(body), bytes.Equal(body, layer))
	}
	m.waitFills()
	mu.Lock()
	got := fmt.Sprint(ifRanges)
	mu.Unlock()
	if want := fmt.Sprint([]string{"", `"v1"`, `"v2"`}); got != want {
		t.Errorf("upstream GETs had If-Range %s, want %s", got, want)
	}
	if got := metricValue(t, m.metrics, "registry_edge_fill_refetched_bytes_total", "upstream", "central.test"); got != 100_000 {
		t.Errorf("refetched bytes = %v, want 100000 (only the answer to the stale If-Range)", got)
	}
}

// An upstream (or a proxy in front of it) that answers a resume's Range
// with 206 and a Content-Range that starts before the byte asked for has
// sent bytes the fill can use: those on disk already are passed over, as
// when a Range is ignored, and the rest completes the blob. Refused, the
// fill retried the same request until its deadline, and the partial made
// every later fill of the blob fail the same way.
func TestResumeAnsweredFromAnEarlierByte(t *testing.T) {
	t.Parallel()
	m := newMirror(t, func(o *proxy.Options) { o.FillTimeout = 5 * time.Second })
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	d := layers[0].Digest
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, d.String(), fakeupstream.First(1, fakeupstream.Cut(layer, 100_000, true))))
	// Every later request: the blob from byte 50 000 on (a proxy that
	// serves ranges from the slices it caches), whatever was asked.
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, d.String(), func(w http.ResponseWriter, r *http.Request, n int) bool {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes 50000-%d/%d", len(layer)-1, len(layer)))
		w.Header().Set("Content-Length", strconv.Itoa(len(layer)-50_000))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(layer[50_000:])
		return true
	}))

	resp, body, err := m.do(http.MethodGet, blobPath("app", d))
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Fatalf("GET: %v, %d bytes, equal=%v", err, len(body), bytes.Equal(body, layer))
	}
	m.waitFills()
	if n := m.fake.Count(http.MethodGet, blobPath("app", d)); n != 2 {
		t.Errorf("upstream GETs = %d, want 2 (the cut one and the resume)", n)
	}
	if got := metricValue(t, m.metrics, "registry_edge_fill_refetched_bytes_total", "upstream", "central.test"); got != 50_000 {
		t.Errorf("refetched bytes = %v, want 50000", got)
	}
}

// A registry that redirects blob GETs (307) to a CDN with a signed URL
// that soon expires: a resume goes back to the registry for a fresh URL,
// with its Range, rather than to the URL of the broken transfer.
func TestResumeThroughACDNRedirectGetsAFreshURL(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	d := layers[0].Digest
	var (
		mu      sync.Mutex
		signed  int      // the URL the registry handed out last
		cdnReqs []string // sig and Range of each CDN request
	)
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		cdnReqs = append(cdnReqs, r.URL.Query().Get("sig")+" "+r.Header.Get("Range"))
		fresh := r.URL.Query().Get("sig") == strconv.Itoa(signed)
		first := len(cdnReqs) == 1
		mu.Unlock()
		if !fresh {
			http.Error(w, "Request has expired", http.StatusForbidden)
			return
		}
		if first {
			fakeupstream.Cut(layer, 100_000, true)(w, r, 1)
			return
		}
		w.Header().Set("ETag", `"cdn-etag"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(layer))
	}))
	t.Cleanup(cdn.Close)
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, d.String(), func(w http.ResponseWriter, r *http.Request, n int) bool {
		mu.Lock()
		signed = n
		mu.Unlock()
		http.Redirect(w, r, cdn.URL+"/blob?sig="+strconv.Itoa(n), http.StatusTemporaryRedirect)
		return true
	}))

	resp, body, err := m.do(http.MethodGet, blobPath("app", d))
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Fatalf("GET: %v, %d bytes, equal=%v", err, len(body), bytes.Equal(body, layer))
	}
	m.waitFills()
	mu.Lock()
	got := fmt.Sprint(cdnReqs)
	mu.Unlock()
	if want := fmt.Sprint([]string{"1 ", "2 bytes=100000-"}); got != want {
		t.Errorf("CDN requests (sig, Range) = %s, want %s", got, want)
	}
}

// A fill whose first answer had no length (chunked) learns the blob's size
// from the Content-Range of its resume: clients that come after get a
// Content-Length, and their Range requests are answered with the range
// (206), not with the whole blob.
func TestResumeGivesTheSizeTheFirstAnswerLacked(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	d := layers[0].Digest
	path := blobPath("app", d)
	started, release := make(chan struct{}), make(chan struct{})
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, d.String(), func(w http.ResponseWriter, r *http.Request, n int) bool {
		if n == 1 {
			return fakeupstream.Body(layer[:100_000], -1, true)(w, r, n) // chunked, then the link drops
		}
		// The resume: bytes 100 000 to 199 999 of the range, then a pause.
		start := 100_000
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(layer)-1, len(layer)))
		w.Header().Set("Content-Length", strconv.Itoa(len(layer)-start))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(layer[start:200_000])
		w.(http.Flusher).Flush()
		close(started)
		select {
		case <-release:
			w.Write(layer[200_000:])
		case <-r.Context().Done():
		}
		return true
	}))

	first := make(chan error, 1)
	go func() {
		resp, body, err := m.do(http.MethodGet, path)
		if err == nil && (resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer)) {
			err = fmt.Errorf("%d, %d bytes, equal=%v", resp.StatusCode, len(body), bytes.Equal(body, layer))
		}
		first <- err
	}()
	<-started
	// The first bytes of the range are on disk: its headers leave with them.
	resp, err := http.DefaultClient.Do(rangeRequest(t, m.srv.URL+path, "bytes=120000-120099"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || resp.Header.Get("Content-Range") != "bytes 120000-120099/300000" {
		t.Errorf("range of the filling blob after the resume gave its size: %d, Content-Range %q", resp.StatusCode, resp.Header.Get("Content-Range"))
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first GET: %v", err)
	}
	if b, err := io.ReadAll(resp.Body); err != nil || resp.StatusCode == http.StatusPartialContent && !bytes.Equal(b, layer[120000:120100]) {
		t.Errorf("range body: %v, equal=%v", err, bytes.Equal(b, layer[120000:120100]))
	}
	m.waitFills()
}

// An upstream that stops sending is dropped after the stall timeout and
// the transfer resumes; the client sees a pause.
func TestStalledTransferResumes(t *testing.T) {
	t.Parallel()
	m := newMirror(t, fastStalls(50*time.Millisecond, time.Minute))
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	never := make(chan struct{})
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), fakeupstream.First(1, fakeupstream.Stall(layer, 150_000, never))))

	resp, body := m.get(http.MethodGet, blobPath("app", layers[0].Digest))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Fatalf("GET: %d, equal=%v", resp.StatusCode, bytes.Equal(body, layer))
	}
	m.waitFills()
	if got := metricValue(t, m.metrics, "registry_edge_fill_stalls_total", "upstream", "central.test"); got < 1 {
		t.Errorf("stalls metric = %v, want at least 1", got)
	}
	if r := m.fake.Ranges(http.MethodGet, blobPath("app", layers[0].Digest)); len(r) < 2 || r[1] != "bytes=150000-" {
		t.Errorf("upstream GETs had Range %q, want a resume from 150000", r)
	}
}

// A client of a fill that makes no progress gives up after the client
// stall limit with a failed transfer (never a clean short body); the fill
// goes on, and when it finally gives up its bytes stay on disk for the
// next request, which resumes them.
func TestClientStallLimitAndPartialKept(t *testing.T) {
	t.Parallel()
	m := newMirror(t, fastStalls(100*time.Millisecond, 500*time.Millisecond), func(o *proxy.Options) { o.FillTimeout = 2 * time.Second })
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	path := blobPath("app", layers[0].Digest)
	// The first answer brings 100 000 bytes, every later one nothing.
	never := make(chan struct{})
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), fakeupstream.First(1, fakeupstream.Stall(layer, 100_000, never))))
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), fakeupstream.Stall(layer, 0, never)))

	resp, body, err := m.do(http.MethodGet, path)
	if err == nil {
		t.Fatalf("GET of a stalled fill ended cleanly: %d, %d bytes", resp.StatusCode, len(body))
	}
	if len(body) >= len(layer) {
		t.Fatalf("client got %d bytes of a blob never fully fetched", len(body))
	}
	if got := metricValue(t, m.metrics, "registry_edge_client_stalls_total"); got != 1 {
		t.Errorf("client stalls metric = %v, want 1", got)
	}
	m.waitFills() // the fill gives up at its 2s deadline
	if left := m.ingestFiles(); len(left) != 2 {
		t.Fatalf("after the fill gave up: files %v, want the partial and its checkpoint", left)
	}

	// The upstream is healthy again: the next request resumes the partial.
	m.fake.ClearFaults()
	before := len(m.fake.Ranges(http.MethodGet, path))
	resp, body = m.get(http.MethodGet, path)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Fatalf("GET after recovery: %d, equal=%v", resp.StatusCode, bytes.Equal(body, layer))
	}
	m.waitFills()
	// (Later requests may follow if a loaded machine makes the short stall
	// limit of this test fire again; the first one is the resume.)
	if ranges := m.fake.Ranges(http.MethodGet, path); len(ranges) <= before || ranges[before] != "bytes=100000-" {
		t.Errorf("recovery GETs had Range %q, want the first to be bytes=100000-", ranges[before:])
	}
	if got := metricValue(t, m.metrics, "registry_edge_fill_resumes_total", "upstream", "central.test", "cause", "restart"); got != 1 {
		t.Errorf("restart resumes = %v, want 1", got)
	}
}

// A mirror restarted in the middle of a fill resumes it from what is on
// disk: the upstream sends the rest only.
func TestRestartResumesPartial(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 400_000)
	_, layers := m.fake.Image("app", "v1", layer)
	path := blobPath("app", layers[0].Digest)
	started, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), fakeupstream.First(1, fakeupstream.Gate(layer, started, release))))

	req, _ := http.NewRequest(http.MethodGet, m.srv.URL+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	head := make([]byte, 1000)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatal(err)
	}
	// Half of the blob is on disk once the first client has seen all of it.
	if _, err := io.ReadFull(resp.Body, make([]byte, len(layer)/2-1000)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	m.restart()

	resp2, body := m.get(http.MethodGet, path)
	if resp2.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Fatalf("GET after restart: %d, equal=%v", resp2.StatusCode, bytes.Equal(body, layer))
	}
	m.waitFills()
	ranges := m.fake.Ranges(http.MethodGet, path)
	if len(ranges) != 2 || ranges[1] != "bytes="+strconv.Itoa(len(layer)/2)+"-" {
		t.Errorf("upstream GETs had Range %q, want a resume from %d", ranges, len(layer)/2)
	}
	if got := metricValue(t, m.metrics, "registry_edge_upstream_fetched_bytes_total", "upstream", "central.test"); got != float64(len(layer)-len(layer)/2) {
		t.Errorf("bytes fetched after restart = %v, want the missing %d", got, len(layer)-len(layer)/2)
	}
}

// A Range request for a blob being filled gets its bytes (206) as soon as
// they are on disk, while the upstream is still sending, but the last byte
// of the range, like the last byte of the blob, only once the whole blob
// is verified: a range never ends cleanly on bytes that may prove wrong.
func TestRangeOnFillingBlob(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 200_000)
	_, layers := m.fake.Image("app", "v1", layer)
	path := blobPath("app", layers[0].Digest)
	started, release := make(chan struct{}), make(chan struct{})
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), fakeupstream.Gate(layer, started, release)))

	// Start the fill; the upstream holds after the first half.
	first, err := http.Get(m.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Body.Close()
	<-started
	if _, err := io.ReadFull(first.Body, make([]byte, len(layer)/2-1)); err != nil {
		t.Fatal(err)
	}

	// A range within the first half: all but its last byte while the
	// upstream is held, the last byte after it goes on.
	resp, err := http.DefaultClient.Do(rangeRequest(t, m.srv.URL+path, "bytes=1000-50999"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || resp.Header.Get("Content-Range") != "bytes 1000-50999/200000" {
		t.Fatalf("range on a filling blob: %d, Content-Range %q", resp.StatusCode, resp.Header.Get("Content-Range"))
	}
	head := make([]byte, 49_999)
	if _, err := io.ReadFull(resp.Body, head); err != nil || !bytes.Equal(head, layer[1000:50999]) {
		t.Fatalf("the range's first bytes while the upstream is held: %v, equal=%v", err, bytes.Equal(head, layer[1000:50999]))
	}
	last := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(resp.Body)
		last <- b
	}()
	select {
	case b := <-last:
		t.Fatalf("the range ended (%d more bytes) before the blob was verified", len(b))
	case <-time.After(100 * time.Millisecond):
	}
	// A range in the second half arrives once the upstream goes on.
	done := make(chan []byte)
	go func() {
		_, b, _ := m.do(http.MethodGet, path, "Range", "bytes=150000-")
		done <- b
	}()
	close(release)
	if b := <-last; !bytes.Equal(b, layer[50999:51000]) {
		t.Errorf("the range's last byte after the upstream went on: %q", b)
	}
	if b := <-done; !bytes.Equal(b, layer[150000:]) {
		t.Errorf("range in the second half: %d bytes, equal=%v", len(b), bytes.Equal(b, layer[150000:]))
	}
	if n := m.fake.Count(http.MethodGet, path); n != 1 {
		t.Errorf("upstream GETs = %d, want 1", n)
	}
}

// A client reading a range of a blob whose fill fails its digest check
// sees its transfer fail, not a clean 206 of the wrong bytes.
func TestRangeOfAFillThatFailsVerification(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 2_000_000)
	_, layers := m.fake.Image("app", "v1", layer)
	path := blobPath("app", layers[0].Digest)
	bad := bytes.Clone(layer)
	bad[50] ^= 0xff
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), fakeupstream.Body(bad, len(bad), false)))
	resp, body, err := m.do(http.MethodGet, path, "Range", "bytes=0-99")
	if err == nil && resp.StatusCode == http.StatusPartialContent && len(body) == 100 {
		t.Fatalf("a range of a blob that fails its digest ended cleanly (%d bytes)", len(body))
	}
	m.waitFills()
	if _, err := m.store.Stat(context.Background(), layers[0].Digest); err == nil {
		t.Error("the wrong blob was stored")
	}
}

// leavePartial leaves a partial download of blob d holding written (its
// first bytes), with size as its checkpoint recorded it (-1: never said),
// as a fill killed after its last write does.
func leavePartial(t *testing.T, m *mirror, d digest.Digest, written []byte, size int64) {
	t.Helper()
	part, err := m.store.Resume(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := part.Write(written); err != nil {
		t.Fatal(err)
	}
	if err := part.Suspend(blobstore.PartialMeta{Size: size}); err != nil {
		t.Fatal(err)
	}
}

// rangeRequest is a GET of url with a Range header.
func rangeRequest(t *testing.T, url, spec string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Range", spec)
	return req
}

// fullDisk is a store whose partial downloads fail with ENOSPC once they
// hold limit bytes.
type fullDisk struct {
	*blobstore.FS
	limit int64
}

func (s fullDisk) Resume(ctx context.Context, d digest.Digest) (blobstore.Partial, error) {
	p, err := s.FS.Resume(ctx, d)
	if err != nil {
		return nil, err
	}
	return &fullPartial{Partial: p, limit: s.limit}, nil
}

type fullPartial struct {
	blobstore.Partial
	limit int64
}

func (p *fullPartial) Write(b []byte) (int, error) {
	room := p.limit - p.Written()
	if room <= 0 {
		return 0, &os.PathError{Op: "write", Path: "partial", Err: syscall.ENOSPC}
	}
	if int64(len(b)) > room {
		n, _ := p.Partial.Write(b[:room])
		return n, &os.PathError{Op: "write", Path: "partial", Err: syscall.ENOSPC}
	}
	return p.Partial.Write(b)
}

// While the disk is full, a Range request is served from the blob passed
// through (a device resuming its download is not refused until there is
// room): the bytes of the range, verified like the whole blob, so a wrong
// body never ends a range cleanly either, however early the range ends.
func TestRangeOfABlobPassedThrough(t *testing.T) {
	t.Parallel()
	m := newMirrorWrapped(t, func(fs *blobstore.FS) proxy.Store { return fullDisk{FS: fs, limit: 100_000} })
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	path := blobPath("app", layers[0].Digest)
	if resp, body, err := m.do(http.MethodGet, path); err == nil && resp.StatusCode == http.StatusOK {
		t.Fatalf("GET with a full disk ended cleanly with %d bytes", len(body))
	}
	m.waitFills()
	for _, tt := range []struct {
		spec       string
		start, end int // of the range, end inclusive
	}{
		{"bytes=1000-4999", 1000, 4999},
		{"bytes=0-0", 0, 0},
		{"bytes=299990-", 299990, 299999},
		{"bytes=-10", 299990, 299999},
		{"bytes=100000-200000", 100000, 200000},
	} {
		resp, body := m.get(http.MethodGet, path, "Range", tt.spec)
		want := fmt.Sprintf("bytes %d-%d/%d", tt.start, tt.end, len(layer))
		if resp.StatusCode != http.StatusPartialContent || resp.Header.Get("Content-Range") != want || !bytes.Equal(body, layer[tt.start:tt.end+1]) {
			t.Errorf("Range %s while the disk is full: %d, Content-Range %q, %d bytes (equal %v); want 206, %q and the range",
				tt.spec, resp.StatusCode, resp.Header.Get("Content-Range"), len(body), bytes.Equal(body, layer[tt.start:tt.end+1]), want)
		}
	}
	if _, err := m.store.Stat(context.Background(), layers[0].Digest); err == nil {
		t.Error("a blob passed through was stored")
	}
	corrupt := append([]byte{}, layer...)
	corrupt[len(corrupt)-1] ^= 1
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), fakeupstream.Body(corrupt, len(corrupt), false)))
	if resp, body, err := m.do(http.MethodGet, path, "Range", "bytes=0-99"); err == nil && resp.StatusCode == http.StatusPartialContent {
		t.Errorf("a range of a wrong body passed through ended cleanly (%d bytes)", len(body))
	}
}

// A full disk fails the fill at once (resuming does not help), fails the
// client's transfer, commits nothing, and asks the upstream only once.
func TestFullDiskFailsTheFill(t *testing.T) {
	t.Parallel()
	m := newMirrorWrapped(t, func(fs *blobstore.FS) proxy.Store { return fullDisk{FS: fs, limit: 100_000} })
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	path := blobPath("app", layers[0].Digest)

	resp, body, err := m.do(http.MethodGet, path)
	if err == nil && resp.StatusCode == http.StatusOK {
		t.Fatalf("GET with a full disk ended cleanly with %d bytes", len(body))
	}
	m.waitFills()
	if _, err := m.store.Stat(context.Background(), layers[0].Digest); err == nil {
		t.Error("a blob was committed from a full disk")
	}
	if n := m.fake.Count(http.MethodGet, path); n != 1 {
		t.Errorf("upstream GETs = %d, want 1 (no resume loop on a local error)", n)
	}
	if got := metricValue(t, m.metrics, "registry_edge_fill_failures_total", "reason", "io"); got != 1 {
		t.Errorf("fill failures with reason io = %v, want 1", got)
	}
	// The bytes that filled the disk are not kept: eviction, which counts
	// stored blobs only, could never free them.
	if left := m.ingestFiles(); len(left) != 0 {
		t.Errorf("after a full disk, still on disk: %v", left)
	}

	// While the disk is full, misses are served straight from the upstream,
	// verified, and not stored.
	resp, body = m.get(http.MethodGet, path)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Fatalf("GET while the disk is full: %d, %d bytes, equal=%v", resp.StatusCode, len(body), bytes.Equal(body, layer))
	}
	if _, err := m.store.Stat(context.Background(), layers[0].Digest); err == nil {
		t.Error("a blob passed through was stored")
	}
	if got := metricValue(t, m.metrics, "registry_edge_store_full_total"); got < 1 {
		t.Errorf("store full metric = %v", got)
	}
	// A wrong body passed through never ends cleanly.
	corrupt := append([]byte{}, layer...)
	corrupt[len(corrupt)-1] ^= 1
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), fakeupstream.Body(corrupt, len(corrupt), false)))
	resp, body, err = m.do(http.MethodGet, path)
	if err == nil && resp.StatusCode == http.StatusOK {
		t.Errorf("a wrong body passed through ended cleanly (%d bytes)", len(body))
	}
	// A minute later the store is tried again.
	m.fake.ClearFaults()
	m.clock.Advance(2 * time.Minute)
	before := m.fake.Count(http.MethodGet, path)
	m.do(http.MethodGet, path)
	m.waitFills()
	if n := m.fake.Count(http.MethodGet, path); n != before+1 {
		t.Errorf("upstream GETs after the pause: %d, want %d", n, before+1)
	}
}

// While the disk is full, a blob passed through from an upstream that
// stops sending without closing the connection fails the client's transfer
// after storage.fillStallTimeout, as a fill's stall would be cut: nothing
// else bounds that wait, and the device would hang on it for good.
func TestPassThroughFromAStalledUpstreamFails(t *testing.T) {
	t.Parallel()
	m := newMirrorWrapped(t, func(fs *blobstore.FS) proxy.Store { return fullDisk{FS: fs, limit: 100_000} },
		fastStalls(50*time.Millisecond, time.Minute))
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	path := blobPath("app", layers[0].Digest)
	m.do(http.MethodGet, path) // fills the disk
	m.waitFills()

	never := make(chan struct{})
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), fakeupstream.Stall(layer, 150_000, never)))
	done := make(chan error, 1)
	go func() {
		resp, body, err := m.do(http.MethodGet, path)
		if err == nil && resp.StatusCode == http.StatusOK {
			err = fmt.Errorf("ended cleanly with %d bytes", len(body))
		} else {
			err = nil
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("GET passed through from a stalled upstream: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("GET passed through from a stalled upstream still waits, 30 s on (the stall limit is 50 ms)")
	}
	if n := m.fake.Count(http.MethodGet, path); n != 2 {
		t.Errorf("upstream GETs = %d, want 2 (the fill, then the pass-through)", n)
	}
}

// openAfterAsk is a store whose downloads open only once the upstream has
// received the blob request (or after a long wait, noted in waited).
type openAfterAsk struct {
	*blobstore.FS
	asked  <-chan struct{}
	waited *atomic.Bool
}

func (s openAfterAsk) Resume(ctx context.Context, d digest.Digest) (blobstore.Partial, error) {
	select {
	case <-s.asked:
	case <-time.After(10 * time.Second):
		s.waited.Store(true)
	}
	return s.FS.Resume(ctx, d)
}

// A cold miss with nothing to resume asks the upstream first and opens its
// download file meanwhile, not the other way round: the file system's time
// is not on the client's path to its first byte.
func TestColdMissAsksBeforeTheDownloadIsOpen(t *testing.T) {
	t.Parallel()
	asked := make(chan struct{})
	var once sync.Once
	var waited atomic.Bool
	m := newMirrorWrapped(t, func(fs *blobstore.FS) proxy.Store { return openAfterAsk{FS: fs, asked: asked, waited: &waited} },
		func(o *proxy.Options) { o.Deltas, o.NegotiateDeltas = true, true })
	layer := fakeupstream.Random(t, 100_000)
	d := m.fake.AddBlob(layer).Digest
	m.fake.LinkBlob("app", d)
	path := blobPath("app", d)
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, d.String(), func(http.ResponseWriter, *http.Request, int) bool {
		once.Do(func() { close(asked) })
		return false // answered as usual
	}))
	resp, b, err := m.do(http.MethodGet, path)
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(b, layer) {
		t.Fatalf("GET: %v, %d bytes, equal=%v", err, len(b), bytes.Equal(b, layer))
	}
	if waited.Load() {
		t.Error("the download was opened before the upstream was asked")
	}
	if n := m.fake.Count(http.MethodGet, path); n != 1 {
		t.Errorf("upstream GETs = %d, want 1", n)
	}
}

// hiddenPartial hides its partial downloads from HasPartial, as when
// another process leaves one between the check and the opening.
type hiddenPartial struct{ *blobstore.FS }

func (hiddenPartial) HasPartial(digest.Digest) bool { return false }

// A partial that turns up after the fill asked for the whole blob is still
// resumed: the early answer is dropped and the rest is fetched by Range.
func TestPartialFoundAfterAskingIsResumed(t *testing.T) {
	t.Parallel()
	m := newMirrorWrapped(t, func(fs *blobstore.FS) proxy.Store { return hiddenPartial{fs} })
	layer := fakeupstream.Random(t, 300_000)
	d := m.fake.AddBlob(layer).Digest
	m.fake.LinkBlob("app", d)
	path := blobPath("app", d)
	leavePartial(t, m, d, layer[:120_000], int64(len(layer)))
	resp, b, err := m.do(http.MethodGet, path)
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(b, layer) {
		t.Fatalf("GET: %v, %d bytes, equal=%v", err, len(b), bytes.Equal(b, layer))
	}
	ranges := m.fake.Ranges(http.MethodGet, path)
	if len(ranges) != 2 || ranges[0] != "" || ranges[1] != "bytes=120000-" {
		t.Errorf("upstream GETs with Range %q, want the whole blob, then bytes=120000-", ranges)
	}
}

// A complete partial download left by a fill of one repository (killed
// before its commit) is not served through another repository before the
// upstream says that one holds the blob: 404 where it does not, and for
// the repository that does, the blob from the partial (one HEAD, no GET).
func TestCompletePartialOfAnotherRepositoryIsConfirmed(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	d := layers[0].Digest
	m.fake.Image("other", "v1", fakeupstream.Random(t, 1000))
	leavePartial(t, m, d, layer, int64(len(layer)))
	resp, body, err := m.do(http.MethodGet, blobPath("other", d))
	if err != nil || resp.StatusCode != http.StatusNotFound || bytes.Contains(body, layer[:64]) {
		t.Fatalf("GET through a repository without the blob: %v, %v, %d bytes; want 404", err, resp, len(body))
	}
	m.waitFills()
	resp, body = m.get(http.MethodGet, blobPath("app", d))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Fatalf("GET through the repository with the blob: %d, equal %v", resp.StatusCode, bytes.Equal(body, layer))
	}
	// The partial has every byte: the upstream is asked only for a few,
	// from a random offset, to show it holds the blob (the partial does
	// not say which upstream's fill left it).
	if rs := m.fake.Ranges(http.MethodGet, blobPath("app", d)); len(rs) != 1 || !strings.HasPrefix(rs[0], "bytes=") {
		t.Errorf("upstream GETs of the blob with ranges %q, want one ranged GET", rs)
	}
}

// A partial download of a blob whose size the upstream never said (no
// Content-Length), that holds every byte, is completed without fetching
// them again: its bytes hash to the digest, so it is the whole blob, and
// the upstream is asked only to show that the repository holds it (a few
// bytes, as for a complete partial whose size is known).
func TestCompletePartialOfUnknownSizeIsKept(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	d := layers[0].Digest
	leavePartial(t, m, d, layer, -1)
	resp, body, err := m.do(http.MethodGet, blobPath("app", d))
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Fatalf("GET: %v, %v, %d bytes, equal %v", err, resp, len(body), bytes.Equal(body, layer))
	}
	m.waitFills()
	if ranges := m.fake.Ranges(http.MethodGet, blobPath("app", d)); len(ranges) != 1 || !strings.HasPrefix(ranges[0], "bytes=") || strings.HasPrefix(ranges[0], "bytes=0-") {
		t.Errorf("upstream GETs with Range %q, want one ranged GET of a few bytes", ranges)
	}
}

// endless answers a blob GET with body and then bytes without end, with no
// Content-Length.
func endless(body []byte) fakeupstream.Fault {
	return func(w http.ResponseWriter, r *http.Request, _ int) bool {
		w.WriteHeader(http.StatusOK)
		w.Write(body)
		junk := make([]byte, 64<<10)
		for r.Context().Err() == nil {
			if _, err := w.Write(junk); err != nil {
				break
			}
		}
		return true
	}
}

// A blob whose size the upstream does not send is bounded by the size its
// manifest gave, or else by the store's budget: an endless body fails the
// fill (never a clean end for the client), and nothing is kept.
func TestFillOfUnknownSizeIsBounded(t *testing.T) {
	t.Parallel()
	const budget = 1 << 20
	m := newMirror(t, func(o *proxy.Options) { o.StoreBudget = func() int64 { return budget } })
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	pulled := m.fake.AddBlob(fakeupstream.Random(t, 1000)) // in no manifest the mirror saw
	m.fake.LinkBlob("app", pulled.Digest)
	m.get(http.MethodGet, manifestPath("app", "v1"))
	for _, c := range []struct {
		name  string
		d     digest.Digest
		bound int64
	}{
		{"size from the manifest", layers[0].Digest, int64(len(layer))},
		{"store budget", pulled.Digest, budget},
	} {
		m.fake.Fail(fakeupstream.ForPath(http.MethodGet, c.d.String(), endless(layer)))
		resp, body, err := m.do(http.MethodGet, blobPath("app", c.d))
		if err == nil && resp.StatusCode == http.StatusOK {
			t.Errorf("%s: an endless body ended cleanly after %d bytes", c.name, len(body))
		}
		m.waitFills()
		if int64(len(body)) > c.bound {
			t.Errorf("%s: the client got %d bytes, more than %d", c.name, len(body), c.bound)
		}
		if left := m.ingestFiles(); len(left) != 0 {
			t.Errorf("%s: still on disk: %v", c.name, left)
		}
		if got := metricValue(t, m.metrics, "registry_edge_fill_failures_total", "reason", "verify"); got < 1 {
			t.Errorf("%s: fill failures with reason verify = %v", c.name, got)
		}
		m.fake.ClearFaults()
	}
}

// A partial download longer than the blob, resumed against an upstream
// that ignores Range, is wrong: discarded after one request, not fetched
// again until the fill's deadline.
func TestPartialLongerThanTheBlobIsDiscarded(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	d := layers[0].Digest
	path := blobPath("app", d)
	for _, sized := range []bool{true, false} {
		leavePartial(t, m, d, append(append([]byte{}, layer...), make([]byte, 1000)...), -1)
		length := -1 // the upstream ignores the range and sends no length
		if sized {
			length = len(layer)
		}
		m.fake.Fail(fakeupstream.ForPath(http.MethodGet, d.String(), fakeupstream.Body(layer, length, false)))
		before := m.fake.Count(http.MethodGet, path)
		resp, body, err := m.do(http.MethodGet, path)
		if err == nil && resp.StatusCode == http.StatusOK {
			t.Errorf("sized=%v: ended cleanly with %d bytes", sized, len(body))
		}
		m.waitFills()
		if n := m.fake.Count(http.MethodGet, path) - before; n != 1 {
			t.Errorf("sized=%v: upstream GETs = %d, want 1", sized, n)
		}
		if left := m.ingestFiles(); len(left) != 0 {
			t.Errorf("sized=%v: still on disk: %v", sized, left)
		}
		m.fake.ClearFaults()
	}
}

// A HEAD of a blob whose size the upstream does not give has no length,
// not a negative one (which clients take for a broken connection).
func TestHeadOfUnknownSize(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	_, layers := m.fake.Image("app", "v1", fakeupstream.Random(t, 1000))
	m.fake.Fail(fakeupstream.ForPath(http.MethodHead, layers[0].Digest.String(), func(w http.ResponseWriter, r *http.Request, _ int) bool {
		w.Header().Set("Transfer-Encoding", "chunked")
		w.WriteHeader(http.StatusOK)
		return true
	}))
	req, err := http.NewRequest(http.MethodHead, m.srv.URL+blobPath("app", layers[0].Digest), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatalf("HEAD: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Length") != "" {
		t.Errorf("HEAD: %d with Content-Length %q, want 200 without one", resp.StatusCode, resp.Header.Get("Content-Length"))
	}
}

// The size a manifest gives a layer bounds fills of that layer for the
// manifest's repository only: another repository's manifest that gives it
// a wrong size does not fail them.
func TestLayerSizeHintsStayInTheirRepository(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	d := layers[0].Digest
	cfg := m.fake.AddBlob([]byte("{}"))
	m.fake.LinkBlob("evil", cfg.Digest)
	cfg.MediaType = ocispec.MediaTypeImageConfig
	lie := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg,
		Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: 10}}}
	lie.SchemaVersion = 2
	b, err := json.Marshal(lie)
	if err != nil {
		t.Fatal(err)
	}
	m.fake.AddManifest("evil", "v1", ocispec.MediaTypeImageManifest, b)
	if resp, _ := m.get(http.MethodGet, manifestPath("evil", "v1"), "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET evil:v1: %d", resp.StatusCode)
	}
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, "/v2/app/blobs/"+d.String(), fakeupstream.Body(layer, -1, false)))
	resp, body := m.get(http.MethodGet, blobPath("app", d))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Errorf("GET the layer (no Content-Length upstream): %d, %d bytes", resp.StatusCode, len(body))
	}
}

// noRoom is a store whose every Put fails as on a full disk.
type noRoom struct{ *blobstore.FS }

func (noRoom) Put(context.Context, ocispec.Descriptor, io.Reader) error {
	return &os.PathError{Op: "write", Path: "blob", Err: syscall.ENOSPC}
}

// On a full disk, room is asked for once, not once per failed write: each
// ask walks the store (an eviction run), and every write fails until there
// is room. Once diskFullFor has passed, it is asked for again.
func TestFullDiskAsksForRoomOnce(t *testing.T) {
	t.Parallel()
	asks := make(chan struct{}, 64)
	release := make(chan struct{})
	m := newMirrorWrapped(t, func(fs *blobstore.FS) proxy.Store { return noRoom{fs} }, func(o *proxy.Options) {
		o.OnDiskFull = func(context.Context) {
			asks <- struct{}{}
			<-release // an eviction run, still going
		}
	})
	for i := range 20 {
		tag := "v" + strconv.Itoa(i)
		m.fake.Image("app", tag, []byte(tag))
		if resp, body := m.get(http.MethodGet, manifestPath("app", tag), "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK {
			t.Fatalf("manifest %s on a full disk: %d %s", tag, resp.StatusCode, body)
		}
	}
	<-asks
	close(release)
	if n := len(asks); n > 0 {
		t.Errorf("room asked for %d more times for 20 failed writes, want once", n)
	}
	m.clock.Advance(2 * time.Minute)
	m.fake.Image("app", "later", []byte("later"))
	m.get(http.MethodGet, manifestPath("app", "later"), "Accept", ocispec.MediaTypeImageManifest)
	<-asks // asked again (the test's deadline bounds the wait)
}

// An eviction a full disk started ends with the mirror: Close cancels it
// and waits for it, so that it does not go on deleting while the store and
// the metadata close under it.
func TestFullDiskEvictionStopsWithTheMirror(t *testing.T) {
	t.Parallel()
	started := make(chan struct{})
	var ended atomic.Bool
	m := newMirrorWrapped(t, func(fs *blobstore.FS) proxy.Store { return noRoom{fs} }, func(o *proxy.Options) {
		o.OnDiskFull = func(ctx context.Context) {
			close(started)
			<-ctx.Done() // an eviction that runs until it is stopped
			ended.Store(true)
		}
	})
	m.fake.Image("app", "v1", []byte("v1"))
	if resp, body := m.get(http.MethodGet, manifestPath("app", "v1"), "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK {
		t.Fatalf("manifest on a full disk: %d %s", resp.StatusCode, body)
	}
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.proxy.Close(ctx); err != nil {
		t.Fatalf("Close: %v (the eviction was not stopped)", err)
	}
	if !ended.Load() {
		t.Error("Close returned while the eviction was still running")
	}
}

// A body without a length that ends cleanly before the size the blob's
// manifest gave was cut (a proxy that closes a close-delimited body): the
// fill resumes from the bytes it has, the client gets the whole blob, and
// nothing is fetched twice.
func TestShortBodyOfKnownSizeIsResumed(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	d := layers[0].Digest
	m.get(http.MethodGet, manifestPath("app", "v1")) // the mirror learns the layer's size
	m.fake.Fail(fakeupstream.First(1, fakeupstream.ForPath(http.MethodGet, d.String(), fakeupstream.Body(layer[:100_000], -1, false))))
	resp, body, err := m.do(http.MethodGet, blobPath("app", d))
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Fatalf("GET: %v, %v, %d bytes, equal %v", err, resp, len(body), bytes.Equal(body, layer))
	}
	m.waitFills()
	if ranges := m.fake.Ranges(http.MethodGet, blobPath("app", d)); len(ranges) != 2 || ranges[1] != "bytes=100000-" {
		t.Errorf("upstream GETs with Range %q, want a first one and then bytes=100000-", ranges)
	}
}

// An upstream that ignores Range on a link that breaks before the bytes
// on disk have been sent again can never finish the blob: the fill gives
// up after a few such tries (each cost the bytes on disk again) instead of
// paying them every 30 s until its deadline; the client's connection is
// cut, not ended cleanly.
func TestFillGivesUpOnRangeIgnoredAndCutBeforeProgress(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	d := layers[0].Digest
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, d.String(), func(w http.ResponseWriter, r *http.Request, n int) bool {
		if n == 1 {
			return fakeupstream.Cut(layer, 180_000, true)(w, r, n)
		}
		return fakeupstream.Body(layer[:100_000], len(layer), true)(w, r, n) // Range ignored, cut early
	}))
	resp, body, err := m.do(http.MethodGet, blobPath("app", d))
	if err == nil && resp.StatusCode == http.StatusOK && len(body) == len(layer) {
		t.Fatal("the blob was served whole")
	}
	m.waitFills()
	if n := m.fake.Count(http.MethodGet, blobPath("app", d)); n != 4 {
		t.Errorf("upstream GETs of the blob = %d, want 4: the first, then 3 cut before the bytes on disk", n)
	}
}

// Bytes received and then thrown away because the blob failed its check
// are counted as waste (registry_edge_fill_refetched_bytes_total): the
// next fill fetches them again.
func TestBytesThrownAwayAreCountedAsRefetched(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 50_000)
	_, layers := m.fake.Image("app", "v1", layer)
	corrupt := bytes.Clone(layer)
	corrupt[100] ^= 1
	m.fake.Fail(fakeupstream.First(1, fakeupstream.ForPath(http.MethodGet, layers[0].Digest.String(), fakeupstream.Body(corrupt, len(corrupt), false))))
	m.do(http.MethodGet, blobPath("app", layers[0].Digest))
	m.waitFills()
	if got := metricValue(t, m.metrics, "registry_edge_fill_refetched_bytes_total", "upstream", "central.test"); got != float64(len(corrupt)) {
		t.Errorf("refetched bytes after a blob failed its check = %v, want %d", got, len(corrupt))
	}
}

// A complete partial download whose bytes the upstream sent for the same
// repository (a crash between the last byte and the commit) is served with
// the uplink down, verified, without asking the upstream; one left by
// another repository's fill is not served before the upstream confirms.
func TestCompletePartialOfTheSameRepositoryIsServedOffline(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	d := layers[0].Digest
	m.fake.Image("other", "v1", fakeupstream.Random(t, 1000))
	m.fake.LinkBlob("other", d)
	for _, c := range []struct{ repo, ask string }{{"central.test/other", "app"}, {"central.test/app", "app"}} {
		part, err := m.store.Resume(context.Background(), d)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := part.Write(layer[part.Written():]); err != nil {
			t.Fatal(err)
		}
		if err := part.Suspend(blobstore.PartialMeta{Size: int64(len(layer)), Repo: c.repo}); err != nil {
			t.Fatal(err)
		}
		m.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "", 0)) // the uplink is down
		before := m.fake.Count(http.MethodGet, blobPath(c.ask, d))
		resp, body, err := m.do(http.MethodGet, blobPath(c.ask, d))
		m.waitFills()
		m.fake.ClearFaults()
		served := err == nil && resp.StatusCode == http.StatusOK && bytes.Equal(body, layer)
		same := c.repo == "central.test/"+c.ask
		if served != same {
			t.Errorf("partial of %s, asked through %s with the uplink down: served %v, want %v", c.repo, c.ask, served, same)
		}
		if n := m.fake.Count(http.MethodGet, blobPath(c.ask, d)) - before; same && n != 0 {
			t.Errorf("partial of %s: %d upstream GETs of the blob, want none", c.repo, n)
		}
	}
}

// A fill killed after its clients had the blob's last byte and before its
// commit (while the blob is synced and its link recorded) leaves the whole
// blob in its partial download with no checkpoint: a small blob's fill
// ends before its first. Started again with the uplink down, the mirror
// serves it from those bytes, as the clients that pulled it expect; online
// it asks the upstream for nothing.
func TestCompletePartialWithoutCheckpointIsServed(t *testing.T) {
	t.Parallel()
	for _, uplink := range []string{"down", "up"} {
		t.Run(uplink, func(t *testing.T) {
			t.Parallel()
			m := newMirror(t)
			layer := fakeupstream.Random(t, 70_000)
			_, layers := m.fake.Image("app", "v1", layer)
			d := layers[0].Digest
			if resp, body := m.get(http.MethodGet, blobPath("app", d)); resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
				t.Fatalf("GET %s: %s, %d bytes", d, resp.Status, len(body))
			}
			m.waitFills()
			m.stop()
			// The state of the kill: the link recorded, the bytes in the
			// partial download, no checkpoint, nothing committed.
			stored := filepath.Join(m.root, "blobs", "sha256", d.Encoded()[:2], d.Encoded())
			partial := filepath.Join(m.root, "partial", "sha256-"+d.Encoded())
			if err := os.Rename(stored, partial); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(partial, 0o644); err != nil {
				t.Fatal(err)
			}
			m.start()
			if uplink == "down" {
				m.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "", 0))
			}
			before := m.fake.Count(http.MethodGet, blobPath("app", d))
			resp, body, err := m.do(http.MethodGet, blobPath("app", d))
			if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
				t.Fatalf("GET %s after the restart, uplink %s: %v, %v, %d bytes, want the blob from its partial download", d, uplink, err, resp.Status, len(body))
			}
			m.waitFills()
			if n := m.fake.Count(http.MethodGet, blobPath("app", d)) - before; n != 0 {
				t.Errorf("%d upstream GETs of the blob after the restart, want none", n)
			}
			if _, err := os.Stat(stored); err != nil {
				t.Errorf("the blob was not committed from its partial download: %v", err)
			}
		})
	}
}

// cappedRanges answers every GET of a blob with 206 and at most limit
// bytes from the byte asked for (0 without a Range): a CDN or object
// store that caps the length of an answer, as RFC 9110 allows.
func cappedRanges(blob []byte, limit int) func(http.ResponseWriter, *http.Request, int) bool {
	return func(w http.ResponseWriter, r *http.Request, _ int) bool {
		from := 0
		if spec, ok := strings.CutPrefix(r.Header.Get("Range"), "bytes="); ok {
			from, _ = strconv.Atoi(strings.TrimSuffix(spec, "-"))
		}
		to := min(from+limit, len(blob))
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, to-1, len(blob)))
		w.Header().Set("Content-Length", strconv.Itoa(to-from))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(blob[from:to])
		return true
	}
}

// An upstream that caps its answers (206 with a Content-Range that ends
// before the blob does, also to the first request, which asked for no
// range) sends the blob in slices: the fill takes each and asks at once
// for the rest, fetching every byte once. Refused, the fill retried the
// same request with backoff until its deadline and never had the blob.
func TestCappedRangeAnswersAreContinued(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	d := layers[0].Digest
	path := blobPath("app", d)
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, d.String(), cappedRanges(layer, 70_000)))

	resp, body, err := m.do(http.MethodGet, path)
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Fatalf("GET: %v, %d bytes, equal=%v", err, len(body), bytes.Equal(body, layer))
	}
	m.waitFills()
	want := []string{"", "bytes=70000-", "bytes=140000-", "bytes=210000-", "bytes=280000-"}
	if ranges := m.fake.Ranges(http.MethodGet, path); fmt.Sprint(ranges) != fmt.Sprint(want) {
		t.Errorf("upstream GETs had Range %q, want %q", ranges, want)
	}
	if got := metricValue(t, m.metrics, "registry_edge_upstream_fetched_bytes_total", "upstream", "central.test"); got != float64(len(layer)) {
		t.Errorf("bytes fetched = %v, want exactly the blob's %d", got, len(layer))
	}
	if got := metricValue(t, m.metrics, "registry_edge_fill_resumes_total"); got != 0 {
		t.Errorf("resumes = %v, want 0 (a capped answer is no broken link)", got)
	}
	if _, err := m.store.Stat(context.Background(), d); err != nil {
		t.Errorf("blob not committed: %v", err)
	}
}

// An upstream that answers every range with a few bytes would keep a fill
// asking for as long as its deadline allows: after a few such answers in
// a row the fill gives up (and keeps what it has).
func TestTinyRangeAnswersAreBounded(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	d := layers[0].Digest
	path := blobPath("app", d)
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, d.String(), cappedRanges(layer, 1)))

	resp, body, err := m.do(http.MethodGet, path)
	if err == nil && resp.StatusCode == http.StatusOK && len(body) == len(layer) {
		t.Fatalf("GET ended cleanly with %d bytes", len(body))
	}
	m.waitFills()
	if n := m.fake.Count(http.MethodGet, path); n > 20 {
		t.Errorf("upstream GETs = %d, want a few", n)
	}
	if _, err := m.store.Stat(context.Background(), d); err == nil {
		t.Error("blob committed")
	}
}

// After a power loss the bytes of a partial after its last checkpoint may
// be zeros (the file's length reached the disk, its data did not). They
// fail the fill that reads them back; the partial is then kept up to the
// checkpoint, and the next fill of the blob asks for the bytes from there
// on, not for the whole blob.
func TestPartialWithDamagedTailResumesFromItsCheckpoint(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	d := layers[0].Digest
	path := blobPath("app", d)
	leavePartial(t, m, d, layer[:100_000], int64(len(layer)))
	f, err := os.OpenFile(filepath.Join(m.root, "partial", "sha256-"+d.Encoded()), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 50_000)); err != nil {
		t.Fatal(err)
	}
	f.Close()

	if resp, body, err := m.do(http.MethodGet, path); err == nil && resp.StatusCode == http.StatusOK && bytes.Equal(body, layer) {
		t.Fatal("first GET ended cleanly, on zeros")
	}
	m.waitFills()
	resp, body, err := m.do(http.MethodGet, path)
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Fatalf("second GET: %v, %d bytes, equal=%v", err, len(body), bytes.Equal(body, layer))
	}
	m.waitFills()
	want := []string{"bytes=150000-", "bytes=100000-"}
	if ranges := m.fake.Ranges(http.MethodGet, path); fmt.Sprint(ranges) != fmt.Sprint(want) {
		t.Errorf("upstream GETs had Range %q, want %q", ranges, want)
	}
	if got := metricValue(t, m.metrics, "registry_edge_fill_refetched_bytes_total", "upstream", "central.test"); got != 50_000+150_000 {
		t.Errorf("refetched bytes = %v, want 200000 (the zeros and the bytes after them)", got)
	}
	if left := m.ingestFiles(); len(left) != 0 {
		t.Errorf("files left behind: %v", left)
	}
}

// An upstream that sends its ETag unquoted (no entity-tag: RFC 9110 8.8.3)
// has it read back as a date in If-Range, which never matches: every
// resume was answered with the whole blob. Such a value is not sent.
func TestResumeFromAnUpstreamWithAnUnquotedETag(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	d := layers[0].Digest
	var (
		mu       sync.Mutex
		ifRanges []string
	)
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, d.String(), func(w http.ResponseWriter, r *http.Request, n int) bool {
		mu.Lock()
		ifRanges = append(ifRanges, r.Header.Get("If-Range"))
		mu.Unlock()
		w.Header().Set("ETag", d.String())
		if n == 1 {
			w.Header().Set("Content-Length", strconv.Itoa(len(layer)))
			w.Write(layer[:100_000])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(layer))
		return true
	}))

	resp, body := m.get(http.MethodGet, blobPath("app", d))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Fatalf("GET: %d, %d bytes, equal=%v", resp.StatusCode, len(body), bytes.Equal(body, layer))
	}
	m.waitFills()
	mu.Lock()
	got := fmt.Sprint(ifRanges)
	mu.Unlock()
	if want := fmt.Sprint([]string{"", ""}); got != want {
		t.Errorf("upstream GETs had If-Range %s, want %s", got, want)
	}
	if got := metricValue(t, m.metrics, "registry_edge_fill_refetched_bytes_total", "upstream", "central.test"); got != 0 {
		t.Errorf("refetched bytes = %v, want 0", got)
	}
}

// checkpointCounter counts the checkpoints of the partials it resumes.
type checkpointCounter struct {
	*blobstore.FS
	n *atomic.Int64
}

func (s checkpointCounter) Resume(ctx context.Context, d digest.Digest) (blobstore.Partial, error) {
	p, err := s.FS.Resume(ctx, d)
	if err != nil {
		return nil, err
	}
	return countedPartial{Partial: p, n: s.n}, nil
}

type countedPartial struct {
	blobstore.Partial
	n *atomic.Int64
}

func (p countedPartial) Checkpoint(m blobstore.PartialMeta) error {
	p.n.Add(1)
	return p.Partial.Checkpoint(m)
}

// A fill whose upstream answers in slices that each take less than the
// checkpoint interval (a capped CDN, a link that drops every few seconds)
// still checkpoints every interval of the whole fill: the interval was
// counted from each request's start, and such a fill never made its bytes
// durable for a resume after a power loss.
func TestFillOfManyShortAnswersCheckpoints(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	m := newMirrorWrapped(t, func(fs *blobstore.FS) proxy.Store { return checkpointCounter{FS: fs, n: &n} })
	layer := fakeupstream.Random(t, 300_000)
	_, layers := m.fake.Image("app", "v1", layer)
	d := layers[0].Digest
	capped := cappedRanges(layer, 70_000)
	m.fake.Fail(fakeupstream.ForPath(http.MethodGet, d.String(), func(w http.ResponseWriter, r *http.Request, i int) bool {
		m.clock.Advance(3 * time.Second) // each answer takes 3 s of the mirror's clock
		return capped(w, r, i)
	}))

	resp, body, err := m.do(http.MethodGet, blobPath("app", d))
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Fatalf("GET: %v, %d bytes, equal=%v", err, len(body), bytes.Equal(body, layer))
	}
	m.waitFills()
	// Five answers, 15 s: a checkpoint in the answers at 6 s and 12 s
	// (the first bytes of each, 4 s or more after the one before).
	if got := n.Load(); got < 2 {
		t.Errorf("checkpoints = %d, want at least 2", got)
	}
}
