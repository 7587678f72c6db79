package ociapi

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const testDigest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

func TestParseRoute(t *testing.T) {
	t.Parallel()
	tests := []struct {
		path     string
		want     Route
		wantCode Code
	}{
		{path: "/v2/", want: Route{Kind: KindBase}},
		{path: "/v2", want: Route{Kind: KindBase}},
		{path: "/v2/_catalog", want: Route{Kind: KindCatalog}},
		{path: "/v2/alpine/manifests/latest", want: Route{Kind: KindManifest, Name: "alpine", Reference: "latest"}},
		{path: "/v2/ghcr.io/org/app/manifests/v1.2", want: Route{Kind: KindManifest, Name: "ghcr.io/org/app", Reference: "v1.2"}},
		{path: "/v2/a/b/manifests/" + testDigest, want: Route{Kind: KindManifest, Name: "a/b", Reference: testDigest, Digest: testDigest}},
		{path: "/v2/a/blobs/" + testDigest, want: Route{Kind: KindBlob, Name: "a", Reference: testDigest, Digest: testDigest}},
		{path: "/v2/a/referrers/" + testDigest, want: Route{Kind: KindReferrers, Name: "a", Reference: testDigest, Digest: testDigest}},
		{path: "/v2/a/b/tags/list", want: Route{Kind: KindTags, Name: "a/b"}},
		{path: "/v2/a/blobs/uploads/", want: Route{Kind: KindBlobUpload, Name: "a"}},
		{path: "/v2/a/blobs/uploads/abc-123", want: Route{Kind: KindBlobUpload, Name: "a", Reference: "abc-123"}},
		{path: "/v2/a/blobs/uploads", want: Route{Kind: KindBlobUpload, Name: "a"}},
		// a repository may be called "manifests" or "blobs"
		{path: "/v2/manifests/manifests/latest", want: Route{Kind: KindManifest, Name: "manifests", Reference: "latest"}},
		{path: "/v2/blobs/blobs/" + testDigest, want: Route{Kind: KindBlob, Name: "blobs", Reference: testDigest, Digest: testDigest}},

		{path: "/v2/../../etc/passwd/manifests/latest", wantCode: CodeNameInvalid},
		{path: "/v2/a/../b/manifests/latest", wantCode: CodeNameInvalid},
		{path: "/v2/./a/manifests/latest", wantCode: CodeNameInvalid},
		{path: "/v2/A/manifests/latest", wantCode: CodeNameInvalid},
		{path: "/v2//a/manifests/latest", wantCode: CodeNameInvalid},
		{path: "/v2/a-/manifests/latest", wantCode: CodeNameInvalid},
		{path: "/v2/" + strings.Repeat("a", 256) + "/manifests/latest", wantCode: CodeNameInvalid},
		{path: "/v2/a/manifests/bad!tag", wantCode: CodeManifestInvalid},
		{path: "/v2/a/manifests/.hidden", wantCode: CodeManifestInvalid},
		{path: "/v2/a/manifests/" + strings.Repeat("t", 129), wantCode: CodeManifestInvalid},
		{path: "/v2/a/manifests/sha256:abc", wantCode: CodeDigestInvalid},
		{path: "/v2/a/blobs/sha256:zz", wantCode: CodeDigestInvalid},
		{path: "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", wantCode: CodeDigestInvalid},
		{path: "/v2/a/blobs/latest", wantCode: CodeDigestInvalid},
		{path: "/v2/a/referrers/latest", wantCode: CodeDigestInvalid},
		{path: "/v2/a/unknown/thing", wantCode: CodeUnsupported},
		{path: "/v2x", wantCode: CodeUnsupported},
		{path: "/other", wantCode: CodeUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			got, err := ParseRoute(tt.path)
			if tt.wantCode != "" {
				var oe *Error
				if !errors.As(err, &oe) || oe.Code != tt.wantCode {
					t.Fatalf("ParseRoute(%q) error = %v, want code %s", tt.path, err, tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRoute(%q) error = %v", tt.path, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseRoute(%q) mismatch (-want +got):\n%s", tt.path, diff)
			}
		})
	}
}

func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{"/v2/", "/v2/a/b/manifests/latest", "/v2/a/blobs/" + testDigest, "/v2/a/blobs/uploads/x", "/v2/../x/tags/list"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		rt, err := ParseRoute(path)
		if err != nil {
			var oe *Error
			if !errors.As(err, &oe) || oe.Status < 400 || oe.Status > 499 {
				t.Fatalf("ParseRoute(%q) error = %v, want a 4xx *Error", path, err)
			}
			return
		}
		if rt.Kind != KindBase && rt.Kind != KindCatalog {
			if !ValidName(rt.Name) || strings.Contains(rt.Name, "..") {
				t.Fatalf("ParseRoute(%q) accepted name %q", path, rt.Name)
			}
		}
		if rt.Digest != "" && rt.Digest.Validate() != nil {
			t.Fatalf("ParseRoute(%q) accepted digest %q", path, rt.Digest)
		}
	})
}

func TestAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		accept []string
		mt     string
		want   bool
	}{
		{nil, MediaTypeOCIIndex, true},
		{[]string{""}, MediaTypeOCIIndex, true},
		{[]string{MediaTypeDockerManifest + ", " + MediaTypeOCIIndex}, MediaTypeOCIIndex, true},
		{[]string{MediaTypeDockerManifest, MediaTypeOCIManifest + ";q=0.5"}, MediaTypeOCIManifest, true},
		{[]string{MediaTypeDockerManifest}, MediaTypeOCIIndex, false},
		{[]string{"*/*"}, MediaTypeOCIIndex, true},
		{[]string{"application/*"}, MediaTypeOCIIndex, true},
		{[]string{"text/*"}, MediaTypeOCIIndex, false},
		// q=0 means "not acceptable" (RFC 9110 section 12.5.1), and the
		// most specific range decides.
		{[]string{MediaTypeOCIIndex + ";q=0"}, MediaTypeOCIIndex, false},
		{[]string{MediaTypeOCIIndex + "; q=0.0, */*"}, MediaTypeOCIIndex, false},
		{[]string{"*/*;q=0", MediaTypeOCIIndex}, MediaTypeOCIIndex, true},
		{[]string{"application/*;q=0, */*"}, MediaTypeOCIIndex, false},
		{[]string{"*/*;q=0"}, MediaTypeOCIIndex, false},
		{[]string{MediaTypeOCIIndex + ";q=0.001"}, MediaTypeOCIIndex, true},
		{[]string{MediaTypeOCIIndex + ";q=bogus"}, MediaTypeOCIIndex, true},
	}
	for _, tt := range tests {
		if got := Accepts(tt.accept, tt.mt); got != tt.want {
			t.Errorf("Accepts(%q, %q) = %v, want %v", tt.accept, tt.mt, got, tt.want)
		}
	}
}

func TestSanitize(t *testing.T) {
	t.Parallel()
	if got := Sanitize("a\"<script>\n" + strings.Repeat("x", 100)); strings.ContainsAny(got, "\"<>\n") || len(got) > 64 {
		t.Errorf("Sanitize() = %q", got)
	}
	_ = http.StatusOK
}

func FuzzValidComponent(f *testing.F) {
	for _, s := range []string{"a", "a.b", "a__b", "a___b", "a--b", "a-", ".a", "a._b", "A", "ghcr.io", "a-_b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validComponent(s), nameComponent.MatchString(s); got != want {
			t.Fatalf("validComponent(%q) = %v, regexp says %v", s, got, want)
		}
	})
}
