package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/registry-edge/registry-edge/internal/config"
	"github.com/registry-edge/registry-edge/internal/testutil/certs"
	"github.com/registry-edge/registry-edge/internal/testutil/cosigntest"
	"github.com/registry-edge/registry-edge/internal/testutil/syncbuf"
)

// testClient is the tests' HTTP client. Not http.DefaultClient: with
// AWS_CA_BUNDLE set, the S3 SDK replaces that shared client's Transport
// when a serve under test opens a bucket store, which races with requests
// of tests running in parallel.
var testClient = &http.Client{}

func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr, nil)
	return code, stdout.String(), stderr.String()
}

func TestVersion(t *testing.T) {
	t.Parallel()
	code, out, _ := runCmd(t, "version")
	if code != 0 || !strings.HasPrefix(out, "registry-edge ") {
		t.Errorf("version = %d %q", code, out)
	}
}

func TestCheckConfig(t *testing.T) {
	t.Parallel()
	code, out, errOut := runCmd(t, "check-config", "../../config/registry-edge.example.yaml")
	if code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("check-config example = %d %q %q", code, out, errOut)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("upstreams:\n  - registry: a.io\n    url: ftp://a.io\n"), 0o644)
	code, _, errOut = runCmd(t, "check-config", bad)
	if code != 1 || !strings.Contains(errOut, "upstreams[0].url") || strings.Count(strings.TrimSpace(errOut), "\n") > 3 {
		t.Errorf("check-config bad = %d %q, want exit 1 naming upstreams[0].url", code, errOut)
	}
	unknown := filepath.Join(t.TempDir(), "unknown.yaml")
	os.WriteFile(unknown, []byte("listen: ':1'\nlisen: x\n"), 0o644)
	if code, _, errOut = runCmd(t, "check-config", unknown); code != 1 || !strings.Contains(errOut, "lisen") {
		t.Errorf("check-config unknown key = %d %q", code, errOut)
	}
	// A prefetch image of a registry no upstream has loads, with a warning.
	pf := filepath.Join(t.TempDir(), "prefetch.yaml")
	os.WriteFile(pf, []byte("prefetch:\n  images:\n    - ref: ghcr.io/org/app:1\n"), 0o644)
	if code, out, errOut = runCmd(t, "check-config", pf); code != 0 || !strings.Contains(out, ": ok") ||
		!strings.Contains(errOut, "warning: prefetch.images[0].ref:") || !strings.Contains(errOut, "no upstream has") {
		t.Errorf("check-config prefetch of another registry = %d %q %q, want ok and a warning naming prefetch.images[0].ref", code, out, errOut)
	}
	if code, _, _ = runCmd(t, "check-config"); code != 2 {
		t.Errorf("check-config without FILE exit = %d, want 2", code)
	}
	if code, _, errOut = runCmd(t, "check-config", "/does/not/exist.yaml"); code != 1 || !strings.Contains(errOut, "/does/not/exist.yaml") {
		t.Errorf("check-config missing file = %d %q", code, errOut)
	}
	// --config as serve takes it; -h explains the command.
	if code, out, errOut = runCmd(t, "check-config", "--config", "../../config/registry-edge.example.yaml"); code != 0 || !strings.Contains(out, ": ok") {
		t.Errorf("check-config --config example = %d %q %q", code, out, errOut)
	}
	if code, _, errOut = runCmd(t, "check-config", "--config", "a.yaml", "b.yaml"); code != 2 {
		t.Errorf("check-config with --config and FILE = %d %q, want 2", code, errOut)
	}
	if code, out, _ := runCmd(t, "check-config", "-h"); code != 0 || !strings.Contains(out, "usage: registry-edge check-config FILE") {
		t.Errorf("check-config -h = %d %q", code, out)
	}
}

// -h (or --help) without a command lists every command and serve's flags,
// and exits 0.
func TestHelpListsCommands(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"serve", "-h"}} {
		code, out, errOut := runCmd(t, args...)
		all := out + errOut
		if code != 0 {
			t.Errorf("%v: exit %d, want 0", args, code)
		}
		for _, want := range []string{"check-config FILE", "prefetch", "gc", "fsck", "version"} {
			if !strings.Contains(all, want) {
				t.Errorf("%v: the help does not name %q:\n%s", args, want, all)
			}
		}
		if args[0] != "help" && !strings.Contains(all, "-upstream") {
			t.Errorf("%v: the help does not show serve's flags:\n%s", args, all)
		}
	}
}

// version -h is help, as for every other command, not a usage error.
func TestVersionHelp(t *testing.T) {
	t.Parallel()
	for _, h := range []string{"-h", "--help"} {
		if code, out, _ := runCmd(t, "version", h); code != 0 || !strings.Contains(out, "usage: registry-edge version") {
			t.Errorf("version %s: exit %d, %q; want 0 and the usage", h, code, out)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	if code, _, errOut := runCmd(t, "frobnicate"); code != 2 || !strings.Contains(errOut, "unknown command") {
		t.Errorf("unknown command = %d %q", code, errOut)
	}
	if code, _, _ := runCmd(t, "serve", "--no-such-flag"); code != 2 {
		t.Errorf("unknown flag exit = %d, want 2", code)
	}
	if code, _, errOut := runCmd(t, "serve", "--upstream", "ftp://x"); code != 1 || !strings.Contains(errOut, "scheme") {
		t.Errorf("bad --upstream = %d %q", code, errOut)
	}
	for _, iv := range []string{"0", "-1s"} {
		if code, _, errOut := runCmd(t, "prefetch", "--interval", iv, "org/a:1"); code != 2 || !strings.Contains(errOut, "want a positive duration") {
			t.Errorf("prefetch --interval %s = %d %q, want a usage error", iv, code, errOut)
		}
	}
}

func TestServeWithFlagsAndShutdown(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	dir := t.TempDir()
	srv := startRun(t, "--listen", addr, "--storage", dir, "--upstream", "http://127.0.0.1:1")
	stderr := srv.stderr
	resp := srv.waitServing(t, testClient, "http://"+addr+"/v2/")
	resp.Body.Close()
	var err error
	if resp.StatusCode != 200 {
		t.Errorf("GET /v2/ = %d", resp.StatusCode)
	}
	// The upstream on port 1 refuses connections: uncached content is a fast 503.
	resp, err = testClient.Get("http://" + addr + "/v2/app/manifests/v1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("manifest with upstream down = %d, want 503", resp.StatusCode)
	}
	if _, err := os.Stat(filepath.Join(dir, "meta.db")); err != nil {
		t.Errorf("--storage not used: %v", err)
	}
	if code := srv.stop(); code != 0 {
		t.Errorf("serve exit = %d after shutdown; stderr:\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "registry-edge started") || !strings.Contains(stderr.String(), "127.0.0.1:1") {
		t.Errorf("start-up log line missing or lacks the upstream:\n%s", stderr.String())
	}
}

// At start the mirror asks each upstream for GET /v2/ once and logs
// whether it answers.
func TestServeChecksUpstreamsAtStart(t *testing.T) {
	t.Parallel()
	var pings atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			pings.Add(1)
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://auth.invalid/token",service="central"`)
			w.WriteHeader(http.StatusUnauthorized) // a registry that wants a token still answers
			return
		}
		http.NotFound(w, r)
	}))
	defer up.Close()

	for _, tc := range []struct {
		name, upstream, want string
	}{
		{"answers", up.URL, `msg="upstream answers"`},
		{"refused", "http://127.0.0.1:1", `msg="upstream does not answer at start`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startRun(t, "--listen", freeAddr(t), "--storage", t.TempDir(), "--upstream", tc.upstream)
			defer srv.stop()
			srv.waitLog(t, tc.want)
		})
	}
	if n := pings.Load(); n != 1 {
		t.Errorf("the upstream got %d GET /v2/ at start, want 1", n)
	}
}

// At start the mirror also checks its credentials with an upstream that
// has some, as a login would, and says whether they are accepted; the
// password never shows in the log.
func TestServeChecksCredentialsAtStart(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "site" || p != "right-pa55" {
			w.Header().Set("WWW-Authenticate", `Basic realm="central"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Write([]byte("{}"))
	}))
	t.Cleanup(up.Close) // after the parallel subtests
	for _, tc := range []struct{ name, password, want string }{
		{"right", "right-pa55", `msg="upstream accepts the mirror's credentials"`},
		{"stale", "stale-pa55", `msg="upstream refuses the mirror's credentials`},
		{"none", "", `msg="upstream asks for credentials and none are configured`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			conf := filepath.Join(dir, "config.yaml")
			yaml := fmt.Sprintf("upstreams:\n  - registry: central.test\n    url: %s\n", up.URL)
			if tc.password != "" {
				yaml += "    auth:\n      username: site\n      password: " + tc.password + "\n"
			}
			if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			srv := startRun(t, "--config", conf, "--listen", freeAddr(t), "--storage", filepath.Join(dir, "data"))
			defer srv.stop()
			srv.waitLog(t, tc.want)
			if tc.password != "" && strings.Contains(srv.stderr.String(), tc.password) {
				t.Errorf("the password is in the log:\n%s", srv.stderr.String())
			}
		})
	}
}

// With tls in the config, the mirror serves HTTPS with HTTP/2 and asks
// for client certificates as configured.
func TestServeTLS(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	dir := t.TempDir()
	serverCA, deviceCA := certs.NewCA(t, "server CA"), certs.NewCA(t, "device CA")
	cert, key := serverCA.Server(t, "mirror")
	for name, b := range map[string][]byte{"tls.crt": cert, "tls.key": key, "devices.pem": deviceCA.PEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	srv := startWithDeviceCerts(t, dir, addr)
	stderr := srv.stderr
	devCert, devKey := deviceCA.Client(t, "device-1")
	pair, err := tls.X509KeyPair(devCert, devKey)
	if err != nil {
		t.Fatal(err)
	}
	device := &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: true,
		TLSClientConfig: &tls.Config{RootCAs: serverCA.Pool(), Certificates: []tls.Certificate{pair}}}}
	resp := srv.waitServing(t, device, "https://"+addr+"/v2/")
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Proto != "HTTP/2.0" {
		t.Errorf("GET /v2/ over TLS: %d %s, want 200 HTTP/2.0", resp.StatusCode, resp.Proto)
	}
	stranger := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: serverCA.Pool()}}}
	if resp, err := stranger.Get("https://" + addr + "/v2/"); err == nil {
		resp.Body.Close()
		t.Error("a client without a certificate was served although clientAuth is require")
	}
	if code := srv.stop(); code != 0 {
		t.Errorf("serve exit = %d; stderr:\n%s", code, stderr.String())
	}
}

// SIGHUP (here: a reload request) serves a renewed certificate and
// verifies devices by a rotated CA bundle at once; a device the bundle no
// longer verifies is refused with a warning in the log at the default level.
func TestReloadAppliesRenewedTLSFiles(t *testing.T) {
	addr := freeAddr(t)
	dir := t.TempDir()
	serverCA, deviceCA, newDeviceCA := certs.NewCA(t, "server CA"), certs.NewCA(t, "device CA"), certs.NewCA(t, "device CA 2")
	cert, key := serverCA.Server(t, "mirror-1")
	files := map[string][]byte{"tls.crt": cert, "tls.key": key, "devices.pem": deviceCA.PEM}
	writeAll := func() {
		t.Helper()
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	writeAll()
	srv := startWithDeviceCerts(t, dir, addr)
	device := func(ca *certs.CA, cn string) *http.Client {
		c, k := ca.Client(t, cn)
		pair, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{RootCAs: serverCA.Pool(), Certificates: []tls.Certificate{pair}}}}
	}
	oldDevice, newDevice := device(deviceCA, "device-1"), device(newDeviceCA, "device-2")
	resp := srv.waitServing(t, oldDevice, "https://"+addr+"/v2/")
	resp.Body.Close()

	files["tls.crt"], files["tls.key"] = serverCA.Server(t, "mirror-2")
	files["devices.pem"] = newDeviceCA.PEM
	writeAll()
	reloadRequests <- struct{}{}
	srv.waitLog(t, "configuration reloaded")
	resp, err := newDevice.Get("https://" + addr + "/v2/")
	if err != nil {
		t.Fatalf("a device of the new CA after the reload: %v\n%s", err, srv.stderr.String())
	}
	resp.Body.Close()
	if cn := resp.TLS.PeerCertificates[0].Subject.CommonName; cn != "mirror-2" {
		t.Errorf("after the reload the mirror serves %s, want the renewed mirror-2", cn)
	}
	if resp, err := oldDevice.Get("https://" + addr + "/v2/"); err == nil {
		resp.Body.Close()
		t.Error("a device of the CA taken out of the bundle was served after the reload")
	}
	srv.waitLog(t, "TLS client certificate refused")
	if code := srv.stop(); code != 0 {
		t.Errorf("serve exit = %d; stderr:\n%s", code, srv.stderr.String())
	}
}

// SIGHUP (here: a reload request) applies a changed access policy while
// serving; a configuration that does not load changes nothing.
func TestReloadAppliesAccessPolicy(t *testing.T) {
	addr := freeAddr(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(conf, []byte("access:\n  anonymous: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("ops:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startRun(t, "--config", conf, "--listen", addr, "--storage", filepath.Join(dir, "data"), "--upstream", "http://127.0.0.1:1")
	stderr := srv.stderr
	status := func() int {
		resp, err := testClient.Get("http://" + addr + "/v2/")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitStatus := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); status() != want; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("GET /v2/ never answered %d; log:\n%s", want, stderr.String())
			}
		}
	}
	waitStatus(200)

	if err := os.WriteFile(conf, []byte("access:\n  anonymous: false\n  htpasswd: "+htpasswd+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reloadRequests <- struct{}{}
	waitStatus(401)

	if err := os.WriteFile(conf, []byte("access: [not, a, map]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reloadRequests <- struct{}{}
	srv.waitLog(t, "configuration reload failed")
	if got := status(); got != 401 {
		t.Errorf("after a failed reload GET /v2/ = %d, want the running policy's 401", got)
	}
	if code := srv.stop(); code != 0 {
		t.Errorf("serve exit = %d; stderr:\n%s", code, stderr.String())
	}
}

// A key file whose content changed (a key rotated or revoked) with the
// configuration unchanged is named on SIGHUP as taking effect at the next
// restart; a reload that changes nothing of the policy does not name it.
func TestReloadNamesAChangedKeyFile(t *testing.T) {
	addr := freeAddr(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "release.pub")
	if err := os.WriteFile(key, []byte(cosigntest.NewKey(t).PublicPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "config.yaml")
	body := "signatures:\n  rules:\n    - name: fleet\n      repositories: [\"127.0.0.1:1/fleet/**\"]\n      mode: enforce\n      keys: [" + key + "]\n"
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startRun(t, "--config", conf, "--listen", addr, "--storage", filepath.Join(dir, "data"), "--upstream", "http://127.0.0.1:1")
	reloaded := func(n int) string {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if lines := strings.Split(srv.stderr.String(), "\n"); strings.Count(srv.stderr.String(), "configuration reloaded") >= n {
				for _, l := range slices.Backward(lines) {
					if strings.Contains(l, "configuration reloaded") {
						return l
					}
				}
			}
		}
		t.Fatalf("no reload logged; log:\n%s", srv.stderr.String())
		return ""
	}
	srv.waitServing(t, testClient, "http://"+addr+"/v2/").Body.Close() // its SIGHUP handler runs
	reloadRequests <- struct{}{}
	if line := reloaded(1); strings.Contains(line, "signatures") {
		t.Errorf("nothing changed, yet: %s", line)
	}
	if err := os.WriteFile(key, []byte(cosigntest.NewKey(t).PublicPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	reloadRequests <- struct{}{}
	if line := reloaded(2); !strings.Contains(line, "not_applied") || !strings.Contains(line, "signatures.rules") {
		t.Errorf("a replaced key file is not named as needing a restart: %s", line)
	}
	if code := srv.stop(); code != 0 {
		t.Errorf("serve exit = %d; stderr:\n%s", code, srv.stderr.String())
	}
}

// A storage budget set by a reload is the one gc --dry-run plans with and
// the status page shows (both used the budget of the start before).
func TestReloadedBudgetReachesGCAndStatus(t *testing.T) {
	addr := freeAddr(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(conf, []byte("log:\n  level: info\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startRun(t, "--config", conf, "--listen", addr, "--storage", filepath.Join(dir, "data"), "--upstream", "http://127.0.0.1:1")
	mirror := "http://" + addr
	dryRun := func() string {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) { // until the mirror listens
			if code, out, _ := runCmd(t, "gc", "--mirror", mirror, "--dry-run"); code == 0 {
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("gc --dry-run never succeeded; log:\n%s", srv.stderr.String())
			}
		}
	}
	statusPage := func() string {
		t.Helper()
		resp, err := testClient.Get(mirror + "/status")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if out := dryRun(); !strings.Contains(out, "no budget") {
		t.Fatalf("gc --dry-run before the reload:\n%s", out)
	}
	if page := statusPage(); !strings.Contains(page, "/ none<") {
		t.Fatalf("the status page before the reload shows a budget:\n%s", page)
	}

	if err := os.WriteFile(conf, []byte("log:\n  level: info\nstorage:\n  maxSize: 3GiB\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reloadRequests <- struct{}{}
	srv.waitLog(t, "configuration reloaded")
	if out := dryRun(); !strings.Contains(out, "budget 3072.0 MiB") {
		t.Errorf("gc --dry-run after the reload to 3GiB:\n%s", out)
	}
	if page := statusPage(); !strings.Contains(page, "3.00 GiB") {
		t.Errorf("the status page after the reload to 3GiB does not show it:\n%s", page)
	}
	if code := srv.stop(); code != 0 {
		t.Errorf("serve exit = %d; stderr:\n%s", code, srv.stderr.String())
	}
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// running is run() serving in the test process.
type running struct {
	stderr *syncbuf.Buffer
	cancel context.CancelFunc
	done   chan int
}

// startRun calls run with args in a goroutine, as main would.
// startWithDeviceCerts serves on addr, over TLS with tls.crt and tls.key in
// dir, requiring device certificates of the CA bundle devices.pem there.
func startWithDeviceCerts(t *testing.T, dir, addr string) *running {
	t.Helper()
	conf := filepath.Join(dir, "config.yaml")
	yaml := fmt.Sprintf("tls:\n  certFile: %s\n  keyFile: %s\n  clientAuth: require\n  clientCAFile: %s\n",
		filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "devices.pem"))
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return startRun(t, "--config", conf, "--listen", addr, "--storage", filepath.Join(dir, "data"), "--upstream", "http://127.0.0.1:1")
}

func startRun(t *testing.T, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{stderr: &syncbuf.Buffer{}, cancel: cancel, done: make(chan int, 1)}
	go func() { r.done <- run(ctx, args, new(bytes.Buffer), r.stderr, nil) }()
	return r
}

// waitLog waits up to 20 s for want in the mirror's log.
func (r *running) waitLog(t *testing.T, want string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(r.stderr.String(), want); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s in the log:\n%s", want, r.stderr.String())
		}
	}
}

// waitServing waits up to 20 s for a GET of url to be answered and returns
// the answer; the mirror's start-up is slow on a loaded machine (CI runs
// -race on two cores), and the deadline only bounds a failure.
func (r *running) waitServing(t *testing.T, client *http.Client, url string) *http.Response {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := client.Get(url)
		if err == nil {
			return resp
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mirror did not answer GET %s: %v; log:\n%s", url, err, r.stderr.String())
		}
	}
}

// stop shuts the mirror down like SIGTERM and returns its exit code.
func (r *running) stop() int {
	r.cancel()
	return <-r.done
}

// A reload names the keys it could not apply, and only their names.
func TestChangedKeysNamesWhatNeedsARestart(t *testing.T) {
	t.Parallel()
	a := config.Default()
	b := config.Default()
	b.Storage.FillTimeout *= 2
	b.Access.RateLimit.RequestsPerSecond = 7
	b.Upstreams = append(b.Upstreams, config.Upstream{Registry: "ghcr.io", URL: "https://ghcr.io"})
	b.Upstreams[0].Auth.Password = "s3cret"
	got := changedKeys(a, b)
	want := []string{"storage.fillTimeout", "upstreams", "access.rateLimit"}
	if !slices.Equal(got, want) {
		t.Errorf("changedKeys = %v, want %v", got, want)
	}
	if keys := changedKeys(a, config.Default()); len(keys) != 0 {
		t.Errorf("changedKeys of equal configurations = %v", keys)
	}
}

// A usage error says its reason once, as the last line, below the usage;
// version takes no argument.
func TestUsageOutput(t *testing.T) {
	t.Parallel()
	code, _, errOut := runCmd(t, "serve", "--bogus")
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if code != 2 || strings.Count(errOut, "-bogus") != 1 || !strings.Contains(lines[len(lines)-1], "flag provided but not defined: -bogus") {
		t.Errorf("serve --bogus: exit %d, stderr %q; want 2, the usage, then the reason once", code, errOut)
	}
	if code, _, errOut := runCmd(t, "version", "foo"); code != 2 || !strings.Contains(errOut, "version takes no argument") {
		t.Errorf("version foo: exit %d, %q", code, errOut)
	}
}

// Help asked for (-h, --help, help) is output: on stdout, exit 0, for
// every command, as deltactl's; nothing on stderr.
func TestHelpGoesToStdout(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"-h"}, {"--help"}, {"help"}, {"serve", "-h"}, {"serve", "--help"},
		{"check-config", "-h"}, {"prefetch", "-h"}, {"gc", "--help"}, {"fsck", "-h"},
		{"version", "-h"}, {"version", "--help"},
	} {
		code, out, errOut := runCmd(t, args...)
		if code != 0 || !strings.Contains(out, "usage:") || errOut != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 0, the usage on stdout, nothing on stderr", args, code, out, errOut)
		}
	}
}

// Every usage error, also one found after the flags parsed (a bad
// --format, a missing argument), exits 2 with the command's usage and
// then the reason, last, on stderr; nothing on stdout.
func TestUsageErrorsShowTheUsage(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args   []string
		usage  string // a line of the command's usage
		reason string
	}{
		{[]string{"serve", "--bogus"}, "flags of serve:", "flag provided but not defined: -bogus"},
		{[]string{"serve", "extra"}, "flags of serve:", `unexpected argument "extra"`},
		{[]string{"gc", "--format", "xml"}, "usage: registry-edge gc", "--format must be table or json"},
		{[]string{"gc", "--mirror", "ftp://x"}, "usage: registry-edge gc", "ftp"},
		{[]string{"check-config"}, "usage: registry-edge check-config FILE", "check-config takes exactly one FILE"},
		{[]string{"prefetch", "--interval", "0s", "org/a:1"}, "usage: registry-edge prefetch", "want a positive duration"},
		{[]string{"prefetch", "--remove"}, "usage: registry-edge prefetch", "--remove needs at least one IMAGE"},
		{[]string{"fsck", "extra"}, "usage: registry-edge fsck", `unexpected argument "extra"`},
		{[]string{"version", "foo"}, "usage: registry-edge version", "version takes no argument"},
	} {
		code, out, errOut := runCmd(t, tt.args...)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if code != 2 || out != "" || !strings.Contains(errOut, tt.usage) || !strings.HasPrefix(lines[len(lines)-1], "registry-edge: ") || !strings.Contains(lines[len(lines)-1], tt.reason) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2, %q then the reason %q last on stderr", tt.args, code, out, errOut, tt.usage, tt.reason)
		}
	}
}

// A storage root that is not a directory, or in which the store's
// directories cannot be made, is named by its field, as other
// configuration errors are.
func TestStorageRootNotADirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	blobsFile := filepath.Join(dir, "root")
	if err := os.MkdirAll(blobsFile, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(blobsFile, "blobs"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, root := range []string{file, blobsFile} {
		code, _, errOut := runCmd(t, "serve", "--listen", "127.0.0.1:0", "--storage", root)
		if code != 1 || !strings.Contains(errOut, "registry-edge: storage.root: ") || !strings.Contains(errOut, "not a directory") {
			t.Errorf("serve --storage %s: exit %d, stderr %q; want 1 and storage.root: ... not a directory", root, code, errOut)
		}
	}
}
