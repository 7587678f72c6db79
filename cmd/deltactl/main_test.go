package main

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/layerdelta"
	"github.com/registry-edge/registry-edge/internal/testutil/layergen"
)

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "usage: deltactl COMMAND"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"common flags without a command", []string{"--insecure", "--format", "json"}, "no command"},
		{"a common flag the command lacks", []string{"--insecure", "version"}, "flag provided but not defined: -insecure"},
		{"diff without NEW", []string{"diff", "a"}, "want 2 argument(s), got 1"},
		{"diff with three images", []string{"diff", "a", "b", "c"}, `unexpected argument "c"`},
		{"unknown flag", []string{"diff", "--bogus", "a", "b"}, "flag provided but not defined: -bogus"},
		{"max-bases 0", []string{"diff", "--max-bases", "0", "a", "b"}, "--max-bases 0"},
		{"max-bases too many", []string{"diff", "--max-bases", "65", "a", "b"}, "--max-bases 65"},
		{"max-ratio above 1", []string{"diff", "--max-ratio", "1.5", "a", "b"}, "--max-ratio 1.5"},
		{"unknown level", []string{"diff", "--level", "ultra", "a", "b"}, "--level \"ultra\""},
		{"bad format", []string{"diff", "--format", "xml", "a", "b"}, `--format "xml"`},
		{"bad platform", []string{"diff", "--platform", "linux", "a", "b"}, `platform "linux": want os/arch[/variant]`},
		{"bad platform in a list", []string{"inspect", "--platform", "linux/amd64,/arm64", "a"}, `platform "/arm64"`},
		{"bad reference", []string{"diff", "a", "Not A Reference"}, "NEW:"},
		// go-containerregistry's reason names the reference, not what is
		// wrong with it.
		{"upper-case repository", []string{"inspect", "registry.example.com/Fleet/App:1"}, "IMAGE: could not parse reference \"registry.example.com/Fleet/App:1\": repository can only contain the characters `abcdefghijklmnopqrstuvwxyz0123456789_-./`: Fleet/App"},
		{"short digest", []string{"inspect", "registry.example.com/app@sha256:abc"}, "invalid checksum digest length: sha256:abc"},
		{"bad tag", []string{"diff", "a:1", "a:release 2"}, "NEW: could not parse reference \"a:release 2\": tag can only contain"},
		{"empty reference", []string{"inspect", ""}, `IMAGE: could not parse reference "": a repository name must be specified`},
		{"a URL for an image", []string{"inspect", "https://ci:s3cret-Pa55word@registry.example.com/app:1"}, "IMAGE: an image reference has no URL scheme (https://): write [registry/]repository[:tag|@digest] (--insecure allows plain HTTP)"},
		{"a URL for OLD", []string{"diff", "http://registry.example.com/app:1", "registry.example.com/app:2"}, "OLD: an image reference has no URL scheme (http://)"},
		{"bad tmp", []string{"diff", "--tmp", "/nonexistent/tmp", "a", "b"}, "--tmp /nonexistent/tmp: not a directory"},
		{"inspect without image", []string{"inspect"}, "want 1 argument(s), got 0"},
		{"plan without site-has", []string{"plan", "a"}, "--site-has is required"},
		{"plan with a bad site-has", []string{"plan", "--site-has", "::", "a"}, "--site-has:"},
		{"apply without delta", []string{"apply", "--base", "b", "-o", "out"}, "--delta is required"},
		{"apply without base", []string{"apply", "--delta", "d", "-o", "out"}, "at least one --base is required"},
		{"apply without -o", []string{"apply", "--delta", "d", "--base", "b"}, "-o is required"},
		{"version with an argument", []string{"version", "x"}, `unexpected argument "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := deltactl(t, tt.args...)
			if r.code != 2 {
				t.Errorf("deltactl %q: exit %d, want 2 (stderr %q)", tt.args, r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tt.want) || !strings.Contains(r.stderr, "usage: deltactl") {
				t.Errorf("deltactl %q: stderr %q, want %q and the usage", tt.args, r.stderr, tt.want)
			}
			if len(tt.args) > 1 {
				checkFailure(t, r, 2, tt.want)
			}
			if r.stdout != "" {
				t.Errorf("deltactl %q: a usage error wrote %q to stdout", tt.args, r.stdout)
			}
			if strings.Contains(r.stderr, "s3cret") {
				t.Errorf("deltactl %q: the password is on stderr: %q", tt.args, r.stderr)
			}
		})
	}
}

func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"diff", "inspect", "plan", "apply", "version"} {
		for _, flag := range []string{"--help", "-h"} {
			r := deltactl(t, cmd, flag)
			if r.code != 0 || !strings.HasPrefix(r.stdout, "usage: deltactl "+cmd) || !strings.Contains(r.stdout, "-format") || r.stderr != "" {
				t.Errorf("deltactl %s %s: exit %d, stdout %q, stderr %q; want 0 and the usage with its flags on stdout", cmd, flag, r.code, r.stdout, r.stderr)
			}
		}
	}
	if r := deltactl(t, "help"); r.code != 0 || !strings.Contains(r.stdout, "plan --site-has OLD NEW") {
		t.Errorf("deltactl help: exit %d, stdout %q", r.code, r.stdout)
	}
	// help COMMAND is COMMAND --help, not the general usage with COMMAND
	// ignored.
	if r := deltactl(t, "help", "verify"); r.code != 0 || !strings.HasPrefix(r.stdout, "usage: deltactl verify") {
		t.Errorf("deltactl help verify: exit %d, stdout %q; want 0 and verify's usage", r.code, r.stdout)
	}
	if r := deltactl(t, "help", "frobnicate"); r.code != 2 || !strings.Contains(r.stderr, `unknown command "frobnicate"`) {
		t.Errorf("deltactl help frobnicate: exit %d, stderr %q; want 2 and the unknown command", r.code, r.stderr)
	}
	if r := deltactl(t, "diff", "--help"); !strings.Contains(r.stdout, "-max-bases") || !strings.Contains(r.stdout, "-push") || !strings.Contains(r.stdout, "-output-dir") {
		t.Errorf("deltactl diff --help lacks flags:\n%s", r.stdout)
	}
	if r := mustRun(t, "version"); !strings.HasPrefix(r.stdout, "deltactl ") {
		t.Errorf("deltactl version = %q", r.stdout)
	}
	var v struct{ Version string }
	mustJSON(t, &v, "version")
	if v.Version == "" {
		t.Error("deltactl version --format json: no version")
	}
	// The common flags may come before the command.
	if r := mustRun(t, "--format", "json", "version"); !strings.HasPrefix(r.stdout, "{") {
		t.Errorf("deltactl --format json version = %q, want JSON", r.stdout)
	}
	if r := mustRun(t, "--format=json", "version"); !strings.HasPrefix(r.stdout, "{") {
		t.Errorf("deltactl --format=json version = %q, want JSON", r.stdout)
	}
}

// TestRegistryErrors checks failures that come from the registry: one line
// on stderr, exit status 1.
func TestRegistryErrors(t *testing.T) {
	t.Parallel()
	host := newRegistry(t, false)
	repo := host + "/edge/small"
	pushImage(t, repo+":1", testImage(t, "amd64", layer(t, goGzip, layergen.New(300, 4, 2<<10))))
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"diff, missing OLD", []string{"diff", host + "/edge/missing:1", repo + ":1"}, "edge/missing"},
		{"diff, missing NEW tag", []string{"diff", repo + ":1", repo + ":2"}, repo + ":2"},
		{"inspect, missing image", []string{"inspect", host + "/edge/missing:1"}, "NAME_UNKNOWN"},
		{"plan, missing site image", []string{"plan", "--site-has", host + "/edge/missing:1", repo + ":1"}, "edge/missing"},
		// Flags after the images are flags.
		{"diff, platform not in NEW", []string{"diff", repo + ":1", repo + ":1", "--platform", "linux/s390x"}, "has no platform linux/s390x (it has linux/amd64)"},
		{"no registry", []string{"inspect", "127.0.0.1:1/edge/x:1"}, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := deltactl(t, tt.args...)
			checkFailure(t, r, 1, tt.want)
			if r.stdout != "" {
				t.Errorf("a failure wrote %q to stdout", r.stdout)
			}
			// With --format json too: no JSON (a script's parser gets
			// nothing, not a half or an empty report), the reason on
			// stderr.
			r = deltactl(t, append(tt.args, "--format", "json")...)
			checkFailure(t, r, 1, tt.want)
			if r.stdout != "" {
				t.Errorf("a failure with --format json wrote %q to stdout", r.stdout)
			}
		})
	}
}

// TestRegistryAnswersInTheReason checks the reason a registry's answer
// gives: a redirect's query (a CDN's signature, a token) is redacted from
// the URL Go's HTTP client quotes, and an error page that is not JSON (a
// proxy's HTML) is cut short rather than dumped on stderr.
func TestRegistryAnswersInTheReason(t *testing.T) {
	t.Parallel()
	const secret = "S3cretSignature"
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close() // a CDN that does not answer
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	page := "<html>\n<body>\n" + strings.Repeat("<p>upstream connect error or disconnect/reset before headers</p>\n", 2000) + "</body>\n</html>\n"
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/manifests/redirected"):
			http.Redirect(w, r, closed.URL+"/m?X-Amz-Credential=AKIA"+secret+"&X-Amz-Signature="+secret+"&token="+secret, http.StatusTemporaryRedirect)
		case strings.HasSuffix(r.URL.Path, "/manifests/broken"):
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusForbidden) // a proxy's page (a 5xx is tried again)
			io.WriteString(w, page)
		case strings.HasSuffix(r.URL.Path, "/manifests/detailed"):
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `{"errors":[{"code":"DENIED","message":"requested access to the resource is denied","detail":[{"Type":"repository","Name":"edge/app","Action":"pull"}]}]}`)
		case strings.HasSuffix(r.URL.Path, "/manifests/escape"):
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `{"errors":[{"code":"DENIED","message":"\u001b]0;pwned\u0007\u001b[2Jdenied"}]}`)
		default:
			reg.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(s.Close)
	repo := strings.TrimPrefix(s.URL, "http://") + "/edge/app"
	pushImage(t, repo+":1", testImage(t, "amd64", layer(t, goGzip, layergen.New(500, 4, 2<<10))))
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"inspect, redirected", []string{"inspect", repo + ":redirected"}, "X-Amz-Signature=redacted"},
		{"diff, redirected", []string{"diff", repo + ":1", repo + ":redirected"}, "connection refused"},
		{"plan, redirected", []string{"plan", "--site-has", repo + ":redirected", repo + ":1"}, "token=redacted"},
		{"inspect, error page", []string{"inspect", repo + ":broken"}, "403 Forbidden: <html>; <body>; <p>upstream connect error"},
		{"diff, error page", []string{"diff", repo + ":broken", repo + ":1"}, "403 Forbidden"},
		{"inspect, escape sequence", []string{"inspect", repo + ":escape"}, `DENIED: \x1b]0;pwned\x07\x1b[2Jdenied`},
		// The envelope's detail as its JSON, not as a Go map ("[map[Action:pull ...]]").
		{"inspect, detail", []string{"inspect", repo + ":detailed"}, `DENIED: requested access to the resource is denied; [{"Type":"repository","Name":"edge/app","Action":"pull"}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := deltactl(t, tt.args...)
			checkFailure(t, r, 1, tt.want)
			if strings.Contains(r.stderr, secret) {
				t.Errorf("a redirect's secret is on stderr: %q", r.stderr)
			}
			if strings.ContainsRune(r.stderr, 0x1b) {
				t.Errorf("an escape sequence is on stderr: %q", r.stderr)
			}
			if len(r.stderr) > 1024 {
				t.Errorf("stderr is %d bytes, want a short reason: %.300q...", len(r.stderr), r.stderr)
			}
		})
	}
}

// TestCredentials reads credentials from Docker's config.json and keeps
// them out of every output.
func TestCredentials(t *testing.T) {
	const user, secret = "ci", "s3cret-Pa55word"
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != secret {
			w.Header().Set("WWW-Authenticate", `Basic realm="registry"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	host := strings.TrimPrefix(s.URL, "http://")
	repo := host + "/edge/private"
	img := testImage(t, "amd64", layer(t, goGzip, layergen.New(400, 4, 2<<10)))
	if err := remote.Write(ref(t, repo+":1"), img, remote.WithAuth(&authn.Basic{Username: user, Password: secret})); err != nil {
		t.Fatal(err)
	}
	dockerConfig := func(password string) {
		dir := t.TempDir()
		auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
		cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("DOCKER_CONFIG", dir)
	}

	dockerConfig(secret)
	var rep inspectReport
	mustJSON(t, &rep, "inspect", repo+":1")
	if len(rep.Platforms) != 1 {
		t.Errorf("inspect with credentials: %+v", rep)
	}
	r := mustRun(t, "plan", "--site-has", repo+":1", repo+":1")
	for _, out := range []string{r.stdout, r.stderr} {
		if strings.Contains(out, secret) {
			t.Errorf("the password is in the output: %q", out)
		}
	}

	const wrong = "wr0ng-Pa55word"
	dockerConfig(wrong)
	r = deltactl(t, "diff", repo+":1", repo+":1")
	checkFailure(t, r, 1, "UNAUTHORIZED")
	if strings.Contains(r.stderr, "no credentials") {
		t.Errorf("a 401 with credentials says there are none: %q", r.stderr)
	}
	// OLD on a registry without credentials (none needed) does not make
	// NEW's refused credentials a missing login.
	open := newRegistry(t, false)
	pushImage(t, open+"/edge/public:1", img)
	r = deltactl(t, "diff", open+"/edge/public:1", repo+":1")
	checkFailure(t, r, 1, "UNAUTHORIZED")
	if strings.Contains(r.stderr, "no credentials") {
		t.Errorf("a 401 with credentials names another registry's: %q", r.stderr)
	}

	// No credentials for the registry: the reason says so, and how to
	// give them (the registry's own says "authentication required").
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	r = deltactl(t, "inspect", "--format", "json", repo+":1")
	checkFailure(t, r, 1, "UNAUTHORIZED: authentication required (no credentials for "+host+" in Docker's config.json: docker login "+host+")")
	if r.stdout != "" {
		t.Errorf("a failure wrote %q to stdout", r.stdout)
	}
	for _, s := range []string{wrong, secret, base64.StdEncoding.EncodeToString([]byte(user + ":" + wrong))} {
		if strings.Contains(r.stderr+r.stdout, s) {
			t.Errorf("a credential is in the output: %q", r.stderr)
		}
	}
}

// TestInsecure reaches a registry with a self-signed certificate only with
// --insecure.
func TestInsecure(t *testing.T) {
	t.Parallel()
	s := httptest.NewUnstartedServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes that fail on purpose
	s.StartTLS()
	t.Cleanup(s.Close)
	host := strings.TrimPrefix(s.URL, "https://")
	tr := s.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	img := testImage(t, "amd64", layer(t, goGzip, layergen.New(500, 4, 2<<10)))
	if err := remote.Write(ref(t, host+"/edge/tls:1"), img, remote.WithTransport(tr), remote.WithAuth(authn.Anonymous)); err != nil {
		t.Fatal(err)
	}
	// Without --insecure, go-containerregistry tries HTTPS, which does not
	// verify, then plain HTTP, which the server refuses.
	r := deltactl(t, "inspect", host+"/edge/tls:1")
	checkFailure(t, r, 1, "failed to verify certificate")
	if !strings.HasSuffix(r.stderr, " (--insecure accepts a certificate that does not verify)\n") {
		t.Errorf("a certificate that does not verify: %q, want the reason to name --insecure", r.stderr)
	}
	mustRun(t, "inspect", "--insecure", host+"/edge/tls:1")
}

func TestProgress(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	now := time.Unix(0, 0)
	p := &progress{w: &buf, on: true, now: func() time.Time { return now }}
	p.bar("delta x", 50, 200)
	if got := buf.String(); !strings.HasPrefix(got, "\r\033[Kdelta x [") || !strings.Contains(got, " 25% ") {
		t.Errorf("bar = %q", got)
	}
	buf.Reset()
	p.bar("delta x", 60, 200)
	if buf.Len() != 0 {
		t.Errorf("bar redrawn within %v: %q", progressInterval, buf.String())
	}
	p.bar("delta x", 200, 200)
	if !strings.Contains(buf.String(), "100%") {
		t.Errorf("the last bar is not drawn: %q", buf.String())
	}
	buf.Reset()
	p.clear()
	p.clear()
	if buf.String() != "\r\033[K" {
		t.Errorf("clear = %q, want one erase", buf.String())
	}

	// Not a terminal: nothing at all.
	var out bytes.Buffer
	q := newProgress(&out)
	q.bar("x", 1, 2)
	q.status("x")
	io.Copy(io.Discard, q.reader(strings.NewReader("abc"), "x", 3))
	q.clear()
	if out.Len() != 0 {
		t.Errorf("progress on a non-terminal wrote %q", out.String())
	}
}

// TestDocs checks that docs/deltactl.md documents every flag of every
// command and every field of the JSON output.
func TestDocs(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "deltactl.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, cmd := range []string{"diff", "inspect", "plan", "apply", "version"} {
		help := mustRun(t, cmd, "--help").stdout
		for _, line := range strings.Split(help, "\n") {
			if !strings.HasPrefix(line, "  -") {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimPrefix(line, "  -"), " ")
			if !strings.Contains(doc, "`--"+name) && !strings.Contains(doc, "`-"+name+"`") {
				t.Errorf("docs/deltactl.md does not document %s --%s", cmd, name)
			}
		}
	}
	for _, v := range []any{diffReport{}, inspectReport{}, planReport{}, applyResult{}} {
		for _, key := range jsonKeys(reflect.TypeOf(v)) {
			if !strings.Contains(doc, `"`+key+`"`) {
				t.Errorf("docs/deltactl.md does not show the JSON field %q of %T", key, v)
			}
		}
	}
}

// jsonKeys returns the JSON field names of a struct type and of the
// structs it holds.
func jsonKeys(typ reflect.Type) []string {
	switch typ.Kind() {
	case reflect.Pointer, reflect.Slice:
		return jsonKeys(typ.Elem())
	case reflect.Struct:
	default:
		return nil
	}
	var keys []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		keys = append(keys, name)
		if f.Type.PkgPath() != "github.com/opencontainers/go-digest" {
			keys = append(keys, jsonKeys(f.Type)...)
		}
	}
	return keys
}

// A diff that fails before it writes a delta leaves no --output-dir it
// made, and leaves one that was there.
func TestDiffFailureLeavesNoOutputDir(t *testing.T) {
	t.Parallel()
	host := newRegistry(t, false)
	repo := host + "/edge/small"
	pushImage(t, repo+":1", testImage(t, "amd64", layer(t, goGzip, layergen.New(301, 4, 2<<10))))
	made := filepath.Join(t.TempDir(), "out", "deltas")
	checkFailure(t, deltactl(t, "diff", "--output-dir", made, host+"/edge/missing:1", repo+":1"), 1, "edge/missing")
	if _, err := os.Stat(made); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("--output-dir %s after a failed diff: %v, want it gone", made, err)
	}
	there := t.TempDir()
	checkFailure(t, deltactl(t, "diff", "--output-dir", there, host+"/edge/missing:1", repo+":1"), 1, "edge/missing")
	if _, err := os.Stat(there); err != nil {
		t.Errorf("an existing --output-dir was removed: %v", err)
	}
	// One that cannot be made fails the command before any request (the
	// registry is unreachable), naming the flag.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	checkFailure(t, deltactl(t, "diff", "--output-dir", filepath.Join(file, "deltas"), "127.0.0.1:1/edge/x:1", "127.0.0.1:1/edge/x:2"), 1,
		"--output-dir "+filepath.Join(file, "deltas")+": mkdir "+file+": not a directory")
}

// TestFetchFailureClearsProgress checks that a download that fails part-way
// erases its progress bar, so that the reason after it starts its own line
// on a terminal.
func TestFetchFailureClearsProgress(t *testing.T) {
	t.Parallel()
	host := newRegistry(t, false)
	repo := host + "/edge/progress"
	l := layer(t, goGzip, layergen.New(900, 4, 2<<10))
	pushImage(t, repo+":1", testImage(t, "amd64", l))
	var buf bytes.Buffer
	p := &progress{w: &buf, on: true, now: time.Now}
	dir := t.TempDir()
	bf := newBlobFiles(newClient(t.Context(), false, time.Minute, nil), dir, p)
	b := l.Blob()
	b.Size++ // the registry's blob falls short of it: the download fails at its end
	if _, err := bf.open(ref(t, repo+":1").Context(), b); err == nil {
		t.Fatalf("open(%s, %d bytes) succeeded, want a size mismatch", b.Digest, b.Size)
	}
	if got := buf.String(); !strings.Contains(got, "fetch "+shortDigest(b.Digest)) || !strings.HasSuffix(got, "\r\033[K") {
		t.Errorf("progress after a failed fetch = %q, want a bar and then an erase", got)
	}
	if got := dirEntries(t, dir); len(got) != 0 {
		t.Errorf("a failed fetch left %v in --tmp", got)
	}
}

// TestTablesEscapeControlCharacters checks that strings from a registry
// (an index's platforms, an artifact's parse error) with a terminal escape
// sequence are shown in tables, not run by the terminal.
func TestTablesEscapeControlCharacters(t *testing.T) {
	t.Parallel()
	const platform, why = "linux\x1b[2J/amd64", "annotation \"\x1b]0;pwned\x07\" is not JSON"
	d := digest.FromString("x")
	ins := inspectReport{Image: imageRef{Ref: "r/app:1", Digest: d}, Platforms: []inspectPlatform{{Platform: platform, Manifest: d, Artifacts: []inspectArtifact{{Digest: d, Error: why}}}}}
	diff := diffReport{Platforms: []diffPlatform{{Platform: platform, Manifest: d, Artifact: &layerdelta.Blob{Digest: d, Size: 1}}}}
	for name, write := range map[string]func(*env){"inspect": ins.writeTable, "diff": diff.writeTable} {
		var out strings.Builder
		write(&env{stdout: &out})
		if strings.ContainsRune(out.String(), 0x1b) || strings.ContainsRune(out.String(), 0x07) {
			t.Errorf("%s table holds control characters: %q", name, out.String())
		}
		if !strings.Contains(out.String(), `linux\x1b[2J/amd64`) {
			t.Errorf("%s table does not show the platform escaped: %q", name, out.String())
		}
	}
}
