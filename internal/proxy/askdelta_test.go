package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/metrics"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

// scriptedNegotiator answers NegotiateDelta from a script: a
// *upstream.DeltaPending, another error, or (nil) the delta.
type scriptedNegotiator struct {
	mu     sync.Mutex
	script []error
	asked  int
}

func (s *scriptedNegotiator) DeltaPeer() bool { return true }

func (s *scriptedNegotiator) NegotiateDelta(context.Context, string, digest.Digest, []digest.Digest) (ocispec.Descriptor, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.script[min(s.asked, len(s.script)-1)]
	s.asked++
	if err != nil {
		return ocispec.Descriptor{}, false, err
	}
	return ocispec.Descriptor{Digest: digest.FromString("delta")}, true, nil
}

// An upstream that said it computes the delta is asked again after a
// failed ask or two (a 202 written late arrives after the header
// timeout); three failures in a row, or failures before any 202, end the
// negotiation.
func TestAskForDeltaAfterALateAnswer(t *testing.T) {
	t.Parallel()
	pending := &upstream.DeltaPending{RetryAfter: time.Millisecond}
	timeout := fmt.Errorf("timeout awaiting response headers: %w", errdef.ErrUnavailable)
	for _, c := range []struct {
		name   string
		script []error
		ok     bool
		asked  int
	}{
		{"late answer after a 202", []error{pending, timeout, nil}, true, 3},
		{"two late answers", []error{pending, timeout, timeout, nil}, true, 4},
		{"three late answers", []error{pending, timeout, timeout, timeout, nil}, false, 4},
		{"a failure before any 202", []error{timeout, nil}, false, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := newBareProxy(t, Options{Metrics: metrics.New()})
			n := &scriptedNegotiator{script: c.script}
			f := &fill{d: digest.FromString("layer"), target: Target{Remote: &Remote{Name: "region"}}}
			_, ok, err := p.askForDelta(context.Background(), n, f, []digest.Digest{digest.FromString("base")}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if ok != c.ok || n.asked != c.asked || (ok && err != nil) {
				t.Errorf("ok %v after %d asks (err %v), want ok %v after %d", ok, n.asked, err, c.ok, c.asked)
			}
		})
	}
}
