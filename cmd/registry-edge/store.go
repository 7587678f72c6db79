package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/blobstore/objstore"
	"github.com/registry-edge/registry-edge/internal/config"
)

// contentStore is what serve needs of a blob store: the proxy fills it, gc
// walks and deletes.
type contentStore interface {
	blobstore.Store
	blobstore.Ingester
	blobstore.Walker
}

var (
	_ contentStore = (*blobstore.FS)(nil)
	_ contentStore = (*objstore.Store)(nil)
)

// openStore opens the blob store storage.blobs selects. With s3, fills are
// staged under storage.root/staging (so that concurrent clients stream them
// as they arrive) and committed to the bucket only once verified; leftovers
// of a crash older than storage.tempMaxAge are removed first.
func openStore(ctx context.Context, cfg config.Config, log *slog.Logger) (contentStore, error) {
	s := cfg.Storage
	if s.Blobs.Driver != config.BlobsS3 {
		return blobstore.NewFS(s.Root, blobstore.FSOptions{TempMaxAge: s.TempMaxAge.D(), PartialMaxAge: s.PartialMaxAge.D()})
	}
	params, err := s.Blobs.S3.DriverParameters()
	if err != nil {
		return nil, fmt.Errorf("storage.blobs.s3: %w", err)
	}
	store, err := objstore.NewFromParameters(ctx, "s3aws", params, objstore.Options{TempDir: filepath.Join(s.Root, "staging")})
	if err != nil {
		return nil, fmt.Errorf("storage.blobs.s3: %w", err)
	}
	n, err := store.CleanUploads(ctx, time.Now().Add(-s.TempMaxAge.D()))
	if err != nil {
		// The bucket is unreachable or refuses us: say so now rather than
		// on the first fill.
		return nil, fmt.Errorf("storage.blobs.s3: bucket %s: %w", s.Blobs.S3.Bucket, err)
	}
	log.Info("blobs in S3", slog.String("bucket", s.Blobs.S3.Bucket), slog.String("endpoint", s.Blobs.S3.RegionEndpoint),
		slog.String("rootDirectory", s.Blobs.S3.RootDirectory), slog.Int("staleUploadsRemoved", n))
	return store, nil
}
