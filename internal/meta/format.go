package meta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	bolt "go.etcd.io/bbolt"

	"github.com/registry-edge/registry-edge/internal/errdef"
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

// SharedFormat is the format of the records replicas share in a bucket
// (_meta/, ADR 0014), which the bucket records as sharedFormatKey. As with
// StoreFormat, a binary refuses a bucket of a newer format, at start: its
// replicas run different versions during every rolling upgrade, so a
// change to the shared records that older replicas would misread, miss or
// overwrite (a key layout they would not list, a record they would rewrite
// without what it said) is safe only if they stop rather than go on. Raise
// it only for such changes, and say what changed in docs/storage.md;
// records older replicas read or ignore harmlessly (a new directory, a new
// JSON field, the bases added to delta keys) keep it.
const SharedFormat = 1

// sharedFormatKey names the record of the bucket's shared format.
const sharedFormatKey = "format"

// sharedFormatRecord is that record.
type sharedFormatRecord struct {
	Format int `json:"format"`
}

// checkSharedFormat refuses a bucket whose shared records are of a newer
// format than this binary's, and records this binary's format in one that
// has none (new, or written only by binaries from before the marker) or an
// older one. Two replicas that start at once may both find it missing and
// write: the lower of two formats may then stay recorded until the newer
// replica starts again, which is what a bucket without the marker is.
func (m *DB) checkSharedFormat(ctx context.Context) error {
	b, err := m.shared.GetRecord(ctx, sharedFormatKey)
	switch {
	case errors.Is(err, errdef.ErrNotFound):
	case err != nil:
		return fmt.Errorf("shared metadata: %w", err)
	default:
		var rec sharedFormatRecord
		if err := json.Unmarshal(b, &rec); err != nil || rec.Format < 1 {
			return fmt.Errorf("shared metadata: the bucket's %s record %q is not a store format: it was not written by registry-edge, or is damaged (check storage.blobs.s3.rootDirectory)", sharedFormatKey, b)
		}
		if rec.Format > SharedFormat {
			return fmt.Errorf("shared metadata: the bucket's records are of format %d, written by a newer registry-edge replica; this binary reads format %d at most: run the newer version on this replica too (or give it a bucket or storage.blobs.s3.rootDirectory of its own)", rec.Format, SharedFormat)
		}
		if rec.Format == SharedFormat {
			return nil
		}
	}
	return m.putShared(ctx, sharedFormatKey, sharedFormatRecord{Format: SharedFormat})
}
