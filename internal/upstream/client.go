// Package upstream is the only part of registry-edge that talks to origin
// registries: OCI distribution-spec registries such as distribution, Docker
// Hub, GHCR or another registry-edge. A *Client serves one upstream
// registry; it authenticates (anonymous, basic, bearer tokens from the
// WWW-Authenticate challenge), retries transient failures with backoff,
// follows blob redirects without leaking credentials, limits what it
// buffers, verifies manifest digests, and reports every failure as an
// *Error that matches an errdef category.
//
// References:
//   - https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md
//   - https://distribution.github.io/distribution/spec/auth/token/
package upstream

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/stall"
)

// Defaults for zero Options durations. Retry settings have no defaults:
// zero RetryMax disables retries and zero waits retry at once, so that a
// configuration can ask for exactly that.
const (
	defaultConnectTimeout        = 5 * time.Second
	defaultResponseHeaderTimeout = 30 * time.Second
	defaultUserAgent             = "registry-edge"
)

// Options configures a Client. The zero value of every field is usable
// except URL.
type Options struct {
	// URL is the registry endpoint, e.g. "https://registry-1.docker.io" or
	// "http://127.0.0.1:5000". Plain HTTP is used only when the URL says
	// http://. A path prefix is kept; userinfo, query and fragment are
	// refused (use Username and Password).
	URL string
	// Username and Password are basic credentials for the registry and its
	// token server. Optional.
	Username, Password string
	// DockerConfig is the path of a Docker config.json whose "auths" entry
	// for the URL's host (or RegistryName; for Docker Hub also
	// "https://index.docker.io/v1/") supplies the credentials. It is read
	// once, by New. Credential helpers are not run. Username and Password
	// take precedence when set.
	DockerConfig string
	// RegistryName names the upstream in errors and logs, e.g. "docker.io";
	// it defaults to the URL's host.
	RegistryName string
	// InsecureSkipVerify turns TLS certificate verification off.
	InsecureSkipVerify bool
	// CAFile is a PEM bundle trusted in addition to the system roots.
	CAFile string
	// ConnectTimeout bounds the TCP connect and the TLS handshake
	// (default 5s). ResponseHeaderTimeout bounds the wait for response
	// headers after the request is sent (default 30s). Neither bounds a
	// body transfer; callers bound those with their context.
	ConnectTimeout, ResponseHeaderTimeout time.Duration
	// RetryMax is the number of retries after the first attempt (0: none)
	// on connection errors other than timeouts, 429 and 5xx other than
	// 501, while the circuit breaker is closed. The wait before
	// retry n (0-based) is drawn uniformly from
	// [RetryMinWait, min(RetryMaxWait, RetryMinWait·2^n)]; a Retry-After
	// on 429/503 replaces it when it is at most MaxRetryAfter, and a longer
	// one ends the request at once with Error.RetryAfter set.
	RetryMax                                  int
	RetryMinWait, RetryMaxWait, MaxRetryAfter time.Duration
	// UserAgent is sent with every request (default "registry-edge").
	UserAgent string
	// Logger receives debug records (retries, token fetches), a warning
	// when the circuit breaker opens and a record when it closes again,
	// and one warning each if the credentials are withheld from a
	// plain-HTTP token server on another host or the token server does not
	// take an identity token; nil discards.
	// The records do not name the upstream: give a logger that does
	// (serve's has upstream=<name>).
	Logger *slog.Logger
	// Transport, if set, replaces the tuned base transport (tests). The
	// timeouts, TLS and address-guard options then do not apply.
	Transport http.RoundTripper
	// Breaker configures the circuit breaker; the zero value disables it.
	Breaker BreakerOptions
	// Now is the clock of the circuit breaker and of Health.LastContact;
	// nil means time.Now.
	Now func() time.Time
}

// Client talks to one upstream registry. It is safe for concurrent use.
type Client struct {
	base     *url.URL
	registry string
	ua       string
	log      *slog.Logger
	auth     *authTransport
	breaker  *breaker
	rc       *retryablehttp.Client
	secrets  []string // scrubbed from upstream messages
	// deltaPeer is set once a response says the upstream is a
	// registry-edge that computes deltas (HeaderDeltas).
	deltaPeer atomic.Bool

	minWait, maxWait, maxRetryAfter time.Duration
	// bodyStall bounds each wait for the next bytes of a body read whole
	// (manifests, tag lists, referrers): ResponseHeaderTimeout.
	bodyStall time.Duration
}

// New returns a Client for the registry at o.URL. It makes no request.
func New(o Options) (*Client, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("upstream url: %w", errdef.ErrInvalid)
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, fmt.Errorf("upstream url: scheme must be http or https: %w", errdef.ErrInvalid)
	case u.Host == "":
		return nil, fmt.Errorf("upstream url: no host: %w", errdef.ErrInvalid)
	case u.User != nil:
		return nil, fmt.Errorf("upstream url: credentials in the URL are not supported, use username and password: %w", errdef.ErrInvalid)
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("upstream url: query and fragment are not allowed: %w", errdef.ErrInvalid)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	if o.RetryMax < 0 || o.RetryMinWait < 0 || o.RetryMaxWait < 0 || o.MaxRetryAfter < 0 ||
		o.ConnectTimeout < 0 || o.ResponseHeaderTimeout < 0 ||
		o.Breaker.Failures < 0 || o.Breaker.MinProbe < 0 || o.Breaker.MaxProbe < 0 {
		return nil, fmt.Errorf("upstream %s: negative retry or timeout setting: %w", u.Host, errdef.ErrInvalid)
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = defaultConnectTimeout
	}
	if o.ResponseHeaderTimeout == 0 {
		o.ResponseHeaderTimeout = defaultResponseHeaderTimeout
	}
	if o.RetryMaxWait < o.RetryMinWait {
		o.RetryMaxWait = o.RetryMinWait
	}
	if o.UserAgent == "" {
		o.UserAgent = defaultUserAgent
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	name := o.RegistryName
	if name == "" {
		name = u.Host
	}

	creds := credentials{username: o.Username, password: o.Password}
	if o.DockerConfig != "" && !creds.basic() {
		creds, err = readDockerConfig(o.DockerConfig, configHosts(u.Host, name))
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", name, err)
		}
	}

	base := o.Transport
	if base == nil {
		addr, _ := netip.ParseAddr(strings.Trim(u.Hostname(), "[]"))
		t, err := newBaseTransport(o, addr)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", name, err)
		}
		base = t
	}

	c := &Client{
		base:          u,
		registry:      name,
		ua:            o.UserAgent,
		log:           log,
		minWait:       o.RetryMinWait,
		maxWait:       o.RetryMaxWait,
		maxRetryAfter: o.MaxRetryAfter,
		bodyStall:     o.ResponseHeaderTimeout,
	}
	if creds.basic() {
		c.secrets = append(c.secrets, base64.StdEncoding.EncodeToString([]byte(creds.username+":"+creds.password)))
	}
	for _, s := range []string{creds.password, creds.identityToken, creds.registryToken} {
		if len(s) >= 4 { // shorter strings would scrub ordinary words
			c.secrets = append(c.secrets, s)
		}
	}
	// The breaker sees each attempt to the registry and its token server
	// (both go through base), below the retries, so that a retry loop
	// stops as soon as the breaker opens. A probe can take a dial, a TLS
	// handshake and a response-header wait.
	c.breaker = newBreaker(o.Breaker, 2*o.ConnectTimeout+o.ResponseHeaderTimeout, o.Now)
	base = &breakerTransport{next: base, b: c.breaker, log: log}
	c.auth = newAuthTransport(base, u, creds, o.UserAgent, log)
	c.rc = &retryablehttp.Client{
		HTTPClient: &http.Client{
			Transport: c.auth,
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				return checkRedirect(req, via, u.Scheme)
			},
		},
		Logger:       nil, // retries are logged by checkRetry, with redaction
		RetryWaitMin: o.RetryMinWait,
		RetryWaitMax: o.RetryMaxWait,
		RetryMax:     o.RetryMax,
		CheckRetry:   c.checkRetry,
		Backoff:      c.backoff,
		// Hand the last response back instead of a "giving up" error, so
		// that the *Error carries the last status.
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
	}
	return c, nil
}

// opInfo names an operation for errors and scopes.
type opInfo struct {
	name, repo, ref string
}

// request describes one registry request.
type request struct {
	method string
	path   string // below /v2/, e.g. "library/alpine/manifests/latest"
	query  url.Values
	accept []string
	header http.Header
	noAuth bool
	login  bool // see reqInfo.login
}

// do sends r with retries and returns the response, whatever its status.
// Transport failures come back as *Error.
func (c *Client) do(ctx context.Context, op opInfo, r request) (*http.Response, error) {
	u := *c.base
	u.Path = c.base.Path + "/v2/" + r.path
	if len(r.query) > 0 {
		u.RawQuery = r.query.Encode()
	}
	ri := reqInfo{noAuth: r.noAuth, login: r.login}
	if op.repo != "" {
		ri.scope = "repository:" + op.repo + ":pull"
	}
	if err := c.breaker.check(); err != nil {
		return nil, c.fail(op, err)
	}
	req, err := retryablehttp.NewRequestWithContext(withReqInfo(ctx, ri), r.method, u.String(), nil)
	if err != nil {
		return nil, c.fail(op, fmt.Errorf("build request: %w", errdef.ErrInvalid))
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if len(r.accept) > 0 {
		req.Header.Set("Accept", strings.Join(r.accept, ", "))
	}
	req.Header.Set("User-Agent", c.ua)
	resp, err := c.rc.Do(req)
	if err != nil {
		if resp != nil {
			drain(resp.Body)
		}
		return nil, c.transportError(op, err)
	}
	if resp.Header.Get(HeaderDeltas) != "" {
		c.deltaPeer.Store(true)
	}
	return resp, nil
}

// checkRetry is the retry policy (see Options.RetryMax). Two rules serve
// offline operation: nothing is retried while the circuit breaker is open
// (the retry would be refused, or would compete with the probe), and a
// timeout is not retried, because it has already spent the whole connect
// or response-header budget (the kernel retransmits a SYN within the
// connect timeout): a retry would only make the caller wait that long
// again on an upstream that is not answering.
func (c *Client) checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if c.breaker.open() {
		return false, nil
	}
	if err != nil {
		if !retryable(err) || isTimeout(err) {
			return false, nil
		}
		c.log.LogAttrs(ctx, slog.LevelDebug, "upstream request failed, retrying", slog.Any("err", redactError(err)))
		return true, nil
	}
	if !retryableStatus(resp.StatusCode) || resp.StatusCode >= 500 && resp.Header.Get(HeaderTierError) != "" {
		return false, nil
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok && d > c.maxRetryAfter {
			return false, nil
		}
	}
	c.log.LogAttrs(ctx, slog.LevelDebug, "upstream request failed, retrying",
		slog.String("path", resp.Request.URL.Path), slog.Int("status", resp.StatusCode))
	return true, nil
}

// backoff returns the wait before retry attemptNum (0-based): Retry-After
// on 429/503 when it is acceptable (checkRetry refused longer ones),
// otherwise full jitter over the exponential window.
func (c *Client) backoff(minWait, maxWait time.Duration, attemptNum int, resp *http.Response) time.Duration {
	if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok && d <= c.maxRetryAfter {
			return d
		}
	}
	return jitterBackoff(minWait, maxWait, attemptNum, rand.Int64N)
}

// jitterBackoff draws uniformly from [minWait, min(maxWait, minWait·2^n)].
// randN(k) must return a value in [0, k).
func jitterBackoff(minWait, maxWait time.Duration, n int, randN func(int64) int64) time.Duration {
	if minWait <= 0 && maxWait <= 0 {
		return 0
	}
	upper := maxWait
	if n < 62 && minWait > 0 && minWait <= maxWait>>uint(n) {
		upper = minWait << uint(n)
	}
	if upper <= minWait {
		return minWait
	}
	return minWait + time.Duration(randN(int64(upper-minWait)+1))
}

// scrub removes the configured secrets and current tokens from s, in case
// an upstream echoes a credential in an error message.
func (c *Client) scrub(s string) string {
	if s == "" {
		return s
	}
	for _, sec := range c.secrets {
		s = strings.ReplaceAll(s, sec, "[redacted]")
	}
	return c.auth.scrub(s)
}

// minBodyRate is the least average rate, in bytes per second, at which a
// body read whole (readAll) must arrive once c.bodyStall has passed: about
// a GPRS link's.
const minBodyRate = 4 << 10

// readAll reads r up to limit bytes. More than limit is an error wrapping
// errdef.ErrTooLarge; at most limit+1 bytes are buffered.
func (c *Client) readAll(body io.ReadCloser, limit int64) ([]byte, error) {
	// A body that stops arriving is closed after c.bodyStall without a
	// byte, which ends the blocked Read, and one that trickles fails once
	// it falls behind minBodyRate: a manifest fetch shared by every
	// client of a tag must not hang them until the fill timeout.
	r := stall.NewReader(body, c.bodyStall)
	start := time.Now()
	var b []byte
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if int64(len(b)+n) > limit {
				return nil, fmt.Errorf("body larger than %d bytes: %w", limit, errdef.ErrTooLarge)
			}
			b = append(b, buf[:n]...)
		}
		if late := time.Since(start) - c.bodyStall; err == nil && late > 0 && float64(len(b)) < late.Seconds()*minBodyRate {
			r.Close() // no draining what is left at that rate
			return nil, fmt.Errorf("body arriving at less than %d KiB/s: %d bytes in %s", minBodyRate>>10, len(b), time.Since(start).Round(time.Millisecond))
		}
		switch {
		case err == io.EOF:
			return b, nil
		case err != nil:
			return nil, err
		}
	}
}
