package objstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/service/s3"
	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/blobstore/blobstoretest"
	"github.com/registry-edge/registry-edge/internal/blobstore/objstore"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/testutil/s3test"
)

const s3ChunkSize = 5 << 20 // the driver's minimum: multipart parts of 5 MiB

var rootSeq atomic.Int64

// newS3 returns a store on srv under a fresh root directory.
func newS3(t *testing.T, srv *s3test.Server, root string) *objstore.Store {
	t.Helper()
	return newS3With(t, srv, root, nil)
}

// newS3With is newS3 with driver parameters overridden by extra.
func newS3With(t *testing.T, srv *s3test.Server, root string, extra map[string]any) *objstore.Store {
	t.Helper()
	if root == "" {
		root = fmt.Sprintf("/t%d", rootSeq.Add(1))
	}
	params := srv.DriverParameters(root, s3ChunkSize)
	for k, v := range extra {
		params[k] = v
	}
	s, err := objstore.NewFromParameters(context.Background(), "s3aws", params, objstore.Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// pendingMultipart counts the bucket's incomplete multipart uploads.
func pendingMultipart(t *testing.T, srv *s3test.Server) int {
	t.Helper()
	out, err := srv.Client().ListMultipartUploads(&s3.ListMultipartUploadsInput{Bucket: aws.String(srv.Bucket)})
	if err != nil {
		t.Fatalf("ListMultipartUploads: %v", err)
	}
	return len(out.Uploads)
}

func TestS3Conformance(t *testing.T) {
	srv := s3test.StartServer(t)
	blobstoretest.Run(t, func(t *testing.T) blobstore.Store { return newS3(t, srv, "") })
}

// The shared metadata records of replicas (internal/meta), on real S3.
func TestS3Records(t *testing.T) {
	srv := s3test.StartServer(t)
	testRecords(t, newS3(t, srv, ""))
}

func TestS3MultipartPutAndIngest(t *testing.T) {
	srv := s3test.StartServer(t)
	ctx := context.Background()
	// Objects of 5 MiB and more are moved by a multipart copy (the
	// driver's default threshold is 32 MiB), so that this test covers it.
	s := newS3With(t, srv, "", map[string]any{"multipartcopythresholdsize": s3ChunkSize, "multipartcopychunksize": s3ChunkSize})
	content := randomBytes(12<<20+123, 20) // three parts: 5 + 5 + 2 MiB
	want := desc(content)
	if err := s.Put(ctx, want, bytes.NewReader(content)); err != nil {
		t.Fatalf("Put(12 MiB) error = %v", err)
	}
	info, err := s.Stat(ctx, want.Digest)
	if err != nil || info.Size != want.Size {
		t.Fatalf("Stat() = %+v, %v, want size %d", info, err, want.Size)
	}
	rc, err := s.Open(ctx, want.Digest)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("read back %d bytes, %v; content differs from what was put", len(got), err)
	}
	// A range across the first part boundary.
	if _, err := rc.Seek(s3ChunkSize-100, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	part := make([]byte, 200)
	if _, err := io.ReadFull(rc, part); err != nil || !bytes.Equal(part, content[s3ChunkSize-100:s3ChunkSize+100]) {
		t.Errorf("range across part boundary: %v or content differs", err)
	}
	rc.Close()
	if got := listAll(t, s.Driver(), "/_uploads"); len(got) != 0 {
		t.Errorf("objects under /_uploads after Put = %v", got)
	}

	// The same through Ingest, read while it is written.
	content2 := randomBytes(11<<20, 21)
	d2 := digest.FromBytes(content2)
	ing, err := s.Ingest(ctx, d2)
	if err != nil {
		t.Fatal(err)
	}
	defer ing.Cancel()
	ing.Write(content2[:6<<20])
	r, err := ing.OpenReader()
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 6<<20)
	if _, err := io.ReadFull(r, head); err != nil || !bytes.Equal(head, content2[:6<<20]) {
		t.Fatalf("ingest read before commit: %v or content differs", err)
	}
	r.Close()
	ing.Write(content2[6<<20:])
	if err := ing.Commit(ctx, int64(len(content2))); err != nil {
		t.Fatalf("Ingest Commit() error = %v", err)
	}
	rc, err = s.Open(ctx, d2)
	if err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, content2) {
		t.Fatalf("ingested content read back differs (%d bytes, %v)", len(got), err)
	}
	if n := pendingMultipart(t, srv); n != 0 {
		t.Errorf("%d multipart uploads left pending", n)
	}
}

func TestS3WrongContentLeavesNothing(t *testing.T) {
	srv := s3test.StartServer(t)
	ctx := context.Background()
	content := randomBytes(12<<20, 30)
	want := desc(content)
	tests := []struct {
		name string
		body []byte
		err  error
	}{
		{"wrong digest multipart", randomBytes(12<<20, 31), errdef.ErrDigestMismatch},
		{"truncated multipart", content[:11<<20], errdef.ErrSizeMismatch},
		{"short single part", []byte("small and wrong"), errdef.ErrSizeMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newS3(t, srv, "")
			if err := s.Put(ctx, want, bytes.NewReader(tt.body)); !errors.Is(err, tt.err) {
				t.Fatalf("Put() error = %v, want %v", err, tt.err)
			}
			assertNothingVisible(t, s, want.Digest)
			if n := pendingMultipart(t, srv); n != 0 {
				t.Errorf("%d multipart uploads left pending after a rejected Put", n)
			}
		})
	}
}

// slowReader serves content, and after `after` bytes signals reached once
// and blocks until release is closed.
type slowReader struct {
	r       io.Reader
	n       int64
	after   int64
	once    sync.Once
	reached chan struct{}
	release chan struct{}
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.n >= r.after {
		r.once.Do(func() { close(r.reached) })
		<-r.release
	}
	if rest := r.after - r.n; rest > 0 && int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := r.r.Read(p)
	r.n += int64(n)
	return n, err
}

// TestS3KillMidPut kills the S3 server process while a multipart Put is
// under way (two parts uploaded), restarts it on the same directory and
// checks that nothing became visible.
func TestS3KillMidPut(t *testing.T) {
	srv := s3test.StartServer(t)
	const root = "/killtest"
	s := newS3(t, srv, root)
	content := randomBytes(24<<20, 40)
	want := desc(content)
	body := &slowReader{r: bytes.NewReader(content), after: 2*s3ChunkSize + 1<<20, reached: make(chan struct{}), release: make(chan struct{})}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- s.Put(ctx, want, body) }()
	select {
	case <-body.reached:
	case err := <-errc:
		t.Fatalf("Put() returned before the kill: %v", err)
	case <-ctx.Done():
		t.Fatal("Put() did not reach the kill point")
	}
	srv.Kill() // SIGKILL: no graceful shutdown
	close(body.release)
	if err := <-errc; err == nil {
		t.Fatal("Put() succeeded although the server was killed in the middle")
	} else {
		t.Logf("Put() error after kill (expected): %v", err)
	}

	srv.Restart()
	// The interrupted multipart upload stays pending on the server; it is
	// not an object.
	if n := pendingMultipart(t, srv); n == 0 {
		t.Errorf("no pending multipart upload after the kill: the test did not interrupt one")
	}
	s2 := newS3(t, srv, root) // a fresh process on the same bucket
	if _, err := s2.Stat(context.Background(), want.Digest); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("Stat() after restart error = %v, want ErrNotFound", err)
	}
	if got := listAll(t, s2.Driver(), "/blobs"); len(got) != 0 {
		t.Errorf("objects under /blobs after restart = %v, want none", got)
	}
	// Start-up cleanup removes any completed-but-unmoved upload.
	if _, err := s2.CleanUploads(context.Background(), time.Now().Add(time.Second)); err != nil {
		t.Errorf("CleanUploads() error = %v", err)
	}
	if got := listAll(t, s2.Driver(), "/_uploads"); len(got) != 0 {
		t.Errorf("objects under /_uploads after cleanup = %v, want none", got)
	}
	if n := pendingMultipart(t, srv); n != 0 {
		t.Errorf("pending multipart uploads after cleanup = %d, want 0", n)
	}
	// The store works after the restart: the same Put now succeeds.
	if err := s2.Put(context.Background(), want, bytes.NewReader(content)); err != nil {
		t.Fatalf("Put() after restart error = %v", err)
	}
	if info, err := s2.Stat(context.Background(), want.Digest); err != nil || info.Size != want.Size {
		t.Errorf("Stat() after successful Put = %+v, %v", info, err)
	}
}
