package meta

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

var (
	// bucketVerdicts: <rule> 0x00 <revision> 0x00 <manifest digest> ->
	// positive Verdict; the same key then 0x00 <repository> -> negative
	// Verdict of that repository (a signature is over the digest and holds
	// everywhere; its absence is one repository's).
	bucketVerdicts = []byte("sigverdicts")
	// bucketTrusted: <rule> 0x00 <revision> 0x00 <kind> 0x00 <digest> 0x00
	// <via> -> Trust: content a verified manifest (via) covers, as what it
	// may be served (children of a verified index as manifests; config and
	// layers of a verified image, and blobs of its evidence, as blobs).
	// One record per covering manifest, so that each goes with its
	// manifest (Forget) while the others still cover the content. Records
	// written before 2026-11-25 end at <digest> (their via is in the
	// value).
	bucketTrusted = []byte("sigtrust")
	// bucketTrustedV1 held trust without its kind (before 2026-11-24): a
	// digest trusted as a blob was taken for a trusted manifest too. It is
	// dropped at Open; manifests verify again from their recorded verdicts.
	bucketTrustedV1 = []byte("sigtrusted")
)

// TrustKind is what trusted content may be served as. A digest trusted as
// a blob (a layer, or anything an evidence manifest lists) is not thereby
// a trusted manifest.
type TrustKind string

const (
	TrustManifest TrustKind = "manifest"
	TrustBlob     TrustKind = "blob"
)

// Verdict is a recorded signature verdict for one manifest under one
// revision of a policy rule.
type Verdict struct {
	OK      bool      `json:"ok"`
	Reason  string    `json:"reason"`
	Message string    `json:"message"`
	Signer  string    `json:"signer,omitempty"`
	At      time.Time `json:"at"`
	// Repo is the repository (registry/name) whose signatures were
	// looked at. A signature is over the digest, so a positive verdict
	// holds wherever the rule applies; a negative one only says that
	// this repository had no valid signature.
	Repo string `json:"repo,omitempty"`
}

// Trust says why content is trusted under a rule: Via is the verified
// manifest that covers it.
type Trust struct {
	Via digest.Digest `json:"via"`
}

func sigKey(rule, revision string, d digest.Digest) []byte {
	return []byte(rule + "\x00" + revision + "\x00" + string(d))
}

// trustPrefix is the start of the keys of every record trusting d as kind:
// a record's key is the prefix, then 0x00 and the covering manifest, or
// the prefix alone (a record from before the manifest was in the key).
func trustPrefix(rule, revision string, kind TrustKind, d digest.Digest) []byte {
	return []byte(rule + "\x00" + revision + "\x00" + string(kind) + "\x00" + string(d))
}

func trustKey(rule, revision string, kind TrustKind, d, via digest.Digest) []byte {
	return append(trustPrefix(rule, revision, kind, d), append([]byte{0}, via...)...)
}

// Verdict returns the recorded verdict of manifest d under rule/revision
// for repository repo (registry/name): a positive one recorded for any
// repository, else the negative one recorded for repo. With a shared
// store, a positive verdict another replica recorded counts, and is kept
// locally. An empty repo asks for a positive verdict only.
func (m *DB) Verdict(ctx context.Context, rule, revision string, d digest.Digest, repo string) (Verdict, error) {
	var v Verdict
	err := get(m.db, bucketVerdicts, sigKey(rule, revision, d), &v)
	switch {
	case err == nil && v.OK:
		return v, nil
	case err != nil && !errors.Is(err, errdef.ErrNotFound):
		return Verdict{}, err
	}
	if repo != "" {
		// This repository's own negative verdict, before the shared store
		// (which holds positive ones only): no bucket request for it, and
		// it holds with the bucket unreachable.
		var neg Verdict
		switch nerr := get(m.db, bucketVerdicts, negativeKey(rule, revision, d, repo), &neg); {
		case nerr == nil:
			return neg, nil
		case !errors.Is(nerr, errdef.ErrNotFound):
			return Verdict{}, nerr
		}
		if err == nil && v.Repo == repo {
			// Recorded before negative verdicts had keys of their own.
			return v, nil
		}
	}
	if m.shared != nil && d.Validate() == nil {
		var sv Verdict
		found, serr := m.getShared(ctx, sharedVerdictKey(rule, revision, d), &sv)
		switch {
		case serr != nil:
			return Verdict{}, serr
		case found && sv.OK:
			return sv, putIndexed(m.db, bucketVerdicts, sigKey(rule, revision, d), sv, d)
		}
	}
	return Verdict{}, errdef.ErrNotFound
}

// negativeKey is where a negative verdict of repository repo is kept.
func negativeKey(rule, revision string, d digest.Digest, repo string) []byte {
	return append(sigKey(rule, revision, d), append([]byte{0}, repo...)...)
}

// PutVerdict records the verdict of manifest d under rule/revision: a
// positive one for every repository (with a shared store, for every
// replica too), a negative one for v.Repo only, and only locally: it can
// change (a signature may be added) and is found again.
func (m *DB) PutVerdict(ctx context.Context, rule, revision string, d digest.Digest, v Verdict) error {
	if !v.OK {
		return putIndexed(m.db, bucketVerdicts, negativeKey(rule, revision, d, v.Repo), v, d)
	}
	if err := putIndexed(m.db, bucketVerdicts, sigKey(rule, revision, d), v, d); err != nil || m.shared == nil || d.Validate() != nil {
		return err
	}
	return m.putShared(ctx, sharedVerdictKey(rule, revision, d), v)
}

// Trusted reports whether content d is covered, as kind, by a verified
// manifest under rule/revision. With a shared store, trust another replica
// recorded counts, and is kept locally.
func (m *DB) Trusted(ctx context.Context, rule, revision string, kind TrustKind, d digest.Digest) (bool, error) {
	prefix := trustPrefix(rule, revision, kind, d)
	var found bool
	err := m.db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketTrusted).Cursor().Seek(prefix)
		found = bytes.HasPrefix(k, prefix) && (len(k) == len(prefix) || k[len(prefix)] == 0)
		return nil
	})
	if err != nil || found || m.shared == nil || d.Validate() != nil {
		return found, err
	}
	var t Trust
	found, err = m.getShared(ctx, sharedTrustKey(rule, revision, kind, d), &t)
	if err != nil || !found {
		return false, err
	}
	return true, m.trust(rule, revision, t.Via, kind, []digest.Digest{d})
}

// Trust records that verified manifest via covers manifests (the children
// of an index) and blobs, under rule/revision, in one transaction each
// (then in the shared store, if any).
func (m *DB) Trust(ctx context.Context, rule, revision string, via digest.Digest, manifests, blobs []digest.Digest) error {
	for _, k := range []struct {
		kind TrustKind
		ds   []digest.Digest
	}{{TrustManifest, manifests}, {TrustBlob, blobs}} {
		if len(k.ds) == 0 {
			continue
		}
		if err := m.trust(rule, revision, via, k.kind, k.ds); err != nil {
			return err
		}
		if m.shared == nil {
			continue
		}
		for _, d := range k.ds {
			if d.Validate() != nil {
				continue
			}
			if err := m.putShared(ctx, sharedTrustKey(rule, revision, k.kind, d), Trust{Via: via}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *DB) trust(rule, revision string, via digest.Digest, kind TrustKind, ds []digest.Digest) error {
	b, err := json.Marshal(Trust{Via: via})
	if err != nil {
		return err
	}
	return m.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketTrusted)
		for _, d := range ds {
			k := trustKey(rule, revision, kind, d, via)
			if err := bk.Put(k, b); err != nil {
				return err
			}
			if err := index(tx, bucketTrusted, k, d, via); err != nil {
				return err
			}
		}
		return nil
	})
}
