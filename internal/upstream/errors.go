package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// Error is the error every Client method returns. It carries what the
// upstream said (status, OCI error codes, message, Retry-After) and matches
// an errdef category with errors.Is:
//
//	404 → ErrNotFound, 401 → ErrUnauthorized, 403 → ErrDenied,
//	429 → ErrTooManyRequests, 416 → ErrRangeNotSatisfiable,
//	5xx → ErrUnavailable, other 4xx → ErrInvalid.
//
// When Status is 0 the failure did not come from an HTTP status (network
// error, digest mismatch, oversize body, ...) and the category is found in
// Err's chain instead; network failures wrap errdef.ErrUnavailable together
// with their cause.
//
// No field ever holds a credential or a token: URLs in Err are redacted of
// userinfo and signed query parameters, and Message is scrubbed of the
// configured secrets.
type Error struct {
	// Op is the client operation: "manifest", "resolve", "blob",
	// "stat blob", "tags", "referrers", "ping", "login".
	Op string
	// Registry is Options.RegistryName (or the URL's host).
	Registry string
	// Repo is the upstream-side repository name; empty for ping and login.
	Repo string
	// Ref is the tag or digest the operation was about, if any.
	Ref string
	// Status is the HTTP status of the failing response, 0 if none.
	Status int
	// Codes are the OCI error codes of the response body, e.g.
	// "MANIFEST_UNKNOWN".
	Codes []string
	// Message is the first error message of the response body (sanitised
	// and truncated).
	Message string
	// RetryAfter is the upstream's Retry-After, when it sent one.
	RetryAfter time.Duration
	// Err is the cause, if any.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("upstream ")
	b.WriteString(e.Registry)
	b.WriteString(": ")
	b.WriteString(e.Op)
	if e.Repo != "" {
		b.WriteString(" ")
		b.WriteString(e.Repo)
	}
	if e.Ref != "" {
		if strings.Contains(e.Ref, ":") {
			b.WriteString("@")
		} else {
			b.WriteString(":")
		}
		b.WriteString(e.Ref)
	}
	if e.Status != 0 {
		fmt.Fprintf(&b, ": status %d", e.Status)
	}
	if len(e.Codes) > 0 {
		b.WriteString(" ")
		b.WriteString(strings.Join(e.Codes, ","))
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is the errdef category of e's status.
func (e *Error) Is(target error) bool {
	c := statusCategory(e.Status)
	return c != nil && target == c
}

// RetryAfterDuration returns RetryAfter; ociapi.FromError uses it to pass
// the upstream's Retry-After on to clients.
func (e *Error) RetryAfterDuration() time.Duration { return e.RetryAfter }

// UpstreamStatus is the HTTP status the upstream answered (0 if none), for
// ociapi.FromError.
func (e *Error) UpstreamStatus() int { return e.Status }

// statusCategory maps an HTTP error status to its errdef category, nil for
// statuses below 400.
func statusCategory(status int) error {
	switch {
	case status < 400:
		return nil
	case status == http.StatusNotFound:
		return errdef.ErrNotFound
	case status == http.StatusUnauthorized:
		return errdef.ErrUnauthorized
	case status == http.StatusForbidden:
		return errdef.ErrDenied
	case status == http.StatusTooManyRequests:
		return errdef.ErrTooManyRequests
	case status == http.StatusRequestedRangeNotSatisfiable:
		return errdef.ErrRangeNotSatisfiable
	case status >= 500:
		return errdef.ErrUnavailable
	default:
		return errdef.ErrInvalid
	}
}

// maxErrorBody bounds how much of an error response is read (as ggcr's
// transport.CheckError does): error bodies are small, and an upstream must
// not make us buffer an arbitrary amount to report a failure.
const maxErrorBody = 64 << 10

// Bounds of what is kept from an error body, so that a hostile upstream
// cannot make our error strings (and logs) arbitrarily large.
const (
	maxCodes      = 8
	maxCodeLen    = 64
	maxMessageLen = 256
)

// decodeErrorBody extracts the OCI error codes and the first message from
// an error response body. It understands the distribution-spec envelope
// ({"errors":[{"code","message"}]}) and the token-server shapes
// ({"details":...}, {"error","error_description"}). Anything else yields no
// codes and no message. Codes are kept only if they look like codes
// (A-Z, 0-9, _); the message is reduced to printable text.
//
// References:
//   - https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#error-codes
func decodeErrorBody(body []byte) (codes []string, message string) {
	codes, raw := decodeErrorBodyRaw(body)
	return codes, sanitize(raw)
}

// decodeErrorBodyRaw is decodeErrorBody with the message as the upstream
// sent it: secrets are scrubbed from it before sanitize shortens it, which
// would otherwise cut a secret that straddles its limit and leave the
// first part of it where no scrub matches.
func decodeErrorBodyRaw(body []byte) (codes []string, message string) {
	var env struct {
		Errors []struct {
			Code    any `json:"code"`
			Message any `json:"message"`
		} `json:"errors"`
		Details          any `json:"details"`
		Error            any `json:"error"`
		ErrorDescription any `json:"error_description"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, ""
	}
	for _, e := range env.Errors {
		if c, ok := e.Code.(string); ok && validCode(c) && len(codes) < maxCodes {
			codes = append(codes, c)
		}
		if message == "" {
			if m, ok := e.Message.(string); ok && sanitize(m) != "" {
				message = m
			}
		}
	}
	for _, v := range []any{env.Details, env.ErrorDescription, env.Error} {
		if message != "" {
			break
		}
		if m, ok := v.(string); ok && sanitize(m) != "" {
			message = m
		}
	}
	return codes, message
}

func validCode(c string) bool {
	if c == "" || len(c) > maxCodeLen {
		return false
	}
	for i := 0; i < len(c); i++ {
		b := c[i]
		if (b < 'A' || b > 'Z') && (b < '0' || b > '9') && b != '_' {
			return false
		}
	}
	return true
}

// sanitize keeps printable characters of s, collapses whitespace and
// truncates to maxMessageLen bytes on a rune boundary.
func sanitize(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		if r == utf8.RuneError {
			continue
		}
		if unicode.IsSpace(r) {
			space = b.Len() > 0
			continue
		}
		if !unicode.IsPrint(r) {
			continue
		}
		if space {
			if b.Len()+1 > maxMessageLen {
				break
			}
			b.WriteByte(' ')
			space = false
		}
		if b.Len()+utf8.RuneLen(r) > maxMessageLen {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// statusError builds the *Error for a response with an unexpected status.
// It reads the body through maxErrorBody and closes it.
func (c *Client) statusError(op opInfo, resp *http.Response) *Error {
	defer resp.Body.Close()
	e := c.newError(op)
	e.Status = resp.StatusCode
	if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		e.RetryAfter = d
	}
	if resp.Request != nil && resp.Request.Method == http.MethodHead {
		return e
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	codes, msg := decodeErrorBodyRaw(body)
	e.Codes = codes
	e.Message = sanitize(c.scrub(msg))
	return e
}

// newError returns an *Error describing op, with no failure filled in yet.
func (c *Client) newError(op opInfo) *Error {
	return &Error{Op: op.name, Registry: c.registry, Repo: op.repo, Ref: op.ref}
}

// fail returns an *Error for op whose cause is err (which should wrap an
// errdef category).
func (c *Client) fail(op opInfo, err error) *Error {
	e := c.newError(op)
	e.Err = err
	return e
}

// transportError turns an error from the HTTP round trip (after retries)
// into an *Error. A token server's refusal of the credentials (401, 403),
// its rate limit (429) and its server errors keep the token server's
// status. Any other status it answers (404 from a realm that is wrong
// behind a reverse proxy, 400, ...) is not the registry's answer about
// the repository, which was never asked: it is ErrUnavailable, as
// everything else is, with the redacted cause in the chain.
func (c *Client) transportError(op opInfo, err error) *Error {
	var te *tokenError
	if errors.As(err, &te) && te.status != 0 {
		e := c.newError(op)
		e.Message = sanitize(c.scrub(te.message))
		e.RetryAfter = te.retryAfter
		switch s := te.status; {
		case s == http.StatusUnauthorized, s == http.StatusForbidden, s == http.StatusTooManyRequests, s >= 500:
			e.Status = s
			e.Codes = te.codes
			e.Err = errors.New("token request failed")
		default:
			e.Err = fmt.Errorf("token request failed: token server answered status %d: %w", s, errdef.ErrUnavailable)
		}
		return e
	}
	err = redactError(err)
	return c.fail(op, fmt.Errorf("%w: %w", errdef.ErrUnavailable, err))
}

// redactError returns err with the URL of a *url.Error redacted, keeping
// the rest of the chain (so that errors.Is(err, context.Canceled) and
// errors.As(err, *net.OpError) still work).
func redactError(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	// Report a redacted copy; its Err keeps the cause for errors.Is/As.
	cp := *ue
	cp.URL = redactURL(ue.URL)
	return &cp
}

// sensitiveParam reports whether a query parameter may carry a secret:
// tokens, signatures (S3/GCS/Azure signed URLs) and credentials.
func sensitiveParam(name string) bool {
	n := strings.ToLower(name)
	if strings.HasPrefix(n, "x-amz-") || strings.HasPrefix(n, "x-goog-") {
		return true
	}
	for _, s := range []string{"token", "signature", "sig", "credential", "secret", "password", "key", "auth"} {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

// redactURL removes userinfo and the values of sensitive query parameters
// from raw. Unparsable input is replaced entirely.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "[unparsable url]"
	}
	if u.User != nil {
		u.User = url.User("redacted")
	}
	if u.RawQuery != "" {
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			u.RawQuery = "redacted"
		} else {
			changed := false
			for k := range q {
				if sensitiveParam(k) {
					q[k] = []string{"redacted"}
					changed = true
				}
			}
			if changed {
				u.RawQuery = q.Encode()
			}
		}
	}
	return u.String()
}

// retryable reports whether a round-trip error may succeed on a retry:
// connection failures and timeouts yes; certificate problems, refused
// redirects, blocked addresses and cancelled contexts no.
func retryable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, errPolicy) {
		return false
	}
	var te *tokenError
	if errors.As(err, &te) {
		return te.status == 0 || retryableStatus(te.status)
	}
	return !isCertificateError(err)
}

// isCertificateError reports whether err is a TLS certificate or protocol
// mismatch: a configuration problem that neither a retry nor the circuit
// breaker can help with.
func isCertificateError(err error) bool {
	var (
		unknownAuth x509.UnknownAuthorityError // returned as a value by crypto/x509
		hostErr     x509.HostnameError
		certInvalid x509.CertificateInvalidError
		verifyErr   *tls.CertificateVerificationError
		recordErr   tls.RecordHeaderError
	)
	return errors.As(err, &unknownAuth) || errors.As(err, &hostErr) || errors.As(err, &certInvalid) ||
		errors.As(err, &verifyErr) || errors.As(err, &recordErr)
}

// retryableStatus reports whether a response status is worth a retry: 429
// and server errors except 501 Not Implemented.
func retryableStatus(status int) bool {
	return status == http.StatusTooManyRequests || (status >= 500 && status != http.StatusNotImplemented)
}

// parseRetryAfter parses a Retry-After value: delay-seconds or an
// HTTP-date (RFC 9110 section 10.2.3). A date in the past is 0.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		const maxSeconds = int64(1<<63-1) / int64(time.Second)
		if n > maxSeconds {
			n = maxSeconds
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now)
	if d < 0 {
		d = 0
	}
	return d, true
}
