// Package httpserve is the HTTP face of registry-edge: the read-only
// distribution-spec API over a proxy.Proxy, plus /metrics, /healthz and
// /readyz. Handlers return errors; one adapter renders every error as the
// spec's envelope.
package httpserve

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/registry-edge/registry-edge/internal/access"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/metrics"
	"github.com/registry-edge/registry-edge/internal/ociapi"
	"github.com/registry-edge/registry-edge/internal/proxy"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

// Options configures the handler.
type Options struct {
	Logger    *slog.Logger
	Metrics   *metrics.Metrics
	AccessLog bool
	// Ready reports whether the server can take traffic (for /readyz): an
	// error answers 503 with "not ready: " and the error, which should be
	// one line a site admin can act on. nil means always ready.
	Ready func() error
	// Admin serves /admin/ (the site admin's API); nil answers 404.
	Admin http.Handler
	// TrustedProxies are the networks of reverse proxies whose
	// X-Forwarded-For names the client: every handler (rate limit, admin
	// allowFrom, access log) then sees that client as r.RemoteAddr.
	TrustedProxies []netip.Prefix
	// Access decides who may read which repository; nil lets everyone.
	Access Access
	// Status serves the status page on / and /status; nil answers 404.
	Status http.Handler
	// RateLimit bounds each client's registry requests; nil means none.
	RateLimit RateLimit
	// ServeDeltas answers delta negotiations from lower tiers (a HEAD of a
	// blob with A-IM, see upstream.NegotiateDelta) and says so on manifest
	// responses.
	ServeDeltas bool
	// ServeDeltasTo, if not empty, are the networks of the clients whose
	// delta negotiations are answered (the lower tiers); other clients'
	// are answered as plain requests.
	ServeDeltasTo []netip.Prefix
	// WriteStallTimeout is how long a registry answer may wait for its
	// client to take more of it (every write, and the answer's headers,
	// must go out within it) before the connection is dropped: a device
	// that stopped reading, or a client that holds its TCP window shut,
	// would otherwise hold its connection, a goroutine and an open blob
	// for good (the server has no overall write timeout, which a slow
	// link's layer download would hit). The deadline is set when the
	// answer starts and at every write, not while the handler waits for
	// its content (over HTTP/2 it runs on in that wait: a fill that
	// brings nothing for this long loses its client, as
	// storage.clientStallTimeout has it anyway). Default 2m; registry-edge
	// serve sets storage.clientStallTimeout.
	WriteStallTimeout time.Duration
	// MaxDeltaWait bounds how long a delta negotiation that prefers an
	// asynchronous answer (RFC 7240 "Prefer: respond-async, wait=N")
	// waits for the delta before it is answered 202 Accepted, to ask
	// again: at most N seconds, and at most this (default 20s).
	MaxDeltaWait time.Duration
}

// RateLimit refuses a request over its client's budget with an error
// wrapping errdef.ErrTooManyRequests; *access.RateLimiter implements it.
type RateLimit interface {
	Allow(r *http.Request) error
}

// retryAfter is implemented by refusals that know when to come back.
type retryAfter interface{ RetryAfter() time.Duration }

// Access decides whether a request may read a repository ("" for the
// API base); *access.Policy implements it. Errors wrap
// errdef.ErrUnauthorized (401 with a Basic challenge) or errdef.ErrDenied
// (403).
type Access interface {
	// Check decides on r for repository name as sent ("" for the API
	// base); names, called only if the policy has rules, returns every
	// name it goes by (proxy.Router.AccessNames). The client it returns
	// goes to the access log.
	Check(r *http.Request, name string, names func() []string) (access.Client, error)
}

// Server is the HTTP handler of registry-edge.
type Server struct {
	p    *proxy.Proxy
	opts Options
	log  *slog.Logger
	m    *metrics.Metrics
	prom http.Handler

	recent recentPulls

	idPrefix string
	ids      atomic.Uint64
}

// New returns the handler serving p.
func New(p *proxy.Proxy, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.WriteStallTimeout <= 0 {
		opts.WriteStallTimeout = defaultWriteStallTimeout
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return &Server{
		p: p, opts: opts, log: opts.Logger, m: opts.Metrics,
		prom:     promhttp.HandlerFor(opts.Metrics.Registry, promhttp.HandlerOpts{}),
		idPrefix: hex.EncodeToString(b[:]) + "-",
	}
}

// ServeHTTP dispatches by path. /v2 paths are parsed by ociapi.ParseRoute
// rather than http.ServeMux, which would clean (and redirect) paths and
// cannot match repository names that contain slashes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if addr := clientAddr(r, s.opts.TrustedProxies); addr != r.RemoteAddr {
		r2 := *r // a shallow copy, as http.StripPrefix makes: the caller's request stays as it was
		r2.RemoteAddr = addr
		r = &r2
	}
	switch {
	case r.URL.Path == "/v2" || strings.HasPrefix(r.URL.Path, "/v2/"):
		s.serveRegistry(w, r)
	case r.URL.Path == "/metrics":
		s.prom.ServeHTTP(w, r)
	case strings.HasPrefix(r.URL.Path, "/admin/") && s.opts.Admin != nil:
		s.opts.Admin.ServeHTTP(w, r)
	case (r.URL.Path == "/" || r.URL.Path == "/status") && s.opts.Status != nil:
		s.opts.Status.ServeHTTP(w, r)
	case r.URL.Path == "/healthz":
		writeText(w, http.StatusOK, "ok\n")
	case r.URL.Path == "/readyz":
		if s.opts.Ready != nil {
			if err := s.opts.Ready(); err != nil {
				writeText(w, http.StatusServiceUnavailable, "not ready: "+err.Error()+"\n")
				return
			}
		}
		writeText(w, http.StatusOK, "ready\n")
	default:
		ociapi.WriteError(w, r, ociapi.NewError(http.StatusNotFound, ociapi.CodeUnsupported, "not found"))
	}
}

// Headers every registry answer carries, as canonical keys and shared
// values (net/http never modifies them): no allocation per request.
var (
	apiVersionKey   = http.CanonicalHeaderKey(ociapi.HeaderAPIVersion)
	apiVersionValue = []string{"registry/2.0"}
	nosniffKey      = http.CanonicalHeaderKey("X-Content-Type-Options")
	nosniffValue    = []string{"nosniff"}
)

// defaultWriteStallTimeout is Options.WriteStallTimeout's default, the
// default of storage.clientStallTimeout.
const defaultWriteStallTimeout = 2 * time.Minute

// statusClientClosed is the status logged and counted for a request whose
// client left before its answer (nginx's 499); nothing is sent.
const statusClientClosed = 499

func writeText(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// access is what one request did, for the access log and metrics.
type accessEntry struct {
	route  ociapi.Route
	cache  string
	client access.Client
	err    error
	// reason is the error answer's message (safe to show: FromError never
	// echoes an internal error).
	reason string
}

func (s *Server) serveRegistry(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w, stall: s.opts.WriteStallTimeout}
	acc := &accessEntry{}
	h := rec.Header()
	h[apiVersionKey] = apiVersionValue
	// Content is served with the type its upstream gave: never sniffed
	// into a page on the mirror's origin, where the status page and the
	// admin API live.
	h[nosniffKey] = nosniffValue

	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				resetOnClose(r)
				s.finish(r, rec, acc, start)
				panic(v)
			}
			s.log.LogAttrs(r.Context(), slog.LevelError, "panic serving request", slog.Any("panic", v))
			if !rec.wroteHeader {
				ociapi.WriteError(rec, r, ociapi.FromError(errors.New("panic"), acc.route.Kind))
			}
		}
		s.finish(r, rec, acc, start)
	}()

	rt, err := ociapi.ParseRoute(r.URL.Path)
	if err == nil {
		acc.route = rt
		err = s.authorize(rec, r, rt, acc)
	}
	if err == nil {
		err = s.dispatch(rec, r, rt, acc)
	}
	if err != nil {
		acc.err = err
		oe := ociapi.FromError(err, rt.Kind)
		acc.reason = oe.Message
		if rec.wroteHeader {
			// Headers (and maybe part of the body) are out: the only honest
			// signal left is to break the connection.
			panic(http.ErrAbortHandler)
		}
		if r.Context().Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
			// The client left (a device that gave up on a layer being
			// rebuilt, to ask again): nothing failed here, and nobody
			// reads an answer. 499, as nginx logs it, not a 500.
			rec.status = statusClientClosed
			return
		}
		if oe.Status >= 500 && oe.Status != http.StatusInternalServerError && !oe.Local {
			// This mirror answers; what failed is upstream of it (a
			// registry-edge tier below must not take it for a dead link).
			rec.Header().Set(upstream.HeaderTierError, "upstream")
		}
		ociapi.WriteError(rec, r, oe)
	}
}

// authorize applies the access policy, if any, before anything is read.
func (s *Server) authorize(w *recorder, r *http.Request, rt ociapi.Route, acc *accessEntry) error {
	if s.opts.RateLimit != nil {
		if err := s.opts.RateLimit.Allow(r); err != nil {
			oe := ociapi.NewError(http.StatusTooManyRequests, ociapi.CodeTooManyRequests, "too many requests from this client")
			var ra retryAfter
			if errors.As(err, &ra) {
				oe.RetryAfter = ra.RetryAfter()
			}
			return oe
		}
	}
	if s.opts.Access == nil {
		return nil
	}
	// Routed again here only when the policy has rules.
	names := func() []string { return s.p.Router().AccessNames(rt.Name, r.URL.Query().Get("ns")) }
	client, err := s.opts.Access.Check(r, rt.Name, names)
	acc.client = client
	if errors.Is(err, errdef.ErrUnauthorized) {
		w.Header().Set("WWW-Authenticate", `Basic realm="registry-edge"`)
	}
	return err
}

func (s *Server) finish(r *http.Request, rec *recorder, acc *accessEntry, start time.Time) {
	d := time.Since(start)
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	kind := acc.route.Kind.String()
	s.m.Requests.WithLabelValues(kind, methodLabel(r.Method), strconv.Itoa(status)).Inc()
	s.m.RequestDuration.WithLabelValues(kind).Observe(d.Seconds())
	if status < 400 {
		// Content, not error envelopes: the status page counts what the
		// mirror saved the uplink from this.
		s.m.BytesServed.WithLabelValues(kind).Add(float64(rec.written))
	}
	if acc.cache != "" {
		s.m.Cache.WithLabelValues(kind, acc.cache).Inc()
	}
	if acc.route.Kind == ociapi.KindManifest && r.Method == http.MethodGet {
		s.recent.add(Pull{Time: start, Repo: acc.route.Name, Ref: acc.route.Reference, Status: status, Cache: acc.cache, Reason: acc.reason})
	}
	if !s.opts.AccessLog && acc.err == nil {
		return
	}
	attrs := make([]slog.Attr, 0, 10)
	attrs = append(attrs,
		slog.String("method", logMethod(r.Method)),
		slog.String("repo", acc.route.Name),
	)
	if acc.route.Reference != "" {
		if acc.route.IsDigest() {
			attrs = append(attrs, slog.String("digest", acc.route.Reference))
		} else {
			attrs = append(attrs, slog.String("ref", acc.route.Reference))
		}
	}
	attrs = append(attrs,
		slog.Int("status", status),
		slog.Int64("bytes", rec.written),
		slog.Duration("duration", d),
	)
	if acc.cache != "" {
		attrs = append(attrs, slog.String("cache", acc.cache))
	}
	if ns := r.URL.Query().Get("ns"); ns != "" {
		attrs = append(attrs, slog.String("ns", ociapi.Sanitize(ns)))
	}
	// Names as they are (the handler quotes or escapes them), bounded: a
	// rejected user name is whatever the client sent.
	if c := acc.client; c.User != "" {
		attrs = append(attrs, slog.String("user", logName(c.User)))
	}
	if c := acc.client; c.Cert != "" {
		attrs = append(attrs, slog.String("cert", logName(c.Cert)))
	}
	if c := acc.client; c.RejectedUser != "" {
		// Credentials that did not verify: on a 200, the device read an
		// open repository as anonymous with stale credentials.
		attrs = append(attrs, slog.String("rejected_user", logName(c.RejectedUser)))
	}
	attrs = append(attrs, slog.String("remote", remoteHost(r)), slog.String("request_id", s.requestID()))
	level := slog.LevelInfo
	if acc.err != nil {
		attrs = append(attrs, slog.Any("err", acc.err))
		if status >= 500 {
			level = slog.LevelWarn
		}
	}
	s.log.LogAttrs(r.Context(), level, "request", attrs...)
}

// logName bounds a client-chosen name for the log, keeping it valid UTF-8.
func logName(s string) string {
	const max = 256
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// requestID returns an identifier unique within the process, prefixed with
// a random per-process part so that ids of restarts do not collide. A
// counter is used instead of crypto/rand per request: this runs on every
// cached hit.
func (s *Server) requestID() string {
	return s.idPrefix + strconv.FormatUint(s.ids.Add(1), 36)
}

// recorder captures the status and byte count of a response, and gives
// each write a deadline (see extendDeadline).
type recorder struct {
	http.ResponseWriter
	status      int
	written     int64
	wroteHeader bool
	// stall is how long each write may wait for the client (0: no limit).
	stall time.Duration
	// deadline is set while a write deadline is armed (see liftDeadline).
	deadline bool
}

// extendDeadline gives the next write stall to finish: a client that takes
// no bytes for that long has the connection dropped, while one that keeps
// reading, however slowly, is served to the end.
func (w *recorder) extendDeadline() {
	if w.stall > 0 {
		_ = http.NewResponseController(w.ResponseWriter).SetWriteDeadline(time.Now().Add(w.stall))
		w.deadline = true
	}
}

// liftDeadline clears the write deadline while the answer waits for
// bytes to send. Over HTTP/1.1 a deadline only limits a write in
// progress; over HTTP/2 it resets the stream when it passes, written to
// or not, which would cut a client of a fill that pauses (a resume, an
// upstream that sends again bytes the mirror has) after stall.
func (w *recorder) liftDeadline() {
	// Once per armed deadline: a fill's readers wait for every chunk.
	if w.deadline {
		_ = http.NewResponseController(w.ResponseWriter).SetWriteDeadline(time.Time{})
		w.deadline = false
	}
}

func (w *recorder) WriteHeader(code int) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = code, true
		// Also the deadline of the headers of an answer without a body,
		// which net/http writes after the handler returns.
		w.extendDeadline()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.extendDeadline()
	n, err := w.ResponseWriter.Write(p)
	w.written += int64(n)
	return n, err
}

// ReadFrom copies src through Write, so that every piece gets its own
// write deadline.
func (w *recorder) ReadFrom(src io.Reader) (int64, error) {
	return copyBuffered(w, src)
}

func (w *recorder) Flush() {
	w.extendDeadline()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// methodLabel is r.Method as a metric label: any token is a method to
// net/http, and a label value per made-up method would grow the metrics
// (and the mirror's memory) without bound.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

// logMethod is a method for the access log: at most 32 bytes of it.
func logMethod(m string) string {
	if len(m) > 32 {
		return m[:32] + "..."
	}
	return m
}
