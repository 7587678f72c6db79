package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/ocipage"
)

const testManifestType = "application/vnd.oci.image.manifest.v1+json"

var testManifest = []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)

// manifestHandler serves body at /v2/library/alpine/manifests/{latest,<digest>}.
func manifestHandler(body []byte, cnt *counter) http.HandlerFunc {
	d := digest.FromBytes(body)
	return func(w http.ResponseWriter, r *http.Request) {
		cnt.add(r)
		switch r.URL.Path {
		case "/v2/library/alpine/manifests/latest", "/v2/library/alpine/manifests/" + d.String():
		default:
			writeError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
			return
		}
		w.Header().Set("Content-Type", testManifestType)
		w.Header().Set("Docker-Content-Digest", d.String())
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if r.Method == http.MethodGet {
			_, _ = w.Write(body)
		}
	}
}

func TestManifest(t *testing.T) {
	t.Parallel()
	var cnt counter
	srv := newServer(t, manifestHandler(testManifest, &cnt))
	c := newTestClient(t, srv.URL)
	want := Manifest{
		Descriptor: ocispec.Descriptor{MediaType: testManifestType, Digest: digest.FromBytes(testManifest), Size: int64(len(testManifest))},
		Body:       testManifest,
	}
	for _, ref := range []string{"latest", digest.FromBytes(testManifest).String()} {
		got, err := c.Manifest(context.Background(), "library/alpine", ref, []string{testManifestType}, 1<<20)
		if err != nil {
			t.Fatalf("Manifest(%q) error = %v", ref, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Manifest(%q) mismatch (-want +got):\n%s", ref, diff)
		}
	}
}

func TestManifestSendsAccept(t *testing.T) {
	t.Parallel()
	var accept atomic.Value
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		accept.Store(r.Header.Get("Accept"))
		w.Header().Set("Content-Type", testManifestType+"; charset=utf-8")
		_, _ = w.Write(testManifest)
	}))
	c := newTestClient(t, srv.URL)
	m, err := c.Manifest(context.Background(), "a/b", "v1", []string{"x/a", "x/b"}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got := accept.Load(); got != "x/a, x/b" {
		t.Errorf("Accept = %q, want %q", got, "x/a, x/b")
	}
	if m.Descriptor.MediaType != testManifestType {
		t.Errorf("MediaType = %q, want %q (parameters dropped)", m.Descriptor.MediaType, testManifestType)
	}
}

func TestManifestDigestMismatch(t *testing.T) {
	t.Parallel()
	other := []byte(`{"schemaVersion":2}`)
	tests := []struct {
		name   string
		ref    string
		header string // Docker-Content-Digest sent
	}{
		{"by digest", digest.FromBytes(other).String(), ""},
		{"by sha512 digest", digest.SHA512.FromBytes(other).String(), ""},
		{"tag with wrong Docker-Content-Digest", "latest", digest.FromBytes(other).String()},
		{"digest with wrong Docker-Content-Digest", digest.FromBytes(testManifest).String(), digest.FromBytes(other).String()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.header != "" {
					w.Header().Set("Docker-Content-Digest", tt.header)
				}
				w.Header().Set("Content-Type", testManifestType)
				_, _ = w.Write(testManifest)
			}))
			c := newTestClient(t, srv.URL)
			_, err := c.Manifest(context.Background(), "library/alpine", tt.ref, nil, 1<<20)
			if !errors.Is(err, errdef.ErrDigestMismatch) {
				t.Fatalf("Manifest() error = %v, want ErrDigestMismatch", err)
			}
			asError(t, err)
		})
	}
}

// TestManifestSchema1 checks that a Docker schema 1 manifest is reported as
// such (ErrSchema1), by its Content-Type or its schemaVersion, and not as
// a digest mismatch: a signed one's Docker-Content-Digest is that of the
// manifest without its signatures.
func TestManifestSchema1(t *testing.T) {
	t.Parallel()
	signed := []byte(`{"schemaVersion":1,"name":"library/alpine","tag":"latest","architecture":"amd64","fsLayers":[],"history":[],"signatures":[{"protected":"e30"}]}`)
	payload := digest.FromString(`{"schemaVersion":1,"name":"library/alpine","tag":"latest","architecture":"amd64","fsLayers":[],"history":[]}`)
	tests := []struct {
		name, contentType string
	}{
		{"signed", "application/vnd.docker.distribution.manifest.v1+prettyjws"},
		{"unsigned", "application/vnd.docker.distribution.manifest.v1+json"},
		{"generic type", "application/json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Docker-Content-Digest", payload.String())
				w.Header().Set("Content-Type", tt.contentType)
				_, _ = w.Write(signed)
			}))
			c := newTestClient(t, srv.URL)
			_, err := c.Manifest(context.Background(), "library/alpine", "latest", nil, 1<<20)
			if !errors.Is(err, ErrSchema1) || errors.Is(err, errdef.ErrDigestMismatch) {
				t.Fatalf("Manifest() error = %v, want ErrSchema1 and no digest mismatch", err)
			}
			asError(t, err)
		})
	}
}

func TestManifestOtherAlgorithmHeaderIgnored(t *testing.T) {
	t.Parallel()
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Docker-Content-Digest", digest.SHA512.FromBytes(testManifest).String())
		_, _ = w.Write(testManifest)
	}))
	c := newTestClient(t, srv.URL)
	m, err := c.Manifest(context.Background(), "library/alpine", "latest", nil, 1<<20)
	if err != nil {
		t.Fatalf("Manifest() error = %v", err)
	}
	if m.Descriptor.Digest != digest.FromBytes(testManifest) {
		t.Errorf("Digest = %s, want sha256 of the body", m.Descriptor.Digest)
	}
}

func TestManifestTooLarge(t *testing.T) {
	t.Parallel()
	const maxSize = 1024
	const total = 256 << 20
	tests := []struct {
		name          string
		contentLength bool
	}{
		{"announced by Content-Length", true},
		{"chunked", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			done := make(chan int64, 1)
			srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.contentLength {
					w.Header().Set("Content-Length", strconv.Itoa(total))
				}
				chunk := bytes.Repeat([]byte{'x'}, 32<<10)
				var written int64
				for written < total {
					n, err := w.Write(chunk)
					written += int64(n)
					if err != nil {
						break
					}
				}
				done <- written
			}))
			c := newTestClient(t, srv.URL)
			_, err := c.Manifest(context.Background(), "library/alpine", "latest", nil, maxSize)
			if !errors.Is(err, errdef.ErrTooLarge) {
				t.Fatalf("Manifest() error = %v, want ErrTooLarge", err)
			}
			if written := <-done; written >= total {
				t.Errorf("server wrote the whole %d-byte body; the client should have stopped reading", written)
			}
		})
	}
}

func TestManifestInvalidInput(t *testing.T) {
	t.Parallel()
	var cnt counter
	srv := newServer(t, manifestHandler(testManifest, &cnt))
	c := newTestClient(t, srv.URL)
	tests := []struct{ repo, ref string }{
		{"../etc", "latest"},
		{"library/alpine", "../../x"},
		{"library/alpine", "sha256:abc"},
		{"Library/Alpine", "latest"},
		{"library/alpine", "latest?x=1"},
	}
	for _, tt := range tests {
		_, err := c.Manifest(context.Background(), tt.repo, tt.ref, nil, 1<<20)
		if !errors.Is(err, errdef.ErrInvalid) {
			t.Errorf("Manifest(%q, %q) error = %v, want ErrInvalid", tt.repo, tt.ref, err)
		}
	}
	if n := cnt.total(); n != 0 {
		t.Errorf("%d requests sent for invalid input, want 0", n)
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	d := digest.FromBytes(testManifest)
	tests := []struct {
		name    string
		ref     string
		headers map[string]string
		want    ocispec.Descriptor
		wantErr error
	}{
		{
			name:    "tag",
			ref:     "latest",
			headers: map[string]string{"Docker-Content-Digest": d.String(), "Content-Type": testManifestType, "Content-Length": strconv.Itoa(len(testManifest))},
			want:    ocispec.Descriptor{MediaType: testManifestType, Digest: d, Size: int64(len(testManifest))},
		},
		{
			name:    "no Docker-Content-Digest",
			ref:     "latest",
			headers: map[string]string{"Content-Type": testManifestType},
			wantErr: errdef.ErrUnsupported,
		},
		{
			name:    "digest ref with another digest",
			ref:     digest.FromString("other").String(),
			headers: map[string]string{"Docker-Content-Digest": d.String()},
			wantErr: errdef.ErrDigestMismatch,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodHead {
					t.Errorf("method = %s, want HEAD", r.Method)
				}
				for k, v := range tt.headers {
					w.Header().Set(k, v)
				}
			}))
			c := newTestClient(t, srv.URL)
			got, err := c.Resolve(context.Background(), "library/alpine", tt.ref, nil)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Resolve() error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve() error = %v", err)
			}
			if diff := cmp.Diff(tt.want, got.Descriptor); diff != "" {
				t.Errorf("Resolve() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReferrers(t *testing.T) {
	t.Parallel()
	subject := digest.FromBytes(testManifest)
	apiIndex := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"artifactType":"application/x.sig"}]}`)
	tagIndex := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"artifactType":"application/x.sbom"}]}`)
	tagPath := "/v2/app/manifests/sha256-" + subject.Encoded()
	tests := []struct {
		name      string
		api       int // status of the referrers endpoint
		tag       []byte
		tagType   string
		want      []byte
		wantCalls []string
	}{
		{"referrers API", http.StatusOK, nil, "", apiIndex, []string{"GET /v2/app/referrers/" + subject.String()}},
		{"tag schema fallback after 404", http.StatusNotFound, tagIndex, ocispec.MediaTypeImageIndex, tagIndex,
			[]string{"GET /v2/app/referrers/" + subject.String(), "GET " + tagPath}},
		{"tag schema fallback after 400", http.StatusBadRequest, tagIndex, ocispec.MediaTypeImageIndex, tagIndex,
			[]string{"GET /v2/app/referrers/" + subject.String(), "GET " + tagPath}},
		{"tag schema fallback after 405", http.StatusMethodNotAllowed, tagIndex, ocispec.MediaTypeImageIndex, tagIndex,
			[]string{"GET /v2/app/referrers/" + subject.String(), "GET " + tagPath}},
		{"neither", http.StatusNotFound, nil, "", []byte(emptyIndex),
			[]string{"GET /v2/app/referrers/" + subject.String(), "GET " + tagPath}},
		{"tag is not an index", http.StatusNotFound, testManifest, testManifestType, []byte(emptyIndex),
			[]string{"GET /v2/app/referrers/" + subject.String(), "GET " + tagPath}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var cnt counter
			srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				cnt.add(r)
				switch r.URL.Path {
				case "/v2/app/referrers/" + subject.String():
					if tt.api != http.StatusOK {
						writeError(w, tt.api, "UNSUPPORTED", "no")
						return
					}
					w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
					_, _ = w.Write(apiIndex)
				case tagPath:
					if tt.tag == nil {
						writeError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
						return
					}
					w.Header().Set("Content-Type", tt.tagType)
					_, _ = w.Write(tt.tag)
				default:
					t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
					w.WriteHeader(http.StatusTeapot)
				}
			}))
			c := newTestClient(t, srv.URL)
			got, err := c.Referrers(context.Background(), "app", subject)
			if err != nil {
				t.Fatalf("Referrers() error = %v", err)
			}
			want := Manifest{
				Descriptor: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(tt.want), Size: int64(len(tt.want))},
				Body:       tt.want,
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Referrers() mismatch (-want +got):\n%s", diff)
			}
			for _, call := range tt.wantCalls {
				if n := cnt.get(call); n != 1 {
					t.Errorf("%s: %d requests, want 1", call, n)
				}
			}
			if n := cnt.total(); n != len(tt.wantCalls) {
				t.Errorf("%d requests, want %d", n, len(tt.wantCalls))
			}
		})
	}
}

// The tag schema fallback names a sha512 subject by the first 64
// characters of its digest, as the spec has it: the whole digest would be
// a 135-character tag, which no registry takes (the mirror answered 400).
func TestReferrersTagSchemaOfSHA512Subject(t *testing.T) {
	t.Parallel()
	subject := digest.SHA512.FromBytes(testManifest)
	tagIndex := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"artifactType":"application/x.sbom"}]}`)
	tagPath := "/v2/app/manifests/sha512-" + subject.Encoded()[:64]
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case tagPath:
			w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
			_, _ = w.Write(tagIndex)
		default:
			writeError(w, http.StatusNotFound, "NOT_FOUND", "no")
		}
	}))
	c := newTestClient(t, srv.URL)
	got, err := c.Referrers(context.Background(), "app", subject)
	if err != nil {
		t.Fatalf("Referrers() error = %v", err)
	}
	if !bytes.Equal(got.Body, tagIndex) {
		t.Errorf("Referrers() = %s, want the index tagged %s", got.Body, tagPath)
	}
}

// refDesc is a referrer descriptor of digest of s, for paged indexes.
func refDesc(s, artifactType string) string {
	return `{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + digest.FromString(s).String() + `","size":2,"artifactType":"` + artifactType + `"}`
}

// pagedReferrers serves the referrers of subject in pages: pages[i] lists
// the descriptors of page i, and links[i] is the Link target of page i
// ("" for none).
func pagedReferrers(t *testing.T, subject digest.Digest, pages [][]string, links []string, cnt *counter) *httptest.Server {
	return newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cnt.add(r)
		if r.URL.Path != "/v2/app/referrers/"+subject.String() {
			writeError(w, http.StatusNotFound, "NOT_FOUND", "no")
			return
		}
		i := 0
		if p := r.URL.Query().Get("page"); p != "" {
			i, _ = strconv.Atoi(p)
		}
		if i >= len(pages) {
			writeError(w, http.StatusBadRequest, "BAD", "no such page")
			return
		}
		if links[i] != "" {
			w.Header().Set("Link", "<"+strings.ReplaceAll(links[i], "SELF", "http://"+r.Host)+`>; rel="next"`)
		}
		w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
		_, _ = w.Write([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` + strings.Join(pages[i], ",") + `]}`))
	}))
}

// A referrers answer paged with Link rel="next" (relative or absolute, on
// the same host) is read to its end and merged into one index, each
// referrer once; a link back to a page already read ends it.
func TestReferrersPaged(t *testing.T) {
	t.Parallel()
	subject := digest.FromString("subject")
	a, b, c := refDesc("a", "application/x.sig"), refDesc("b", "application/x.sbom"), refDesc("c", "application/x.sig")
	all := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` + a + "," + b + "," + c + `]}`
	tests := []struct {
		name  string
		pages [][]string
		links []string
		calls int
	}{
		{"relative links", [][]string{{a}, {b}, {c}}, []string{"/v2/app/referrers/" + subject.String() + "?page=1", "?page=2", ""}, 3},
		{"absolute link", [][]string{{a, b}, {c}}, []string{"SELF/v2/app/referrers/" + subject.String() + "?page=1", ""}, 2},
		{"overlapping pages", [][]string{{a, b}, {b, c}}, []string{"?page=1", ""}, 2},
		// The first page is asked without ?page=0, hence once more.
		{"loop", [][]string{{a}, {b, c}}, []string{"?page=1", "?page=0"}, 3},
		{"link to itself", [][]string{{a, b, c}}, []string{"?page=0"}, 2},
		// The page read is the query sent, keys sorted: a link that
		// writes them in another order is the same page.
		{"last page links to itself, keys unsorted", [][]string{{a}, {b, c}}, []string{"?z=1&page=1", "?z=1&page=1"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var cnt counter
			srv := pagedReferrers(t, subject, tt.pages, tt.links, &cnt)
			got, err := newTestClient(t, srv.URL).Referrers(context.Background(), "app", subject)
			if err != nil {
				t.Fatalf("Referrers() error = %v", err)
			}
			if string(got.Body) != all {
				t.Errorf("Referrers() = %s\nwant %s", got.Body, all)
			}
			var idx ocispec.Index
			if err := json.Unmarshal(got.Body, &idx); err != nil || len(idx.Manifests) != 3 {
				t.Errorf("Referrers() = %s: %d manifests (%v), want 3", got.Body, len(idx.Manifests), err)
			}
			if got.Descriptor.Digest != digest.FromBytes(got.Body) {
				t.Errorf("descriptor %s, not the body's", got.Descriptor.Digest)
			}
			if n := cnt.total(); n != tt.calls {
				t.Errorf("%d requests, want %d", n, tt.calls)
			}
		})
	}
}

// A paged referrers answer that leads to another host, never ends, or
// fails on a later page is an error, not the first page taken as the list.
func TestReferrersPagedRefused(t *testing.T) {
	t.Parallel()
	subject := digest.FromString("subject")
	endless := make([][]string, ocipage.MaxPages+5)
	endlessLinks := make([]string, len(endless))
	for i := range endless {
		endless[i] = []string{refDesc(strconv.Itoa(i), "application/x.sig")}
		endlessLinks[i] = "?page=" + strconv.Itoa(i+1)
	}
	tests := []struct {
		name    string
		pages   [][]string
		links   []string
		wantErr error
		want    string
	}{
		{"other host", [][]string{{refDesc("a", "x")}}, []string{"http://elsewhere.invalid/v2/app/referrers/" + subject.String() + "?page=1"}, errdef.ErrUnavailable, "another host"},
		{"endless", endless, endlessLinks, errdef.ErrTooLarge, "pages"},
		{"later page fails", [][]string{{refDesc("a", "x")}}, []string{"?page=7"}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var cnt counter
			srv := pagedReferrers(t, subject, tt.pages, tt.links, &cnt)
			_, err := newTestClient(t, srv.URL).Referrers(context.Background(), "app", subject)
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Referrers() error = %v, want %v containing %q", err, tt.wantErr, tt.want)
			}
			if n := cnt.total(); n > ocipage.MaxPages {
				t.Errorf("%d requests, want at most %d", n, ocipage.MaxPages)
			}
		})
	}
}

// A next page is the same manifest's referrers with another query: a link
// to another repository (or subject, or endpoint) of the registry is
// refused, not read with the mirror's credentials and served as this
// manifest's referrers.
func TestReferrersPagedStaysOnItsPath(t *testing.T) {
	t.Parallel()
	subject := digest.FromString("subject")
	other := digest.FromString("other")
	for _, link := range []string{
		"/v2/secret/referrers/" + subject.String() + "?page=1",
		"/v2/app/referrers/" + other.String(),
		"/v2/app/referrers/" + subject.String() + "/../../../secret/referrers/" + subject.String(),
		"/v2/secret/manifests/latest",
	} {
		t.Run(link, func(t *testing.T) {
			t.Parallel()
			var cnt counter
			srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				cnt.add(r)
				w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
				if r.URL.Path == "/v2/app/referrers/"+subject.String() {
					w.Header().Set("Link", "<"+link+`>; rel="next"`)
					_, _ = w.Write([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` + refDesc("a", "application/x.sig") + `]}`))
					return
				}
				_, _ = w.Write([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` + refDesc("secret", "application/x.sbom") + `]}`))
			}))
			got, err := newTestClient(t, srv.URL).Referrers(context.Background(), "app", subject)
			if !errors.Is(err, errdef.ErrUnavailable) || !strings.Contains(err.Error(), "not to the referrers of this manifest") {
				t.Errorf("Referrers() = %s, error %v; want ErrUnavailable naming the link", got.Body, err)
			}
			if n := cnt.total(); n != 1 {
				t.Errorf("%d requests, want 1: the link was followed", n)
			}
		})
	}
}

// A paged answer larger in all than MaxReferrersSize is refused.
func TestReferrersPagedTooLarge(t *testing.T) {
	t.Parallel()
	subject := digest.FromString("subject")
	big := make([]string, 0, 4000)
	for i := range 4000 {
		big = append(big, refDesc("big"+strconv.Itoa(i), strings.Repeat("x", 500)))
	}
	pages := [][]string{big[:2000], big[2000:], big[:2000], big[2000:]}
	// Same descriptors again on later pages: each page is under the
	// bound, their sum is not.
	srv := pagedReferrers(t, subject, pages, []string{"?page=1", "?page=2", "?page=3", ""}, &counter{})
	_, err := newTestClient(t, srv.URL).Referrers(context.Background(), "app", subject)
	if !errors.Is(err, errdef.ErrTooLarge) {
		t.Errorf("Referrers() error = %v, want ErrTooLarge", err)
	}
}

func TestReferrersUpstreamError(t *testing.T) {
	t.Parallel()
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "DENIED", "no")
	}))
	c := newTestClient(t, srv.URL)
	_, err := c.Referrers(context.Background(), "app", digest.FromString("x"))
	if !errors.Is(err, errdef.ErrDenied) {
		t.Errorf("Referrers() error = %v, want ErrDenied", err)
	}
}

// A manifest body that trickles (a byte at a time, each within the stall
// timeout) fails once it falls behind minBodyRate, as unavailable.
func TestManifestBodyTrickleEnds(t *testing.T) {
	t.Parallel()
	body := bytes.Repeat([]byte(" "), 4000)
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", testManifestType)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		for _, c := range body {
			if _, err := w.Write([]byte{c}); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}))
	c := newTestClient(t, srv.URL, func(o *Options) { o.ResponseHeaderTimeout = 200 * time.Millisecond; o.RetryMax = 0 })
	_, err := c.Manifest(context.Background(), "library/alpine", "latest", []string{testManifestType}, 1<<20)
	if !errors.Is(err, errdef.ErrUnavailable) || !strings.Contains(err.Error(), "arriving at less than") {
		t.Errorf("Manifest of a trickling body: %v, want an unavailable error naming the rate", err)
	}
}

// A manifest body that stops arriving ends the fetch after the response
// header timeout without a byte, as unavailable: the fetch is shared by
// every client of the tag, and the fill timeout is hours.
func TestManifestBodyStallEnds(t *testing.T) {
	t.Parallel()
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", testManifestType)
		w.Header().Set("Content-Length", strconv.Itoa(len(testManifest)))
		_, _ = w.Write(testManifest[:50])
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the rest never comes
	}))
	c := newTestClient(t, srv.URL, func(o *Options) { o.ResponseHeaderTimeout = 200 * time.Millisecond; o.RetryMax = 0 })
	// A bound far above the stall timeout, so that a regression fails here
	// instead of hanging the test run.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := c.Manifest(ctx, "library/alpine", "latest", []string{testManifestType}, 1<<20)
	if ctx.Err() != nil {
		t.Fatalf("Manifest still waiting after a minute: %v", err)
	}
	if !errors.Is(err, errdef.ErrUnavailable) || !strings.Contains(err.Error(), "no bytes arrived") {
		t.Errorf("Manifest of a stalled body: %v, want an unavailable error naming the stall", err)
	}
}
