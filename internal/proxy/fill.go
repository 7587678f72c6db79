package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/ociapi"
	"github.com/registry-edge/registry-edge/internal/stall"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

// fillBufferSize is the size of the copy buffer of a fill. Readers are
// woken once per buffer, so it also sets how often they see new bytes.
const fillBufferSize = 128 << 10

// fill is one upstream fetch of a blob into the store. It is owned by the
// proxy, not by the request that started it: a client that disconnects does
// not stop it. Every client of the blob, including those that join later,
// reads the ingest file as it grows. When the transfer breaks, the fill
// resumes from the last byte on disk; when the fill gives up, what it
// received stays on disk (a partial) for the next fill of the blob.
type fill struct {
	d      digest.Digest
	target Target

	// Set by the fill goroutine before the first broadcast of sized;
	// readers use ing only after waitSize.
	ing  blobstore.Ingest
	part blobstore.Partial // ing, when the store can resume it; else nil
	etag string            // the upstream's strong validator, for If-Range
	// confirmed is set when the fill's repository is known to hold the
	// blob without the fill's own request for it (a delta of the blob
	// published for that repository, or offered by the tier above).
	confirmed bool
	// partRepo is the repository the upstream said holds the bytes on
	// disk (recorded with the partial): this fill's once the upstream
	// answered it.
	partRepo string

	mu      sync.Mutex
	size    int64 // total size, -1 until known or if the upstream did not say
	expect  int64 // the size the blob must have (a delta's descriptor says), or -1
	sized   bool  // the upstream answered (size is final) or the fill failed
	written int64
	// verified is set once the written bytes matched the digest and size:
	// readers may then read to the end, whatever happens to the commit.
	verified bool
	// deltaAttempt is set while the fill tries to rebuild its blob from a
	// delta (and may wait for another fill: its delta blob's).
	deltaAttempt bool
	// checkpointed is when the fill last checkpointed its partial, or
	// started: over all its requests, not each one's (an upstream that
	// caps its answers, or a link that drops every few seconds, would
	// otherwise leave no checkpoint at all).
	checkpointed time.Time
	// broken is set from a broken transfer until bytes flow again.
	broken bool
	// retryNow cuts short the wait of a broken transfer (a token): a
	// client asked for the blob while the upstream may be back.
	retryNow chan struct{}
	done     bool
	err      error
	wake     chan struct{} // closed and replaced on every change
}

// joinFill returns the running fill of d, or starts one. The caller found
// d missing in the store after ended (endedFills) fills had ended: if no
// fill ended since, none of this process's committed d meanwhile, and the
// store is not asked again. On a bucket that question is a HEAD and, when
// the object is missing, a LIST (the s3 driver's Stat), for every cold
// miss; asking it again microseconds after the caller would only catch
// another replica's commit in that instant, which the fill's own commit
// finds anyway (the object is there: no upload).
func (p *Proxy) joinFill(ctx context.Context, t Target, d digest.Digest, ended uint64) (*fill, bool, error) {
	p.mu.Lock()
	for {
		if f, ok := p.fills[d]; ok && !f.failed() {
			p.mu.Unlock()
			return p.joinRunning(ctx, t, f)
		}
		if p.fillsEnded == ended {
			break
		}
		// The store is asked without the lock (on a bucket, a HEAD):
		// misses of other blobs must not queue behind it. A fill that
		// ended meanwhile may have committed d: then ask again.
		ended = p.fillsEnded
		p.mu.Unlock()
		if _, err := p.store.Stat(ctx, d); err == nil {
			// A fill committed the blob since the caller looked.
			return nil, false, errStoredMeanwhile
		}
		p.mu.Lock()
		if p.fillsEnded == ended {
			break
		}
	}
	if f, ok := p.fills[d]; ok && !f.failed() {
		p.mu.Unlock()
		return p.joinRunning(ctx, t, f)
	}
	if p.closing.Err() != nil {
		// Shutting down: Close waits for the fills it counted.
		p.mu.Unlock()
		return nil, false, fmt.Errorf("blob %s: the mirror is shutting down: %w", d, errdef.ErrUnavailable)
	}
	f := &fill{d: d, target: t, size: -1, expect: -1, wake: make(chan struct{}), retryNow: make(chan struct{}, 1)}
	if size, ok := ctx.Value(expectSizeKey{}).(int64); ok {
		f.expect = size
	}
	p.fills[d] = f
	p.wg.Add(1)
	p.mu.Unlock()

	// The fill outlives the request (WithoutCancel) but not the proxy.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.FillTimeout)
	stop := context.AfterFunc(p.closing, cancel)
	go func() {
		defer p.wg.Done()
		defer cancel()
		defer stop()
		p.runFill(fctx, f)
	}()
	return f, true, nil
}

// endedFills returns how many fills have ended so far: taken before a
// store lookup, it tells joinFill whether a fill could have committed the
// blob since.
func (p *Proxy) endedFills() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fillsEnded
}

// errStoredMeanwhile tells Blob to serve the blob from the store after all.
var errStoredMeanwhile = errors.New("blob stored meanwhile")

func (p *Proxy) runningFill(d digest.Digest) *fill {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fills[d]
}

// errFillWaitsOnDelta refuses a fetch that must not depend on deltas (a
// delta blob's, for a delta attempt) a running fill that is in a delta
// attempt itself: that fill could be waiting for the very fill that asks,
// each until half its deadline. Of two such fills, the second to start
// its attempt sees the first's and gives way.
var errFillWaitsOnDelta = errors.New("the fill of this blob is trying a delta")

// joinRunning joins running fill f, unless the caller must not wait on
// deltas and f is in a delta attempt (errFillWaitsOnDelta).
func (p *Proxy) joinRunning(ctx context.Context, t Target, f *fill) (*fill, bool, error) {
	if ctx.Value(noDeltasKey{}) != nil && f.tryingDelta() {
		return nil, false, fmt.Errorf("blob %s: %w", f.d, errFillWaitsOnDelta)
	}
	return p.join(ctx, t, f)
}

func (p *Proxy) join(ctx context.Context, t Target, f *fill) (*fill, bool, error) {
	switch {
	case f.target.Repo == t.Repo:
	case f.target.Repo.Registry == t.Repo.Registry:
		// Another repository's fill: the upstream confirms this one
		// holds the blob too.
		if err := p.linkByWord(ctx, t, f.d); err != nil {
			return nil, false, err
		}
	default:
		// Another upstream's fill: this one must send bytes of the blob
		// (ensureLinked), which are compared once the blob is stored. If
		// that fill fails, the caller finds no blob and no fill, and
		// fills from its own upstream.
		if err := f.wait(ctx); err != nil && ctx.Err() != nil {
			return nil, false, err
		}
		return nil, false, errStoredMeanwhile
	}
	return f, false, nil
}

// openIngest opens the partial download of f's blob (what an earlier fill
// or process left), or a plain ingest when the store cannot resume.
func (p *Proxy) openIngest(ctx context.Context, f *fill, log *slog.Logger) error {
	if r, ok := p.store.(blobstore.Resumer); ok {
		part, err := r.Resume(ctx, f.d)
		if err == nil {
			f.ing, f.part, f.etag, f.partRepo = part, part, part.Meta().ETag, part.Meta().Repo
			size := part.Meta().Size
			if size < 0 && part.Written() > 0 && part.Verify(-1) == nil {
				// Bytes that hash to the digest are the whole blob, whatever
				// the checkpoint says: a fill killed after its clients had
				// the last byte and before its commit leaves them with no
				// checkpoint, or one written before the upstream gave the
				// size. Unknown, the size would send the fill upstream for
				// the bytes after them (a 416), and with the uplink down
				// the blob would not be served.
				size = part.Written()
			}
			f.mu.Lock()
			f.written, f.size = part.Written(), size
			f.mu.Unlock()
			return nil
		}
		log.LogAttrs(ctx, slog.LevelWarn, "cannot resume the blob's partial download; fetching it anew", slog.Any("err", err))
	}
	ing, err := p.store.Ingest(ctx, f.d)
	if err != nil {
		return err
	}
	f.ing = ing
	return nil
}

// blobAnswer is the upstream's answer to a fill's blob request.
type blobAnswer struct {
	resp *upstream.BlobResponse
	err  error
}

// close drops an answer that is not used.
func (a *blobAnswer) close() {
	if a != nil && a.resp != nil {
		a.resp.Body.Close()
	}
}

// askAtOnce reports whether f starts with a request for the whole blob
// whatever its download file turns out to hold: there is nothing to resume
// and no delta to try.
func (p *Proxy) askAtOnce(ctx context.Context, f *fill) bool {
	if r, ok := p.store.(blobstore.Resumer); ok && r.HasPartial(f.d) {
		return false
	}
	return !p.mayUseDelta(ctx, f)
}

// askWhileOpening sends f's first upstream request while it opens the
// download file, so that a cold miss's file-system calls (a dozen, each a
// trap into the kernel that may cost the goroutine its processor on a busy
// box) overlap the upstream's time instead of delaying the request.
func (p *Proxy) askWhileOpening(ctx context.Context, f *fill, log *slog.Logger) (*blobAnswer, error) {
	opened := make(chan error, 1)
	go func() { opened <- p.openIngest(ctx, f, log) }()
	t := f.target
	resp, err := t.Remote.Client.Blob(ctx, t.Repo.Name, f.d, 0, "")
	p.countUpstream(t, "blob", err)
	first := &blobAnswer{resp: resp, err: err}
	if err := <-opened; err != nil {
		first.close()
		return nil, err
	}
	if f.keptBytes() > 0 {
		// Another process left bytes in the meantime: resume from them
		// rather than receive them again.
		first.close()
		return nil, nil
	}
	return first, nil
}

func (p *Proxy) runFill(ctx context.Context, f *fill) {
	start := time.Now()
	f.checkpointed = p.now()
	p.m.FillsInFlight.Inc()
	defer p.m.FillsInFlight.Dec()
	log := p.log.With(slog.String("upstream", f.target.Remote.Name), slog.String("repo", f.target.Repo.Name), slog.String("digest", f.d.String()))

	var (
		first *blobAnswer
		err   error
		kept  int64 // bytes left in a partial download for the next fill
	)
	if p.askAtOnce(ctx, f) {
		first, err = p.askWhileOpening(ctx, f, log)
	} else {
		err = p.openIngest(ctx, f, log)
	}
	if err == nil {
		if first == nil && f.keptBytes() == 0 {
			p.fillFromDelta(ctx, f, log)
		}
		err = p.fetchInto(ctx, f, log, first)
		if err == nil {
			err = f.ing.Verify(f.finalSize())
		}
		if err == nil {
			// Every byte is verified: clients may have the end of the blob
			// now, while the store makes it durable (fsync can take a while
			// on the SD cards of small gateways).
			f.markVerified()
			// Detached from the proxy's shutdown (not from the fill's
			// timeout): verified bytes are worth keeping, and on a bucket,
			// where fills do not resume, a cancelled upload would mean
			// fetching the blob again. Close waits for it as for any fill.
			// The repository's link goes first: the upstream said the
			// repository holds the blob, and a crash between the two must
			// not leave a stored blob that the repository cannot read with
			// the uplink down (a link to a blob not stored only means a
			// fill).
			// Verified bytes are committed even if the link could not be
			// recorded: the repository then asks its upstream again.
			cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.FillTimeout)
			lerr := p.recorded(cctx, p.db.Link(cctx, f.target.Repo, f.d))
			if err = f.ing.Commit(cctx, f.finalSize()); err == nil {
				p.m.StoreBytes.Add(float64(f.keptBytes()))
				err = lerr
			}
			ccancel()
		} else if f.part != nil && keepPartial(err) && !errors.As(err, new(*localError)) && f.keptBytes() > 0 {
			// Kept for the next fill, unless this machine failed (a full
			// disk, most often): the bytes would hold the space that
			// eviction, which counts only stored blobs, cannot free.
			if serr := f.part.Suspend(blobstore.PartialMeta{Size: f.finalSize(), ETag: f.etag, Repo: f.partRepo}); serr != nil {
				log.LogAttrs(ctx, slog.LevelWarn, "cannot keep the partial download", slog.Any("err", serr))
			} else {
				kept = f.keptBytes()
			}
		} else {
			lost := f.keptBytes()
			if f.part != nil && !keepPartial(err) && lost > 0 {
				// Bytes that proved wrong: when some were read back from
				// disk after a crash (a power loss leaves zeros or garbage
				// after the last checkpoint), the partial is kept up to
				// the checkpoint before them, not discarded whole.
				if n, rerr := f.part.Rewind(); rerr != nil {
					log.LogAttrs(ctx, slog.LevelWarn, "cannot keep the partial download up to its checkpoint", slog.Any("err", rerr))
				} else if n > 0 {
					log.LogAttrs(ctx, slog.LevelWarn, "wrong bytes after the partial download's checkpoint; keeping it up to there",
						slog.Int64("offset", n), slog.Int64("dropped", lost-n))
					kept, lost = n, lost-n
				}
			}
			if lost > 0 && (errors.Is(err, errdef.ErrDigestMismatch) || errors.Is(err, errdef.ErrSizeMismatch)) {
				// Received once and thrown away: the next fill fetches
				// them again (the waste the metric counts).
				p.m.FillRefetchedBytes.WithLabelValues(f.target.Remote.Name).Add(float64(lost))
			}
			if kept == 0 {
				f.ing.Cancel()
			}
		}
	}

	p.noteWriteError(ctx, err)
	if diskFull(err) {
		// Its clients are told it is this mirror's disk, not a 500.
		err = fmt.Errorf("%w: %w", errDiskFullAnswer, err)
	}
	result := "ok"
	switch {
	case err != nil && p.closing.Err() != nil && errors.Is(ctx.Err(), context.Canceled):
		// Stopped by the mirror's shutdown, not failed: a restart during
		// a download is no error to alert on, and no fill failure.
		result = "stopped"
		log.LogAttrs(ctx, slog.LevelInfo, "blob fill stopped by the shutdown", slog.Int64("size", f.finalSize()),
			slog.Int64("kept", kept))
	case err != nil:
		result = "error"
		reason := "upstream"
		switch {
		case errors.Is(err, errdef.ErrDigestMismatch), errors.Is(err, errdef.ErrSizeMismatch):
			reason = "verify"
		case errors.Is(err, errdef.ErrNotFound):
			reason = "not_found"
		case errors.As(err, new(*localError)):
			reason = "io"
		}
		p.m.FillFailures.WithLabelValues(reason).Inc()
		level := slog.LevelError
		if errors.As(err, new(*upstream.BreakerOpenError)) {
			// The outage was logged once when the breaker opened; a
			// record per uncached blob asked for during it is noise.
			level = slog.LevelDebug
		}
		if reason == "not_found" {
			log.LogAttrs(ctx, slog.LevelDebug, "blob not found upstream")
		} else {
			log.LogAttrs(ctx, level, "blob fill failed", slog.Int64("size", f.finalSize()),
				slog.Int64("kept", kept), slog.Any("err", err))
		}
	default:
		log.LogAttrs(ctx, slog.LevelInfo, "blob filled", slog.Int64("size", f.finalSize()), slog.Duration("duration", time.Since(start)))
	}
	p.m.FillDuration.WithLabelValues(result).Observe(time.Since(start).Seconds())

	// Publish the outcome before the fill leaves the map, so that a request
	// arriving in between sees either the fill (done) or the stored blob.
	f.finish(err)
	p.mu.Lock()
	if p.fills[f.d] == f { // a failed fill may have been replaced already (joinFill)
		delete(p.fills, f.d)
	}
	p.fillsEnded++
	p.mu.Unlock()
}

// keepPartial reports whether a fill that failed with err leaves bytes worth
// resuming: all but bytes that proved wrong. (A partial of a blob that is
// gone upstream goes with storage.partialMaxAge.)
func keepPartial(err error) bool {
	return !errors.Is(err, errdef.ErrDigestMismatch) && !errors.Is(err, errdef.ErrSizeMismatch)
}

// resumable reports whether a fill that failed with err, after the
// upstream had answered, should try again.
func resumable(err error) bool {
	var le *localError
	return keepPartial(err) && !errors.As(err, &le) && !errors.Is(err, errdef.ErrNotFound) &&
		!errors.Is(err, errdef.ErrDenied) && !errors.Is(err, errdef.ErrUnauthorized) && !errors.Is(err, errdef.ErrInvalid)
}

// localError is a failure of this machine (disk full, I/O error), not of
// the link: resuming does not help.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

// Resume backoff between attempts of one fill that received nothing; an
// attempt that received bytes resumes at once and starts the backoff over.
const (
	resumeMinWait = 500 * time.Millisecond
	resumeMaxWait = 30 * time.Second
	// checkpointEvery is how often a running fill makes its bytes durable
	// for a resume after a crash or power loss. A kill -9 loses nothing
	// either way: bytes written after the checkpoint are in the page cache
	// and are kept (and hashed again) by the next fill.
	checkpointEvery = 4 * time.Second
)

// fetchInto copies the blob from the upstream into the ingest, resuming
// with a Range request from the last byte written whenever the transfer
// breaks (error, truncated body, stall), with backoff, until the fill's
// deadline. If the first request of the fill gets no answer, it fails at
// once: a client asking for an uncached blob of a dead upstream gets a
// quick error.
//
// first, if not nil, is the answer to a request for the whole blob made
// already; it serves as the first attempt's.
func (p *Proxy) fetchInto(ctx context.Context, f *fill, log *slog.Logger, first *blobAnswer) error {
	defer func() { first.close() }() // the answer, unless an attempt took it
	up := f.target.Remote.Name
	wait := resumeMinWait
	answered := false
	skipCuts := 0 // attempts in a row cut while the upstream resent bytes on disk
	missed := 0   // answers in a row whose range did not contain the byte asked for
	// smallRanges counts the answers in a row that an upstream capped at
	// fewer than minRangeAnswer bytes; capped is set after a capped answer
	// (the next request continues it: no resume).
	smallRanges, capped := 0, false
	// resumeCause is why bytes on disk are being continued ("restart": a
	// partial from before this fill; "link": a broken transfer), until an
	// attempt brings more of them.
	resumeCause := ""
	for attempt := 0; ; attempt++ {
		if size := f.finalSize(); size >= 0 && f.keptBytes() == size {
			// Every byte is on disk already; Verify decides. Unless the
			// upstream answered this fill, it has not said yet that the
			// fill's repository holds the blob (the partial may be another
			// repository's fill's): ask.
			if !answered && !f.confirmed {
				if err := p.confirmPartial(ctx, f); err != nil {
					return err
				}
			}
			return nil
		}
		// An attempt the open breaker refuses before it leaves is no resume
		// to log.
		if kept := f.keptBytes(); kept > 0 && !capped && !upstreamHealth(f.target).Refusing() {
			if resumeCause == "" {
				resumeCause = "link"
				if attempt == 0 {
					resumeCause = "restart"
				}
			}
			log.LogAttrs(ctx, slog.LevelInfo, "resuming blob transfer", slog.Int64("offset", kept), slog.String("cause", resumeCause))
		}
		before := f.keptBytes()
		err := p.fetchOnce(ctx, f, &answered, first)
		first = nil
		capped = errors.Is(err, errRangeCapped)
		if capped {
			// The upstream sent all it said it would, less than the rest
			// of the blob (a CDN or object store that caps the length of
			// an answer): no broken link, ask at once for the rest. An
			// upstream that sends a few bytes per answer would keep the
			// fill asking for hours: a few such answers in a row are
			// allowed, not more.
			if f.keptBytes()-before < minRangeAnswer {
				smallRanges++
			} else {
				smallRanges = 0
			}
			if smallRanges > maxSmallRanges {
				return fmt.Errorf("blob %s: the upstream answered %d ranges in a row with fewer than %d bytes; giving up at byte %d: %w",
					f.d, smallRanges, minRangeAnswer, f.keptBytes(), errdef.ErrUnavailable)
			}
			skipCuts, wait = 0, resumeMinWait
			continue
		}
		smallRanges = 0
		if resumeCause != "" && (err == nil || f.keptBytes() > before) {
			// A resume is counted once it continued the transfer, not
			// for each try that found the link still down.
			p.m.FillResumes.WithLabelValues(up, resumeCause).Inc()
			resumeCause = ""
		}
		if err == nil {
			return nil
		}
		if !answered || !resumable(err) || ctx.Err() != nil {
			return err
		}
		if errors.Is(err, errCutWhileSkipping) && f.keptBytes() == before {
			// The upstream ignores Range and the link breaks before the
			// bytes on disk are sent again: every try costs them again
			// and gains nothing. Given up after a few, not for hours.
			if skipCuts++; skipCuts >= maxSkipCuts {
				return fmt.Errorf("blob %s: the upstream ignores Range and the link broke %d times before the %d bytes on disk were sent again; giving up: %w",
					f.d, skipCuts, f.keptBytes(), errdef.ErrUnavailable)
			}
		} else {
			skipCuts = 0
		}
		if errors.Is(err, upstream.ErrRangeMissesOffset) {
			// A 206 of bytes before (or after) the one asked for, such as
			// the first slice of the blob from a CDN that caches no more:
			// asking again brings the same answer, until the fill's
			// deadline (hours). Given up after a few, keeping the partial.
			if missed++; missed >= maxSkipCuts {
				return fmt.Errorf("blob %s: the upstream answered %d requests in a row for byte %d with a range that does not contain it; giving up: %w",
					f.d, missed, f.keptBytes(), err)
			}
		} else {
			missed = 0
		}
		// A transfer that made progress resumes at once (a dropped link
		// that is back); one that made none backs off.
		var d time.Duration
		if f.keptBytes() > before {
			wait = resumeMinWait
		} else {
			d, wait = jitter(wait), min(2*wait, resumeMaxWait)
		}
		var ue *upstream.Error
		if errors.As(err, &ue) && ue.RetryAfter > d {
			d = ue.RetryAfter
		}
		log.LogAttrs(ctx, slog.LevelWarn, "blob transfer broken; will resume", slog.Int64("offset", f.keptBytes()),
			slog.Duration("wait", d), slog.Any("err", err))
		f.setBroken(true)
		// Recovered is closed when the breaker next closes after an outage,
		// also one that begins during this wait (nil, never ready, without
		// a breaker). The wait is on the proxy's clock (Options.After).
		select {
		case <-p.opts.After(d):
		case <-f.retryNow:
		case <-upstreamHealth(f.target).Recovered:
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		}
	}
}

// errCutWhileSkipping marks a transfer from an upstream that ignored Range
// which broke before it had resent the bytes already on disk.
var errCutWhileSkipping = errors.New("cut while the upstream resent bytes on disk")

// skipPulseEvery is how often at most a fill passing over bytes it has on
// disk already (an upstream that ignored the range) wakes its readers.
const skipPulseEvery = time.Second

// maxSkipCuts is how many attempts in a row may break that way before the
// fill gives up (each one fetched the bytes on disk again, for nothing);
// also how many answers in a row may miss the byte asked for
// (upstream.ErrRangeMissesOffset).
const maxSkipCuts = 3

// errRangeCapped marks an answer that ended, whole, at the end of a range
// shorter than the rest of the blob (RFC 9110 allows it): the fill asks
// again from there.
var errRangeCapped = errors.New("the upstream's answer ended before the blob")

// An answer capped at fewer than minRangeAnswer bytes is small; more than
// maxSmallRanges of them in a row make the fill give up.
const (
	minRangeAnswer = 64 << 10
	maxSmallRanges = 8
)

// jitter returns a duration in [d/2, d).
func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// fetchOnce makes one upstream request for the bytes the fill lacks, or
// takes first, the answer to one made already, and copies its body.
// answered is set once the upstream has answered a request of this fill.
func (p *Proxy) fetchOnce(ctx context.Context, f *fill, answered *bool, first *blobAnswer) error {
	t := f.target
	up := t.Remote.Name
	offset := f.keptBytes()
	var (
		resp *upstream.BlobResponse
		err  error
	)
	if first != nil {
		resp, err = first.resp, first.err
	} else {
		resp, err = t.Remote.Client.Blob(ctx, t.Repo.Name, f.d, offset, f.etag)
		p.countUpstream(t, "blob", err)
	}
	if errors.Is(err, errdef.ErrRangeNotSatisfiable) {
		if f.finalSize() < 0 && offset > 0 && f.ing.Verify(offset) == nil {
			// A blob of unknown size (the upstream sent no length), all of
			// which is on disk already: the upstream has no byte after it.
			*answered = true
			f.partRepo = f.target.Repo.String()
			f.setSize(offset)
			return nil
		}
		// More bytes on disk than the upstream's blob has: they are wrong.
		return fmt.Errorf("blob %s: upstream has no byte %d: %w", f.d, offset, errdef.ErrSizeMismatch)
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()

	// The size known before (from a partial's checkpoint or an earlier
	// answer) must not change.
	if size := f.finalSize(); resp.Size >= 0 && size >= 0 && resp.Size != size {
		return fmt.Errorf("blob %s: upstream says %d bytes, known before as %d: %w", f.d, resp.Size, size, errdef.ErrSizeMismatch)
	}
	if resp.Size >= 0 && f.expect >= 0 && resp.Size != f.expect {
		return fmt.Errorf("blob %s: upstream says %d bytes, its descriptor %d: %w", f.d, resp.Size, f.expect, errdef.ErrSizeMismatch)
	}
	if resp.Offset == 0 || resp.ETag != "" {
		// The validator of the bytes now arriving is the one the next
		// resume names. After an answer with the whole blob, the old one
		// failed its If-Range (the blob re-pushed, another CDN node):
		// naming it again would have every later resume answered with
		// the whole blob too.
		f.etag = resp.ETag
	}
	switch {
	case !*answered:
		size := resp.Size
		if size < 0 {
			size = f.finalSize() // known from the partial's checkpoint, or still -1
		}
		f.setSize(size)
		*answered = true
		f.partRepo = f.target.Repo.String()
	case resp.Size >= 0 && f.finalSize() < 0:
		// The first answer had no length (chunked); this one says (a
		// resume's Content-Range): clients from now on get it, and their
		// ranges, and a body that ends early is known to be short.
		f.setSize(resp.Size)
	}

	// The body, watched for stalls: a Read that waits FillStallTimeout for
	// a byte closes it and fails.
	body := stall.NewReader(resp.Body, p.opts.FillStallTimeout)
	readErr := func(n int64, rerr error) error {
		if errors.Is(rerr, stall.ErrStalled) {
			p.m.FillStalls.WithLabelValues(up).Inc()
			return fmt.Errorf("blob %s: no bytes from upstream for %s after %d bytes: %w", f.d, p.opts.FillStallTimeout, n, errdef.ErrUnavailable)
		}
		return fmt.Errorf("blob %s: read upstream after %d bytes: %w: %w", f.d, n, errdef.ErrUnavailable, rerr)
	}

	if resp.Size >= 0 && offset > resp.Size {
		return fmt.Errorf("blob %s: %d bytes on disk, the upstream's blob has %d: %w", f.d, offset, resp.Size, errdef.ErrSizeMismatch)
	}
	buf := make([]byte, fillBufferSize)
	if skip := offset - resp.Offset; skip > 0 {
		// The upstream ignored the range (or the If-Range validator no
		// longer matched): it sends the whole blob, or a range from an
		// earlier byte, and what is on disk already arrives again. Pass
		// over it; the digest covers the rest.
		log := p.log.With(slog.String("upstream", up), slog.String("digest", f.d.String()))
		log.LogAttrs(ctx, slog.LevelWarn, "upstream ignored the range; receiving bytes on disk again", slog.Int64("offset", offset),
			slog.Int64("from", resp.Offset))
		// Nothing new reaches the readers until the bytes on disk have all
		// come again, minutes over a cellular link for a large blob: they
		// are woken now and then while they do, so that they wait on
		// rather than give up (storage.clientStallTimeout) on a fill that
		// is making progress. A stalled upstream is the fill's own
		// FillStallTimeout's to catch.
		pulsed := p.now()
		for skip > 0 {
			n, rerr := body.Read(buf[:min(int64(len(buf)), skip)])
			skip -= int64(n)
			if now := p.now(); n > 0 && now.Sub(pulsed) >= skipPulseEvery {
				f.pulse()
				pulsed = now
			}
			p.m.FillRefetchedBytes.WithLabelValues(up).Add(float64(n))
			p.m.UpstreamBytes.WithLabelValues(up).Add(float64(n))
			if rerr == io.EOF && skip > 0 && resp.End < 0 {
				// The whole blob, and it ended before the bytes on disk did.
				// (A body of known length that ends early was cut: a range
				// always runs past the bytes on disk.)
				return fmt.Errorf("blob %s: the upstream's blob ended after %d bytes, %d are on disk: %w", f.d, offset-skip, offset, errdef.ErrSizeMismatch)
			}
			if rerr != nil && skip > 0 {
				return fmt.Errorf("%w: %w", errCutWhileSkipping, readErr(offset-skip, rerr))
			}
		}
	}

	size := f.finalSize()
	// known is the blob's size when it is known, from any source: a body
	// without a length that ends before it was cut, however cleanly, and
	// is resumed. limit may be a mere bound (the store's budget).
	limit, bound, known := size, "the blob's size", size
	switch {
	case limit >= 0:
	case f.expect >= 0:
		limit, bound, known = f.expect, "its descriptor's size", f.expect
	default:
		var exact bool
		limit, bound, exact = p.sizeBound(f.target.Repo, f.d)
		if exact {
			known = limit
		}
	}
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			written := f.keptBytes()
			if limit >= 0 && written+int64(n) > limit {
				return fmt.Errorf("blob %s: upstream sent more than %d bytes (%s): %w", f.d, limit, bound, errdef.ErrSizeMismatch)
			}
			if _, werr := f.ing.Write(buf[:n]); werr != nil {
				return &localError{fmt.Errorf("blob %s: write: %w", f.d, werr)}
			}
			p.m.UpstreamBytes.WithLabelValues(up).Add(float64(n))
			f.advance(int64(n))
			// Let the woken readers run now: on a small box the fill
			// would otherwise keep its processor (the upstream socket
			// rarely runs dry) and the first client would wait for the
			// scheduler to move it, milliseconds on a loaded VM.
			runtime.Gosched()
			if now := p.now(); f.part != nil && now.Sub(f.checkpointed) >= checkpointEvery {
				if err := f.part.Checkpoint(blobstore.PartialMeta{Size: size, ETag: f.etag, Repo: f.partRepo}); err != nil {
					return &localError{err}
				}
				f.checkpointed = now
			}
		}
		if rerr == io.EOF {
			kept := f.keptBytes()
			if resp.End >= 0 && kept == resp.End && (known < 0 || kept < known) {
				// The whole answer, a range that ends before the blob does
				// (or may: its size is unknown).
				return fmt.Errorf("blob %s: range up to byte %d: %w", f.d, kept, errRangeCapped)
			}
			if known >= 0 && kept < known {
				return fmt.Errorf("blob %s: upstream body ended after %d of %d bytes: %w", f.d, kept, known, errdef.ErrUnavailable)
			}
			if resp.End >= 0 && kept < resp.End {
				return fmt.Errorf("blob %s: upstream body ended at byte %d, its range at %d: %w", f.d, kept, resp.End, errdef.ErrUnavailable)
			}
			return nil
		}
		if rerr != nil {
			return readErr(f.keptBytes(), rerr)
		}
	}
}

// expectSizeKey carries, in the context of a fetch (EnsureBlob), the size
// the blob must have: a fill it starts fails as soon as the upstream says
// or sends otherwise.
type expectSizeKey struct{}

// sizeBound returns the most bytes a fill of blob d whose size the upstream
// did not give may receive, and what it is: the size a manifest gave
// (layerHints; exact), else the store's budget (a larger blob could not be
// kept), else -1 (no bound).
func (p *Proxy) sizeBound(r meta.Repo, d digest.Digest) (limit int64, bound string, exact bool) {
	if size, ok := p.layerHints.get(r, d); ok {
		return size, "its size in a manifest", true
	}
	if p.opts.StoreBudget != nil {
		if b := p.opts.StoreBudget(); b > 0 {
			return b, "storage.maxSize", false
		}
	}
	return -1, "", false
}

// keptBytes is the number of bytes of the blob on disk.
func (f *fill) keptBytes() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written
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
	if n > 0 {
		f.broken = false
	}
	f.broadcast()
	f.mu.Unlock()
}

// pulse wakes the readers without new bytes: the fill is making progress
// that they cannot see (it passes over bytes it has already), and their
// wait for new bytes starts over.
func (f *fill) pulse() {
	f.mu.Lock()
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

// retry cuts short the wait of a broken transfer, if it is waiting.
func (f *fill) retry() {
	select {
	case f.retryNow <- struct{}{}:
	default:
	}
}

// waitingForLink reports whether the fill's transfer broke and no byte
// has come since, with bytes still missing.
func (f *fill) waitingForLink() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.broken && !f.verified
}

func (f *fill) tryingDelta() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.deltaAttempt
}

func (f *fill) setDeltaAttempt(b bool) {
	f.mu.Lock()
	f.deltaAttempt = b
	f.mu.Unlock()
}

func (f *fill) setBroken(b bool) {
	f.mu.Lock()
	f.broken = b
	f.mu.Unlock()
}

// failed reports whether the fill has ended with an error (it is about to
// leave the proxy's map: a new request starts a fill of its own).
func (f *fill) failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.done && f.err != nil
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

// wait waits until the fill has ended and returns its error.
func (f *fill) wait(ctx context.Context) error {
	for {
		f.mu.Lock()
		done, err, wake := f.done, f.err, f.wake
		f.mu.Unlock()
		if done {
			return err
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// newReader waits for the upstream's answer and returns a reader of the
// growing blob. A read that waits more than stall (on after, the proxy's
// clock) with neither new bytes nor other progress of the fill (pulse)
// fails and calls onStall.
func (f *fill) newReader(ctx context.Context, stall time.Duration, after func(time.Duration) <-chan time.Time, onStall func()) (*fillReader, error) {
	// The size comes with the upstream's answer, or once a layer is
	// rebuilt from a delta: the stall limit applies to that wait too, so
	// that a device is told to come back rather than held without an
	// answer for as long as the attempt may take. The fill goes on.
	wctx, cancel := context.WithTimeout(ctx, stall)
	size, err := f.waitSize(wctx)
	cancel()
	if err == context.DeadlineExceeded && ctx.Err() == nil { // the wait's own limit, not the fill's error
		if onStall != nil {
			onStall()
		}
		return nil, &ociapi.Error{Status: http.StatusServiceUnavailable, Code: ociapi.CodeUnavailable, RetryAfter: 10 * time.Second,
			Message: fmt.Sprintf("the blob is still being fetched (no bytes for %s); retry", stall)}
	}
	if err != nil {
		return nil, err
	}
	file, err := f.ing.OpenReader()
	if err != nil {
		// The fill ended between its answer and this open: a failed fill
		// removed its file (its error, such as a full disk, is this
		// client's answer, not the store's "not found"), a committed one
		// moved it to where the ingest opens it now.
		wctx, cancel := context.WithTimeout(ctx, stall)
		werr := f.wait(wctx)
		ended := wctx.Err() == nil
		cancel()
		if werr != nil && ended {
			return nil, werr
		}
		if file, err = f.ing.OpenReader(); err != nil {
			return nil, fmt.Errorf("blob %s: open the fill's file: %w: %v", f.d, errStoreAnswer, err)
		}
	}
	return &fillReader{f: f, ctx: ctx, file: file, size: size, last: -1, stall: stall, after: after, onStall: onStall}, nil
}

// fillReader reads a blob while it is being filled. Reads wait for bytes to
// arrive, through resumes of the fill, up to the stall limit; a failed fill
// returns its error, so a client's connection fails instead of ending
// cleanly on a wrong body.
type fillReader struct {
	f       *fill
	ctx     context.Context
	file    io.ReadSeekCloser
	size    int64
	last    int64 // the last byte of the range being read, or -1 (see EndRangeAt)
	off     int64
	stall   time.Duration
	after   func(time.Duration) <-chan time.Time
	onStall func()
	waiting func() // called before each wait for the fill's next bytes, if set
	done    func() // called once closed (the blob is no longer being sent), if set
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
		if !verified {
			// Hold back the last byte until the whole blob is verified: a
			// client that received every byte would otherwise see a clean
			// end of a body that may still fail its digest check. Of a
			// blob of unknown size, any byte may be the last: the newest
			// one waits for the next, or for the verification.
			end := written - 1
			if r.size >= 0 {
				end = min(written, r.size-1)
			}
			if r.last >= 0 {
				end = min(end, r.last) // the same for the last byte of a range
			}
			avail = end - r.off
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
		if r.waiting != nil {
			r.waiting()
		}
		// Every wake (new bytes, or a pulse of a fill passing over bytes it
		// has already) starts the wait over.
		select {
		case <-wake:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		case <-r.after(r.stall):
			select {
			case <-wake:
				// The fill made progress as the limit passed (this reader
				// had not run since): no stall.
				continue
			default:
			}
			if r.onStall != nil {
				r.onStall()
			}
			return 0, fmt.Errorf("blob %s: no new bytes for %s while the upstream transfer resumes: %w", r.f.d, r.stall, errdef.ErrUnavailable)
		}
	}
}

// EndRangeAt says the reader serves a range whose last byte is at offset
// end: that byte, like the blob's own last byte, is held back until the
// whole blob is verified, so that a client never sees a clean end of a
// range of a blob that then fails its digest check.
func (r *fillReader) EndRangeAt(end int64) { r.last = end }

// WhileWaiting has fn called each time a read is about to wait for the
// fill's next bytes: an HTTP/2 server's write deadline runs while nothing
// is written, and the answer lifts it there (the wait has its own limit,
// the stall one).
func (r *fillReader) WhileWaiting(fn func()) { r.waiting = fn }

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

func (r *fillReader) Close() error {
	if r.done != nil {
		defer r.done()
	}
	return r.file.Close()
}
