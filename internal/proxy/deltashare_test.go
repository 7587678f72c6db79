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
	dto "github.com/prometheus/client_model/go"

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
	p, repos, old, nw := twoRepositories(t)
	ctx := context.Background()
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
		checkDeltaOf(t, p, tg, digest.FromBytes(nw), a.l.Delta.Digest)
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

// A region asked for a layer's delta through one repository, then through
// another holding the same layer and bases (two applications on one base
// image), gives the second the delta computed for the first, as its own,
// instead of computing it again.
func TestDeltaAskedForTwoRepositoriesOneAfterTheOther(t *testing.T) {
	t.Parallel()
	p, repos, old, nw := twoRepositories(t)
	ctx := context.Background()
	var first digest.Digest
	for i, tg := range repos {
		l, err := p.DeltaFor(ctx, tg, digest.FromBytes(nw), []digest.Digest{digest.FromBytes(old)})
		if err != nil {
			t.Fatalf("%s: %v", tg.Repo, err)
		}
		if i == 0 {
			first = l.Delta.Digest
		} else if l.Delta.Digest != first {
			t.Errorf("%s got delta %s, the first repository %s", tg.Repo, l.Delta.Digest, first)
		}
		checkDeltaOf(t, p, tg, digest.FromBytes(nw), l.Delta.Digest)
	}
	computed := 0.0
	for _, r := range []string{"found", "none"} { // one per computation
		var m dto.Metric
		if err := p.m.Deltas.Recipes.WithLabelValues(r).Write(&m); err != nil {
			t.Fatal(err)
		}
		computed += m.GetCounter().GetValue()
	}
	if computed != 1 {
		t.Errorf("%v delta computations for the same layer and bases, want 1", computed)
	}
}

// twoRepositories is a proxy holding a layer, old, and its next version,
// nw, both linked to two repositories.
func twoRepositories(t *testing.T) (p *Proxy, repos []Target, old, nw []byte) {
	t.Helper()
	p = newBareProxy(t, Options{DeltaWorkers: 1, DeltaMinimums: &layerdelta.Minimums{}})
	tree := layergen.New(50, 8, 4<<10)
	old, nw = layergen.Gzip(tree.Tar(), -1), layergen.Gzip(tree.Update(51).Tar(), -1)
	repos = []Target{
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
	return p, repos, old, nw
}

// checkDeltaOf checks that delta dd of layer d is tg's: linked to its
// repository (its lower tier fetches it there) and recorded for it.
func checkDeltaOf(t *testing.T, p *Proxy, tg Target, d, dd digest.Digest) {
	t.Helper()
	ctx := context.Background()
	if ok, err := p.db.Linked(ctx, tg.Repo, dd); err != nil || !ok {
		t.Errorf("delta %s linked to %s: %v, %v; its lower tier could not fetch it there", dd, tg.Repo, ok, err)
	}
	recs, err := p.db.Deltas(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(recs, func(r meta.DeltaRecord) bool { return r.Repo == tg.Repo && r.Descriptor.Digest == dd }) {
		t.Errorf("no record of delta %s for %s: the next ask computes it again", dd, tg.Repo)
	}
}
