package httpserve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/delta"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/ociapi"
	"github.com/registry-edge/registry-edge/internal/proxy"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

func (s *Server) dispatch(w *recorder, r *http.Request, rt ociapi.Route, acc *accessEntry) error {
	read := r.Method == http.MethodGet || r.Method == http.MethodHead
	if (!read || rt.Kind == ociapi.KindBlobUpload) && rt.Kind != ociapi.KindCatalog {
		// Every 405 names the methods the resource has (RFC 9110 section
		// 15.5.6: MUST), and OPTIONS is answered with them.
		allow := "GET, HEAD, OPTIONS"
		if rt.Kind == ociapi.KindBlobUpload {
			allow = "OPTIONS"
		}
		w.Header().Set("Allow", allow)
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
	}
	switch rt.Kind {
	case ociapi.KindBase:
		if !read {
			return unsupported("method not allowed")
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		if s.opts.ServeDeltas {
			// As on manifests: a lower tier started with the manifest of
			// its pull already stored (a restart in the middle of it)
			// learns from its start-up check that it may ask for deltas.
			w.Header().Set(upstream.HeaderDeltas, "v1")
		}
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = io.WriteString(w, "{}")
		}
		return nil
	case ociapi.KindBlobUpload:
		return unsupported("pushing is not supported by this read-only mirror")
	case ociapi.KindCatalog:
		return ociapi.NewError(http.StatusNotFound, ociapi.CodeUnsupported, "catalog listing is not supported by this mirror")
	}
	if !read {
		if r.Method == http.MethodDelete {
			return unsupported("deleting is not supported by this read-only mirror")
		}
		return unsupported("pushing is not supported by this read-only mirror")
	}
	t, err := s.p.Router().Route(rt.Name, r.URL.Query().Get("ns"))
	if err != nil {
		return err
	}
	switch rt.Kind {
	case ociapi.KindManifest:
		return s.manifest(w, r, rt, t, acc)
	case ociapi.KindBlob:
		return s.blob(w, r, rt, t, acc)
	case ociapi.KindTags:
		return s.tags(w, r, rt, t, acc)
	case ociapi.KindReferrers:
		return s.referrers(w, r, rt, t, acc)
	}
	return ociapi.NewError(http.StatusNotFound, ociapi.CodeUnsupported, "unknown registry API endpoint")
}

func unsupported(msg string) error {
	return ociapi.NewError(http.StatusMethodNotAllowed, ociapi.CodeUnsupported, msg)
}

// manifest serves GET/HEAD /v2/<name>/manifests/<reference>.
// https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#pulling-manifests
func (s *Server) manifest(w *recorder, r *http.Request, rt ociapi.Route, t proxy.Target, acc *accessEntry) error {
	res, err := s.p.Manifest(r.Context(), t, rt.Reference)
	if err != nil {
		return err
	}
	acc.cache = res.Cache
	age := res.Age
	if accept := r.Header.Values("Accept"); !rt.IsDigest() && ociapi.IsIndex(res.Descriptor.MediaType) &&
		!ociapi.Accepts(accept, ociapi.MediaTypeOCIIndex) && !ociapi.Accepts(accept, ociapi.MediaTypeDockerManifestList) {
		// A client that cannot read indexes (old Docker engines) gets the
		// linux/amd64 image of the index a tag names, as distribution
		// does (an OCI index without one is served as it is). Every other manifest, and anything asked for by digest, is
		// served as stored, whatever the Accept header says, because its
		// digest covers exactly those bytes.
		if res, err = s.platformManifest(r, t, res); err != nil {
			return err
		}
	}
	h := w.Header()
	h.Set("Content-Type", res.Descriptor.MediaType)
	h.Set(ociapi.HeaderContentDigest, res.Descriptor.Digest.String())
	h.Set("ETag", `"`+res.Descriptor.Digest.String()+`"`)
	if err := ifMatch(r, res.Descriptor.Digest); err != nil {
		return err
	}
	if etagListed(r, res.Descriptor.Digest) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	h.Set("Content-Length", strconv.Itoa(len(res.Body)))
	if age >= time.Second {
		// A tag from the cache: how old its confirmation is, which a
		// registry-edge tier below holds to its offline.maxStale.
		h.Set(upstream.HeaderTagAge, strconv.FormatInt(int64(age/time.Second), 10))
	}
	if s.opts.ServeDeltas {
		h.Set(upstream.HeaderDeltas, "v1")
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_ = writeBody(w, r, res.Body)
	}
	return nil
}

// defaultPlatform is the platform served to clients that cannot read an
// index, as distribution chooses it.
var defaultPlatform = ocispec.Platform{OS: "linux", Architecture: "amd64"}

func (s *Server) platformManifest(r *http.Request, t proxy.Target, idx proxy.ManifestResult) (proxy.ManifestResult, error) {
	var index ocispec.Index
	if err := json.Unmarshal(idx.Body, &index); err != nil {
		return proxy.ManifestResult{}, fmt.Errorf("index %s: %w: %w", idx.Descriptor.Digest, errdef.ErrInvalid, err)
	}
	for _, m := range index.Manifests {
		if m.Platform != nil && m.Platform.OS == defaultPlatform.OS && m.Platform.Architecture == defaultPlatform.Architecture {
			return s.p.Manifest(r.Context(), t, m.Digest.String())
		}
	}
	if idx.Descriptor.MediaType == ociapi.MediaTypeOCIIndex {
		// No image to give instead (an arm64-only index of a fleet):
		// the index as it is, as distribution serves an OCI index to
		// any client, rather than a 404 that central would not answer.
		return idx, nil
	}
	// A Docker manifest list without the image: distribution's 404.
	return proxy.ManifestResult{}, ociapi.NewError(http.StatusNotFound, ociapi.CodeManifestUnknown,
		"the manifest is a Docker manifest list without a linux/amd64 image, and the request's Accept header excludes indexes")
}

// blob serves GET/HEAD /v2/<name>/blobs/<digest>, with single-range Range
// requests.
// https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#pulling-blobs
func (s *Server) blob(w *recorder, r *http.Request, rt ociapi.Route, t proxy.Target, acc *accessEntry) error {
	h := w.Header()
	if r.Method == http.MethodHead && s.opts.ServeDeltas && wantsDelta(r) {
		if !s.deltaClient(r) {
			// Answered as a plain blob request; counted, so that a
			// deltas.serveTo that leaves out the sites shows.
			s.m.Deltas.Served.WithLabelValues("refused").Inc()
		} else if done, err := s.deltaAnswer(w, r, rt, t, acc); done || err != nil {
			return err
		}
	}
	if err := ifMatch(r, rt.Digest); err != nil {
		// Only of a blob there is (RFC 9110 section 13.2.1: a request
		// that fails without its condition fails as it would).
		if _, _, serr := s.p.StatBlob(r.Context(), t, rt.Digest); serr != nil {
			return serr
		}
		return err
	}
	if etagListed(r, rt.Digest) {
		// The client holds these bytes (a digest names one content): the
		// blob's existence here is all there is to confirm.
		_, cache, err := s.p.StatBlob(r.Context(), t, rt.Digest)
		if err != nil {
			return err
		}
		acc.cache = cache
		setBlobHeaders(h, rt)
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	if r.Method == http.MethodHead {
		size, cache, err := s.p.StatBlob(r.Context(), t, rt.Digest)
		if err != nil {
			return err
		}
		acc.cache = cache
		setBlobHeaders(h, rt)
		if size >= 0 { // an upstream that did not say: no length rather than a wrong one
			h.Set("Content-Length", strconv.FormatInt(size, 10))
		}
		w.WriteHeader(http.StatusOK)
		return nil
	}
	spec := r.Header.Get("Range")
	if ir := r.Header.Get("If-Range"); ir != "" && ir != `"`+rt.Digest.String()+`"` {
		// A validator of another representation (another host's ETag, or
		// a date, which this server gives none of): the whole blob, not a
		// range of it to splice onto bytes from elsewhere (RFC 9110 13.1.5).
		spec = ""
	}
	if spec != "" {
		// Check the range before anything is fetched: a bad range must not
		// start a fill. The size comes from the store or an upstream HEAD.
		size, _, err := s.p.StatBlob(r.Context(), t, rt.Digest)
		if err != nil {
			return err
		}
		if size >= 0 {
			if _, _, _, rerr := parseRange(spec, size); rerr != nil {
				h.Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
				return rerr
			}
		}
	}
	res, err := s.p.Blob(r.Context(), t, rt.Digest)
	if err != nil {
		return err
	}
	acc.cache = res.Cache
	if res.Redirect != "" {
		// The stored object, from the bucket directly (Range included).
		h.Set("Location", res.Redirect)
		setBlobHeaders(h, rt)
		w.WriteHeader(http.StatusTemporaryRedirect)
		return nil
	}
	defer res.Content.Close()

	start, length, partial := int64(0), res.Size, false
	if spec != "" && res.Size >= 0 {
		var rerr error
		start, length, partial, rerr = parseRange(spec, res.Size)
		if rerr != nil {
			h.Set("Content-Range", "bytes */"+strconv.FormatInt(res.Size, 10))
			return rerr
		}
	}
	setBlobHeaders(h, rt)
	if partial {
		if _, err := res.Content.Seek(start, io.SeekStart); err != nil {
			return err
		}
		if fr, ok := res.Content.(interface{ EndRangeAt(int64) }); ok {
			fr.EndRangeAt(start + length - 1) // a blob being filled
		}
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, res.Size))
		h.Set("Content-Length", strconv.FormatInt(length, 10))
	} else if length >= 0 {
		h.Set("Content-Length", strconv.FormatInt(length, 10))
	}
	status := http.StatusOK
	if partial {
		status = http.StatusPartialContent
	}
	fill := res.Bytes == nil && res.Cache != proxy.CacheHit
	if !fill {
		w.WriteHeader(status)
	}
	if fr, ok := res.Content.(interface{ WhileWaiting(func()) }); ok {
		// A blob being filled: no write deadline while the answer waits for
		// its next bytes (the next write sets one again).
		fr.WhileWaiting(w.liftDeadline)
	}
	var n int64
	switch {
	case res.Bytes != nil:
		// In memory: headers and body leave together.
		err = writeBody(w, r, res.Bytes[start:start+length])
		n = length
	case fill:
		// A fill: its body arrives at the upstream's pace. Send the headers
		// with the first bytes as soon as they are here (net/http would
		// hold them for 512 bytes), then the rest as it comes; a fill that
		// fails before its first byte gets an error answer instead.
		n, err = copyFirstThenRest(w, res.Content, length, status)
		if errors.Is(err, errNothingSent) {
			for _, k := range []string{"Content-Length", "Content-Range", "Accept-Ranges", "ETag", ociapi.HeaderContentDigest, "Content-Type", "Cache-Control"} {
				h.Del(k)
			}
			return err
		}
	case length >= 0:
		n, err = copyBuffered(w, io.LimitReader(res.Content, length))
	default:
		n, err = copyBuffered(w, res.Content)
	}
	if err != nil || (length >= 0 && n != length) {
		// The fill failed or the client left: never end the body cleanly.
		if err == nil {
			err = fmt.Errorf("blob %s: short copy: %w", rt.Digest, errdef.ErrSizeMismatch)
		}
		acc.err = err
		panic(http.ErrAbortHandler)
	}
	return nil
}

// copyFirstThenRest copies length bytes (all, if length < 0) from src to w,
// flushing the response after the first read so that the headers and the
// first body bytes leave in one segment; the rest goes through the same
// pooled buffer, flushed after every write.
func copyFirstThenRest(w *recorder, src io.Reader, length int64, status int) (int64, error) {
	if length == 0 {
		w.WriteHeader(status)
		w.Flush()
		return 0, nil
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	if length > 0 && length < int64(len(buf)) {
		buf = buf[:length]
	}
	k, err := src.Read(buf)
	if k == 0 && err != nil && err != io.EOF {
		// Nothing sent yet, not even the status: the caller answers with
		// the error.
		return 0, fmt.Errorf("%w: %w", errNothingSent, err)
	}
	w.WriteHeader(status)
	if k > 0 {
		if _, werr := w.Write(buf[:k]); werr != nil {
			return 0, werr
		}
	}
	w.Flush()
	n := int64(k)
	if err == io.EOF && length < 0 {
		return n, nil
	}
	if err != nil {
		return n, err
	}
	rest := src
	if length >= 0 {
		rest = io.LimitReader(src, length-n)
	}
	m, err := io.CopyBuffer(flushWriter{w}, struct{ io.Reader }{rest}, *bp)
	return n + m, err
}

// errNothingSent marks a fill's failure before its first byte: the client
// has received nothing, and gets an error answer.
var errNothingSent = errors.New("the fill failed before its first byte")

// flushWriter flushes the response after every write: a fill's bytes
// arrive at the upstream's pace, and a short piece left in net/http's
// buffer would wait there for the next one, which may be long in coming
// (an upstream that pauses), while the client waits for bytes the mirror
// already has.
type flushWriter struct{ w *recorder }

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	f.w.Flush()
	return n, err
}

// copyBufSize is the buffer a stored blob is copied through, and the
// bound of the first read of a blob being filled.
const copyBufSize = 32 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// copyBuffered copies src to w with read and write calls through a pooled
// buffer. It hides io.ReaderFrom and io.WriterTo on purpose: given an
// *os.File, net/http would use sendfile, which measured slower and dearer
// here than a plain copy (one stream: about 0.8 against 1.2 GB/s, and 40 %
// more server CPU per byte; ADR 0015).
func copyBuffered(w io.Writer, src io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{src}, *bp)
}

func setBlobHeaders(h http.Header, rt ociapi.Route) {
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Accept-Ranges", "bytes")
	h.Set(ociapi.HeaderContentDigest, rt.Digest.String())
	h.Set("ETag", `"`+rt.Digest.String()+`"`)
	h.Set("Cache-Control", "max-age=31536000, immutable")
}

// etagListed reports whether the request's If-None-Match names the
// representation whose ETag is d's (or is "*"): the client holds it, and
// a GET or HEAD is answered 304 without a body (RFC 9110 13.1.2, weak
// comparison), as distribution answers.
func etagListed(r *http.Request, d digest.Digest) bool {
	want := `"` + d.String() + `"`
	for _, v := range r.Header.Values("If-None-Match") {
		for _, tag := range strings.Split(v, ",") {
			tag = strings.TrimSpace(tag)
			if tag == "*" || strings.TrimPrefix(tag, "W/") == want {
				return true
			}
		}
	}
	return false
}

// ifMatch evaluates an If-Match header against content whose ETag is its
// digest d (RFC 9110 section 13.1.1, strong comparison): a request made
// only for other content (a script that checks that a tag still names the
// digest it holds) is answered 412, not served what the tag names now.
// "*" matches any content the mirror serves; without the header there is
// no condition.
func ifMatch(r *http.Request, d digest.Digest) error {
	values := r.Header.Values("If-Match")
	if len(values) == 0 {
		return nil
	}
	want := `"` + d.String() + `"`
	for _, v := range values {
		for _, tag := range strings.Split(v, ",") {
			if tag = strings.TrimSpace(tag); tag == "*" || tag == want {
				return nil
			}
		}
	}
	return ociapi.NewError(http.StatusPreconditionFailed, ociapi.CodeUnknown,
		"If-Match: the content is "+want+", not one the request names")
}

// parseRange parses a Range header for content of size bytes. It serves
// a single range (RFC 9110 section 14.2); a header with several ranges is
// ignored and the whole content is sent, which the RFC permits, and so is
// any range of empty content. A malformed or unsatisfiable range is an
// error (416).
func parseRange(spec string, size int64) (start, length int64, partial bool, err error) {
	bad := ociapi.NewError(http.StatusRequestedRangeNotSatisfiable, ociapi.CodeRangeNotSatisfiable, "invalid or unsatisfiable range")
	units, set, ok := strings.Cut(spec, "=")
	if !ok {
		return 0, 0, false, bad
	}
	if strings.TrimSpace(units) != "bytes" {
		return 0, size, false, nil // an unknown unit is ignored (RFC 9110 section 14.2)
	}
	if strings.Contains(set, ",") {
		return 0, size, false, nil
	}
	if size == 0 {
		// No range of an empty blob is satisfiable, but a client that puts
		// a Range on every request ("bytes=0-") wants the blob: the whole
		// of it, no bytes, as net/http's ServeContent (and so distribution)
		// answers, rather than a 416 that fails its pull.
		return 0, 0, false, nil
	}
	first, last, ok := strings.Cut(strings.TrimSpace(set), "-")
	if !ok {
		return 0, 0, false, bad
	}
	switch {
	case first == "" && last == "":
		return 0, 0, false, bad
	case first == "":
		// Suffix: the last n bytes.
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n <= 0 || size == 0 {
			return 0, 0, false, bad
		}
		if n > size {
			n = size
		}
		return size - n, n, true, nil
	default:
		a, err := strconv.ParseInt(first, 10, 64)
		if err != nil || a < 0 || a >= size {
			return 0, 0, false, bad
		}
		b := size - 1
		if last != "" {
			b, err = strconv.ParseInt(last, 10, 64)
			if err != nil || b < a {
				return 0, 0, false, bad
			}
			if b >= size {
				b = size - 1
			}
		}
		return a, b - a + 1, true, nil
	}
}

// tags serves GET /v2/<name>/tags/list with n and last pagination.
// https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#content-discovery
func (s *Server) tags(w *recorder, r *http.Request, rt ociapi.Route, t proxy.Target, acc *accessEntry) error {
	q := r.URL.Query()
	// An empty n ("?n=&last=x", from a client that fills in a URL
	// template) is no n, as distribution reads it: the whole list, not an
	// empty page.
	n, hasN := 0, q.Get("n") != ""
	if hasN {
		var err error
		n, err = strconv.Atoi(q.Get("n"))
		if err != nil || n < 0 {
			return ociapi.NewError(http.StatusBadRequest, "PAGINATION_NUMBER_INVALID", "n must be a non-negative integer")
		}
	}
	last := q.Get("last")
	if last != "" && !ociapi.ValidTag(last) {
		return ociapi.NewError(http.StatusBadRequest, "PAGINATION_NUMBER_INVALID", "last must be a tag")
	}
	var page proxy.TagPage
	if hasN && n == 0 {
		page = proxy.TagPage{Tags: []string{}}
	} else {
		var err error
		page, err = s.p.Tags(r.Context(), t, n, last)
		if err != nil {
			return err
		}
	}
	acc.cache = page.Cache
	body, err := json.Marshal(struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{rt.Name, page.Tags})
	if err != nil {
		return err
	}
	h := w.Header()
	if page.Next != "" {
		v := url.Values{}
		if n > 0 {
			v.Set("n", strconv.Itoa(n))
		}
		v.Set("last", page.Next)
		if ns := q.Get("ns"); ns != "" {
			v.Set("ns", ns)
		}
		h.Set("Link", fmt.Sprintf(`</v2/%s/tags/list?%s>; rel="next"`, rt.Name, v.Encode()))
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_ = writeBody(w, r, body)
	}
	return nil
}

// referrers serves GET /v2/<name>/referrers/<digest>?artifactType=.
// https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#listing-referrers
func (s *Server) referrers(w *recorder, r *http.Request, rt ociapi.Route, t proxy.Target, acc *accessEntry) error {
	at := r.URL.Query().Get("artifactType")
	body, cache, err := s.p.Referrers(r.Context(), t, rt.Digest, at)
	if err != nil {
		return err
	}
	acc.cache = cache
	h := w.Header()
	if at != "" {
		h.Set(ociapi.HeaderFiltersApplied, "artifactType")
	}
	h.Set("Content-Type", ociapi.MediaTypeOCIIndex)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_ = writeBody(w, r, body)
	}
	return nil
}

// deltaClient reports whether r's client may have deltas computed for it
// (deltas.serveTo): encoding costs memory and processor time, and a
// negotiation makes the mirror precompute deltas from then on.
func (s *Server) deltaClient(r *http.Request) bool {
	if len(s.opts.ServeDeltasTo) == 0 {
		return true
	}
	ip, ok := parseHost(clientAddr(r, s.opts.TrustedProxies))
	return ok && inAny(s.opts.ServeDeltasTo, ip)
}

// wantsDelta reports whether r asks for a registry-edge delta (RFC 3229
// A-IM).
func wantsDelta(r *http.Request) bool {
	for _, v := range r.Header.Values("A-Im") {
		for _, im := range strings.Split(v, ",") {
			im, _, _ = strings.Cut(im, ";")
			if strings.EqualFold(strings.TrimSpace(im), upstream.DeltaIM) {
				return true
			}
		}
	}
	return false
}

// deltaAnswer answers a lower tier's delta negotiation with 226 IM Used and
// the descriptor of a delta against some of the blobs it holds (named in
// If-None-Match), stored here so that it fetches the delta as a blob. It
// reports false, for an ordinary answer, when there is no delta worth
// sending.
func (s *Server) deltaAnswer(w *recorder, r *http.Request, rt ociapi.Route, t proxy.Target, acc *accessEntry) (bool, error) {
	if !upstream.ReadsDeltaFormat(r.Header, delta.FormatVersion) {
		// A lower tier that cannot read the deltas made here would
		// download one, reject it and fetch the layer anyway.
		s.m.Deltas.Served.WithLabelValues("unreadable").Inc()
		return false, nil
	}
	if err := s.p.CheckBlob(r.Context(), t, rt.Digest); err != nil {
		return true, err
	}
	bases := upstream.ParseIfNoneMatch(r.Header.Values("If-None-Match"), maxOfferedBases)
	ctx := r.Context()
	wait, async := s.preferredWait(r)
	if async {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, wait, errStillComputing)
		defer cancel()
	}
	l, err := s.p.DeltaFor(ctx, t, rt.Digest, bases)
	if err != nil && async && errors.Is(err, context.DeadlineExceeded) && context.Cause(ctx) == errStillComputing {
		// Still computing (the computation goes on): the lower tier asks
		// again rather than time out and fetch the layer in full.
		s.m.Deltas.Served.WithLabelValues("pending").Inc()
		acc.cache = "pending"
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Preference-Applied", "respond-async")
		w.WriteHeader(http.StatusAccepted)
		return true, nil
	}
	if errors.Is(err, proxy.ErrNoDelta) {
		s.m.Deltas.Served.WithLabelValues("full").Inc()
		return false, nil
	}
	if err != nil {
		return true, err
	}
	desc, err := l.Descriptor()
	if err != nil {
		return true, err
	}
	b, err := json.Marshal(desc)
	if err != nil {
		return true, err
	}
	s.m.Deltas.Served.WithLabelValues("delta").Inc()
	acc.cache = "delta"
	h := w.Header()
	h.Set("IM", upstream.DeltaIM)
	var used []string
	for _, b := range l.Bases {
		used = append(used, `"`+b.Digest.String()+`"`)
	}
	h.Set("Delta-Base", strings.Join(used, ", "))
	h.Set(upstream.HeaderDelta, string(b))
	h.Set(ociapi.HeaderContentDigest, rt.Digest.String())
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(l.Delta.Size, 10))
	// The entity tag of the instance, the layer, as in any answer for it
	// (RFC 3229: that of a 226 answer is the current instance's; the
	// delta is named in HeaderDelta).
	h.Set("ETag", `"`+rt.Digest.String()+`"`)
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(upstream.StatusIMUsed)
	return true, nil
}

// errStillComputing is the cause of a delta negotiation's wait running out.
var errStillComputing = errors.New("the delta is still being computed")

// preferredWait returns how long a delta negotiation may wait for its
// delta and whether its client takes a 202 answer to ask again: RFC 7240
// "Prefer: respond-async, wait=N", at most Options.MaxDeltaWait.
func (s *Server) preferredWait(r *http.Request) (time.Duration, bool) {
	wait := s.opts.MaxDeltaWait
	if wait <= 0 {
		wait = defaultMaxDeltaWait
	}
	async := false
	for _, v := range r.Header.Values("Prefer") {
		for _, pref := range strings.Split(v, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(pref), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "respond-async":
				async = true
			case "wait":
				// Compared in seconds: N seconds past 292 years overflow a
				// time.Duration into a negative wait.
				if n, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(val), `"`), 10, 64); err == nil && n >= 0 && n <= int64(wait/time.Second) {
					wait = time.Duration(n) * time.Second
				}
			}
		}
	}
	return wait, async
}

// defaultMaxDeltaWait is Options.MaxDeltaWait's default: within a lower
// tier's default response header timeout (30s).
const defaultMaxDeltaWait = 20 * time.Second

// maxOfferedBases bounds the entity tags read from one negotiation.
const maxOfferedBases = 64
