package upstream

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

func TestBlob(t *testing.T) {
	t.Parallel()
	blob := randomBytes(t, 10000)
	d := digest.FromBytes(blob)
	serveContent := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"`+d.String()+`"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(blob))
	}
	ignoreRange := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
		_, _ = w.Write(blob)
	}
	wrongRange := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Range", "bytes 0-9999/10000")
		w.WriteHeader(http.StatusPartialContent)
		_, _ = w.Write(blob)
	}
	partialRange := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Range", "bytes 100-199/10000")
		w.WriteHeader(http.StatusPartialContent)
		_, _ = w.Write(blob[100:200])
	}
	// A 206 whose body (no length) runs on past the range it names.
	overlongRange := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Range", "bytes 100-199/10000")
		w.WriteHeader(http.StatusPartialContent)
		_, _ = w.Write(blob[100:])
	}
	// The first 100 bytes, to a request that asked for no range.
	cappedFirst := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Range", "bytes 0-99/10000")
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusPartialContent)
		_, _ = w.Write(blob[:100])
	}
	signedRange := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Range", "bytes +4000-9999/10000")
		w.WriteHeader(http.StatusPartialContent)
		_, _ = w.Write(blob[4000:])
	}
	tests := []struct {
		name       string
		handler    http.HandlerFunc
		offset     int64
		wantOffset int64
		wantSize   int64
		wantETag   string
		wantErr    error
		wantEnd    int64 // 0: the blob's end
	}{
		{"whole blob", serveContent, 0, 0, 10000, `"` + d.String() + `"`, nil, 0},
		{"from an offset", serveContent, 4000, 4000, 10000, `"` + d.String() + `"`, nil, 0},
		{"server ignores Range", ignoreRange, 4000, 0, 10000, "", nil, 0},
		{"offset past the end", serveContent, 20000, 0, 0, "", errdef.ErrRangeNotSatisfiable, 0},
		{"206 from an earlier byte", wrongRange, 4000, 0, 10000, "", nil, 0},
		{"206 from a later byte", partialRange, 50, 0, 0, "", ErrRangeMissesOffset, 0},
		{"206 not to the end (capped)", partialRange, 100, 100, 10000, "", nil, 200},
		{"206 from an earlier byte, not to the end", partialRange, 150, 100, 10000, "", nil, 200},
		{"206 that ends before the offset", partialRange, 300, 0, 0, "", ErrRangeMissesOffset, 0},
		{"206 body longer than its range", overlongRange, 100, 100, 10000, "", nil, 200},
		{"capped 206 to a request without Range", cappedFirst, 0, 0, 10000, "", nil, 100},
		{"206 with a sign in Content-Range", signedRange, 4000, 0, 0, "", errdef.ErrUnavailable, 0},
		{"If-Range matches", serveContent, 4000, 4000, 10000, `"` + d.String() + `"`, nil, 0},
		{"If-Range does not match: whole blob", serveContent, 4000, 0, 10000, `"` + d.String() + `"`, nil, 0},
		{"weak validator is not sent", serveContent, 4000, 4000, 10000, `"` + d.String() + `"`, nil, 0},
		{"unquoted validator is not sent", serveContent, 4000, 4000, 10000, `"` + d.String() + `"`, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, tt.handler)
			c := newTestClient(t, srv.URL)
			ifRange := map[string]string{
				"If-Range matches":                    `"` + d.String() + `"`,
				"If-Range does not match: whole blob": `"sha256:other"`,
				"weak validator is not sent":          `W/"sha256:other"`,
				"unquoted validator is not sent":      `sha256:other`,
			}[tt.name]
			resp, err := c.Blob(context.Background(), "library/alpine", d, tt.offset, ifRange)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Blob() error = %v, want %v", err, tt.wantErr)
				}
				if errors.Is(err, ErrRangeMissesOffset) && !errors.Is(err, errdef.ErrUnavailable) {
					t.Errorf("Blob() error = %v, want it to match errdef.ErrUnavailable too", err)
				}
				asError(t, err)
				return
			}
			if err != nil {
				t.Fatalf("Blob() error = %v", err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			end := tt.wantEnd
			if end == 0 {
				end = int64(len(blob))
			}
			if !bytes.Equal(body, blob[tt.wantOffset:end]) {
				t.Errorf("body = %d bytes, want blob[%d:%d] (%d bytes)", len(body), tt.wantOffset, end, end-tt.wantOffset)
			}
			got := [4]any{resp.Offset, resp.End, resp.Size, resp.ETag}
			want := [4]any{tt.wantOffset, end, tt.wantSize, tt.wantETag}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Blob() Offset, Size, ETag mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestBlobNoRetryAfterBody checks that a body failing mid-stream is handed
// to the caller as a read error, not retried behind its back.
func TestBlobNoRetryAfterBody(t *testing.T) {
	t.Parallel()
	var cnt counter
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cnt.add(r)
		w.Header().Set("Content-Length", "1000")
		_, _ = w.Write(make([]byte, 100))
		// Returning with fewer bytes than announced aborts the connection.
	}))
	c := newTestClient(t, srv.URL)
	resp, err := c.Blob(context.Background(), "a", digest.FromString("x"), 0, "")
	if err != nil {
		t.Fatalf("Blob() error = %v", err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("reading a truncated body succeeded, want an error")
	}
	if n := cnt.total(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestStatBlob(t *testing.T) {
	t.Parallel()
	d := digest.FromString("blob")
	tests := []struct {
		name    string
		header  map[string]string
		status  int
		want    int64
		wantErr error
	}{
		{"size", map[string]string{"Content-Length": "42", "Docker-Content-Digest": d.String()}, 200, 42, nil},
		{"no size", nil, 200, -1, nil},
		{"wrong digest", map[string]string{"Content-Length": "42", "Docker-Content-Digest": digest.FromString("other").String()}, 200, 0, errdef.ErrDigestMismatch},
		{"not found", nil, 404, 0, errdef.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodHead {
					t.Errorf("method = %s, want HEAD", r.Method)
				}
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				if tt.header == nil {
					// Stop net/http from adding a Content-Length.
					w.Header().Set("Transfer-Encoding", "chunked")
				}
				w.WriteHeader(tt.status)
			}))
			c := newTestClient(t, srv.URL)
			got, err := c.StatBlob(context.Background(), "a", d)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("StatBlob() error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("StatBlob() = %d, %v, want %d, nil", got, err, tt.want)
			}
		})
	}
}

func TestParseContentRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in                string
		start, end, total int64
		ok                bool
	}{
		{"bytes 0-99/100", 0, 99, 100, true},
		{"bytes 10-99/*", 10, 99, -1, true},
		{"bytes 10-99/99", 0, 0, 0, false},
		{"bytes 10-9/100", 0, 0, 0, false},
		{"bytes */100", 0, 0, 0, false},
		{"items 0-1/2", 0, 0, 0, false},
		{"bytes -1-5/10", 0, 0, 0, false},
		{"bytes +1-5/10", 0, 0, 0, false},
		{"bytes 1-+5/10", 0, 0, 0, false},
		{"bytes 1-5/+10", 0, 0, 0, false},
		{"bytes 1- 5/10", 0, 0, 0, false},
		{"bytes 0-9223372036854775807/*", 0, 0, 0, false},
		{"bytes 0-9223372036854775806/*", 0, 9223372036854775806, -1, true},
		{"", 0, 0, 0, false},
	}
	for _, tt := range tests {
		s, e, tot, ok := parseContentRange(tt.in)
		if s != tt.start || e != tt.end || tot != tt.total || ok != tt.ok {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v, want %d, %d, %d, %v", tt.in, s, e, tot, ok, tt.start, tt.end, tt.total, tt.ok)
		}
	}
}

// Blobs are asked for as they are stored: no Accept-Encoding, so no proxy
// or CDN gzips them on the way (Go's transparent gunzip would hand over
// other bytes, with no size, a bomb for a hostile upstream), and a body
// sent gzip-encoded all the same arrives as sent.
func TestBlobWithoutContentEncoding(t *testing.T) {
	t.Parallel()
	blob := randomBytes(t, 10000)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(blob)
	zw.Close()
	asked := make(chan string, 1)
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked <- r.Header.Get("Accept-Encoding")
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Length", strconv.Itoa(gz.Len()))
		_, _ = w.Write(gz.Bytes())
	}))
	c := newTestClient(t, srv.URL)
	resp, err := c.Blob(context.Background(), "app", digest.FromBytes(blob), 0, "")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ae := <-asked; ae != "" {
		t.Errorf("Accept-Encoding %q sent for a blob, want none", ae)
	}
	if !bytes.Equal(got, gz.Bytes()) {
		t.Errorf("got %d bytes, want the %d bytes sent (not inflated)", len(got), gz.Len())
	}
}
