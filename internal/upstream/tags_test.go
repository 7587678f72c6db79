package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// tagServer serves tags with distribution's pagination: n per page (when
// asked), after last, with a Link header to the next page.
func tagServer(t *testing.T, repo string, tags []string, cnt *counter) string {
	t.Helper()
	sorted := append([]string(nil), tags...)
	sort.Strings(sorted)
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cnt.add(r)
		if r.URL.Path != "/v2/"+repo+"/tags/list" {
			writeError(w, http.StatusNotFound, "NAME_UNKNOWN", "repository name not known to registry")
			return
		}
		q := r.URL.Query()
		i := 0
		if last := q.Get("last"); last != "" {
			i = sort.SearchStrings(sorted, last)
			if i < len(sorted) && sorted[i] == last {
				i++
			}
		}
		page := sorted[i:]
		if n, err := strconv.Atoi(q.Get("n")); err == nil && n < len(page) {
			page = page[:n]
			next := url.Values{"n": {strconv.Itoa(n)}, "last": {page[len(page)-1]}}
			w.Header().Set("Link", fmt.Sprintf(`</v2/%s/tags/list?%s>; rel="next"`, repo, next.Encode()))
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"name": repo, "tags": page})
	}))
	return srv.URL
}

func TestTagsPagination(t *testing.T) {
	t.Parallel()
	tags := []string{"1.0", "1.1", "2.0", "latest", "edge"}
	var cnt counter
	c := newTestClient(t, tagServer(t, "library/alpine", tags, &cnt))
	var all []string
	var pages []TagPage
	last := ""
	for {
		page, err := c.Tags(context.Background(), "library/alpine", 2, last)
		if err != nil {
			t.Fatalf("Tags(n=2, last=%q) error = %v", last, err)
		}
		pages = append(pages, page)
		all = append(all, page.Tags...)
		if page.Next == "" {
			break
		}
		last = page.Next
		if len(pages) > 10 {
			t.Fatal("pagination does not end")
		}
	}
	want := []TagPage{
		{Name: "library/alpine", Tags: []string{"1.0", "1.1"}, Next: "1.1"},
		{Name: "library/alpine", Tags: []string{"2.0", "edge"}, Next: "edge"},
		{Name: "library/alpine", Tags: []string{"latest"}},
	}
	if diff := cmp.Diff(want, pages); diff != "" {
		t.Errorf("pages mismatch (-want +got):\n%s", diff)
	}
	if cnt.get("GET /v2/library/alpine/tags/list") != 3 {
		t.Errorf("tag list requests = %d, want 3", cnt.get("GET /v2/library/alpine/tags/list"))
	}
}

func TestTagsQuery(t *testing.T) {
	t.Parallel()
	var query string
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		query = r.URL.RawQuery
		_, _ = w.Write([]byte(`{"name":"a","tags":["x"]}`))
	}))
	c := newTestClient(t, srv.URL)
	if _, err := c.Tags(context.Background(), "a", 0, ""); err != nil {
		t.Fatal(err)
	}
	if query != "" {
		t.Errorf("query = %q, want none when n and last are zero", query)
	}
	if _, err := c.Tags(context.Background(), "a", 0, "x y"); err != nil {
		t.Fatal(err)
	}
	if query != "last=x+y" {
		t.Errorf("query = %q, want last=x+y", query)
	}
}

func TestTagsErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		handler http.HandlerFunc
		wantErr error
	}{
		{"not found", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, "NAME_UNKNOWN", "unknown")
		}, errdef.ErrNotFound},
		{"too large", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"name":"a","tags":["` + strings.Repeat("x", maxTagsBody) + `"]}`))
		}, errdef.ErrTooLarge},
		{"not JSON", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`<html>`))
		}, errdef.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, tt.handler)
			c := newTestClient(t, srv.URL)
			_, err := c.Tags(context.Background(), "a", 0, "")
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Tags() error = %v, want %v", err, tt.wantErr)
			}
			asError(t, err)
		})
	}
}

func TestParseLinkNext(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   []string
		want string
	}{
		{[]string{`</v2/a/tags/list?n=2&last=b>; rel="next"`}, "/v2/a/tags/list?n=2&last=b"},
		{[]string{`</v2/a/tags/list?last=b>; rel=next`}, "/v2/a/tags/list?last=b"},
		{[]string{`<https://r.example/v2/a/tags/list?last=b>;rel="NEXT"`}, "https://r.example/v2/a/tags/list?last=b"},
		{[]string{`</prev>; rel="prev", </next?last=z>; rel="next"`}, "/next?last=z"},
		{[]string{`</prev>; rel="prev"`, `</next?last=z>; rel="next last"`}, "/next?last=z"},
		{[]string{`</x>; title="a, b"; rel="next"`}, "/x"},
		{[]string{`</x>; rel="prev"`}, ""},
		{[]string{`no brackets; rel="next"`}, ""},
		{[]string{`</unterminated; rel="next"`}, ""},
		{nil, ""},
	}
	for _, tt := range tests {
		if got := parseLinkNext(tt.in); got != tt.want {
			t.Errorf("parseLinkNext(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestDecodeErrorBody(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in        string
		wantCodes []string
		wantMsg   string
	}{
		{`{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}`, []string{"MANIFEST_UNKNOWN"}, "manifest unknown"},
		{`{"errors":[{"code":"DENIED","message":"a"},{"code":"UNAUTHORIZED","message":"b"}]}`, []string{"DENIED", "UNAUTHORIZED"}, "a"},
		{`{"errors":[{"code":"bad code","message":"line1\nline2\t\u0000"}]}`, nil, "line1 line2"},
		{`{"details":"incorrect username or password"}`, nil, "incorrect username or password"},
		{`{"error":"invalid_grant","error_description":"expired"}`, nil, "expired"},
		{`{"errors":[{"code":42,"message":{"x":1}}]}`, nil, ""},
		{`<html>502 Bad Gateway</html>`, nil, ""},
		{``, nil, ""},
	}
	for _, tt := range tests {
		codes, msg := decodeErrorBody([]byte(tt.in))
		if diff := cmp.Diff(tt.wantCodes, codes); diff != "" || msg != tt.wantMsg {
			t.Errorf("decodeErrorBody(%q) = %q, %q, want %q, %q", tt.in, codes, msg, tt.wantCodes, tt.wantMsg)
		}
	}
}

// cursorTagServer lists tags two at a time whatever n asks, with a cursor
// in its Link header that is no tag (quay.io's next_page, or an opaque
// last), and ignores last as a tag.
func cursorTagServer(t *testing.T, tags []string, param string) string {
	t.Helper()
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := 0
		if c := r.URL.Query().Get(param); c != "" {
			i, _ = strconv.Atoi(strings.TrimPrefix(c, "cursor-"))
		}
		end := min(i+2, len(tags))
		if end < len(tags) {
			w.Header().Set("Link", fmt.Sprintf(`</v2/a/tags/list?n=2&%s=cursor-%d>; rel="next"`, param, end))
		}
		b, _ := json.Marshal(map[string]any{"name": "a", "tags": tags[i:end]})
		_, _ = w.Write(b)
	}))
	return srv.URL
}

// A tag list paged with a cursor that is no tag is read whole, page by
// page, and paged by tag for the mirror's clients: not cut after the first
// page (the next link dropped), nor relayed as a "last" the mirror cannot
// read back.
func TestTagsCursorPagination(t *testing.T) {
	t.Parallel()
	tags := []string{"a00", "a01", "a02", "a03", "a04", "a05", "a06"}
	for _, param := range []string{"next_page", "last"} {
		c := newTestClient(t, cursorTagServer(t, tags, param))
		all, err := c.Tags(context.Background(), "a", 0, "")
		if err != nil || !slices.Equal(all.Tags, tags) || all.Next != "" {
			t.Errorf("%s: whole list = %v, next %q, %v; want every tag", param, all.Tags, all.Next, err)
		}
		var got []string
		last := ""
		for range 10 {
			page, err := c.Tags(context.Background(), "a", 3, last)
			if err != nil {
				t.Fatalf("%s: Tags(n=3, last=%q): %v", param, last, err)
			}
			got = append(got, page.Tags...)
			if page.Next == "" {
				break
			}
			last = page.Next
		}
		if !slices.Equal(got, tags) {
			t.Errorf("%s: paged by 3 = %v, want %v", param, got, tags)
		}
	}
}
