package meta

import (
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// A store written by a newer registry-edge is refused at Open with a
// message that says so, and left as it was: a downgrade must not read
// records it does not know and rewrite them without what they said.
func TestNewerStoreFormatIsRefused(t *testing.T) {
	t.Parallel()
	db, path := openTest(t)
	if err := db.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFormat).Put([]byte("version"), []byte("99"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err := Open(path)
	if err == nil || !strings.Contains(err.Error(), "store format 99 was written by a newer registry-edge") || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open of a store of format 99: error = %v, want one naming the database and the newer format", err)
	}
	raw, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.View(func(tx *bolt.Tx) error {
		if v := string(tx.Bucket(bucketFormat).Get([]byte("version"))); v != "99" {
			t.Errorf("store format after the refused Open = %q, want 99 kept", v)
		}
		return nil
	})
}

// A database without the marker (new, or from a binary before it) gets
// this binary's format.
func TestStoreFormatIsRecorded(t *testing.T) {
	t.Parallel()
	db, path := openTest(t)
	if err := db.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketFormat) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketFormat); b == nil || string(b.Get([]byte("version"))) != "1" {
			t.Errorf("store format of a database without one: not recorded as 1")
		}
		return nil
	})
}
