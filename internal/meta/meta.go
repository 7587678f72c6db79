// Package meta keeps the mirror's metadata: which tag points at which
// manifest (and when that was learnt), the media type of stored manifests,
// which repositories are known to hold which content, and cached referrers
// lists. It uses bbolt, an embedded B+tree with copy-on-write pages and an
// fsync per write transaction, so a crash never leaves it half-written.
//
// Content itself lives in the blob store; this package stores only small
// records keyed by digest or name.
package meta

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

var (
	bucketTags      = []byte("tags")      // <registry>/<repo>:<tag> -> TagEntry
	bucketManifests = []byte("manifests") // <digest> -> Manifest
	bucketLinks     = []byte("links")     // <registry>/<repo>@<digest> -> empty
	// bucketRegistryLinks indexes links by registry: <registry> 0x00
	// <digest> -> empty, for content linked to any repository there.
	bucketRegistryLinks = []byte("registrylinks")
	bucketReferrers     = []byte("referrers") // <registry>/<repo>@<digest> -> Referrers
)

// DB is the metadata store.
type DB struct {
	db boltDB
	// shared, if set (Share), holds the records replicas of one bucket
	// share; replica names this one.
	shared  Shared
	replica string
	// instance tells this process's shared records from those of another
	// process that has the same replica id; published is set once it
	// wrote its access record.
	instance  string
	published atomic.Bool
}

// Open opens or creates the metadata database at path. A database bbolt
// finds damaged (bbolt panics on a page it cannot read: garbage written by
// a failing SD card, say) is an error that says so and how to start again,
// not a panic with a stack trace.
func Open(path string) (db *DB, err error) {
	defer func() {
		if v := recover(); v != nil {
			db, err = nil, damaged(path, fmt.Errorf("%v", v))
		}
	}()
	return open(path)
}

// damaged words a database that cannot be opened (DamagedError).
func damaged(path string, err error) error {
	return &DamagedError{Op: "open metadata", Path: path, Cause: err.Error()}
}

func open(path string) (*DB, error) {
	if err := removeTornInit(path); err != nil {
		return nil, fmt.Errorf("open metadata %s: remove the remains of a start that ran out of disk space: %w", path, err)
	}
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, fs.ErrNotExist)
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open metadata %s: locked by another process (is another registry-edge using this storage root?)", path)
	}
	if err != nil {
		if created {
			// Half written (the disk is full): nothing to keep, and a
			// torn file would stop every later start.
			os.Remove(path)
		}
		if errors.Is(err, bolt.ErrInvalid) || errors.Is(err, bolt.ErrChecksum) || errors.Is(err, bolt.ErrVersionMismatch) {
			return nil, damaged(path, err)
		}
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	db := boltDB{DB: bdb, path: path, damage: new(atomic.Pointer[DamagedError])}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := checkFormat(tx); err != nil {
			return err
		}
		for _, b := range [][]byte{bucketTags, bucketManifests, bucketLinks, bucketReferrers, bucketDeltas, bucketVerdicts, bucketTrusted} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if tx.Bucket(bucketTrustedV1) != nil {
			if err := tx.DeleteBucket(bucketTrustedV1); err != nil {
				return err
			}
		}
		if tx.Bucket(bucketRegistryLinks) == nil || tx.Bucket(bucketByDigest) == nil || !closedLast(tx) {
			// New, a database from before the indexes, or one another
			// process may have written since this version closed it (a
			// binary from before the indexes, after a downgrade, links
			// and tags without indexing them; or this version, cut by a
			// crash, which is the common case and changed nothing the
			// indexes miss): bring them in step with the records. Only
			// what differs is written: rebuilding them whole took 25 s
			// at 20,000 images, at every start after a power cut.
			if err := syncRegistryLinks(tx); err != nil {
				return err
			}
			return syncByDigest(tx)
		}
		return nil
	})
	if err != nil {
		db.Close()
		if de, ok := errors.AsType[*DamagedError](err); ok {
			de.Op = "open metadata"
			return nil, de
		}
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	return &DB{db: db}, nil
}

// Damaged returns the first damage a transaction found in the database
// since it was opened (a *DamagedError), or nil. It stays: the damaged
// pages are still there for the next transaction that reads them, whatever
// the ones that read only intact records did meanwhile, and only the site
// admin can repair the file (move it aside and start again). serve's
// /readyz fails on it.
func (m *DB) Damaged() error {
	if de := m.db.damage.Load(); de != nil {
		return de
	}
	return nil
}

// Close notes that this version closed the database (closedLast), then
// closes it.
func (m *DB) Close() error {
	noteErr := m.db.Update(noteClosed)
	if err := m.db.Close(); err != nil {
		return err
	}
	return noteErr
}

// Repo names a repository of one upstream registry.
type Repo struct {
	Registry string // upstream registry name, e.g. "docker.io"
	Name     string // repository name at that registry, e.g. "library/alpine"
}

func (r Repo) String() string { return r.Registry + "/" + r.Name }

// TagEntry is what a tag pointed at when it was last checked upstream.
type TagEntry struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Size      int64         `json:"size"`
	// FetchedAt is when the upstream last confirmed the tag to this
	// mirror; ConfirmedAt, when set, is when the registry the tag comes
	// from did, as far as the upstream (a registry-edge tier) said (Age).
	FetchedAt   time.Time `json:"fetchedAt"`
	ConfirmedAt time.Time `json:"confirmedAt,omitzero"`
	// GoneAt is when the upstream last said it no longer has the tag
	// (cache.tagNotFound serve-cached keeps serving it): asked again only
	// once the tag TTL has passed since.
	GoneAt time.Time `json:"goneAt,omitzero"`
}

// Confirmed returns when the tag was last confirmed at its origin.
func (e TagEntry) Confirmed() time.Time {
	if !e.ConfirmedAt.IsZero() && e.ConfirmedAt.Before(e.FetchedAt) {
		return e.ConfirmedAt
	}
	return e.FetchedAt
}

// Manifest records a stored manifest's media type.
type Manifest struct {
	MediaType string `json:"mediaType"`
	Size      int64  `json:"size"`
}

// Referrers records a cached referrers list (an image index stored in the
// blob store under Digest).
type Referrers struct {
	Digest    digest.Digest `json:"digest"`
	FetchedAt time.Time     `json:"fetchedAt"`
}

func tagKey(r Repo, tag string) []byte       { return []byte(r.String() + ":" + tag) }
func linkKey(r Repo, d digest.Digest) []byte { return []byte(r.String() + "@" + d.String()) }

func registryLinkKey(registry string, d digest.Digest) []byte {
	return []byte(registry + "\x00" + d.String())
}

// splitLinkKey returns the registry and the digest of a link key (registry
// names hold no '/', repository names and digests no '@').
func splitLinkKey(k []byte) (string, digest.Digest, bool) {
	slash, at := bytes.IndexByte(k, '/'), bytes.LastIndexByte(k, '@')
	if slash <= 0 || at <= slash {
		return "", "", false
	}
	return string(k[:slash]), digest.Digest(k[at+1:]), true
}

// putLink records link r@d and its registry index entry in tx.
func putLink(tx *bolt.Tx, r Repo, d digest.Digest) error {
	k := linkKey(r, d)
	if err := tx.Bucket(bucketLinks).Put(k, nil); err != nil {
		return err
	}
	if err := index(tx, bucketLinks, k, d); err != nil {
		return err
	}
	return tx.Bucket(bucketRegistryLinks).Put(registryLinkKey(r.Registry, d), nil)
}

func get(db boltDB, bucket, key []byte, v any) error {
	return db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket).Get(key)
		if b == nil {
			return errdef.ErrNotFound
		}
		return json.Unmarshal(b, v)
	})
}

func put(db boltDB, bucket, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(key, b) })
}

// Tag returns the cached entry of a tag, or an error wrapping errdef.ErrNotFound.
func (m *DB) Tag(_ context.Context, r Repo, tag string) (TagEntry, error) {
	var e TagEntry
	if err := get(m.db, bucketTags, tagKey(r, tag), &e); err != nil {
		return e, fmt.Errorf("tag %s:%s: %w", r, tag, err)
	}
	return e, nil
}

// PutTag records where a tag points.
func (m *DB) PutTag(_ context.Context, r Repo, tag string, e TagEntry) error {
	return putIndexed(m.db, bucketTags, tagKey(r, tag), e, e.Digest)
}

// DeleteTag forgets a tag.
func (m *DB) DeleteTag(_ context.Context, r Repo, tag string) error {
	return m.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketTags).Delete(tagKey(r, tag)) })
}

// Tags lists the cached tags of a repository in lexical order.
func (m *DB) Tags(_ context.Context, r Repo) ([]string, error) {
	prefix := []byte(r.String() + ":")
	var tags []string
	err := m.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketTags).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			tag := string(k[len(prefix):])
			if !strings.ContainsAny(tag, ":/") {
				tags = append(tags, tag)
			}
		}
		return nil
	})
	sort.Strings(tags)
	return tags, err
}

// Manifest returns the record of a stored manifest. With a shared store,
// a record another replica wrote is read from there and kept locally.
func (m *DB) Manifest(ctx context.Context, d digest.Digest) (Manifest, error) {
	var e Manifest
	err := get(m.db, bucketManifests, []byte(d), &e)
	if errors.Is(err, errdef.ErrNotFound) && m.shared != nil && d.Validate() == nil {
		var found bool
		if found, err = m.getShared(ctx, sharedManifestKey(d), &e); err == nil {
			if !found {
				err = errdef.ErrNotFound
			} else {
				err = put(m.db, bucketManifests, []byte(d), e)
			}
		}
	}
	if err != nil {
		return e, fmt.Errorf("manifest %s: %w", d, err)
	}
	return e, nil
}

// PutManifest records a stored manifest and links it to r, in one
// transaction (then in the shared store, if any).
func (m *DB) PutManifest(ctx context.Context, r Repo, d digest.Digest, e Manifest) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	err = m.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketManifests).Put([]byte(d), b); err != nil {
			return err
		}
		return putLink(tx, r, d)
	})
	if err != nil || m.shared == nil {
		return err
	}
	if err := m.putShared(ctx, sharedManifestKey(d), e); err != nil {
		return err
	}
	return m.putShared(ctx, sharedLinkKey(r, d), nil)
}

// Linked reports whether content d is known to belong to repository r at
// its upstream. Content is stored once by digest, but it is only served
// under a repository the upstream has confirmed holds it, so that a client
// cannot read another repository's (possibly private) content by digest.
//
// With a shared store, a link another replica recorded counts, and is kept
// locally.
func (m *DB) Linked(ctx context.Context, r Repo, d digest.Digest) (bool, error) {
	var ok bool
	err := m.db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bucketLinks).Get(linkKey(r, d)) != nil
		return nil
	})
	if err != nil || ok || m.shared == nil || d.Validate() != nil {
		return ok, err
	}
	if ok, err = m.getShared(ctx, sharedLinkKey(r, d), nil); err != nil || !ok {
		return false, err
	}
	return true, m.link(r, d)
}

// RepoManifests returns the manifests linked to repository r (pulled by
// tag or by digest, indexes and their children), in digest order.
func (m *DB) RepoManifests(_ context.Context, r Repo) ([]digest.Digest, error) {
	prefix := []byte(r.String() + "@")
	var out []digest.Digest
	err := m.db.View(func(tx *bolt.Tx) error {
		manifests := tx.Bucket(bucketManifests)
		c := tx.Bucket(bucketLinks).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			d := k[len(prefix):]
			if manifests.Get(d) != nil {
				out = append(out, digest.Digest(d))
			}
		}
		return nil
	})
	return out, err
}

// LinkedInRegistry reports whether content d is linked to any repository
// of upstream registry (it came from there).
func (m *DB) LinkedInRegistry(_ context.Context, registry string, d digest.Digest) (bool, error) {
	var found bool
	err := m.db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket(bucketRegistryLinks).Get(registryLinkKey(registry, d)) != nil
		return nil
	})
	return found, err
}

// Link records that repository r holds content d.
func (m *DB) Link(ctx context.Context, r Repo, d digest.Digest) error {
	if err := m.link(r, d); err != nil || m.shared == nil {
		return err
	}
	return m.putShared(ctx, sharedLinkKey(r, d), nil)
}

func (m *DB) link(r Repo, d digest.Digest) error {
	return m.db.Update(func(tx *bolt.Tx) error { return putLink(tx, r, d) })
}

// Referrers returns the cached referrers record of subject d in r.
func (m *DB) Referrers(_ context.Context, r Repo, d digest.Digest) (Referrers, error) {
	var e Referrers
	if err := get(m.db, bucketReferrers, linkKey(r, d), &e); err != nil {
		return e, fmt.Errorf("referrers %s@%s: %w", r, d, err)
	}
	return e, nil
}

// PutReferrers records a cached referrers list.
func (m *DB) PutReferrers(_ context.Context, r Repo, d digest.Digest, e Referrers) error {
	return putIndexed(m.db, bucketReferrers, linkKey(r, d), e, d, e.Digest)
}

// IsNotFound reports whether err means a missing record.
func IsNotFound(err error) bool { return errors.Is(err, errdef.ErrNotFound) }

// syncRegistryLinks makes bucketRegistryLinks (made if missing) hold an
// entry for each registry and digest some link names, and no other:
// entries missing (links a binary from before the index recorded) are
// added, entries no link names any more (content that binary evicted) are
// deleted, and the rest are not written again.
func syncRegistryLinks(tx *bolt.Tx) error {
	idx, err := tx.CreateBucketIfNotExists(bucketRegistryLinks)
	if err != nil {
		return err
	}
	// Two scans and a set, not a lookup per link: lookups took 2 s of
	// CPU at 20,000 images.
	missing := map[string]bool{}
	if err := tx.Bucket(bucketLinks).ForEach(func(k, _ []byte) error {
		if reg, d, ok := splitLinkKey(k); ok {
			missing[string(registryLinkKey(reg, d))] = true
		}
		return nil
	}); err != nil {
		return err
	}
	var stale [][]byte
	if err := idx.ForEach(func(k, _ []byte) error {
		if missing[string(k)] {
			delete(missing, string(k))
		} else {
			stale = append(stale, bytes.Clone(k))
		}
		return nil
	}); err != nil {
		return err
	}
	for _, k := range stale {
		if err := idx.Delete(k); err != nil {
			return err
		}
	}
	for k := range missing {
		if err := idx.Put([]byte(k), nil); err != nil {
			return err
		}
	}
	return nil
}
