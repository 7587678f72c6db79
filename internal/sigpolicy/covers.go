package sigpolicy

import (
	"encoding/json"

	"github.com/opencontainers/go-digest"
)

// Covers reports whether indexBody, the manifest whose digest is index,
// lists child among its manifests: a valid signature on a multi-arch index
// (an OCI image index or a Docker manifest list) covers its children, so a
// child pulled by digest may be served under the verdict of the index.
//
// Call it only with an index that has an OK verdict under the rule that
// applies now. Covers checks that indexBody hashes to index, so a body that
// is not the verified one covers nothing; it does not check signatures.
func Covers(index digest.Digest, indexBody []byte, child digest.Digest) bool {
	if index.Validate() != nil || child.Validate() != nil {
		return false
	}
	if index.Algorithm().FromBytes(indexBody) != index {
		return false
	}
	var idx struct {
		Manifests []struct {
			Digest digest.Digest `json:"digest"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(indexBody, &idx); err != nil {
		return false
	}
	for _, m := range idx.Manifests {
		if m.Digest == child {
			return true
		}
	}
	return false
}
