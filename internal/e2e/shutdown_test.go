package e2e

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stallingUpstream is an upstream whose one blob sends its first half and
// then nothing until the test ends: a fill that holds a shutdown for its
// whole grace. It returns the upstream's address and the blob's digest.
func stallingUpstream(t *testing.T) (string, string) {
	t.Helper()
	blob := []byte(strings.Repeat("stalled layer ", 1<<16))
	digest := fmt.Sprintf("sha256:%x", sha256.Sum256(blob))
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/blobs/"+digest) {
			return // GET /v2/: 200
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(blob)))
		w.Header().Set("Docker-Content-Digest", digest)
		if r.Method == http.MethodHead {
			return
		}
		w.Write(blob[:len(blob)/2])
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs first: the handler returns
	return srv.Listener.Addr().String(), digest
}

// A second SIGTERM or SIGINT while the mirror waits for a download to end
// (up to 30 s, then 10 s for fills) exits at once, 143 or 130 as a shell
// reports it, with one line saying so; the first one alone waits.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		sig  syscall.Signal
		want int
	}{{syscall.SIGTERM, 143}, {syscall.SIGINT, 130}} {
		t.Run(tt.sig.String(), func(t *testing.T) {
			t.Parallel()
			upstream, digest := stallingUpstream(t)
			m := startMirror(t, upstream, mirrorOptions{})
			resp, err := http.Get("http://" + m.addr + "/v2/edge/app/blobs/" + digest)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if _, err := io.ReadFull(resp.Body, make([]byte, 1024)); err != nil {
				t.Fatalf("first bytes of the blob: %v", err)
			}
			m.proc.cmd.Process.Signal(tt.sig)
			waitLogLine(t, m.proc, "shutting down")
			if m.proc.exited() {
				t.Fatalf("the mirror exited on the first signal with a download running: %v", m.proc.err)
			}
			m.proc.cmd.Process.Signal(tt.sig)
			select {
			case <-m.proc.done:
			case <-time.After(time.Minute):
				t.Fatalf("still running a minute after the second %v", tt.sig)
			}
			var ee *exec.ExitError
			if !errors.As(m.proc.err, &ee) || ee.ExitCode() != tt.want {
				t.Errorf("after a second %v: %v, want exit status %d", tt.sig, m.proc.err, tt.want)
			}
			// Through the mirror's logger, as the rest of its log.
			for _, want := range []string{`msg="signal again while stopping: exiting at once"`, "signal=" + tt.sig.String()} {
				if !strings.Contains(m.proc.log(), want) {
					t.Errorf("the log lacks %q", want)
				}
			}
		})
	}
}

// waitLogLine waits up to a minute for want in p's log.
func waitLogLine(t *testing.T, p *process, want string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !strings.Contains(p.log(), want); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) || p.exited() {
			t.Fatalf("no %q in the %s log (exited: %v)", want, p.name, p.exited())
		}
	}
}
