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
		boot: opts.BootID}
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
	return Info{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Open implements Reader.
func (s *FS) Open(_ context.Context, d digest.Digest) (io.ReadSeekCloser, error) {
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
	if err := os.Remove(p); err != nil {
		return notFound(d, err)
	}
	return nil
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
	return &fsIngest{StagingFile: NewStagingFile(f, dg), d: d, final: final}, nil
}

type fsIngest struct {
	*StagingFile // Write, Written, Verify
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
	if err := os.Rename(w.File.Name(), w.final); err != nil {
		os.Remove(w.File.Name())
		w.File.Close()
		w.closed = true
		return fmt.Errorf("blob %s: commit: %w", w.d, err)
	}
	w.closed = true
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
