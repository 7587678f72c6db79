// Package objstore is a blobstore.Store on object storage (S3 and
// compatibles) through the storage drivers of
// github.com/distribution/distribution/v3. It keeps the rules of the
// filesystem store: every byte is hashed on its way in, nothing becomes
// visible unless it hashed to its digest in exactly its size, and a crash at
// any point leaves no partial or wrong content visible.
//
// Layout under the driver's root directory (the s3 "rootdirectory"):
//
//	/blobs/<alg>/<first two hex>/<hex>   committed content; content-addressed, never rewritten
//	/_uploads/<32 random hex>            content being uploaded (not yet verified-and-moved)
//
// A Put streams to an object under /_uploads through the driver's Writer (a
// multipart upload on S3), hashing as it goes. Only if digest and size match
// is the writer committed and the object moved (S3: server-side copy, which
// is atomic, then delete) to its final key; otherwise the writer is
// cancelled (S3: the multipart upload is aborted, no object ever existed).
// A crash in the middle leaves at most an incomplete multipart upload
// (invisible to readers) or an object under /_uploads; CleanUploads removes
// both (the multipart uploads through the S3 API directly, since the driver
// interface cannot list them).
//
// Unlike the parent package, objstore imports net/http indirectly: the
// storage driver interface itself does (RedirectURL). The depcheck test
// only covers internal/blobstore, which must not import this package.
package objstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws" // registers "s3" and "s3aws"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/stall"
	"github.com/registry-edge/registry-edge/internal/verify"
)

const (
	blobsDir   = "/blobs"
	uploadsDir = "/_uploads"
	// tempPrefix names the local staging files of Ingest in Options.TempDir.
	tempPrefix = "objstore-"
	// workDir is the directory in Options.TempDir that TempDir returns:
	// the temporary files of its callers (a delta's uncompressed tars) are
	// the store's to remove after a crash, whatever their names.
	workDir = tempPrefix + "work"
	// cleanupTimeout bounds the best-effort removal of temporaries after a
	// failure, which runs even when the caller's context is cancelled.
	cleanupTimeout = time.Minute
)

// Store is a blobstore.Store on a storage driver.
type Store struct {
	d         storagedriver.StorageDriver
	tempDir   string
	workDir   string            // in tempDir, see TempDir
	aborter   *multipartAborter // nil unless the driver is s3
	opTimeout time.Duration
}

// DefaultOpTimeout bounds a request to the bucket that should answer at
// once: a stat, a delete, a record, the start of a read, and each wait for
// the next bytes of a read.
const DefaultOpTimeout = 30 * time.Second

// bounded returns ctx bounded by the store's operation timeout, and the
// error to return for err: a bucket that accepts connections and never
// answers (hung, blackholed) must not hold a client forever, and says so
// as unavailable.
func (s *Store) bounded(ctx context.Context) (context.Context, context.CancelFunc, func(error) error) {
	bctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	return bctx, cancel, func(err error) error {
		if err != nil && errors.Is(bctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
			return fmt.Errorf("the bucket did not answer within %s: %w: %w", s.opTimeout, errdef.ErrUnavailable, err)
		}
		return err
	}
}

var (
	_ blobstore.Store    = (*Store)(nil)
	_ blobstore.Walker   = (*Store)(nil)
	_ blobstore.Ingester = (*Store)(nil)
)

// Options configures a Store.
type Options struct {
	// TempDir is the local directory where Ingest stages content while it
	// is written (so that concurrent readers can read it at once). ""
	// means os.TempDir(). It is created if missing.
	TempDir string
	// OpTimeout bounds each request that should answer at once (see
	// DefaultOpTimeout, the default).
	OpTimeout time.Duration
}

// New returns a Store on d.
func New(d storagedriver.StorageDriver, opts Options) (*Store, error) {
	if d == nil {
		return nil, fmt.Errorf("object store: no storage driver: %w", errdef.ErrInvalid)
	}
	dir := opts.TempDir
	if dir == "" {
		dir = os.TempDir()
	}
	work := filepath.Join(dir, workDir)
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, fmt.Errorf("object store temp dir: %w", err)
	}
	timeout := opts.OpTimeout
	if timeout <= 0 {
		timeout = DefaultOpTimeout
	}
	return &Store{d: d, tempDir: dir, workDir: work, opTimeout: timeout}, nil
}

// NewFromParameters creates the storage driver name ("s3", "s3aws",
// "inmemory" if registered, ...) with the driver's parameters and returns a
// Store on it. For S3-compatible servers typical parameters are bucket,
// region, regionendpoint, forcepathstyle, secure, accesskey, secretkey,
// chunksize and rootdirectory.
func NewFromParameters(ctx context.Context, name string, params map[string]any, opts Options) (*Store, error) {
	d, err := factory.Create(ctx, name, params)
	if err != nil {
		return nil, fmt.Errorf("object store driver %s: %w", name, err)
	}
	s, err := New(d, opts)
	if err != nil {
		return nil, err
	}
	if name == "s3" || name == "s3aws" {
		if s.aborter, err = newMultipartAborter(params); err != nil {
			return nil, fmt.Errorf("object store driver %s: %w", name, err)
		}
	}
	return s, nil
}

// Driver returns the underlying storage driver.
func (s *Store) Driver() storagedriver.StorageDriver { return s.d }

// TempDir returns a local directory for the caller's temporary files (the
// uncompressed tars and the delta of a delta computation or rebuild): a
// directory of the store's in Options.TempDir, whose files CleanUploads
// (by age) and CleanTempDir (all) remove like the store's own, so that a
// process killed while it used them does not leave them for good.
func (s *Store) TempDir() string { return s.workDir }

func blobPath(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("digest %q: %w", d, errdef.ErrInvalid)
	}
	h := d.Encoded()
	return blobsDir + "/" + string(d.Algorithm()) + "/" + h[:2] + "/" + h, nil
}

func newUploadPath() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return uploadsDir + "/" + hex.EncodeToString(b[:]), nil
}

func isNotFound(err error) bool {
	var nf storagedriver.PathNotFoundError
	var nfp *storagedriver.PathNotFoundError
	return errors.As(err, &nf) || errors.As(err, &nfp)
}

func wrapErr(d digest.Digest, op string, err error) error {
	if isNotFound(err) {
		return fmt.Errorf("blob %s: %w", d, errdef.ErrNotFound)
	}
	if op == "" {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	return fmt.Errorf("blob %s: %s: %w", d, op, err)
}

// Stat implements blobstore.Reader.
func (s *Store) Stat(ctx context.Context, d digest.Digest) (blobstore.Info, error) {
	p, err := blobPath(d)
	if err != nil {
		return blobstore.Info{}, err
	}
	bctx, cancel, why := s.bounded(ctx)
	defer cancel()
	fi, err := s.d.Stat(bctx, p)
	if err != nil {
		return blobstore.Info{}, wrapErr(d, "", why(err))
	}
	if fi.IsDir() {
		return blobstore.Info{}, fmt.Errorf("blob %s: %w", d, errdef.ErrNotFound)
	}
	return blobstore.Info{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Open implements blobstore.Reader. The result reads through
// driver.Reader and reopens it at the new offset after a Seek. Read from
// its start to its end, it is checked against its digest before its last
// bytes are returned: an object altered in the bucket behind the mirror's
// back (another writer, a bad copy, bit rot) fails the read with
// ErrDigestMismatch instead of ending cleanly, and is removed, so that the
// blob is fetched again.
func (s *Store) Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, error) {
	info, err := s.Stat(ctx, d)
	if err != nil {
		return nil, err
	}
	p, _ := blobPath(d)
	return &objReader{ctx: context.WithoutCancel(ctx), d: s.d, path: p, size: info.Size, timeout: s.opTimeout,
		check: blobstore.NewReadCheck(d, info.Size)}, nil
}

// Put implements blobstore.Store.
func (s *Store) Put(ctx context.Context, want ocispec.Descriptor, r io.Reader) error {
	final, err := blobPath(want.Digest)
	if err != nil {
		return err
	}
	if _, err := s.Stat(ctx, want.Digest); err == nil {
		return nil
	}
	dg, err := verify.NewDigester(want.Digest)
	if err != nil {
		return err
	}
	if want.Size >= 0 {
		r = io.LimitReader(r, want.Size+1)
	}
	up, err := newUploadPath()
	if err != nil {
		return fmt.Errorf("blob %s: %w", want.Digest, err)
	}
	w, err := s.d.Writer(ctx, up, false)
	if err != nil {
		return wrapErr(want.Digest, "start upload", err)
	}
	// The digester only sees bytes the writer accepted.
	if _, err := io.Copy(io.MultiWriter(w, dg), r); err != nil {
		s.cancel(w, up)
		return fmt.Errorf("blob %s: write: %w", want.Digest, err)
	}
	if err := dg.Verify(want.Size); err != nil {
		s.cancel(w, up)
		return err
	}
	return s.commit(ctx, want.Digest, w, up, final, dg.Written())
}

// cancel discards an uncommitted writer and whatever exists at its path.
func (s *Store) cancel(w storagedriver.FileWriter, up string) {
	ctx, stop := context.WithTimeout(context.Background(), cleanupTimeout)
	defer stop()
	_ = w.Cancel(ctx)
	// Not Close: on S3 it would flush the buffered tail into the aborted
	// upload. Cancel releases everything remote; the buffer is garbage.
	_ = s.d.Delete(ctx, up)
}

// commit completes w (whose n bytes were verified) at up and moves it to
// final. On failure it removes up.
func (s *Store) commit(ctx context.Context, d digest.Digest, w storagedriver.FileWriter, up, final string, n int64) error {
	if err := w.Commit(ctx); err != nil {
		s.cancel(w, up)
		return wrapErr(d, "complete upload", err)
	}
	_ = w.Close() // releases the driver's buffer; nothing left to flush
	if got := w.Size(); got != n {
		s.removeUpload(up)
		return fmt.Errorf("blob %s: upload stored %d bytes, wrote %d: %w", d, got, n, errdef.ErrSizeMismatch)
	}
	if err := s.d.Move(ctx, up, final); err != nil {
		s.removeUpload(up)
		// S3's Move is copy + delete: the copy may have succeeded (or a
		// concurrent Put committed the same content). Either way the
		// content at final is the verified content if its size matches.
		if fi, serr := s.d.Stat(ctx, final); serr == nil && !fi.IsDir() && fi.Size() == n {
			return nil
		}
		return wrapErr(d, "commit", err)
	}
	fi, err := s.d.Stat(ctx, final)
	if err != nil {
		return wrapErr(d, "stat after commit", err)
	}
	if fi.Size() != n {
		// Should not happen; never leave a wrong-size blob visible.
		_ = s.d.Delete(context.WithoutCancel(ctx), final)
		return fmt.Errorf("blob %s: committed %d bytes, wrote %d: %w", d, fi.Size(), n, errdef.ErrSizeMismatch)
	}
	return nil
}

func (s *Store) removeUpload(up string) {
	ctx, stop := context.WithTimeout(context.Background(), cleanupTimeout)
	defer stop()
	_ = s.d.Delete(ctx, up)
}

// Delete implements blobstore.Store.
func (s *Store) Delete(ctx context.Context, d digest.Digest) error {
	p, err := blobPath(d)
	if err != nil {
		return err
	}
	bctx, cancel, why := s.bounded(ctx)
	defer cancel()
	if err := s.d.Delete(bctx, p); err != nil {
		return wrapErr(d, "delete", why(err))
	}
	return nil
}

// Walk implements blobstore.Walker: it visits every committed blob (and
// nothing under /_uploads).
func (s *Store) Walk(ctx context.Context, fn func(blobstore.Info) error) error {
	// The driver wraps errors of the callback (storagedriver.Error has no
	// Unwrap), so they are kept aside and returned as they are.
	var cbErr error
	err := s.d.Walk(ctx, blobsDir, func(fi storagedriver.FileInfo) error {
		if err := ctx.Err(); err != nil {
			cbErr = err
			return err
		}
		if fi.IsDir() {
			return nil
		}
		d, ok := parseBlobPath(fi.Path())
		if !ok {
			return nil
		}
		cbErr = fn(blobstore.Info{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()})
		return cbErr
	})
	switch {
	case cbErr != nil:
		return cbErr
	case err != nil && isNotFound(err):
		return nil // no blobs yet
	case err != nil:
		return fmt.Errorf("object store walk: %w", err)
	}
	return nil
}

// parseBlobPath is the inverse of blobPath.
func parseBlobPath(p string) (digest.Digest, bool) {
	rel, ok := strings.CutPrefix(p, blobsDir+"/")
	if !ok {
		return "", false
	}
	parts := strings.Split(rel, "/")
	if len(parts) != 3 {
		return "", false
	}
	d := digest.NewDigestFromEncoded(digest.Algorithm(parts[0]), parts[2])
	if d.Validate() != nil || !strings.HasPrefix(parts[2], parts[1]) || len(parts[1]) != 2 {
		return "", false
	}
	return d, true
}

// CleanUploads removes the leftovers of crashed or interrupted uploads that
// are older than olderThan: objects under /_uploads (completed but never
// moved into place), on S3 the incomplete multipart uploads under it, and
// local Ingest staging files in TempDir. None is ever visible as content,
// so removing them is always safe; the age limit only spares the work of a
// process still running on the same bucket. It returns the number of
// objects and multipart uploads removed.
func (s *Store) CleanUploads(ctx context.Context, olderThan time.Time) (int, error) {
	n, err := s.CleanBucketUploads(ctx, olderThan)
	if err != nil {
		return n, err
	}
	return n, s.cleanLocal(olderThan)
}

// CleanBucketUploads is CleanUploads without the local files: what a
// running process calls now and then, since the uploads of a replica
// killed and started again at once are younger than olderThan at its
// start, and would stay until a restart long after (its own local files
// went at that start). Another replica may remove the same leftovers at
// the same time; that is not an error.
func (s *Store) CleanBucketUploads(ctx context.Context, olderThan time.Time) (int, error) {
	aborted := 0
	if s.aborter != nil {
		var err error
		if aborted, err = s.aborter.abortOlder(ctx, olderThan); err != nil {
			return aborted, fmt.Errorf("object store clean uploads: %w", err)
		}
	}
	n, err := s.cleanObjects(ctx, olderThan)
	return aborted + n, err
}

func (s *Store) cleanObjects(ctx context.Context, olderThan time.Time) (int, error) {
	var stale []string
	err := s.d.Walk(ctx, uploadsDir, func(fi storagedriver.FileInfo) error {
		if !fi.IsDir() && fi.ModTime().Before(olderThan) {
			stale = append(stale, fi.Path())
		}
		return nil
	})
	if err != nil && !isNotFound(err) {
		return 0, fmt.Errorf("object store clean uploads: %w", err)
	}
	n := 0
	for _, p := range stale {
		if err := s.d.Delete(ctx, p); err != nil && !isNotFound(err) {
			return n, fmt.Errorf("object store clean uploads: %w", err)
		}
		n++
	}
	return n, nil
}

// cleanLocal removes the store's files in Options.TempDir, and its
// callers' in TempDir, older than olderThan.
func (s *Store) cleanLocal(olderThan time.Time) error {
	entries, err := os.ReadDir(s.tempDir)
	if err != nil {
		return fmt.Errorf("object store clean temp dir: %w", err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasPrefix(e.Name(), tempPrefix) {
			continue
		}
		if info, err := e.Info(); err == nil && info.ModTime().Before(olderThan) {
			_ = os.Remove(filepath.Join(s.tempDir, e.Name()))
		}
	}
	work, _ := os.ReadDir(s.workDir)
	for _, e := range work {
		if info, err := e.Info(); err == nil && info.ModTime().Before(olderThan) {
			_ = os.RemoveAll(filepath.Join(s.workDir, e.Name()))
		}
	}
	return nil
}

// CleanTempDir removes every staging file of Ingest and copy of OpenLocal
// in Options.TempDir, and every file in TempDir (a delta computation's
// tars), whatever its age: for a caller that knows no other process uses
// Options.TempDir (on s3 a fill does not resume, so they are garbage). It
// returns how many it removed.
func (s *Store) CleanTempDir() (int, error) {
	entries, err := os.ReadDir(s.tempDir)
	if err != nil {
		return 0, fmt.Errorf("object store clean temp dir: %w", err)
	}
	n := 0
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasPrefix(e.Name(), tempPrefix) {
			continue
		}
		if err := os.Remove(filepath.Join(s.tempDir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return n, fmt.Errorf("object store clean temp dir: %w", err)
		}
		n++
	}
	work, err := os.ReadDir(s.workDir)
	if err != nil {
		return n, fmt.Errorf("object store clean temp dir: %w", err)
	}
	for _, e := range work {
		if err := os.RemoveAll(filepath.Join(s.workDir, e.Name())); err != nil {
			return n, fmt.Errorf("object store clean temp dir: %w", err)
		}
		n++
	}
	return n, nil
}

// objReader reads an object from an offset, reopening the driver's reader
// after a Seek.
type objReader struct {
	ctx     context.Context
	d       storagedriver.StorageDriver
	path    string
	size    int64
	timeout time.Duration // for the start of a read, and each wait for bytes

	off   int64
	rc    io.ReadCloser
	check *blobstore.ReadCheck
}

func (r *objReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if r.rc == nil {
		// The request's context lives as long as the body; only its
		// start is bounded here, the body by stall.Reader.
		rctx, cancel := context.WithCancel(r.ctx)
		timer := time.AfterFunc(r.timeout, cancel)
		rc, err := r.d.Reader(rctx, r.path, r.off)
		if !timer.Stop() {
			if err == nil {
				rc.Close()
			}
			cancel()
			return 0, fmt.Errorf("object %s: the bucket did not answer within %s: %w", r.path, r.timeout, errdef.ErrUnavailable)
		}
		if err != nil {
			cancel()
			if isNotFound(err) {
				return 0, fmt.Errorf("object %s: %w", r.path, errdef.ErrNotFound)
			}
			return 0, err
		}
		r.rc = cancelCloser{stall.NewReader(rc, r.timeout), cancel}
	}
	if rest := r.size - r.off; int64(len(p)) > rest {
		p = p[:rest]
	}
	at := r.off
	n, err := r.rc.Read(p)
	r.off += int64(n)
	if err == io.EOF && r.off < r.size {
		err = io.ErrUnexpectedEOF
	}
	if _, cerr := r.check.Saw(at, p[:n]); cerr != nil {
		// Not a byte of the end: a client must not see a clean end of a
		// wrong blob.
		if derr := r.d.Delete(r.ctx, r.path); derr != nil && !isNotFound(derr) {
			return 0, fmt.Errorf("object %s: %w (not removed: %v)", r.path, cerr, derr)
		}
		return 0, fmt.Errorf("object %s: %w; removed, to be fetched again", r.path, cerr)
	}
	return n, err
}

func (r *objReader) Seek(offset int64, whence int) (int64, error) {
	abs, err := blobstore.SeekOffset(r.off, r.size, offset, whence)
	if err != nil {
		return 0, err
	}
	if abs != r.off && r.rc != nil {
		r.rc.Close()
		r.rc = nil
	}
	r.off = abs
	return abs, nil
}

// cancelCloser cancels a read's context when its body is closed.
type cancelCloser struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelCloser) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

func (r *objReader) Close() error {
	if r.rc == nil {
		return nil
	}
	err := r.rc.Close()
	r.rc = nil
	return err
}

// Ingest implements blobstore.Ingester. The bytes are staged in a local
// file in TempDir, readable at once through OpenReader; Commit verifies
// them, uploads them to /_uploads (verifying them again as they are read
// back) and moves them into place.
func (s *Store) Ingest(_ context.Context, d digest.Digest) (blobstore.Ingest, error) {
	dg, err := verify.NewDigester(d)
	if err != nil {
		return nil, err
	}
	final, err := blobPath(d)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(s.tempDir, tempPrefix+string(d.Algorithm())+"-"+d.Encoded()+".*")
	if err != nil {
		return nil, fmt.Errorf("blob %s: create ingest: %w", d, err)
	}
	return &ingest{StagingFile: blobstore.NewStagingFile(f, dg), s: s, d: d, final: final}, nil
}

type ingest struct {
	*blobstore.StagingFile // Write, Written, Verify
	s                      *Store
	d                      digest.Digest
	final                  string

	mu        sync.Mutex
	closed    bool // the local file is gone (committed or cancelled)
	committed bool
}

func (w *ingest) OpenReader() (io.ReadSeekCloser, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.committed {
		return w.s.Open(context.Background(), w.d)
	}
	if w.closed {
		return nil, fmt.Errorf("blob %s: ingest cancelled: %w", w.d, errdef.ErrNotFound)
	}
	return os.Open(w.File.Name())
}

func (w *ingest) Commit(ctx context.Context, size int64) error {
	if err := w.Verify(size); err != nil {
		w.Cancel()
		return err
	}
	if err := w.upload(ctx); err != nil {
		w.Cancel()
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.committed = true
	w.release()
	return nil
}

// upload copies the staged file to the object store, hashing it again as
// it is read back, and moves it into place.
func (w *ingest) upload(ctx context.Context) error {
	if _, err := w.s.Stat(ctx, w.d); err == nil {
		return nil // committed meanwhile (by another fill or a Put)
	}
	n := w.Written()
	dg, err := verify.NewDigester(w.d)
	if err != nil {
		return err
	}
	up, err := newUploadPath()
	if err != nil {
		return fmt.Errorf("blob %s: %w", w.d, err)
	}
	fw, err := w.s.d.Writer(ctx, up, false)
	if err != nil {
		return wrapErr(w.d, "start upload", err)
	}
	if _, err := io.Copy(io.MultiWriter(fw, dg), io.NewSectionReader(w.File, 0, n)); err != nil {
		w.s.cancel(fw, up)
		return fmt.Errorf("blob %s: upload: %w", w.d, err)
	}
	if err := dg.Verify(n); err != nil {
		w.s.cancel(fw, up)
		return fmt.Errorf("blob %s: staged file changed: %w", w.d, err)
	}
	return w.s.commit(ctx, w.d, fw, up, w.final, n)
}

// release closes and removes the local file; w.mu is held.
func (w *ingest) release() {
	if w.closed {
		return
	}
	w.closed = true
	w.File.Close()
	_ = os.Remove(w.File.Name())
}

// Cancel discards the ingest's local staging file. Remote temporaries
// exist only during Commit, which removes them on every failure. Cancel is
// safe to call after Commit.
func (w *ingest) Cancel() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.release()
	return nil
}
