package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/delta"
	"github.com/registry-edge/registry-edge/internal/layerdelta"
	"github.com/registry-edge/registry-edge/internal/testutil/layergen"
)

// newPagingRegistry starts go-containerregistry's registry, with the
// referrers API, in front of which the referrers answer comes in pages of
// one descriptor, linked by Link rel="next": relative links, except from
// the first page, whose link is absolute; with loop, the last page links
// back to the second. It returns the host:port and a count of referrers
// requests.
func newPagingRegistry(t *testing.T, loop bool) (string, *atomic.Int32) {
	t.Helper()
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(true))
	var n atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/referrers/") {
			inner.ServeHTTP(w, r)
			return
		}
		n.Add(1)
		page, _ := strconv.Atoi(r.URL.Query().Get("page"))
		r2 := r.Clone(r.Context())
		r2.URL.RawQuery = ""
		rec := httptest.NewRecorder()
		inner.ServeHTTP(rec, r2)
		var idx ocispec.Index
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &idx) != nil {
			t.Errorf("inner referrers: %d %s", rec.Code, rec.Body)
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		all := idx.Manifests
		// The registry lists them in map order: sorted, the pages are
		// stable from one request to the next.
		slices.SortFunc(all, func(a, b ocispec.Descriptor) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
		idx.Manifests = all[min(page, len(all)):min(page+1, len(all))]
		switch {
		case page+1 >= len(all) && loop:
			w.Header().Set("Link", `<?page=1>; rel="next"`)
		case page+1 >= len(all):
		case page == 0:
			w.Header().Set("Link", fmt.Sprintf(`<http://%s%s?page=1>; rel="next"`, r.Host, r.URL.Path))
		default:
			w.Header().Set("Link", fmt.Sprintf(`<?page=%d>; rel="next"`, page+1))
		}
		w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
		_ = json.NewEncoder(w).Encode(idx)
	}))
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://"), &n
}

// On a registry that pages its referrers answer, inspect lists the delta
// artifacts of every page, not the first page's only.
func TestInspectPagedReferrers(t *testing.T) {
	t.Parallel()
	for _, loop := range []bool{false, true} {
		t.Run(fmt.Sprintf("loop=%v", loop), func(t *testing.T) {
			t.Parallel()
			testInspectPagedReferrers(t, loop)
		})
	}
}

func testInspectPagedReferrers(t *testing.T, loop bool) {
	host, calls := newPagingRegistry(t, loop)
	repo := host + "/edge/paged"
	a := layer(t, goGzip, layergen.New(620, 10, 4<<10))
	b := layer(t, goGzip, layergen.New(621, 10, 4<<10))
	oldImg, newImg := testImage(t, "amd64", a), testImage(t, "amd64", b)
	pushImage(t, repo+":1", oldImg)
	pushImage(t, repo+":2", newImg)
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: descriptorOf(t, newImg).Digest, Size: descriptorOf(t, newImg).Size}
	var want []digest.Digest
	for i := range 3 {
		l := layerdelta.Layer{
			Delta:  ocispec.Descriptor{MediaType: delta.MediaType, Digest: digest.FromString(strconv.Itoa(i)), Size: int64(10 + i)},
			Target: b.Blob(), Kind: layerdelta.KindBlob, Bases: []layerdelta.Blob{a.Blob()},
		}
		raw, desc, err := layerdelta.Manifest(subject, descriptorOf(t, oldImg).Digest, []layerdelta.Layer{l})
		if err != nil {
			t.Fatal(err)
		}
		putManifest(t, repo, raw)
		want = append(want, desc.Digest)
	}
	calls.Store(0) // the pushes' own
	var insp inspectReport
	mustJSON(t, &insp, "inspect", repo+":2")
	got := map[digest.Digest]bool{}
	for _, a := range insp.Platforms[0].Artifacts {
		got[a.Digest] = true
	}
	for _, d := range want {
		if !got[d] {
			t.Errorf("inspect does not list delta artifact %s (on a later referrers page): %+v", d, insp.Platforms[0].Artifacts)
		}
	}
	// A link back to a page already read ends the list.
	if n := calls.Load(); n != 3 {
		t.Errorf("%d referrers requests, want 3 (one per page)", n)
	}
}

// A next page link to another repository's referrers (or any other path)
// is refused, not read: its list is not about the manifest asked.
func TestReferrersPageLinkStaysOnItsPath(t *testing.T) {
	t.Parallel()
	d := digest.FromString("subject")
	var other atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return // the API check
		}
		w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
		if r.URL.Path != "/v2/edge/app/referrers/"+d.String() {
			other.Add(1)
			_, _ = w.Write([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + digest.FromString("secret").String() + `","size":2}]}`))
			return
		}
		w.Header().Set("Link", `</v2/secret/referrers/`+d.String()+`>; rel="next"`)
		_, _ = w.Write([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`))
	}))
	t.Cleanup(s.Close)
	c := newClient(context.Background(), true, 10*time.Second, nil)
	ref, err := name.NewDigest(strings.TrimPrefix(s.URL, "http://")+"/edge/app@"+d.String(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.referrers(context.Background(), ref)
	if err == nil || !strings.Contains(err.Error(), "not to the referrers of") {
		t.Errorf("referrers() = %s, %v; want an error naming the link", got, err)
	}
	if n := other.Load(); n != 0 {
		t.Errorf("the link to another repository was followed (%d requests)", n)
	}
}
