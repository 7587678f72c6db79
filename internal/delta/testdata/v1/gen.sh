#!/bin/sh
# Regenerates delta-v1.bin: a delta written by the format-1 encoder (the
# last commit before format 2, a81acca^), for compat_test.go, which checks
# that this version still decodes what released format-1 encoders wrote.
# The base and target are made by inputs() below, the same function as
# compat_test.go's v1Inputs: change both or neither.
#
# Run from anywhere inside the repository: sh internal/delta/testdata/v1/gen.sh
set -eu
top=$(git rev-parse --show-toplevel)
out=$top/internal/delta/testdata/v1/delta-v1.bin
old=$(mktemp -d)
trap 'git -C "$top" worktree remove --force "$old"' EXIT
git -C "$top" worktree add --detach "$old" a81acca^ >/dev/null
mkdir "$old/cmd/genv1"
cat > "$old/cmd/genv1/main.go" <<'GO'
package main

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"

	"github.com/opencontainers/go-digest"

	"github.com/registry-edge/registry-edge/internal/delta"
)

// inputs is compat_test.go's v1Inputs.
func inputs() (base, target []byte) {
	r := rand.New(rand.NewPCG(1, 2))
	words := []string{"layer ", "usr/lib/", "registry ", "edge ", "0x", "\n", "delta ", "libc.so.6 "}
	for len(base) < 256<<10 {
		base = append(base, words[r.IntN(len(words))]...)
	}
	base = base[:256<<10]
	target = append(target, base[:100<<10]...)
	for i := 0; i < 3000; i++ {
		target = append(target, byte(r.IntN(256)))
	}
	target = append(target, base[120<<10:]...)
	for i := 0; i < len(target); i += 9000 {
		target[i] ^= 0x5a
	}
	return base, target
}

func main() {
	base, target := inputs()
	var out bytes.Buffer
	b := delta.Base{Digest: digest.FromBytes(base), Size: int64(len(base)), R: bytes.NewReader(base)}
	if _, err := delta.Encode(context.Background(), &out, bytes.NewReader(target), int64(len(target)), []delta.Base{b}, delta.EncodeOptions{}); err != nil {
		panic(err)
	}
	if err := os.WriteFile(os.Args[1], out.Bytes(), 0o644); err != nil {
		panic(err)
	}
}
GO
(cd "$old" && go run ./cmd/genv1 "$out")
