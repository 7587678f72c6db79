package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBadInput sends malformed and hostile requests to the real binary and
// checks the status and the distribution-spec error code of each answer,
// that writes are refused without reaching central, and that none of it
// adds a file to the mirror's store.
func TestBadInput(t *testing.T) {
	t.Parallel()
	c := startCentral(t)
	img := pushImage(t, c, "edge/small", "v1", ociImage(t, "amd64", 2, 4<<10))
	m := startMirror(t, c.addr, mirrorOptions{})

	// Warm the cache with the manifest and one layer, so that the Range
	// cases run against stored content.
	getManifest(t, m.addr, img.repo, img.tag)
	layer := img.layers[0]
	resp, layerBytes := httpDo(t, "GET", "http://"+m.addr+"/v2/"+img.repo+"/blobs/"+layer, nil, nil)
	if resp.StatusCode != 200 || bytesDigest(layerBytes) != layer {
		t.Fatalf("warming %s: %s, %d bytes, digest %s", layer, resp.Status, len(layerBytes), bytesDigest(layerBytes))
	}
	size := len(layerBytes)
	// A client gets the last byte once the blob is verified; the commit
	// (fsync, rename) may finish a moment later. Wait for it.
	waitStored(t, m, layer)
	before := m.storedFiles(t)
	centralMark := len(c.accessLog())

	unknownDigest := "sha256:" + strings.Repeat("0", 64)
	cases := []struct {
		name   string
		method string
		path   string // sent as is on the request line
		header map[string]string
		body   string
		status int
		codes  []string // acceptable envelope codes; nil: no envelope check (HEAD)
	}{
		{"invalid repository name", "GET", "/v2/Edge/SMALL/manifests/v1", nil, "", 400, []string{"NAME_INVALID"}},
		{"invalid name characters", "GET", "/v2/edge/sm%20all/manifests/v1", nil, "", 400, []string{"NAME_INVALID"}},
		{"name too long", "GET", "/v2/" + strings.Repeat("a/", 130) + "x/manifests/v1", nil, "", 400, []string{"NAME_INVALID"}},
		{"invalid name, HEAD", "HEAD", "/v2/Edge/manifests/v1", nil, "", 400, nil},
		{"invalid blob digest", "GET", "/v2/edge/small/blobs/sha256:xyz", nil, "", 400, []string{"DIGEST_INVALID"}},
		{"unsupported digest algorithm", "GET", "/v2/edge/small/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", nil, "", 400, []string{"DIGEST_INVALID"}},
		{"short manifest digest", "GET", "/v2/edge/small/manifests/sha256:abc", nil, "", 400, []string{"DIGEST_INVALID"}},
		{"digest with dots", "GET", "/v2/edge/small/blobs/sha256:..", nil, "", 400, []string{"DIGEST_INVALID"}},
		{"invalid tag", "GET", "/v2/edge/small/manifests/-bad", nil, "", 400, []string{"MANIFEST_INVALID", "TAG_INVALID"}},
		{"tag that is ..", "GET", "/v2/edge/small/manifests/..", nil, "", 400, []string{"MANIFEST_INVALID", "TAG_INVALID", "NAME_INVALID"}},
		{"path traversal", "GET", "/v2/../../etc/passwd/manifests/x", nil, "", 400, []string{"NAME_INVALID"}},
		{"encoded path traversal", "GET", "/v2/%2e%2e/%2e%2e/etc/passwd/manifests/x", nil, "", 400, []string{"NAME_INVALID"}},
		{"encoded traversal in repo", "GET", "/v2/edge/%2e%2e/%2e%2e/%2e%2e/blobs/" + layer, nil, "", 400, []string{"NAME_INVALID"}},
		{"encoded slashes in digest", "GET", "/v2/edge/small/blobs/sha256:..%2f..%2f..%2fmeta.db", nil, "", 0, []string{"DIGEST_INVALID", "UNSUPPORTED", "NAME_INVALID"}},
		{"unknown manifest", "GET", "/v2/edge/small/manifests/nope", nil, "", 404, []string{"MANIFEST_UNKNOWN"}},
		{"unknown blob", "GET", "/v2/edge/small/blobs/" + unknownDigest, nil, "", 404, []string{"BLOB_UNKNOWN"}},
		{"unknown repository tags", "GET", "/v2/no/such/repo/tags/list", nil, "", 404, []string{"NAME_UNKNOWN"}},

		{"range not a number", "GET", "/v2/edge/small/blobs/" + layer, map[string]string{"Range": "bytes=abc"}, "", 416, []string{"RANGE_NOT_SATISFIABLE"}},
		{"range end before start", "GET", "/v2/edge/small/blobs/" + layer, map[string]string{"Range": "bytes=5-1"}, "", 416, []string{"RANGE_NOT_SATISFIABLE"}},
		{"range start beyond size", "GET", "/v2/edge/small/blobs/" + layer, map[string]string{"Range": "bytes=" + strconv.Itoa(size) + "-"}, "", 416, []string{"RANGE_NOT_SATISFIABLE"}},
		{"range far beyond size", "GET", "/v2/edge/small/blobs/" + layer, map[string]string{"Range": "bytes=99999999-99999999"}, "", 416, []string{"RANGE_NOT_SATISFIABLE"}},

		{"PUT manifest", "PUT", "/v2/edge/small/manifests/v1", map[string]string{"Content-Type": img.mediaType}, string(img.raw), 405, []string{"UNSUPPORTED"}},
		{"PUT manifest by digest", "PUT", "/v2/edge/small/manifests/" + img.digest, map[string]string{"Content-Type": img.mediaType}, string(img.raw), 405, []string{"UNSUPPORTED"}},
		{"POST upload", "POST", "/v2/edge/small/blobs/uploads/", nil, "", 405, []string{"UNSUPPORTED"}},
		{"POST monolithic upload", "POST", "/v2/edge/small/blobs/uploads/?digest=" + bytesDigest([]byte("hello")), map[string]string{"Content-Type": "application/octet-stream"}, "hello", 405, []string{"UNSUPPORTED"}},
		{"POST mount", "POST", "/v2/edge/other/blobs/uploads/?mount=" + layer + "&from=edge/small", nil, "", 405, []string{"UNSUPPORTED"}},
		{"PATCH upload", "PATCH", "/v2/edge/small/blobs/uploads/abc", nil, "data", 405, []string{"UNSUPPORTED"}},
		{"PUT upload", "PUT", "/v2/edge/small/blobs/uploads/abc?digest=" + bytesDigest([]byte("data")), nil, "data", 405, []string{"UNSUPPORTED"}},
		{"DELETE manifest", "DELETE", "/v2/edge/small/manifests/" + img.digest, nil, "", 405, []string{"UNSUPPORTED"}},
		{"DELETE tag", "DELETE", "/v2/edge/small/manifests/v1", nil, "", 405, []string{"UNSUPPORTED"}},
		{"DELETE blob", "DELETE", "/v2/edge/small/blobs/" + layer, nil, "", 405, []string{"UNSUPPORTED"}},
		{"PUT base", "PUT", "/v2/", nil, "", 405, []string{"UNSUPPORTED"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body := rawRequest(t, m.addr, tc.method, tc.path, tc.header, tc.body)
			if tc.status != 0 && status != tc.status {
				t.Errorf("%s %s: status %d, want %d; body %s", tc.method, tc.path, status, tc.status, body)
			}
			if tc.status == 0 && (status < 400 || status >= 500) {
				t.Errorf("%s %s: status %d, want a 4xx; body %s", tc.method, tc.path, status, body)
			}
			if tc.method == "HEAD" {
				if len(body) != 0 {
					t.Errorf("HEAD answered with a body: %q", body)
				}
				return
			}
			if code := envelopeCode(t, h, body); !slices.Contains(tc.codes, code) {
				t.Errorf("%s %s: error code %q, want one of %v; body %s", tc.method, tc.path, code, tc.codes, body)
			}
			if status == 416 {
				if got, want := h.Get("Content-Range"), "bytes */"+strconv.Itoa(size); got != want {
					t.Errorf("416 Content-Range %q, want %q", got, want)
				}
			}
		})
	}

	t.Run("valid ranges", func(t *testing.T) {
		for _, r := range []struct {
			spec       string
			start, end int // inclusive
		}{
			{"bytes=0-9", 0, 9},
			{"bytes=10-", 10, size - 1},
			{"bytes=-7", size - 7, size - 1},
			{"bytes=5-99999999", 5, size - 1},
		} {
			status, h, body := rawRequest(t, m.addr, "GET", "/v2/edge/small/blobs/"+layer, map[string]string{"Range": r.spec}, "")
			if status != 206 {
				t.Errorf("Range %s: status %d, want 206", r.spec, status)
				continue
			}
			if want := layerBytes[r.start : r.end+1]; string(body) != string(want) {
				t.Errorf("Range %s: got %d bytes, want bytes %d-%d", r.spec, len(body), r.start, r.end)
			}
			if got, want := h.Get("Content-Range"), fmt.Sprintf("bytes %d-%d/%d", r.start, r.end, size); got != want {
				t.Errorf("Range %s: Content-Range %q, want %q", r.spec, got, want)
			}
		}
	})

	t.Run("range with an unknown unit", func(t *testing.T) {
		// RFC 9110 section 14.2: an origin server MUST ignore a Range
		// header field with a range unit it does not understand.
		status, _, body := rawRequest(t, m.addr, "GET", "/v2/edge/small/blobs/"+layer, map[string]string{"Range": "items=0-1"}, "")
		if status != 200 || string(body) != string(layerBytes) {
			t.Errorf("Range: items=0-1: status %d, %d bytes; want 200 with the whole blob (%d bytes)", status, len(body), size)
		}
	})

	t.Run("nothing stored, nothing forwarded", func(t *testing.T) {
		after := m.storedFiles(t)
		for _, f := range after {
			if !slices.Contains(before, f) {
				t.Errorf("bad requests added %s to the mirror's store", f)
			}
			if strings.Contains(f, strings.TrimPrefix(bytesDigest([]byte("hello")), "sha256:")) ||
				strings.Contains(f, strings.TrimPrefix(bytesDigest([]byte("data")), "sha256:")) {
				t.Errorf("an upload body was stored: %s", f)
			}
		}
		for _, l := range c.accessLog()[centralMark:] {
			for _, method := range []string{`"PUT `, `"POST `, `"PATCH `, `"DELETE `} {
				if strings.Contains(l, method) {
					t.Errorf("the mirror forwarded a write to central: %s", l)
				}
			}
		}
	})

	t.Run("range on a cold blob", func(t *testing.T) {
		// Runs after the store checks, because it fills a blob. The blob is
		// not stored yet: the mirror may answer 206 or the whole blob (RFC
		// 9110 lets a server ignore Range), but the bytes must be right.
		cold := img.layers[1]
		_, full := httpDo(t, "GET", "http://"+c.addr+"/v2/"+img.repo+"/blobs/"+cold, nil, nil)
		status, _, body := rawRequest(t, m.addr, "GET", "/v2/edge/small/blobs/"+cold, map[string]string{"Range": "bytes=100-199"}, "")
		switch {
		case status == 206 && string(body) == string(full[100:200]):
		case status == 200 && string(body) == string(full):
		default:
			t.Errorf("Range on a cold blob: status %d, %d bytes; want 206 with bytes 100-199 or 200 with all %d", status, len(body), len(full))
		}
	})
}

// TestBadInputFreshStore checks that rejected requests leave an empty store
// empty: no blob is stored for a request that was refused.
func TestBadInputFreshStore(t *testing.T) {
	t.Parallel()
	c := startCentral(t)
	m := startMirror(t, c.addr, mirrorOptions{})
	before := m.storedFiles(t)
	for _, req := range []struct{ method, path, body string }{
		{"PUT", "/v2/edge/x/manifests/v1", `{"schemaVersion":2}`},
		{"POST", "/v2/edge/x/blobs/uploads/?digest=" + bytesDigest([]byte("hello")), "hello"},
		{"GET", "/v2/../../etc/passwd/manifests/x", ""},
		{"GET", "/v2/edge/x/blobs/sha256:" + strings.Repeat("0", 64), ""},
		{"GET", "/v2/edge/x/manifests/v1", ""},
	} {
		status, _, body := rawRequest(t, m.addr, req.method, req.path, nil, req.body)
		if status < 400 {
			t.Errorf("%s %s: status %d: %s", req.method, req.path, status, body)
		}
	}
	after := m.storedFiles(t)
	for _, f := range after {
		if !slices.Contains(before, f) {
			t.Errorf("refused requests added %s to an empty store", f)
		}
	}
}

// rawRequest writes one HTTP/1.1 request with path exactly as given (no
// client-side cleaning or escaping) and reads the response.
func rawRequest(t *testing.T, addr, method, path string, header map[string]string, body string) (int, http.Header, []byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nUser-Agent: registry-edge-e2e\r\n", method, path, addr)
	for k, v := range header {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	if body != "" || method == "PUT" || method == "POST" || method == "PATCH" {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: reading response: %v", method, path, err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, rb
}

// envelopeCode checks that body is a distribution-spec error envelope with
// one error, served as JSON, and returns its code.
func envelopeCode(t *testing.T, h http.Header, body []byte) string {
	t.Helper()
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("error Content-Type %q, want application/json", ct)
	}
	var env struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(body, &env); err != nil || len(env.Errors) == 0 {
		t.Errorf("not an error envelope (%v): %q", err, body)
		return ""
	}
	return env.Errors[0].Code
}

// waitStored waits until the mirror's store holds blob d.
func waitStored(t *testing.T, m *mirror, d string) {
	t.Helper()
	hex := strings.TrimPrefix(d, "sha256:")
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, f := range m.storedFiles(t) {
			// Committed content only: a partial download ends with the
			// hex too (partial/sha256-<hex>).
			if strings.HasPrefix(f, "blobs/") && strings.HasSuffix(f, hex) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("blob %s not committed to the mirror's store after 10s", d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
