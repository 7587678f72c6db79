package ocipage

import (
	"errors"
	"net/url"
	"testing"
)

func TestNext(t *testing.T) {
	t.Parallel()
	req, _ := url.Parse("https://reg.test/v2/app/referrers/sha256:aa")
	tests := []struct {
		name, link, want string
		wantErr          error
	}{
		{"none", "", "", nil},
		{"relative path", `</v2/app/referrers/sha256:aa?last=x>; rel="next"`, "https://reg.test/v2/app/referrers/sha256:aa?last=x", nil},
		{"relative query", `<?n=2&last=x>; rel=next`, "https://reg.test/v2/app/referrers/sha256:aa?n=2&last=x", nil},
		{"absolute same host", `<https://REG.test/v2/app/referrers/sha256:aa?p=2#frag>; rel="next"`, "https://REG.test/v2/app/referrers/sha256:aa?p=2", nil},
		{"other host", `<https://evil.test/v2/app/referrers/sha256:aa?p=2>; rel="next"`, "", ErrOtherHost},
		{"downgrade", `<http://reg.test/v2/app/referrers/sha256:aa?p=2>; rel="next"`, "", ErrOtherHost},
		{"scheme-relative other host", `<//evil.test/x>; rel="next"`, "", ErrOtherHost},
		{"prev only", `</v2/x>; rel="prev"`, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var link []string
			if tt.link != "" {
				link = []string{tt.link}
			}
			got, err := Next(req, link)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("Next(%q) error = %v, want %v", tt.link, err, tt.wantErr)
			}
			s := ""
			if got != nil {
				s = got.String()
			}
			if s != tt.want {
				t.Errorf("Next(%q) = %q, want %q", tt.link, s, tt.want)
			}
		})
	}
}

func TestIndexMerge(t *testing.T) {
	t.Parallel()
	var x Index
	for _, p := range []string{
		`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"digest":"sha256:a","x":1},{"digest":"sha256:b"}],"annotations":{"k":"v"}}`,
		`{"schemaVersion":2,"manifests":[{"digest":"sha256:b"},{"digest":"sha256:c"}]}`,
		`{"schemaVersion":2,"manifests":null}`,
	} {
		if err := x.Add([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := x.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"digest":"sha256:a","x":1},{"digest":"sha256:b"},{"digest":"sha256:c"}],"annotations":{"k":"v"}}`
	if string(got) != want {
		t.Errorf("merged = %s\nwant %s", got, want)
	}
	if err := x.Add([]byte(`{"manifests":{}}`)); err == nil {
		t.Error("a page whose manifests is not an array was added")
	}
}
