package meta

import (
	"bytes"
	"encoding/json"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// bucketByDigest indexes the records that name a digest, for Forget:
// <digest> 0x00 <bucket> 0x00 <key> -> empty, for the links, tags,
// referrers lists, verdicts and trust that name it (in their key or, for
// tags and referrers lists, in their value). Without it, forgetting a
// batch of evicted content read every record of those buckets: on a
// mirror of 20,000 images, 150 ms per batch of 64 digests, with the
// database's write lock held (every pull's metadata write waited), and an
// eviction of thousands of images took minutes of CPU.
//
// An entry can outlive what it points at (a tag that moved, a record
// deleted): Forget checks the record before deleting it, and drops the
// entry either way.
var bucketByDigest = []byte("bydigest")

func byDigestKey(d digest.Digest, bucket, key []byte) []byte {
	k := make([]byte, 0, len(d)+len(bucket)+len(key)+2)
	k = append(k, d...)
	k = append(k, 0)
	k = append(k, bucket...)
	k = append(k, 0)
	return append(k, key...)
}

// index records that the record bucket/key names each of ds.
func index(tx *bolt.Tx, bucket, key []byte, ds ...digest.Digest) error {
	idx := tx.Bucket(bucketByDigest)
	for _, d := range ds {
		if d == "" {
			continue
		}
		if err := idx.Put(byDigestKey(d, bucket, key), nil); err != nil {
			return err
		}
	}
	return nil
}

// putIndexed stores v under bucket/key and indexes it under ds, in one
// transaction.
func putIndexed(db boltDB, bucket, key []byte, v any, ds ...digest.Digest) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucket).Put(key, b); err != nil {
			return err
		}
		return index(tx, bucket, key, ds...)
	})
}

// digestsOf returns the digests that record k (value v) of bucket names,
// as the index has them.
func digestsOf(bucket, k, v []byte) []digest.Digest {
	switch {
	case bytes.Equal(bucket, bucketLinks):
		if _, d, ok := splitLinkKey(k); ok {
			return []digest.Digest{d}
		}
	case bytes.Equal(bucket, bucketTags):
		var e TagEntry
		if json.Unmarshal(v, &e) == nil {
			return []digest.Digest{e.Digest}
		}
	case bytes.Equal(bucket, bucketReferrers):
		var e Referrers
		var out []digest.Digest
		if i := bytes.LastIndexByte(k, '@'); i >= 0 {
			out = append(out, digest.Digest(k[i+1:]))
		}
		if json.Unmarshal(v, &e) == nil {
			out = append(out, e.Digest)
		}
		return out
	case bytes.Equal(bucket, bucketVerdicts):
		return []digest.Digest{digest.Digest(keyField(k, 2))}
	case bytes.Equal(bucket, bucketTrusted):
		return []digest.Digest{digest.Digest(keyField(k, 3)), digest.Digest(keyField(k, 4))}
	}
	return nil
}

// indexedBuckets are the buckets bucketByDigest covers.
var indexedBuckets = [][]byte{bucketLinks, bucketTags, bucketReferrers, bucketVerdicts, bucketTrusted}

// syncByDigest adds to bucketByDigest (made if missing) the entries of
// the records it lacks: a database from before the index, or records a
// binary from before it wrote after a downgrade (without them, Forget
// would leave those links, tags and verdicts of evicted content behind).
// Entries already there are not written again; entries of records gone
// are harmless (Forget checks the record) and are left to Forget.
func syncByDigest(tx *bolt.Tx) error {
	idx, err := tx.CreateBucketIfNotExists(bucketByDigest)
	if err != nil {
		return err
	}
	for _, name := range indexedBuckets {
		if err := tx.Bucket(name).ForEach(func(k, v []byte) error {
			for _, d := range digestsOf(name, k, v) {
				if d == "" || idx.Get(byDigestKey(d, name, k)) != nil {
					continue
				}
				if err := index(tx, name, k, d); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// forgetIndexed deletes, in tx, every indexed record that still names a
// digest of set, and their index entries.
func forgetIndexed(tx *bolt.Tx, set map[digest.Digest]bool) error {
	idx := tx.Bucket(bucketByDigest)
	regs := tx.Bucket(bucketRegistryLinks)
	var entries [][]byte
	for d := range set {
		prefix := append([]byte(d), 0)
		c := idx.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			entries = append(entries, bytes.Clone(k))
		}
	}
	for _, e := range entries {
		if err := idx.Delete(e); err != nil {
			return err
		}
		rest := e[bytes.IndexByte(e, 0)+1:]
		i := bytes.IndexByte(rest, 0)
		if i < 0 {
			continue
		}
		name, key := rest[:i], rest[i+1:]
		bk := tx.Bucket(name)
		if bk == nil {
			continue
		}
		v := bk.Get(key)
		if v == nil {
			continue
		}
		names := false
		for _, d := range digestsOf(name, key, v) {
			names = names || set[d]
		}
		if !names {
			continue // a tag that moved, a referrers list fetched again
		}
		if err := bk.Delete(key); err != nil {
			return err
		}
		if bytes.Equal(name, bucketLinks) {
			if reg, d, ok := splitLinkKey(key); ok {
				if err := regs.Delete(registryLinkKey(reg, d)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
