// Package ocipage follows the pages of a registry's answer: the Link
// header's rel="next" target (RFC 8288) that the distribution-spec lets a
// registry send with a tag list or a referrers index, and the merging of a
// referrers index's pages into one index.
//
// References:
//   - https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#listing-referrers
//   - https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#listing-tags
package ocipage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Bounds of a referrers index read page by page: a registry that pages
// without end (or a link that never repeats) is cut off, not followed.
const MaxPages = 64

// ErrOtherHost is returned by Next for a next page on another scheme or
// host: the credentials of this registry are not sent there, and a mirror
// asked about one registry does not go fetching from another.
var ErrOtherHost = errors.New("next page on another host")

// LinkNext returns the target URI of the first rel="next" link in the Link
// header values (RFC 8288), "" if there is none. The relation type may be
// one of several ("next last"), quoted or not, in any case.
//
//	Link: </v2/library/alpine/tags/list?n=2&last=b>; rel="next"
func LinkNext(values []string) string {
	for _, v := range values {
		for v != "" {
			open := strings.IndexByte(v, '<')
			if open < 0 {
				break
			}
			end := strings.IndexByte(v[open:], '>')
			if end < 0 {
				break
			}
			target := v[open+1 : open+end]
			if i := strings.LastIndexByte(target, '<'); i >= 0 {
				target = target[i+1:] // "<<x>": the URI is what the last '<' opens
			}
			rest := v[open+end+1:]
			params, tail := splitLinkParams(rest)
			if relNext(params) {
				return strings.TrimSpace(target)
			}
			v = tail
		}
	}
	return ""
}

// splitLinkParams returns the parameter part of one link-value (up to the
// next comma outside a quoted string) and what follows it.
func splitLinkParams(s string) (params, tail string) {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && quoted:
			i++
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted:
			return s[:i], s[i+1:]
		}
	}
	return s, ""
}

// relNext reports whether link params ("; rel=next; type=...") include the
// relation type "next".
func relNext(params string) bool {
	for _, p := range strings.Split(params, ";") {
		name, val, ok := strings.Cut(p, "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "rel") {
			continue
		}
		val = strings.Trim(strings.TrimSpace(val), `"`)
		for _, rel := range strings.Fields(val) {
			if strings.EqualFold(rel, "next") {
				return true
			}
		}
	}
	return false
}

// Next returns the URL of the page after the one fetched from req, from
// that answer's Link header values: the rel="next" target, relative or
// absolute, resolved against req. It is nil when there is no next page, and
// an error wrapping ErrOtherHost when the target is on another scheme or
// host.
func Next(req *url.URL, link []string) (*url.URL, error) {
	l := LinkNext(link)
	if l == "" {
		return nil, nil
	}
	u, err := url.Parse(l)
	if err != nil {
		return nil, fmt.Errorf("next page link %q: %w", l, err)
	}
	u = req.ResolveReference(u)
	if !strings.EqualFold(u.Scheme, req.Scheme) || !strings.EqualFold(u.Host, req.Host) {
		return nil, fmt.Errorf("next page link to %s://%s, asked %s: %w", u.Scheme, u.Host, req.Host, ErrOtherHost)
	}
	u.Fragment, u.RawFragment = "", ""
	return u, nil
}

// ErrOtherPath is returned by Pager.Next for a next page at another path
// than the page it was read from.
var ErrOtherPath = errors.New("next page at another path")

// ErrTooManyPages is returned by Pager.Next past MaxPages pages.
var ErrTooManyPages = errors.New("too many pages")

// Pager follows the pages of one paged answer. A next page must be on the
// same scheme and host (Next) and at the same path: only the query may
// change, since a link to another path (another repository's referrers,
// another subject, any other endpoint) would be read with this resource's
// credentials and its answer taken for this resource's. A link back to a
// page already read ends the walk, pages compared by their query as asked
// (keys sorted: "?n=2&last=b" is the page "?last=b&n=2" read); a next page
// past MaxPages is an error. The zero Pager is ready to use.
type Pager struct {
	read  map[string]bool
	pages int
}

// Next notes that a page was read from page, and returns the URL of the
// page to read after it, from that answer's Link header values: nil when
// the walk is over, an error wrapping ErrOtherHost, ErrOtherPath or
// ErrTooManyPages when the link may not be followed.
func (p *Pager) Next(page *url.URL, link []string) (*url.URL, error) {
	if p.read == nil {
		p.read = map[string]bool{}
	}
	p.pages++
	p.read[page.Query().Encode()] = true
	next, err := Next(page, link)
	if err != nil || next == nil {
		return nil, err
	}
	if next.Path != page.Path {
		return nil, fmt.Errorf("next page link to %s, not to another page of %s: %w", next.Path, page.Path, ErrOtherPath)
	}
	if p.read[next.Query().Encode()] {
		return nil, nil
	}
	if p.pages >= MaxPages {
		return nil, fmt.Errorf("more than %d pages: %w", MaxPages, ErrTooManyPages)
	}
	return next, nil
}

// Index gathers the pages of a referrers index into one image index: the
// first page's fields with the manifests of every page, in order, each
// digest once (pages that overlap, or a link back to a page already read,
// list nothing twice).
type Index struct {
	fields    map[string]json.RawMessage
	order     []string // of fields, as the first page had them
	manifests []json.RawMessage
	seen      map[string]bool
	pages     int
}

// Add adds one page, which must be a JSON object whose "manifests" (if
// present) is an array of objects.
func (x *Index) Add(page []byte) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(page, &fields); err != nil {
		return fmt.Errorf("referrers page %d is not a JSON object: %w", x.pages+1, err)
	}
	var manifests []json.RawMessage
	if m, ok := fields["manifests"]; ok && !bytes.Equal(bytes.TrimSpace(m), []byte("null")) {
		if err := json.Unmarshal(m, &manifests); err != nil {
			return fmt.Errorf("referrers page %d: manifests is not an array: %w", x.pages+1, err)
		}
	}
	if x.pages == 0 {
		x.fields, x.seen = fields, map[string]bool{}
		x.order = keyOrder(page)
	}
	x.pages++
	for _, m := range manifests {
		var d struct {
			Digest string `json:"digest"`
		}
		if json.Unmarshal(m, &d) == nil && d.Digest != "" {
			if x.seen[d.Digest] {
				continue
			}
			x.seen[d.Digest] = true
		}
		x.manifests = append(x.manifests, m)
	}
	return nil
}

// Bytes returns the merged index.
func (x *Index) Bytes() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	manifests, err := json.Marshal(x.manifests)
	if err != nil {
		return nil, err
	}
	if x.manifests == nil {
		manifests = []byte("[]")
	}
	wrote := false
	write := func(k string, v []byte) {
		if wrote {
			b.WriteByte(',')
		}
		wrote = true
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		b.Write(v)
	}
	hasManifests := false
	for _, k := range x.order {
		if k == "manifests" {
			write(k, manifests)
			hasManifests = true
			continue
		}
		write(k, x.fields[k])
	}
	if !hasManifests {
		write("manifests", manifests)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// keyOrder returns the top-level keys of a JSON object in the order they
// appear, each once.
func keyOrder(obj []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(obj))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	var keys []string
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return keys
		}
		k, _ := t.(string)
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return keys
		}
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return keys
}
