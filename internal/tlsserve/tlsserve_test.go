package tlsserve

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/registry-edge/registry-edge/internal/testutil/certs"
)

func write(t *testing.T, path string, b []byte, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// serve runs an HTTPS server with cfg, the way the mirror does
// (http.Server.ServeTLS with the certificate from cfg).
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{TLSConfig: cfg, ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cn := "-"
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			cn = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		w.Header().Set("X-Client", cn)
	})}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return "https://" + ln.Addr().String()
}

func client(roots *certs.CA, cert, key []byte) *http.Client {
	tc := &tls.Config{RootCAs: roots.Pool()}
	if cert != nil {
		pair, _ := tls.X509KeyPair(cert, key)
		tc.Certificates = []tls.Certificate{pair}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true, DisableKeepAlives: true}}
}

func TestServesAndReloadsCertificate(t *testing.T) {
	dir := t.TempDir()
	serverCA := certs.NewCA(t, "server CA")
	cert, key := serverCA.Server(t, "mirror-1")
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	t0 := time.Now().Add(-time.Minute)
	write(t, certFile, cert, t0)
	write(t, keyFile, key, t0)
	clk := &clock{now: time.Now()}
	cfg, err := Config(Options{CertFile: certFile, KeyFile: keyFile, Now: clk.Now, CheckEvery: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, cfg)
	c := client(serverCA, nil, nil)
	served := func() string {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Proto != "HTTP/2.0" {
			t.Errorf("protocol %s, want HTTP/2.0", resp.Proto)
		}
		return resp.TLS.PeerCertificates[0].Subject.CommonName
	}
	if cn := served(); cn != "mirror-1" {
		t.Fatalf("served %q", cn)
	}

	// A renewed certificate is served once the files changed and the
	// check interval passed.
	cert2, key2 := serverCA.Server(t, "mirror-2")
	write(t, certFile, cert2, t0.Add(10*time.Second))
	write(t, keyFile, key2, t0.Add(10*time.Second))
	clk.add(2 * time.Second)
	if cn := served(); cn != "mirror-2" {
		t.Errorf("after renewal served %q, want mirror-2", cn)
	}

	// A broken pair (cert written, key not yet) keeps the previous one.
	cert3, _ := serverCA.Server(t, "mirror-3")
	write(t, certFile, cert3, t0.Add(20*time.Second))
	clk.add(2 * time.Second)
	if cn := served(); cn != "mirror-2" {
		t.Errorf("with a mismatched pair served %q, want the previous mirror-2", cn)
	}
}

func TestClientCertificates(t *testing.T) {
	dir := t.TempDir()
	serverCA, clientCA, otherCA := certs.NewCA(t, "server CA"), certs.NewCA(t, "device CA"), certs.NewCA(t, "other CA")
	cert, key := serverCA.Server(t, "mirror")
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.pem")
	write(t, certFile, cert, time.Now())
	write(t, keyFile, key, time.Now())
	write(t, caFile, clientCA.PEM, time.Now())
	devCert, devKey := clientCA.Client(t, "device-17")
	strangerCert, strangerKey := otherCA.Client(t, "stranger")
	expiredCert, expiredKey := clientCA.ExpiredClient(t, "device-old")

	for _, tt := range []struct {
		auth      ClientAuth
		cert, key []byte
		want      string // X-Client, or "" for a refused handshake
	}{
		{ClientAuthRequire, devCert, devKey, "device-17"},
		{ClientAuthRequire, nil, nil, ""},
		{ClientAuthRequire, strangerCert, strangerKey, ""},
		{ClientAuthVerifyIfGiven, nil, nil, "-"},
		{ClientAuthRequire, expiredCert, expiredKey, ""},
		{ClientAuthVerifyIfGiven, devCert, devKey, "device-17"},
		{ClientAuthVerifyIfGiven, expiredCert, expiredKey, ""},
		// A certificate from another CA is not sent by a Go client (it is
		// not one the server asks for): the client is anonymous, never
		// "stranger".
		{ClientAuthVerifyIfGiven, strangerCert, strangerKey, "-"},
	} {
		cfg, err := Config(Options{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile, ClientAuth: tt.auth})
		if err != nil {
			t.Fatal(err)
		}
		url := serve(t, cfg)
		resp, err := client(serverCA, tt.cert, tt.key).Get(url)
		switch {
		case tt.want == "" && err == nil:
			resp.Body.Close()
			t.Errorf("%s: a client without a valid certificate was served", tt.auth)
		case tt.want != "" && err != nil:
			t.Errorf("%s: %v", tt.auth, err)
		case tt.want != "":
			resp.Body.Close()
			if got := resp.Header.Get("X-Client"); got != tt.want {
				t.Errorf("%s: client seen as %q, want %q", tt.auth, got, tt.want)
			}
		}
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	serverCA := certs.NewCA(t, "server CA")
	cert, key := serverCA.Server(t, "mirror")
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	write(t, certFile, cert, time.Now())
	write(t, keyFile, key, time.Now())
	notPEM := filepath.Join(dir, "ca.txt")
	write(t, notPEM, []byte("hello"), time.Now())
	for name, o := range map[string]Options{
		"missing cert":      {CertFile: filepath.Join(dir, "none"), KeyFile: keyFile},
		"key for the cert":  {CertFile: certFile, KeyFile: certFile},
		"CA file missing":   {CertFile: certFile, KeyFile: keyFile, ClientAuth: ClientAuthRequire, ClientCAFile: filepath.Join(dir, "none")},
		"CA file not PEM":   {CertFile: certFile, KeyFile: keyFile, ClientAuth: ClientAuthRequire, ClientCAFile: notPEM},
		"unknown auth mode": {CertFile: certFile, KeyFile: keyFile, ClientAuth: "maybe"},
	} {
		if _, err := Config(o); err == nil {
			t.Errorf("%s: Config succeeded", name)
		}
	}
}
