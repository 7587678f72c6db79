package main

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/registry-edge/registry-edge/internal/testutil/hangnet"
)

// hangingRegistry answers /v2/ and then, for other paths, what answer
// does: nothing at all (nil), or the start of a body. It returns host:port.
func hangingRegistry(t *testing.T, answer func(w http.ResponseWriter)) string {
	t.Helper()
	stop := make(chan struct{})
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		if answer != nil {
			answer(w)
			w.(http.Flusher).Flush()
		}
		select {
		case <-stop:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(stop); s.Close() })
	return strings.TrimPrefix(s.URL, "http://")
}

// runBounded runs deltactl with ctx, failing the test if it has not
// returned after a minute.
func runBounded(t *testing.T, ctx context.Context, args ...string) result {
	t.Helper()
	done := make(chan result, 1)
	go func() {
		var stdout, stderr strings.Builder
		code := run(ctx, args, &stdout, &stderr)
		done <- result{code: code, stdout: stdout.String(), stderr: stderr.String()}
	}()
	// Bounded by the test binary's deadline, not by a time of its own: a
	// diff under -race on a loaded machine can take minutes, and only a
	// hang is a failure.
	var bound <-chan time.Time
	if deadline, ok := t.Deadline(); ok {
		bound = time.After(time.Until(deadline) - 10*time.Second)
	}
	select {
	case r := <-done:
		return r
	case <-bound:
		t.Fatalf("deltactl %s still running near the test's deadline", strings.Join(args, " "))
		return result{}
	}
}

// A registry that accepts a request and answers nothing, or stops in the
// middle of a body, fails the command after --timeout, with one line.
func TestRegistryThatStopsAnswering(t *testing.T) {
	t.Parallel()
	silent := hangingRegistry(t, nil)
	stalled := hangingRegistry(t, func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Header().Set("Content-Length", "5000")
		io.WriteString(w, `{"schemaVersion": 2,`)
	})
	for _, tt := range []struct {
		name, host, want string
	}{
		{"no answer", silent, "timeout awaiting response headers"},
		{"body stops", stalled, "no bytes arrived for 300ms"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runBounded(t, context.Background(), "inspect", "--timeout", "300ms", tt.host+"/edge/app:1")
			checkFailure(t, r, 1, tt.want)
		})
	}
	t.Run("leading flag", func(t *testing.T) {
		t.Parallel()
		r := runBounded(t, context.Background(), "--timeout=300ms", "plan", "--site-has", silent+"/edge/app:1", silent+"/edge/app:2")
		checkFailure(t, r, 1, "timeout awaiting response headers")
	})
	t.Run("silent TCP", func(t *testing.T) {
		// Accepts and never answers, not even a TLS handshake: the dial's
		// and the handshake's own timeouts (30 s and 10 s in
		// go-containerregistry) must not outlast --timeout.
		t.Parallel()
		ln, _ := hangnet.Silent(t)
		start := time.Now()
		r := runBounded(t, context.Background(), "inspect", "--timeout", "300ms", ln.Addr().String()+"/edge/app:1")
		if r.code != 1 {
			t.Errorf("exit %d, want 1; stderr %q", r.code, r.stderr)
		}
		if d := time.Since(start); d > 20*time.Second { // 3 tries, 1 s and 3 s apart; 30 s or more before
			t.Errorf("deltactl gave up after %s with --timeout 300ms: %s", d.Round(time.Millisecond), r.stderr)
		}
	})
	t.Run("zero", func(t *testing.T) {
		t.Parallel()
		checkFailure(t, deltactl(t, "inspect", "--timeout", "0s", silent+"/edge/app:1"), 2, "--timeout 0s: want a positive duration")
	})
}

// Ctrl-C (the context's end) while deltactl waits for a registry exits 130
// with "interrupted", not with the error that the cancellation caused.
func TestInterrupted(t *testing.T) {
	t.Parallel()
	host := hangingRegistry(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	r := runBounded(t, ctx, "inspect", host+"/edge/app:1")
	if r.code != 130 || r.stderr != "deltactl: interrupted\n" || r.stdout != "" {
		t.Errorf("interrupted inspect: exit %d, stdout %q, stderr %q; want 130 and \"deltactl: interrupted\"", r.code, r.stdout, r.stderr)
	}
}

// Interrupted while it pushes the second platform, diff --push says which
// artifact it had published.
func TestDiffPushInterrupted(t *testing.T) {
	t.Parallel()
	var armed atomic.Bool
	var puts atomic.Int32
	second, stop := make(chan struct{}), make(chan struct{})
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if armed.Load() && r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/sha256:") && puts.Add(1) == 2 {
			io.Copy(io.Discard, r.Body) // then the server notices the client leaving
			close(second)
			select { // holds the push until the client gives up
			case <-r.Context().Done():
			case <-stop:
			}
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(stop) }) // runs first
	rel := makeRelease(t, strings.TrimPrefix(s.URL, "http://"))
	armed.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-second
		cancel()
	}()
	r := runBounded(t, ctx, "diff", "--push", rel.oldRef, rel.newRef)
	if r.code != 130 || !strings.HasPrefix(r.stderr, "deltactl: interrupted; published before: sha256:") || !strings.Contains(r.stderr, "(linux/amd64)") {
		t.Errorf("interrupted push: exit %d, stderr %q; want 130 and the amd64 artifact", r.code, r.stderr)
	}
}

// A push that fails for one platform says which artifacts it published
// for the platforms before it.
func TestDiffPushFailurePartWay(t *testing.T) {
	t.Parallel()
	var armed atomic.Bool
	var puts atomic.Int32
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if armed.Load() && r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/sha256:") && puts.Add(1) > 1 {
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `{"errors":[{"code":"DENIED","message":"quota exceeded"}]}`)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	rel := makeRelease(t, strings.TrimPrefix(s.URL, "http://"))
	armed.Store(true)
	r := deltactl(t, "diff", "--push", rel.oldRef, rel.newRef)
	checkFailure(t, r, 1, "published before the failure: sha256:")
	if !strings.Contains(r.stderr, "(linux/amd64)") || !strings.Contains(r.stderr, "push deltas of") || !strings.Contains(r.stderr, "(linux/arm64)") {
		t.Errorf("stderr %q should name the failed platform (linux/arm64) and what was published (linux/amd64)", r.stderr)
	}
}

// diff --push to a repository the credentials may not push to fails at
// once, naming the repository, before it fetches a layer or computes a
// delta that it could not publish.
func TestDiffPushWithoutTheRightFailsFirst(t *testing.T) {
	t.Parallel()
	var armed atomic.Bool
	var layerGets atomic.Int32
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if armed.Load() {
			if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/blobs/uploads/") {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusForbidden)
				io.WriteString(w, `{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}`)
				return
			}
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
				layerGets.Add(1)
			}
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	rel := makeRelease(t, strings.TrimPrefix(s.URL, "http://"))
	armed.Store(true)
	r := deltactl(t, "diff", "--push", rel.oldRef, rel.newRef)
	checkFailure(t, r, 1, "--push: cannot push to ")
	if !strings.Contains(r.stderr, "DENIED") {
		t.Errorf("stderr %q should carry the registry's reason", r.stderr)
	}
	if n := layerGets.Load(); n != 0 {
		t.Errorf("%d blobs fetched before the push was refused, want none", n)
	}
}
