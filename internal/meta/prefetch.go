package meta

import (
	"context"
	"encoding/json"

	bolt "go.etcd.io/bbolt"
)

// bucketPrefetch holds images added to the prefetch list at run time (not
// by the configuration), so that the list survives a restart.
var bucketPrefetch = []byte("prefetch") // <ref> -> PrefetchRequest

// PrefetchRequest is an image added to the prefetch list at run time.
type PrefetchRequest struct {
	Ref       string   `json:"ref"`
	Platforms []string `json:"platforms,omitempty"`
}

// PutPrefetch adds r to the stored list, replacing an entry of the same Ref.
func (m *DB) PutPrefetch(_ context.Context, r PrefetchRequest) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return m.db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bucketPrefetch)
		if err != nil {
			return err
		}
		return bk.Put([]byte(r.Ref), b)
	})
}

// DeletePrefetch removes ref from the stored list; absent is not an error.
func (m *DB) DeletePrefetch(_ context.Context, ref string) error {
	return m.db.Update(func(tx *bolt.Tx) error {
		if bk := tx.Bucket(bucketPrefetch); bk != nil {
			return bk.Delete([]byte(ref))
		}
		return nil
	})
}

// Prefetches returns the stored list, ordered by Ref.
func (m *DB) Prefetches(_ context.Context) ([]PrefetchRequest, error) {
	var out []PrefetchRequest
	err := m.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketPrefetch)
		if bk == nil {
			return nil
		}
		return bk.ForEach(func(_, v []byte) error {
			var r PrefetchRequest
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}
