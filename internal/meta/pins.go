package meta

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Pins protect content from eviction. Each pin has an owner (a prefetch
// list entry, say); content is pinned while any owner pins it.
var (
	bucketPins     = []byte("pins")      // <digest> 0x00 <owner> -> empty
	bucketPinOwner = []byte("pinowners") // <owner> -> JSON list of digests
)

// SetPins makes ds the whole set of digests owner pins, replacing the
// owner's previous set. An empty ds removes the owner.
func (m *DB) SetPins(_ context.Context, owner string, ds []digest.Digest) error {
	return m.db.Update(func(tx *bolt.Tx) error {
		pins, err := tx.CreateBucketIfNotExists(bucketPins)
		if err != nil {
			return err
		}
		owners, err := tx.CreateBucketIfNotExists(bucketPinOwner)
		if err != nil {
			return err
		}
		var old []digest.Digest
		if b := owners.Get([]byte(owner)); b != nil {
			if err := json.Unmarshal(b, &old); err != nil {
				return err
			}
		}
		for _, d := range old {
			if err := pins.Delete(pinKey(d, owner)); err != nil {
				return err
			}
		}
		if len(ds) == 0 {
			return owners.Delete([]byte(owner))
		}
		ds = slices.Clone(ds)
		slices.Sort(ds)
		ds = slices.Compact(ds)
		for _, d := range ds {
			if err := pins.Put(pinKey(d, owner), nil); err != nil {
				return err
			}
		}
		b, err := json.Marshal(ds)
		if err != nil {
			return err
		}
		return owners.Put([]byte(owner), b)
	})
}

// Pins returns the set of digests owner pins, sorted; none if it pins
// nothing.
func (m *DB) Pins(_ context.Context, owner string) ([]digest.Digest, error) {
	var out []digest.Digest
	err := m.db.View(func(tx *bolt.Tx) error {
		owners := tx.Bucket(bucketPinOwner)
		if owners == nil {
			return nil
		}
		if b := owners.Get([]byte(owner)); b != nil {
			return json.Unmarshal(b, &out)
		}
		return nil
	})
	return out, err
}

// PinOwners returns every owner that pins something, sorted.
func (m *DB) PinOwners(_ context.Context) ([]string, error) {
	var out []string
	err := m.db.View(func(tx *bolt.Tx) error {
		owners := tx.Bucket(bucketPinOwner)
		if owners == nil {
			return nil
		}
		return owners.ForEach(func(k, _ []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	return out, err
}

// PinnedBy returns the owners that pin d, sorted; none means d is not
// pinned.
func (m *DB) PinnedBy(_ context.Context, d digest.Digest) ([]string, error) {
	var out []string
	err := m.db.View(func(tx *bolt.Tx) error {
		pins := tx.Bucket(bucketPins)
		if pins == nil {
			return nil
		}
		prefix := append([]byte(d), 0)
		c := pins.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			out = append(out, string(k[len(prefix):]))
		}
		return nil
	})
	return out, err
}

func pinKey(d digest.Digest, owner string) []byte {
	return append(append([]byte(d), 0), owner...)
}
