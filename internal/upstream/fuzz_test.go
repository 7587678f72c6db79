package upstream

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/opencontainers/go-digest"
)

// FuzzParseChallenge checks that the WWW-Authenticate parser terminates on
// any input, keeps its bounds, and that its canonical rendering parses
// back to the same challenges.
func FuzzParseChallenge(f *testing.F) {
	for _, s := range []string{
		`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"`,
		`Basic realm="Registry Realm"`,
		`Basic, Bearer realm="r", error="insufficient_scope"`,
		`Bearer realm="q\"uo\\ted"`,
		`Negotiate YIIB==`,
		`Bearer realm=unquoted, service=x scope=y`,
		`,,, = "" ,`,
		`Bearer realm="unterminated`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		chs := parseChallenges([]string{s})
		if len(chs) > maxChallenges {
			t.Fatalf("%d challenges, limit %d", len(chs), maxChallenges)
		}
		for _, ch := range chs {
			if ch.scheme == "" || ch.scheme != strings.ToLower(ch.scheme) {
				t.Fatalf("bad scheme %q", ch.scheme)
			}
			if len(ch.params) > maxChallengeParams {
				t.Fatalf("%d params, limit %d", len(ch.params), maxChallengeParams)
			}
			for k := range ch.params {
				if k == "" || k != strings.ToLower(k) {
					t.Fatalf("bad param name %q", k)
				}
			}
		}
		again := parseChallenges([]string{formatChallenges(chs)})
		if diff := cmp.Diff(chs, again, cmp.AllowUnexported(challenge{})); diff != "" {
			t.Fatalf("round trip of %q via %q mismatch (-first +second):\n%s", s, formatChallenges(chs), diff)
		}
	})
}

// FuzzParseLinkNext checks that the Link parser never panics and returns
// only text that was between angle brackets of the input.
func FuzzParseLinkNext(f *testing.F) {
	for _, s := range []string{
		`</v2/a/tags/list?n=2&last=b>; rel="next"`,
		`</prev>; rel="prev", </next?last=z>; rel="next last"`,
		`</x>; title="a, \"b\""; rel=next`,
		`<`, `>`, `<>; rel=next`, `"<x>"; rel="next`,
	} {
		f.Add(s, "")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		got := parseLinkNext([]string{a, b})
		if got != "" && !strings.Contains(a, got) && !strings.Contains(b, got) {
			t.Fatalf("parseLinkNext(%q, %q) = %q, not from the input", a, b, got)
		}
		if strings.ContainsAny(got, "<>") {
			t.Fatalf("parseLinkNext(%q, %q) = %q contains a bracket", a, b, got)
		}
	})
}

// FuzzDecodeErrorBody checks that the error-body decoder never panics and
// bounds and sanitises what it keeps from a hostile body.
func FuzzDecodeErrorBody(f *testing.F) {
	for _, s := range []string{
		`{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}`,
		`{"errors":[{"code":"X","message":"a\nb"},{"code":"Y"}]}`,
		`{"details":"incorrect username or password"}`,
		`{"error":"invalid_grant","error_description":"x"}`,
		`{"errors":null}`, `[]`, `null`, `{"errors":[{"code":1}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		codes, msg := decodeErrorBody(b)
		if len(codes) > maxCodes {
			t.Fatalf("%d codes, limit %d", len(codes), maxCodes)
		}
		for _, c := range codes {
			if !validCode(c) {
				t.Fatalf("invalid code %q kept", c)
			}
		}
		if len(msg) > maxMessageLen || !utf8.ValidString(msg) || strings.ContainsAny(msg, "\n\r\t\x00") {
			t.Fatalf("message %q not sanitised", msg)
		}
	})
}

// FuzzParseContentRange checks that accepted Content-Range values are
// consistent.
func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-99/100", "bytes 5-9/*", "bytes */100", "bytes 9-5/10", "bytes 0-0/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, end, total, ok := parseContentRange(s)
		if !ok {
			return
		}
		if start < 0 || end < start || (total != -1 && total <= end) {
			t.Fatalf("parseContentRange(%q) = %d, %d, %d accepted", s, start, end, total)
		}
	})
}

// FuzzParseDockerConfig checks that a hostile config.json never panics the
// parser.
func FuzzParseDockerConfig(f *testing.F) {
	f.Add([]byte(`{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}`))
	f.Add([]byte(`{"auths":{"ghcr.io":{}},"credsStore":"x","credHelpers":{"ghcr.io":"y"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseDockerConfig(b, configHosts("registry-1.docker.io", "docker.io"))
	})
}

// FuzzParseIfNoneMatch checks the parser of the entity tags a lower tier
// offers as delta bases (any client may send them): it never panics,
// keeps its bound, returns only valid digests quoted in the input, and
// reads its own rendering back the same.
func FuzzParseIfNoneMatch(f *testing.F) {
	for _, s := range []string{
		`"sha256:` + strings.Repeat("ab", 32) + `", W/"sha256:` + strings.Repeat("cd", 32) + `"`,
		`*`,
		`"sha256:` + strings.Repeat("0", 64) + `","sha256:short",,""`,
		`"sha512:` + strings.Repeat("1", 128) + `"`,
		`"sha256:` + strings.Repeat("ab", 32) + `", "sha256:` + strings.Repeat("ab", 32) + `"`,
	} {
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, s string, limit int) {
		limit = max(1, min(limit, 64))
		ds := ParseIfNoneMatch([]string{s}, limit)
		if len(ds) > limit {
			t.Fatalf("ParseIfNoneMatch(%q, %d) = %d digests", s, limit, len(ds))
		}
		tags := make([]string, len(ds))
		seen := map[digest.Digest]bool{}
		for i, d := range ds {
			if seen[d] {
				t.Fatalf("ParseIfNoneMatch(%q) returned %s twice", s, d)
			}
			seen[d] = true
			if err := d.Validate(); err != nil {
				t.Fatalf("ParseIfNoneMatch(%q) returned invalid %q: %v", s, d, err)
			}
			if tags[i] = `"` + d.String() + `"`; !strings.Contains(s, tags[i]) {
				t.Fatalf("ParseIfNoneMatch(%q) returned %s, not quoted in the input", s, d)
			}
		}
		if again := ParseIfNoneMatch([]string{strings.Join(tags, ", ")}, limit); !cmp.Equal(ds, again, cmpopts.EquateEmpty()) {
			t.Fatalf("ParseIfNoneMatch(render(%v)) = %v", ds, again)
		}
	})
}
