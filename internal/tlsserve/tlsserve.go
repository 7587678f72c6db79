// Package tlsserve builds the TLS configuration of the registry listener:
// a certificate and key read from files and reloaded when they change (so
// a renewed certificate is picked up without a restart), HTTP/2, and
// optional client certificates (mTLS) checked against a CA bundle.
// Server.Reload reads the certificate, key and bundle again at once (the
// mirror's SIGHUP), Server.ErrorLog turns refused handshakes into warnings
// naming the client (rate-limited), and a certificate close to its expiry
// is warned about.
package tlsserve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/logging"
)

// ClientAuth says what the listener asks of clients.
type ClientAuth string

const (
	// ClientAuthNone asks for no client certificate.
	ClientAuthNone ClientAuth = "none"
	// ClientAuthVerifyIfGiven verifies a certificate when the client sends
	// one; clients without one are served (anonymous access rules apply).
	ClientAuthVerifyIfGiven ClientAuth = "verify-if-given"
	// ClientAuthRequire refuses clients without a valid certificate.
	ClientAuthRequire ClientAuth = "require"
)

// Options configures New (and Config).
type Options struct {
	CertFile, KeyFile string
	// ClientCAFile is a PEM bundle of the CAs that sign client
	// certificates; required unless ClientAuth is none.
	ClientCAFile string
	ClientAuth   ClientAuth
	// CheckEvery bounds how often the files are checked for changes
	// (default 10s); Now is the clock (default time.Now).
	CheckEvery time.Duration
	Now        func() time.Time
	Logger     *slog.Logger
}

// Server is the TLS side of the registry listener.
type Server struct {
	r   *reloader
	cfg *tls.Config
}

// New loads o's certificate, key and client CA bundle. It fails, naming
// the setting (tls.certFile, ...), if one of them cannot be loaded now.
func New(o Options) (*Server, error) {
	if o.CheckEvery <= 0 {
		o.CheckEvery = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	var mode tls.ClientAuthType
	switch o.ClientAuth {
	case "", ClientAuthNone:
		mode = tls.NoClientCert
	case ClientAuthVerifyIfGiven:
		mode = tls.VerifyClientCertIfGiven
	case ClientAuthRequire:
		mode = tls.RequireAndVerifyClientCert
	default:
		return nil, fmt.Errorf("tls.clientAuth %q: want none, verify-if-given or require: %w", o.ClientAuth, errdef.ErrInvalid)
	}
	r := &reloader{o: o}
	l, err := r.read()
	if err != nil {
		return nil, err
	}
	r.apply(l)
	r.warnExpiry(o.Now())
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.get,
		NextProtos:     []string{"h2", "http/1.1"},
		ClientAuth:     mode,
		ClientCAs:      l.clientCAs,
	}
	if mode != tls.NoClientCert {
		// Each handshake verifies against the bundle in force, which
		// Reload may have replaced.
		base := cfg.Clone()
		cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := base.Clone()
			c.ClientCAs = r.clientCAs()
			return c, nil
		}
	}
	return &Server{r: r, cfg: cfg}, nil
}

// Config returns a TLS configuration serving o's certificate (New's, for
// a caller that never reloads).
func Config(o Options) (*tls.Config, error) {
	s, err := New(o)
	if err != nil {
		return nil, err
	}
	return s.Config(), nil
}

// Config is the listener's TLS configuration.
func (s *Server) Config() *tls.Config { return s.cfg }

// Reload reads the certificate, key and client CA bundle again now (a
// SIGHUP after a renewal or a CA rotation need not wait for the next
// check). If one of them does not load, nothing changes and the error
// names it.
func (s *Server) Reload() error {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	l, err := s.r.read()
	if err != nil {
		return err
	}
	s.r.apply(l)
	s.r.checked = s.r.o.Now()
	s.r.warned = time.Time{}
	s.r.warnExpiry(s.r.checked)
	return nil
}

// reloader serves the certificate and reloads it when its files change.
type reloader struct {
	o Options

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   [2]time.Time // mod times of cert and key when loaded
	checked time.Time
	pool    *x509.CertPool // client CAs; nil without client certificates
	warned  time.Time      // last warning that the certificate expires
}

// expiryWarning is how long before its expiry the served certificate is
// warned about (at most once a day): a renewal that fails (certbot's timer
// broken, cert-manager's issuer gone) shows in the log while there is
// time, not as every device refusing the mirror. Let's Encrypt renews 30
// days ahead.
const expiryWarning = 14 * 24 * time.Hour

// warnExpiry warns when the served certificate expires within
// expiryWarning; r.mu is held.
func (r *reloader) warnExpiry(now time.Time) {
	leaf := r.cert.Leaf
	if leaf == nil || leaf.NotAfter.Sub(now) > expiryWarning || now.Sub(r.warned) < 24*time.Hour {
		return
	}
	r.warned = now
	msg := "TLS certificate expires soon; renew it"
	if !now.Before(leaf.NotAfter) {
		msg = "TLS certificate has expired; clients refuse the mirror until it is renewed"
	}
	r.o.Logger.Warn(msg, slog.String("cert", r.o.CertFile), slog.Time("not_after", leaf.NotAfter))
}

// loaded is what the files held when read.
type loaded struct {
	cert      *tls.Certificate
	stamp     [2]time.Time
	clientCAs *x509.CertPool
}

// read loads the files without changing what is served.
func (r *reloader) read() (loaded, error) {
	cert, stamp, err := r.readPair()
	if err != nil {
		return loaded{}, err
	}
	pool, err := r.readClientCAs()
	if err != nil {
		return loaded{}, err
	}
	return loaded{cert: cert, stamp: stamp, clientCAs: pool}, nil
}

// readPair loads the certificate and its key, with their mod times.
func (r *reloader) readPair() (*tls.Certificate, [2]time.Time, error) {
	stamp, err := r.stamps()
	if err != nil {
		return nil, stamp, err
	}
	certPEM, err := os.ReadFile(r.o.CertFile)
	if err != nil {
		return nil, stamp, fmt.Errorf("tls.certFile: %w", err)
	}
	keyPEM, err := os.ReadFile(r.o.KeyFile)
	if err != nil {
		return nil, stamp, fmt.Errorf("tls.keyFile: %w", err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, stamp, fmt.Errorf("tls.certFile %s, tls.keyFile %s: %w", r.o.CertFile, r.o.KeyFile, err)
	}
	return &c, stamp, nil
}

// readClientCAs loads the client CA bundle; nil without client
// certificates.
func (r *reloader) readClientCAs() (*x509.CertPool, error) {
	if r.o.ClientAuth == "" || r.o.ClientAuth == ClientAuthNone {
		return nil, nil
	}
	pem, err := os.ReadFile(r.o.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("tls.clientCAFile: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls.clientCAFile %s: no PEM certificate in it: %w", r.o.ClientCAFile, errdef.ErrInvalid)
	}
	return pool, nil
}

func (r *reloader) apply(l loaded) {
	r.cert, r.stamp, r.pool = l.cert, l.stamp, l.clientCAs
}

func (r *reloader) clientCAs() *x509.CertPool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pool
}

func (r *reloader) stamps() ([2]time.Time, error) {
	var out [2]time.Time
	for i, f := range []string{r.o.CertFile, r.o.KeyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return out, fmt.Errorf("tls.%s: %w", [2]string{"certFile", "keyFile"}[i], err)
		}
		out[i] = fi.ModTime()
	}
	return out, nil
}

// get returns the current certificate, reloading it first when the files
// changed. A new pair that fails to load is logged and the old one kept.
// The client CA bundle is left to Reload: a bundle caught half-written
// would refuse devices.
func (r *reloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.o.Now()
	if now.Sub(r.checked) >= r.o.CheckEvery {
		r.checked = now
		if stamp, err := r.stamps(); err == nil && stamp != r.stamp {
			if c, stamp, err := r.readPair(); err != nil {
				r.o.Logger.Error("TLS certificate changed but does not load; serving the previous one", slog.Any("err", err))
			} else {
				r.cert, r.stamp = c, stamp
				r.warned = time.Time{}
				r.o.Logger.Info("TLS certificate reloaded", slog.String("cert", r.o.CertFile))
			}
		}
		r.warnExpiry(now)
	}
	return r.cert, nil
}

// ErrorLog is the http.Server ErrorLog of the listener. A handshake
// refused over a certificate is a warning naming the client: a device
// whose certificate the client CA bundle does not verify (or that sends
// none where one is required) would otherwise fail its pulls with nothing
// in the log at the default level, and so would a client that does not
// trust the mirror's certificate (a renewal by another CA). Such a device
// retries every few seconds, forever, so the same refusal of the same
// client address is a warning once per refusalEvery, carrying the count
// of those left out, which are debug lines. Other lines, connections that
// close during the handshake (probes, scanners) among them, stay at debug.
func (s *Server) ErrorLog() *log.Logger {
	return log.New(errorLog{l: s.r.o.Logger, limit: logging.NewLimiter(refusalEvery, s.r.o.Now)}, "", 0)
}

// refusalEvery is how often one refusal of one client is logged: a broken
// device shows within minutes of a look at the log, and costs some 150
// lines a day rather than one every few seconds.
const refusalEvery = 10 * time.Minute

type errorLog struct {
	l     *slog.Logger
	limit *logging.Limiter
}

// handshakePrefix starts net/http's line for a failed handshake:
// "http: TLS handshake error from <addr>: <reason>".
const handshakePrefix = "http: TLS handshake error from "

func (e errorLog) Write(p []byte) (int, error) {
	line := strings.TrimSuffix(string(p), "\n")
	addr, reason, ok := strings.Cut(strings.TrimPrefix(line, handshakePrefix), ": ")
	if !strings.HasPrefix(line, handshakePrefix) || !ok || !strings.Contains(reason, "certificate") {
		e.l.Log(context.Background(), slog.LevelDebug, line)
		return len(p), nil
	}
	msg := "TLS client certificate refused"
	if strings.HasPrefix(reason, "remote error: ") {
		// The alert the client sent: it refused the mirror's certificate.
		msg = "TLS client refused the mirror's certificate"
	}
	attrs := []slog.Attr{slog.String("remote", addr), slog.String("err", reason)}
	more, ok := e.limit.Allow(refusalKey(msg, addr, reason))
	if !ok {
		e.l.LogAttrs(context.Background(), slog.LevelDebug, msg, attrs...)
		return len(p), nil
	}
	e.l.LogAttrs(context.Background(), slog.LevelWarn, msg, append(attrs, more...)...)
	return len(p), nil
}

// refusalKey identifies a refusal of a client however often it recurs:
// the client's address without its port (each retry comes from another),
// and the reason without its digits, since the reason for an expired
// certificate names the current time ("x509: certificate has expired or
// is not yet valid: current time 2026-...").
func refusalKey(msg, addr, reason string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if a, err := netip.ParseAddr(host); err == nil {
		host = a.Unmap().WithZone("").String()
	}
	reason = strings.Map(func(r rune) rune {
		if '0' <= r && r <= '9' {
			return -1
		}
		return r
	}, reason)
	return msg + "\x00" + host + "\x00" + reason
}
