package gc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/blobstore"
	"github.com/registry-edge/registry-edge/internal/errdef"
)

// LocalDB is a DB shared with other replicas that can tell and forget its
// own records apart from the shared ones; *meta.DB implements it.
type LocalDB interface {
	// LocalAccessTimes returns the access times this replica recorded.
	LocalAccessTimes(ctx context.Context) (map[digest.Digest]time.Time, error)
	// ForgetLocal removes this replica's records of ds, not the shared
	// ones.
	ForgetLocal(ctx context.Context, ds []digest.Digest) error
}

// ForgetEvicted is for a replica that does not evict a shared bucket
// (storage.blobs.replica.evict: false): it forgets its own records (access
// times, manifest records, links, tags, verdicts, trust, delta records) of
// the content it served that the evicting replica has since removed from
// the store, and drops that content from the memory caches. Nothing else
// ever removed them: the replica's metadata grew with everything it ever
// served, and so did the access record it publishes, all of it, every
// minute it serves something, which the evicting replica reads at every
// plan. It returns how many digests it forgot.
//
// Content stored again meanwhile is kept: each digest is looked up in the
// store again while no request records it (Evictor.Evict).
func (m *Maintainer) ForgetEvicted(ctx context.Context) (int, error) {
	db, ok := m.DB.(LocalDB)
	if !ok {
		return 0, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// What was served until now is among the access times.
	if err := m.Cache.FlushAccess(ctx); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		return 0, err
	}
	known, err := db.LocalAccessTimes(ctx)
	if err != nil {
		return 0, fmt.Errorf("gc: %w", err)
	}
	if len(known) == 0 {
		return 0, nil
	}
	stored := make(map[digest.Digest]bool, len(known))
	if err := m.Store.Walk(ctx, func(i blobstore.Info) error {
		if _, ok := known[i.Digest]; ok {
			stored[i.Digest] = true
		}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("gc: %w", err)
	}
	var cands []digest.Digest
	for d := range known {
		if !stored[d] {
			cands = append(cands, d)
		}
	}
	slices.Sort(cands)
	n := 0
	for batch := range slices.Chunk(cands, evictBatch) {
		err := m.Cache.Evict(batch, func() error {
			var gone []digest.Digest
			for _, d := range batch {
				_, err := m.Store.Stat(ctx, d)
				switch {
				case isNotFound(err):
					gone = append(gone, d)
				case err != nil:
					return fmt.Errorf("gc: %w", err)
				}
			}
			if err := db.ForgetLocal(ctx, gone); err != nil {
				return fmt.Errorf("gc: forget metadata: %w", err)
			}
			for _, d := range gone {
				m.Cache.Forget(d)
			}
			n += len(gone)
			return nil
		})
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
