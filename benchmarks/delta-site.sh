#!/usr/bin/env bash
# benchmarks/delta-site.sh — issue #5 end to end: the bytes that cross a site's uplink when an image
# is updated, with registry-edge's layer deltas, next to what any mirror without deltas downloads
# (the full layer: the reference distribution proxy, Harbor, zot all fetch it whole).
#
# For each layer pair of the corpus (shared/bench/corpus/build-corpus.sh: pairs/<name>/{old,new}.tar):
#   1. crane append pushes fleet/<pair>:v1 (old.tar) and :v2 (new.tar) to central (the real
#      `registry` v3.1.2) as one-layer images; crane compresses with Go's gzip, as Docker, BuildKit
#      and ko do.
#   2. published: `deltactl diff --push v1 v2` attaches the deltas to v2 in central. A site
#      registry-edge, whose upstream is central through a counting relay (benchmarks/tools/flaky, no
#      faults), serves `crane pull` of v1, then of v2; the relay's byte counter for v2 is the uplink
#      cost. Every pulled blob is checked (crane verifies digests; the script compares the layer's
#      sha256 with central's).
#   3. negotiated: nothing published (a fresh repository); a regional registry-edge in front of
#      central, the site registry-edge behind the relay in front of the region; same pulls.
# Reported per pair: full layer bytes (v2's layer), uplink bytes for v2 in each mode and as % of the
# layer, deltactl's encode time. Target (issue #5): <= 3 % of the changed layer on the JS (node-*) and
# base-rootfs (os-base-update) pairs.
#
# Usage:  C=/path/to/corpus benchmarks/delta-site.sh [PAIR...]   (default: every pair)
#         benchmarks/delta-site.sh tools                          build/install what is missing
# Env: C (corpus dir, the one holding pairs/; required), PORT_BASE=17400, REGISTRY_EDGE_TOOLS.
# State in benchmarks/run-delta-site/ (git-ignored), results in benchmarks/results/<stamp>-delta-site/.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
RUN="$HERE/run-delta-site"
BIN="$RUN/bin"; DATA="$RUN/data"; LOGS="$RUN/logs"
TOOLS="${REGISTRY_EDGE_TOOLS:-$HOME/.cache/registry-edge/tools}"
PORT_BASE="${PORT_BASE:-17400}"
CENTRAL="127.0.0.1:$PORT_BASE"; REGION="127.0.0.1:$((PORT_BASE + 1))"; SITE="127.0.0.1:$((PORT_BASE + 2))"
RELAY="127.0.0.1:$((PORT_BASE + 10))"; RSTATS="127.0.0.1:$((PORT_BASE + 11))"

# shellcheck source=benchmarks/lib.sh
source "$HERE/lib.sh"

declare -A PIDS=()
cleanup() {
  local name
  for name in "${!PIDS[@]}"; do kill "${PIDS[$name]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT INT TERM

wait_http() { # wait_http URL NAME
  for _ in $(seq 1 300); do curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null && return 0; sleep 0.1; done
  tail -20 "$LOGS/$2.log" >&2 || true; die "$2 did not come up at $1"
}

setup_tools() {
  mkdir -p "$BIN" "$LOGS"
  need_apt jq jq; need_apt curl curl; need_apt bc bc
  REGISTRY_BIN=$(go_tool registry v3.1.2 github.com/distribution/distribution/v3/cmd/registry)
  CRANE_BIN=$(go_tool crane v0.22.1 github.com/google/go-containerregistry/cmd/crane)
  (cd "$HERE/tools/flaky" && GOFLAGS=-buildvcs=false go build -o "$BIN/flaky" .) || die "flaky build failed"
  (cd "$ROOT" && go build -o "$BIN/registry-edge" ./cmd/registry-edge && go build -o "$BIN/deltactl" ./cmd/deltactl) ||
    die "registry-edge or deltactl does not build"
}

start_edge() { # start_edge NAME LISTEN UPSTREAM
  rm -rf "${DATA:?}/$1"; mkdir -p "$DATA/$1"
  start_bg "$1" "$BIN/registry-edge" serve --listen "$2" --storage "$DATA/$1" --upstream "http://$3"
  wait_http "http://$2/v2/" "$1"
}

relay_reset() { curl -fsS --max-time 5 -X DELETE "http://$RSTATS/" >/dev/null; }
relay_down() { curl -fsS --max-time 5 "http://$RSTATS/" | jq -r .down_bytes; }

pull() { # pull REF -> pulls through the site into a fresh OCI layout (crane verifies every digest)
  local dir; dir=$(mktemp -d "$DATA/pull.XXXXXX")
  "$CRANE_BIN" --insecure pull --format oci "$1" "$dir" >>"$LOGS/crane.log" 2>&1 || die "crane pull $1 failed"
  rm -rf "$dir"
}

layer_of() { # layer_of REF -> digest and size of the (only) layer
  "$CRANE_BIN" --insecure manifest "$1" | jq -r '.layers[0] | "\(.digest) \(.size)"'
}

one_pair() { # one_pair PAIR
  local p=$1 d="$C/pairs/$1" ts
  [[ -f $d/old.tar && -f $d/new.tar ]] || die "no pair $d"
  for mode in published negotiated; do
    local repo="fleet/$p-$mode"
    "$CRANE_BIN" --insecure append -b "" -f "$d/old.tar" -t "$CENTRAL/$repo:v1" >>"$LOGS/crane.log" 2>&1
    "$CRANE_BIN" --insecure append -b "" -f "$d/new.tar" -t "$CENTRAL/$repo:v2" >>"$LOGS/crane.log" 2>&1
    read -r layer size < <(layer_of "$CENTRAL/$repo:v2")
    local enc="-"
    if [[ $mode == published ]]; then
      ts=$(date +%s.%N)
      "$BIN/deltactl" --insecure diff --push --tmp "$DATA" "$CENTRAL/$repo:v1" "$CENTRAL/$repo:v2" >"$OUT/$p.diff.txt" 2>&1 ||
        die "deltactl diff --push failed for $p (see $OUT/$p.diff.txt)"
      enc=$(printf '%.1f' "$(echo "$(date +%s.%N) - $ts" | bc)")
      start_bg relay "$BIN/flaky" -listen "$RELAY" -to "$CENTRAL" -stats "$RSTATS"
    else
      start_edge region "$REGION" "$CENTRAL"
      start_bg relay "$BIN/flaky" -listen "$RELAY" -to "$REGION" -stats "$RSTATS"
    fi
    wait_http "http://$RSTATS/" relay
    start_edge site "$SITE" "$RELAY"
    pull "$SITE/$repo:v1"
    relay_reset
    ts=$(date +%s.%N)
    pull "$SITE/$repo:v2"
    local secs; secs=$(printf '%.1f' "$(echo "$(date +%s.%N) - $ts" | bc)")
    local down; down=$(relay_down)
    local got; got=$(curl -fsS "http://$SITE/v2/$repo/blobs/$layer" | sha256sum | cut -d' ' -f1)
    [[ "sha256:$got" == "$layer" ]] || die "$p $mode: the site served a layer with sha256 $got, want $layer"
    local rebuilt=no
    grep -q "layer rebuilt from a delta" "$LOGS/site.log" && rebuilt=yes
    local pct; pct=$(printf '%.2f' "$(echo "scale=4; 100 * $down / $size" | bc)")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "$mode" "$size" "$down" "$pct" "$rebuilt" "$enc" "$secs" >>"$OUT/rows.tsv"
    log "$p $mode: layer $size bytes, uplink $down bytes ($pct %), rebuilt=$rebuilt"
    stop_one site; stop_one relay; stop_one region
    : >"$LOGS/site.log"
  done
}

[[ ${1:-} == tools ]] && { setup_tools; exit 0; }
: "${C:?set C to the corpus directory (the one holding pairs/)}"
setup_tools
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$HERE/results/$STAMP-delta-site"; mkdir -p "$OUT" "$DATA"
printf 'pair\tmode\tlayer_bytes\tuplink_bytes\tuplink_pct\trebuilt\tdeltactl_secs\tpull_secs\n' >"$OUT/rows.tsv"
start_central
PAIRS=("$@")
[[ ${#PAIRS[@]} -gt 0 ]] || mapfile -t PAIRS < <(cd "$C/pairs" && ls -d -- */ | tr -d /)
for p in "${PAIRS[@]}"; do one_pair "$p"; done
{
  echo "# delta-site $STAMP (registry-edge $(cd "$ROOT" && git rev-parse --short HEAD))"
  echo
  echo "Command: \`C=$C benchmarks/delta-site.sh ${*}\`"
  echo
  echo "| pair | mode | v2 layer | over the site's uplink | % of the layer | rebuilt | deltactl diff --push (s) |"
  echo "|---|---|---:|---:|---:|---|---:|"
  tail -n +2 "$OUT/rows.tsv" | while IFS=$'\t' read -r p m s d pct r e _; do
    echo "| $p | $m | $s | $d | $pct | $r | $e |"
  done
} >"$OUT/summary.md"
cat "$OUT/summary.md"
