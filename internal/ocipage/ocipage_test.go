package ocipage

import (
	"errors"
	"fmt"
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

// A Pager follows other pages of the same URL, ends at a page already read
// (whatever the order of its query's keys), and refuses another path or
// more than MaxPages pages.
func TestPager(t *testing.T) {
	t.Parallel()
	page := func(q string) *url.URL {
		u, _ := url.Parse("https://reg.test/v2/app/referrers/sha256:aa" + q)
		return u
	}
	link := func(target string) []string { return []string{"<" + target + `>; rel="next"`} }
	var p Pager
	next, err := p.Next(page("?n=2&last=b"), link("/v2/app/referrers/sha256:aa?last=c&n=2"))
	if err != nil || next == nil || next.Query().Get("last") != "c" {
		t.Fatalf("Next to another page of the same URL: %v, %v", next, err)
	}
	if next, err := p.Next(next, link("?last=b&n=2")); err != nil || next != nil {
		t.Errorf("Next back to the first page, its keys in another order: %v, %v; want the end", next, err)
	}
	if _, err := new(Pager).Next(page(""), link("/v2/other/referrers/sha256:aa?p=2")); !errors.Is(err, ErrOtherPath) {
		t.Errorf("Next to another repository's referrers: %v, want ErrOtherPath", err)
	}
	var q Pager
	var err2 error
	for i := 0; i < MaxPages && err2 == nil; i++ {
		_, err2 = q.Next(page(fmt.Sprintf("?p=%d", i)), link(fmt.Sprintf("?p=%d", i+1)))
	}
	if !errors.Is(err2, ErrTooManyPages) {
		t.Errorf("after %d pages that each link to a new one: %v, want ErrTooManyPages", MaxPages, err2)
	}
}
