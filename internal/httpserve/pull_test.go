package httpserve_test

import (
	"bytes"
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
	"testing"
	"testing/iotest"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/proxy"
	"github.com/registry-edge/registry-edge/internal/testutil/fakeupstream"
)

func TestPullThroughThenHit(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 100_000)
	mdesc, layers := m.fake.Image("team/app", "v1", layer)

	resp, body := m.get(http.MethodGet, manifestPath("team/app", "v1"))
	if resp.StatusCode != 200 {
		t.Fatalf("GET manifest by tag: %d %s", resp.StatusCode, body)
	}
	if got := digest.FromBytes(body); got != mdesc.Digest {
		t.Errorf("manifest digest = %s, want %s", got, mdesc.Digest)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != mdesc.Digest.String() {
		t.Errorf("Docker-Content-Digest = %q, want %s", got, mdesc.Digest)
	}
	if got := resp.Header.Get("Content-Type"); got != ocispec.MediaTypeImageManifest {
		t.Errorf("Content-Type = %q", got)
	}
	resp, body = m.get(http.MethodGet, blobPath("team/app", layers[0].Digest))
	if resp.StatusCode != 200 || !bytes.Equal(body, layer) {
		t.Fatalf("GET blob: status %d, %d bytes, equal=%v", resp.StatusCode, len(body), bytes.Equal(body, layer))
	}
	m.waitFills()

	before := m.fake.Total()
	for i := 0; i < 3; i++ {
		if resp, _ := m.get(http.MethodGet, manifestPath("team/app", "v1")); resp.StatusCode != 200 {
			t.Fatalf("cached GET manifest by tag: %d", resp.StatusCode)
		}
		if resp, _ := m.get(http.MethodGet, manifestPath("team/app", mdesc.Digest.String())); resp.StatusCode != 200 {
			t.Fatalf("cached GET manifest by digest: %d", resp.StatusCode)
		}
		resp, body := m.get(http.MethodGet, blobPath("team/app", layers[0].Digest))
		if resp.StatusCode != 200 || !bytes.Equal(body, layer) {
			t.Fatalf("cached GET blob: %d", resp.StatusCode)
		}
		resp, _ = m.get(http.MethodHead, blobPath("team/app", layers[0].Digest))
		if resp.StatusCode != 200 || resp.ContentLength != int64(len(layer)) {
			t.Fatalf("cached HEAD blob: %d, length %d", resp.StatusCode, resp.ContentLength)
		}
	}
	if after := m.fake.Total(); after != before {
		t.Errorf("cached requests within the tag TTL made %d upstream requests, want 0", after-before)
	}
}

func TestStaleTagRevalidatesAndFollowsMove(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	v1, _ := m.fake.Image("app", "latest", []byte("one"))
	if resp, _ := m.get(http.MethodGet, manifestPath("app", "latest")); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	m.clock.Advance(2 * time.Minute) // past the TTL
	heads := m.fake.Count(http.MethodHead, "/v2/app/manifests/latest")
	resp, body := m.get(http.MethodGet, manifestPath("app", "latest"))
	if resp.StatusCode != 200 || digest.FromBytes(body) != v1.Digest {
		t.Fatalf("revalidated GET: %d %s", resp.StatusCode, digest.FromBytes(body))
	}
	if got := m.fake.Count(http.MethodHead, "/v2/app/manifests/latest") - heads; got != 1 {
		t.Errorf("revalidation made %d HEAD requests, want 1", got)
	}

	v2, _ := m.fake.Image("app", "latest", []byte("two"))
	m.clock.Advance(2 * time.Minute)
	resp, body = m.get(http.MethodGet, manifestPath("app", "latest"))
	if resp.StatusCode != 200 || digest.FromBytes(body) != v2.Digest {
		t.Fatalf("moved tag: got %s, want %s", digest.FromBytes(body), v2.Digest)
	}
}

func TestUpstreamDownServesCachedContent(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := []byte("cached layer content")
	mdesc, layers := m.fake.Image("app", "v1", layer)
	m.get(http.MethodGet, manifestPath("app", "v1"))
	m.get(http.MethodGet, blobPath("app", layers[0].Digest))
	m.waitFills()
	m.clock.Advance(time.Hour) // the tag is stale
	m.upstream.Close()         // connection refused from now on

	resp, body := m.get(http.MethodGet, manifestPath("app", "v1"))
	if resp.StatusCode != 200 || digest.FromBytes(body) != mdesc.Digest {
		t.Fatalf("stale tag with upstream down: %d %s", resp.StatusCode, body)
	}
	if got := metricValue(t, m.metrics, "registry_edge_stale_tags_served_total"); got != 1 {
		t.Errorf("stale tags served metric = %v, want 1", got)
	}
	if resp, _ := m.get(http.MethodGet, manifestPath("app", mdesc.Digest.String())); resp.StatusCode != 200 {
		t.Errorf("manifest by digest with upstream down: %d", resp.StatusCode)
	}
	if resp, body := m.get(http.MethodGet, blobPath("app", layers[0].Digest)); resp.StatusCode != 200 || !bytes.Equal(body, layer) {
		t.Errorf("blob with upstream down: %d", resp.StatusCode)
	}
	// Uncached content fails fast with a 503-class error, not a 404.
	resp, body = m.get(http.MethodGet, manifestPath("app", "v2"))
	m.wantCode(resp, body, http.StatusServiceUnavailable, "UNAVAILABLE")
	resp, body = m.get(http.MethodGet, blobPath("app", digest.FromString("missing")))
	m.wantCode(resp, body, http.StatusServiceUnavailable, "UNAVAILABLE")
}

func TestUpstream503ForCachedTagServesStale(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	mdesc, _ := m.fake.Image("app", "v1", []byte("x"))
	m.get(http.MethodGet, manifestPath("app", "v1"))
	m.clock.Advance(time.Hour)
	m.fake.Fail(fakeupstream.Status(http.StatusServiceUnavailable, "", 0))
	resp, body := m.get(http.MethodGet, manifestPath("app", "v1"))
	if resp.StatusCode != 200 || digest.FromBytes(body) != mdesc.Digest {
		t.Fatalf("stale tag with upstream 503: %d %s", resp.StatusCode, body)
	}
}

func TestTagNotFoundPolicy(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{"serve-cached", "not-found"} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			m := newMirror(t, func(o *proxyOptions) { o.TagNotFound = policy })
			m.fake.Image("app", "gone", []byte("x"))
			m.get(http.MethodGet, manifestPath("app", "gone"))
			m.fake.DeleteTag("app", "gone")
			m.clock.Advance(time.Hour)
			resp, body := m.get(http.MethodGet, manifestPath("app", "gone"))
			if policy == "serve-cached" {
				if resp.StatusCode != 200 {
					t.Fatalf("serve-cached: %d %s", resp.StatusCode, body)
				}
				// The upstream's 404 is an answer: not asked again within
				// the tag TTL, and not counted as an upstream error.
				heads := func() int { return m.fake.Count(http.MethodHead, manifestPath("app", "gone")) }
				before := heads()
				for range 3 {
					if resp, body := m.get(http.MethodGet, manifestPath("app", "gone")); resp.StatusCode != 200 {
						t.Fatalf("serve-cached, again: %d %s", resp.StatusCode, body)
					}
				}
				if n := heads() - before; n != 0 {
					t.Errorf("%d upstream HEADs within the tag TTL of the 404", n)
				}
				if got := metricValue(t, m.metrics, "registry_edge_upstream_requests_total", "result", "not_found"); got != 1 {
					t.Errorf("upstream requests answered 404 = %v, want 1", got)
				}
				m.clock.Advance(time.Hour)
				m.get(http.MethodGet, manifestPath("app", "gone"))
				if n := heads() - before; n != 1 {
					t.Errorf("%d upstream HEADs once the tag TTL passed, want 1", n)
				}
				return
			}
			m.wantCode(resp, body, http.StatusNotFound, "MANIFEST_UNKNOWN")
		})
	}
}

func TestMultiArchIndexServedByteForByte(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	a, _ := m.fake.Image("multi", "", []byte("amd"))
	b, _ := m.fake.Image("multi", "", []byte("arm"))
	// Unusual formatting and key order must survive: the digest covers the bytes.
	idx := fmt.Sprintf("{\n  \"schemaVersion\": 2,\n  \"mediaType\": %q,\n  \"manifests\": [\n    {\"mediaType\": %q, \"size\": %d, \"digest\": %q, \"platform\": {\"os\": \"linux\", \"architecture\": \"amd64\"}},\n    {\"digest\": %q, \"mediaType\": %q, \"size\": %d, \"platform\": {\"architecture\": \"arm64\", \"os\": \"linux\"}}\n  ]\n}\n",
		ocispec.MediaTypeImageIndex, a.MediaType, a.Size, a.Digest, b.Digest, b.MediaType, b.Size)
	want := m.fake.AddManifest("multi", "v1", ocispec.MediaTypeImageIndex, []byte(idx))
	resp, body := m.get(http.MethodGet, manifestPath("multi", "v1"), "Accept", ocispec.MediaTypeImageIndex+", "+ocispec.MediaTypeImageManifest)
	if resp.StatusCode != 200 || string(body) != idx {
		t.Fatalf("index: %d, bytes equal = %v", resp.StatusCode, string(body) == idx)
	}
	if resp.Header.Get("Docker-Content-Digest") != want.Digest.String() || resp.Header.Get("Content-Type") != ocispec.MediaTypeImageIndex {
		t.Errorf("index headers = %v", resp.Header)
	}
	// A client that cannot read indexes gets the linux/amd64 image of the
	// tag; by digest, the index it asked for (nothing else has that
	// digest), on GET and HEAD.
	resp, body = m.get(http.MethodGet, manifestPath("multi", "v1"), "Accept", "application/vnd.docker.distribution.manifest.v2+json")
	if resp.StatusCode != 200 || digest.FromBytes(body) != a.Digest {
		t.Errorf("index for a client without index support: %d %s, want the amd64 image %s", resp.StatusCode, digest.FromBytes(body), a.Digest)
	}
	// The same for a client that excludes indexes with q=0 and takes
	// anything else (RFC 9110 section 12.5.1).
	resp, body = m.get(http.MethodGet, manifestPath("multi", "v1"), "Accept",
		ocispec.MediaTypeImageIndex+";q=0, application/vnd.docker.distribution.manifest.list.v2+json;q=0, */*")
	if resp.StatusCode != 200 || digest.FromBytes(body) != a.Digest {
		t.Errorf("index for a client excluding indexes with q=0: %d %s, want the amd64 image %s", resp.StatusCode, digest.FromBytes(body), a.Digest)
	}
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		resp, body = m.get(method, manifestPath("multi", want.Digest.String()), "Accept", "application/vnd.docker.distribution.manifest.v2+json")
		if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != want.Digest.String() || (method == http.MethodGet && string(body) != idx) {
			t.Errorf("%s index by digest for a client without index support: %d, digest %s, want the index %s", method, resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), want.Digest)
		}
	}
	// HEAD answers the same headers without a body.
	resp, body = m.get(http.MethodHead, manifestPath("multi", "v1"))
	if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != int64(len(idx)) {
		t.Errorf("HEAD index: %d, body %d bytes, length %d", resp.StatusCode, len(body), resp.ContentLength)
	}
}

// TestIndexWithoutTheDefaultPlatform checks what a client that cannot read
// indexes gets for a tag naming an index without a linux/amd64 image (an
// arm64-only image of a fleet): an OCI index as it is, as distribution
// serves it (a script asking for the tag's digest with the Docker type in
// Accept gets central's answer), and for a Docker manifest list
// distribution's 404.
func TestIndexWithoutTheDefaultPlatform(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	arm, _ := m.fake.Image("fleet", "", []byte("arm"))
	entry := fmt.Sprintf(`{"mediaType":%q,"size":%d,"digest":%q,"platform":{"os":"linux","architecture":"arm64"}}`, arm.MediaType, arm.Size, arm.Digest)
	oci := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[%s]}`, ocispec.MediaTypeImageIndex, entry)
	want := m.fake.AddManifest("fleet", "oci", ocispec.MediaTypeImageIndex, []byte(oci))
	list := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[%s]}`, entry)
	m.fake.AddManifest("fleet", "list", "application/vnd.docker.distribution.manifest.list.v2+json", []byte(list))
	const docker = "application/vnd.docker.distribution.manifest.v2+json"
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		resp, body := m.get(method, manifestPath("fleet", "oci"), "Accept", docker)
		if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != want.Digest.String() ||
			resp.Header.Get("Content-Type") != ocispec.MediaTypeImageIndex || (method == http.MethodGet && string(body) != oci) {
			t.Errorf("%s arm64-only OCI index, Accept %s: %d, digest %q, type %q; want 200, the index %s",
				method, docker, resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), resp.Header.Get("Content-Type"), want.Digest)
		}
		resp, body = m.get(method, manifestPath("fleet", "list"), "Accept", docker)
		m.wantCode(resp, body, http.StatusNotFound, "MANIFEST_UNKNOWN")
	}
}

func TestDockerSchema2Manifest(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":2,"digest":"` + digest.FromString("{}").String() + `"},"layers":[]}`)
	want := m.fake.AddManifest("docker", "v1", "application/vnd.docker.distribution.manifest.v2+json", body)
	for _, accept := range []string{"application/vnd.docker.distribution.manifest.v2+json", ocispec.MediaTypeImageManifest + ", " + ocispec.MediaTypeImageIndex, ""} {
		resp, got := m.get(http.MethodGet, manifestPath("docker", "v1"), "Accept", accept)
		if resp.StatusCode != 200 || !bytes.Equal(got, body) || resp.Header.Get("Content-Type") != want.MediaType {
			t.Fatalf("docker manifest with Accept %q: %d %q", accept, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
}

func TestBlobRange(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 10_000)
	_, layers := m.fake.Image("app", "v1", layer)
	p := blobPath("app", layers[0].Digest)
	for _, cached := range []bool{false, true} {
		resp, body := m.get(http.MethodGet, p, "Range", "bytes=100-199")
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, layer[100:200]) {
			t.Fatalf("cached=%v: Range 100-199: %d, %d bytes", cached, resp.StatusCode, len(body))
		}
		if got := resp.Header.Get("Content-Range"); got != "bytes 100-199/10000" {
			t.Errorf("Content-Range = %q", got)
		}
		m.waitFills()
	}
	tests := []struct {
		spec  string
		start int
		end   int // exclusive
	}{
		{"bytes=9000-", 9000, 10000},
		{"bytes=-500", 9500, 10000},
		{"bytes=9990-20000", 9990, 10000},
		{"bytes=0-0", 0, 1},
	}
	for _, tt := range tests {
		resp, body := m.get(http.MethodGet, p, "Range", tt.spec)
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, layer[tt.start:tt.end]) {
			t.Errorf("Range %s: %d, %d bytes", tt.spec, resp.StatusCode, len(body))
		}
	}
	if resp, body := m.get(http.MethodGet, p, "Range", "items=0-1"); resp.StatusCode != 200 || !bytes.Equal(body, layer) {
		t.Errorf("Range with an unknown unit: %d, want 200 and the whole blob", resp.StatusCode)
	}
	resp, _ := m.get(http.MethodGet, p)
	if resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Errorf("Accept-Ranges = %q", resp.Header.Get("Accept-Ranges"))
	}
	// A bad range on a blob that is not cached yet fetches nothing.
	_, cold := m.fake.Image("app", "v2", fakeupstream.Random(t, 5000))
	before := m.fake.Count(http.MethodGet, blobPath("app", cold[0].Digest))
	resp, body := m.get(http.MethodGet, blobPath("app", cold[0].Digest), "Range", "bytes=6000-")
	m.wantCode(resp, body, http.StatusRequestedRangeNotSatisfiable, "RANGE_NOT_SATISFIABLE")
	m.waitFills()
	if n := m.fake.Count(http.MethodGet, blobPath("app", cold[0].Digest)) - before; n != 0 {
		t.Errorf("a bad range on an uncached blob made %d upstream GETs, want 0", n)
	}
	if _, err := m.store.Stat(context.Background(), cold[0].Digest); err == nil {
		t.Error("a bad range on an uncached blob stored the blob")
	}
	for _, bad := range []string{"bytes=abc", "bytes=5-1", "bytes=10000-", "bytes=-0", "bytes=", "bytes=-"} {
		resp, body := m.get(http.MethodGet, p, "Range", bad)
		m.wantCode(resp, body, http.StatusRequestedRangeNotSatisfiable, "RANGE_NOT_SATISFIABLE")
		if got := resp.Header.Get("Content-Range"); got != "bytes */10000" {
			t.Errorf("Range %q: Content-Range = %q, want bytes */10000", bad, got)
		}
	}
}

// TestRangeOfAnEmptyBlob checks that a Range on an empty blob (an
// artifact's empty config or file) is answered with the blob, 200 and no
// bytes, as distribution answers, not 416: some clients put a Range on
// every request.
func TestRangeOfAnEmptyBlob(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	_, layers := m.fake.Image("app", "v1", []byte{})
	p := blobPath("app", layers[0].Digest)
	for _, cached := range []bool{false, true} {
		for _, spec := range []string{"bytes=0-", "bytes=0-1023", "bytes=-1"} {
			resp, body := m.get(http.MethodGet, p, "Range", spec)
			if resp.StatusCode != http.StatusOK || len(body) != 0 || resp.ContentLength != 0 {
				t.Errorf("cached=%v: GET empty blob with Range %s: %d, %d bytes, Content-Length %d; want 200, no bytes",
					cached, spec, resp.StatusCode, len(body), resp.ContentLength)
			}
			if got := resp.Header.Get("Docker-Content-Digest"); got != layers[0].Digest.String() {
				t.Errorf("cached=%v: Range %s: Docker-Content-Digest = %q, want %s", cached, spec, got, layers[0].Digest)
			}
			m.waitFills()
		}
	}
}

func TestTagsListPagination(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	for _, tag := range []string{"a", "b", "c", "d"} {
		m.fake.Image("app", tag, []byte(tag))
	}
	type list struct {
		Name string
		Tags []string
	}
	resp, body := m.get(http.MethodGet, "/v2/app/tags/list?n=2&last=a")
	var l list
	if err := json.Unmarshal(body, &l); err != nil || resp.StatusCode != 200 {
		t.Fatalf("tags list: %d %s", resp.StatusCode, body)
	}
	if fmt.Sprint(l.Tags) != "[b c]" || l.Name != "app" {
		t.Errorf("tags = %v name %q, want [b c] app", l.Tags, l.Name)
	}
	if got := resp.Header.Get("Link"); got != `</v2/app/tags/list?last=c&n=2>; rel="next"` {
		t.Errorf("Link = %q", got)
	}
	// An empty n is no n (distribution reads it so): all the tags, not
	// an empty page.
	for _, q := range []string{"n=", "n=&last="} {
		resp, body = m.get(http.MethodGet, "/v2/app/tags/list?"+q)
		if err := json.Unmarshal(body, &l); err != nil || resp.StatusCode != 200 || fmt.Sprint(l.Tags) != "[a b c d]" {
			t.Errorf("tags list ?%s: %d %s, want [a b c d]", q, resp.StatusCode, body)
		}
	}
	resp, body = m.get(http.MethodGet, "/v2/app/tags/list?n=&last=b")
	if err := json.Unmarshal(body, &l); err != nil || resp.StatusCode != 200 || fmt.Sprint(l.Tags) != "[c d]" {
		t.Errorf("tags list ?n=&last=b: %d %s, want [c d]", resp.StatusCode, body)
	}
	resp, body = m.get(http.MethodGet, "/v2/app/tags/list?n=0")
	if err := json.Unmarshal(body, &l); err != nil || resp.StatusCode != 200 || len(l.Tags) != 0 {
		t.Errorf("tags list ?n=0: %d %s, want no tags", resp.StatusCode, body)
	}
	// With the upstream down, the tags the mirror knows are listed.
	m.get(http.MethodGet, manifestPath("app", "a"))
	m.get(http.MethodGet, manifestPath("app", "c"))
	m.upstream.Close()
	resp, body = m.get(http.MethodGet, "/v2/app/tags/list")
	if err := json.Unmarshal(body, &l); err != nil || resp.StatusCode != 200 || fmt.Sprint(l.Tags) != "[a c]" {
		t.Errorf("offline tags list: %d %s", resp.StatusCode, body)
	}
	resp, body = m.get(http.MethodGet, "/v2/app/tags/list?n=1")
	if err := json.Unmarshal(body, &l); err != nil || fmt.Sprint(l.Tags) != "[a]" || resp.Header.Get("Link") == "" {
		t.Errorf("offline paginated tags list: %s, Link %q", body, resp.Header.Get("Link"))
	}
	resp, body = m.get(http.MethodGet, "/v2/app/tags/list?n=-1")
	m.wantCode(resp, body, http.StatusBadRequest, "PAGINATION_NUMBER_INVALID")
}

func TestReferrersWithArtifactTypeFilter(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	subject, _ := m.fake.Image("app", "v1", []byte("x"))
	sig := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("sig"), Size: 10, ArtifactType: "application/vnd.dev.cosign.artifact.sig.v1+json"}
	sbom := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("sbom"), Size: 10, ArtifactType: "application/spdx+json"}
	m.fake.AddReferrer("app", subject.Digest, sig)
	m.fake.AddReferrer("app", subject.Digest, sbom)

	var idx ocispec.Index
	resp, body := m.get(http.MethodGet, "/v2/app/referrers/"+subject.Digest.String())
	if err := json.Unmarshal(body, &idx); err != nil || resp.StatusCode != 200 || len(idx.Manifests) != 2 {
		t.Fatalf("referrers: %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get("Content-Type") != ocispec.MediaTypeImageIndex {
		t.Errorf("Content-Type = %q", resp.Header.Get("Content-Type"))
	}
	resp, body = m.get(http.MethodGet, "/v2/app/referrers/"+subject.Digest.String()+"?artifactType=application/spdx%2Bjson")
	if err := json.Unmarshal(body, &idx); err != nil || len(idx.Manifests) != 1 || idx.Manifests[0].Digest != sbom.Digest {
		t.Fatalf("filtered referrers: %s", body)
	}
	if resp.Header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Errorf("OCI-Filters-Applied = %q", resp.Header.Get("OCI-Filters-Applied"))
	}
}

// An upstream that pages its referrers answer (Link rel="next"): every
// page's referrers are served, and filtered, not the first page's only.
func TestReferrersPagedUpstream(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	m.fake.ReferrersPageSize = 1
	subject, _ := m.fake.Image("app", "v1", []byte("x"))
	const sigType = "application/vnd.dev.cosign.artifact.sig.v1+json"
	sig := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("sig"), Size: 10, ArtifactType: sigType}
	sbom := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("sbom"), Size: 10, ArtifactType: "application/spdx+json"}
	sig2 := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("sig2"), Size: 10, ArtifactType: sigType}
	for _, d := range []ocispec.Descriptor{sig, sbom, sig2} {
		m.fake.AddReferrer("app", subject.Digest, d)
	}
	var idx ocispec.Index
	resp, body := m.get(http.MethodGet, "/v2/app/referrers/"+subject.Digest.String())
	if err := json.Unmarshal(body, &idx); err != nil || resp.StatusCode != 200 || len(idx.Manifests) != 3 {
		t.Fatalf("referrers of a paging upstream: %d %s, want all 3", resp.StatusCode, body)
	}
	if resp.Header.Get("Link") != "" || resp.Header.Get("OCI-Filters-Applied") != "" {
		t.Errorf("whole list served with Link %q, OCI-Filters-Applied %q", resp.Header.Get("Link"), resp.Header.Get("OCI-Filters-Applied"))
	}
	resp, body = m.get(http.MethodGet, "/v2/app/referrers/"+subject.Digest.String()+"?artifactType="+url.QueryEscape(sigType))
	idx = ocispec.Index{}
	if err := json.Unmarshal(body, &idx); err != nil || len(idx.Manifests) != 2 || idx.Manifests[0].Digest != sig.Digest || idx.Manifests[1].Digest != sig2.Digest {
		t.Fatalf("filtered referrers of a paging upstream: %s, want sig and sig2", body)
	}
	if resp.Header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Errorf("OCI-Filters-Applied = %q", resp.Header.Get("OCI-Filters-Applied"))
	}
}

func TestCrossRepositoryBlobNeedsUpstreamConfirmation(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	secret := []byte("private layer")
	_, layers := m.fake.Image("private/app", "v1", secret)
	m.get(http.MethodGet, blobPath("private/app", layers[0].Digest))
	m.waitFills()
	// "other" does not hold the blob upstream: the mirror must not hand it out.
	m.fake.AddManifest("other", "v1", ocispec.MediaTypeImageManifest, []byte(`{"schemaVersion":2}`))
	resp, body := m.get(http.MethodGet, blobPath("other", layers[0].Digest))
	m.wantCode(resp, body, http.StatusNotFound, "BLOB_UNKNOWN")
	if n := m.fake.Count(http.MethodGet, blobPath("other", layers[0].Digest)); n != 0 {
		t.Errorf("a refused cross-repository read started %d upstream fetches, want 0", n)
	}
	if got := metricValue(t, m.metrics, "registry_edge_fill_failures_total"); got != 0 {
		t.Errorf("fill failures = %v, want 0", got)
	}
}

// Served bytes count content, not error envelopes: the status page's
// "uplink saved" is served minus fetched.
func TestServedBytesCountContentOnly(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 5000)
	_, layers := m.fake.Image("app", "v1", layer)
	if resp, body := m.get(http.MethodGet, blobPath("app", digest.FromString("absent"))); resp.StatusCode != http.StatusNotFound || len(body) == 0 {
		t.Fatalf("GET an absent blob: %d, %d bytes", resp.StatusCode, len(body))
	}
	if got := metricValue(t, m.metrics, "registry_edge_served_bytes_total", "endpoint", "blob"); got != 0 {
		t.Errorf("served bytes after a 404 = %v, want 0", got)
	}
	if resp, _ := m.get(http.MethodGet, blobPath("app", layers[0].Digest)); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET the layer: %d", resp.StatusCode)
	}
	if got := metricValue(t, m.metrics, "registry_edge_served_bytes_total", "endpoint", "blob"); got != float64(len(layer)) {
		t.Errorf("served bytes after the layer = %v, want %d", got, len(layer))
	}
}

// Stored content larger than cache.maxManifestSize is never served cut
// short: a referrers list (accepted up to upstream.MaxReferrersSize) comes
// back whole from the cache, and a tagged index whose child names a stored
// layer does not put the layer's first bytes in the memory cache.
func TestStoredContentIsNeverCutShort(t *testing.T) {
	t.Parallel()
	m := newMirror(t, withPrecompute, func(o *proxy.Options) { o.MaxManifestSize = 2 << 10 })
	desc, _ := m.fake.Image("app", "v1", fakeupstream.Random(t, 100))
	for i := range 30 {
		m.fake.AddReferrer("app", desc.Digest, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest,
			ArtifactType: "application/vnd.example.sig", Digest: desc.Digest, Size: 1000,
			Annotations: map[string]string{"n": strconv.Itoa(i)}})
	}
	path := "/v2/app/referrers/" + desc.Digest.String()
	_, first := m.get(http.MethodGet, path)
	resp, second := m.get(http.MethodGet, path)
	if len(first) <= 2<<10 || resp.StatusCode != http.StatusOK || !bytes.Equal(first, second) {
		t.Errorf("referrers list: %d bytes, then %d (%d) from the cache", len(first), len(second), resp.StatusCode)
	}

	layer := fakeupstream.Random(t, 100_000)
	_, layers := m.fake.Image("app", "v2", layer)
	pullImage(t, m, "v2", layer)
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: layers[0].Digest, Size: int64(len(layer))}}}
	idx.SchemaVersion = 2
	b, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	m.fake.AddManifest("app", "v0", ocispec.MediaTypeImageIndex, b)
	m.get(http.MethodGet, manifestPath("app", "v0"))
	// A lower tier asks for a delta once (precomputation starts), and a new
	// tag makes the mirror look at the repository's images for bases.
	m.do(http.MethodHead, blobPath("app", layers[0].Digest), "A-IM", "vnd.registry-edge.delta.v1", "If-None-Match", `"`+layers[0].Digest.String()+`"`)
	m.fake.Image("app", "v3", fakeupstream.Random(t, 5000))
	m.get(http.MethodGet, manifestPath("app", "v3"))
	m.waitFills()
	resp, got := m.get(http.MethodGet, blobPath("app", layers[0].Digest))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, layer) {
		t.Errorf("stored layer: %d, %d bytes, want %d", resp.StatusCode, len(got), len(layer))
	}
}

// Referrers of a subject not stored here are served, and an empty list of
// them is not kept: a registry answers one for any digest, and a client
// naming made-up digests would otherwise add a record each, for good. The
// list of a stored image is kept (served with the uplink down).
func TestEmptyReferrersOfUnknownSubjectsAreNotKept(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	for i := range 3 {
		d := digest.FromString("made up " + strconv.Itoa(i))
		resp, body := m.get(http.MethodGet, "/v2/app/referrers/"+d.String())
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"manifests":[]`) {
			t.Fatalf("referrers of a made-up digest: %d %s", resp.StatusCode, body)
		}
	}
	if recs, err := m.db.AllReferrers(context.Background()); err != nil || len(recs) != 0 {
		t.Fatalf("referrers records after made-up digests: %d, %v; want none", len(recs), err)
	}
	img, _ := m.fake.Image("app", "v1", []byte("layer"))
	pullImage(t, m, "v1", []byte("layer"))
	if resp, body := m.get(http.MethodGet, "/v2/app/referrers/"+img.Digest.String()); resp.StatusCode != http.StatusOK {
		t.Fatalf("referrers of a stored image: %d %s", resp.StatusCode, body)
	}
	if recs, err := m.db.AllReferrers(context.Background()); err != nil || len(recs) != 1 {
		t.Errorf("referrers records after a stored image's: %d, %v; want 1", len(recs), err)
	}
}

// alteredStore is a store whose stored copy of one blob, or manifest, was
// altered behind its back: reading it whole fails with ErrDigestMismatch
// (as an object store's reader does) and removes it.
type alteredStore struct {
	*blobstore.FS
	mu      sync.Mutex
	altered map[digest.Digest]bool
}

func (s *alteredStore) Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, error) {
	s.mu.Lock()
	bad := s.altered[d]
	delete(s.altered, d)
	s.mu.Unlock()
	if !bad {
		return s.FS.Open(ctx, d)
	}
	info, err := s.FS.Stat(ctx, d)
	if err != nil {
		return nil, err
	}
	if err := s.FS.Delete(ctx, d); err != nil {
		return nil, err
	}
	return &alteredReader{Reader: io.MultiReader(strings.NewReader("x"), iotest.ErrReader(fmt.Errorf("stored %s: %w", d, errdef.ErrDigestMismatch))), size: info.Size}, nil
}

// alteredReader reads a byte and then fails; its size is the blob's.
type alteredReader struct {
	io.Reader
	size int64
}

func (r *alteredReader) Seek(off int64, whence int) (int64, error) {
	if whence == io.SeekEnd {
		return r.size + off, nil
	}
	return off, nil
}

func (*alteredReader) Close() error { return nil }

// A stored manifest or small blob whose copy turns out altered when it is
// read (an object store's reader checks the digest) is fetched again from
// the upstream and served right, not answered with an error.
func TestAlteredStoredCopyIsFetchedAgain(t *testing.T) {
	t.Parallel()
	s := &alteredStore{altered: map[digest.Digest]bool{}}
	m := newMirrorWrapped(t, func(fs *blobstore.FS) proxy.Store { s.FS = fs; return s })
	layer := fakeupstream.Random(t, 10_000)
	img, layers := m.fake.Image("app", "v1", layer)
	pullImage(t, m, "v1", layer)
	m.waitFills()
	m.restart() // nothing in memory
	s.mu.Lock()
	s.altered[img.Digest], s.altered[layers[0].Digest] = true, true
	s.mu.Unlock()
	if resp, body := m.get(http.MethodGet, manifestPath("app", img.Digest.String()), "Accept", ocispec.MediaTypeImageManifest); resp.StatusCode != http.StatusOK || digest.FromBytes(body) != img.Digest {
		t.Errorf("altered manifest: %d, %d bytes", resp.StatusCode, len(body))
	}
	if resp, body := m.get(http.MethodGet, blobPath("app", layers[0].Digest)); resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Errorf("altered small blob: %d, %d bytes", resp.StatusCode, len(body))
	}
}

// failingStore cannot read one blob (an I/O error, a bucket that fails).
type failingStore struct {
	*blobstore.FS
	mu  sync.Mutex
	bad digest.Digest
}

func (s *failingStore) Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, error) {
	s.mu.Lock()
	bad := s.bad
	s.mu.Unlock()
	if d == bad {
		return nil, errors.New("read: input/output error")
	}
	return s.FS.Open(ctx, d)
}

// A stored blob the store cannot read is answered 503, as this mirror's
// own failure (so that a device turns to another host), not 500.
func TestUnreadableStoreIsUnavailable(t *testing.T) {
	t.Parallel()
	s := &failingStore{}
	m := newMirrorWrapped(t, func(fs *blobstore.FS) proxy.Store { s.FS = fs; return s })
	layer := fakeupstream.Random(t, 100_000)
	_, layers := m.fake.Image("app", "v1", layer)
	pullImage(t, m, "v1", layer)
	m.waitFills()
	s.mu.Lock()
	s.bad = layers[0].Digest
	s.mu.Unlock()
	resp, body := m.get(http.MethodGet, blobPath("app", layers[0].Digest))
	m.wantCode(resp, body, http.StatusServiceUnavailable, "UNAVAILABLE")
	if !strings.Contains(string(body), "cannot read its store") {
		t.Errorf("body %s, want it to say the store cannot be read", body)
	}
}

// An upstream that refuses a cached tag (401 or 403: a repository deleted
// or made private, as Docker Hub answers) has answered: cache.tagNotFound
// decides, as for a 404, instead of the tag being served as if the uplink
// were down (forever, with no maxStale).
func TestTagRefusedUpstreamFollowsTagNotFound(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusUnauthorized, http.StatusForbidden} {
		m := newMirror(t, func(o *proxyOptions) { o.TagNotFound = "not-found" })
		m.fake.Image("app", "v1", []byte("x"))
		if resp, body := m.get(http.MethodGet, manifestPath("app", "v1")); resp.StatusCode != http.StatusOK {
			t.Fatalf("first pull: %d %s", resp.StatusCode, body)
		}
		m.fake.Fail(fakeupstream.ForPath("", "/manifests/v1", fakeupstream.Status(status, "", 0)))
		m.clock.Advance(time.Hour)
		resp, body := m.get(http.MethodGet, manifestPath("app", "v1"))
		if resp.StatusCode == http.StatusOK {
			t.Errorf("upstream %d for the tag, tagNotFound not-found: served from the cache", status)
		}
		m.wantCode(resp, body, http.StatusBadGateway, "DENIED")
		if got := metricValue(t, m.metrics, "registry_edge_stale_tags_served_total", "upstream", "central.test"); got != 0 {
			t.Errorf("upstream %d: counted as %v stale serves", status, got)
		}
	}
}

// An upstream without HEAD on manifests (405) has a cached tag revalidated
// with a GET, which follows a tag that moved.
func TestTagRevalidatedWithGETWhenHEADIsNotAllowed(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	m.fake.Image("app", "v1", []byte("one"))
	m.get(http.MethodGet, manifestPath("app", "v1"))
	moved, _ := m.fake.Image("app", "v1", []byte("two"))
	m.fake.Fail(fakeupstream.ForPath(http.MethodHead, "/manifests/v1", fakeupstream.Status(http.StatusMethodNotAllowed, "", 0)))
	m.clock.Advance(time.Hour)
	resp, body := m.get(http.MethodGet, manifestPath("app", "v1"), "Accept", ocispec.MediaTypeImageManifest)
	if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != moved.Digest {
		t.Errorf("tag moved upstream, HEAD not allowed: %d, digest %s, want %s", resp.StatusCode, digest.FromBytes(body), moved.Digest)
	}
}

// If-Range (RFC 9110 13.1.5): a range is sent only when the validator is
// this blob's ETag; another host's ETag, or a date, gets the whole blob
// (a client resuming a download started elsewhere must not splice a range
// of another object onto it).
func TestBlobIfRange(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := fakeupstream.Random(t, 10_000)
	_, layers := m.fake.Image("app", "v1", layer)
	p := blobPath("app", layers[0].Digest)
	for _, cached := range []bool{false, true} {
		for _, c := range []struct {
			ifRange string
			partial bool
		}{
			{`"` + layers[0].Digest.String() + `"`, true},
			{`"some-other-etag"`, false},
			{"Wed, 21 Oct 2026 07:28:00 GMT", false},
		} {
			resp, body := m.get(http.MethodGet, p, "Range", "bytes=100-199", "If-Range", c.ifRange)
			switch {
			case c.partial && (resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, layer[100:200])):
				t.Errorf("cached=%v, If-Range %s: %d, %d bytes; want 206 and the range", cached, c.ifRange, resp.StatusCode, len(body))
			case !c.partial && (resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer)):
				t.Errorf("cached=%v, If-Range %s: %d, %d bytes; want 200 and the whole blob", cached, c.ifRange, resp.StatusCode, len(body))
			}
			m.waitFills()
		}
	}
}

// An upstream that answers the referrers API with something that is not an
// index (a web page behind a catch-all route) has no referrers API, as
// cosign and crane read it: the referrers are those of the tag schema
// (an empty list without that tag), not an error.
func TestReferrersNotAnIndexFromUpstream(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	img, _ := m.fake.Image("app", "v1", []byte("x"))
	other, _ := m.fake.Image("app", "v2", []byte("y"))
	for _, d := range []digest.Digest{img.Digest, other.Digest} {
		m.fake.Fail(fakeupstream.ForPath(http.MethodGet, "/referrers/"+d.String(), func(w http.ResponseWriter, r *http.Request, _ int) bool {
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte("<html><body>registry UI</body></html>"))
			return true
		}))
	}
	sbom := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("sbom"), Size: 10, ArtifactType: "application/spdx+json"}
	idx, err := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{sbom}})
	if err != nil {
		t.Fatal(err)
	}
	m.fake.AddManifest("app", "sha256-"+img.Digest.Encoded(), ocispec.MediaTypeImageIndex, idx)
	for _, tt := range []struct {
		d    digest.Digest
		want []digest.Digest
	}{
		{img.Digest, []digest.Digest{sbom.Digest}},
		{other.Digest, nil},
	} {
		resp, body := m.get(http.MethodGet, "/v2/app/referrers/"+tt.d.String())
		var got ocispec.Index
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &got) != nil {
			t.Fatalf("referrers of %s answered with a web page upstream: %d %s, want 200 and an index", tt.d, resp.StatusCode, body)
		}
		if len(got.Manifests) != len(tt.want) || len(tt.want) == 1 && got.Manifests[0].Digest != tt.want[0] {
			t.Errorf("referrers of %s: %v, want those of its tag schema index, %v", tt.d, got.Manifests, tt.want)
		}
	}
}

// Clients asking for a stale tag at once share one upstream HEAD to
// revalidate it (they sent one each).
func TestStaleTagRevalidationIsShared(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	m.fake.Image("app", "v1", []byte("x"))
	m.get(http.MethodGet, manifestPath("app", "v1"))
	release := make(chan struct{})
	var once sync.Once
	m.fake.Fail(fakeupstream.ForPath(http.MethodHead, "/manifests/v1", func(w http.ResponseWriter, r *http.Request, n int) bool {
		once.Do(func() { <-release }) // the first HEAD waits for the other clients
		return false
	}))
	m.clock.Advance(time.Hour)
	const clients = 8
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, body := m.get(http.MethodGet, manifestPath("app", "v1")); resp.StatusCode != http.StatusOK {
				t.Errorf("GET of the stale tag: %d %s", resp.StatusCode, body)
			}
		}()
	}
	for m.fake.Count(http.MethodHead, manifestPath("app", "v1")) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // for the other clients to arrive; fewer HEADs than clients does not depend on it
	close(release)
	wg.Wait()
	if n := m.fake.Count(http.MethodHead, manifestPath("app", "v1")); n >= clients {
		t.Errorf("%d clients of a stale tag sent %d upstream HEADs, want them shared", clients, n)
	}
}

// A manifest whose Content-Type contradicts its own mediaType (a proxy's or
// a CDN's slip) is served, and stored, as the type it names.
func TestManifestTypeFromItsBody(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	layer := m.fake.AddBlob([]byte("x"))
	m.fake.LinkBlob("app", layer.Digest)
	cfg := m.fake.AddBlob([]byte("{}"))
	m.fake.LinkBlob("app", cfg.Digest)
	cfg.MediaType = ocispec.MediaTypeImageConfig
	man := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{layer}}
	man.SchemaVersion = 2
	body, err := json.Marshal(man)
	if err != nil {
		t.Fatal(err)
	}
	img := m.fake.AddManifest("app", "v1", ocispec.MediaTypeImageIndex, body) // the header says index
	for _, ref := range []string{"v1", img.Digest.String()} {
		resp, got := m.get(http.MethodGet, manifestPath("app", ref), "Accept", ocispec.MediaTypeImageManifest+", "+ocispec.MediaTypeImageIndex)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ocispec.MediaTypeImageManifest || digest.FromBytes(got) != img.Digest {
			t.Errorf("GET %s: %d, Content-Type %q, want %q", ref, resp.StatusCode, resp.Header.Get("Content-Type"), ocispec.MediaTypeImageManifest)
		}
	}
}

// etag is the entity tag of content with digest d.
func etag(d digest.Digest) string { return `"` + d.String() + `"` }

// conditionalTarget is a path of content whose ETag names digest d.
type conditionalTarget struct {
	path string
	d    digest.Digest
}

// conditionalTargets puts an image app:v1 upstream of m and returns the
// paths conditional requests are tried on: its manifest by tag and by
// digest, and its layer.
func conditionalTargets(t *testing.T, m *mirror) []conditionalTarget {
	t.Helper()
	mdesc, layers := m.fake.Image("app", "v1", fakeupstream.Random(t, 10_000))
	return []conditionalTarget{
		{manifestPath("app", "v1"), mdesc.Digest},
		{manifestPath("app", mdesc.Digest.String()), mdesc.Digest},
		{blobPath("app", layers[0].Digest), layers[0].Digest},
	}
}

// A client that names the ETag it holds in If-None-Match gets 304 and no
// body, for a manifest by tag or digest and for a blob, as from
// distribution; another ETag gets the content, and a blob the repository
// does not have is still unknown.
func TestIfNoneMatchAnswersNotModified(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	other := etag(digest.FromString("other"))
	for _, tt := range conditionalTargets(t, m) {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			for _, inm := range []string{etag(tt.d), other + ", W/" + etag(tt.d), "*"} {
				resp, body := m.get(method, tt.path, "If-None-Match", inm)
				if resp.StatusCode != http.StatusNotModified || len(body) != 0 || resp.Header.Get("ETag") != etag(tt.d) {
					t.Errorf("%s %s, If-None-Match %s: %d, %d body bytes, ETag %q; want 304, none, %s",
						method, tt.path, inm, resp.StatusCode, len(body), resp.Header.Get("ETag"), etag(tt.d))
				}
			}
			resp, body := m.get(method, tt.path, "If-None-Match", other)
			if resp.StatusCode != http.StatusOK || method == http.MethodGet && len(body) == 0 {
				t.Errorf("%s %s, If-None-Match of another content: %d, %d bytes; want 200 and the content", method, tt.path, resp.StatusCode, len(body))
			}
			m.waitFills()
		}
	}
	missing := digest.FromString("not in the repository")
	resp, err := http.DefaultClient.Do(func() *http.Request {
		req, _ := http.NewRequest(http.MethodGet, m.srv.URL+blobPath("app", missing), nil)
		req.Header.Set("If-None-Match", etag(missing))
		return req
	}())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET of a blob the repository lacks, with its ETag in If-None-Match: %d, want 404", resp.StatusCode)
	}
}

// If-Match holds the request to the content it names (RFC 9110 section
// 13.1.1): a script that asks for a tag only if it still names the digest
// it holds gets 412 once the tag moved, and the content while it has not;
// a blob the repository lacks is still unknown (404, not 412).
func TestIfMatchPreconditionFails(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	other := etag(digest.FromString("other"))
	for _, tt := range conditionalTargets(t, m) {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			for _, im := range []string{etag(tt.d), other + ", " + etag(tt.d), "*"} {
				resp, body := m.get(method, tt.path, "If-Match", im)
				if resp.StatusCode != http.StatusOK || method == http.MethodGet && len(body) == 0 {
					t.Errorf("%s %s, If-Match %s: %d, %d bytes; want 200 and the content", method, tt.path, im, resp.StatusCode, len(body))
				}
			}
			// A weak validator never matches If-Match (strong comparison).
			for _, im := range []string{other, "W/" + etag(tt.d)} {
				resp, body := m.get(method, tt.path, "If-Match", im)
				if resp.StatusCode != http.StatusPreconditionFailed {
					t.Errorf("%s %s, If-Match %s: %d, want 412", method, tt.path, im, resp.StatusCode)
				}
				if method == http.MethodGet {
					m.wantCode(resp, body, http.StatusPreconditionFailed, "UNKNOWN")
				}
			}
			m.waitFills()
		}
	}
	missing := digest.FromString("not in the repository")
	resp, body := m.get(http.MethodGet, blobPath("app", missing), "If-Match", other)
	m.wantCode(resp, body, http.StatusNotFound, "BLOB_UNKNOWN")
}
