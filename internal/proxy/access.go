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
//
// Accesses are measured on the monotonic clock (elapsed) and given a wall
// time only when flushed, in the wall clock's frame then: a gateway without
// an RTC boots with a wrong clock (1970, or its last shutdown time) that
// NTP steps minutes later, and the images pulled before the step, the ones
// its devices run, were stamped years before the content genuinely pulled
// long ago, and evicted first. A step between two flushes is seen at the
// second (the wall clock moved by more than the monotonic one), and every
// access of this run is written again in the new frame.
type accessTracker struct {
	elapsed func() time.Duration
	mu      sync.Mutex
	m       map[digest.Digest]time.Duration // since the last drain
	// run is the last access of everything served since the process
	// started (one entry per digest of the store at most), to write
	// again after a step.
	run map[digest.Digest]time.Duration
	// origin is the wall time of elapsed 0 at the last drain; drained
	// tells it was set.
	origin  time.Time
	drained bool
	// sending counts the clients each blob is being sent to now. A layer
	// sent to a slow device takes longer than storage.minIdle (1 GiB at
	// 1 Mbit/s: over two hours), and its request was its only recorded
	// use: eviction took the image from under the transfer, and the
	// device's Range request to resume it after a dropped connection then
	// found nothing, with the uplink down nothing at all.
	sending map[digest.Digest]int
}

// stepTolerance is how far the wall clock may drift from the monotonic one
// between two flushes and not count as a step: access times are whole
// seconds, and NTP slews small offsets rather than stepping.
const stepTolerance = 2 * time.Second

func (a *accessTracker) touch(d digest.Digest) {
	e := a.elapsed()
	a.mu.Lock()
	if a.m == nil {
		a.m = map[digest.Digest]time.Duration{}
	}
	if a.run == nil {
		a.run = map[digest.Digest]time.Duration{}
	}
	a.m[d], a.run[d] = e, e
	a.mu.Unlock()
}

// send records that d is being sent to a client until done is called,
// which records its use then: until it ends and for storage.minIdle
// after (a device resuming a dropped transfer), the blob is in use.
func (a *accessTracker) send(d digest.Digest) (done func()) {
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
		a.touch(d)
	})
}

// drain returns the access times recorded since the last drain, and now
// for every blob being sent, in the frame of the wall clock now. When the
// wall clock was stepped since the last drain, it returns every access of
// this run, and stepped is set: what earlier drains returned was in the
// old frame.
func (a *accessTracker) drain(now time.Time) (at map[digest.Digest]time.Time, stepped bool) {
	e := a.elapsed()
	origin := now.Add(-e)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.drained {
		shift := origin.Sub(a.origin)
		stepped = shift > stepTolerance || shift < -stepTolerance
	}
	a.origin, a.drained = origin, true
	src := a.m
	if stepped {
		src = a.run
	}
	a.m = nil
	at = make(map[digest.Digest]time.Time, len(src)+len(a.sending))
	for d, t := range src {
		// Whole seconds, rounded down, as stored; never after now.
		at[d] = time.Unix(origin.Add(t).Unix(), 0)
	}
	for d := range a.sending {
		at[d] = time.Unix(now.Unix(), 0)
	}
	return at, stepped
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
// metadata store, and records the blobs being sent as used now. After a
// step of the wall clock, it writes every access of this run again, in the
// new frame, over what is stored, and brings stored times later than now
// (written before a step back) down to now.
func (p *Proxy) FlushAccess(ctx context.Context) error {
	now := p.now()
	at, stepped := p.access.drain(now)
	if stepped {
		return p.db.Restamp(ctx, at, now)
	}
	return p.db.Touch(ctx, at)
}

// Forget drops evicted content d from the proxy's memory caches, its
// signature trust included (its records went with it). The repository
// links cache is cleared as a whole (it refills from metadata).
func (p *Proxy) Forget(d digest.Digest) {
	p.access.forget(d)
	p.hot.remove(d)
	p.links.clear()
	p.verified.forget(d)
}

// forget drops d from the accesses of this run: evicted, it is not
// written again after a step of the clock, and the run's record stays as
// large as the store, not as everything the process ever served.
func (a *accessTracker) forget(d digest.Digest) {
	a.mu.Lock()
	delete(a.run, d)
	a.mu.Unlock()
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
