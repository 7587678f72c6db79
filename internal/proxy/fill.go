package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/errdef"
)

// fillBufferSize is the size of the copy buffer of a fill. Readers are
// woken once per buffer, so it also sets how often they see new bytes.
const fillBufferSize = 128 << 10

// fill is one upstream fetch of a blob into the store. It is owned by the
// proxy, not by the request that started it: a client that disconnects does
// not stop it. Every client of the blob, including those that join later,
// reads the ingest file as it grows.
type fill struct {
	d      digest.Digest
	target Target
	ing    blobstore.Ingest

	mu      sync.Mutex
	size    int64 // total size, -1 until known or if the upstream did not say
	sized   bool  // the upstream answered (size is final) or the fill failed
	written int64
	// verified is set once the written bytes matched the digest and size:
	// readers may then read to the end, whatever happens to the commit.
	verified bool
	done     bool
	err      error
	wake     chan struct{} // closed and replaced on every change
}

// joinFill returns the running fill of d, or starts one.
func (p *Proxy) joinFill(ctx context.Context, t Target, d digest.Digest) (*fill, bool, error) {
	if f := p.runningFill(d); f != nil {
		return p.join(ctx, t, f)
	}
	// Create the ingest file outside the lock, so that misses of other
	// digests do not queue behind this one's file creation.
	ing, err := p.store.Ingest(ctx, d)
	if err != nil {
		return nil, false, err
	}
	p.mu.Lock()
	if f, ok := p.fills[d]; ok {
		p.mu.Unlock()
		ing.Cancel()
		return p.join(ctx, t, f)
	}
	if _, err := p.store.Stat(ctx, d); err == nil {
		// A fill committed the blob since the caller looked.
		p.mu.Unlock()
		ing.Cancel()
		return nil, false, errStoredMeanwhile
	}
	f := &fill{d: d, target: t, ing: ing, size: -1, wake: make(chan struct{})}
	p.fills[d] = f
	p.wg.Add(1)
	p.mu.Unlock()

	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.FillTimeout)
	go func() {
		defer p.wg.Done()
		defer cancel()
		p.runFill(fctx, f)
	}()
	return f, true, nil
}

// errStoredMeanwhile tells Blob to serve the blob from the store after all.
var errStoredMeanwhile = errors.New("blob stored meanwhile")

func (p *Proxy) runningFill(d digest.Digest) *fill {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fills[d]
}

func (p *Proxy) join(ctx context.Context, t Target, f *fill) (*fill, bool, error) {
	if f.target.Repo != t.Repo {
		// Another repository's fill: confirm this one holds the blob too.
		if err := p.ensureLinked(ctx, t, f.d); err != nil {
			return nil, false, err
		}
	}
	return f, false, nil
}

func (p *Proxy) runFill(ctx context.Context, f *fill) {
	start := time.Now()
	p.m.FillsInFlight.Inc()
	defer p.m.FillsInFlight.Dec()
	log := p.log.With(slog.String("upstream", f.target.Remote.Name), slog.String("repo", f.target.Repo.Name), slog.String("digest", f.d.String()))

	err := p.fetchInto(ctx, f)
	if err == nil {
		err = f.ing.Verify(f.finalSize())
	}
	if err == nil {
		// Every byte is verified: clients may have the end of the blob now,
		// while the store makes it durable (fsync can take a while on the
		// SD cards of small gateways).
		f.markVerified()
		err = f.ing.Commit(ctx, f.finalSize())
	} else {
		f.ing.Cancel()
	}
	if err == nil {
		err = p.db.Link(ctx, f.target.Repo, f.d)
	}

	result := "ok"
	if err != nil {
		result = "error"
		reason := "upstream"
		switch {
		case errors.Is(err, errdef.ErrDigestMismatch), errors.Is(err, errdef.ErrSizeMismatch):
			reason = "verify"
		case errors.Is(err, errdef.ErrNotFound):
			reason = "not_found"
		}
		p.m.FillFailures.WithLabelValues(reason).Inc()
		if reason == "not_found" {
			log.LogAttrs(ctx, slog.LevelDebug, "blob not found upstream")
		} else {
			log.LogAttrs(ctx, slog.LevelError, "blob fill failed", slog.Int64("size", f.finalSize()), slog.Any("err", err))
		}
	} else {
		log.LogAttrs(ctx, slog.LevelInfo, "blob filled", slog.Int64("size", f.finalSize()), slog.Duration("duration", time.Since(start)))
	}
	p.m.FillDuration.WithLabelValues(result).Observe(time.Since(start).Seconds())

	// Publish the outcome before the fill leaves the map, so that a request
	// arriving in between sees either the fill (done) or the stored blob.
	f.finish(err)
	p.mu.Lock()
	delete(p.fills, f.d)
	p.mu.Unlock()
}

// fetchInto copies the blob from upstream into the ingest. Issue #4 adds
// resume from f.written here; this fill fails on the first broken body.
func (p *Proxy) fetchInto(ctx context.Context, f *fill) error {
	t := f.target
	resp, err := t.Remote.Client.Blob(ctx, t.Repo.Name, f.d, 0)
	p.countUpstream(t, "blob", err)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f.setSize(resp.Size)
	buf := make([]byte, fillBufferSize)
	limit := resp.Size
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if limit >= 0 && f.written+int64(n) > limit {
				return fmt.Errorf("blob %s: upstream sent more than %d bytes: %w", f.d, limit, errdef.ErrSizeMismatch)
			}
			if _, werr := f.ing.Write(buf[:n]); werr != nil {
				return fmt.Errorf("blob %s: write: %w", f.d, werr)
			}
			p.m.UpstreamBytes.WithLabelValues(t.Remote.Name).Add(float64(n))
			f.advance(int64(n))
			// Let the woken readers run now: on a small box the fill
			// would otherwise keep its processor (the upstream socket
			// rarely runs dry) and the first client would wait for the
			// scheduler to move it, milliseconds on a loaded VM.
			runtime.Gosched()
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("blob %s: read upstream after %d bytes: %w: %w", f.d, f.written, errdef.ErrUnavailable, rerr)
		}
	}
}

func (f *fill) broadcast() {
	close(f.wake)
	f.wake = make(chan struct{})
}

func (f *fill) setSize(size int64) {
	f.mu.Lock()
	f.size, f.sized = size, true
	f.broadcast()
	f.mu.Unlock()
}

func (f *fill) advance(n int64) {
	f.mu.Lock()
	f.written += n
	f.broadcast()
	f.mu.Unlock()
}

func (f *fill) markVerified() {
	f.mu.Lock()
	f.verified = true
	f.broadcast()
	f.mu.Unlock()
}

func (f *fill) finish(err error) {
	f.mu.Lock()
	f.done, f.err, f.sized = true, err, true
	if err == nil && f.size < 0 {
		f.size = f.written
	}
	f.broadcast()
	f.mu.Unlock()
}

func (f *fill) finalSize() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.size >= 0 {
		return f.size
	}
	if f.done {
		return f.written
	}
	return -1
}

// waitSize waits until the upstream answered and returns the blob size
// (-1 if the upstream did not say) or the fill's error.
func (f *fill) waitSize(ctx context.Context) (int64, error) {
	for {
		f.mu.Lock()
		sized, size, err, wake := f.sized, f.size, f.err, f.wake
		f.mu.Unlock()
		if err != nil {
			return 0, err
		}
		if sized {
			return size, nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// newReader waits for the upstream's answer and returns a reader of the
// growing blob.
func (f *fill) newReader(ctx context.Context) (*fillReader, error) {
	size, err := f.waitSize(ctx)
	if err != nil {
		return nil, err
	}
	file, err := f.ing.OpenReader()
	if err != nil {
		return nil, err
	}
	return &fillReader{f: f, ctx: ctx, file: file, size: size}, nil
}

// fillReader reads a blob while it is being filled. Reads wait for bytes to
// arrive; a failed fill returns its error, so a client's connection fails
// instead of ending cleanly on a wrong body.
type fillReader struct {
	f    *fill
	ctx  context.Context
	file io.ReadSeekCloser
	size int64
	off  int64
}

func (r *fillReader) Read(p []byte) (int, error) {
	for {
		r.f.mu.Lock()
		written, done, verified, err, wake := r.f.written, r.f.done, r.f.verified, r.f.err, r.f.wake
		r.f.mu.Unlock()
		if err != nil && !verified {
			return 0, err
		}
		avail := written - r.off
		if !verified && r.size >= 0 && r.off+avail >= r.size {
			// Hold back the last byte until the whole blob is verified: a
			// client that received every byte would otherwise see a clean
			// end of a body that may still fail its digest check.
			avail = r.size - 1 - r.off
		}
		if avail > 0 {
			if int64(len(p)) > avail {
				p = p[:avail]
			}
			n, rerr := r.file.Read(p)
			r.off += int64(n)
			if rerr == io.EOF {
				rerr = nil // more may come: the fill decides when the blob ends
			}
			return n, rerr
		}
		if done || verified {
			return 0, io.EOF
		}
		select {
		case <-wake:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

// Seek supports http.ServeContent: it needs the size (io.SeekEnd) and the
// start of a range. Reads past the written bytes wait, so seeking ahead
// serves a range of a blob that is still arriving.
func (r *fillReader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.off + offset
	case io.SeekEnd:
		if r.size < 0 {
			return 0, fmt.Errorf("seek from end of a blob of unknown size: %w", errdef.ErrUnsupported)
		}
		abs = r.size + offset
	default:
		return 0, fmt.Errorf("seek whence %d: %w", whence, errdef.ErrInvalid)
	}
	if abs < 0 {
		return 0, fmt.Errorf("seek to %d: %w", abs, errdef.ErrInvalid)
	}
	if _, err := r.file.Seek(abs, io.SeekStart); err != nil {
		return 0, err
	}
	r.off = abs
	return abs, nil
}

func (r *fillReader) Close() error { return r.file.Close() }
