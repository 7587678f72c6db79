// Package fakeupstream is a scripted in-memory OCI registry for tests. It
// serves manifests, blobs, tags and referrers like a real registry, counts
// every request, and lets a test replace the answer to any request with a
// fault: wrong bytes, a truncated body, a reset connection, a status with
// Retry-After, a stall.
package fakeupstream

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Fault decides the answer to a request. It returns false to let the
// registry answer normally. n is the 1-based count of requests so far with
// the same method and path.
type Fault func(w http.ResponseWriter, r *http.Request, n int) bool

// Registry is the fake.
type Registry struct {
	mu        sync.Mutex
	blobs     map[digest.Digest][]byte
	repoBlobs map[string]map[digest.Digest]bool // blobs a repository holds
	manifests map[string]map[string]manifest    // repo -> tag or digest -> manifest
	referrers map[string][]ocispec.Descriptor   // repo@digest -> descriptors
	faults    []Fault
	counts    map[string]int      // "METHOD path" -> count
	ranges    map[string][]string // "METHOD path" -> Range header of each request
	// NoReferrersAPI makes the referrers endpoint answer 404.
	NoReferrersAPI bool
	// ReferrersPageSize, when not 0, has the referrers endpoint answer in
	// pages of that many descriptors, each but the last with a relative
	// Link rel="next" to the next (?page=N).
	ReferrersPageSize int
}

type manifest struct {
	mediaType string
	body      []byte
}

// New returns an empty registry.
func New() *Registry {
	return &Registry{
		blobs:     map[digest.Digest][]byte{},
		repoBlobs: map[string]map[digest.Digest]bool{},
		manifests: map[string]map[string]manifest{},
		referrers: map[string][]ocispec.Descriptor{},
		counts:    map[string]int{},
		ranges:    map[string][]string{},
	}
}

// AddBlob stores b and returns its descriptor.
func (g *Registry) AddBlob(b []byte) ocispec.Descriptor {
	d := digest.FromBytes(b)
	g.mu.Lock()
	g.blobs[d] = b
	g.mu.Unlock()
	return ocispec.Descriptor{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Digest: d, Size: int64(len(b))}
}

// LinkBlob makes repo hold blob d (Image does this for its blobs).
func (g *Registry) LinkBlob(repo string, d digest.Digest) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.repoBlobs[repo] == nil {
		g.repoBlobs[repo] = map[digest.Digest]bool{}
	}
	g.repoBlobs[repo][d] = true
}

// AddManifest stores a manifest under repo by digest and, if tag is not
// empty, by tag.
func (g *Registry) AddManifest(repo, tag, mediaType string, body []byte) ocispec.Descriptor {
	d := digest.FromBytes(body)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.manifests[repo] == nil {
		g.manifests[repo] = map[string]manifest{}
	}
	m := manifest{mediaType: mediaType, body: body}
	g.manifests[repo][d.String()] = m
	if tag != "" {
		g.manifests[repo][tag] = m
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(body))}
}

// DeleteTag removes a tag.
func (g *Registry) DeleteTag(repo, tag string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.manifests[repo], tag)
}

// AddReferrer records desc as a referrer of subject in repo.
func (g *Registry) AddReferrer(repo string, subject digest.Digest, desc ocispec.Descriptor) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := repo + "@" + subject.String()
	g.referrers[k] = append(g.referrers[k], desc)
}

// Image builds and stores an image with the given layers under repo:tag and
// returns the manifest descriptor and the layer descriptors.
func (g *Registry) Image(repo, tag string, layers ...[]byte) (ocispec.Descriptor, []ocispec.Descriptor) {
	cfg := g.AddBlob([]byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))
	cfg.MediaType = ocispec.MediaTypeImageConfig
	g.LinkBlob(repo, cfg.Digest)
	var descs []ocispec.Descriptor
	for _, l := range layers {
		d := g.AddBlob(l)
		g.LinkBlob(repo, d.Digest)
		descs = append(descs, d)
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: descs}
	m.SchemaVersion = 2
	body, _ := json.Marshal(m)
	return g.AddManifest(repo, tag, ocispec.MediaTypeImageManifest, body), descs
}

// Random returns n random bytes.
func Random(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// Fail adds a fault, consulted before the normal answer (first added first).
func (g *Registry) Fail(f Fault) {
	g.mu.Lock()
	g.faults = append(g.faults, f)
	g.mu.Unlock()
}

// ClearFaults removes every fault.
func (g *Registry) ClearFaults() {
	g.mu.Lock()
	g.faults = nil
	g.mu.Unlock()
}

// Count returns how many requests with method and path were received.
func (g *Registry) Count(method, path string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.counts[method+" "+path]
}

// Ranges returns the Range header of each request with method and path, in
// order ("" for none).
func (g *Registry) Ranges(method, path string) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.ranges[method+" "+path]...)
}

// Total returns how many requests were received in all.
func (g *Registry) Total() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, c := range g.counts {
		n += c
	}
	return n
}

// ServeHTTP implements http.Handler.
func (g *Registry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	key := r.Method + " " + r.URL.Path
	g.counts[key]++
	g.ranges[key] = append(g.ranges[key], r.Header.Get("Range"))
	n := g.counts[key]
	faults := append([]Fault(nil), g.faults...)
	g.mu.Unlock()
	for _, f := range faults {
		if f(w, r, n) {
			return
		}
	}
	g.serve(w, r)
}

func (g *Registry) serve(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p == "/v2/" || p == "/v2" {
		w.WriteHeader(http.StatusOK)
		return
	}
	rest := strings.TrimPrefix(p, "/v2/")
	seg := strings.Split(rest, "/")
	if len(seg) < 3 {
		writeErr(w, http.StatusNotFound, "NAME_UNKNOWN")
		return
	}
	n := len(seg)
	switch {
	case seg[n-2] == "manifests":
		g.serveManifest(w, r, strings.Join(seg[:n-2], "/"), seg[n-1])
	case seg[n-2] == "blobs":
		g.serveBlob(w, r, strings.Join(seg[:n-2], "/"), digest.Digest(seg[n-1]))
	case seg[n-2] == "tags" && seg[n-1] == "list":
		g.serveTags(w, r, strings.Join(seg[:n-2], "/"))
	case seg[n-2] == "referrers":
		g.serveReferrers(w, r, strings.Join(seg[:n-2], "/"), digest.Digest(seg[n-1]))
	default:
		writeErr(w, http.StatusNotFound, "UNSUPPORTED")
	}
}

func writeErr(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":"fake"}]}`, code)
}

func (g *Registry) serveManifest(w http.ResponseWriter, r *http.Request, repo, ref string) {
	g.mu.Lock()
	m, ok := g.manifests[repo][ref]
	g.mu.Unlock()
	if !ok {
		writeErr(w, http.StatusNotFound, "MANIFEST_UNKNOWN")
		return
	}
	w.Header().Set("Content-Type", m.mediaType)
	w.Header().Set("Docker-Content-Digest", digest.FromBytes(m.body).String())
	w.Header().Set("Content-Length", strconv.Itoa(len(m.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(m.body)
	}
}

func (g *Registry) serveBlob(w http.ResponseWriter, r *http.Request, repo string, d digest.Digest) {
	g.mu.Lock()
	b, ok := g.blobs[d]
	ok = ok && g.repoBlobs[repo][d]
	g.mu.Unlock()
	if !ok {
		writeErr(w, http.StatusNotFound, "BLOB_UNKNOWN")
		return
	}
	// Like distribution: a strong ETag of the digest, and Range and
	// If-Range honoured.
	w.Header().Set("Docker-Content-Digest", d.String())
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", `"`+d.String()+`"`)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
}

func (g *Registry) serveTags(w http.ResponseWriter, r *http.Request, repo string) {
	g.mu.Lock()
	var tags []string
	for ref := range g.manifests[repo] {
		if !strings.Contains(ref, ":") {
			tags = append(tags, ref)
		}
	}
	_, known := g.manifests[repo]
	g.mu.Unlock()
	if !known {
		writeErr(w, http.StatusNotFound, "NAME_UNKNOWN")
		return
	}
	sort.Strings(tags)
	q := r.URL.Query()
	if last := q.Get("last"); last != "" {
		i := sort.SearchStrings(tags, last)
		if i < len(tags) && tags[i] == last {
			i++
		}
		tags = tags[i:]
	}
	if v := q.Get("n"); v != "" {
		n, _ := strconv.Atoi(v)
		if n < len(tags) {
			tags = tags[:n]
			w.Header().Set("Link", fmt.Sprintf(`</v2/%s/tags/list?n=%d&last=%s>; rel="next"`, repo, n, tags[n-1]))
		}
	}
	if tags == nil {
		tags = []string{}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"name": repo, "tags": tags})
}

func (g *Registry) serveReferrers(w http.ResponseWriter, r *http.Request, repo string, d digest.Digest) {
	if g.NoReferrersAPI {
		writeErr(w, http.StatusNotFound, "UNSUPPORTED")
		return
	}
	g.mu.Lock()
	descs := append([]ocispec.Descriptor{}, g.referrers[repo+"@"+d.String()]...)
	size := g.ReferrersPageSize
	g.mu.Unlock()
	if size > 0 {
		page, _ := strconv.Atoi(r.URL.Query().Get("page"))
		all := len(descs)
		descs = descs[min(page*size, all):min((page+1)*size, all)]
		if (page+1)*size < all {
			w.Header().Set("Link", fmt.Sprintf(`<?page=%d>; rel="next"`, page+1))
		}
	}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: descs}
	idx.SchemaVersion = 2
	w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
	json.NewEncoder(w).Encode(idx)
}

// Faults commonly used by tests.

// ForPath returns f restricted to requests whose path ends with suffix and
// whose method is method ("" = any).
func ForPath(method, suffix string, f Fault) Fault {
	return func(w http.ResponseWriter, r *http.Request, n int) bool {
		if (method != "" && r.Method != method) || !strings.HasSuffix(r.URL.Path, suffix) {
			return false
		}
		return f(w, r, n)
	}
}

// Status answers with status and an error body, setting Retry-After when
// retryAfter is not empty, for the first times requests (times <= 0: always).
func Status(status int, retryAfter string, times int) Fault {
	return func(w http.ResponseWriter, r *http.Request, n int) bool {
		if times > 0 && n > times {
			return false
		}
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		writeErr(w, status, "UNAVAILABLE")
		return true
	}
}

// Body answers 200 with Content-Length size and body (which may be shorter,
// to truncate, or differ, to corrupt), then drops the connection if
// reset is set. With size < 0 it sends no Content-Length: the body goes
// out chunked, in two flushed halves.
func Body(body []byte, size int, reset bool) Fault {
	return func(w http.ResponseWriter, r *http.Request, n int) bool {
		if size >= 0 {
			w.Header().Set("Content-Length", strconv.Itoa(size))
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			if size < 0 {
				w.Write(body[:len(body)/2])
				w.(http.Flusher).Flush()
				body = body[len(body)/2:]
			}
			w.Write(body)
		}
		if reset {
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
			hijackClose(w)
		}
		return true
	}
}

// Gate answers a blob normally but holds the response after the first
// half of the body until release is closed, then sends the rest. started is
// closed when the first half has been sent.
func Gate(body []byte, started chan<- struct{}, release <-chan struct{}) Fault {
	var once sync.Once
	return func(w http.ResponseWriter, r *http.Request, n int) bool {
		if r.Method != http.MethodGet {
			return false
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		half := len(body) / 2
		w.Write(body[:half])
		w.(http.Flusher).Flush()
		once.Do(func() { close(started) })
		select {
		case <-release:
		case <-r.Context().Done():
			return true
		}
		w.Write(body[half:])
		return true
	}
}

// First applies f to the first times matching requests only.
func First(times int, f Fault) Fault {
	return func(w http.ResponseWriter, r *http.Request, n int) bool {
		return n <= times && f(w, r, n)
	}
}

// Cut answers a GET of blob like the registry, honouring Range, but ends
// the body after the first after bytes of the answer: abruptly (reset) or
// as a clean close of a short body.
func Cut(blob []byte, after int, reset bool) Fault {
	return func(w http.ResponseWriter, r *http.Request, n int) bool {
		if r.Method != http.MethodGet {
			return false
		}
		rest, ok := answerRange(w, r, blob)
		if !ok {
			return false
		}
		w.Write(rest[:min(after, len(rest))])
		w.(http.Flusher).Flush()
		if reset {
			hijackClose(w)
		} else {
			hijackCloseClean(w)
		}
		return true
	}
}

// Stall answers a GET of blob like the registry, honouring Range, but stops
// sending after the first after bytes of the answer until release is
// closed or the client goes away.
func Stall(blob []byte, after int, release <-chan struct{}) Fault {
	return func(w http.ResponseWriter, r *http.Request, n int) bool {
		if r.Method != http.MethodGet {
			return false
		}
		rest, ok := answerRange(w, r, blob)
		if !ok {
			return false
		}
		w.Write(rest[:min(after, len(rest))])
		w.(http.Flusher).Flush()
		select {
		case <-release:
			w.Write(rest[min(after, len(rest)):])
		case <-r.Context().Done():
		}
		return true
	}
}

// answerRange writes the headers of an answer to r for blob, honouring a
// "bytes=N-" Range (206 with Content-Range), and returns the body to send;
// ok is false for a start beyond the blob.
func answerRange(w http.ResponseWriter, r *http.Request, blob []byte) (rest []byte, ok bool) {
	start := rangeStart(r)
	if start > len(blob) {
		return nil, false
	}
	rest = blob[start:]
	w.Header().Set("ETag", `"`+digest.FromBytes(blob).String()+`"`)
	w.Header().Set("Content-Length", strconv.Itoa(len(rest)))
	if start > 0 {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(blob)-1, len(blob)))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	return rest, true
}

// rangeStart returns the first byte of a "bytes=N-" Range header, 0 without
// one.
func rangeStart(r *http.Request) int {
	v, ok := strings.CutPrefix(r.Header.Get("Range"), "bytes=")
	if !ok {
		return 0
	}
	first, _, _ := strings.Cut(v, "-")
	n, err := strconv.Atoi(first)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// hijackCloseClean closes the client connection with a FIN, after what was
// flushed: the client sees a body shorter than its Content-Length.
func hijackCloseClean(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	conn.Close()
}

// hijackClose closes the client connection abruptly (RST where possible).
func hijackClose(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}
