package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

// BlobResult is a blob ready to serve.
type BlobResult struct {
	// Size is the blob's size, or -1 if the upstream did not say.
	Size int64
	// Content reads the blob. For a stored blob it is an *os.File; for a
	// blob being filled it waits for bytes as they arrive, and a failed fill
	// makes it return an error (never a clean EOF of a wrong body).
	Content io.ReadSeekCloser
	// Bytes is the whole blob when it is held in memory (small blobs).
	Bytes []byte
	// Redirect, if set, is where the client should GET the stored blob
	// (Options.RedirectBlobs); Content is nil then.
	Redirect string
	Cache    string
}

// redirector is a store whose blobs clients can GET directly from a URL
// (objects in a bucket, presigned).
type redirector interface {
	RedirectURL(ctx context.Context, d digest.Digest) (string, error)
}

// Blob returns blob d of t, from the store or through a fill, once the
// signature policy (if any) allows it. The caller must close Content.
func (p *Proxy) Blob(ctx context.Context, t Target, d digest.Digest) (BlobResult, error) {
	if err := p.checkBlob(ctx, t, d); err != nil {
		return BlobResult{}, err
	}
	var (
		f       *fill
		created bool
	)
	for attempt := 0; ; attempt++ {
		ended := p.endedFills()
		res, err := p.localBlob(ctx, t, d)
		if err == nil {
			p.access.touch(d) // in use: not evicted under a pull (gc.Options.MinIdle)
			if res.Content != nil && res.Bytes == nil {
				// From the store: a transfer that may last hours. (One
				// from memory is a single write; its request's touch
				// covers it.)
				res.Content = sentBlob{ReadSeekCloser: res.Content, done: p.access.send(d)}
			}
		}
		if err == nil || !errors.Is(err, errNotStored) || attempt == 2 {
			return res, err
		}
		if p.diskIsFull() && p.runningFill(d) == nil {
			return p.passThrough(ctx, t, d)
		}
		f, created, err = p.joinFill(ctx, t, d, ended)
		if errors.Is(err, errStoredMeanwhile) {
			// Stored by a fill, or another upstream's fill ended (see
			// join): from the store, or a fill of this client's own.
			continue
		}
		if err != nil {
			return BlobResult{}, err
		}
		break
	}
	if !created && f.waitingForLink() {
		h := upstreamHealth(t)
		if !h.Refusing() {
			// The link may be back (another request closed the breaker,
			// or its probe is due): the fill tries now rather than at the
			// end of its backoff, so that this client, or its next try,
			// gets the bytes (the fill's attempt is the probe).
			f.retry()
		}
		if h.State == upstream.BreakerOpen {
			// A fill waiting for the uplink to come back: a new client is
			// told at once, as for any blob not here, so that it can turn
			// to another host rather than wait for the stall limit.
			return BlobResult{}, fmt.Errorf("blob %s: not all here, and the upstream is unreachable: %w", d, errdef.ErrUnavailable)
		}
	}
	r, err := f.newReader(ctx, p.opts.ClientStallTimeout, p.opts.After, p.m.ClientStalls.Inc)
	if err != nil {
		return BlobResult{}, err
	}
	// Once committed, the blob may be evicted: not while it is sent.
	r.done = p.access.send(d)
	cache := CacheFill
	if created {
		cache = CacheMiss
	}
	return BlobResult{Size: r.size, Content: r, Cache: cache}, nil
}

// StatBlob returns the size of blob d of t without fetching it, once the
// signature policy (if any) allows it.
func (p *Proxy) StatBlob(ctx context.Context, t Target, d digest.Digest) (int64, string, error) {
	if err := p.checkBlob(ctx, t, d); err != nil {
		return 0, "", err
	}
	return p.statBlob(ctx, t, d)
}

func (p *Proxy) statBlob(ctx context.Context, t Target, d digest.Digest) (int64, string, error) {
	if b, ok := p.hot.get(d); ok {
		if err := p.ensureLinked(ctx, t, d); err != nil {
			return 0, "", err
		}
		return int64(len(b)), CacheHit, nil
	}
	if info, err := p.store.Stat(ctx, d); err == nil {
		if err := p.ensureLinked(ctx, t, d); err != nil {
			return 0, "", err
		}
		return info.Size, CacheHit, nil
	}
	if f := p.runningFill(d); f != nil && f.target.Repo == t.Repo {
		// Not longer than a client waits for bytes (a layer rebuilt
		// from a delta has no size until it is): the upstream knows.
		wctx, cancel := context.WithTimeout(ctx, p.opts.ClientStallTimeout)
		size, err := f.waitSize(wctx)
		cancel()
		if err == nil && size >= 0 {
			return size, CacheFill, nil
		}
	}
	size, err := t.Remote.Client.StatBlob(ctx, t.Repo.Name, d)
	p.countUpstream(t, "stat", err)
	if err != nil {
		return 0, "", err
	}
	return size, CacheMiss, nil
}

func (p *Proxy) localBlob(ctx context.Context, t Target, d digest.Digest) (BlobResult, error) {
	if b, ok := p.hot.get(d); ok {
		if err := p.ensureLinked(ctx, t, d); err != nil {
			return BlobResult{}, err
		}
		return BlobResult{Size: int64(len(b)), Content: memBlob{bytes.NewReader(b)}, Bytes: b, Cache: CacheHit}, nil
	}
	epoch := p.hot.epoch()
	rc, err := p.store.Open(ctx, d)
	if errors.Is(err, errdef.ErrNotFound) {
		return BlobResult{}, fmt.Errorf("%w: %w", errNotStored, err)
	}
	if err != nil {
		return BlobResult{}, storeFailed(err)
	}
	if err := p.ensureLinked(ctx, t, d); err != nil {
		rc.Close()
		return BlobResult{}, err
	}
	size, err := rc.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = rc.Seek(0, io.SeekStart)
	}
	if err != nil {
		rc.Close()
		return BlobResult{}, fmt.Errorf("blob %s: %w", d, err)
	}
	if rd, ok := p.store.(redirector); ok && p.opts.RedirectBlobs && size > hotItemMax {
		u, err := rd.RedirectURL(ctx, d)
		if err == nil && u != "" {
			rc.Close()
			return BlobResult{Size: size, Redirect: u, Cache: CacheHit}, nil
		}
		if err != nil {
			p.log.LogAttrs(ctx, slog.LevelWarn, "cannot redirect to the stored blob, streaming it", slog.String("digest", d.String()), slog.Any("err", err))
		}
	}
	if size <= hotItemMax {
		b := make([]byte, size)
		if _, err := io.ReadFull(rc, b); err != nil {
			rc.Close()
			return BlobResult{}, p.readFailed(ctx, "blob", d, errNotStored, err)
		}
		rc.Close()
		p.hot.add(d, b, epoch)
		return BlobResult{Size: size, Content: memBlob{bytes.NewReader(b)}, Bytes: b, Cache: CacheHit}, nil
	}
	return BlobResult{Size: size, Content: rc, Cache: CacheHit}, nil
}

// upstreamHealth returns the reachability of t's upstream (closed for a
// client that does not track it).
func upstreamHealth(t Target) upstream.Health {
	if h, ok := t.Remote.Client.(interface{ Health() upstream.Health }); ok {
		return h.Health()
	}
	return upstream.Health{}
}

// errNotStored means the store lacks a blob (as opposed to this repository
// not being allowed to read it): only then does a request start a fill.
var errNotStored = errors.New("blob not stored")

// memBlob serves content held in memory.
type memBlob struct{ *bytes.Reader }

func (memBlob) Close() error { return nil }

// ensureLinked checks that t's repository may read stored content d: it was
// fetched through that repository, or the upstream confirms the repository
// holds it. Without this, any client could read content of another
// (possibly private) repository by naming its digest.
func (p *Proxy) ensureLinked(ctx context.Context, t Target, d digest.Digest) error {
	ok, err := p.linked(ctx, t, d)
	if err != nil || ok {
		return err
	}
	fromThere, err := p.db.LinkedInRegistry(ctx, t.Repo.Registry, d)
	if err != nil {
		return err
	}
	if fromThere {
		// The bytes came from this upstream: its word is enough.
		return p.linkByWord(ctx, t, d)
	}
	if err := p.upstreamHasBytes(ctx, t, d); err != nil {
		return err
	}
	return p.link(ctx, t, d)
}

// linkByWord links blob d to t's repository once t's upstream says the
// repository holds it (upstreamHolds): for content that came from that
// upstream.
func (p *Proxy) linkByWord(ctx context.Context, t Target, d digest.Digest) error {
	if ok, err := p.linked(ctx, t, d); err != nil || ok {
		return err
	}
	if err := p.upstreamHolds(ctx, t, d); err != nil {
		return err
	}
	return p.link(ctx, t, d)
}

// link records that t's repository holds d.
func (p *Proxy) link(ctx context.Context, t Target, d digest.Digest) error {
	if err := p.recorded(ctx, p.db.Link(ctx, t.Repo, d)); err != nil {
		return err
	}
	p.links.add(t.Repo.String() + "@" + string(d))
	return nil
}

// upstreamHolds asks t's upstream whether t's repository holds blob d (a
// HEAD); it returns nil if it does.
func (p *Proxy) upstreamHolds(ctx context.Context, t Target, d digest.Digest) error {
	_, err := t.Remote.Client.StatBlob(ctx, t.Repo.Name, d)
	p.countUpstream(t, "stat", err)
	if errors.Is(err, errdef.ErrNotFound) {
		return fmt.Errorf("blob %s in %s: %w", d, t.Repo, errdef.ErrNotFound)
	}
	return err
}

// proofLen is the number of bytes of a stored blob that another upstream
// must send to show it holds the blob.
const proofLen = 256

// upstreamHasBytes checks that t's upstream holds blob d, stored here from
// another upstream only: a HEAD would take its word, and an upstream that
// lies (or a man in the middle of a plain-HTTP one) would then read any
// other registry's content by digest. It asks for proofLen bytes at a random
// offset (one bounded Range request) and compares them with the stored
// ones. It returns nil if they match, an error wrapping errdef.ErrNotFound
// if they do not.
func (p *Proxy) upstreamHasBytes(ctx context.Context, t Target, d digest.Digest) error {
	info, err := p.store.Stat(ctx, d)
	if err != nil {
		return err
	}
	return p.upstreamSends(ctx, t, d, info.Size, func() (io.ReadSeekCloser, error) { return p.store.Open(ctx, d) })
}

// upstreamSends is upstreamHasBytes for the size bytes of blob d that open
// reads (stored, or a complete partial download).
func (p *Proxy) upstreamSends(ctx context.Context, t Target, d digest.Digest, size int64, open func() (io.ReadSeekCloser, error)) error {
	var off int64
	if size > proofLen {
		off = rand.Int64N(size - proofLen + 1)
	}
	want := make([]byte, min(proofLen, size))
	f, err := open()
	if err != nil {
		return err
	}
	_, err = f.Seek(off, io.SeekStart)
	if err == nil {
		_, err = io.ReadFull(f, want)
	}
	f.Close()
	if err != nil {
		return err
	}
	got, err := t.Remote.Client.BlobRange(ctx, t.Repo.Name, d, off, int64(len(want)))
	p.countUpstream(t, "blob", err)
	if errors.Is(err, errdef.ErrNotFound) || errors.Is(err, errdef.ErrRangeNotSatisfiable) {
		return fmt.Errorf("blob %s in %s: %w", d, t.Repo, errdef.ErrNotFound)
	}
	if err != nil {
		return err
	}
	p.m.UpstreamBytes.WithLabelValues(t.Remote.Name).Add(float64(len(got)))
	if !bytes.Equal(got, want) {
		return fmt.Errorf("blob %s in %s: the upstream's bytes differ: %w", d, t.Repo, errdef.ErrNotFound)
	}
	return nil
}

// linked reports whether t's repository is known to hold d.
func (p *Proxy) linked(ctx context.Context, t Target, d digest.Digest) (bool, error) {
	key := t.Repo.String() + "@" + string(d)
	if p.links.has(key) {
		return true, nil
	}
	ok, err := p.db.Linked(ctx, t.Repo, d)
	if ok {
		p.links.add(key)
	}
	return ok, err
}

// EnsureBlob makes blob d of t stored, fetching it if needed (resuming a
// partial download, like any fill), and waits until it is committed. It is
// how content is pre-staged without a client. It returns the blob's size.
func (p *Proxy) EnsureBlob(ctx context.Context, t Target, d digest.Digest) (int64, error) {
	for {
		ended := p.endedFills()
		if info, err := p.store.Stat(ctx, d); err == nil {
			if err := p.ensureLinked(ctx, t, d); err != nil {
				return 0, err
			}
			return info.Size, nil
		}
		f, _, err := p.joinFill(ctx, t, d, ended)
		if errors.Is(err, errStoredMeanwhile) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if err := f.wait(ctx); err != nil {
			return 0, err
		}
		return f.finalSize(), nil
	}
}

// FillProgress reports the bytes on disk and the size (-1 if unknown) of a
// running fill of d; ok is false when none runs.
func (p *Proxy) FillProgress(d digest.Digest) (written, size int64, ok bool) {
	f := p.runningFill(d)
	if f == nil {
		return 0, 0, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written, f.size, true
}
