package proxy

import (
	"bytes"
	"context"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/layerdelta"
	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/testutil/layergen"
)

// Two repositories holding the same layer and bases, whose lower tiers ask
// for its delta at once, share one computation; each gets the delta as a
// blob of its own repository (linked, recorded), which its lower tier then
// fetches through that repository.
func TestDeltaAskedForTwoRepositoriesAtOnce(t *testing.T) {
	t.Parallel()
	p := newBareProxy(t, Options{DeltaWorkers: 1, DeltaMinimums: &layerdelta.Minimums{}})
	tree := layergen.New(50, 8, 4<<10)
	old, nw := layergen.Gzip(tree.Tar(), -1), layergen.Gzip(tree.Update(51).Tar(), -1)
	repos := []Target{
		{Repo: meta.Repo{Registry: "central.test", Name: "team/a"}},
		{Repo: meta.Repo{Registry: "central.test", Name: "team/b"}},
	}
	ctx := context.Background()
	for _, b := range [][]byte{old, nw} {
		desc := ocispec.Descriptor{Digest: digest.FromBytes(b), Size: int64(len(b))}
		if err := p.store.Put(ctx, desc, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		for _, tg := range repos {
			if err := p.db.Link(ctx, tg.Repo, desc.Digest); err != nil {
				t.Fatal(err)
			}
		}
	}
	type answer struct {
		l   layerdelta.Layer
		err error
	}
	answers := make([]chan answer, len(repos))
	p.deltaWorkers <- struct{}{} // the one worker is busy: both asks wait for it
	for i, tg := range repos {
		answers[i] = make(chan answer, 1)
		go func() {
			l, err := p.DeltaFor(ctx, tg, digest.FromBytes(nw), []digest.Digest{digest.FromBytes(old)})
			answers[i] <- answer{l, err}
		}()
		waitForGoroutines(t, "(*Proxy).DeltaFor(", "[select", i+1)
	}
	<-p.deltaWorkers
	var shared digest.Digest
	for i, tg := range repos {
		a := <-answers[i]
		if a.err != nil {
			t.Fatalf("%s: %v", tg.Repo, a.err)
		}
		if shared == "" {
			shared = a.l.Delta.Digest
		} else if a.l.Delta.Digest != shared {
			t.Errorf("%s got delta %s, the other repository %s: computed twice", tg.Repo, a.l.Delta.Digest, shared)
		}
		if ok, err := p.db.Linked(ctx, tg.Repo, a.l.Delta.Digest); err != nil || !ok {
			t.Errorf("delta %s linked to %s: %v, %v; its lower tier could not fetch it there", a.l.Delta.Digest, tg.Repo, ok, err)
		}
		recs, err := p.db.Deltas(ctx, digest.FromBytes(nw))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(recs, func(r meta.DeltaRecord) bool { return r.Repo == tg.Repo && r.Descriptor.Digest == a.l.Delta.Digest }) {
			t.Errorf("no record of delta %s for %s: the next ask computes it again", a.l.Delta.Digest, tg.Repo)
		}
	}
}

// waitForGoroutines waits until n goroutines wait in a state starting with
// state (as runtime.Stack names it, e.g. "[select") with fn on their stack:
// a way to know that concurrent calls have reached a point that nothing
// else makes observable (synctest cannot be used with the delta codec,
// whose pooled encoders would leave the bubble).
func waitForGoroutines(t *testing.T, fn, state string, n int) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(time.Millisecond) {
		got := 0
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			header, _, _ := strings.Cut(g, "\n")
			if strings.Contains(header, state) && strings.Contains(g, fn) {
				got++
			}
		}
		if got >= n {
			return
		}
	}
	t.Fatalf("fewer than %d goroutines in %s with %s on their stack after 30 s", n, state, fn)
}
