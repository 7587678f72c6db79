package proxy

import (
	"context"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// accessTracker remembers when manifests and blobs were last served, in
// memory; the proxy flushes it to the metadata store in batches
// (FlushAccess), where eviction reads it: an image was pulled when its
// manifests were, and is in use while its blobs are (gc.Options.MinIdle).
type accessTracker struct {
	mu sync.Mutex
	m  map[digest.Digest]int64 // unix seconds
}

func (a *accessTracker) touch(d digest.Digest, now time.Time) {
	s := now.Unix()
	a.mu.Lock()
	if a.m == nil {
		a.m = map[digest.Digest]int64{}
	}
	a.m[d] = s
	a.mu.Unlock()
}

func (a *accessTracker) drain() map[digest.Digest]time.Time {
	a.mu.Lock()
	m := a.m
	a.m = nil
	a.mu.Unlock()
	out := make(map[digest.Digest]time.Time, len(m))
	for d, s := range m {
		out[d] = time.Unix(s, 0)
	}
	return out
}

// FlushAccess writes the access times recorded since the last flush to the
// metadata store.
func (p *Proxy) FlushAccess(ctx context.Context) error {
	return p.db.Touch(ctx, p.access.drain())
}

// Forget drops evicted content d from the proxy's memory caches, its
// signature trust included (its records went with it). The repository
// links cache is cleared as a whole (it refills from metadata).
func (p *Proxy) Forget(d digest.Digest) {
	p.hot.remove(d)
	p.links.clear()
	p.verified.forget(d)
}
