package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/blobstore/objstore"
	"github.com/registry-edge/registry-edge/internal/config"
	"github.com/registry-edge/registry-edge/internal/errdef"
	"github.com/registry-edge/registry-edge/internal/gc"
	"github.com/registry-edge/registry-edge/internal/meta"
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
// as they arrive) and committed to the bucket only once verified; uploads a
// crash left in the bucket older than storage.tempMaxAge (other replicas may
// be uploading), and every staging file, are removed first. The caller
// holds meta.db's lock on storage.root.
func openStore(ctx context.Context, cfg config.Config, log *slog.Logger) (contentStore, error) {
	s := cfg.Storage
	if s.Blobs.Driver != config.BlobsS3 {
		// No other process can be writing under the root (the caller
		// holds meta.db's lock): every ingest file, a rebuild's
		// uncompressed tar included, is a dead process's, whatever its
		// age. Partial downloads are kept for resumes.
		fs, err := blobstore.NewFS(s.Root, blobstore.FSOptions{TempMaxAge: 0, PartialMaxAge: s.PartialMaxAge.D()})
		if err != nil {
			return nil, fmt.Errorf("storage.root: %w", err)
		}
		if err := fs.CheckWritable(); err != nil {
			return nil, fmt.Errorf("storage.root: %w", err)
		}
		return fs, nil
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
	// The staging directory is this process's alone (the caller holds
	// meta.db's lock), and fills on a bucket do not resume: whatever a
	// killed process left there is garbage, whatever its age.
	if _, err := store.CleanTempDir(); err != nil {
		return nil, fmt.Errorf("storage.root: %w", err)
	}
	log.Info("blobs in S3", slog.String("bucket", s.Blobs.S3.Bucket), slog.String("endpoint", s.Blobs.S3.RegionEndpoint),
		slog.String("rootDirectory", s.Blobs.S3.RootDirectory), slog.Int("staleUploadsRemoved", n))
	return store, nil
}

// cleanUploads removes, every hour (every quarter of storage.tempMaxAge
// when that is shorter), the uploads a crash left in the bucket once they are older than
// tempMaxAge, until ctx ends. Start-up removes only those already that old:
// a replica killed and started again at once (an OOM kill, a crash loop)
// would otherwise keep each killed upload, billed, until a restart a whole
// tempMaxAge later, which on a steady replica may be months away.
func cleanUploads(ctx context.Context, cfg config.Config, store contentStore, log *slog.Logger) {
	obj, ok := store.(*objstore.Store)
	if !ok {
		return
	}
	age := cfg.Storage.TempMaxAge.D()
	t := time.NewTicker(sweepInterval(age))
	defer t.Stop()
	onTicks(ctx, t.C, func() {
		n, err := obj.CleanBucketUploads(ctx, time.Now().Add(-age))
		switch {
		case err != nil && ctx.Err() == nil:
			log.LogAttrs(ctx, slog.LevelWarn, "cannot remove stale uploads from the bucket", slog.Any("err", err))
		case n > 0:
			log.LogAttrs(ctx, slog.LevelInfo, "removed stale uploads from the bucket", slog.Int("staleUploadsRemoved", n))
		}
	})
}

// sweepInterval is how often content older than age is swept: a quarter
// of age, at least every hour (and at most every second).
func sweepInterval(age time.Duration) time.Duration {
	return min(max(age/4, time.Second), time.Hour)
}

// onTicks calls fn at every tick until ctx ends.
func onTicks(ctx context.Context, ticks <-chan time.Time, fn func()) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticks:
		}
		fn()
	}
}

// cleanPartials removes, every hour (every quarter of storage.partialMaxAge
// when that is shorter), the partial downloads last written longer than partialMaxAge
// ago, until ctx ends. Start-up removes those already that old; without
// this, the partial of a fill that gave up (a link down for longer than
// storage.fillTimeout, a blob gone upstream) on a blob never asked for
// again (the fleet moved to the next release) held its space, which
// eviction cannot free, until a restart that on a steady site may be
// months away.
func cleanPartials(ctx context.Context, cfg config.Config, store contentStore, log *slog.Logger) {
	fs, ok := store.(*blobstore.FS)
	if !ok {
		return
	}
	age := cfg.Storage.PartialMaxAge.D()
	t := time.NewTicker(sweepInterval(age))
	defer t.Stop()
	sweepPartials(ctx, fs, age, t.C, log)
}

// sweepPartials removes the partials of fs older than age on every tick,
// until ctx ends.
func sweepPartials(ctx context.Context, fs *blobstore.FS, age time.Duration, ticks <-chan time.Time, log *slog.Logger) {
	onTicks(ctx, ticks, func() {
		n, err := fs.CleanPartials(time.Now().Add(-age))
		switch {
		case err != nil:
			log.LogAttrs(ctx, slog.LevelWarn, "cannot remove stale partial downloads", slog.Any("err", err))
		case n > 0:
			log.LogAttrs(ctx, slog.LevelInfo, "removed stale partial downloads", slog.Int("stalePartialsRemoved", n))
		}
	})
}

// forgetEvicted, on a replica of a shared bucket that does not evict,
// forgets every hour its records of the content the evicting replica
// removed from the bucket (gc.Maintainer.ForgetEvicted), until ctx ends.
// Without it they were kept for the life of the replica, and the access
// record it publishes, whole, every minute it serves something, grew with
// every digest it ever served.
func forgetEvicted(ctx context.Context, cfg config.Config, maint *gc.Maintainer, log *slog.Logger) {
	if cfg.Storage.Blobs.Driver != config.BlobsS3 || cfg.Storage.Blobs.Replica.Evicts() {
		return
	}
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	onTicks(ctx, t.C, func() {
		n, err := maint.ForgetEvicted(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			log.LogAttrs(ctx, slog.LevelWarn, "cannot forget the records of evicted content", slog.Any("err", err))
		case n > 0:
			log.LogAttrs(ctx, slog.LevelInfo, "forgot the records of content another replica evicted", slog.Int("digests", n))
		}
	})
}

// sharedMinIdle is gc.Options.MinIdle on a bucket: five maintenance
// intervals, in which every replica publishes its access times.
const sharedMinIdle = 5 * time.Minute

// shareMeta makes db share its records with the other replicas of the
// bucket, when the blobs are in one (ADR 0014).
func shareMeta(ctx context.Context, cfg config.Config, store contentStore, db *meta.DB, log *slog.Logger) error {
	shared, ok := store.(meta.Shared)
	if !ok {
		return nil
	}
	id, err := cfg.Storage.Blobs.ReplicaID()
	if err != nil {
		return err
	}
	if err := db.Share(ctx, shared, id); errors.Is(err, errdef.ErrInvalid) {
		return fmt.Errorf("storage.blobs.replica.id: %w", err)
	} else if err != nil {
		return fmt.Errorf("storage.blobs (bucket %s): %w", cfg.Storage.Blobs.S3.Bucket, err)
	}
	log.LogAttrs(ctx, slog.LevelInfo, "replica of a shared bucket", slog.String("replica", id),
		slog.Bool("evict", cfg.Storage.Blobs.Replica.Evicts()))
	return nil
}

// onDiskFull is what the proxy calls when a write fails for lack of space:
// eviction, when the blobs are local. With blobs in a bucket the full disk
// is the local staging one, which deleting objects does not relieve.
func onDiskFull(cfg config.Config, evict func(context.Context)) func(context.Context) {
	if cfg.Storage.Blobs.Driver == config.BlobsS3 {
		return nil
	}
	return evict
}
