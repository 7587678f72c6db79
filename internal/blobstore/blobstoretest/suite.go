// Package blobstoretest is the conformance suite every blobstore.Store
// implementation runs from its own tests.
package blobstoretest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/errdef"
)

// Run runs the suite against stores made by newStore.
func Run(t *testing.T, newStore func(t *testing.T) blobstore.Store) {
	ctx := context.Background()
	content := []byte("registry-edge conformance content")
	desc := ocispec.Descriptor{Digest: digest.FromBytes(content), Size: int64(len(content))}

	t.Run("PutStatOpen", func(t *testing.T) {
		s := newStore(t)
		if err := s.Put(ctx, desc, bytes.NewReader(content)); err != nil {
			t.Fatalf("Store.Put() error = %v", err)
		}
		info, err := s.Stat(ctx, desc.Digest)
		if err != nil || info.Size != desc.Size || info.Digest != desc.Digest {
			t.Fatalf("Store.Stat() = %+v, %v, want size %d", info, err, desc.Size)
		}
		rc, err := s.Open(ctx, desc.Digest)
		if err != nil {
			t.Fatalf("Store.Open() error = %v", err)
		}
		defer rc.Close()
		if _, err := rc.Seek(9, io.SeekStart); err != nil {
			t.Fatalf("Seek() error = %v", err)
		}
		got, _ := io.ReadAll(rc)
		if !bytes.Equal(got, content[9:]) {
			t.Errorf("content after seek = %q, want %q", got, content[9:])
		}
	})
	t.Run("PutExistingIsSuccess", func(t *testing.T) {
		s := newStore(t)
		for i := 0; i < 2; i++ {
			if err := s.Put(ctx, desc, bytes.NewReader(content)); err != nil {
				t.Fatalf("Store.Put() #%d error = %v", i, err)
			}
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Stat(ctx, desc.Digest); !errors.Is(err, errdef.ErrNotFound) {
			t.Errorf("Store.Stat() error = %v, want ErrNotFound", err)
		}
		if _, err := s.Open(ctx, desc.Digest); !errors.Is(err, errdef.ErrNotFound) {
			t.Errorf("Store.Open() error = %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, desc.Digest); !errors.Is(err, errdef.ErrNotFound) {
			t.Errorf("Store.Delete() error = %v, want ErrNotFound", err)
		}
	})
	t.Run("RejectsWrongContent", func(t *testing.T) {
		tests := []struct {
			name string
			body []byte
			want error
		}{
			{"different bytes same size", bytes.ToUpper(content), errdef.ErrDigestMismatch},
			{"truncated", content[:10], errdef.ErrSizeMismatch},
			{"too long", append(append([]byte{}, content...), 'x'), errdef.ErrSizeMismatch},
			{"empty", nil, errdef.ErrSizeMismatch},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := newStore(t)
				if err := s.Put(ctx, desc, bytes.NewReader(tt.body)); !errors.Is(err, tt.want) {
					t.Fatalf("Store.Put() error = %v, want %v", err, tt.want)
				}
				if _, err := s.Stat(ctx, desc.Digest); !errors.Is(err, errdef.ErrNotFound) {
					t.Errorf("Store.Stat() after failed Put error = %v, want ErrNotFound", err)
				}
				assertEmpty(t, s)
			})
		}
	})
	t.Run("ReaderErrorCommitsNothing", func(t *testing.T) {
		s := newStore(t)
		r := io.MultiReader(bytes.NewReader(content[:5]), errReader{})
		if err := s.Put(ctx, desc, r); err == nil {
			t.Fatal("Store.Put() with a failing reader succeeded")
		}
		assertEmpty(t, s)
	})
	t.Run("Delete", func(t *testing.T) {
		s := newStore(t)
		if err := s.Put(ctx, desc, bytes.NewReader(content)); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, desc.Digest); err != nil {
			t.Fatalf("Store.Delete() error = %v", err)
		}
		if _, err := s.Stat(ctx, desc.Digest); !errors.Is(err, errdef.ErrNotFound) {
			t.Errorf("Store.Stat() after Delete error = %v, want ErrNotFound", err)
		}
	})
	t.Run("ConcurrentPut", func(t *testing.T) {
		s := newStore(t)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- s.Put(ctx, desc, strings.NewReader(string(content)))
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("concurrent Store.Put() error = %v", err)
			}
		}
		rc, err := s.Open(ctx, desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		got, _ := io.ReadAll(rc)
		if !bytes.Equal(got, content) {
			t.Errorf("content = %q, want %q", got, content)
		}
	})
	t.Run("InvalidDigest", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Stat(ctx, "sha256:../../etc/passwd"); !errors.Is(err, errdef.ErrInvalid) {
			t.Errorf("Store.Stat(traversal) error = %v, want ErrInvalid", err)
		}
	})
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func assertEmpty(t *testing.T, s blobstore.Store) {
	t.Helper()
	w, ok := s.(blobstore.Walker)
	if !ok {
		return
	}
	n := 0
	if err := w.Walk(context.Background(), func(blobstore.Info) error { n++; return nil }); err != nil {
		t.Fatalf("Walk() error = %v", err)
	}
	if n != 0 {
		t.Errorf("store holds %d blobs after a failed Put, want 0", n)
	}
}
