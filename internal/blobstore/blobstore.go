// Package blobstore is the content-addressed store of registry-edge. Blobs
// and manifests are stored by digest; nothing becomes visible unless it hashed
// to its digest in exactly its size, and every commit is temp file + fsync +
// rename, so that a crash at any point leaves no partial or wrong content.
//
// The package must not import net/http (see depcheck_test.go).
package blobstore

import (
	"context"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Info describes stored content.
type Info struct {
	Digest  digest.Digest
	Size    int64
	ModTime time.Time
}

// Reader reads committed content.
type Reader interface {
	// Stat returns the content's Info or an error wrapping errdef.ErrNotFound.
	Stat(ctx context.Context, d digest.Digest) (Info, error)
	// Open returns the content. For the filesystem store the result is an
	// *os.File.
	Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, error)
}

// Store reads and writes content.
type Store interface {
	Reader
	// Put commits r only if it hashes to want.Digest in exactly want.Size
	// bytes (want.Size < 0: any size). Existing content is success.
	Put(ctx context.Context, want ocispec.Descriptor, r io.Reader) error
	// Delete removes content; deleting absent content wraps errdef.ErrNotFound.
	Delete(ctx context.Context, d digest.Digest) error
}

// Walker is an optional capability: visiting every committed blob.
type Walker interface {
	Walk(ctx context.Context, fn func(Info) error) error
}

// Ingester is an optional capability: writing content incrementally while
// others read it, as a pull-through fill does.
type Ingester interface {
	Ingest(ctx context.Context, d digest.Digest) (Ingest, error)
}

// Ingest is content being written. Bytes written are visible to OpenReader
// readers at once; the content becomes a committed blob only through Commit.
type Ingest interface {
	io.Writer
	// OpenReader opens an independent read handle on the bytes written so
	// far (and later). Callers must only read what Written reported.
	OpenReader() (io.ReadSeekCloser, error)
	// Written is the number of bytes written so far.
	Written() int64
	// Verify checks the bytes written so far against d and size (size < 0:
	// any size) without committing them.
	Verify(size int64) error
	// Commit syncs and verifies the content against d and size (size < 0:
	// any size) and makes it visible. It always releases the ingest.
	Commit(ctx context.Context, size int64) error
	// Cancel discards the ingest. It is safe to call after Commit.
	Cancel() error
}

// LocalFile is a blob in a local file: random access, and removed when
// closed if it is a temporary copy.
type LocalFile interface {
	io.ReadSeekCloser
	io.ReaderAt
}
