package objstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/blobstore/blobstoretest"
	"github.com/registry-edge/registry-edge/internal/blobstore/objstore"
	"github.com/registry-edge/registry-edge/internal/errdef"
)

func newMem(t *testing.T) *objstore.Store {
	t.Helper()
	s, err := objstore.New(inmemory.New(), objstore.Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestInmemoryConformance(t *testing.T) {
	blobstoretest.Run(t, func(t *testing.T) blobstore.Store { return newMem(t) })
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func desc(b []byte) ocispec.Descriptor {
	return ocispec.Descriptor{Digest: digest.FromBytes(b), Size: int64(len(b))}
}

// listAll returns every file path under dir in the driver ("" if none).
func listAll(t *testing.T, d storagedriver.StorageDriver, dir string) []string {
	t.Helper()
	var out []string
	err := d.Walk(context.Background(), dir, func(fi storagedriver.FileInfo) error {
		if !fi.IsDir() {
			out = append(out, fi.Path())
		}
		return nil
	})
	var nf storagedriver.PathNotFoundError
	if err != nil && !errors.As(err, &nf) {
		t.Fatalf("Walk(%s) error = %v", dir, err)
	}
	return out
}

// assertNothingVisible checks that d is not stat-able and that neither
// blobs/ nor _uploads/ hold any object.
func assertNothingVisible(t *testing.T, s *objstore.Store, d digest.Digest) {
	t.Helper()
	if _, err := s.Stat(context.Background(), d); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("Stat() error = %v, want ErrNotFound", err)
	}
	if got := listAll(t, s.Driver(), "/blobs"); len(got) != 0 {
		t.Errorf("objects under /blobs = %v, want none", got)
	}
	if got := listAll(t, s.Driver(), "/_uploads"); len(got) != 0 {
		t.Errorf("objects under /_uploads = %v, want none", got)
	}
}

func TestPutWrongContentLeavesNothing(t *testing.T) {
	ctx := context.Background()
	content := randomBytes(100_000, 1)
	want := desc(content)
	tests := []struct {
		name string
		body []byte
		err  error
	}{
		{"wrong digest", randomBytes(100_000, 2), errdef.ErrDigestMismatch},
		{"truncated", content[:50_000], errdef.ErrSizeMismatch},
		{"too long", append(append([]byte{}, content...), 1, 2, 3), errdef.ErrSizeMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newMem(t)
			if err := s.Put(ctx, want, bytes.NewReader(tt.body)); !errors.Is(err, tt.err) {
				t.Fatalf("Put() error = %v, want %v", err, tt.err)
			}
			assertNothingVisible(t, s, want.Digest)
		})
	}
}

func TestLayout(t *testing.T) {
	ctx := context.Background()
	s := newMem(t)
	content := []byte("layout")
	want := desc(content)
	if err := s.Put(ctx, want, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	h := want.Digest.Encoded()
	wantPath := "/blobs/sha256/" + h[:2] + "/" + h
	if got := listAll(t, s.Driver(), "/"); len(got) != 1 || got[0] != wantPath {
		t.Errorf("objects = %v, want [%s]", got, wantPath)
	}
}

func TestIngestReadersSeeBytesBeforeCommit(t *testing.T) {
	ctx := context.Background()
	s := newMem(t)
	content := randomBytes(64<<10, 3)
	d := digest.FromBytes(content)
	ing, err := s.Ingest(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer ing.Cancel()
	if _, err := ing.Write(content[:1000]); err != nil {
		t.Fatal(err)
	}
	r, err := ing.OpenReader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := make([]byte, ing.Written())
	if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, content[:1000]) {
		t.Fatalf("read before commit = %d bytes, %v; want the first 1000 bytes", len(got), err)
	}
	if _, err := s.Stat(ctx, d); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("Stat() before commit error = %v, want ErrNotFound", err)
	}
	if err := ing.Verify(int64(len(content))); err == nil {
		t.Error("Verify() of a partial ingest succeeded")
	}
	if _, err := ing.Write(content[1000:]); err != nil {
		t.Fatal(err)
	}
	rest := make([]byte, len(content)-1000)
	if _, err := io.ReadFull(r, rest); err != nil || !bytes.Equal(rest, content[1000:]) {
		t.Fatalf("read of later bytes: %v", err)
	}
	if err := ing.Commit(ctx, int64(len(content))); err != nil {
		t.Fatalf("Commit() error = %v", err)
	}
	// A reader opened after Commit reads the committed object.
	r2, err := ing.OpenReader()
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if all, _ := io.ReadAll(r2); !bytes.Equal(all, content) {
		t.Error("reader after commit: content differs")
	}
	if _, err := s.Stat(ctx, d); err != nil {
		t.Errorf("Stat() after commit error = %v", err)
	}
	if got := listAll(t, s.Driver(), "/_uploads"); len(got) != 0 {
		t.Errorf("objects under /_uploads after commit = %v", got)
	}
	assertTempDirEmpty(t, s)
	if err := ing.Cancel(); err != nil {
		t.Errorf("Cancel() after Commit error = %v", err)
	}
}

func assertTempDirEmpty(t *testing.T, s *objstore.Store) {
	t.Helper()
	n, err := s.CleanUploads(context.Background(), time.Time{}) // removes nothing; just lists
	if err != nil || n != 0 {
		t.Errorf("CleanUploads(zero time) = %d, %v", n, err)
	}
	// The store's staging files are in Options.TempDir, its callers' in
	// TempDir, a directory in it.
	for _, dir := range []string{filepath.Dir(s.TempDir()), s.TempDir()} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if filepath.Join(dir, e.Name()) != s.TempDir() {
				t.Errorf("temp dir holds %s", filepath.Join(dir, e.Name()))
			}
		}
	}
}

func TestIngestCommitRejectsWrongContent(t *testing.T) {
	ctx := context.Background()
	s := newMem(t)
	content := randomBytes(10_000, 4)
	d := digest.FromBytes(content)
	ing, err := s.Ingest(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(content)
	bad[5000] ^= 1
	ing.Write(bad)
	if err := ing.Commit(ctx, int64(len(content))); !errors.Is(err, errdef.ErrDigestMismatch) {
		t.Fatalf("Commit() error = %v, want ErrDigestMismatch", err)
	}
	assertNothingVisible(t, s, d)
	assertTempDirEmpty(t, s)

	ing, err = s.Ingest(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	ing.Write(content[:100])
	if err := ing.Cancel(); err != nil {
		t.Fatal(err)
	}
	assertNothingVisible(t, s, d)
	assertTempDirEmpty(t, s)
}

func TestOpenSeekRange(t *testing.T) {
	ctx := context.Background()
	s := newMem(t)
	content := randomBytes(1<<20+17, 5)
	want := desc(content)
	if err := s.Put(ctx, want, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	rc, err := s.Open(ctx, want.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if n, err := rc.Seek(0, io.SeekEnd); err != nil || n != want.Size {
		t.Fatalf("Seek(0, End) = %d, %v, want %d", n, err, want.Size)
	}
	if n, err := rc.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Errorf("Read at end = %d, %v, want 0, EOF", n, err)
	}
	ranges := []struct{ off, n int64 }{{0, 10}, {500_000, 4096}, {1<<20 + 10, 7}, {3, 1}}
	for _, rg := range ranges {
		if _, err := rc.Seek(rg.off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, rg.n)
		if _, err := io.ReadFull(rc, got); err != nil {
			t.Fatalf("read %d@%d: %v", rg.n, rg.off, err)
		}
		if !bytes.Equal(got, content[rg.off:rg.off+rg.n]) {
			t.Errorf("range %d@%d differs", rg.n, rg.off)
		}
	}
	// Relative seek from the current position, then read to the end.
	if _, err := rc.Seek(-4, io.SeekCurrent); err != nil {
		t.Fatal(err)
	}
	// The last range ended at offset 4: this seeks back to 0.
	rest, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(rest, content) {
		t.Errorf("ReadAll after relative seek = %d bytes, %v; want the whole content", len(rest), err)
	}
	if _, err := rc.Seek(-1, io.SeekStart); !errors.Is(err, errdef.ErrInvalid) {
		t.Errorf("Seek(-1) error = %v, want ErrInvalid", err)
	}
}

func TestWalk(t *testing.T) {
	ctx := context.Background()
	s := newMem(t)
	if err := s.Walk(ctx, func(blobstore.Info) error { t.Error("Walk on empty store visited a blob"); return nil }); err != nil {
		t.Fatalf("Walk on empty store error = %v", err)
	}
	want := map[digest.Digest]int64{}
	for i := 0; i < 5; i++ {
		b := randomBytes(100+i, uint64(10+i))
		if err := s.Put(ctx, desc(b), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		want[digest.FromBytes(b)] = int64(len(b))
	}
	// An in-flight upload and a stray object are not blobs.
	if err := s.Driver().PutContent(ctx, "/_uploads/0123456789abcdef", []byte("partial")); err != nil {
		t.Fatal(err)
	}
	if err := s.Driver().PutContent(ctx, "/blobs/sha256/zz/not-a-digest", []byte("x")); err != nil {
		t.Fatal(err)
	}
	got := map[digest.Digest]int64{}
	if err := s.Walk(ctx, func(i blobstore.Info) error { got[i.Digest] = i.Size; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("Walk visited %d blobs, want %d: %v", len(got), len(want), got)
	}
	for d, n := range want {
		if got[d] != n {
			t.Errorf("Walk: %s size %d, want %d", d, got[d], n)
		}
	}
	stop := errors.New("stop")
	if err := s.Walk(ctx, func(blobstore.Info) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("Walk callback error = %v, want it returned", err)
	}
}

func TestCleanUploads(t *testing.T) {
	ctx := context.Background()
	s := newMem(t)
	content := []byte("committed")
	if err := s.Put(ctx, desc(content), bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/_uploads/aaaa", "/_uploads/bbbb"} {
		if err := s.Driver().PutContent(ctx, p, []byte("leftover of a crash")); err != nil {
			t.Fatal(err)
		}
	}
	// Fresh leftovers survive a cut-off in the past (a live process may
	// still be using them).
	if n, err := s.CleanUploads(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("CleanUploads(an hour ago) = %d, %v, want 0", n, err)
	}
	if got := listAll(t, s.Driver(), "/_uploads"); len(got) != 2 {
		t.Fatalf("uploads after no-op clean = %v", got)
	}
	// A cut-off after their writing (not "now" after a sleep: the clock
	// need not have moved since).
	if n, err := s.CleanUploads(ctx, time.Now().Add(time.Second)); err != nil || n != 2 {
		t.Fatalf("CleanUploads(in a second) = %d, %v, want 2", n, err)
	}
	if got := listAll(t, s.Driver(), "/_uploads"); len(got) != 0 {
		t.Errorf("uploads after clean = %v", got)
	}
	if _, err := s.Stat(ctx, digest.FromBytes(content)); err != nil {
		t.Errorf("committed blob gone after clean: %v", err)
	}
	// Empty store: nothing to clean is not an error.
	if n, err := newMem(t).CleanUploads(ctx, time.Now()); err != nil || n != 0 {
		t.Errorf("CleanUploads on empty store = %d, %v", n, err)
	}
}

func TestInvalidDigest(t *testing.T) {
	s := newMem(t)
	ctx := context.Background()
	bad := digest.Digest("sha256:" + strings.Repeat("Z", 64))
	if err := s.Put(ctx, ocispec.Descriptor{Digest: bad, Size: 1}, strings.NewReader("x")); !errors.Is(err, errdef.ErrInvalid) {
		t.Errorf("Put(invalid) error = %v, want ErrInvalid", err)
	}
	if _, err := s.Ingest(ctx, bad); !errors.Is(err, errdef.ErrInvalid) {
		t.Errorf("Ingest(invalid) error = %v, want ErrInvalid", err)
	}
}

func TestRecords(t *testing.T) { testRecords(t, newMem(t)) }

func testRecords(t *testing.T, s *objstore.Store) {
	ctx := context.Background()
	if _, err := s.GetRecord(ctx, "links/sha256/ab/x"); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("GetRecord(missing) = %v, want ErrNotFound", err)
	}
	for _, k := range []string{"deltas/sha256/aa/one", "deltas/sha256/aa/two", "deltas/sha256/bb/three"} {
		if err := s.PutRecord(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	if b, err := s.GetRecord(ctx, "deltas/sha256/aa/two"); err != nil || string(b) != "deltas/sha256/aa/two" {
		t.Errorf("GetRecord = %q, %v", b, err)
	}
	if names, err := s.ListRecords(ctx, "deltas/sha256/aa"); err != nil || strings.Join(names, ",") != "one,two" {
		t.Errorf("ListRecords = %v, %v; want [one two]", names, err)
	}
	if names, err := s.ListRecords(ctx, "nothing/here"); err != nil || len(names) != 0 {
		t.Errorf("ListRecords(missing dir) = %v, %v; want none", names, err)
	}
	// Deleting a directory removes what is under it, and nothing else.
	if err := s.DeleteRecord(ctx, "deltas/sha256/aa"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRecord(ctx, "deltas/sha256/aa"); err != nil {
		t.Errorf("DeleteRecord(already gone) = %v", err)
	}
	if names, _ := s.ListRecords(ctx, "deltas/sha256"); strings.Join(names, ",") != "bb" {
		t.Errorf("after deleting aa: %v, want [bb]", names)
	}
	// Records live apart from content: a walk sees no record.
	if err := s.Walk(ctx, func(i blobstore.Info) error { t.Errorf("walk saw %v", i); return nil }); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "/abs", "a//b", "a/../b", "a/./b", "a b", "a/b/", "tags/x:y"} {
		if err := s.PutRecord(ctx, bad, nil); !errors.Is(err, errdef.ErrInvalid) {
			t.Errorf("PutRecord(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestOpenLocal(t *testing.T) {
	ctx := context.Background()
	s := newMem(t)
	b := randomBytes(300_000, 7)
	want := desc(b)
	if err := s.Put(ctx, want, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	f, err := s.OpenLocal(ctx, want.Digest)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1000)
	if _, err := f.ReadAt(got, 123_456); err != nil || !bytes.Equal(got, b[123_456:124_456]) {
		t.Errorf("ReadAt = %v; bytes equal: %v", err, bytes.Equal(got, b[123_456:124_456]))
	}
	if n, err := f.Seek(0, io.SeekEnd); err != nil || n != int64(len(b)) {
		t.Errorf("size = %d, %v; want %d", n, err, len(b))
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	assertTempDirEmpty(t, s)

	// An object that does not hash to its name (written behind the
	// store's back) is refused, and no copy is left.
	bad := randomBytes(1000, 8)
	h := want.Digest.Encoded()
	if err := s.Driver().PutContent(ctx, "/blobs/sha256/"+h[:2]+"/"+h, bad); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OpenLocal(ctx, want.Digest); !errors.Is(err, errdef.ErrDigestMismatch) && !errors.Is(err, errdef.ErrSizeMismatch) {
		t.Errorf("OpenLocal of a corrupt object = %v, want a digest or size mismatch", err)
	}
	assertTempDirEmpty(t, s)
	if _, err := s.OpenLocal(ctx, digest.FromString("absent")); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("OpenLocal(absent) = %v, want ErrNotFound", err)
	}
}

func TestCleanTempDir(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := objstore.New(inmemory.New(), objstore.Options{TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	b := randomBytes(10_000, 9)
	w, err := s.Ingest(ctx, desc(b).Digest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b[:5000]); err != nil {
		t.Fatal(err)
	}
	// A delta computation (layerdelta.Make, in TempDir) has its
	// uncompressed tar half written.
	tar, err := os.CreateTemp(s.TempDir(), "tar-*")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tar.Write(b); err != nil {
		t.Fatal(err)
	}
	tar.Close()
	// The process dies here: its staging file and the tar stay. Another
	// file in the directory is not the store's.
	other := filepath.Join(dir, "not-ours")
	if err := os.WriteFile(other, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := s.CleanTempDir()
	if err != nil || n != 2 {
		t.Errorf("CleanTempDir() = %d, %v; want 2 files removed (the staging file and the tar)", n, err)
	}
	if _, err := os.Stat(tar.Name()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the tar of a killed delta computation is still there (stat: %v)", err)
	}
	var left []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Type().IsRegular() {
			left = append(left, e.Name())
		}
	}
	if len(left) != 1 || left[0] != "not-ours" {
		t.Errorf("temp dir holds files %v, want only not-ours", left)
	}
}

// CleanUploads removes, by age, the temporary files of TempDir's callers too.
func TestCleanUploadsRemovesOldCallerTempFiles(t *testing.T) {
	ctx := context.Background()
	s := newMem(t)
	tar := filepath.Join(s.TempDir(), "tar-1")
	if err := os.WriteFile(tar, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CleanUploads(ctx, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tar); err != nil {
		t.Errorf("a fresh temporary file was removed: %v", err)
	}
	if _, err := s.CleanUploads(ctx, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tar); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an old temporary file of a delta computation is still there (stat: %v)", err)
	}
}

// An object altered in the bucket behind the store's back (other bytes of
// the same size, or cut short) fails a read from its start to its end with
// ErrDigestMismatch before its last bytes, never with a clean end, and is
// removed so that the blob is fetched again. Reads of a range are not
// checked.
func TestAlteredObjectFailsItsReadAndIsRemoved(t *testing.T) {
	ctx := context.Background()
	content := randomBytes(300_000, 9)
	want := desc(content)
	h := want.Digest.Encoded()
	path := "/blobs/sha256/" + h[:2] + "/" + h
	for _, c := range []struct {
		name    string
		altered []byte
	}{
		{"other bytes", randomBytes(len(content), 10)},
		{"cut short", content[:100_000]},
	} {
		s := newMem(t)
		if err := s.Put(ctx, want, bytes.NewReader(content)); err != nil {
			t.Fatal(err)
		}
		if err := s.Driver().PutContent(ctx, path, c.altered); err != nil {
			t.Fatal(err)
		}
		rc, err := s.Open(ctx, want.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rc.Seek(1000, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(rc, make([]byte, 10)); err != nil {
			t.Errorf("%s: a range read: %v", c.name, err)
		}
		if _, err := rc.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		rc.Close()
		rc, err = s.Open(ctx, want.Digest)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if !errors.Is(err, errdef.ErrDigestMismatch) || len(got) >= len(c.altered) {
			t.Errorf("%s: read %d of %d bytes, %v; want ErrDigestMismatch before the end", c.name, len(got), len(c.altered), err)
		}
		if _, err := s.Stat(ctx, want.Digest); !errors.Is(err, errdef.ErrNotFound) {
			t.Errorf("%s: after the failed read, Stat = %v, want ErrNotFound", c.name, err)
		}
	}
	// The intact object reads whole, as ever.
	s := newMem(t)
	if err := s.Put(ctx, want, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	rc, err := s.Open(ctx, want.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, content) {
		t.Errorf("intact object: %d bytes, %v", len(got), err)
	}
}

// hungDriver is a bucket that accepts requests and never answers them
// (stopped, blackholed), or whose reads stop sending bytes.
type hungDriver struct {
	storagedriver.StorageDriver
	hang      atomic.Bool
	stallBody atomic.Bool
}

func (h *hungDriver) Stat(ctx context.Context, p string) (storagedriver.FileInfo, error) {
	if h.hang.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return h.StorageDriver.Stat(ctx, p)
}

func (h *hungDriver) GetContent(ctx context.Context, p string) ([]byte, error) {
	if h.hang.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return h.StorageDriver.GetContent(ctx, p)
}

func (h *hungDriver) Reader(ctx context.Context, p string, off int64) (io.ReadCloser, error) {
	if h.hang.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	rc, err := h.StorageDriver.Reader(ctx, p, off)
	if err != nil || !h.stallBody.Load() {
		return rc, err
	}
	return &stalledBody{ReadCloser: rc, ctx: ctx, closed: make(chan struct{})}, nil
}

// stalledBody sends 10 bytes, then nothing until it is closed (as an HTTP
// body's Read returns when the body is closed) or its request ends.
type stalledBody struct {
	io.ReadCloser
	ctx    context.Context
	closed chan struct{}
	once   sync.Once
	sent   bool
}

func (b *stalledBody) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		return b.ReadCloser.Read(p[:min(len(p), 10)])
	}
	select {
	case <-b.ctx.Done():
		return 0, b.ctx.Err()
	case <-b.closed:
		return 0, errors.New("read on a closed body")
	}
}

func (b *stalledBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return b.ReadCloser.Close()
}

// A bucket that stops answering fails each request after the operation
// timeout, as unavailable, instead of holding the mirror's clients for as
// long as it is stopped; so does a read whose bytes stop coming.
func TestHungBucketFailsWithinTheTimeout(t *testing.T) {
	ctx := context.Background()
	h := &hungDriver{StorageDriver: inmemory.New()}
	s, err := objstore.New(h, objstore.Options{TempDir: t.TempDir(), OpTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	content := randomBytes(100_000, 11)
	want := desc(content)
	if err := s.Put(ctx, want, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRecord(ctx, "r", []byte("x")); err != nil {
		t.Fatal(err)
	}
	rc, err := s.Open(ctx, want.Digest) // opened before the bucket hangs
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	h.hang.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := s.Stat(ctx, want.Digest); !errors.Is(err, errdef.ErrUnavailable) {
			t.Errorf("Stat of a hung bucket: %v, want ErrUnavailable", err)
		}
		if _, err := s.GetRecord(ctx, "r"); !errors.Is(err, errdef.ErrUnavailable) {
			t.Errorf("GetRecord of a hung bucket: %v, want ErrUnavailable", err)
		}
		if _, err := rc.Read(make([]byte, 10)); !errors.Is(err, errdef.ErrUnavailable) {
			t.Errorf("Read of a hung bucket: %v, want ErrUnavailable", err)
		}
		h.hang.Store(false)
		h.stallBody.Store(true)
		rc2, err := s.Open(ctx, want.Digest)
		if err != nil {
			t.Errorf("Open: %v", err)
			return
		}
		defer rc2.Close()
		if got, err := io.ReadAll(rc2); err == nil || len(got) != 10 {
			t.Errorf("a read whose bytes stopped after 10: %d bytes, %v; want 10 and an error", len(got), err)
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("requests to a hung bucket still waiting after 20 s (the operation timeout is 100 ms)")
	}
}
