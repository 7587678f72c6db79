package meta

import (
	"context"
	"time"

	bolt "go.etcd.io/bbolt"
)

// bucketState holds facts about the mirror itself that must outlive a
// restart: <name> -> RFC 3339 time it was last noted.
var bucketState = []byte("state")

// StateDeltasAsked notes that a lower tier asked this mirror for a delta:
// precomputation is on from then on, across restarts.
const StateDeltasAsked = "deltas-asked"

// NoteState records that fact name holds, as of at.
func (m *DB) NoteState(_ context.Context, name string, at time.Time) error {
	return m.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketState)
		if err != nil {
			return err
		}
		return b.Put([]byte(name), []byte(at.UTC().Format(time.RFC3339)))
	})
}

// State returns when fact name was last noted, and whether it was.
func (m *DB) State(_ context.Context, name string) (time.Time, bool, error) {
	var at time.Time
	var ok bool
	err := m.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketState)
		if b == nil {
			return nil
		}
		v := b.Get([]byte(name))
		if v == nil {
			return nil
		}
		t, err := time.Parse(time.RFC3339, string(v))
		if err != nil {
			return nil // unreadable: as if never noted
		}
		at, ok = t, true
		return nil
	})
	return at, ok, err
}
