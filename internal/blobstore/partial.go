package blobstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/verify"
)

// Resumer is an optional capability: downloads that survive a failed
// transfer, a restart or a crash, and continue where they stopped.
type Resumer interface {
	// Resume opens the partial download of d left by an earlier attempt,
	// or starts an empty one. Its Written() is the number of bytes kept,
	// already hashed. It fails with ErrPartialBusy when another process
	// holds the partial.
	Resume(ctx context.Context, d digest.Digest) (Partial, error)
	// HasPartial reports whether a partial download of d holds bytes: a
	// Resume would continue it rather than start empty. It is a hint, for
	// work to start before Resume returns: another process may start or
	// remove a partial in between.
	HasPartial(d digest.Digest) bool
}

// Partial is an Ingest kept on disk until it is committed or cancelled.
// A Partial is used by one goroutine at a time (its readers excepted).
type Partial interface {
	Ingest
	// Meta is the metadata saved with the partial's last checkpoint.
	Meta() PartialMeta
	// Checkpoint makes the bytes written so far durable and saves meta with
	// them, so that Resume continues from at least here after a crash or a
	// power loss.
	Checkpoint(meta PartialMeta) error
	// Suspend checkpoints the partial and closes it, keeping it on disk for
	// a later Resume.
	Suspend(meta PartialMeta) error
	// Rewind is for a partial that failed Verify. When bytes read back
	// from disk unchecked at a Resume (written after the last checkpoint
	// by a process that died: after a power loss they may be zeros or
	// garbage) were hashed, it cuts the data at the last checkpoint taken
	// before them, checks that the bytes before it still hash to that
	// checkpoint's state, and closes the partial, kept for a later Resume
	// from there. It returns the number of bytes kept; 0 when there was
	// nothing to rewind to, and then the caller cancels the partial.
	Rewind() (int64, error)
}

// PartialMeta is what a downloader records with a partial to resume it.
type PartialMeta struct {
	// Size is the blob's total size, -1 if unknown.
	Size int64 `json:"size"`
	// ETag is the upstream's validator of the content, for If-Range.
	ETag string `json:"etag,omitempty"`
	// Repo is the repository (registry/name) the upstream sent the bytes
	// for: it holds the blob, so a fill of it that finds every byte here
	// need not ask again (with the uplink down, it could not).
	Repo string `json:"repo,omitempty"`
}

// ErrPartialBusy means another process holds a partial download.
var ErrPartialBusy = errors.New("partial download is held by another process")

// partialState is the checkpoint file next to a partial's data:
// the data's first Offset bytes are durable and hash to HashState.
type partialState struct {
	Digest    digest.Digest `json:"digest"`
	Offset    int64         `json:"offset"`
	HashState []byte        `json:"hashState"`
	Meta      PartialMeta   `json:"meta"`
	// Boot is the id of the machine's boot the checkpoint was written in.
	Boot string `json:"boot,omitempty"`
	// Clean, when set, is the last checkpoint before bytes that a Resume
	// read back from disk unchecked and that HashState covers: where
	// Rewind goes if the data fails its digest. Absent, no such bytes.
	Clean *partialPoint `json:"clean,omitempty"`
}

// partialPoint is a checkpoint's offset and the hash state there.
type partialPoint struct {
	Offset    int64  `json:"offset"`
	HashState []byte `json:"hashState"`
}

const stateSuffix = ".state"

// Resume implements Resumer. The partial's data is partial/<alg>-<hex>,
// its checkpoint partial/<alg>-<hex>.state. Bytes after the checkpoint
// (written before a kill -9, still in the page cache) are kept and hashed
// again; after a power loss they may be wrong, which the final digest check
// of Commit catches.
func (s *FS) Resume(_ context.Context, d digest.Digest) (Partial, error) {
	final, err := s.path(d)
	if err != nil {
		return nil, err
	}
	name := s.partialPath(d)
	f, err := lockPartial(d, name)
	if err != nil {
		return nil, err
	}
	p := &fsPartial{fsIngest: fsIngest{StagingFile: &StagingFile{File: f}, s: s, d: d, final: final}, state: name + stateSuffix, meta: PartialMeta{Size: -1},
		boot: s.boot}
	if err := p.load(); err != nil {
		f.Close()
		return nil, err
	}
	return p, nil
}

// lockPartial opens (or creates) partial data file name and takes its
// lock. The lock holder may have committed the file (renamed it into
// blobs/) or discarded it between the open and the lock: the lock must be
// on the file that is at name, or the writes would go into a committed
// blob or a file nobody will find, so it tries again on a fresh open.
func lockPartial(d digest.Digest, name string) (*os.File, error) {
	for attempt := 0; ; attempt++ {
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("blob %s: open partial: %w", d, err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, fmt.Errorf("blob %s: %w", d, ErrPartialBusy)
			}
			return nil, fmt.Errorf("blob %s: lock partial: %w", d, err)
		}
		locked, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("blob %s: stat partial: %w", d, err)
		}
		if at, err := os.Stat(name); err == nil && os.SameFile(locked, at) {
			return f, nil
		}
		f.Close()
		if attempt == 3 {
			return nil, fmt.Errorf("blob %s: %w", d, ErrPartialBusy)
		}
	}
}

// HasPartial implements Resumer: one stat of the partial's data file.
func (s *FS) HasPartial(d digest.Digest) bool {
	if d.Validate() != nil {
		return false
	}
	fi, err := os.Stat(s.partialPath(d))
	return err == nil && fi.Size() > 0
}

func (s *FS) partialPath(d digest.Digest) string {
	return filepath.Join(s.partial, string(d.Algorithm())+"-"+d.Encoded())
}

type fsPartial struct {
	fsIngest
	state string
	meta  PartialMeta
	// trusted is the number of bytes at the start of the data that were
	// not hashed in this process: the checkpoint's hash state stands for
	// them. Verify hashes them again (see there).
	trusted int64
	checked bool // Verify hashed the whole data and it matched
	// clean is where Rewind cuts the data: the last checkpoint before
	// bytes read back from disk unchecked, nil if none were.
	clean *partialPoint
	boot  string // the running boot's id, recorded with checkpoints
}

// load restores the digester from the checkpoint, if it is usable, and
// hashes the data written after it; without one it hashes all the data.
func (p *fsPartial) load() error {
	size, err := p.File.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("blob %s: partial: %w", p.d, err)
	}
	var from int64
	if st, ok := p.readState(size); ok {
		if dg, err := verify.RestoreDigester(p.d, st.HashState, st.Offset); err == nil {
			p.dg, from, p.meta, p.trusted = dg, st.Offset, st.Meta, st.Offset
			p.clean = st.Clean
			if size > st.Offset && st.Boot != "" && p.boot != "" && st.Boot != p.boot {
				// Written after the last checkpoint of an earlier boot
				// that ended without another: the machine lost power or
				// crashed, and the file system may have kept the file's
				// length but not its data (zeros). Those bytes go; the
				// next checkpoint of this boot stands for what follows.
				if err := p.cut(st); err != nil {
					return err
				}
				size = st.Offset
			}
			if p.clean == nil && size > st.Offset {
				// The bytes after the checkpoint are hashed below as they
				// are on disk: right after a kill -9 (the page cache),
				// maybe not after a power loss.
				p.clean = &partialPoint{Offset: st.Offset, HashState: st.HashState}
			}
		}
	}
	if p.dg == nil {
		if p.dg, err = verify.NewDigester(p.d); err != nil {
			return err
		}
	}
	if _, err := p.File.Seek(from, io.SeekStart); err != nil {
		return fmt.Errorf("blob %s: partial: %w", p.d, err)
	}
	if n, err := io.Copy(p.dg, io.LimitReader(p.File, size-from)); err != nil || n != size-from {
		return fmt.Errorf("blob %s: read partial: %d of %d bytes: %w", p.d, n, size-from, err)
	}
	p.written = size
	return nil
}

// cut truncates the data to checkpoint st's offset and records st again
// as this boot's.
func (p *fsPartial) cut(st partialState) error {
	if err := p.File.Truncate(st.Offset); err != nil {
		return fmt.Errorf("blob %s: cut partial: %w", p.d, err)
	}
	if err := p.File.Sync(); err != nil {
		return fmt.Errorf("blob %s: sync partial: %w", p.d, err)
	}
	st.Boot = p.boot
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(p.state, b); err != nil {
		return fmt.Errorf("blob %s: checkpoint: %w", p.d, err)
	}
	return nil
}

// Verify implements Ingest. The checkpoint's hash state vouches for what
// was written before it, not for what is on disk now: a storage card that
// corrupted those bytes between a crash and the resume would go unnoticed.
// So when the partial was resumed from a checkpoint, a Verify that passes
// on the hash state also hashes the whole data file again.
func (p *fsPartial) Verify(size int64) error {
	if err := p.StagingFile.Verify(size); err != nil || p.trusted == 0 || p.checked {
		return err
	}
	dg, err := verify.NewDigester(p.d)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dg, io.NewSectionReader(p.File, 0, p.dg.Written())); err != nil {
		return fmt.Errorf("blob %s: read partial: %w", p.d, err)
	}
	if err := dg.Verify(size); err != nil {
		return fmt.Errorf("blob %s: bytes on disk changed since their checkpoint: %w", p.d, err)
	}
	p.checked = true
	return nil
}

// readState reads the checkpoint if it belongs to this digest and lies
// within the data's size.
func (p *fsPartial) readState(size int64) (partialState, bool) {
	b, err := os.ReadFile(p.state)
	if err != nil {
		return partialState{}, false
	}
	var st partialState
	if json.Unmarshal(b, &st) != nil || st.Digest != p.d || st.Offset < 0 || st.Offset > size {
		return partialState{}, false
	}
	return st, true
}

func (p *fsPartial) Meta() PartialMeta { return p.meta }

func (p *fsPartial) Checkpoint(meta PartialMeta) error {
	hs, err := p.dg.State()
	if err != nil {
		return err
	}
	if err := p.File.Sync(); err != nil {
		return fmt.Errorf("blob %s: sync partial: %w", p.d, err)
	}
	b, err := json.Marshal(partialState{Digest: p.d, Offset: p.dg.Written(), HashState: hs, Meta: meta, Boot: p.boot, Clean: p.clean})
	if err != nil {
		return err
	}
	if err := writeFileAtomic(p.state, b); err != nil {
		return fmt.Errorf("blob %s: checkpoint: %w", p.d, err)
	}
	p.meta = meta
	return nil
}

// Suspend implements Partial. When the checkpoint cannot be written (a
// full disk, most often), the partial is discarded instead: bytes kept
// without a checkpoint would hold the space nothing else can free.
func (p *fsPartial) Suspend(meta PartialMeta) error {
	if err := p.Checkpoint(meta); err != nil {
		p.Cancel()
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		p.File.Close() // releases the lock
	}
	return nil
}

// Rewind implements Partial.
func (p *fsPartial) Rewind() (int64, error) {
	c := p.clean
	if c == nil || c.Offset <= 0 {
		return 0, nil
	}
	// The bytes before the cut must still be the ones the checkpoint
	// hashed: the same bytes give the same saved state.
	dg, err := verify.NewDigester(p.d)
	if err != nil {
		return 0, err
	}
	if _, err := io.Copy(dg, io.NewSectionReader(p.File, 0, c.Offset)); err != nil {
		return 0, fmt.Errorf("blob %s: read partial: %w", p.d, err)
	}
	if hs, err := dg.State(); err != nil || dg.Written() != c.Offset || !bytes.Equal(hs, c.HashState) {
		return 0, fmt.Errorf("blob %s: the partial's bytes before its checkpoint at %d changed: %w", p.d, c.Offset, errdef.ErrDigestMismatch)
	}
	if err := p.cut(partialState{Digest: p.d, Offset: c.Offset, HashState: c.HashState, Meta: p.meta}); err != nil {
		return 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		p.File.Close() // releases the lock
	}
	return c.Offset, nil
}

// Commit implements Ingest: the data moves to its final path and the
// checkpoint goes.
func (p *fsPartial) Commit(ctx context.Context, size int64) error {
	if err := p.Verify(size); err != nil {
		p.Cancel()
		return err
	}
	if err := p.fsIngest.Commit(ctx, size); err != nil {
		os.Remove(p.state)
		return err
	}
	os.Remove(p.state)
	return nil
}

// Cancel implements Ingest: the partial is discarded.
func (p *fsPartial) Cancel() error {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return nil // committed, suspended or cancelled: no longer this partial's to remove
	}
	// The checkpoint goes first, while the lock is held.
	rerr := os.Remove(p.state)
	if errors.Is(rerr, os.ErrNotExist) {
		rerr = nil
	}
	if err := p.fsIngest.Cancel(); err != nil {
		return err
	}
	return rerr
}

// writeFileAtomic replaces path with b: temp file, fsync, rename.
func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// CleanPartials removes partial downloads whose data was last written
// before olderThan, with their checkpoints, and checkpoints without data,
// and returns how many partials it removed. A partial held by a running
// fill is skipped (its lock is taken). NewFS runs it at start-up; a
// long-running process runs it again now and then, or the partials of
// fills that gave up on blobs never asked for again would hold their
// space, which eviction (it counts stored blobs only) cannot free, until
// the next restart.
func (s *FS) CleanPartials(olderThan time.Time) (int, error) {
	entries, err := os.ReadDir(s.partial)
	if err != nil {
		return 0, fmt.Errorf("blob store clean partials: %w", err)
	}
	removed := 0
	for _, e := range entries {
		name := filepath.Join(s.partial, e.Name())
		if strings.HasSuffix(name, stateSuffix) || strings.HasSuffix(name, stateSuffix+".tmp") {
			data := strings.TrimSuffix(strings.TrimSuffix(name, ".tmp"), stateSuffix)
			if _, err := os.Stat(data); errors.Is(err, os.ErrNotExist) {
				os.Remove(name)
			}
			continue
		}
		info, err := e.Info()
		if err != nil || !info.ModTime().Before(olderThan) {
			continue
		}
		f, err := os.OpenFile(name, os.O_RDWR, 0)
		if err != nil {
			continue
		}
		// Under the lock, the file must still be the partial at name,
		// untouched since: the fill that held it may have committed it
		// (and another started a new partial there) or resumed it.
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			locked, lerr := f.Stat()
			at, serr := os.Stat(name)
			if lerr == nil && serr == nil && os.SameFile(locked, at) && locked.ModTime().Before(olderThan) {
				os.Remove(name + stateSuffix)
				if os.Remove(name) == nil {
					removed++
				}
			}
		}
		f.Close()
	}
	return removed, nil
}
