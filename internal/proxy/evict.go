package proxy

import (
	"slices"
	"sync"

	"github.com/opencontainers/go-digest"
)

// evictGuard keeps eviction and the recording of stored content apart. A
// request that stores content and records it (a manifest fetched from
// upstream: Put, then its record) holds the digest; an eviction waits for
// the holders of its digests, and new holders wait for the eviction. Without
// it, a manifest fetched again while it is evicted finds its file still
// there (Put does nothing), is recorded after the eviction forgot it, and
// the file goes a moment later: a tag and a record pointing at nothing, an
// image lost while the uplink is down.
type evictGuard struct {
	mu       sync.Mutex
	changed  sync.Cond // evicting or holding changed
	evicting map[digest.Digest]bool
	holding  map[digest.Digest]int
}

func newEvictGuard() *evictGuard {
	g := &evictGuard{evicting: map[digest.Digest]bool{}, holding: map[digest.Digest]int{}}
	g.changed.L = &g.mu
	return g
}

// hold waits until d is not being evicted and keeps it from being evicted
// until release is called. A holder holds one digest at a time and waits
// for nothing else while it does.
func (g *evictGuard) hold(d digest.Digest) (release func()) {
	g.mu.Lock()
	for g.evicting[d] {
		g.changed.Wait()
	}
	g.holding[d]++
	g.mu.Unlock()
	return sync.OnceFunc(func() {
		g.mu.Lock()
		if g.holding[d]--; g.holding[d] == 0 {
			delete(g.holding, d)
			g.changed.Broadcast()
		}
		g.mu.Unlock()
	})
}

// Evict runs remove once no request holds any of ds, and keeps new
// requests from holding them until it returns (gc.Evictor).
func (p *Proxy) Evict(ds []digest.Digest, remove func() error) error {
	g := p.evictions
	g.mu.Lock()
	for _, d := range ds {
		g.evicting[d] = true
	}
	for slices.ContainsFunc(ds, func(d digest.Digest) bool { return g.holding[d] > 0 }) {
		g.changed.Wait()
	}
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		for _, d := range ds {
			delete(g.evicting, d)
		}
		g.changed.Broadcast()
		g.mu.Unlock()
	}()
	return remove()
}
