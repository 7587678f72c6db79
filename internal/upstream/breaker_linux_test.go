package upstream

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/testutil/hangnet"
)

// hangingAddr returns the address of a listener whose connect attempts
// hang, like a blackholed host: its backlog is 0, nothing accepts, and once
// the queue holds one connection the kernel drops further SYNs.
func hangingAddr(t *testing.T) string {
	t.Helper()
	ln := hangnet.ZeroBacklog(t)
	t.Cleanup(func() { ln.Close() })
	addr := ln.Addr().String()
	for range 3 {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatal("connections to a full listen queue still complete: connect does not hang on this system")
	return ""
}

// A connect that hangs costs the caller at most the connect timeout (or its
// own shorter deadline), counts as a failure, and once the breaker is open
// no connect is attempted.
func TestClientBreakerConnectHangs(t *testing.T) {
	t.Parallel()
	u := "http://" + hangingAddr(t)
	clk := newFakeClock()
	c := newTestClient(t, u, breakerOptions(clk, 2), func(o *Options) {
		o.RetryMax = 3
		o.ConnectTimeout = 200 * time.Millisecond
	})
	_, err := c.Resolve(context.Background(), "a", "v1", nil)
	if !errors.Is(err, errdef.ErrUnavailable) || !isTimeout(err) {
		t.Fatalf("Resolve() error = %v, want a connect timeout matching ErrUnavailable", err)
	}
	if s := c.Health().State; s != BreakerClosed {
		t.Fatalf("state = %s after one request, want closed: a connect timeout is not retried", s)
	}

	// A caller whose deadline is shorter than the connect timeout (the
	// proxy's revalidation) is answered at its deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	slow := newTestClient(t, u, func(o *Options) { o.ConnectTimeout = time.Hour })
	done := make(chan error, 1)
	go func() {
		_, err := slow.Resolve(ctx, "a", "v1", nil)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Resolve() with a 50ms deadline: error = %v, want context.DeadlineExceeded", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Resolve() still connecting 30s after its deadline")
	}

	if _, err := c.Resolve(context.Background(), "a", "v1", nil); !isTimeout(err) {
		t.Fatalf("second Resolve() error = %v, want a timeout", err)
	}
	if s := c.Health().State; s != BreakerOpen {
		t.Fatalf("state = %s after two connect timeouts, want open", s)
	}
	if _, err := c.Resolve(context.Background(), "a", "v1", nil); !errors.As(err, new(*BreakerOpenError)) {
		t.Errorf("Resolve() with the breaker open: error = %v, want *BreakerOpenError", err)
	}
}
