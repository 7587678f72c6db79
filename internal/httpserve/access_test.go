package httpserve_test

import (
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/registry-edge/registry-edge/internal/access"
	"github.com/registry-edge/registry-edge/internal/httpserve"
	"github.com/registry-edge/registry-edge/internal/testutil/fakeupstream"
	"github.com/registry-edge/registry-edge/internal/testutil/syncbuf"
)

// Restricted repositories answer 401 with a Basic challenge to anonymous
// clients and 403 to users the rule does not list, before anything is
// asked of the upstream; listed users pull normally.
func TestAccessRules(t *testing.T) {
	t.Parallel()
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	other, _ := bcrypt.GenerateFromPassword([]byte("other"), bcrypt.MinCost)
	file := filepath.Join(t.TempDir(), "htpasswd")
	os.WriteFile(file, []byte("ops:"+string(hash)+"\nguest:"+string(other)+"\n"), 0o600)
	pol, err := access.New(access.Options{Anonymous: true, HtpasswdFile: file,
		Rules: []access.Rule{{Repositories: []string{"private/*"}, Users: []string{"ops"}}}})
	if err != nil {
		t.Fatal(err)
	}
	m := newMirrorWithAccess(t, pol)
	desc, _ := m.fake.Image("private/app", "v1", fakeupstream.Random(t, 1000))
	m.fake.Image("public/app", "v1", fakeupstream.Random(t, 1000))
	accept := "application/vnd.oci.image.manifest.v1+json"

	before := m.fake.Total()
	resp, body := m.get(http.MethodGet, manifestPath("private/app", "v1"), "Accept", accept)
	m.wantCode(resp, body, http.StatusUnauthorized, "UNAUTHORIZED")
	if ch := resp.Header.Get("WWW-Authenticate"); ch != `Basic realm="registry-edge"` {
		t.Errorf("WWW-Authenticate = %q", ch)
	}
	resp, body = m.get(http.MethodGet, manifestPath("private/app", "v1"), "Accept", accept, "Authorization", basic("guest", "other"))
	m.wantCode(resp, body, http.StatusForbidden, "DENIED")
	resp, body = m.get(http.MethodGet, manifestPath("private/app", "v1"), "Accept", accept, "Authorization", basic("ops", "wrong"))
	m.wantCode(resp, body, http.StatusUnauthorized, "UNAUTHORIZED")
	if n := m.fake.Total() - before; n != 0 {
		t.Errorf("refused requests made %d upstream requests", n)
	}

	resp, _ = m.get(http.MethodGet, manifestPath("private/app", "v1"), "Accept", accept, "Authorization", basic("ops", "s3cret"))
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != desc.Digest.String() {
		t.Errorf("listed user: %d %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
	}
	if resp, _ := m.get(http.MethodGet, manifestPath("public/app", "v1"), "Accept", accept); resp.StatusCode != http.StatusOK {
		t.Errorf("anonymous pull of an open repository: %d", resp.StatusCode)
	}
}

// The access log names who a request was let through as, and the user
// name of credentials that did not verify: a device with a stale password
// still reads open repositories (as anonymous), and its admin finds it in
// the log.
func TestAccessLogNamesTheClient(t *testing.T) {
	t.Parallel()
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	file := filepath.Join(t.TempDir(), "htpasswd")
	os.WriteFile(file, []byte("ops:"+string(hash)+"\n"), 0o600)
	pol, err := access.New(access.Options{Anonymous: true, HtpasswdFile: file,
		Rules: []access.Rule{{Repositories: []string{"private/*"}, Users: []string{"ops"}}}})
	if err != nil {
		t.Fatal(err)
	}
	m := newMirror(t)
	m.stop()
	var log syncbuf.Buffer
	m.access, m.accessLog = pol, &log
	m.start()
	m.fake.Image("private/app", "v1", fakeupstream.Random(t, 1000))
	m.fake.Image("public/app", "v1", fakeupstream.Random(t, 1000))
	accept := "application/vnd.oci.image.manifest.v1+json"

	for n, tc := range []struct {
		repo, tag, auth string
		status          int
		want, wantNot   []string
	}{
		{"public/app", "v1", "", 200, nil, []string{"user=", "rejected_user="}},
		{"public/app", "v1", basic("ops", "s3cret"), 200, []string{" user=ops"}, []string{"rejected_user="}},
		{"public/app", "v1", basic("ops", "rotated"), 200, []string{"rejected_user=ops"}, []string{" user="}},
		{"private/app", "v1", basic("ops", "rotated"), 401, []string{"rejected_user=ops"}, []string{" user="}},
		{"private/app", "v1", basic("ops", "s3cret"), 200, []string{" user=ops"}, []string{"rejected_user="}},
		// Names as sent, quoted by the handler: not stripped of what a
		// grep for them needs.
		{"public/app", "v1", basic("jörg dev", "x"), 200, []string{`rejected_user="jörg dev"`}, nil},
	} {
		resp, body := m.get(http.MethodGet, manifestPath(tc.repo, tc.tag), "Accept", accept, "Authorization", tc.auth)
		if resp.StatusCode != tc.status {
			t.Fatalf("GET %s with %q: %d %s, want %d", tc.repo, tc.auth, resp.StatusCode, body, tc.status)
		}
		// The line is logged as the handler returns, maybe just after the
		// client has the response.
		var lines []string
		for deadline := time.Now().Add(20 * time.Second); len(lines) <= n && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			lines = requestLines(log.String())
		}
		if len(lines) != n+1 {
			t.Fatalf("%d access log lines after %d requests:\n%s", len(lines), n+1, log.String())
		}
		last := lines[n]
		if !strings.Contains(last, "repo="+tc.repo) || !strings.Contains(last, fmt.Sprintf("status=%d", tc.status)) {
			t.Fatalf("access log line %q is not the request's (%s, %d)", last, tc.repo, tc.status)
		}
		for _, w := range tc.want {
			if !strings.Contains(last, w) {
				t.Errorf("GET %s with %q: access log %q lacks %q", tc.repo, tc.auth, last, w)
			}
		}
		for _, w := range tc.wantNot {
			if strings.Contains(last, w) {
				t.Errorf("GET %s with %q: access log %q has %q", tc.repo, tc.auth, last, w)
			}
		}
		if strings.Contains(last, "s3cret") || strings.Contains(last, "rotated") {
			t.Errorf("access log line carries a password: %q", last)
		}
	}
}

func requestLines(log string) []string {
	var lines []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "msg=request") {
			lines = append(lines, l)
		}
	}
	return lines
}

// A rule covers a repository however a client addresses it: through the
// default upstream, with a registry prefix, or with containerd's ?ns=
// (which sends the name without the prefix), whichever form the rule's
// pattern has.
func TestAccessRuleCoversEveryAddressing(t *testing.T) {
	t.Parallel()
	accept := "application/vnd.oci.image.manifest.v1+json"
	for _, pattern := range []string{"central.test/fleet/*", "fleet/*"} {
		t.Run(pattern, func(t *testing.T) {
			t.Parallel()
			pol, err := access.New(access.Options{Anonymous: true, Rules: []access.Rule{{Repositories: []string{pattern}, Certs: []string{"ops"}}}})
			if err != nil {
				t.Fatal(err)
			}
			m := newMirrorWithAccess(t, pol)
			m.fake.Image("fleet/app", "v1", fakeupstream.Random(t, 1000))
			m.fake.Image("other/app", "v1", fakeupstream.Random(t, 1000))
			for _, repo := range []string{"fleet/app", "other/app"} {
				for _, path := range []string{
					manifestPath(repo, "v1"),
					manifestPath(repo, "v1") + "?ns=central.test",
					manifestPath("central.test/"+repo, "v1"),
				} {
					resp, body := m.get(http.MethodGet, path, "Accept", accept)
					switch {
					case repo == "fleet/app" && resp.StatusCode != http.StatusUnauthorized:
						t.Errorf("anonymous GET %s under rule %s: %d %s, want 401", path, pattern, resp.StatusCode, body)
					case repo == "other/app" && resp.StatusCode != http.StatusOK:
						t.Errorf("anonymous GET %s (no rule): %d %s, want 200", path, resp.StatusCode, body)
					}
				}
			}
		})
	}
}

// newMirrorWithAccess is a mirror whose requests pass the access policy pol.
func newMirrorWithAccess(t *testing.T, pol httpserve.Access) *mirror {
	t.Helper()
	m := newMirror(t)
	m.stop()
	m.access = pol
	m.start()
	return m
}

func basic(user, pass string) string {
	r, _ := http.NewRequest("GET", "/", nil)
	r.SetBasicAuth(user, pass)
	return r.Header.Get("Authorization")
}

// A client over its request budget gets 429 TOOMANYREQUESTS with
// Retry-After; others are not affected.
func TestRateLimitPerClient(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	m.stop()
	m.limit = access.NewRateLimiter(1, 2, m.clock.Now)
	m.start()
	for i := 0; i < 2; i++ {
		if resp, _ := m.get(http.MethodGet, "/v2/"); resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d within the burst: %d", i, resp.StatusCode)
		}
	}
	resp, body := m.get(http.MethodGet, "/v2/")
	m.wantCode(resp, body, http.StatusTooManyRequests, "TOOMANYREQUESTS")
	if ra := resp.Header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Errorf("Retry-After = %q", ra)
	}
	m.clock.Advance(2 * time.Second)
	if resp, _ := m.get(http.MethodGet, "/v2/"); resp.StatusCode != http.StatusOK {
		t.Errorf("after the bucket refilled: %d", resp.StatusCode)
	}
}

// Behind a trusted proxy, the rate limit counts each client named by
// X-Forwarded-For (the right-most address the proxy appended), not the
// proxy; from any other peer the header is ignored.
func TestRateLimitBehindTrustedProxy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		// second is the X-Forwarded-For of the second request; the first
		// one names 10.0.0.1.
		second string
		want   int
	}{
		{"trusted, same client", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, "10.0.0.1", http.StatusTooManyRequests},
		{"trusted, another client", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, "10.0.0.2", http.StatusOK},
		{"trusted, a client spoofing the first one's address", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, "10.0.0.1, 10.0.0.3", http.StatusOK},
		{"not trusted: the header is ignored", nil, "10.0.0.2", http.StatusTooManyRequests},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := newMirror(t)
			m.stop()
			m.limit = access.NewRateLimiter(1, 1, m.clock.Now)
			m.trusted = tc.trusted
			m.start()
			if resp, body := m.get(http.MethodGet, "/v2/", "X-Forwarded-For", "10.0.0.1"); resp.StatusCode != http.StatusOK {
				t.Fatalf("first request: %d %s", resp.StatusCode, body)
			}
			if resp, body := m.get(http.MethodGet, "/v2/", "X-Forwarded-For", tc.second); resp.StatusCode != tc.want {
				t.Errorf("second request (X-Forwarded-For: %s): %d, want %d (%s)", tc.second, resp.StatusCode, tc.want, body)
			}
		})
	}
}

// An upstream that refuses the mirror's own credentials (401 or 403) is
// reported as a 502 DENIED that says so, with no challenge: the device's
// credentials are not the problem, and a local 401 or 403 would say they
// are. An upstream 400 is a 502 too; a 500 stays a 503 but is not called
// unreachable.
func TestUpstreamRefusalIsNotTheDevicesFault(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		upstream, status int
		code, says       string
	}{
		{http.StatusUnauthorized, http.StatusBadGateway, "DENIED", "refused registry-edge access to this repository"},
		{http.StatusForbidden, http.StatusBadGateway, "DENIED", "refused registry-edge access to this repository"},
		{http.StatusBadRequest, http.StatusBadGateway, "UNKNOWN", "rejected registry-edge's request (HTTP 400)"},
		{http.StatusInternalServerError, http.StatusServiceUnavailable, "UNAVAILABLE", "internal error (HTTP 500)"},
	} {
		m := newMirror(t)
		m.fake.Image("private/app", "v1", fakeupstream.Random(t, 1000))
		m.fake.Fail(fakeupstream.Status(tc.upstream, "", 0))
		resp, body := m.get(http.MethodGet, manifestPath("private/app", "v1"), "Accept", "application/vnd.oci.image.manifest.v1+json")
		m.wantCode(resp, body, tc.status, tc.code)
		if !strings.Contains(string(body), tc.says) {
			t.Errorf("upstream %d: body %s does not say %q", tc.upstream, body, tc.says)
		}
		if ch := resp.Header.Get("WWW-Authenticate"); ch != "" {
			t.Errorf("upstream %d: the mirror challenged the device: %q", tc.upstream, ch)
		}
	}
}
