package meta

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
)

// bucketDeltas: <layer digest> -> []DeltaRecord, the published deltas known
// to rebuild that layer.
var bucketDeltas = []byte("deltas")

// maxDeltasPerLayer bounds the records kept for one layer; the oldest go.
const maxDeltasPerLayer = 16

// DeltaRecord is a published delta that rebuilds a layer: the annotated
// descriptor of the delta blob (see internal/layerdelta), and the repository
// it was found in (where its blob can be fetched).
type DeltaRecord struct {
	Repo       Repo               `json:"repo"`
	Descriptor ocispec.Descriptor `json:"descriptor"`
	// Computed marks a delta this mirror (or a replica) computed from the
	// layer and bases it holds, as opposed to one published upstream: its
	// bytes derive from those blobs alone, so any repository holding them
	// may be given it.
	Computed bool `json:"computed,omitempty"`
}

// Deltas returns the deltas known to rebuild layer d, newest first; with a
// shared store, those this replica recorded first, then those only other
// replicas did.
func (m *DB) Deltas(ctx context.Context, d digest.Digest) ([]DeltaRecord, error) {
	var recs []DeltaRecord
	err := m.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDeltas).Get([]byte(d))
		if b == nil {
			return nil
		}
		return json.Unmarshal(b, &recs)
	})
	if err != nil || m.shared == nil || d.Validate() != nil {
		return recs, err
	}
	names, err := m.shared.ListRecords(ctx, sharedDeltasDir(d))
	if err != nil {
		return recs, fmt.Errorf("shared metadata: %w", err)
	}
	for _, n := range names {
		if len(recs) >= maxDeltasPerLayer {
			break
		}
		if !isSharedDelta(n) {
			continue
		}
		var rec DeltaRecord
		found, err := m.getShared(ctx, sharedDeltasDir(d)+"/"+n, &rec)
		if err != nil {
			return recs, err
		}
		if found && !slices.ContainsFunc(recs, func(r DeltaRecord) bool { return sameDelta(r, rec) }) {
			recs = append(recs, rec)
		}
	}
	return recs, nil
}

// AddDelta records a delta of layer d (once per delta blob, repository and
// annotations: the same delta blob published with other bases, from
// another old image with the same layer contents, is another record, one
// a site may hold the bases of), then in the shared store, if any.
func (m *DB) AddDelta(ctx context.Context, d digest.Digest, rec DeltaRecord) error {
	if err := m.addDelta(d, rec); err != nil || m.shared == nil {
		return err
	}
	if d.Validate() != nil || rec.Descriptor.Digest.Validate() != nil {
		return nil
	}
	return m.putShared(ctx, sharedDeltaKey(d, rec), rec)
}

// sameDelta reports whether a and b record the same delta: blob, repository
// and annotations (its bases).
func sameDelta(a, b DeltaRecord) bool {
	return a.Repo == b.Repo && a.Descriptor.Digest == b.Descriptor.Digest && maps.Equal(a.Descriptor.Annotations, b.Descriptor.Annotations)
}

func (m *DB) addDelta(d digest.Digest, rec DeltaRecord) error {
	return m.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketDeltas)
		var recs []DeltaRecord
		if b := bk.Get([]byte(d)); b != nil {
			if err := json.Unmarshal(b, &recs); err != nil {
				return err
			}
		}
		recs = slices.DeleteFunc(recs, func(r DeltaRecord) bool { return sameDelta(r, rec) })
		recs = append([]DeltaRecord{rec}, recs...)
		if len(recs) > maxDeltasPerLayer {
			recs = recs[:maxDeltasPerLayer]
		}
		b, err := json.Marshal(recs)
		if err != nil {
			return err
		}
		return bk.Put([]byte(d), b)
	})
}
