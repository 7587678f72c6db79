package meta

import (
	"fmt"
	"strconv"

	bolt "go.etcd.io/bbolt"
)

// bucketFormat holds the store format of the database: "version" ->
// decimal. A binary refuses a store of a format newer than the one it
// writes, so that a downgrade stops at start with a message instead of
// reading records it does not know and rewriting them without what they
// said. Binaries from before the marker open any store: the marker guards
// downgrades from this version on, not to those.
var bucketFormat = []byte("storeformat")

// StoreFormat is the store format this binary reads and writes. Raise it
// when a change makes a store unsafe for the binaries before it (records
// they would misread or overwrite, a layout they would not find), and say
// what changed in docs/storage.md; changes that older binaries ignore
// harmlessly (a new bucket, a new JSON field) keep it.
const StoreFormat = 1

// checkFormat refuses a database written in a newer store format and
// records this binary's format in one that has none (new, or written by a
// binary from before the marker) or an older one.
func checkFormat(tx *bolt.Tx) error {
	b, err := tx.CreateBucketIfNotExists(bucketFormat)
	if err != nil {
		return err
	}
	if v := b.Get([]byte("version")); v != nil {
		n, err := strconv.Atoi(string(v))
		if err != nil {
			return fmt.Errorf("store format %q is not a number: the database was not written by registry-edge, or is damaged", v)
		}
		if n > StoreFormat {
			return fmt.Errorf("store format %d was written by a newer registry-edge; this binary reads format %d at most: run the newer version (or move the storage root aside and start with an empty one)", n, StoreFormat)
		}
		if n == StoreFormat {
			return nil
		}
	}
	return b.Put([]byte("version"), []byte(strconv.Itoa(StoreFormat)))
}

// closedTx, in bucketFormat, is the id of the write transaction with which
// this version last closed the database: if the next write transaction is
// the one after it, nothing wrote in between. Else a crash cut the last
// run, or another binary wrote, maybe one from before records this
// version derives from others (the registry index of links, the index by
// digest): those are checked against the records at Open, and what
// differs written.
var closedTx = []byte("closedTx")

func noteClosed(tx *bolt.Tx) error {
	b, err := tx.CreateBucketIfNotExists(bucketFormat)
	if err != nil {
		return err
	}
	return b.Put(closedTx, []byte(strconv.Itoa(tx.ID())))
}

// closedLast reports whether the database was last written by this
// version's Close: tx is the first write transaction since.
func closedLast(tx *bolt.Tx) bool {
	b := tx.Bucket(bucketFormat)
	if b == nil {
		return false
	}
	n, err := strconv.Atoi(string(b.Get(closedTx)))
	return err == nil && n+1 == tx.ID()
}
