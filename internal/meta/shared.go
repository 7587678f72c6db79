package meta

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/errdef"
)

// Shared holds the records that replicas sharing one bucket share, as small
// objects next to the content (*objstore.Store implements it). Keys are
// slash-separated names made of [A-Za-z0-9._-].
//
// Every shared record states a fact about content-addressed data that never
// changes once true: manifest <digest> has this media type and size,
// repository R holds <digest>, manifest <digest> was verified under
// rule/revision, <digest> is covered by such a manifest, delta X rebuilds
// layer <digest>. Two replicas that write the same key state the same fact
// (details such as when it was learnt may differ, and either record is
// right), so the store needs neither locks nor compare-and-swap. The one
// mutable record, a replica's access times, has a single writer: that
// replica (see ADR 0014).
type Shared interface {
	GetRecord(ctx context.Context, key string) ([]byte, error) // errdef.ErrNotFound when missing
	PutRecord(ctx context.Context, key string, b []byte) error
	DeleteRecord(ctx context.Context, key string) error
	ListRecords(ctx context.Context, dir string) ([]string, error)
}

// Share makes the database read through to s what it does not hold itself
// and write to s what other replicas need: manifest records, repository
// links, positive signature verdicts and trust, delta records, and this
// replica's access times under replica (which must be unique among the
// replicas of the bucket). Tags, referrers lists, negative verdicts, pins
// and prefetch requests stay local: tags and referrers are revalidated
// upstream anyway, a negative verdict may change, and pins only matter to
// the replica that evicts. It refuses a bucket whose records are of a newer
// format than this binary's (SharedFormat). Call it once, before the
// database is used.
func (m *DB) Share(ctx context.Context, s Shared, replica string) error {
	if !recordName(replica) {
		return fmt.Errorf("replica id %q: want letters, digits, '.', '_' or '-': %w", replica, errdef.ErrInvalid)
	}
	var nonce [8]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return err
	}
	m.shared, m.replica, m.instance = s, replica, hex.EncodeToString(nonce[:])
	if err := m.checkSharedFormat(ctx); err != nil {
		m.shared = nil
		return err
	}
	return nil
}

func recordName(s string) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// name encodes an arbitrary string (a repository, a rule name) as one key
// element.
func name(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func digestKey(d digest.Digest) string { return string(d.Algorithm()) + "/" + d.Encoded() }

func sharedManifestKey(d digest.Digest) string { return "manifests/" + digestKey(d) }

func sharedLinkKey(r Repo, d digest.Digest) string {
	return "links/" + digestKey(d) + "/" + name(r.String())
}

func sharedTrustKey(rule, revision string, kind TrustKind, d digest.Digest) string {
	return "trust/" + name(rule) + "/" + name(revision) + "/" + string(kind) + "/" + digestKey(d)
}

func sharedVerdictKey(rule, revision string, d digest.Digest) string {
	return "verdicts/" + name(rule) + "/" + name(revision) + "/" + digestKey(d)
}

func sharedDeltasDir(d digest.Digest) string { return "deltas/" + digestKey(d) }

// sharedDeltaKey names the record of one delta of layer d: its blob, its
// repository and its annotations (its bases), as meta.db tells records
// apart (sameDelta). The same delta blob published with other bases, from
// another old image with the same layer contents, is another record: with
// the bases out of the key, the last writer replaced the others, and a
// replica saw only the one whose bases its sites may not hold.
//
// The bases go last, as a fourth element: versions before it list the
// directory and read every name of the form <alg>.<hex>.<anything>
// (isSharedDelta), so they read these records as they read their own, and
// their records (three elements) are read here the same way. Nothing needs
// writing under the old names too.
func sharedDeltaKey(d digest.Digest, rec DeltaRecord) string {
	x := rec.Descriptor.Digest
	return sharedDeltasDir(d) + "/" + string(x.Algorithm()) + "." + x.Encoded() + "." + name(rec.Repo.String()) + "." + annotationsKey(rec.Descriptor.Annotations)
}

// annotationsKey is a short hash of a set of annotations that does not
// depend on the order of the map (none and empty are the same, as in
// sameDelta).
func annotationsKey(a map[string]string) string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(a)) {
		// Length-prefixed, so that no two sets hash the same bytes.
		fmt.Fprintf(h, "%d:%s%d:%s", len(k), k, len(a[k]), a[k])
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func sharedAccessKey(replica string) string { return "access/" + replica }

// sharedCollisionKey names the marker a process leaves when it finds its
// replica id used by another process too.
func sharedCollisionKey(replica string) string { return "collisions/" + replica }

// sharedCollision is that marker.
type sharedCollision struct {
	Instance string    `json:"instance"` // the process that found the collision
	Other    string    `json:"other"`    // the process it found in its record
	Written  time.Time `json:"written"`
}

// collisionTTL is how long a collision marker counts after it was written.
// The process that found the collision writes it again at every publish
// while the collision lasts, so an old marker means the collision is over.
const collisionTTL = 15 * time.Minute

// getShared reads the shared record key into v; found is false when it
// does not exist (or there is no shared store).
func (m *DB) getShared(ctx context.Context, key string, v any) (found bool, err error) {
	if m.shared == nil {
		return false, nil
	}
	b, err := m.shared.GetRecord(ctx, key)
	if errors.Is(err, errdef.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("shared metadata: %w", err)
	}
	if v == nil {
		return true, nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("shared metadata %s: %w", key, err)
	}
	return true, nil
}

func (m *DB) putShared(ctx context.Context, key string, v any) error {
	if m.shared == nil {
		return nil
	}
	b := []byte("{}")
	if v != nil {
		var err error
		if b, err = json.Marshal(v); err != nil {
			return err
		}
	}
	if err := m.shared.PutRecord(ctx, key, b); err != nil {
		return fmt.Errorf("shared metadata: %w", err)
	}
	return nil
}

// sharedDigests lists the digests recorded under dir/<alg>/.
func (m *DB) sharedDigests(ctx context.Context, dir string) ([]digest.Digest, error) {
	algs, err := m.shared.ListRecords(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("shared metadata: %w", err)
	}
	var out []digest.Digest
	for _, alg := range algs {
		encs, err := m.shared.ListRecords(ctx, dir+"/"+alg)
		if err != nil {
			return nil, fmt.Errorf("shared metadata: %w", err)
		}
		for _, e := range encs {
			if d := digest.NewDigestFromEncoded(digest.Algorithm(alg), e); d.Validate() == nil {
				out = append(out, d)
			}
		}
	}
	return out, nil
}

// sharedAccess is the record of one replica's access times.
type sharedAccess struct {
	Replica  string                  `json:"replica"`
	Instance string                  `json:"instance"` // random per process: tells two processes with one id apart
	Written  time.Time               `json:"written"`
	Times    map[digest.Digest]int64 `json:"times"` // unix seconds
}

// publishAccess writes this replica's access times, all of them, as its
// access record. Once it has written the record, finding it written by
// another process means two replicas have this id: it then stops writing
// (their access times would overwrite each other's, and the evicting
// replica would miss one's), leaves a collision marker and returns an
// error saying so. The other process, which finds its own record, learns
// of the collision from the marker: it goes on publishing and returns the
// error too, so that both logs say it.
func (m *DB) publishAccess(ctx context.Context) error {
	key := sharedAccessKey(m.replica)
	if m.published.Load() {
		var prev sharedAccess
		found, err := m.getShared(ctx, key, &prev)
		if err != nil {
			return err
		}
		if found && prev.Instance != m.instance {
			err := fmt.Errorf("replica id %q: another process on the bucket uses it too (it published access times at %s); give each replica its own storage.blobs.replica.id: %w",
				m.replica, prev.Written.Format(time.RFC3339), errdef.ErrAlreadyExists)
			if merr := m.putShared(ctx, sharedCollisionKey(m.replica), sharedCollision{Instance: m.instance, Other: prev.Instance, Written: time.Now().UTC()}); merr != nil {
				err = errors.Join(err, merr)
			}
			return err
		}
	}
	var marker sharedCollision
	marked, err := m.getShared(ctx, sharedCollisionKey(m.replica), &marker)
	if err != nil {
		return err
	}
	var collision error
	// Only the process named in the marker: a restarted one (a new
	// instance) after the fix is not in collision with its predecessor.
	if marked && marker.Other == m.instance && time.Since(marker.Written) < collisionTTL {
		collision = fmt.Errorf("replica id %q: another process on the bucket uses it too (it found this one's access times at %s); give each replica its own storage.blobs.replica.id: %w",
			m.replica, marker.Written.Format(time.RFC3339), errdef.ErrAlreadyExists)
	}
	local, err := m.localAccessTimes()
	if err != nil {
		return err
	}
	rec := sharedAccess{Replica: m.replica, Instance: m.instance, Written: time.Now().UTC(), Times: make(map[digest.Digest]int64, len(local))}
	for d, t := range local {
		rec.Times[d] = t.Unix()
	}
	if err := m.putShared(ctx, key, rec); err != nil {
		return err
	}
	m.published.Store(true)
	return collision
}

// mergeSharedAccess adds the access times other replicas published to out
// (later times win).
func (m *DB) mergeSharedAccess(ctx context.Context, out map[digest.Digest]time.Time) error {
	replicas, err := m.shared.ListRecords(ctx, "access")
	if err != nil {
		return fmt.Errorf("shared metadata: %w", err)
	}
	for _, r := range replicas {
		if r == m.replica || !recordName(r) {
			continue
		}
		var rec sharedAccess
		ok, err := m.getShared(ctx, sharedAccessKey(r), &rec)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		for d, s := range rec.Times {
			if t := time.Unix(s, 0); t.After(out[d]) {
				out[d] = t
			}
		}
	}
	return nil
}

// isSharedDelta reports whether a record listed under a layer's deltas
// directory names a delta with a valid digest: <alg>.<hex>.<repo>, as
// versions before the bases were in the key wrote it, or
// <alg>.<hex>.<repo>.<bases>. Keep it accepting both (and anything after
// <hex>): the versions before read the new names with this same test.
func isSharedDelta(n string) bool {
	alg, rest, ok := strings.Cut(n, ".")
	if !ok {
		return false
	}
	enc, _, ok := strings.Cut(rest, ".")
	return ok && digest.NewDigestFromEncoded(digest.Algorithm(alg), enc).Validate() == nil
}
