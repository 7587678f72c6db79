package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/meta"
	"github.com/registry-edge/registry-edge/internal/ociapi"
	"github.com/registry-edge/registry-edge/internal/upstream"
)

// countingStore counts the store lookups of a blob (Stat, and Open, which
// on a bucket is a Stat too).
type countingStore struct {
	*blobstore.FS
	mu      sync.Mutex
	lookups map[digest.Digest]int
}

func (s *countingStore) count(d digest.Digest) {
	s.mu.Lock()
	s.lookups[d]++
	s.mu.Unlock()
}

func (s *countingStore) Stat(ctx context.Context, d digest.Digest) (blobstore.Info, error) {
	s.count(d)
	return s.FS.Stat(ctx, d)
}

func (s *countingStore) Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, error) {
	s.count(d)
	return s.FS.Open(ctx, d)
}

// blobUpstream serves one blob; nothing else is asked of it here.
type blobUpstream struct {
	Upstream
	content []byte
}

func (u blobUpstream) Blob(_ context.Context, _ string, _ digest.Digest, offset int64, _ string) (*upstream.BlobResponse, error) {
	return &upstream.BlobResponse{Body: io.NopCloser(bytes.NewReader(u.content[offset:])), Offset: offset, Size: int64(len(u.content))}, nil
}

// A cold miss asks the store once whether it holds the blob, not twice in
// a row: on a bucket each lookup of a missing object is a HEAD and a LIST,
// and the second one, microseconds after the first with no fill ended in
// between, could only have found what the fill's commit finds anyway.
func TestColdMissLooksUpTheStoreOnce(t *testing.T) {
	t.Parallel()
	fs, db := newStoreAndDB(t)
	store := &countingStore{FS: fs, lookups: map[digest.Digest]int{}}
	content := bytes.Repeat([]byte("layer "), 100<<10)
	d := digest.FromBytes(content)
	remote := &Remote{Name: "central.test", Client: blobUpstream{content: content}}
	p := New(store, db, nil, Options{})
	target := Target{Remote: remote, Repo: meta.Repo{Registry: "central.test", Name: "team/app"}}

	res, err := p.Blob(context.Background(), target, d)
	if err != nil {
		t.Fatal(err)
	}
	store.mu.Lock()
	before := store.lookups[d] // before any byte was read: the request's own lookups
	store.mu.Unlock()
	got, err := io.ReadAll(res.Content)
	res.Content.Close()
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("cold miss read %d bytes, %v; want the blob's %d", len(got), err, len(content))
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if before != 1 {
		t.Errorf("store lookups of the blob before the fill started: %d, want 1", before)
	}
}

// fullDiskStore is a store on a full disk: its ingests fail their first
// write with ENOSPC, and a reader's open of the ingest's file comes only
// once the fill has given the file up (the window in which a client that
// was told the blob's size opens it too late). It cannot resume, so that
// every fill goes through Ingest.
type fullDiskStore struct {
	blobstore.Store
	fs *blobstore.FS
}

func (s fullDiskStore) Ingest(ctx context.Context, d digest.Digest) (blobstore.Ingest, error) {
	ing, err := s.fs.Ingest(ctx, d)
	if err != nil {
		return nil, err
	}
	return &fullDiskIngest{Ingest: ing, cancelled: make(chan struct{})}, nil
}

type fullDiskIngest struct {
	blobstore.Ingest
	once      sync.Once
	cancelled chan struct{}
}

func (w *fullDiskIngest) Write([]byte) (int, error) {
	return 0, &os.PathError{Op: "write", Path: "ingest", Err: syscall.ENOSPC}
}

func (w *fullDiskIngest) OpenReader() (io.ReadSeekCloser, error) {
	<-w.cancelled
	return w.Ingest.OpenReader()
}

func (w *fullDiskIngest) Cancel() error {
	err := w.Ingest.Cancel()
	w.once.Do(func() { close(w.cancelled) })
	return err
}

// A fill that fails (the disk is full) after the upstream told the blob's
// size, but before its client opened the fill's file, answers that client
// with the fill's error, not with the store's "not found" of the file the
// failed fill removed (a 404 tells a device the blob does not exist).
func TestFillFailingBeforeItsReaderOpensAnswersItsError(t *testing.T) {
	t.Parallel()
	fs, db := newStoreAndDB(t)
	content := bytes.Repeat([]byte("layer "), 100<<10)
	d := digest.FromBytes(content)
	remote := &Remote{Name: "central.test", Client: blobUpstream{content: content}}
	p := New(fullDiskStore{Store: fs, fs: fs}, db, nil, Options{})
	t.Cleanup(func() { p.Close(context.Background()) })
	target := Target{Remote: remote, Repo: meta.Repo{Registry: "central.test", Name: "team/app"}}

	res, err := p.Blob(context.Background(), target, d)
	if err == nil {
		res.Content.Close()
		t.Fatal("a blob whose fill failed on a full disk was answered as served")
	}
	if errors.Is(err, errdef.ErrNotFound) {
		t.Fatalf("the failed fill's client got %v, a blob not found", err)
	}
	if oe := ociapi.FromError(err, ociapi.KindBlob); oe.Status != http.StatusServiceUnavailable || !strings.Contains(oe.Message, "disk is full") {
		t.Errorf("the failed fill's client is answered %d %q (%v), want 503 saying the disk is full", oe.Status, oe.Message, err)
	}
}
