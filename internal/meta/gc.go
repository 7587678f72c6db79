package meta

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// bucketAccess holds when content was last served: <digest> -> unix
// seconds (8 bytes, big-endian). The proxy records accesses in memory and
// flushes them here in batches; eviction reads them.
var bucketAccess = []byte("access")

// ManifestDigests returns the digest of every manifest recorded as stored:
// with a shared store, by any replica.
func (m *DB) ManifestDigests(ctx context.Context) (map[digest.Digest]bool, error) {
	out := map[digest.Digest]bool{}
	err := m.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketManifests).ForEach(func(k, _ []byte) error {
			out[digest.Digest(k)] = true
			return nil
		})
	})
	if err != nil || m.shared == nil {
		return out, err
	}
	ds, err := m.sharedDigests(ctx, "manifests")
	for _, d := range ds {
		out[d] = true
	}
	return out, err
}

// TagRecord is one cached tag.
type TagRecord struct {
	Key   string // <registry>/<repo>:<tag>
	Entry TagEntry
}

// AllTags returns every cached tag of every repository.
func (m *DB) AllTags(_ context.Context) ([]TagRecord, error) {
	var out []TagRecord
	err := m.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTags).ForEach(func(k, v []byte) error {
			var e TagEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			out = append(out, TagRecord{Key: string(k), Entry: e})
			return nil
		})
	})
	return out, err
}

// ReferrersRecord is one cached referrers list.
type ReferrersRecord struct {
	Key     string // <registry>/<repo>@<subject digest>
	Subject digest.Digest
	List    digest.Digest // the stored index listing the referrers
}

// AllReferrers returns every cached referrers list.
func (m *DB) AllReferrers(_ context.Context) ([]ReferrersRecord, error) {
	var out []ReferrersRecord
	err := m.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketReferrers).ForEach(func(k, v []byte) error {
			var e Referrers
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			i := bytes.LastIndexByte(k, '@')
			if i < 0 {
				return nil
			}
			out = append(out, ReferrersRecord{Key: string(k), Subject: digest.Digest(k[i+1:]), List: e.Digest})
			return nil
		})
	})
	return out, err
}

// Forget removes every record of the content in ds, in one transaction:
// manifest records, the links of every repository to it, the tags that
// point at it, the referrers lists whose subject or list it is, its access
// time, its signature verdicts and trust, under every rule revision, the
// trust of what it covered as a verified manifest, and, for a layer, the
// deltas recorded to rebuild it.
// The content files are the caller's to delete, after this. With a shared
// store, the shared manifest and delta records of ds go too (links,
// verdicts and trust stay: they remain true of the content, should it come
// back).
func (m *DB) Forget(ctx context.Context, ds []digest.Digest) error {
	set := map[digest.Digest]bool{}
	for _, d := range ds {
		set[d] = true
	}
	if err := m.forget(set); err != nil || m.shared == nil {
		return err
	}
	for d := range set {
		if d.Validate() != nil {
			continue
		}
		for _, key := range []string{sharedManifestKey(d), sharedDeltasDir(d)} {
			if err := m.shared.DeleteRecord(ctx, key); err != nil {
				return fmt.Errorf("shared metadata: %w", err)
			}
		}
	}
	return nil
}

// ForgetLocal removes the records of the content in ds from this database
// as Forget does, and leaves the shared store's alone: for a replica that
// does not evict, the records of content the evicting replica removed from
// the bucket (their shared records are that replica's Forget's to remove,
// and one written meanwhile for content stored again must stay).
func (m *DB) ForgetLocal(_ context.Context, ds []digest.Digest) error {
	set := map[digest.Digest]bool{}
	for _, d := range ds {
		set[d] = true
	}
	return m.forget(set)
}

func (m *DB) forget(set map[digest.Digest]bool) error {
	return m.db.Update(func(tx *bolt.Tx) error {
		for d := range set {
			if err := tx.Bucket(bucketManifests).Delete([]byte(d)); err != nil {
				return err
			}
			if b := tx.Bucket(bucketAccess); b != nil {
				if err := b.Delete([]byte(d)); err != nil {
					return err
				}
			}
			// The deltas known to rebuild it: recorded for each layer a
			// region computed one of, or an edge found published, they
			// grew with every layer version for the life of the mirror.
			// Pulled again, its image's manifest comes from the upstream
			// again, and its deltas are looked for again.
			if err := tx.Bucket(bucketDeltas).Delete([]byte(d)); err != nil {
				return err
			}
		}
		// Links, tags, referrers lists, and signature verdicts and
		// trust (a regional mirror verifies thousands of images a month,
		// about 1 KiB of records each, which grew without bound when they
		// outlived their content; gone, it is verified again if pulled
		// again, through the upstream it must be fetched from anyway).
		// Trust goes with the content and with the manifest that covers
		// it (content never stored here, a layer a device already had,
		// would keep it forever); another manifest's record still covers
		// content they share.
		return forgetIndexed(tx, set)
	})
}

// keyField returns field i of a key of NUL-separated fields (nil if it has
// fewer).
func keyField(k []byte, i int) []byte {
	for ; i > 0; i-- {
		j := bytes.IndexByte(k, 0)
		if j < 0 {
			return nil
		}
		k = k[j+1:]
	}
	if j := bytes.IndexByte(k, 0); j >= 0 {
		return k[:j]
	}
	return k
}

// Touch records access times (later ones win over what is stored). With a
// shared store, it then publishes all of this replica's access times, for
// the replica that evicts.
func (m *DB) Touch(ctx context.Context, at map[digest.Digest]time.Time) error {
	if len(at) == 0 {
		return nil
	}
	if err := m.touch(at); err != nil || m.shared == nil {
		return err
	}
	return m.publishAccess(ctx)
}

func (m *DB) touch(at map[digest.Digest]time.Time) error {
	return m.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketAccess)
		if err != nil {
			return err
		}
		for d, t := range at {
			if old := b.Get([]byte(d)); len(old) == 8 && int64(binary.BigEndian.Uint64(old)) >= t.Unix() {
				continue
			}
			var v [8]byte
			binary.BigEndian.PutUint64(v[:], uint64(t.Unix()))
			if err := b.Put([]byte(d), v[:]); err != nil {
				return err
			}
		}
		return nil
	})
}

// Restamp records access times over what is stored (the wall clock was
// stepped: they are the same accesses, measured again in its new frame),
// and brings every other stored time later than now down to now: written
// before the clock was stepped back, it would be the newest for as long as
// the step, never idle and never evicted. With a shared store, it then
// publishes all of this replica's access times.
func (m *DB) Restamp(ctx context.Context, at map[digest.Digest]time.Time, now time.Time) error {
	err := m.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketAccess)
		if err != nil {
			return err
		}
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], uint64(now.Unix()))
		var later [][]byte
		if err := b.ForEach(func(k, old []byte) error {
			if _, ok := at[digest.Digest(k)]; !ok && len(old) == 8 && int64(binary.BigEndian.Uint64(old)) > now.Unix() {
				later = append(later, bytes.Clone(k))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range later {
			if err := b.Put(k, v[:]); err != nil {
				return err
			}
		}
		for d, t := range at {
			binary.BigEndian.PutUint64(v[:], uint64(t.Unix()))
			if err := b.Put([]byte(d), v[:]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || m.shared == nil {
		return err
	}
	return m.publishAccess(ctx)
}

// AccessTimes returns every recorded access time: with a shared store, the
// latest any replica published.
func (m *DB) AccessTimes(ctx context.Context) (map[digest.Digest]time.Time, error) {
	out, err := m.localAccessTimes()
	if err != nil || m.shared == nil {
		return out, err
	}
	return out, m.mergeSharedAccess(ctx, out)
}

// LocalAccessTimes returns the access times recorded here, without those
// other replicas published.
func (m *DB) LocalAccessTimes(_ context.Context) (map[digest.Digest]time.Time, error) {
	return m.localAccessTimes()
}

func (m *DB) localAccessTimes() (map[digest.Digest]time.Time, error) {
	out := map[digest.Digest]time.Time{}
	err := m.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAccess)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if len(v) == 8 {
				out[digest.Digest(k)] = time.Unix(int64(binary.BigEndian.Uint64(v)), 0)
			}
			return nil
		})
	})
	return out, err
}

// AllPinned returns every pinned digest.
func (m *DB) AllPinned(_ context.Context) (map[digest.Digest]bool, error) {
	out := map[digest.Digest]bool{}
	err := m.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPins)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			if i := bytes.IndexByte(k, 0); i > 0 {
				out[digest.Digest(k[:i])] = true
			}
			return nil
		})
	})
	return out, err
}
