package upstream

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/testutil/syncbuf"
)

// tokenRegistry is a registry that accepts only bearer tokens issued by its
// token server, like Docker Hub.
type tokenRegistry struct {
	t        *testing.T
	registry *counter
	tokens   *counter
	user     string // required basic credentials at the token server, if set
	pass     string
	refresh  string // accepted OAuth2 refresh token, if set
	ttl      int    // expires_in
	// basicFirst lists a Basic challenge before the Bearer one.
	basicFirst atomic.Bool

	mu     sync.Mutex
	valid  map[string]string // token → scope
	scopes []string          // scopes requested, in order
	issued int
	reg    string // registry URL
	realm  string // token server URL
	basic  int    // token requests that carried basic credentials
}

func newTokenRegistry(t *testing.T, user, pass string) *tokenRegistry {
	tr := &tokenRegistry{t: t, registry: &counter{}, tokens: &counter{}, user: user, pass: pass, ttl: 300, valid: map[string]string{}}
	tokenSrv := newServer(t, http.HandlerFunc(tr.serveToken))
	regSrv := newServer(t, http.HandlerFunc(tr.serveRegistry))
	tr.realm, tr.reg = tokenSrv.URL+"/token", regSrv.URL
	return tr
}

func (tr *tokenRegistry) serveToken(w http.ResponseWriter, r *http.Request) {
	tr.tokens.add(r)
	if _, _, ok := r.BasicAuth(); ok {
		tr.mu.Lock()
		tr.basic++
		tr.mu.Unlock()
	}
	var scope string
	switch r.Method {
	case http.MethodPost:
		if err := r.ParseForm(); err != nil || tr.refresh == "" || r.PostForm.Get("grant_type") != "refresh_token" ||
			r.PostForm.Get("refresh_token") != tr.refresh {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"details":"bad refresh token"}`))
			return
		}
		scope = r.PostForm.Get("scope")
	default:
		if r.URL.Query().Get("service") != "test-registry" {
			tr.t.Errorf("token request service = %q", r.URL.Query().Get("service"))
		}
		if tr.user != "" {
			u, p, ok := r.BasicAuth()
			if !ok || u != tr.user || p != tr.pass {
				w.WriteHeader(http.StatusUnauthorized)
				// Some token servers echo what they got; the client must scrub it.
				_, _ = fmt.Fprintf(w, `{"details":"incorrect username or password %s"}`, p)
				return
			}
		}
		scope = r.URL.Query().Get("scope")
	}
	tr.mu.Lock()
	tr.issued++
	tok := fmt.Sprintf("tok-%d-%s", tr.issued, strings.Repeat("s", 8))
	tr.valid[tok] = scope
	tr.scopes = append(tr.scopes, scope)
	tr.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_in": tr.ttl})
}

func (tr *tokenRegistry) serveRegistry(w http.ResponseWriter, r *http.Request) {
	tr.registry.add(r)
	repo := strings.TrimPrefix(r.URL.Path, "/v2/")
	repo, _, _ = strings.Cut(repo, "/manifests/")
	scope := "repository:" + repo + ":pull"
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	tr.mu.Lock()
	got, valid := tr.valid[tok]
	tr.mu.Unlock()
	if r.URL.Path == "/v2/" && ok && valid {
		// The API version check: any valid token will do.
		_, _ = w.Write([]byte("{}"))
		return
	}
	if !ok || !valid || got != scope {
		ch := fmt.Sprintf(`Bearer realm=%q,service="test-registry",scope=%q`, tr.realm, scope)
		if tr.basicFirst.Load() {
			ch = `Basic realm="registry", ` + ch
		}
		w.Header().Set("WWW-Authenticate", ch)
		writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		return
	}
	w.Header().Set("Content-Type", testManifestType)
	_, _ = w.Write(testManifest)
}

// revoke invalidates every issued token, as a token server rotating its
// key would.
func (tr *tokenRegistry) revoke() {
	tr.mu.Lock()
	clear(tr.valid)
	tr.mu.Unlock()
}

func (tr *tokenRegistry) requestedScopes() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.scopes...)
}

func TestBearerTokenFlow(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		user, pass string
	}{
		{"anonymous", "", ""},
		{"with credentials", "alice", "pa55word-secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr := newTokenRegistry(t, tt.user, tt.pass)
			c := newTestClient(t, tr.reg, func(o *Options) { o.Username, o.Password = tt.user, tt.pass })
			ctx := context.Background()
			const n = 5
			for i := range n {
				if _, err := c.Manifest(ctx, "library/alpine", "latest", nil, 1<<20); err != nil {
					t.Fatalf("Manifest() #%d error = %v", i, err)
				}
			}
			if got := tr.tokens.total(); got != 1 {
				t.Errorf("token server hit %d times for %d requests, want 1", got, n)
			}
			// One 401 to learn the challenge, then n authenticated requests.
			if got := tr.registry.total(); got != n+1 {
				t.Errorf("registry hit %d times, want %d", got, n+1)
			}
			// Another repository needs its own scope, fetched pre-emptively.
			if _, err := c.Manifest(ctx, "library/busybox", "latest", nil, 1<<20); err != nil {
				t.Fatalf("Manifest(busybox) error = %v", err)
			}
			want := []string{"repository:library/alpine:pull", "repository:library/busybox:pull"}
			if diff := cmp.Diff(want, tr.requestedScopes()); diff != "" {
				t.Errorf("requested scopes mismatch (-want +got):\n%s", diff)
			}
			if got := tr.registry.total(); got != n+2 {
				t.Errorf("registry hit %d times, want %d (no 401 once the challenge is known)", got, n+2)
			}
		})
	}
}

func TestBearerConcurrentColdRequestsShareOneToken(t *testing.T) {
	t.Parallel()
	tr := newTokenRegistry(t, "", "")
	c := newTestClient(t, tr.reg)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			_, err := c.Manifest(context.Background(), "library/alpine", "latest", nil, 1<<20)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Manifest() error = %v", err)
		}
	}
	if got := tr.tokens.total(); got != 1 {
		t.Errorf("token server hit %d times, want 1", got)
	}
}

func TestBearerTokenRefreshedAfter401(t *testing.T) {
	t.Parallel()
	tr := newTokenRegistry(t, "", "")
	c := newTestClient(t, tr.reg)
	ctx := context.Background()
	if _, err := c.Manifest(ctx, "library/alpine", "latest", nil, 1<<20); err != nil {
		t.Fatal(err)
	}
	tr.revoke()
	if _, err := c.Manifest(ctx, "library/alpine", "latest", nil, 1<<20); err != nil {
		t.Fatalf("Manifest() after revocation error = %v", err)
	}
	if got := tr.tokens.total(); got != 2 {
		t.Errorf("token server hit %d times, want 2", got)
	}
	if _, err := c.Manifest(ctx, "library/alpine", "latest", nil, 1<<20); err != nil {
		t.Fatal(err)
	}
	if got := tr.tokens.total(); got != 2 {
		t.Errorf("token server hit %d times after refresh, want still 2", got)
	}
}

func TestBearerTokenExpiry(t *testing.T) {
	t.Parallel()
	tr := newTokenRegistry(t, "", "")
	tr.ttl = 60
	c := newTestClient(t, tr.reg)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	c.auth.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	ctx := context.Background()
	get := func() {
		t.Helper()
		if _, err := c.Manifest(ctx, "library/alpine", "latest", nil, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	get()
	advance(50 * time.Second) // within 90% of 60s
	get()
	if got := tr.tokens.total(); got != 1 {
		t.Errorf("token server hit %d times before expiry, want 1", got)
	}
	advance(5 * time.Second) // 55s: past the safety margin
	get()
	if got := tr.tokens.total(); got != 2 {
		t.Errorf("token server hit %d times after expiry, want 2", got)
	}
	// The expired token was replaced before use: one 401 in all (the first).
	if got := tr.registry.total(); got != 4 {
		t.Errorf("registry hit %d times, want 4", got)
	}
}

func TestBearerBadCredentials(t *testing.T) {
	t.Parallel()
	const secret = "wrong-pa55word-secret"
	tr := newTokenRegistry(t, "alice", "right-password")
	logs := &syncbuf.Buffer{}
	c := newTestClient(t, tr.reg, func(o *Options) {
		o.Username, o.Password = "alice", secret
		o.Logger = debugLogger(logs)
	})
	_, err := c.Manifest(context.Background(), "library/alpine", "latest", nil, 1<<20)
	if !errors.Is(err, errdef.ErrUnauthorized) {
		t.Fatalf("Manifest() error = %v, want ErrUnauthorized", err)
	}
	e := asError(t, err)
	if e.Status != http.StatusUnauthorized {
		t.Errorf("Status = %d, want 401", e.Status)
	}
	if got := tr.tokens.total(); got != 1 {
		t.Errorf("token server hit %d times, want 1 (401 is not retried)", got)
	}
	assertNoSecret(t, "error", fmt.Sprintf("%v %+v %#v", err, err, e), secret)
	assertNoSecret(t, "logs", logs.String(), secret)
}

func TestIdentityToken(t *testing.T) {
	t.Parallel()
	const refresh = "refresh-token-secret"
	tr := newTokenRegistry(t, "", "")
	tr.refresh = refresh
	cfg := filepath.Join(t.TempDir(), "config.json")
	host := strings.TrimPrefix(tr.reg, "http://")
	body := fmt.Sprintf(`{"auths":{%q:{"auth":%q,"identitytoken":%q}}}`, host,
		base64.StdEncoding.EncodeToString([]byte("<token>:")), refresh)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, tr.reg, func(o *Options) { o.DockerConfig = cfg })
	if _, err := c.Manifest(context.Background(), "library/alpine", "latest", nil, 1<<20); err != nil {
		t.Fatalf("Manifest() error = %v", err)
	}
	if got := tr.tokens.get("POST /token"); got != 1 {
		t.Errorf("OAuth2 token requests = %d, want 1", got)
	}
}

// basicRegistry requires HTTP basic credentials.
func basicRegistry(t *testing.T, user, pass string, cnt *counter) string {
	t.Helper()
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cnt.add(r)
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
			return
		}
		_, _ = w.Write(testManifest)
	}))
	return srv.URL
}

func TestBasicAuth(t *testing.T) {
	t.Parallel()
	var cnt counter
	regURL := basicRegistry(t, "bob", "s3cret-basic", &cnt)
	c := newTestClient(t, regURL, func(o *Options) { o.Username, o.Password = "bob", "s3cret-basic" })
	for range 3 {
		if _, err := c.Manifest(context.Background(), "a/b", "latest", nil, 1<<20); err != nil {
			t.Fatalf("Manifest() error = %v", err)
		}
	}
	if got := cnt.total(); got != 4 {
		t.Errorf("registry hit %d times, want 4 (one 401, then pre-emptive basic auth)", got)
	}
}

func TestBasicAuthWrongPassword(t *testing.T) {
	t.Parallel()
	var cnt counter
	regURL := basicRegistry(t, "bob", "right", &cnt)
	c := newTestClient(t, regURL, func(o *Options) { o.Username, o.Password = "bob", "wrong-secret" })
	_, err := c.Manifest(context.Background(), "a/b", "latest", nil, 1<<20)
	if !errors.Is(err, errdef.ErrUnauthorized) {
		t.Fatalf("Manifest() error = %v, want ErrUnauthorized", err)
	}
	if got := cnt.total(); got != 2 {
		t.Errorf("registry hit %d times, want 2", got)
	}
	assertNoSecret(t, "error", err.Error(), "wrong-secret")
}

// CheckCredentials, after a Ping as at start, tells accepted credentials
// from refused ones, whether the registry asks for basic credentials,
// issues bearer tokens, or lets anonymous clients read /v2/ (a
// registry-edge tier, which refuses wrong credentials there: over HTTPS
// they are sent unasked to find out, over plain HTTP not at all).
func TestCheckCredentials(t *testing.T) {
	t.Parallel()
	var cnt counter
	challenging := basicRegistry(t, "bob", "right", &cnt)
	var sentUnasked atomic.Bool
	openHandler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if ok && r.TLS == nil {
			sentUnasked.Store(true)
		}
		if ok && (u != "bob" || p != "right") {
			w.Header().Set("WWW-Authenticate", `Basic realm="edge"`)
			writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "invalid username or password")
			return
		}
		_, _ = w.Write([]byte("{}"))
	})
	openTLS := httptest.NewTLSServer(openHandler)
	t.Cleanup(openTLS.Close)
	openPlain := newServer(t, openHandler).URL
	tokens := newTokenRegistry(t, "bob", "right").reg
	check := func(t *testing.T, url, pass string, tls bool) (string, error) {
		c := newTestClient(t, url, func(o *Options) {
			o.Username, o.Password = "bob", pass
			if tls {
				o.Transport = openTLS.Client().Transport
			}
		})
		if err := c.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
		return c.CheckCredentials(context.Background())
	}
	for _, reg := range []struct {
		name, url string
		tls       bool
		good      string
	}{
		{"basic", challenging, false, CredentialsAccepted},
		{"bearer", tokens, false, CredentialsAccepted},
		// Right credentials to a registry that never asks: taken or
		// ignored, it cannot tell.
		{"open over HTTPS", openTLS.URL, true, CredentialsNotAsked},
	} {
		t.Run(reg.name, func(t *testing.T) {
			if got, err := check(t, reg.url, "right", reg.tls); err != nil || got != reg.good {
				t.Errorf("right password: %q, %v; want %q", got, err, reg.good)
			}
			_, err := check(t, reg.url, "wrong-secret", reg.tls)
			if !errors.Is(err, errdef.ErrUnauthorized) {
				t.Errorf("wrong password: %v, want ErrUnauthorized", err)
			}
			if err != nil {
				assertNoSecret(t, "error", err.Error(), "wrong-secret")
			}
		})
	}
	t.Run("open over HTTP", func(t *testing.T) {
		if got, err := check(t, openPlain, "wrong-secret", false); err != nil || got != CredentialsNotAsked {
			t.Errorf("CheckCredentials = %q, %v; want %q", got, err, CredentialsNotAsked)
		}
		if sentUnasked.Load() {
			t.Error("credentials went unasked over plain HTTP")
		}
	})
	before := cnt.total()
	if got, err := newTestClient(t, challenging).CheckCredentials(context.Background()); err != nil || got != CredentialsNotAsked || cnt.total() != before {
		t.Errorf("without credentials: %q, %v after %d requests, want %q after none", got, err, cnt.total()-before, CredentialsNotAsked)
	}
}

func TestDockerConfigCredentials(t *testing.T) {
	t.Parallel()
	var cnt counter
	regURL := basicRegistry(t, "carol", "from-config", &cnt)
	host := strings.TrimPrefix(regURL, "http://")
	cfg := filepath.Join(t.TempDir(), "config.json")
	body := fmt.Sprintf(`{"auths":{"https://%s/v1/":{"auth":%q}}}`, host,
		base64.StdEncoding.EncodeToString([]byte("carol:from-config")))
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, regURL, func(o *Options) { o.DockerConfig = cfg })
	if _, err := c.Manifest(context.Background(), "a/b", "latest", nil, 1<<20); err != nil {
		t.Fatalf("Manifest() error = %v", err)
	}
}

func TestParseDockerConfig(t *testing.T) {
	t.Parallel()
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	hub := configHosts("registry-1.docker.io", "docker.io")
	tests := []struct {
		name    string
		config  string
		hosts   []string
		want    credentials
		wantErr error
	}{
		{"docker hub key", `{"auths":{"https://index.docker.io/v1/":{"auth":"` + b64("u:p:with:colons") + `"}}}`,
			hub, credentials{username: "u", password: "p:with:colons"}, nil},
		{"username and password fields", `{"auths":{"ghcr.io":{"username":"u","password":"p"}}}`,
			[]string{"ghcr.io"}, credentials{username: "u", password: "p"}, nil},
		{"scheme and case", `{"auths":{"HTTPS://GHCR.IO":{"auth":"` + b64("u:p") + `"}}}`,
			[]string{"ghcr.io"}, credentials{username: "u", password: "p"}, nil},
		{"identity token", `{"auths":{"ghcr.io":{"auth":"` + b64("<token>:") + `","identitytoken":"rt"}}}`,
			[]string{"ghcr.io"}, credentials{identityToken: "rt"}, nil},
		{"registry token", `{"auths":{"ghcr.io":{"registrytoken":"bt"}}}`,
			[]string{"ghcr.io"}, credentials{registryToken: "bt"}, nil},
		{"no entry", `{"auths":{"quay.io":{"auth":"` + b64("u:p") + `"}}}`, []string{"ghcr.io"}, credentials{}, errdef.ErrNotFound},
		{"creds store", `{"auths":{"ghcr.io":{}},"credsStore":"desktop"}`, []string{"ghcr.io"}, credentials{}, errdef.ErrUnsupported},
		{"cred helper", `{"credHelpers":{"ghcr.io":"gh"}}`, []string{"ghcr.io"}, credentials{}, errdef.ErrUnsupported},
		// Docker asks a host's credHelpers entry before its auths entry,
		// which is then a leftover of an earlier login: not used.
		{"cred helper over auths entry", `{"auths":{"gcr.io":{"auth":"` + b64("_json_key:old") + `"}},"credHelpers":{"gcr.io":"gcloud"}}`,
			[]string{"gcr.io"}, credentials{}, errdef.ErrUnsupported},
		{"cred helper for another host", `{"auths":{"ghcr.io":{"auth":"` + b64("u:p") + `"}},"credHelpers":{"gcr.io":"gcloud"}}`,
			[]string{"ghcr.io"}, credentials{username: "u", password: "p"}, nil},
		{"bad base64", `{"auths":{"ghcr.io":{"auth":"%%%"}}}`, []string{"ghcr.io"}, credentials{}, errdef.ErrInvalid},
		{"not JSON", `auths`, []string{"ghcr.io"}, credentials{}, errdef.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseDockerConfig([]byte(tt.config), tt.hosts)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("parseDockerConfig() error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseDockerConfig() error = %v", err)
			}
			if got != tt.want {
				t.Errorf("parseDockerConfig() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestRedirectDropsAuthorization checks that a blob redirect to another
// host (object storage) carries no credentials, while the registry got them.
func TestRedirectDropsAuthorization(t *testing.T) {
	t.Parallel()
	blob := randomBytes(t, 1000)
	d := digest.FromBytes(blob)
	var storageAuth, storageRange []string
	var mu sync.Mutex
	storage := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		storageAuth = append(storageAuth, r.Header.Get("Authorization"))
		storageRange = append(storageRange, r.Header.Get("Range"))
		mu.Unlock()
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(blob)))
	}))
	var cnt counter
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cnt.add(r)
		if u, p, ok := r.BasicAuth(); !ok || u != "dave" || p != "redirect-secret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		http.Redirect(w, r, storage.URL+"/bucket/"+d.Encoded()+"?X-Amz-Signature=sig", http.StatusTemporaryRedirect)
	}))
	c := newTestClient(t, srv.URL, func(o *Options) { o.Username, o.Password = "dave", "redirect-secret" })
	for _, offset := range []int64{0, 400} {
		resp, err := c.Blob(context.Background(), "a/b", d, offset, "")
		if err != nil {
			t.Fatalf("Blob(offset %d) error = %v", offset, err)
		}
		got := make([]byte, 0, len(blob))
		buf := make([]byte, 512)
		for {
			n, err := resp.Body.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		resp.Body.Close()
		if string(got) != string(blob[offset:]) || resp.Offset != offset || resp.Size != int64(len(blob)) {
			t.Errorf("Blob(offset %d) = %d bytes, Offset %d, Size %d; want %d bytes, Offset %d, Size %d",
				offset, len(got), resp.Offset, resp.Size, len(blob)-int(offset), offset, len(blob))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]string{"", ""}, storageAuth); diff != "" {
		t.Errorf("Authorization at the storage host (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"", "bytes=400-"}, storageRange); diff != "" {
		t.Errorf("Range at the storage host (-want +got):\n%s", diff)
	}
}

// TestNoSecretsInErrors drives failures in which a secret could leak into an
// error string and checks that none does.
func TestNoSecretsInErrors(t *testing.T) {
	t.Parallel()
	const password = "hunter2-password"
	const signature = "s1gnature-value"
	dead := closedURL(t)
	tests := []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"message echoes the Authorization header", func(w http.ResponseWriter, r *http.Request) {
			if _, _, ok := r.BasicAuth(); !ok {
				w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			u, p, _ := r.BasicAuth()
			writeError(w, http.StatusForbidden, "DENIED", "user "+u+" with password "+p+" and header "+r.Header.Get("Authorization")+" denied")
		}},
		{"redirect to a dead signed URL", func(w http.ResponseWriter, r *http.Request) {
			if _, _, ok := r.BasicAuth(); !ok {
				w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, dead+"/b?X-Amz-Signature="+signature+"&token="+signature, http.StatusFound)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, tt.handler)
			logs := &syncbuf.Buffer{}
			c := newTestClient(t, srv.URL, func(o *Options) {
				o.Username, o.Password = "eve", password
				o.Logger = debugLogger(logs)
			})
			basic := base64.StdEncoding.EncodeToString([]byte("eve:" + password))
			_, err := c.Blob(context.Background(), "a/b", digest.FromString("x"), 0, "")
			if err == nil {
				t.Fatal("Blob() error = nil, want an error")
			}
			e := asError(t, err)
			for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", e)} {
				assertNoSecret(t, "error", s, password, signature, basic)
			}
			assertNoSecret(t, "logs", logs.String(), password, signature, basic)
		})
	}
}

// A secret an upstream echoes where its message is cut to maxMessageLen
// is scrubbed whole, not cut first and then missed by the scrub: the
// part before the cut would show in the error, the log and the status page.
func TestNoSecretCutAtTheMessageLimit(t *testing.T) {
	t.Parallel()
	const password = "hunter2-password"
	// The password begins 6 bytes before the limit.
	pad := strings.Repeat("x", maxMessageLen-7) + " "
	echo := func(w http.ResponseWriter, status int, p string) {
		writeError(w, status, "DENIED", pad+p+" denied")
	}
	t.Run("registry", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, p, ok := r.BasicAuth()
			if !ok {
				w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			echo(w, http.StatusForbidden, p)
		}))
		c := newTestClient(t, srv.URL, func(o *Options) { o.Username, o.Password = "eve", password })
		_, err := c.Blob(context.Background(), "a/b", digest.FromString("x"), 0, "")
		if err == nil {
			t.Fatal("Blob() error = nil, want an error")
		}
		if !strings.Contains(err.Error(), pad[:32]) {
			t.Fatalf("Blob() error = %v, want the upstream's message in it", err)
		}
		assertNoSecret(t, "error", err.Error(), password[:6])
	})
	t.Run("token server", func(t *testing.T) {
		t.Parallel()
		tok := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, p, _ := r.BasicAuth()
			echo(w, http.StatusUnauthorized, p)
		}))
		srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="test-registry"`, tok.URL+"/token"))
			w.WriteHeader(http.StatusUnauthorized)
		}))
		c := newTestClient(t, srv.URL, func(o *Options) { o.Username, o.Password = "eve", password })
		_, err := c.Blob(context.Background(), "a/b", digest.FromString("x"), 0, "")
		if err == nil {
			t.Fatal("Blob() error = nil, want an error")
		}
		if !strings.Contains(err.Error(), pad[:32]) {
			t.Fatalf("Blob() error = %v, want the upstream's message in it", err)
		}
		assertNoSecret(t, "error", err.Error(), password[:6])
	})
}

func TestNoTokenInErrors(t *testing.T) {
	t.Parallel()
	tr := newTokenRegistry(t, "", "")
	var issued string
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="test-registry"`, tr.realm))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		issued = tok
		writeError(w, http.StatusNotFound, "BLOB_UNKNOWN", "no blob for token "+tok)
	}))
	c := newTestClient(t, srv.URL)
	_, err := c.Blob(context.Background(), "a/b", digest.FromString("x"), 0, "")
	if !errors.Is(err, errdef.ErrNotFound) {
		t.Fatalf("Blob() error = %v, want ErrNotFound", err)
	}
	if issued == "" {
		t.Fatal("no token was presented")
	}
	assertNoSecret(t, "error", err.Error(), issued)
}

func TestParseChallenges(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   []string
		want []challenge
	}{
		{[]string{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"`},
			[]challenge{{"bearer", map[string]string{"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/alpine:pull"}}}},
		{[]string{`Basic realm="Registry Realm"`}, []challenge{{"basic", map[string]string{"realm": "Registry Realm"}}}},
		{[]string{`Basic realm="a", Bearer realm="https://t/x", service=reg`},
			[]challenge{{"basic", map[string]string{"realm": "a"}}, {"bearer", map[string]string{"realm": "https://t/x", "service": "reg"}}}},
		{[]string{`Negotiate`, `BEARER Realm = "q\"uoted", ERROR=insufficient_scope`},
			[]challenge{{"negotiate", map[string]string{}}, {"bearer", map[string]string{"realm": `q"uoted`, "error": "insufficient_scope"}}}},
		{[]string{`Basic, Bearer realm="r"`}, []challenge{{"basic", map[string]string{}}, {"bearer", map[string]string{"realm": "r"}}}},
		{[]string{`Bearer realm="unterminated`}, []challenge{{"bearer", map[string]string{"realm": "unterminated"}}}},
		{[]string{``, ` , ,`}, nil},
	}
	for _, tt := range tests {
		got := parseChallenges(tt.in)
		if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(challenge{})); diff != "" {
			t.Errorf("parseChallenges(%q) mismatch (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestRealmOverPlainHTTPRefusedForHTTPSRegistry(t *testing.T) {
	t.Parallel()
	at := newAuthTransport(http.DefaultTransport, mustParseURL(t, "https://registry.example"), credentials{username: "u", password: "p"}, "ua", slog.New(slog.DiscardHandler))
	_, err := at.fetchToken(context.Background(), challenge{scheme: "bearer", params: map[string]string{"realm": "http://auth.example/token"}}, "s")
	if !errors.Is(err, errPolicy) {
		t.Errorf("fetchToken() error = %v, want a policy refusal", err)
	}
}

func mustParseURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// A plain-HTTP registry's credentials go to a token server on its own host
// only: one it names elsewhere is asked without them.
func TestPlainHTTPRealmElsewhereGetsNoCredentials(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		host string
		want int
	}{{"127.0.0.1", 1}, {"localhost", 0}} {
		tr := newTokenRegistry(t, "alice", "pa55word-secret")
		tr.realm = strings.Replace(tr.realm, "127.0.0.1", c.host, 1)
		cl := newTestClient(t, tr.reg, func(o *Options) { o.Username, o.Password = "alice", "pa55word-secret" })
		cl.Manifest(context.Background(), "library/alpine", "latest", nil, 1<<20)
		tr.mu.Lock()
		got := tr.basic
		tr.mu.Unlock()
		if got != c.want {
			t.Errorf("realm on %s: %d token requests with credentials, want %d", c.host, got, c.want)
		}
	}
}

// A mirror with credentials whose plain-HTTP registry names a token server
// on another host asks it anonymously (see above), but not silently: its
// operator would otherwise read the 401s of private repositories as wrong
// credentials. One warning per client, naming the realm's host, not one per
// token request.
func TestPlainHTTPRealmElsewhereWarnsOnce(t *testing.T) {
	t.Parallel()
	const secret = "pa55word-secret"
	for _, c := range []struct {
		host  string
		user  string
		warns int
	}{{"localhost", "alice", 1}, {"127.0.0.1", "alice", 0}, {"localhost", "", 0}} {
		tr := newTokenRegistry(t, "", "")
		tr.realm = strings.Replace(tr.realm, "127.0.0.1", c.host, 1)
		logs := &syncbuf.Buffer{}
		cl := newTestClient(t, tr.reg, func(o *Options) {
			if c.user != "" {
				o.Username, o.Password = c.user, secret
			}
			o.Logger = debugLogger(logs)
		})
		for _, repo := range []string{"library/alpine", "library/busybox"} {
			if _, err := cl.Manifest(context.Background(), repo, "latest", nil, 1<<20); err != nil {
				t.Fatalf("realm on %s, user %q: Manifest(%s) error = %v", c.host, c.user, repo, err)
			}
		}
		if got := strings.Count(logs.String(), "level=WARN msg=\"upstream token server over plain HTTP on another host"); got != c.warns {
			t.Errorf("realm on %s, user %q: %d warnings, want %d; log:\n%s", c.host, c.user, got, c.warns, logs.String())
		}
		if c.warns > 0 && !strings.Contains(logs.String(), "realm_host="+c.host) {
			t.Errorf("the warning does not name the realm's host %s:\n%s", c.host, logs.String())
		}
		assertNoSecret(t, "logs", logs.String(), secret)
	}
}

func TestTokenServerErrorIsRetried(t *testing.T) {
	t.Parallel()
	tr := newTokenRegistry(t, "", "")
	var failed counter
	flaky := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failed.add(r) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		tr.serveToken(w, r)
	}))
	tr.realm = flaky.URL + "/token"
	c := newTestClient(t, tr.reg)
	if _, err := c.Manifest(context.Background(), "library/alpine", "latest", nil, 1<<20); err != nil {
		t.Fatalf("Manifest() error = %v", err)
	}
	if got := failed.total(); got != 2 {
		t.Errorf("token requests = %d, want 2", got)
	}
}

// An upstream (or a proxy in front of it) that lists a Basic challenge
// before the Bearer one gets a token: Bearer is preferred whatever the
// order, as containerd and Docker do, not the password by Basic.
func TestBearerPreferredOverBasicListedFirst(t *testing.T) {
	t.Parallel()
	tr := newTokenRegistry(t, "alice", "pa55word-secret")
	tr.basicFirst.Store(true)
	c := newTestClient(t, tr.reg, func(o *Options) { o.Username, o.Password = "alice", "pa55word-secret" })
	if _, err := c.Manifest(context.Background(), "library/alpine", "latest", nil, 1<<20); err != nil {
		t.Fatalf("Manifest() error = %v", err)
	}
	if got := tr.tokens.total(); got != 1 {
		t.Errorf("token server hit %d times, want 1", got)
	}
}

// A token server that redirects the OAuth2 request of an identity token
// (307 and 308 resend the body) elsewhere must not have the refresh token
// sent on: it is a long-lived credential, like a password, which the
// redirect strips from the Authorization header only.
func TestRefreshTokenNotSentOnRedirect(t *testing.T) {
	t.Parallel()
	const refresh = "refresh-token-secret"
	tr := newTokenRegistry(t, "", "")
	tr.refresh = refresh
	var mu sync.Mutex
	var leaked []string
	elsewhere := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		leaked = append(leaked, r.Method+" "+string(b))
		mu.Unlock()
		w.WriteHeader(http.StatusNotFound)
	}))
	for _, code := range []int{http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		realm := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, elsewhere.URL+"/token", code)
		}))
		tr.realm = realm.URL + "/token"
		cfg := filepath.Join(t.TempDir(), "config.json")
		host := strings.TrimPrefix(tr.reg, "http://")
		body := fmt.Sprintf(`{"auths":{%q:{"auth":%q,"identitytoken":%q}}}`, host,
			base64.StdEncoding.EncodeToString([]byte("<token>:")), refresh)
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		c := newTestClient(t, tr.reg, func(o *Options) { o.DockerConfig = cfg })
		c.Manifest(context.Background(), "library/alpine", "latest", nil, 1<<20)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, l := range leaked {
		if strings.Contains(l, refresh) {
			t.Errorf("the redirect target got %q", l)
		}
	}
}

// A token server that answers 404 (a realm URL that is wrong behind a
// reverse proxy) or another status that is neither a refusal of the
// credentials nor an outage says nothing about the image: it must not be
// reported as the upstream's "not found" (which makes the mirror drop or
// refuse a cached tag, and tell devices the image does not exist) nor as
// a bad request from the device. The registry could not be asked:
// unavailable, with the token server's status in the message.
func TestTokenServerFailureIsNotTheUpstreamsAnswer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status int
		want   error
	}{
		{http.StatusNotFound, errdef.ErrUnavailable},
		{http.StatusBadRequest, errdef.ErrUnavailable},
		{http.StatusGone, errdef.ErrUnavailable},
		{http.StatusRequestedRangeNotSatisfiable, errdef.ErrUnavailable},
		{http.StatusBadGateway, errdef.ErrUnavailable},
		{http.StatusUnauthorized, errdef.ErrUnauthorized},
		{http.StatusForbidden, errdef.ErrDenied},
		{http.StatusTooManyRequests, errdef.ErrTooManyRequests},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			t.Parallel()
			tr := newTokenRegistry(t, "", "")
			failing := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				writeError(w, tt.status, "NAME_UNKNOWN", "no such realm")
			}))
			tr.realm = failing.URL + "/token"
			c := newTestClient(t, tr.reg, func(o *Options) { o.RetryMax = 0 })
			_, err := c.Manifest(context.Background(), "library/alpine", "latest", nil, 1<<20)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Manifest() error = %v, want %v", err, tt.want)
			}
			for _, wrong := range []error{errdef.ErrNotFound, errdef.ErrInvalid, errdef.ErrRangeNotSatisfiable} {
				if errors.Is(err, wrong) {
					t.Errorf("Manifest() error = %v, matches %v", err, wrong)
				}
			}
			if !strings.Contains(err.Error(), "token") || !strings.Contains(err.Error(), strconv.Itoa(tt.status)) {
				t.Errorf("Manifest() error = %v, want the token server and its status named", err)
			}
		})
	}
}

// Several auths keys can name one host ("https://ghcr.io", "ghcr.io/",
// podman's per-namespace "ghcr.io/org"). The entry used must not depend on
// Go's map order: the exact host wins, then a key for the whole host, then
// the first namespaced key in sorted order.
func TestParseDockerConfigKeyChoiceIsStable(t *testing.T) {
	t.Parallel()
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name   string
		config string
		want   string // user name
	}{
		{"exact host", `{"auths":{"https://ghcr.io/":{"auth":"` + b64("url:p") + `"},"ghcr.io":{"auth":"` + b64("exact:p") + `"},"ghcr.io/org":{"auth":"` + b64("ns:p") + `"}}}`, "exact"},
		{"whole host before namespace", `{"auths":{"ghcr.io/aaa":{"auth":"` + b64("ns:p") + `"},"https://ghcr.io":{"auth":"` + b64("host:p") + `"},"ghcr.io/zzz":{"auth":"` + b64("ns2:p") + `"}}}`, "host"},
		{"namespaces in sorted order", `{"auths":{"ghcr.io/zzz":{"auth":"` + b64("z:p") + `"},"ghcr.io/aaa":{"auth":"` + b64("a:p") + `"},"ghcr.io/mmm":{"auth":"` + b64("m:p") + `"}}}`, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Map order differs from run to run: ask often enough to see
			// two orders.
			for range 50 {
				got, err := parseDockerConfig([]byte(tt.config), []string{"ghcr.io"})
				if err != nil {
					t.Fatalf("parseDockerConfig() error = %v", err)
				}
				if got.username != tt.want {
					t.Fatalf("parseDockerConfig() user = %q, want %q", got.username, tt.want)
				}
			}
		})
	}
}

// expires_in is optional, and token servers written from an older version
// of the token spec's example send it as a string ("300"); others send a
// fraction. Neither may fail the token exchange (every pull would fail
// with it): a number or a numeric string is the lifetime, anything else
// the spec's default of 60 seconds.
func TestTokenExpiresInLeniency(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		expiresIn string // JSON value
		ttl       time.Duration
	}{
		{"number", `300`, 300 * time.Second},
		{"string", `"300"`, 300 * time.Second},
		{"fraction", `300.5`, 300 * time.Second},
		{"not a number", `"soon"`, defaultTokenTTL},
		{"null", `null`, defaultTokenTTL},
		{"negative", `-5`, defaultTokenTTL},
		{"a day", `86399`, 86399 * time.Second},
		{"a year", `31536000`, maxTokenTTL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var tokens counter
			tokSrv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				tokens.add(r)
				_, _ = fmt.Fprintf(w, `{"token":"tok-lenient-1234","expires_in":%s}`, tt.expiresIn)
			}))
			reg := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Authorization") != "Bearer tok-lenient-1234" {
					w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q`, tokSrv.URL))
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				w.Header().Set("Content-Type", testManifestType)
				_, _ = w.Write(testManifest)
			}))
			c := newTestClient(t, reg.URL)
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			var mu sync.Mutex
			c.auth.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			get := func() {
				t.Helper()
				if _, err := c.Manifest(context.Background(), "a/b", "latest", nil, 1<<20); err != nil {
					t.Fatalf("Manifest() error = %v", err)
				}
			}
			get()
			mu.Lock()
			now = now.Add(tt.ttl * 8 / 10) // within the lifetime, margin included
			mu.Unlock()
			get()
			if got := tokens.total(); got != 1 {
				t.Errorf("token requests = %d within the lifetime, want 1", got)
			}
			mu.Lock()
			now = now.Add(tt.ttl * 2 / 10) // at the end of it
			mu.Unlock()
			get()
			if got := tokens.total(); got != 2 {
				t.Errorf("token requests = %d after the lifetime, want 2", got)
			}
		})
	}
}

// A fill resumed with a Range request after its token was revoked (or
// expired at the registry before the client's clock says so) gets a 401:
// the client fetches a new token and sends the same Range and If-Range
// again, and the fill continues from its offset.
func TestResumedRangeRequestRefreshesToken(t *testing.T) {
	t.Parallel()
	blob := randomBytes(t, 4000)
	d := digest.FromBytes(blob)
	tr := newTokenRegistry(t, "", "")
	var ranges []string
	var mu sync.Mutex
	reg := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		tr.mu.Lock()
		_, valid := tr.valid[tok]
		tr.mu.Unlock()
		if !valid {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="test-registry",scope="repository:a/b:pull"`, tr.realm))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range")+" "+r.Header.Get("If-Range"))
		mu.Unlock()
		w.Header().Set("ETag", `"blob-etag"`)
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(blob)))
	}))
	c := newTestClient(t, reg.URL)
	ctx := context.Background()
	br, err := c.Blob(ctx, "a/b", d, 0, "")
	if err != nil {
		t.Fatalf("Blob() error = %v", err)
	}
	head := make([]byte, 1000)
	if _, err := io.ReadFull(br.Body, head); err != nil {
		t.Fatal(err)
	}
	br.Body.Close() // the link broke here
	tr.revoke()
	br, err = c.Blob(ctx, "a/b", d, 1000, br.ETag)
	if err != nil {
		t.Fatalf("resumed Blob() error = %v", err)
	}
	defer br.Body.Close()
	rest, err := io.ReadAll(br.Body)
	if err != nil {
		t.Fatal(err)
	}
	if br.Offset != 1000 || string(head)+string(rest) != string(blob) {
		t.Fatalf("resumed Blob() = offset %d and %d bytes, want offset 1000 and the rest of the blob", br.Offset, len(rest))
	}
	if got := tr.tokens.total(); got != 2 {
		t.Errorf("token requests = %d, want 2 (one more after the revocation)", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{" ", `bytes=1000- "blob-etag"`}; !cmp.Equal(ranges, want) {
		t.Errorf("authorised requests had Range and If-Range %q, want %q", ranges, want)
	}
}

// Challenge names the scheme the client answers, Bearer before Basic
// whatever their order: serve warns "upstream asks for credentials and
// none are configured" on "basic", which an anonymous mirror of a registry
// (or a proxy in front of it) that lists Basic first, and hands out
// anonymous tokens, must not get.
func TestChallengePrefersBearer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		header []string
		want   string
	}{
		{"basic first", []string{`Basic realm="proxy", Bearer realm="https://auth.example/token",service="s"`}, "bearer"},
		{"basic first in its own header", []string{`Basic realm="proxy"`, `Bearer realm="https://auth.example/token"`}, "bearer"},
		{"basic only", []string{`Basic realm="registry"`}, "basic"},
		{"bearer only", []string{`Bearer realm="https://auth.example/token"`}, "bearer"},
		{"other", []string{`Negotiate`}, "negotiate"},
		{"none", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.header == nil {
					_, _ = w.Write([]byte("{}"))
					return
				}
				w.Header()["Www-Authenticate"] = tt.header
				w.WriteHeader(http.StatusUnauthorized)
			}))
			c := newTestClient(t, srv.URL)
			if err := c.Ping(context.Background()); err != nil {
				t.Fatalf("Ping() error = %v", err)
			}
			if got := c.Challenge(); got != tt.want {
				t.Errorf("Challenge() = %q, want %q", got, tt.want)
			}
		})
	}
}

// A token server without the OAuth2 refresh-token grant (404 or 405 to the
// POST) is asked with the GET protocol, in which an identity token has no
// place: anonymously. Not silently: one warning per client.
func TestIdentityTokenNotTakenWarnsOnce(t *testing.T) {
	t.Parallel()
	const refresh = "refresh-token-secret"
	tr := newTokenRegistry(t, "", "")
	noOAuth := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		tr.serveToken(w, r)
	}))
	tr.realm = noOAuth.URL + "/token"
	cfg := filepath.Join(t.TempDir(), "config.json")
	host := strings.TrimPrefix(tr.reg, "http://")
	body := fmt.Sprintf(`{"auths":{%q:{"identitytoken":%q}}}`, host, refresh)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	c := newTestClient(t, tr.reg, func(o *Options) { o.DockerConfig = cfg; o.Logger = debugLogger(logs) })
	for _, repo := range []string{"library/alpine", "library/busybox"} {
		if _, err := c.Manifest(context.Background(), repo, "latest", nil, 1<<20); err != nil {
			t.Fatalf("Manifest(%s) error = %v", repo, err)
		}
	}
	if got := strings.Count(logs.String(), `level=WARN msg="upstream token server does not take the identity token`); got != 1 {
		t.Errorf("%d warnings, want 1; log:\n%s", got, logs.String())
	}
	assertNoSecret(t, "logs", logs.String(), refresh)
}
