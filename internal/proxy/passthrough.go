package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/ociapi"
	"github.com/registry-edge/registry-edge/internal/stall"
	"github.com/registry-edge/registry-edge/internal/verify"
)

// CachePass is the cache outcome of content served straight from the
// upstream without being stored, while the store's disk is full.
const CachePass = "pass"

// diskFullFor is how long after a write failed with ENOSPC misses are
// served without caching, before the store is tried again (eviction, or
// the admin, may have made room meanwhile).
const diskFullFor = time.Minute

// noteWriteError records a full disk (ENOSPC) so that the next misses pass
// through, and asks for room.
func (p *Proxy) noteWriteError(ctx context.Context, err error) {
	if !diskFull(err) {
		return
	}
	first := p.diskFullUntil.Swap(p.now().Add(diskFullFor).UnixNano()) < p.now().UnixNano()
	if first {
		p.log.LogAttrs(ctx, slog.LevelError, "the store's disk is full: misses are served from the upstream without caching until there is room",
			slog.Duration("retry_after", diskFullFor), slog.Any("err", err))
	}
	p.m.DiskFull.Inc()
	// Room is asked for once per diskFullFor, and never while it is being
	// made: every write fails on a full disk, and each ask walks the store.
	if p.opts.OnDiskFull != nil && first && p.makingRoom.CompareAndSwap(false, true) {
		if !p.startBackground() {
			p.makingRoom.Store(false) // closing: no eviction starts now
			return
		}
		go func() {
			defer p.wg.Done()
			defer p.makingRoom.Store(false)
			p.opts.OnDiskFull(p.closing)
		}()
	}
}

// errDiskFullAnswer is what the clients of a fill that ran out of disk
// space are told (those that have received nothing yet): the next request
// passes through.
var errDiskFullAnswer = &ociapi.Error{Status: http.StatusServiceUnavailable, Code: ociapi.CodeUnavailable,
	Message: "the mirror's disk is full: ask again, the blob is then passed through from the upstream", RetryAfter: time.Second, Local: true}

// errStoreAnswer is what a client is told when the store cannot be read
// (an I/O error, a bucket that fails or does not answer): this mirror's own
// failure, 503, so that a device turns to another host (the registry
// itself) rather than take it for a bug, or for the upstream's.
var errStoreAnswer = &ociapi.Error{Status: http.StatusServiceUnavailable, Code: ociapi.CodeUnavailable,
	Message: "the mirror cannot read its store now", RetryAfter: time.Second, Local: true}

// storeFailed marks err, a failure to read the store, as errStoreAnswer;
// not found and a client that left are left as they are.
func storeFailed(err error) error {
	if err == nil || errors.Is(err, errdef.ErrNotFound) || errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%w: %w", errStoreAnswer, err)
}

// readFailed words err, a failed read of stored content d (a "blob" or a
// "manifest"): a copy altered in the store (a bucket written by someone
// else), whose digest the read found wrong, is as good as not stored and
// fetched again (notStored, the caller's sentinel for that); any other
// failure is the store's (storeFailed).
func (p *Proxy) readFailed(ctx context.Context, what string, d digest.Digest, notStored, err error) error {
	if errors.Is(err, errdef.ErrDigestMismatch) {
		p.log.LogAttrs(ctx, slog.LevelWarn, "stored "+what+" does not match its digest; fetching it again",
			slog.String("digest", d.String()), slog.Any("err", err))
		return fmt.Errorf("%s %s: %w: %w", what, d, notStored, err)
	}
	return storeFailed(fmt.Errorf("%s %s: %w", what, d, err))
}

// diskFull reports whether err says the disk is full. bbolt words some of
// its write errors with the system error's text only.
func diskFull(err error) bool {
	return err != nil && (errors.Is(err, syscall.ENOSPC) || strings.Contains(err.Error(), syscall.ENOSPC.Error()))
}

// recorded returns nil for a metadata write that failed because the disk is
// full (noted: misses pass through for a while): what was to be recorded (a
// tag's last check, a link, a manifest record) only saves upstream requests
// later, and the request must still be served. Other errors are returned.
func (p *Proxy) recorded(ctx context.Context, err error) error {
	if diskFull(err) {
		p.noteWriteError(ctx, err)
		return nil
	}
	return err
}

// diskIsFull reports whether misses should pass through.
func (p *Proxy) diskIsFull() bool { return p.now().UnixNano() < p.diskFullUntil.Load() }

// passThrough streams blob d from the upstream to the client without
// storing it. Every byte is still checked: the last one is held back until
// the whole blob hashed to d, so a wrong body never ends cleanly.
func (p *Proxy) passThrough(ctx context.Context, t Target, d digest.Digest) (BlobResult, error) {
	resp, err := t.Remote.Client.Blob(ctx, t.Repo.Name, d, 0, "")
	p.countUpstream(t, "blob", err)
	if err != nil {
		return BlobResult{}, err
	}
	dg, err := verify.NewDigester(d)
	if err != nil {
		resp.Body.Close()
		return BlobResult{}, err
	}
	// Watched for stalls like a fill's body: an upstream that stops
	// sending without closing (a cellular link gone silent) would
	// otherwise hold the client, which nothing else times out, for good.
	body := stall.NewReader(resp.Body, p.opts.FillStallTimeout)
	r := &passReader{body: body, dg: dg, size: resp.Size, up: t.Remote.Name, p: p, last: -1}
	return BlobResult{Size: resp.Size, Content: r, Cache: CachePass}, nil
}

// passReader reads an upstream body, hashing it, and returns the final
// byte only once the whole body matched its digest and size. It serves one
// range too (Seek before the first Read, then EndRangeAt): the bytes before
// it are read and hashed but not returned, and so are those after it, up
// to the end of the blob, before the range's last byte is returned. A range
// costs the whole blob from the upstream, as a fill does, and is as
// verified.
type passReader struct {
	body io.ReadCloser
	dg   *verify.Digester
	size int64
	up   string
	p    *Proxy

	buf      []byte
	pending  []byte // read from upstream, not yet returned or passed over; pending[0] is byte pos
	pos      int64
	read     int64 // bytes read from upstream
	start    int64 // the first byte to return
	last     int64 // the last byte to return, or -1: the blob's last
	given    bool  // a byte was returned
	verified bool
}

func (r *passReader) Read(b []byte) (int, error) {
	for {
		if skip := min(r.start-r.pos, int64(len(r.pending))); skip > 0 {
			// Before the range: hashed already, not returned.
			r.pending, r.pos = r.pending[skip:], r.pos+skip
			continue
		}
		if r.last >= 0 && r.pos+int64(len(r.pending)) > r.last+1 {
			// After the range: not needed beyond its hash.
			r.pending = r.pending[:r.last+1-r.pos]
		}
		if r.verified || len(r.pending) > 1 {
			// Everything but the last byte may go before the blob is
			// verified: of the blob, or of the range once the rest of
			// the blob has still to be hashed.
			avail := r.pending
			if !r.verified {
				avail = avail[:len(avail)-1]
			}
			if len(avail) == 0 {
				return 0, io.EOF // verified, everything returned
			}
			n := copy(b, avail)
			r.pending, r.pos, r.given = r.pending[n:], r.pos+int64(n), true
			return n, nil
		}
		if r.buf == nil {
			r.buf = make([]byte, 32<<10)
		}
		n, err := r.body.Read(r.buf)
		if n > 0 {
			r.dg.Write(r.buf[:n])
			r.read += int64(n)
			r.p.m.UpstreamBytes.WithLabelValues(r.up).Add(float64(n))
			if r.size >= 0 && r.read > r.size {
				return 0, fmt.Errorf("blob: upstream sent more than %d bytes: %w", r.size, errdef.ErrSizeMismatch)
			}
			if r.last < 0 || r.read-int64(n) <= r.last {
				r.pending = append(r.pending, r.buf[:n]...)
			}
		}
		switch {
		case err == io.EOF:
			if verr := r.dg.Verify(r.size); verr != nil {
				return 0, verr
			}
			r.verified = true
		case err != nil:
			return 0, fmt.Errorf("blob: read upstream after %d bytes: %w: %w", r.read, errdef.ErrUnavailable, err)
		}
	}
}

// EndRangeAt says the reader serves a range whose last byte is at offset
// end (see fillReader.EndRangeAt).
func (r *passReader) EndRangeAt(end int64) { r.last = end }

// Seek supports what serving a blob or a range of it needs: the size, and
// the start of the range before anything was returned.
func (r *passReader) Seek(offset int64, whence int) (int64, error) {
	switch {
	case whence == io.SeekStart && offset >= 0 && !r.given && (r.size < 0 || offset <= r.size):
		r.start = offset
		return offset, nil
	case whence == io.SeekEnd && offset == 0 && r.size >= 0:
		return r.size, nil
	}
	return 0, fmt.Errorf("seek a blob passed through to %d (whence %d): %w", offset, whence, errdef.ErrUnsupported)
}

func (r *passReader) Close() error { return r.body.Close() }
