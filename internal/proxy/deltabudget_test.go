package proxy

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/layerdelta"
	"github.com/registry-edge/registry-edge/internal/meta"
)

// newBareProxy is a proxy on an empty store and metadata, with no
// upstream.
func newBareProxy(t *testing.T, opts Options) *Proxy {
	t.Helper()
	store, db := newStoreAndDB(t)
	return New(store, db, nil, opts)
}

// newStoreAndDB opens an empty store and metadata, closed at the test's
// end.
func newStoreAndDB(t *testing.T) (*blobstore.FS, *meta.DB) {
	t.Helper()
	root := t.TempDir()
	store, err := blobstore.NewFS(root, blobstore.FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	db, err := meta.Open(filepath.Join(root, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return store, db
}

func TestDeltaMemoryEstimate(t *testing.T) {
	t.Parallel()
	bases := []layerdelta.Blob{{Size: 10 << 20}, {Size: 30 << 20}}
	if got, want := deltaMemory(bases), int64(256<<20+120<<20); got != want {
		t.Errorf("deltaMemory = %d, want %d (tables plus 3 × the bases)", got, want)
	}
}

// A delta computation waits for its memory estimate to fit the budget:
// with the budget taken, it blocks (synctest sees it durably blocked) and
// computes nothing until room is released.
func TestDeltaComputationWaitsForMemory(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		p := newBareProxy(t, Options{DeltaWorkers: 4, DeltaMemoryBudget: 512 << 20})
		target := layerdelta.Blob{Digest: digest.FromString("not stored"), Size: 1 << 20}
		bases := []layerdelta.Blob{{Digest: digest.FromString("not stored either"), Size: 1 << 20}}

		// With room, the computation starts, and fails on the missing blob.
		if _, err := p.computeDelta(context.Background(), Target{}, target, bases); err == nil || errors.Is(err, context.Canceled) {
			t.Fatalf("computeDelta with room = %v, want a missing-blob error", err)
		}
		// Without: it waits.
		if err := p.deltaMemory.Acquire(context.Background(), 400<<20); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := p.computeDelta(context.Background(), Target{}, target, bases)
			done <- err
		}()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("computeDelta ran without room in the memory budget: %v", err)
		default:
		}
		// Released, it runs.
		p.deltaMemory.Release(400 << 20)
		if err := <-done; err == nil || errors.Is(err, context.Canceled) {
			t.Errorf("computeDelta after release = %v, want a missing-blob error", err)
		}
	})
}

// Computations waiting for a worker are bounded: past maxQueuedDeltas, a
// request gets "no delta" at once (not remembered as such: it is a matter
// of load, not of the layer).
func TestDeltaQueueIsBounded(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		p := newBareProxy(t, Options{DeltaWorkers: 1})
		target := layerdelta.Blob{Digest: digest.FromString("not stored"), Size: 1 << 20}
		p.deltaWorkers <- struct{}{} // the one worker is busy
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, maxQueuedDeltas)
		for range maxQueuedDeltas {
			go func() {
				_, err := p.computeDelta(ctx, Target{}, target, nil)
				done <- err
			}()
		}
		synctest.Wait()
		if len(done) != 0 {
			t.Fatalf("a queued computation ended: %v", <-done)
		}
		if _, err := p.computeDelta(ctx, Target{}, target, nil); !errors.Is(err, ErrNoDelta) || !errors.Is(err, errDeltaQueueFull) {
			t.Errorf("computation past the queue's bound = %v, want ErrNoDelta (queue full)", err)
		}
		cancel()
		for range maxQueuedDeltas {
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("queued computation, cancelled: %v", err)
			}
		}
		if n := p.deltasQueued.Load(); n != 0 {
			t.Errorf("%d computations still counted as queued", n)
		}
	})
}

// The memory of layers that gave no delta forgets expired entries: its
// keys come from lower tiers, it must not grow for the life of the process.
func TestNoDeltaMemoryIsPruned(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := newBareProxy(t, Options{Now: func() time.Time { return now }})
	for i := range 255 {
		p.rememberNoDelta("old " + strconv.Itoa(i))
	}
	now = now.Add(2 * noDeltaTTL)
	p.rememberNoDelta("new") // the 256th record prunes
	n := 0
	p.noDelta.Range(func(any, any) bool { n++; return true })
	if n != 1 {
		t.Errorf("%d entries kept, want 1 (the unexpired one)", n)
	}
}

// Once Close has begun, no fill or background work starts: Close waits for
// what it counted, and nothing may run on against the closed metadata.
func TestNothingStartsAfterClose(t *testing.T) {
	t.Parallel()
	p := newBareProxy(t, Options{})
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.joinFill(context.Background(), Target{}, digest.FromString("after close"), p.endedFills()); !errors.Is(err, errdef.ErrUnavailable) {
		t.Errorf("fill after Close: %v, want ErrUnavailable", err)
	}
	if p.startBackground() {
		t.Error("background work started after Close")
	}
}

// Precomputation survives a restart while lower tiers keep asking for
// deltas, and stops once they have not for deltasAskedFor.
func TestDeltasAskedExpires(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		asked time.Duration // ago
		want  bool
	}{{24 * time.Hour, true}, {deltasAskedFor + time.Hour, false}} {
		store, db := newStoreAndDB(t)
		if err := db.NoteState(context.Background(), meta.StateDeltasAsked, now.Add(-c.asked)); err != nil {
			t.Fatal(err)
		}
		p := New(store, db, nil, Options{Now: func() time.Time { return now }})
		if got := p.askedForDeltas.Load(); got != c.want {
			t.Errorf("asked %s ago: precompute on = %v, want %v", c.asked, got, c.want)
		}
	}
}
