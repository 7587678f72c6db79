package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

func TestNew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		opts    Options
		wantErr error
	}{
		{"https", Options{URL: "https://registry-1.docker.io"}, nil},
		{"http with port and trailing slash", Options{URL: "http://127.0.0.1:5000/"}, nil},
		{"no scheme", Options{URL: "registry-1.docker.io"}, errdef.ErrInvalid},
		{"ftp", Options{URL: "ftp://example.com"}, errdef.ErrInvalid},
		{"userinfo", Options{URL: "https://u:p@example.com"}, errdef.ErrInvalid},
		{"query", Options{URL: "https://example.com/?a=b"}, errdef.ErrInvalid},
		{"negative retries", Options{URL: "https://example.com", RetryMax: -1}, errdef.ErrInvalid},
		{"missing CA file", Options{URL: "https://example.com", CAFile: "/nonexistent/ca.pem"}, nil},
		{"missing docker config", Options{URL: "https://example.com", DockerConfig: "/nonexistent/config.json"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tt.opts)
			switch {
			case tt.opts.CAFile != "" || tt.opts.DockerConfig != "":
				if err == nil {
					t.Errorf("New() error = nil, want an error")
				}
			case tt.wantErr == nil && err != nil:
				t.Errorf("New() error = %v, want nil", err)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("New() error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestNewRedactsUserinfo(t *testing.T) {
	t.Parallel()
	_, err := New(Options{URL: "https://user:hunter2secret@example.com"})
	if err == nil {
		t.Fatal("New() error = nil, want an error")
	}
	assertNoSecret(t, "New() error", err.Error(), "hunter2secret")
}

// TestStatusErrors checks the status → category mapping and what *Error
// carries from the body.
func TestStatusErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status    int
		code      string
		wantCat   error
		wantCalls int // with RetryMax 2
	}{
		{http.StatusNotFound, "MANIFEST_UNKNOWN", errdef.ErrNotFound, 1},
		{http.StatusUnauthorized, "UNAUTHORIZED", errdef.ErrUnauthorized, 1},
		{http.StatusForbidden, "DENIED", errdef.ErrDenied, 1},
		{http.StatusBadRequest, "NAME_INVALID", errdef.ErrInvalid, 1},
		{http.StatusMethodNotAllowed, "UNSUPPORTED", errdef.ErrInvalid, 1},
		{http.StatusRequestedRangeNotSatisfiable, "RANGE", errdef.ErrRangeNotSatisfiable, 1},
		{http.StatusTooManyRequests, "TOOMANYREQUESTS", errdef.ErrTooManyRequests, 3},
		{http.StatusInternalServerError, "UNKNOWN", errdef.ErrUnavailable, 3},
		{http.StatusNotImplemented, "UNSUPPORTED", errdef.ErrUnavailable, 1},
		{http.StatusBadGateway, "UNKNOWN", errdef.ErrUnavailable, 3},
		{http.StatusServiceUnavailable, "UNAVAILABLE", errdef.ErrUnavailable, 3},
		{http.StatusGatewayTimeout, "UNKNOWN", errdef.ErrUnavailable, 3},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			t.Parallel()
			var cnt counter
			srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				cnt.add(r)
				writeError(w, tt.status, tt.code, "the message")
			}))
			c := newTestClient(t, srv.URL, func(o *Options) { o.RetryMax = 2 })
			_, err := c.Manifest(context.Background(), "library/alpine", "latest", nil, 1<<20)
			if !errors.Is(err, tt.wantCat) {
				t.Fatalf("Manifest() error = %v, want %v", err, tt.wantCat)
			}
			e := asError(t, err)
			want := &Error{Op: "manifest", Registry: "test.example", Repo: "library/alpine", Ref: "latest",
				Status: tt.status, Codes: []string{tt.code}, Message: "the message"}
			if diff := cmp.Diff(want, e); diff != "" {
				t.Errorf("*Error mismatch (-want +got):\n%s", diff)
			}
			if n := cnt.total(); n != tt.wantCalls {
				t.Errorf("%d requests, want %d", n, tt.wantCalls)
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	t.Parallel()
	e := &Error{Op: "manifest", Registry: "docker.io", Repo: "library/alpine", Ref: "latest", Status: 404,
		Codes: []string{"MANIFEST_UNKNOWN"}, Message: "manifest unknown"}
	want := "upstream docker.io: manifest library/alpine:latest: status 404 MANIFEST_UNKNOWN: manifest unknown"
	if got := e.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	e = &Error{Op: "blob", Registry: "ghcr.io", Repo: "o/r", Ref: "sha256:abc", Err: errdef.ErrUnavailable}
	want = "upstream ghcr.io: blob o/r@sha256:abc: unavailable"
	if got := e.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestErrorIs(t *testing.T) {
	t.Parallel()
	all := []error{errdef.ErrNotFound, errdef.ErrInvalid, errdef.ErrUnauthorized, errdef.ErrDenied,
		errdef.ErrTooManyRequests, errdef.ErrUnavailable, errdef.ErrRangeNotSatisfiable, errdef.ErrDigestMismatch}
	for _, tt := range []struct {
		status int
		want   error
	}{
		{200, nil}, {304, nil}, {400, errdef.ErrInvalid}, {401, errdef.ErrUnauthorized}, {403, errdef.ErrDenied},
		{404, errdef.ErrNotFound}, {409, errdef.ErrInvalid}, {416, errdef.ErrRangeNotSatisfiable},
		{429, errdef.ErrTooManyRequests}, {500, errdef.ErrUnavailable}, {599, errdef.ErrUnavailable},
	} {
		e := &Error{Status: tt.status}
		for _, cat := range all {
			if got, want := errors.Is(e, cat), cat == tt.want; got != want {
				t.Errorf("errors.Is(&Error{Status: %d}, %v) = %v, want %v", tt.status, cat, got, want)
			}
		}
	}
}

func TestRetries(t *testing.T) {
	t.Parallel()
	type step struct {
		status     int
		retryAfter string
	}
	tests := []struct {
		name           string
		steps          []step // answers before the 200
		maxRetryAfter  time.Duration
		wantCalls      int
		wantErr        error
		wantRetryAfter time.Duration
	}{
		{name: "429 with Retry-After 0 then 200", steps: []step{{429, "0"}}, wantCalls: 2},
		{name: "503 twice then 200", steps: []step{{503, ""}, {503, ""}}, wantCalls: 3},
		{name: "502 then 504 then 200", steps: []step{{502, ""}, {504, ""}}, wantCalls: 3},
		{name: "429 with HTTP-date in the past then 200", steps: []step{{429, "Mon, 02 Jan 2006 15:04:05 GMT"}}, wantCalls: 2},
		{name: "Retry-After above the maximum", steps: []step{{429, "3600"}}, maxRetryAfter: time.Second,
			wantCalls: 1, wantErr: errdef.ErrTooManyRequests, wantRetryAfter: time.Hour},
		{name: "503 Retry-After above the maximum", steps: []step{{503, "120"}}, maxRetryAfter: time.Second,
			wantCalls: 1, wantErr: errdef.ErrUnavailable, wantRetryAfter: 2 * time.Minute},
		{name: "retries exhausted", steps: []step{{503, "0"}, {503, "0"}, {503, "0"}, {503, "0"}},
			wantCalls: 4, wantErr: errdef.ErrUnavailable},
		{name: "501 is not retried", steps: []step{{501, ""}}, wantCalls: 1, wantErr: errdef.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var cnt counter
			srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := cnt.add(r)
				if n <= len(tt.steps) {
					s := tt.steps[n-1]
					if s.retryAfter != "" {
						w.Header().Set("Retry-After", s.retryAfter)
					}
					writeError(w, s.status, "X", "try later")
					return
				}
				_, _ = w.Write(testManifest)
			}))
			c := newTestClient(t, srv.URL, func(o *Options) {
				if tt.maxRetryAfter != 0 {
					o.MaxRetryAfter = tt.maxRetryAfter
				}
			})
			_, err := c.Manifest(context.Background(), "library/alpine", "latest", nil, 1<<20)
			if n := cnt.total(); n != tt.wantCalls {
				t.Errorf("%d requests, want %d", n, tt.wantCalls)
			}
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Manifest() error = %v", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Manifest() error = %v, want %v", err, tt.wantErr)
			}
			e := asError(t, err)
			if e.Status != tt.steps[len(tt.steps)-1].status {
				t.Errorf("Status = %d, want the last status %d", e.Status, tt.steps[len(tt.steps)-1].status)
			}
			if e.RetryAfter != tt.wantRetryAfter {
				t.Errorf("RetryAfter = %v, want %v", e.RetryAfter, tt.wantRetryAfter)
			}
		})
	}
}

func TestConnectionRefused(t *testing.T) {
	t.Parallel()
	c := newTestClient(t, closedURL(t), func(o *Options) { o.RetryMax = 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := c.Blob(ctx, "library/alpine", digest.FromString("x"), 0, "")
	if !errors.Is(err, errdef.ErrUnavailable) {
		t.Fatalf("Blob() error = %v, want ErrUnavailable", err)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Blob() error = %v, want ECONNREFUSED in the chain", err)
	}
	if ctx.Err() != nil {
		t.Errorf("Blob() returned only after the context expired")
	}
	e := asError(t, err)
	if e.Status != 0 || e.Op != "blob" {
		t.Errorf("*Error = %+v, want Status 0 and Op blob", e)
	}
}

func TestContextCancelledDuringBackoff(t *testing.T) {
	t.Parallel()
	hit := make(chan struct{}, 1)
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case hit <- struct{}{}:
		default:
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	c := newTestClient(t, srv.URL, func(o *Options) {
		o.RetryMinWait, o.RetryMaxWait = time.Hour, time.Hour
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-hit
		cancel()
	}()
	_, err := c.StatBlob(ctx, "a", digest.FromString("x"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("StatBlob() error = %v, want context.Canceled in the chain", err)
	}
	asError(t, err)
}

func TestRedirectPolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		location string
	}{
		{"file scheme", "file:///etc/passwd"},
		{"link-local metadata address", "http://169.254.169.254/latest/meta-data/"},
		{"unspecified address", "http://0.0.0.0/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var cnt counter
			srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				cnt.add(r)
				w.Header().Set("Location", tt.location)
				w.WriteHeader(http.StatusTemporaryRedirect)
			}))
			c := newTestClient(t, srv.URL)
			_, err := c.Blob(context.Background(), "a", digest.FromString("x"), 0, "")
			if !errors.Is(err, errdef.ErrUnavailable) || !errors.Is(err, errPolicy) {
				t.Fatalf("Blob() error = %v, want ErrUnavailable and a policy refusal", err)
			}
			if n := cnt.total(); n != 1 {
				t.Errorf("%d requests, want 1 (a refused redirect is not retried)", n)
			}
		})
	}
}

func TestCheckRedirect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url      string
		registry string
		ok       bool
	}{
		{"https://cdn.example.com/blob?X-Amz-Signature=x", "https", true},
		{"http://cdn.example.com/blob", "https", false},
		{"http://10.0.0.5:9000/blob", "http", true},
		{"http://127.0.0.1:9000/blob", "http", true},
		{"https://[fe80::1]/blob", "https", false},
		{"https://169.254.169.254/", "https", false},
		{"https://[::ffff:169.254.169.254]/", "https", false},
		{"gopher://example.com/", "https", false},
	}
	for _, tt := range tests {
		req, err := http.NewRequest(http.MethodGet, tt.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = checkRedirect(req, []*http.Request{req}, tt.registry)
		if (err == nil) != tt.ok {
			t.Errorf("checkRedirect(%q, %s) error = %v, want ok=%v", tt.url, tt.registry, err, tt.ok)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"0", 0, true},
		{"1", time.Second, true},
		{" 120 ", 2 * time.Minute, true},
		{"-1", 0, false},
		{"", 0, false},
		{"soon", 0, false},
		{"Thu, 01 Jan 2026 00:00:30 GMT", 30 * time.Second, true},
		{"Wed, 31 Dec 2025 00:00:00 GMT", 0, true},
		{"99999999999999999999", 0, false},
		{"9999999999999", time.Duration(1<<63 - 1).Truncate(time.Second), true},
	}
	for _, tt := range tests {
		got, ok := parseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("parseRetryAfter(%q) = %v, %v, want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestJitterBackoff(t *testing.T) {
	t.Parallel()
	lowest := func(int64) int64 { return 0 }
	highest := func(k int64) int64 { return k - 1 }
	ms := time.Millisecond
	tests := []struct {
		min, max time.Duration
		n        int
		randN    func(int64) int64
		want     time.Duration
	}{
		{100 * ms, 10 * time.Second, 0, highest, 100 * ms},
		{100 * ms, 10 * time.Second, 1, lowest, 100 * ms},
		{100 * ms, 10 * time.Second, 1, highest, 200 * ms},
		{100 * ms, 10 * time.Second, 3, highest, 800 * ms},
		{100 * ms, time.Second, 10, highest, time.Second},
		{100 * ms, time.Second, 200, highest, time.Second},
		{0, 0, 5, highest, 0},
		{0, time.Second, 5, highest, time.Second},
	}
	for _, tt := range tests {
		if got := jitterBackoff(tt.min, tt.max, tt.n, tt.randN); got != tt.want {
			t.Errorf("jitterBackoff(%v, %v, %d) = %v, want %v", tt.min, tt.max, tt.n, got, tt.want)
		}
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"https://example.com/v2/a/blobs/sha256:1", "https://example.com/v2/a/blobs/sha256:1"},
		{"https://user:pw@example.com/x", "https://redacted@example.com/x"},
		{"https://s3.example.com/b?X-Amz-Signature=abc&X-Amz-Credential=def&partNumber=1",
			"https://s3.example.com/b?X-Amz-Credential=redacted&X-Amz-Signature=redacted&partNumber=1"},
		{"https://auth.example.com/token?service=x&access_token=abc", "https://auth.example.com/token?access_token=redacted&service=x"},
		{"https://cdn.example.com/b?sig=abc&se=2026", "https://cdn.example.com/b?se=2026&sig=redacted"},
		{"::not a url", "[unparsable url]"},
	}
	for _, tt := range tests {
		if got := redactURL(tt.in); got != tt.want {
			t.Errorf("redactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestLoggerIsQuietByDefault(t *testing.T) {
	t.Parallel()
	// A nil Logger must not panic and retryablehttp must not print to
	// stderr: its Logger is nil. This test documents the wiring.
	c := newTestClient(t, closedURL(t), func(o *Options) { o.RetryMax = 1 })
	if c.rc.Logger != nil {
		t.Errorf("retryablehttp Logger = %v, want nil", c.rc.Logger)
	}
	_, err := c.StatBlob(context.Background(), "a", digest.FromString("x"))
	if err == nil {
		t.Fatal("StatBlob() error = nil")
	}
}

func TestPing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status  int
		wantErr error
	}{
		{http.StatusOK, nil},
		{http.StatusUnauthorized, nil},
		{http.StatusNotFound, errdef.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v2/" {
					t.Errorf("path = %q, want /v2/", r.URL.Path)
				}
				if r.Header.Get("Authorization") != "" {
					t.Errorf("Ping sent Authorization")
				}
				if tt.status == http.StatusUnauthorized {
					w.Header().Set("WWW-Authenticate", `Bearer realm="http://127.0.0.1:1/token",service="x"`)
				}
				w.WriteHeader(tt.status)
			}))
			c := newTestClient(t, srv.URL, func(o *Options) { o.Username, o.Password = "u", "p" })
			err := c.Ping(context.Background())
			if (tt.wantErr == nil) != (err == nil) || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Errorf("Ping() error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestPathPrefix(t *testing.T) {
	t.Parallel()
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/mirror/v2/") {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		_, _ = w.Write(testManifest)
	}))
	c := newTestClient(t, srv.URL+"/mirror/")
	if _, err := c.Manifest(context.Background(), "a", "latest", nil, 1<<20); err != nil {
		t.Errorf("Manifest() error = %v", err)
	}
}

func TestBackoffHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	c := newTestClient(t, "http://127.0.0.1:1", func(o *Options) {
		o.RetryMinWait, o.RetryMaxWait, o.MaxRetryAfter = time.Millisecond, time.Millisecond, 5*time.Second
	})
	resp := func(status int, ra string) *http.Response {
		h := http.Header{}
		if ra != "" {
			h.Set("Retry-After", ra)
		}
		return &http.Response{StatusCode: status, Header: h}
	}
	tests := []struct {
		resp *http.Response
		want time.Duration
	}{
		{resp(429, "0"), 0},
		{resp(429, "3"), 3 * time.Second},
		{resp(503, "2"), 2 * time.Second},
		{resp(502, "2"), time.Millisecond}, // Retry-After only counts on 429 and 503
		{resp(503, ""), time.Millisecond},
		{nil, time.Millisecond},
	}
	for _, tt := range tests {
		if got := c.backoff(c.minWait, c.maxWait, 0, tt.resp); got != tt.want {
			t.Errorf("backoff(%v) = %v, want %v", tt.resp, got, tt.want)
		}
	}
}

// BlobRange reads the bytes asked for with one bounded request, from an
// upstream that honours ranges or from one that sends the whole blob.
func TestBlobRange(t *testing.T) {
	t.Parallel()
	blob := bytes.Repeat([]byte("0123456789"), 100)
	d := digest.FromBytes(blob)
	for _, ranges := range []bool{true, false} {
		var got []string
		srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got = append(got, r.Header.Get("Range"))
			if !ranges {
				r.Header.Del("Range")
			}
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(blob))
		}))
		c := newTestClient(t, srv.URL)
		b, err := c.BlobRange(context.Background(), "app", d, 123, 256)
		if err != nil || !bytes.Equal(b, blob[123:123+256]) {
			t.Errorf("ranges=%v: BlobRange = %q, %v", ranges, b, err)
		}
		if len(got) != 1 || got[0] != "bytes=123-378" {
			t.Errorf("ranges=%v: requests with Range %q, want one bytes=123-378", ranges, got)
		}
		if b, err := c.BlobRange(context.Background(), "app", d, 990, 256); err != nil || !bytes.Equal(b, blob[990:]) {
			t.Errorf("ranges=%v: BlobRange past the end = %q, %v; want the last 10 bytes", ranges, b, err)
		}
	}
}
