// Package admin is the site admin's HTTP API of a running registry-edge,
// served under /admin/ on the registry listener to the networks of
// admin.allowFrom (loopback by default):
//
//	GET  /admin/v1/prefetch   progress of every pre-staged image
//	POST /admin/v1/prefetch   {"images":[{"ref":"org/app:1.4","platforms":["linux/arm64"]}],"now":true}
//	DELETE /admin/v1/prefetch?ref=org/app:1.4   take an image added here off the list, unpin it
//	POST /admin/v1/gc         {"dryRun":true}: what eviction would remove (or removes) and why
//
// Answers are JSON; errors are {"error": "..."} with a 4xx or 5xx status.
// The Client type is what `registry-edge prefetch` uses.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/gc"
	"github.com/registry-edge/registry-edge/internal/prefetch"
)

// PrefetchPath is the path of the prefetch resource.
const PrefetchPath = "/admin/v1/prefetch"

// GCPath is the path of the eviction resource.
const GCPath = "/admin/v1/gc"

// maxRequest bounds a request body: a list of image references.
const maxRequest = 1 << 20

// PrefetchRequest asks for images to be pre-staged.
type PrefetchRequest struct {
	Images []prefetch.Image `json:"images"`
	// Now runs the request at once, outside the configured time windows.
	Now bool `json:"now"`
}

// PrefetchStatus is the progress of every image the mirror pre-stages.
type PrefetchStatus struct {
	Images []prefetch.Status `json:"images"`
}

// Prefetcher is what the API needs; *prefetch.Prefetcher implements it.
type Prefetcher interface {
	Trigger(images []prefetch.Image, now bool) error
	Remove(ctx context.Context, ref string) error
	Status() []prefetch.Status
}

// GCFunc plans an eviction (dryRun) or carries it out.
type GCFunc func(ctx context.Context, dryRun bool) (*gc.Plan, error)

// Options configures the admin API.
type Options struct {
	Prefetcher Prefetcher
	// GC serves /admin/v1/gc; nil answers 404 there.
	GC GCFunc
	// Allow lists the networks whose clients may use the API; others get
	// 403.
	Allow []netip.Prefix
	// Hosts are the names (admin.hosts) by which the API may be addressed
	// in the Host header, besides IP addresses and localhost (addressedHere).
	Hosts []string
}

// Handler serves the admin API.
type Handler struct {
	pf    Prefetcher
	gc    GCFunc
	allow []netip.Prefix
	hosts map[string]bool
}

// New returns the admin API handler.
func New(o Options) *Handler {
	return &Handler{pf: o.Prefetcher, gc: o.GC, allow: o.Allow, hosts: hostSet(o.Hosts)}
}

func (h *Handler) allowed(remote string) bool { return allowed(h.allow, remote) }

// Only serves next to clients in allow that address it by a name in hosts
// (or an IP address, or localhost: addressedHere) and answers 403 to
// others: the status page shares the admin API's allow-list.
func Only(allow []netip.Prefix, hosts []string, next http.Handler) http.Handler {
	names := hostSet(hosts)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allowed(allow, r.RemoteAddr) {
			writeError(w, http.StatusForbidden, "not open to this address (see admin.allowFrom)")
			return
		}
		if !addressedHere(names, r.Host) {
			writeError(w, http.StatusForbidden, misaddressed(r.Host))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// hostSet returns names in the form addressedHere compares.
func hostSet(names []string) map[string]bool {
	set := make(map[string]bool, len(names))
	for _, n := range names {
		set[strings.TrimSuffix(strings.ToLower(n), ".")] = true
	}
	return set
}

// addressedHere reports whether a request's Host header names this mirror
// in a way a web page cannot borrow: an IP address, localhost, or one of
// names (admin.hosts). A page whose own host name an attacker makes
// resolve to the mirror (DNS rebinding) reads the mirror as its own origin,
// and a browser on an allowed host would hand it the status page and the
// prefetch list; its requests carry that name, which is none of these.
// Clients that send no Host (HTTP/1.0) are no browser.
func addressedHere(names map[string]bool, hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "" || host == "localhost" || strings.HasSuffix(host, ".localhost") || names[host] {
		return true
	}
	_, err = netip.ParseAddr(host)
	return err == nil
}

func misaddressed(host string) string {
	return fmt.Sprintf("not open to requests for host %q: use the mirror's IP address, localhost, or a name listed in admin.hosts", host)
}

// fromWebPage refuses (status, reason) a request that changes something and
// looks sent by a web page rather than by registry-edge or curl. A page in
// a browser on an allowed host (the mirror's own, often) could otherwise
// pin images or run an eviction with a form post: such a request names the
// page's Origin, and cannot carry a JSON Content-Type without a CORS
// preflight, which this API never answers.
func fromWebPage(r *http.Request) (int, string) {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return 0, ""
	}
	if site := r.Header.Get("Sec-Fetch-Site"); r.Header.Get("Origin") != "" || site != "" && site != "none" {
		return http.StatusForbidden, "the admin API does not take requests from web pages"
	}
	if r.Method == http.MethodPost && r.ContentLength != 0 { // a POST without a body sends no type
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			return http.StatusUnsupportedMediaType, "request body: Content-Type must be application/json"
		}
	}
	return 0, ""
}

func allowed(allow []netip.Prefix, remote string) bool {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	addr := ap.Addr().Unmap()
	for _, p := range allow {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.allowed(r.RemoteAddr) {
		writeError(w, http.StatusForbidden, "the admin API is not open to this address (see admin.allowFrom)")
		return
	}
	if !addressedHere(h.hosts, r.Host) {
		writeError(w, http.StatusForbidden, misaddressed(r.Host))
		return
	}
	if status, msg := fromWebPage(r); status != 0 {
		writeError(w, status, msg)
		return
	}
	if r.URL.Path == GCPath && h.gc != nil {
		h.serveGC(w, r)
		return
	}
	if r.URL.Path != PrefetchPath {
		writeError(w, http.StatusNotFound, "no such admin resource")
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		writeJSON(w, http.StatusOK, PrefetchStatus{Images: h.pf.Status()})
	case http.MethodPost:
		var req PrefetchRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, maxRequest))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, "request body: "+err.Error())
			return
		}
		if len(req.Images) == 0 {
			writeError(w, http.StatusBadRequest, "request body: images: at least one image is required")
			return
		}
		if err := h.pf.Trigger(req.Images, req.Now); err != nil {
			writeError(w, statusOf(err), err.Error())
			return
		}
		writeJSON(w, http.StatusAccepted, PrefetchStatus{Images: h.pf.Status()})
	case http.MethodDelete:
		ref := r.URL.Query().Get("ref")
		if ref == "" {
			writeError(w, http.StatusBadRequest, "query parameter ref is required")
			return
		}
		if err := h.pf.Remove(r.Context(), ref); err != nil {
			writeError(w, statusOf(err), err.Error())
			return
		}
		writeJSON(w, http.StatusOK, PrefetchStatus{Images: h.pf.Status()})
	default:
		w.Header().Set("Allow", "GET, HEAD, POST, DELETE")
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed", r.Method))
	}
}

// GCRequest asks for an eviction run.
type GCRequest struct {
	// DryRun only plans: nothing is deleted.
	DryRun bool `json:"dryRun"`
}

func (h *Handler) serveGC(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed", r.Method))
		return
	}
	var req GCRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "request body: "+err.Error())
		return
	}
	plan, err := h.gc(r.Context(), req.DryRun)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	if plan == nil {
		plan = &gc.Plan{}
	}
	writeJSON(w, http.StatusOK, plan)
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, errdef.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, errdef.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, errdef.ErrTooManyRequests):
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
