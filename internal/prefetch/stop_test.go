package prefetch_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/registry-edge/registry-edge/internal/prefetch"
	"github.com/registry-edge/registry-edge/internal/testutil/fakeupstream"
	"github.com/registry-edge/registry-edge/internal/testutil/syncbuf"
)

// A pre-stage that the mirror's shutdown stops mid-layer did not fail: it
// is not logged as a failure (a routine restart must not raise a
// warning), and the image is pending again, not failed, for whoever
// watches it (registry-edge prefetch, the status page) until the process
// ends.
func TestPrefetchStoppedByShutdownIsNotAFailure(t *testing.T) {
	s := newSite(t)
	layer := fakeupstream.Random(t, 1<<16)
	_, layers := s.fake.Image("org/app", "1", layer)
	started, release := make(chan struct{}), make(chan struct{})
	s.fake.Fail(fakeupstream.ForPath("GET", layers[0].Digest.String(), fakeupstream.Gate(layer, started, release)))
	t.Cleanup(func() { close(release) }) // before the proxy closes
	var logs syncbuf.Buffer
	pf, err := prefetch.New(s.proxy, s.router, s.db, prefetch.Options{
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { pf.Run(ctx); close(done) }()
	if err := pf.Trigger([]prefetch.Image{{Ref: "org/app:1"}}, true); err != nil {
		t.Fatal(err)
	}
	<-started // the layer is being fetched
	stop()    // the shutdown
	<-done
	if out := logs.String(); strings.Contains(out, "level=WARN") || strings.Contains(out, "level=ERROR") {
		t.Errorf("a pre-stage stopped by the shutdown was logged as a failure:\n%s", out)
	}
	listed := false
	for _, st := range pf.Status() {
		if st.Ref != "org/app:1" {
			continue
		}
		listed = true
		if st.State != prefetch.StatePending {
			t.Errorf("state after the stop %q (%s), want %q", st.State, st.Error, prefetch.StatePending)
		}
	}
	if !listed {
		t.Errorf("org/app:1 is not in the status after the stop: %+v", pf.Status())
	}
}
