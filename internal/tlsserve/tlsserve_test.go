package tlsserve

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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

// writeServerPair writes a server certificate for cn, signed by ca, and
// its key to tls.crt and tls.key in dir, with modification time mtime.
func writeServerPair(t *testing.T, dir string, ca *certs.CA, cn string, mtime time.Time) (certFile, keyFile string, cert, key []byte) {
	t.Helper()
	cert, key = ca.Server(t, cn)
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	write(t, certFile, cert, mtime)
	write(t, keyFile, key, mtime)
	return certFile, keyFile, cert, key
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
	t0 := time.Now().Add(-time.Minute)
	certFile, keyFile, _, _ := writeServerPair(t, dir, serverCA, "mirror-1", t0)
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
	certFile, keyFile, _, _ := writeServerPair(t, dir, serverCA, "mirror", time.Now())
	notPEM := filepath.Join(dir, "ca.txt")
	write(t, notPEM, []byte("hello"), time.Now())
	other, _ := serverCA.Server(t, "other")
	otherFile := filepath.Join(dir, "other.crt")
	write(t, otherFile, other, time.Now())
	// Each error is one line naming the setting to fix.
	for name, tt := range map[string]struct {
		o    Options
		want string
	}{
		"missing cert":       {Options{CertFile: filepath.Join(dir, "none"), KeyFile: keyFile}, "tls.certFile: stat " + filepath.Join(dir, "none")},
		"missing key":        {Options{CertFile: certFile, KeyFile: filepath.Join(dir, "none")}, "tls.keyFile: stat "},
		"key for the cert":   {Options{CertFile: certFile, KeyFile: certFile}, "tls.certFile " + certFile + ", tls.keyFile " + certFile + ": "},
		"key of another one": {Options{CertFile: otherFile, KeyFile: keyFile}, "private key does not match public key"},
		"CA file missing":    {Options{CertFile: certFile, KeyFile: keyFile, ClientAuth: ClientAuthRequire, ClientCAFile: filepath.Join(dir, "none")}, "tls.clientCAFile: open "},
		"CA file not PEM":    {Options{CertFile: certFile, KeyFile: keyFile, ClientAuth: ClientAuthRequire, ClientCAFile: notPEM}, "tls.clientCAFile " + notPEM + ": no PEM certificate"},
		"unknown auth mode":  {Options{CertFile: certFile, KeyFile: keyFile, ClientAuth: "maybe"}, `tls.clientAuth "maybe"`},
	} {
		_, err := Config(tt.o)
		switch {
		case err == nil:
			t.Errorf("%s: Config succeeded", name)
		case !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n"):
			t.Errorf("%s: %v, want one line with %q", name, err, tt.want)
		}
	}
}

// Reload (SIGHUP) serves a renewed certificate and verifies devices by a
// rotated CA bundle at once, without waiting for the next check of the
// files; a pair that does not load changes nothing, the bundle included.
func TestReloadAppliesTheFilesAtOnce(t *testing.T) {
	dir := t.TempDir()
	serverCA, deviceCA, newDeviceCA := certs.NewCA(t, "server CA"), certs.NewCA(t, "device CA"), certs.NewCA(t, "device CA 2")
	cert, key := serverCA.Server(t, "mirror-1")
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.pem")
	t0 := time.Now().Add(-time.Minute)
	write(t, certFile, cert, t0)
	write(t, keyFile, key, t0)
	write(t, caFile, deviceCA.PEM, t0)
	clk := &clock{now: time.Now()} // never moves: no check of the files is due
	s, err := New(Options{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile, ClientAuth: ClientAuthRequire, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, s.Config())
	oldCert, oldKey := deviceCA.Client(t, "device-old")
	newCert, newKey := newDeviceCA.Client(t, "device-new")
	// served is the server's name seen by a device of (cert, key), or ""
	// when the handshake is refused.
	served := func(cert, key []byte) string {
		t.Helper()
		resp, err := client(serverCA, cert, key).Get(url)
		if err != nil {
			return ""
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].Subject.CommonName
	}
	if got := served(oldCert, oldKey); got != "mirror-1" {
		t.Fatalf("served %q to a device of the CA in force, want mirror-1", got)
	}

	cert2, key2 := serverCA.Server(t, "mirror-2")
	write(t, certFile, cert2, t0.Add(10*time.Second))
	write(t, keyFile, key2, t0.Add(10*time.Second))
	write(t, caFile, newDeviceCA.PEM, t0.Add(10*time.Second))
	if got := served(oldCert, oldKey); got != "mirror-1" {
		t.Fatalf("before the reload, and before a check was due, served %q; want mirror-1 still", got)
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := served(newCert, newKey); got != "mirror-2" {
		t.Errorf("after Reload a device of the new CA got %q, want mirror-2", got)
	}
	if got := served(oldCert, oldKey); got != "" {
		t.Errorf("after Reload a device of the CA taken out of the bundle was served (%q)", got)
	}

	// A new certificate without its key yet, and the old CA back: the
	// reload fails and neither is applied.
	cert3, _ := serverCA.Server(t, "mirror-3")
	write(t, certFile, cert3, t0.Add(20*time.Second))
	write(t, caFile, deviceCA.PEM, t0.Add(20*time.Second))
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), "tls.keyFile") {
		t.Errorf("Reload of a mismatched pair: %v, want an error naming tls.keyFile", err)
	}
	if got := served(newCert, newKey); got != "mirror-2" {
		t.Errorf("after a failed Reload a device of the CA in force got %q, want mirror-2", got)
	}
}

// records is a slog.Handler that hands each record over.
type records chan slog.Record

func (records) Enabled(context.Context, slog.Level) bool        { return true }
func (c records) Handle(_ context.Context, r slog.Record) error { c <- r; return nil }
func (c records) WithAttrs([]slog.Attr) slog.Handler            { return c }
func (c records) WithGroup(string) slog.Handler                 { return c }

// refusingServer is a mirror that requires device certificates of
// deviceCA, on the clock clk, and hands over what it logs.
type refusingServer struct {
	addr                      string
	errorLog                  *log.Logger // the listener's
	serverCA, deviceCA, other *certs.CA
	clk                       *clock
	recs                      records
}

func newRefusingServer(t *testing.T) *refusingServer {
	t.Helper()
	dir := t.TempDir()
	rs := &refusingServer{serverCA: certs.NewCA(t, "server CA"), deviceCA: certs.NewCA(t, "device CA"), other: certs.NewCA(t, "other CA"),
		clk: &clock{now: time.Now()}, recs: make(records, 16)}
	cert, key := rs.serverCA.Server(t, "mirror")
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.pem")
	write(t, certFile, cert, time.Now())
	write(t, keyFile, key, time.Now())
	write(t, caFile, rs.deviceCA.PEM, time.Now())
	s, err := New(Options{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile, ClientAuth: ClientAuthRequire,
		Now: rs.clk.Now, Logger: slog.New(rs.recs)})
	if err != nil {
		t.Fatal(err)
	}
	for len(rs.recs) > 0 {
		<-rs.recs // the test certificate expires within days: a warning, once a day
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rs.errorLog = s.ErrorLog()
	srv := &http.Server{TLSConfig: s.Config(), ErrorLog: rs.errorLog, Handler: http.NotFoundHandler()}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	rs.addr = ln.Addr().String()
	return rs
}

// next is the next record logged.
func (rs *refusingServer) next(t *testing.T) slog.Record {
	t.Helper()
	select {
	case r := <-rs.recs:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no log record for the refused handshake")
		return slog.Record{}
	}
}

func attr(r slog.Record, key string) string {
	var v string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
		}
		return true
	})
	return v
}

// A handshake refused over a certificate is a warning naming the client
// and the reason: the admin sees why a device cannot pull. A connection
// closed during the handshake stays at debug.
func TestHandshakeRefusalsAreWarnings(t *testing.T) {
	rs := newRefusingServer(t)
	addr, serverCA, otherCA := rs.addr, rs.serverCA, rs.other
	next := func() slog.Record { t.Helper(); return rs.next(t) }
	strangerCert, strangerKey := otherCA.Client(t, "stranger")
	stranger, _ := tls.X509KeyPair(strangerCert, strangerKey)
	for _, tt := range []struct {
		name  string
		dial  func() error
		level slog.Level
		msg   string
		err   string
	}{
		{"a probe that connects and closes", func() error {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
			}
			return err
		}, slog.LevelDebug, "", ""},
		{"a device certificate of another CA", func() error {
			return handshake(addr, &tls.Config{RootCAs: serverCA.Pool(),
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &stranger, nil }})
		}, slog.LevelWarn, "TLS client certificate refused", "unknown authority"},
		{"no device certificate", func() error {
			return handshake(addr, &tls.Config{RootCAs: serverCA.Pool()})
		}, slog.LevelWarn, "TLS client certificate refused", "didn't provide a certificate"},
		{"a client that does not trust the mirror", func() error {
			return handshake(addr, &tls.Config{RootCAs: otherCA.Pool()})
		}, slog.LevelWarn, "TLS client refused the mirror's certificate", "certificate"},
	} {
		tt.dial()
		r := next()
		if r.Level != tt.level {
			t.Errorf("%s: logged at %s (%q), want %s", tt.name, r.Level, r.Message, tt.level)
			continue
		}
		if tt.level == slog.LevelDebug {
			continue
		}
		if r.Message != tt.msg || !strings.Contains(attr(r, "err"), tt.err) || !strings.HasPrefix(attr(r, "remote"), "127.0.0.1:") {
			t.Errorf("%s: logged %q remote=%q err=%q; want %q naming the client and %q", tt.name, r.Message, attr(r, "remote"), attr(r, "err"), tt.msg, tt.err)
		}
	}
}

// A device retrying with a refused certificate every few seconds, forever,
// gets one warning per 10 minutes, not one per attempt (a flood on a small
// gateway's journal), and the next warning says how many were left out
// since the last; another reason, or another client, is warned about at
// once.
func TestRepeatedRefusalsAreLoggedOncePerInterval(t *testing.T) {
	rs := newRefusingServer(t)
	start := rs.clk.Now()
	strangerCert, strangerKey := rs.other.Client(t, "stranger")
	stranger, _ := tls.X509KeyPair(strangerCert, strangerKey)
	withStranger := &tls.Config{RootCAs: rs.serverCA.Pool(),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &stranger, nil }}
	withNone := &tls.Config{RootCAs: rs.serverCA.Pool()}
	// expired is net/http's line for a device whose certificate expired,
	// at the second given: the reason names the current time.
	expired := func(port, sec int) string {
		return fmt.Sprintf("http: TLS handshake error from 10.0.0.7:%d: tls: failed to verify certificate: x509: certificate has expired or is not yet valid: current time 2026-11-25T12:00:%02dZ is after 2026-11-01T00:00:00Z", port, sec)
	}
	type want struct {
		level      slog.Level
		suppressed string
		since      time.Time
	}
	for i, step := range []struct {
		name    string
		advance time.Duration
		refuse  func()
		want    want
	}{
		{"first refusal", 0, func() { handshake(rs.addr, withStranger) }, want{level: slog.LevelWarn}},
		{"again", 5 * time.Second, func() { handshake(rs.addr, withStranger) }, want{level: slog.LevelDebug}},
		{"and again", 5 * time.Second, func() { handshake(rs.addr, withStranger) }, want{level: slog.LevelDebug}},
		{"another reason", 0, func() { handshake(rs.addr, withNone) }, want{level: slog.LevelWarn}},
		{"10 minutes after the first", 10*time.Minute - 10*time.Second, func() { handshake(rs.addr, withStranger) },
			want{slog.LevelWarn, "2", start}},
		{"another client, expired", 0, func() { rs.errorLog.Print(expired(40000, 5)) }, want{level: slog.LevelWarn}},
		{"expired again, a second later", time.Second, func() { rs.errorLog.Print(expired(40001, 6)) }, want{level: slog.LevelDebug}},
	} {
		rs.clk.add(step.advance)
		step.refuse()
		r := rs.next(t)
		got := want{level: r.Level, suppressed: attr(r, "suppressed")}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "since" {
				got.since = a.Value.Time()
			}
			return true
		})
		if got.level != step.want.level || got.suppressed != step.want.suppressed || !got.since.Equal(step.want.since) {
			t.Errorf("step %d, %s: logged %q at %s suppressed=%q since=%v; want %s suppressed=%q since=%v",
				i, step.name, r.Message, got.level, got.suppressed, got.since, step.want.level, step.want.suppressed, step.want.since)
		}
	}
}

// handshake runs a TLS handshake and reads until the server has decided
// (in TLS 1.3 a refused client certificate shows at the first read).
func handshake(addr string, cfg *tls.Config) error {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Read(make([]byte, 1))
	return err
}

// The served certificate is warned about from 14 days before it expires,
// once a day, and differently once it has expired: a renewal that stopped
// working shows in the log before devices refuse the mirror.
func TestWarnsOfExpiry(t *testing.T) {
	dir := t.TempDir()
	serverCA := certs.NewCA(t, "server CA")
	certFile, keyFile, cert, key := writeServerPair(t, dir, serverCA, "mirror", time.Now())
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	notAfter := pair.Leaf.NotAfter
	warnings := func(recs records) []string {
		var out []string
		for {
			select {
			case r := <-recs:
				if r.Level == slog.LevelWarn {
					out = append(out, r.Message)
				}
			default:
				return out
			}
		}
	}

	recs := make(records, 16)
	clk := &clock{now: notAfter.Add(-30 * 24 * time.Hour)}
	if _, err := New(Options{CertFile: certFile, KeyFile: keyFile, Now: clk.Now, Logger: slog.New(recs)}); err != nil {
		t.Fatal(err)
	}
	if w := warnings(recs); len(w) != 0 {
		t.Errorf("30 days before expiry: %q, want no warning", w)
	}

	clk = &clock{now: notAfter.Add(-10 * 24 * time.Hour)}
	s, err := New(Options{CertFile: certFile, KeyFile: keyFile, Now: clk.Now, Logger: slog.New(recs)})
	if err != nil {
		t.Fatal(err)
	}
	if w := warnings(recs); len(w) != 1 || !strings.Contains(w[0], "expires soon") {
		t.Errorf("10 days before expiry, at start: %q, want one warning that it expires soon", w)
	}
	url := serve(t, s.Config())
	get := func() {
		t.Helper()
		resp, err := client(serverCA, nil, nil).Get(url) // checks the certificate on real time: valid
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	clk.add(time.Hour)
	get()
	if w := warnings(recs); len(w) != 0 {
		t.Errorf("an hour later: %q, want no second warning the same day", w)
	}
	clk.add(25 * time.Hour)
	get()
	if w := warnings(recs); len(w) != 1 || !strings.Contains(w[0], "expires soon") {
		t.Errorf("a day later: %q, want the warning again", w)
	}
	clk.add(10 * 24 * time.Hour)
	s.Reload() // the client would refuse the expired certificate: no handshake
	if w := warnings(recs); len(w) != 1 || !strings.Contains(w[0], "has expired") {
		t.Errorf("after expiry: %q, want a warning that it has expired", w)
	}
}
