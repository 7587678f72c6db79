package e2e

import (
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/registry-edge/registry-edge/internal/testutil/hangnet"
)

// A signal stops deltactl while it waits for a registry: exit 130 for
// Ctrl-C (SIGINT), 143 for SIGTERM, as a shell reports them, with one line.
func TestDeltactlSignals(t *testing.T) {
	t.Parallel()
	bin := buildDeltactl(t)
	// A registry that accepts connections and never answers.
	ln, accepted := hangnet.Silent(t)
	for _, tt := range []struct {
		sig  syscall.Signal
		want int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}} {
		for len(accepted) > 0 {
			<-accepted // the previous run's connections
		}
		cmd := exec.Command(bin, "inspect", ln.Addr().String()+"/edge/app:1")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Once it has connected, deltactl handles signals (it sets that up
		// first) and waits for the registry.
		select {
		case <-accepted:
		case <-time.After(time.Minute):
			cmd.Process.Kill()
			t.Fatal("deltactl did not connect within a minute")
		}
		cmd.Process.Signal(tt.sig)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var err error
		select {
		case err = <-done:
		case <-time.After(time.Minute):
			cmd.Process.Kill()
			t.Fatalf("deltactl still running a minute after %v", tt.sig)
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != tt.want || stderr.String() != "deltactl: interrupted\n" {
			t.Errorf("after %v: %v, stderr %q; want exit %d and \"deltactl: interrupted\"", tt.sig, err, stderr.String(), tt.want)
		}
	}
}
