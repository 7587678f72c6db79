// Package tlsserve builds the TLS configuration of the registry listener:
// a certificate and key read from files and reloaded when they change (so
// a renewed certificate is picked up without a restart), HTTP/2, and
// optional client certificates (mTLS) checked against a CA bundle.
package tlsserve

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/registry-edge/registry-edge/internal/errdef"
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

// Options configures Config.
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

// Config returns a TLS configuration serving o's certificate. It fails if
// the certificate, key or CA bundle cannot be loaded now.
func Config(o Options) (*tls.Config, error) {
	if o.CheckEvery <= 0 {
		o.CheckEvery = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := &reloader{o: o}
	if err := r.load(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.get,
		NextProtos:     []string{"h2", "http/1.1"},
	}
	switch o.ClientAuth {
	case "", ClientAuthNone:
	case ClientAuthVerifyIfGiven, ClientAuthRequire:
		pem, err := os.ReadFile(o.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls client CA %s: no PEM certificate in it: %w", o.ClientCAFile, errdef.ErrInvalid)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if o.ClientAuth == ClientAuthRequire {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	default:
		return nil, fmt.Errorf("tls client auth %q: %w", o.ClientAuth, errdef.ErrInvalid)
	}
	return cfg, nil
}

// reloader serves the certificate and reloads it when its files change.
type reloader struct {
	o Options

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   [2]time.Time // mod times of cert and key when loaded
	checked time.Time
}

func (r *reloader) load() error {
	stamp, err := r.stamps()
	if err != nil {
		return err
	}
	c, err := tls.LoadX509KeyPair(r.o.CertFile, r.o.KeyFile)
	if err != nil {
		return fmt.Errorf("tls certificate: %w", err)
	}
	r.cert, r.stamp = &c, stamp
	return nil
}

func (r *reloader) stamps() ([2]time.Time, error) {
	var out [2]time.Time
	for i, f := range []string{r.o.CertFile, r.o.KeyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return out, fmt.Errorf("tls certificate: %w", err)
		}
		out[i] = fi.ModTime()
	}
	return out, nil
}

// get returns the current certificate, reloading it first when the files
// changed. A new pair that fails to load is logged and the old one kept.
func (r *reloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.o.Now()
	if now.Sub(r.checked) >= r.o.CheckEvery {
		r.checked = now
		if stamp, err := r.stamps(); err == nil && stamp != r.stamp {
			old := r.cert
			if err := r.load(); err != nil {
				r.cert = old
				r.o.Logger.Error("TLS certificate changed but does not load; serving the previous one", slog.Any("err", err))
			} else {
				r.o.Logger.Info("TLS certificate reloaded", slog.String("cert", r.o.CertFile))
			}
		}
	}
	return r.cert, nil
}
