package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// errPolicy marks a request this client refuses to make (a redirect to a
// non-HTTP scheme, a downgrade to plain HTTP, a link-local address, a
// token realm over plain HTTP). Such errors are not retried.
var errPolicy = errors.New("refused by client policy")

// maxRedirects bounds redirect chains; registries use one (to object
// storage), CDNs sometimes two.
const maxRedirects = 10

// checkRedirect is the redirect policy of registry and token requests:
// at most maxRedirects hops, http(s) only, no downgrade from an HTTPS
// registry to plain HTTP, and no link-local or unspecified IP literals
// (cloud metadata endpoints). Authorization is never carried to a
// redirect: authTransport adds it only for the registry's own host.
func checkRedirect(req *http.Request, via []*http.Request, registryScheme string) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects: %w", maxRedirects, errPolicy)
	}
	switch req.URL.Scheme {
	case "https":
	case "http":
		if registryScheme != "http" {
			return fmt.Errorf("redirect from https to http: %w", errPolicy)
		}
	default:
		return fmt.Errorf("redirect to scheme %q: %w", req.URL.Scheme, errPolicy)
	}
	if addr, err := netip.ParseAddr(req.URL.Hostname()); err == nil && blockedAddr(addr) {
		return fmt.Errorf("redirect to address %s: %w", addr, errPolicy)
	}
	return nil
}

// blockedAddr reports addresses no registry traffic should reach: the
// link-local ranges (which hold cloud instance-metadata services such as
// 169.254.169.254) and the unspecified and multicast addresses. Loopback and
// private ranges stay allowed: mirrors and their object stores often live
// on private networks.
func blockedAddr(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() ||
		a.IsMulticast() || a.IsUnspecified()
}

// dialControl refuses connections to blocked addresses, whatever name
// resolved to them (this covers redirects and token realms given by
// name). The registry's own address is allowed if it is an IP literal
// in a blocked range, because then the operator asked for it.
func dialControl(allow netip.Addr) func(network, address string, _ syscall.RawConn) error {
	return func(_, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return nil
		}
		a, err := netip.ParseAddr(host)
		if err != nil || a.WithZone("") == allow.WithZone("") {
			return nil
		}
		if blockedAddr(a) {
			return fmt.Errorf("connect to %s: %w", a, errPolicy)
		}
		return nil
	}
}

// newBaseTransport returns the tuned transport used when Options.Transport
// is nil: proxy from the environment, HTTP/2 when the server offers it,
// keep-alive pools sized for a mirror that talks to few hosts a lot,
// bounded connect, TLS handshake and response-header waits, and TLS
// verification on unless disabled explicitly.
func newBaseTransport(o Options, registryAddr netip.Addr) (*http.Transport, error) {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.InsecureSkipVerify} //nolint:gosec // opt-in, documented
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca file %s: no PEM certificates: %w", o.CAFile, errdef.ErrInvalid)
		}
		tlsConf.RootCAs = pool
	}
	dialer := &net.Dialer{
		Timeout:   o.ConnectTimeout,
		KeepAlive: 30 * time.Second,
		Control:   dialControl(registryAddr),
	}
	return &http.Transport{
		Proxy:             http.ProxyFromEnvironment,
		DialContext:       dialer.DialContext,
		TLSClientConfig:   tlsConf,
		ForceAttemptHTTP2: true,
		// Bytes are content-addressed: what arrives is what is hashed
		// and stored, with the size the upstream states. Go's transparent
		// gzip would hand over bytes of another size (without one, for a
		// body that inflates without bound) and cannot resume by Range.
		DisableCompression:    true,
		TLSHandshakeTimeout:   o.ConnectTimeout,
		ResponseHeaderTimeout: o.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		// An HTTP/2 connection that went silent (a cellular link whose
		// carrier NAT dropped it during an outage) is closed once a ping
		// goes unanswered. Without it the pool kept it after each
		// response-header timeout and sent every later request, and
		// every probe of the breaker, into it: a mirror whose link was
		// back stayed offline until the kernel gave up on the connection
		// (about 15 minutes). Pings go only after the connection has been
		// silent for ResponseHeaderTimeout, so an idle edge sends a few
		// before IdleConnTimeout closes it, and nothing after.
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: o.ResponseHeaderTimeout,
			PingTimeout:     o.ConnectTimeout,
		},
	}, nil
}
