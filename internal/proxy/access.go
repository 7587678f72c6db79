package proxy

import (
	"context"
	"io"
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
	// sending counts the clients each blob is being sent to now. A layer
	// sent to a slow device takes longer than storage.minIdle (1 GiB at
	// 1 Mbit/s: over two hours), and its request was its only recorded
	// use: eviction took the image from under the transfer, and the
	// device's Range request to resume it after a dropped connection then
	// found nothing, with the uplink down nothing at all.
	sending map[digest.Digest]int
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

// send records that d is being sent to a client until done is called,
// which records its use then: until it ends and for storage.minIdle
// after (a device resuming a dropped transfer), the blob is in use.
func (a *accessTracker) send(d digest.Digest, now func() time.Time) (done func()) {
	a.mu.Lock()
	if a.sending == nil {
		a.sending = map[digest.Digest]int{}
	}
	a.sending[d]++
	a.mu.Unlock()
	return sync.OnceFunc(func() {
		a.mu.Lock()
		if a.sending[d]--; a.sending[d] <= 0 {
			delete(a.sending, d)
		}
		a.mu.Unlock()
		a.touch(d, now())
	})
}

// drain returns the access times recorded since the last drain, and now
// for every blob being sent.
func (a *accessTracker) drain(now time.Time) map[digest.Digest]time.Time {
	a.mu.Lock()
	m := a.m
	a.m = nil
	for d := range a.sending {
		if m == nil {
			m = map[digest.Digest]int64{}
		}
		m[d] = now.Unix()
	}
	a.mu.Unlock()
	out := make(map[digest.Digest]time.Time, len(m))
	for d, s := range m {
		out[d] = time.Unix(s, 0)
	}
	return out
}

// used returns the digests touched since the last drain, and every blob
// being sent.
func (a *accessTracker) used() map[digest.Digest]bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[digest.Digest]bool, len(a.m)+len(a.sending))
	for d := range a.m {
		out[d] = true
	}
	for d := range a.sending {
		out[d] = true
	}
	return out
}

// UsedSinceFlush returns the manifests and blobs served since the last
// FlushAccess, and the blobs being sent now (gc.Evictor).
func (p *Proxy) UsedSinceFlush() map[digest.Digest]bool { return p.access.used() }

// FlushAccess writes the access times recorded since the last flush to the
// metadata store, and records the blobs being sent as used now.
func (p *Proxy) FlushAccess(ctx context.Context) error {
	return p.db.Touch(ctx, p.access.drain(p.now()))
}

// Forget drops evicted content d from the proxy's memory caches, its
// signature trust included (its records went with it). The repository
// links cache is cleared as a whole (it refills from metadata).
func (p *Proxy) Forget(d digest.Digest) {
	p.hot.remove(d)
	p.links.clear()
	p.verified.forget(d)
}

// sentBlob is stored content being sent to a client: in use until closed.
type sentBlob struct {
	io.ReadSeekCloser
	done func()
}

func (b sentBlob) Close() error {
	b.done()
	return b.ReadSeekCloser.Close()
}
