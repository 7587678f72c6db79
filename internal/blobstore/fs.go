package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/verify"
)

// FS is a Store on a local filesystem. Layout under the root:
//
//	blobs/<alg>/<first two hex>/<hex>   committed content, read-only files
//	ingest/<alg>-<hex>.<random>         content being written
//	partial/<alg>-<hex>[.state]         resumable downloads and their checkpoints
type FS struct {
	root    string
	blobs   string
	ingest  string
	partial string
	boot    string // the running boot's id, "" if unknown

	// verified holds the files that this process committed, or read
	// whole and found to match their digests, as they were then (Open).
	mu       sync.Mutex
	verified map[digest.Digest]fileID
}

var (
	_ Store    = (*FS)(nil)
	_ Walker   = (*FS)(nil)
	_ Ingester = (*FS)(nil)
	_ Resumer  = (*FS)(nil)
)

// FSOptions configures start-up cleaning of an FS.
type FSOptions struct {
	// TempMaxAge is the age above which an ingest file is a leftover of a
	// crash and removed.
	TempMaxAge time.Duration
	// PartialMaxAge is the time since its last write after which a partial
	// download is no longer worth resuming and removed.
	PartialMaxAge time.Duration
	// BootID identifies the machine's running boot; empty, it is read from
	// /proc/sys/kernel/random/boot_id (Linux). A partial's checkpoint
	// records it: bytes written after the last checkpoint of an earlier
	// boot are not trusted (see Resume).
	BootID string
}

// NewFS opens (creating if needed) a store under root and removes ingest
// files and partial downloads older than opts allows. Neither is ever
// visible as content, so removing them is always safe; the age limits only
// spare work of a process still running on the same root, and partials
// that a later request may resume.
func NewFS(root string, opts FSOptions) (*FS, error) {
	s := &FS{root: root, blobs: filepath.Join(root, "blobs"), ingest: filepath.Join(root, "ingest"), partial: filepath.Join(root, "partial"),
		boot: opts.BootID, verified: make(map[digest.Digest]fileID)}
	if s.boot == "" {
		if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
			s.boot = strings.TrimSpace(string(b))
		}
	}
	for _, dir := range []string{s.blobs, s.ingest, s.partial} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("blob store %s: %w", root, err)
		}
	}
	if err := s.cleanIngest(time.Now().Add(-opts.TempMaxAge)); err != nil {
		return nil, err
	}
	if _, err := s.CleanPartials(time.Now().Add(-opts.PartialMaxAge)); err != nil {
		return nil, err
	}
	return s, nil
}

// CheckWritable fails, naming the directory, when the process may not
// write where fills go (a root restored or copied by another user): a
// store it cannot write would otherwise answer every miss with an internal
// error. A full disk is not such a failure: cached content is still served.
func (s *FS) CheckWritable() error {
	dirs := []string{s.blobs, s.ingest, s.partial}
	if _, err := os.Stat(filepath.Join(s.blobs, "sha256")); err == nil {
		dirs = append(dirs, filepath.Join(s.blobs, "sha256"))
	}
	for _, dir := range dirs {
		f, err := os.CreateTemp(dir, ".write-check-*")
		switch {
		case err == nil:
			f.Close()
			os.Remove(f.Name())
		case errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS):
			return fmt.Errorf("blob store: %s is not writable by this process: %w", dir, err)
		}
	}
	return nil
}

func (s *FS) cleanIngest(olderThan time.Time) error {
	entries, err := os.ReadDir(s.ingest)
	if err != nil {
		return fmt.Errorf("blob store clean ingest: %w", err)
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			continue
		}
		if info.ModTime().Before(olderThan) {
			_ = os.RemoveAll(filepath.Join(s.ingest, e.Name()))
		}
	}
	return nil
}

func (s *FS) path(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("digest %q: %w", d, errdef.ErrInvalid)
	}
	hex := d.Encoded()
	return filepath.Join(s.blobs, string(d.Algorithm()), hex[:2], hex), nil
}

// Stat implements Reader.
func (s *FS) Stat(_ context.Context, d digest.Digest) (Info, error) {
	p, err := s.path(d)
	if err != nil {
		return Info{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return Info{}, notFound(d, err)
	}
	if !fi.Mode().IsRegular() {
		return Info{}, notStored(d, fi)
	}
	return Info{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Open implements Reader. Read from its start to its end, the content is
// checked against its digest before its last bytes are returned: a file
// changed behind the store's back (bit rot on an SD card, a file truncated
// by a power cut or edited by hand) fails the read with ErrDigestMismatch
// instead of ending cleanly, and is moved to quarantine/ (as fsck does), so
// that the blob is fetched again. Reads elsewhere (a Range) are not checked:
// the store has no digest of a part.
//
// A file this process committed, or read whole and found right, is not
// hashed again while it stays as it was then (inode, size, change and
// modification times, which any write, truncation or replacement changes):
// hashing (about 0.5 GB/s a core on the benchmark machine) would otherwise
// halve the rate at which cached layers go out. Bits that rot on the
// medium without a write are found by the first read after a restart, or
// by fsck (ADR 0020).
func (s *FS) Open(_ context.Context, d digest.Digest) (io.ReadSeekCloser, error) {
	f, err := s.openRaw(d)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blob %s: %w", d, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, notStored(d, fi)
	}
	id, ok := idOf(fi)
	if ok {
		s.mu.Lock()
		known, seen := s.verified[d]
		s.mu.Unlock()
		if seen && known == id {
			return f, nil
		}
	}
	return &checkedFile{s: s, f: f, d: d, size: fi.Size(), id: id, hasID: ok, check: NewReadCheck(d, fi.Size())}, nil
}

// OpenLocal gives random access to stored blob d: the file itself,
// unchecked (reads at random offsets cannot be; the delta codec, which
// reads its bases so, checks what it builds from them against its digest).
func (s *FS) OpenLocal(_ context.Context, d digest.Digest) (LocalFile, error) {
	return s.openRaw(d)
}

func (s *FS) openRaw(d digest.Digest) (*os.File, error) {
	p, err := s.path(d)
	if err != nil {
		return nil, err
	}
	f, err := openFile(p)
	if err != nil {
		return nil, notFound(d, err)
	}
	return f, nil
}

// checkedFile reads a stored file, checking a read of the whole of it
// (ReadCheck); only Read and Seek are offered, so that neither net/http nor
// os.File can bypass it (ADR 0015 keeps sendfile out anyway).
type checkedFile struct {
	s    *FS
	f    *os.File
	d    digest.Digest
	size int64 // at open; nothing beyond it is read
	off  int64
	// id is the file's at open (if hasID): noted as verified once read
	// whole and found right.
	id    fileID
	hasID bool
	check *ReadCheck
}

func (r *checkedFile) Read(p []byte) (int, error) {
	if r.off >= r.size {
		if r.size == 0 {
			// Emptied (a power cut before the data reached the card)?
			if whole, err := r.check.Saw(0, nil); err != nil {
				return 0, r.quarantine(err)
			} else if whole {
				r.verified()
			}
		}
		return 0, io.EOF
	}
	if rest := r.size - r.off; int64(len(p)) > rest {
		p = p[:rest]
	}
	at := r.off
	n, err := r.f.ReadAt(p, at)
	r.off += int64(n)
	if err == io.EOF && r.off < r.size {
		err = io.ErrUnexpectedEOF // truncated since it was opened
	} else if err == io.EOF {
		err = nil
	}
	whole, cerr := r.check.Saw(at, p[:n])
	if cerr != nil {
		return 0, r.quarantine(cerr) // not a byte of the end
	}
	if whole {
		r.verified()
	}
	return n, err
}

// verified notes that the file r read matches its digest.
func (r *checkedFile) verified() {
	if !r.hasID {
		return
	}
	r.s.mu.Lock()
	r.s.verified[r.d] = r.id
	r.s.mu.Unlock()
}

// quarantine moves the file r read, found wrong (err), out of the store,
// unless another file (fetched again meanwhile) has taken its place.
func (r *checkedFile) quarantine(err error) error {
	p, _ := r.s.path(r.d)
	if mine, serr := r.f.Stat(); serr == nil {
		if now, serr := os.Stat(p); serr != nil || !os.SameFile(mine, now) {
			return fmt.Errorf("%w (already replaced)", err)
		}
	}
	dst, qerr := r.s.Quarantine(r.d)
	if qerr != nil {
		return fmt.Errorf("%w (not moved aside: %v)", err, qerr)
	}
	return fmt.Errorf("%w; moved to %s, to be fetched again", err, dst)
}

func (r *checkedFile) Seek(offset int64, whence int) (int64, error) {
	abs, err := SeekOffset(r.off, r.size, offset, whence)
	if err != nil {
		return 0, err
	}
	r.off = abs
	return abs, nil
}

func (r *checkedFile) Close() error { return r.f.Close() }

// openFile opens a regular file for reading without os.Open's attempt to
// register it with the network poller (a few fcntl calls and a failing
// epoll_ctl per open, measurable on small cached blobs and on the first
// byte of a fill). Regular files never block in the poller's sense.
func openFile(path string) (*os.File, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// notStored words something other than a file at a blob's path (a
// directory an admin made, or a copy made badly): not stored content, so
// the blob is fetched, and Commit takes the path back if it is empty.
func notStored(d digest.Digest, fi os.FileInfo) error {
	return fmt.Errorf("blob %s: not a regular file in the store (%s): %w", d, fi.Mode().Type(), errdef.ErrNotFound)
}

func notFound(d digest.Digest, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob %s: %w", d, errdef.ErrNotFound)
	}
	return fmt.Errorf("blob %s: %w", d, err)
}

// Put implements Store.
func (s *FS) Put(ctx context.Context, want ocispec.Descriptor, r io.Reader) error {
	if _, err := s.Stat(ctx, want.Digest); err == nil {
		return nil
	}
	ing, err := s.Ingest(ctx, want.Digest)
	if err != nil {
		return err
	}
	defer ing.Cancel()
	if want.Size >= 0 {
		r = io.LimitReader(r, want.Size+1)
	}
	if _, err := io.Copy(ing, r); err != nil {
		return fmt.Errorf("blob %s: write: %w", want.Digest, err)
	}
	return ing.Commit(ctx, want.Size)
}

// Delete implements Store.
func (s *FS) Delete(_ context.Context, d digest.Digest) error {
	p, err := s.path(d)
	if err != nil {
		return err
	}
	s.forget(d)
	if err := os.Remove(p); err != nil {
		return notFound(d, err)
	}
	return nil
}

// forget drops the note that stored d was found right.
func (s *FS) forget(d digest.Digest) {
	s.mu.Lock()
	delete(s.verified, d)
	s.mu.Unlock()
}

// Walk implements Walker.
func (s *FS) Walk(ctx context.Context, fn func(Info) error) error {
	return filepath.WalkDir(s.blobs, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if e.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(s.blobs, p)
		if err != nil {
			return err
		}
		parts := strings.Split(filepath.ToSlash(rel), "/")
		if len(parts) != 3 {
			return nil
		}
		d := digest.NewDigestFromEncoded(digest.Algorithm(parts[0]), parts[2])
		if d.Validate() != nil {
			return nil
		}
		fi, err := e.Info()
		if err != nil {
			return nil
		}
		return fn(Info{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()})
	})
}

// Ingest implements Ingester.
func (s *FS) Ingest(_ context.Context, d digest.Digest) (Ingest, error) {
	dg, err := verify.NewDigester(d)
	if err != nil {
		return nil, err
	}
	final, err := s.path(d)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(s.ingest, string(d.Algorithm())+"-"+d.Encoded()+".*")
	if err != nil {
		return nil, fmt.Errorf("blob %s: create ingest: %w", d, err)
	}
	return &fsIngest{StagingFile: NewStagingFile(f, dg), s: s, d: d, final: final}, nil
}

type fsIngest struct {
	*StagingFile // Write, Written, Verify
	s            *FS
	d            digest.Digest
	final        string

	mu     sync.Mutex
	closed bool
}

func (w *fsIngest) OpenReader() (io.ReadSeekCloser, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		// Committed meanwhile: the content is at its final path.
		f, err := openFile(w.final)
		if err != nil {
			return nil, notFound(w.d, err)
		}
		return f, nil
	}
	return openFile(w.File.Name())
}

func (w *fsIngest) Commit(_ context.Context, size int64) error {
	if err := w.Verify(size); err != nil {
		w.Cancel()
		return err
	}
	if err := w.File.Sync(); err != nil {
		w.Cancel()
		return fmt.Errorf("blob %s: sync: %w", w.d, err)
	}
	if err := w.File.Chmod(0o444); err != nil {
		w.Cancel()
		return fmt.Errorf("blob %s: chmod: %w", w.d, err)
	}
	if err := os.MkdirAll(filepath.Dir(w.final), 0o755); err != nil {
		w.Cancel()
		return fmt.Errorf("blob %s: %w", w.d, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	err := os.Rename(w.File.Name(), w.final)
	if err != nil {
		if fi, serr := os.Lstat(w.final); serr == nil && fi.IsDir() && os.Remove(w.final) == nil {
			// An empty directory in the blob's place: the rename
			// cannot replace it, and every fill would fail.
			err = os.Rename(w.File.Name(), w.final)
		}
	}
	if err != nil {
		os.Remove(w.File.Name())
		w.File.Close()
		w.closed = true
		return fmt.Errorf("blob %s: commit: %w", w.d, err)
	}
	w.closed = true
	if fi, err := w.File.Stat(); err == nil {
		// Hashed on its way in: its first read need not hash it again.
		if id, ok := idOf(fi); ok {
			w.s.mu.Lock()
			w.s.verified[w.d] = id
			w.s.mu.Unlock()
		}
	}
	w.File.Close()
	syncDir(filepath.Dir(w.final))
	return nil
}

func (w *fsIngest) Cancel() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	// Removed before it is closed: a partial's lock goes with the
	// descriptor, and another process may lock the file as soon as it
	// does (see lockPartial).
	err := os.Remove(w.File.Name())
	w.File.Close()
	return err
}

// syncDir makes a rename durable. Errors are ignored: some filesystems do
// not support fsync on directories, and the content itself is already synced.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// TempDir returns a directory for the caller's temporary files, on the
// store's file system: the ingest directory, whose leftovers (older than
// FSOptions.TempMaxAge) are removed when the store opens.
func (s *FS) TempDir() string { return s.ingest }
