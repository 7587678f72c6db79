package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Tools, by the name need() takes: the environment variable that overrides
// where it is, the executable's name, and whether .ci/test caches it under
// $REGISTRY_EDGE_TOOLS/<name>-<version>/.
var tools = map[string]struct {
	env    string
	exe    string
	cached bool
}{
	"registry":    {"REGISTRY_EDGE_TEST_REGISTRY", "registry", true},
	"crane":       {"REGISTRY_EDGE_TEST_CRANE", "crane", true},
	"cosign":      {"REGISTRY_EDGE_TEST_COSIGN", "cosign", true},
	"conformance": {"REGISTRY_EDGE_TEST_CONFORMANCE", "conformance.test", true},
	"skopeo":      {"REGISTRY_EDGE_TEST_SKOPEO", "skopeo", false},
	"podman":      {"REGISTRY_EDGE_TEST_PODMAN", "podman", false},
	"ctr":         {"REGISTRY_EDGE_TEST_CTR", "ctr", false},
	"containerd":  {"REGISTRY_EDGE_TEST_CONTAINERD", "containerd", false},
	"chromium":    {"REGISTRY_EDGE_TEST_CHROMIUM", "chromium", false},
	// docker-compose validates docker-compose.yml (no engine needed).
	"docker-compose": {"REGISTRY_EDGE_TEST_DOCKER_COMPOSE", "docker-compose", false},
	// nginx runs docs/deploy/nginx-replicas.conf in front of replicas.
	"nginx": {"REGISTRY_EDGE_TEST_NGINX", "nginx", false},
}

// toolPath finds a tool: its environment variable, then PATH, then the
// .ci/test cache.
func toolPath(name string) (string, error) {
	tl, ok := tools[name]
	if !ok {
		return "", fmt.Errorf("unknown tool %q", name)
	}
	if p := os.Getenv(tl.env); p != "" {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%s=%s is not an executable file", tl.env, p)
		}
		return p, nil
	}
	if p, err := exec.LookPath(tl.exe); err == nil {
		return p, nil
	}
	if tl.cached {
		root := os.Getenv("REGISTRY_EDGE_TOOLS")
		if root == "" {
			if home, err := os.UserHomeDir(); err == nil {
				root = filepath.Join(home, ".cache", "registry-edge", "tools")
			}
		}
		if m, _ := filepath.Glob(filepath.Join(root, name+"-*", tl.exe)); len(m) > 0 {
			sort.Strings(m)
			return m[len(m)-1], nil
		}
	}
	return "", fmt.Errorf("not found (set %s, put %s on PATH, or run ./.ci/test --tools-only)", tl.env, tl.exe)
}

// requireTools reports whether a missing tool is a failure rather than a skip.
func requireTools() bool { return os.Getenv("REGISTRY_EDGE_REQUIRE_TOOLS") == "1" }

// need returns the path of tool, or skips the test when it is missing (fails
// it when REGISTRY_EDGE_REQUIRE_TOOLS=1).
func need(t *testing.T, tool string) string {
	t.Helper()
	p, err := toolPath(tool)
	if err != nil {
		if requireTools() {
			t.Fatalf("required tool %s missing: %v", tool, err)
		}
		t.Skipf("tool %s missing: %v", tool, err)
	}
	return p
}

// needRoot skips (or, with REGISTRY_EDGE_REQUIRE_TOOLS=1, fails) a test that
// can only run as root.
func needRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if requireTools() {
		t.Fatalf("this test must run as root: %s", why)
	}
	t.Skipf("not root: %s", why)
}

// --- processes -----------------------------------------------------------

// process is a child process whose stdout and stderr go to one log file.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // valid after done is closed
}

// startProcess starts bin with args; t.Cleanup stops it and, when the test
// failed, prints the end of its log.
func startProcess(t *testing.T, name string, env []string, bin string, args ...string) *process {
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), name+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logf.Name(), done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("--- last lines of the %s log:\n%s", name, tail(p.logWithoutJSONInfo(), 30))
		}
	})
	return p
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after 15 s, and waits for the process.
func (p *process) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// log returns everything the process wrote so far.
func (p *process) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// logWithoutJSONInfo is the log without JSON info-level lines (central
// writes each request twice: once as JSON, once in the access log).
func (p *process) logWithoutJSONInfo() string {
	var b strings.Builder
	for _, l := range p.logLines() {
		if strings.HasPrefix(l, "{") && strings.Contains(l, `"level":"info"`) {
			continue
		}
		b.WriteString(l + "\n")
	}
	return b.String()
}

// logLines returns the log's lines.
func (p *process) logLines() []string {
	return strings.Split(strings.TrimRight(p.log(), "\n"), "\n")
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// errExited means a server process ended before it became ready.
var errExited = errors.New("process exited before it was ready")

// waitHTTP polls url until it answers 200, the process exits or 30 s pass.
func waitHTTP(p *process, url string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s: %w (%v)", p.name, errExited, p.err)
		}
		resp, err := client.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s: %s not ready after 30s", p.name, url)
}

// startServer starts a server process on a free port and waits until
// readyPath answers 200. It retries with a new port when the process exits
// early because another process took the port in between.
func startServer(t *testing.T, name string, readyPath string, start func(addr string) *process) (string, *process) {
	t.Helper()
	var last error
	for attempt := 0; attempt < 3; attempt++ {
		addr := freeAddr(t)
		p := start(addr)
		err := waitHTTP(p, "http://"+addr+readyPath)
		if err == nil {
			return addr, p
		}
		last = err
		if !errors.Is(err, errExited) || !strings.Contains(p.log(), "address already in use") {
			break
		}
	}
	t.Fatalf("starting %s: %v", name, last)
	return "", nil
}

// --- central registry (distribution v3) ----------------------------------

// central is a distribution v3 registry with filesystem storage.
type central struct {
	addr string
	proc *process
}

// startCentral starts the reference registry as the mirror's upstream.
func startCentral(t *testing.T) *central {
	t.Helper()
	bin := need(t, "registry")
	dir := t.TempDir()
	addr, p := startServer(t, "central", "/v2/", func(addr string) *process {
		conf := filepath.Join(dir, "config.yml")
		writeFile(t, conf, fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: json
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  headers:
    X-Content-Type-Options: [nosniff]
`, filepath.Join(dir, "data"), addr))
		// The OpenTelemetry exporter would try to reach a collector.
		return startProcess(t, "central", []string{"OTEL_TRACES_EXPORTER=none", "OTEL_SDK_DISABLED=true"}, bin, "serve", conf)
	})
	return &central{addr: addr, proc: p}
}

// accessLog returns central's access log lines (combined log format: the
// user agent is the last quoted field). Application log lines are JSON.
func (c *central) accessLog() []string {
	var out []string
	for _, l := range c.proc.logLines() {
		if strings.Contains(l, "HTTP/1.1\"") && !strings.HasPrefix(l, "{") {
			out = append(out, l)
		}
	}
	return out
}

// requestsBy counts central's access-log lines whose user agent contains ua,
// from line from on.
func (c *central) requestsBy(from int, ua string) []string {
	var out []string
	lines := c.accessLog()
	for i := from; i < len(lines); i++ {
		if strings.Contains(strings.ToLower(userAgent(lines[i])), strings.ToLower(ua)) {
			out = append(out, lines[i])
		}
	}
	return out
}

// userAgent is the last quoted field of a combined-log-format line.
func userAgent(line string) string {
	line = strings.TrimRight(line, " ")
	if !strings.HasSuffix(line, `"`) {
		return ""
	}
	i := strings.LastIndex(line[:len(line)-1], `"`)
	if i < 0 {
		return ""
	}
	return line[i+1 : len(line)-1]
}

// --- registry-edge ---------------------------------------------------------

// mirror is a running registry-edge.
type mirror struct {
	addr    string
	storage string
	proc    *process
}

// mirrorOptions are the settings a test changes; the zero value runs the
// binary with flags only, as a user would.
type mirrorOptions struct {
	// tagTTL, when set, is written to a config file as cache.tagTTL.
	tagTTL string
	// storage, when set, is the storage directory (to restart a mirror on
	// the storage of an earlier one).
	storage string
	// config is more YAML for the config file (top-level keys other than
	// cache).
	config string
	// ownUpstreams says config has the upstreams: the upstream argument
	// of startMirror is not passed as --upstream (which replaces them).
	ownUpstreams bool
}

// startMirror starts registry-edge with upstream as its only (default)
// upstream and its own storage directory.
func startMirror(t *testing.T, upstream string, opts mirrorOptions) *mirror {
	t.Helper()
	storage := opts.storage
	if storage == "" {
		storage = filepath.Join(t.TempDir(), "storage")
	}
	addr, p := startServer(t, "registry-edge", "/healthz", func(addr string) *process {
		args := []string{"serve", "--listen", addr, "--storage", storage}
		if !opts.ownUpstreams {
			args = append(args, "--upstream", "http://"+upstream)
		}
		if opts.tagTTL != "" || opts.config != "" {
			yaml := opts.config
			if opts.tagTTL != "" {
				yaml += "cache:\n  tagTTL: " + opts.tagTTL + "\n"
			}
			conf := filepath.Join(t.TempDir(), "registry-edge.yaml")
			writeFile(t, conf, yaml)
			args = append(args, "--config", conf)
		}
		return startProcess(t, "registry-edge", []string{"GORACE=halt_on_error=1"}, edgeBin, args...)
	})
	m := &mirror{addr: addr, storage: storage, proc: p}
	t.Cleanup(func() {
		m.proc.stop() // a race during shutdown is reported too
		if log := m.proc.log(); raceEnabled && strings.Contains(log, "WARNING: DATA RACE") {
			excerpt := log[strings.Index(log, "WARNING: DATA RACE"):]
			if lines := strings.Split(excerpt, "\n"); len(lines) > 60 {
				excerpt = strings.Join(lines[:60], "\n")
			}
			t.Errorf("registry-edge reported a data race:\n%s", excerpt)
		}
	})
	return m
}

// logEntry is one access-log line of registry-edge (logfmt, msg=request).
type logEntry map[string]string

// markSeq numbers the marks of all tests.
var markSeq atomic.Int64

// mark puts a recognisable line in the mirror's access log (GET /v2/ with
// a unique ?ns=, which is logged) and waits until it is written. The
// access log is written in batches, so this is how a test knows that the
// lines of everything it did before are in the file, in order.
func (m *mirror) mark(t *testing.T) string {
	t.Helper()
	id := fmt.Sprintf("e2e-mark-%d", markSeq.Add(1))
	// 401: a mirror with users challenges /v2/ (and logs it all the same).
	if resp, body := httpDo(t, "GET", "http://"+m.addr+"/v2/?ns="+id, nil, nil); resp.StatusCode != 200 && resp.StatusCode != 401 {
		t.Fatalf("GET /v2/?ns=%s: %s: %s", id, resp.Status, body)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		for _, e := range m.accessLog() {
			if e["ns"] == id {
				return id
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mirror's access log does not show GET /v2/?ns=%s after 15s", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// requestsSince returns the access-log entries of the requests the mirror
// finished after mark and before now (marks excluded).
func (m *mirror) requestsSince(t *testing.T, mark string) []logEntry {
	t.Helper()
	end := m.mark(t)
	var out []logEntry
	in := false
	for _, e := range m.accessLog() {
		switch {
		case e["ns"] == mark:
			in = true
		case e["ns"] == end:
			return out
		case in && !strings.HasPrefix(e["ns"], "e2e-mark-"):
			out = append(out, e)
		}
	}
	t.Fatalf("mark %s not in the mirror's access log", mark)
	return nil
}

// accessLog returns the access-log entries (msg=request) written so far.
func (m *mirror) accessLog() []logEntry {
	var out []logEntry
	for _, l := range m.proc.logLines() {
		if e := parseLogfmt(l); e["msg"] == "request" {
			out = append(out, e)
		}
	}
	return out
}

// parseLogfmt parses a slog text line: key=value pairs, values optionally
// double-quoted with Go escapes.
func parseLogfmt(line string) logEntry {
	e := logEntry{}
	s := line
	for {
		s = strings.TrimLeft(s, " ")
		if s == "" {
			return e
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return e
		}
		key := s[:eq]
		if strings.ContainsAny(key, " \"") {
			return e
		}
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return e
			}
			val, _ = strconv.Unquote(q)
			s = s[len(q):]
		} else {
			end := strings.IndexByte(s, ' ')
			if end < 0 {
				end = len(s)
			}
			val, s = s[:end], s[end:]
		}
		e[key] = val
	}
}

// storedFiles lists the regular files under the mirror's storage directory,
// relative to it.
func (m *mirror) storedFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(m.storage, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(m.storage, path)
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return files
}

// --- small helpers -----------------------------------------------------------

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// run runs a command with a timeout and returns its stdout; it fails the
// test with the command's output when it fails.
func run(t *testing.T, env []string, bin string, args ...string) string {
	t.Helper()
	out, err := runErr(env, bin, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", filepath.Base(bin), strings.Join(args, " "), err)
	}
	return out
}

// runErr runs a command with a 3 minute timeout; the error includes stderr.
func runErr(env []string, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Stdin = nil
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%w\nstdout: %s\nstderr: %s", err, tail(stdout.String(), 20), tail(stderr.String(), 20))
	}
	return stdout.String(), nil
}

// httpDo sends one request and returns the response with its body read.
func httpDo(t *testing.T, method, url string, header http.Header, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	client := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp, b
}
