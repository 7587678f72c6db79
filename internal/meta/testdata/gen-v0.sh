#!/bin/sh
# Regenerates meta-v0.db: a metadata database written by the meta package
# of a81acca^ (before the registry index of links, kinds of signature
# trust, keys of their own for negative verdicts and the store format
# marker), for TestDatabaseOfAnOldVersionOpens in format_test.go, which
# checks that this version opens it with nothing lost. The records written
# here are the ones that test reads back: change both or neither.
#
# Run from anywhere inside the repository: sh internal/meta/testdata/gen-v0.sh
set -eu
top=$(git rev-parse --show-toplevel)
out=$top/internal/meta/testdata/meta-v0.db
old=$(mktemp -d)
trap 'git -C "$top" worktree remove --force "$old"' EXIT
git -C "$top" worktree add --detach "$old" a81acca^ >/dev/null
mkdir "$old/cmd/genmeta"
cat > "$old/cmd/genmeta/main.go" <<'GO'
package main

import (
	"context"
	_ "crypto/sha256"
	"os"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/registry-edge/registry-edge/internal/meta"
)

func main() {
	ctx := context.Background()
	os.Remove(os.Args[1])
	db, err := meta.Open(os.Args[1])
	if err != nil {
		panic(err)
	}
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	r := meta.Repo{Registry: "docker.io", Name: "library/alpine"}
	m, layer, dl := digest.FromString("manifest"), digest.FromString("layer"), digest.FromString("delta")
	must(db.PutTag(ctx, r, "3.20", meta.TagEntry{Digest: m, MediaType: ocispec.MediaTypeImageManifest, Size: 500, FetchedAt: at}))
	must(db.PutManifest(ctx, r, m, meta.Manifest{MediaType: ocispec.MediaTypeImageManifest, Size: 500}))
	must(db.Link(ctx, r, layer))
	must(db.AddDelta(ctx, layer, meta.DeltaRecord{Repo: r, Descriptor: ocispec.Descriptor{MediaType: "application/vnd.registry-edge.delta.v1", Digest: dl, Size: 177}}))
	must(db.SetPins(ctx, "prefetch", []digest.Digest{m, layer}))
	must(db.PutPrefetch(ctx, meta.PrefetchRequest{Ref: "docker.io/library/alpine:3.20"}))
	must(db.PutVerdict(ctx, "fleet", "rev1", m, meta.Verdict{OK: true, Reason: "verified", Message: "signed", At: at}))
	must(db.Trust(ctx, "fleet", "rev1", m, []digest.Digest{layer}))
	must(db.Touch(ctx, map[digest.Digest]time.Time{m: at, layer: at}))
	must(db.Close())
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}
GO
(cd "$old" && go run ./cmd/genmeta "$out")
