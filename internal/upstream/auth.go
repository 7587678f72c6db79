package upstream

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// credentials are what the client presents to the registry and its token
// server. At most one of (username, password), identityToken and
// registryToken is normally set.
type credentials struct {
	username, password string
	// identityToken is an OAuth2 refresh token (docker login with an
	// identity provider); it is exchanged at the token server with
	// grant_type=refresh_token.
	identityToken string
	// registryToken is a bearer token sent to the registry as it is.
	registryToken string
}

func (c credentials) basic() bool { return c.username != "" || c.password != "" }

// reqInfo travels in a request's context from the Client to authTransport.
type reqInfo struct {
	scope  string // "repository:<repo>:pull", or "" for /v2/
	noAuth bool   // send without credentials (ping)
	// login sends Basic credentials even before the registry has asked
	// for them (CheckCredentials): a registry that lets anonymous clients
	// read /v2/ still says whether it accepts them.
	login bool
}

type reqInfoKey struct{}

func withReqInfo(ctx context.Context, ri reqInfo) context.Context {
	return context.WithValue(ctx, reqInfoKey{}, ri)
}

func reqInfoFrom(ctx context.Context) reqInfo {
	ri, _ := ctx.Value(reqInfoKey{}).(reqInfo)
	return ri
}

// Token lifetimes (https://distribution.github.io/distribution/spec/auth/token/):
// a token without expires_in is valid for 60 seconds. A token is used until
// 90% of its lifetime so that it does not expire in flight.
const (
	defaultTokenTTL = 60 * time.Second
	maxTokenTTL     = 24 * time.Hour
	maxTokenBody    = 1 << 20 // token responses are a few KiB; JWTs with many claims stay far below
	maxTokens       = 4096    // cached scopes; expired entries are swept first
	tokenTimeout    = 30 * time.Second
)

type token struct {
	value   string
	expires time.Time
}

// tokenError is a failure of the token server (status != 0) or of the
// token exchange itself.
type tokenError struct {
	status     int
	codes      []string
	message    string
	retryAfter time.Duration
	err        error
}

func (e *tokenError) Error() string {
	if e.status != 0 {
		return fmt.Sprintf("token server: status %d", e.status)
	}
	return "token server: " + e.err.Error()
}

func (e *tokenError) Unwrap() error { return e.err }

// authTransport authenticates requests to one registry host: anonymous,
// HTTP basic, or bearer tokens obtained from the realm of the registry's
// WWW-Authenticate challenge and cached per scope until they expire. It
// learns the challenge from the first 401 and then authenticates
// pre-emptively. A 401 on an authenticated request drops the cached token
// and retries the request once with a fresh one.
//
// Requests to any other host (redirects to object storage or a CDN) pass
// through without an Authorization header. authTransport is safe for
// concurrent use; concurrent requests for one scope share one token fetch.
type authTransport struct {
	base     http.RoundTripper
	scheme   string // "http" or "https" of the registry
	host     string // canonical host:port of the registry
	creds    credentials
	ua       string
	log      *slog.Logger
	now      func() time.Time
	tokenCli *http.Client

	mu     sync.Mutex
	chal   *challenge       // learned challenge, nil until the first 401
	asked  string           // preferred scheme of the last challenge seen, usable or not
	tokens map[string]token // scope → token
	fetch  singleflight.Group
	// withheld is set once the credentials were withheld from a
	// plain-HTTP token server on another host (and that was logged).
	withheld atomic.Bool
	// noOAuth is set once the token server refused the identity token's
	// OAuth2 request with 404 or 405 (and that was logged).
	noOAuth atomic.Bool
}

func newAuthTransport(base http.RoundTripper, u *url.URL, creds credentials, ua string, log *slog.Logger) *authTransport {
	t := &authTransport{
		base:   base,
		scheme: u.Scheme,
		host:   canonicalHost(u.Scheme, u.Host),
		creds:  creds,
		ua:     ua,
		log:    log,
		now:    time.Now,
		tokens: map[string]token{},
	}
	t.tokenCli = &http.Client{Transport: base, CheckRedirect: t.checkRealmRedirect}
	return t
}

// canonicalHost returns host with its scheme's default port made explicit
// and lower-cased, so that "Example.com" and "example.com:443" compare
// equal.
func canonicalHost(scheme, host string) string {
	host = strings.ToLower(host)
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	port := "443"
	if scheme == "http" {
		port = "80"
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}

// sameRegistry reports whether u addresses the registry itself (same scheme
// and host:port); only such requests carry credentials.
func (t *authTransport) sameRegistry(u *url.URL) bool {
	return u.Scheme == t.scheme && canonicalHost(u.Scheme, u.Host) == t.host
}

// RoundTrip implements http.RoundTripper.
func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.sameRegistry(req.URL) {
		r := req.Clone(req.Context())
		r.Header.Del("Authorization")
		return t.base.RoundTrip(r)
	}
	ri := reqInfoFrom(req.Context())
	if ri.noAuth {
		resp, err := t.base.RoundTrip(req)
		if err == nil && resp.StatusCode == http.StatusUnauthorized {
			t.learn(parseChallenges(resp.Header.Values("WWW-Authenticate")))
		}
		return resp, err
	}

	r := req.Clone(req.Context())
	sent, err := t.authorize(r, ri.scope)
	if err != nil {
		return nil, err
	}
	if sent == "" && ri.login && t.creds.basic() {
		r.SetBasicAuth(t.creds.username, t.creds.password)
		sent = "basic"
	}
	resp, err := t.base.RoundTrip(r)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	chs := parseChallenges(resp.Header.Values("WWW-Authenticate"))
	if !t.learn(chs) {
		return resp, nil
	}
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return resp, nil // cannot resend
	}
	if sent != "" {
		t.forget(ri.scope, sent)
	}
	r = req.Clone(req.Context())
	if req.GetBody != nil {
		if r.Body, err = req.GetBody(); err != nil {
			return resp, nil
		}
	}
	again, err := t.authorize(r, scopeFromChallenge(chs, ri.scope))
	if err != nil {
		drain(resp.Body)
		return nil, err
	}
	if again == "" || again == sent {
		// Nothing new to present: the 401 stands.
		return resp, nil
	}
	drain(resp.Body)
	return t.base.RoundTrip(r)
}

// learn records the usable challenge of chs, Bearer before Basic whatever
// their order (as containerd and Docker choose: an upstream, or a proxy in
// front of it, may list Basic first and take only tokens), and reports
// whether there is one this transport can answer.
func (t *authTransport) learn(chs []challenge) bool {
	chs = slices.Clone(chs)
	slices.SortStableFunc(chs, func(a, b challenge) int {
		return cmp.Compare(schemeRank(a.scheme), schemeRank(b.scheme))
	})
	if len(chs) > 0 {
		// The scheme answered, not the one listed first: Challenge
		// reports it.
		t.mu.Lock()
		t.asked = chs[0].scheme
		t.mu.Unlock()
	}
	for _, ch := range chs {
		switch ch.scheme {
		case "bearer":
			if ch.params["realm"] == "" {
				continue
			}
			c := challenge{scheme: "bearer", params: map[string]string{
				"realm": ch.params["realm"], "service": ch.params["service"],
			}}
			t.mu.Lock()
			if t.chal == nil || t.chal.scheme != "bearer" || t.chal.params["realm"] != c.params["realm"] ||
				t.chal.params["service"] != c.params["service"] {
				t.chal = &c
				clear(t.tokens)
			}
			t.mu.Unlock()
			return true
		case "basic":
			if !t.creds.basic() {
				continue
			}
			t.mu.Lock()
			t.chal = &challenge{scheme: "basic"}
			t.mu.Unlock()
			return true
		}
	}
	return false
}

// schemeRank orders challenge schemes by preference: Bearer first.
func schemeRank(scheme string) int {
	if scheme == "bearer" {
		return 0
	}
	return 1
}

// scopeFromChallenge returns the scope a Bearer challenge asks for, or
// fallback. Registries name the exact scope they need in the challenge.
func scopeFromChallenge(chs []challenge, fallback string) string {
	for _, ch := range chs {
		if ch.scheme == "bearer" {
			if s := ch.params["scope"]; s != "" {
				return s
			}
		}
	}
	return fallback
}

// authorize sets r's Authorization header from the learned challenge
// (fetching a token for scope if none is cached) and returns the credential
// it sent, "" if none.
func (t *authTransport) authorize(r *http.Request, scope string) (string, error) {
	r.Header.Del("Authorization")
	if t.creds.registryToken != "" {
		r.Header.Set("Authorization", "Bearer "+t.creds.registryToken)
		return t.creds.registryToken, nil
	}
	t.mu.Lock()
	ch := t.chal
	t.mu.Unlock()
	if ch == nil {
		return "", nil
	}
	switch ch.scheme {
	case "basic":
		r.SetBasicAuth(t.creds.username, t.creds.password)
		return "basic", nil
	case "bearer":
		tok, err := t.token(r.Context(), *ch, scope)
		if err != nil {
			return "", err
		}
		r.Header.Set("Authorization", "Bearer "+tok)
		return tok, nil
	}
	return "", nil
}

// forget drops the cached token for scope if it is still sent.
func (t *authTransport) forget(scope, sent string) {
	t.mu.Lock()
	if tok, ok := t.tokens[scope]; ok && tok.value == sent {
		delete(t.tokens, scope)
	}
	t.mu.Unlock()
}

// token returns a valid token for scope, fetching one if needed. Concurrent
// callers for one scope share a fetch, which is detached from any one
// caller's cancellation.
func (t *authTransport) token(ctx context.Context, ch challenge, scope string) (string, error) {
	t.mu.Lock()
	tok, ok := t.tokens[scope]
	t.mu.Unlock()
	if ok && t.now().Before(tok.expires) {
		return tok.value, nil
	}
	key := ch.params["realm"] + "\x00" + ch.params["service"] + "\x00" + scope
	res := t.fetch.DoChan(key, func() (any, error) {
		// A fetch that finished just before this one started has stored
		// the token already.
		t.mu.Lock()
		tok, ok := t.tokens[scope]
		t.mu.Unlock()
		if ok && t.now().Before(tok.expires) {
			return tok.value, nil
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tokenTimeout)
		defer cancel()
		tok, err := t.fetchToken(fctx, ch, scope)
		if err != nil {
			return "", err
		}
		t.store(scope, tok)
		return tok.value, nil
	})
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case r := <-res:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(string), nil
	}
}

func (t *authTransport) store(scope string, tok token) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.tokens) >= maxTokens {
		now := t.now()
		for k, v := range t.tokens {
			if !now.Before(v.expires) {
				delete(t.tokens, k)
			}
		}
		for k := range t.tokens {
			if len(t.tokens) < maxTokens {
				break
			}
			delete(t.tokens, k)
		}
	}
	t.tokens[scope] = tok
}

// fetchToken asks the realm for a token for scope: with an identity token,
// the OAuth2 refresh-token grant (POST), falling back to the GET token
// protocol if the server does not implement OAuth2; otherwise GET with
// basic credentials if there are any, else anonymously.
//
// References:
//   - https://distribution.github.io/distribution/spec/auth/token/
//   - https://distribution.github.io/distribution/spec/auth/oauth/
func (t *authTransport) fetchToken(ctx context.Context, ch challenge, scope string) (token, error) {
	realm, err := url.Parse(ch.params["realm"])
	if err != nil || realm.Host == "" {
		return token{}, &tokenError{err: fmt.Errorf("invalid realm: %w", errPolicy)}
	}
	switch {
	case realm.Scheme == "https":
	case realm.Scheme == "http" && t.scheme == "http":
		// A plain-HTTP registry may use a plain-HTTP token server.
	default:
		return token{}, &tokenError{err: fmt.Errorf("realm scheme %q refused for a %s registry: %w", realm.Scheme, t.scheme, errPolicy)}
	}
	// The registry's credentials go to its token server over HTTPS, or in
	// clear text to the registry's own host only: a plain-HTTP registry
	// (or whoever answers in its name) must not send them across the
	// network to a host it names.
	creds := t.creds
	if realm.Scheme != "https" && !strings.EqualFold(realm.Hostname(), t.hostname()) {
		if creds != (credentials{}) && !t.withheld.Swap(true) {
			// Not silently: the 401s of private repositories would
			// read as wrong credentials.
			t.log.LogAttrs(ctx, slog.LevelWarn, "upstream token server over plain HTTP on another host; the mirror's credentials are not sent to it, tokens are asked for anonymously",
				slog.String("realm_host", realm.Host))
		}
		creds = credentials{}
	}
	if creds.identityToken != "" {
		tok, err := t.tokenRequest(ctx, t.oauthRequest(ctx, realm, ch, scope))
		var te *tokenError
		if err == nil || !errors.As(err, &te) || (te.status != http.StatusNotFound && te.status != http.StatusMethodNotAllowed) {
			return tok, err
		}
		if !creds.basic() && !t.noOAuth.Swap(true) {
			t.log.LogAttrs(ctx, slog.LevelWarn, "upstream token server does not take the identity token (no OAuth2 refresh-token grant); tokens are asked for anonymously",
				slog.String("realm_host", realm.Host), slog.Int("status", te.status))
		}
	}
	q := realm.Query()
	if ch.params["service"] != "" {
		q.Set("service", ch.params["service"])
	}
	if scope != "" {
		q.Set("scope", scope)
	}
	u := *realm
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return token{}, &tokenError{err: errPolicy}
	}
	if creds.basic() {
		req.SetBasicAuth(creds.username, creds.password)
	}
	return t.tokenRequest(ctx, req)
}

// hostname is the registry's host name, without its port.
func (t *authTransport) hostname() string {
	h, _, err := net.SplitHostPort(t.host)
	if err != nil {
		return t.host
	}
	return h
}

func (t *authTransport) oauthRequest(ctx context.Context, realm *url.URL, ch challenge, scope string) *http.Request {
	form := url.Values{}
	form.Set("grant_type", "refresh_token")
	form.Set("refresh_token", t.creds.identityToken)
	form.Set("client_id", "registry-edge")
	if ch.params["service"] != "" {
		form.Set("service", ch.params["service"])
	}
	if scope != "" {
		form.Set("scope", scope)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, realm.String(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

func (t *authTransport) tokenRequest(ctx context.Context, req *http.Request) (token, error) {
	if t.ua != "" {
		req.Header.Set("User-Agent", t.ua)
	}
	start := t.now()
	resp, err := t.tokenCli.Do(req)
	if err != nil {
		return token{}, &tokenError{err: redactError(err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		// The message is kept as sent (at most maxErrorBody), for
		// transportError to scrub before it shortens it.
		codes, msg := decodeErrorBodyRaw(body)
		te := &tokenError{status: resp.StatusCode, codes: codes, message: msg}
		te.retryAfter, _ = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		return token{}, te
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBody+1))
	if err != nil {
		return token{}, &tokenError{err: redactError(err)}
	}
	if len(body) > maxTokenBody {
		return token{}, &tokenError{err: errors.New("token response too large")}
	}
	var tr struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		// ExpiresIn is a number by the spec; some token servers send it
		// as a string, which must not fail the exchange.
		ExpiresIn json.RawMessage `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &tr); err != nil {
		return token{}, &tokenError{err: errors.New("token response is not JSON")}
	}
	value := tr.Token
	if value == "" {
		value = tr.AccessToken
	}
	if value == "" {
		return token{}, &tokenError{err: errors.New("token response has no token")}
	}
	ttl := defaultTokenTTL
	if n, ok := expiresIn(tr.ExpiresIn); ok && n > 0 {
		// A lifetime of days (some servers give a year) is taken as one
		// day: a token revoked upstream is then asked for again within
		// a day at the latest, not fetched again every minute.
		ttl = min(time.Duration(n)*time.Second, maxTokenTTL)
	}
	t.log.LogAttrs(ctx, slog.LevelDebug, "upstream token issued",
		slog.String("scope", scopeFromReq(req)), slog.Duration("ttl", ttl))
	// Issued-at is measured from before the request, with a 10% margin, so
	// that a token is never presented after it expired.
	return token{value: value, expires: start.Add(ttl - ttl/10)}, nil
}

// expiresIn reads a token response's expires_in: a JSON number (a
// fraction rounded down) or a string holding one. ok is false for anything
// else (absent, null, not a number), which means the default lifetime.
func expiresIn(raw json.RawMessage) (int64, bool) {
	var v any
	if len(raw) == 0 || json.Unmarshal(raw, &v) != nil {
		return 0, false
	}
	var f float64
	switch v := v.(type) {
	case float64:
		f = v
	case string:
		var err error
		if f, err = strconv.ParseFloat(strings.TrimSpace(v), 64); err != nil {
			return 0, false
		}
	default:
		return 0, false
	}
	if math.IsNaN(f) || f < 0 || f > math.MaxInt32 {
		return 0, false
	}
	return int64(f), true
}

func scopeFromReq(req *http.Request) string {
	if req.Method == http.MethodGet {
		return req.URL.Query().Get("scope")
	}
	return ""
}

// checkRealmRedirect bounds redirects of token requests and never forwards
// credentials to another host or over plain HTTP from HTTPS: the
// Authorization header is dropped, and a request whose body goes along (a
// 307 or 308 of the OAuth2 POST, whose form holds the identity token) is
// refused.
func (t *authTransport) checkRealmRedirect(req *http.Request, via []*http.Request) error {
	if err := checkRedirect(req, via, t.scheme); err != nil {
		return err
	}
	if prev := via[len(via)-1]; req.URL.Host != prev.URL.Host || req.URL.Scheme != prev.URL.Scheme {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			return fmt.Errorf("token request redirected to another host with its body: %w", errPolicy)
		}
		req.Header.Del("Authorization")
	}
	return nil
}

// drain reads a little of body so that the connection can be reused, and
// closes it.
func drain(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 4096))
	_ = body.Close()
}

// scrub replaces the cached tokens in s.
func (t *authTransport) scrub(s string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, tok := range t.tokens {
		if len(tok.value) >= 4 {
			s = strings.ReplaceAll(s, tok.value, "[redacted]")
		}
	}
	return s
}
