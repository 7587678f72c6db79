#!/usr/bin/env bash
# benchmarks/delta.sh — issue #5 (layer deltas): registry-edge's delta codec (internal/delta, run
# through benchmarks/tools/deltabench) side by side with the reference delta tools, in ONE run, on
# layer pairs (old.tar -> new.tar): zstd --patch-from, xdelta3, bsdiff, rdiff (librsync) + zstd.
# The commands of the reference tools are those of shared/bench/corpus/bench.sh (read-only; not
# needed at run time).
#
# Usage:  C=/path/to/corpus benchmarks/delta.sh   run every pair (corpus + our own), ~15-25 min on 2 cores
#         PAIRS="node-express own-go-hello" C=... benchmarks/delta.sh     only some pairs (quick check)
#         benchmarks/delta.sh tools               only install/build the tools and our own pairs
#         benchmarks/delta.sh clean               delete benchmarks/run/delta/ (scratch); results are kept
#         benchmarks/delta.sh help                this header
#
# The corpus: C is a directory made by shared/bench/corpus/build-corpus.sh (C/pairs/<name>/{old.tar,
#   new.tar,old.tar.gz,new.tar.gz}; C may also be the pairs/ directory itself). If C is not set, the
#   script BUILDS the corpus itself into $DELTA_CACHE/corpus by running build-corpus.sh from
#   ../shared/bench/corpus (next to this repository), if that script is there; that needs network
#   access to the npm registry, the Go module proxy and the Debian archive, node+npm and apt, and
#   takes 20-30 minutes the first time (reused afterwards). Without C and without that script it stops.
# Our own pairs (not in that corpus, so that the codec is not tuned to one input), built
#   deterministically (fixed mtimes, uid 0, sorted entries: `deltabench mktar`, byte-identical to the
#   corpus's layertool; gzip by Go's compress/gzip, default level, as the corpus) and cached in
#   $DELTA_CACHE/own/<name>/ (keyed by the Go version and revisions):
#   own-go-hello       a tiny Go HTTP program (stdlib only, not stripped) built twice, the second time
#                      with one added line; layer = usr/local/bin/hello.
#   own-edge-patch     registry-edge's own binary layer as the Dockerfile builds it (registry-edge +
#   own-edge-release   deltactl, CGO_ENABLED=0 -trimpath -s -w, + var/lib/registry-edge/) at two commits
#                      of this repository (via `git archive`; nothing is checked out): a patch (one
#                      commit of binary code apart, EDGE_PATCH_REVS) and a release (35 commits, +4900
#                      lines of non-test code: access control, status page, delta codec; EDGE_RELEASE_REVS).
#   own-gomod-src      Go source text: golang.org/x/{crypto,net,sys,text} as a builder image's module
#                      cache layer (go/pkg/mod/golang.org/x/<mod>@<version>/...; the paths change with the
#                      version), GOMOD_OLD -> GOMOD_NEW (`go mod download`, from the module cache if there).
#
# Per pair, per method: delta bytes, % of the full gzip layer (new.tar.gz), ratio to zstd
# --patch-from, encode and apply wall time, CPU time and peak RSS (/usr/bin/time -v; for a pipeline,
# the largest process), throughput (MB/s of new.tar, 10^6 bytes/s, both directions), and whether the
# applied output's sha256 equals new.tar's. Every command is bounded by TOOL_TIMEOUT (timeout -k 10);
# a timeout is recorded as such. Methods:
#   full-gzip       new.tar.gz as is (apply = gzip -dc), the bytes a pull without deltas moves
#   zstd-19         zstd -19 --long=31 --patch-from=old.tar --single-thread (apply: zstd -d --long=31 --patch-from)
#   registry-edge   deltabench encode (default EncodeOptions: LevelBest, 2 blocks in parallel) / decode
#   xdelta3-9-S<s>  xdelta3 -e -9 -D -R -S s -B <pow2 >= old+new, >= 2^27> -s old.tar (one row per XDELTA_S)
#   bsdiff          bsdiff / bspatch (skipped when 17 x old.tar > half of MemAvailable)
#   rdiff-b<b>+zstd rdiff signature [-b b] old.tar, rdiff delta, zstd -19 of the delta (balena's scheme;
#                   the signature is not counted: the sender computes it from the base it holds)
# Targets (issue #5), PASS/FAIL per pair in summary.md: registry-edge <= 1.15 x zstd-19 and smaller
#   than the best rdiff+zstd; stretch: <= 1.05 x the best of zstd/xdelta3/bsdiff; apply peak RSS
#   <= 64 MiB and >= 50 MB/s of output; encode >= 20 MB/s of input (new.tar) and peak RSS <= old.tar + 256 MiB.
#
# Env knobs (defaults):
#   C=                    corpus directory (see above)      DELTA_CACHE=$HOME/.cache/registry-edge/delta
#   PAIRS=                pairs to run (default: every corpus pair, then OWN), smallest first
#   OWN="own-go-hello own-edge-patch own-edge-release own-gomod-src"   our own pairs ("" = none)
#   EDGE_PATCH_REVS="5e3ba975491d878af2224213379a8235b94784e2 cc9d106b0b47d4939ad8f2dbc93c0eee6906a7b6"
#   EDGE_RELEASE_REVS="9aeb037289caf1454829d464ec679e4ca2925342 cc9d106b0b47d4939ad8f2dbc93c0eee6906a7b6"
#   GOMOD_OLD="golang.org/x/crypto@v0.57.0 golang.org/x/net@v0.57.0 golang.org/x/sys@v0.47.0 golang.org/x/text@v0.40.0"
#   GOMOD_NEW="golang.org/x/crypto@v0.58.0 golang.org/x/net@v0.59.0 golang.org/x/sys@v0.49.0 golang.org/x/text@v0.42.0"
#   METHODS="gzip zstd edge xdelta3 bsdiff rdiff"   RDIFF_B="default 2048" (rdiff -b; one row each)
#   XDELTA_S="lzma"       xdelta3 secondary compressors, one row each (lzma is 3.0.11's default; also none, djw, fgk)
#   TOOL_TIMEOUT=600      seconds per encode or apply command
#   DELTABENCH=           use this deltabench binary instead of building benchmarks/tools/deltabench
#                         from the working tree (the run records the revision and whether
#                         internal/delta has uncommitted changes)
#   WAIT_IDLE=0           seconds to wait first for the 1-minute load average to drop below IDLE_LOAD=0.5
#   KEEP=0                1 = keep every delta and output in benchmarks/run/delta/<pair>/
# Needs: go, zstd, xdelta3, bsdiff, rdiff, GNU time (/usr/bin/time), coreutils timeout; the missing
# Debian packages are installed with apt-get (as root). Scratch in benchmarks/run/delta/ (git-ignored),
# results in benchmarks/results/<UTC stamp>-delta/: rows.tsv (every method of every pair), pairs.tsv,
# summary.md (targets, sizes, times), env.txt (versions), logs/ (every command's output). Runs one
# command at a time (zstd, xdelta3, bsdiff, rdiff single-threaded; registry-edge's encoder uses 2
# threads by default: compare CPU seconds as well as wall time).
set -euo pipefail
umask 022

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
RUN="$HERE/run/delta"
BIN="$RUN/bin"
DELTA_CACHE="${DELTA_CACHE:-$HOME/.cache/registry-edge/delta}"
C="${C:-}"; PAIRS="${PAIRS:-}"
OWN="${OWN-own-go-hello own-edge-patch own-edge-release own-gomod-src}"
EDGE_PATCH_REVS="${EDGE_PATCH_REVS:-5e3ba975491d878af2224213379a8235b94784e2 cc9d106b0b47d4939ad8f2dbc93c0eee6906a7b6}"
EDGE_RELEASE_REVS="${EDGE_RELEASE_REVS:-9aeb037289caf1454829d464ec679e4ca2925342 cc9d106b0b47d4939ad8f2dbc93c0eee6906a7b6}"
GOMOD_OLD="${GOMOD_OLD:-golang.org/x/crypto@v0.57.0 golang.org/x/net@v0.57.0 golang.org/x/sys@v0.47.0 golang.org/x/text@v0.40.0}"
GOMOD_NEW="${GOMOD_NEW:-golang.org/x/crypto@v0.58.0 golang.org/x/net@v0.59.0 golang.org/x/sys@v0.49.0 golang.org/x/text@v0.42.0}"
METHODS="${METHODS:-gzip zstd edge xdelta3 bsdiff rdiff}"
XDELTA_S="${XDELTA_S:-lzma}"; RDIFF_B="${RDIFF_B:-default 2048}"
TOOL_TIMEOUT="${TOOL_TIMEOUT:-600}"; DELTABENCH="${DELTABENCH:-}"
WAIT_IDLE="${WAIT_IDLE:-0}"; IDLE_LOAD="${IDLE_LOAD:-0.5}"; KEEP="${KEEP:-0}"
CORPUS_SCRIPT="$ROOT/../shared/bench/corpus/build-corpus.sh"
MiB=1048576

# shellcheck source=benchmarks/lib.sh
source "$HERE/lib.sh"

# ---------------------------------------------------------------------------------------------
# tools
# ---------------------------------------------------------------------------------------------
EDGE_REV="?"

setup_tools() {
  mkdir -p "$BIN"
  command -v go >/dev/null || die "go is required"
  [[ -x /usr/bin/time ]] || need_apt /usr/bin/time time
  need_apt timeout coreutils; need_apt sha256sum coreutils; need_apt gzip gzip
  need_apt zstd zstd; need_apt xdelta3 xdelta3; need_apt bsdiff bsdiff; need_apt bspatch bsdiff; need_apt rdiff rdiff
  if [[ -n $DELTABENCH ]]; then
    [[ -x $DELTABENCH ]] || die "DELTABENCH=$DELTABENCH is not executable"
    EDGE_REV="(DELTABENCH given: $DELTABENCH)"
  else
    DELTABENCH="$BIN/deltabench"
    EDGE_REV="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
    if ! (cd "$ROOT" && git diff --quiet HEAD -- internal/delta 2>/dev/null); then
      EDGE_REV+=" (internal/delta has uncommitted changes: measured as in the working tree)"
    fi
    log "building deltabench from the working tree (benchmarks/tools/deltabench, internal/delta at $EDGE_REV)"
    (cd "$ROOT" && timeout 600 go build -o "$DELTABENCH" ./benchmarks/tools/deltabench) 2>"$RUN/build.err" ||
      { cat "$RUN/build.err" >&2; die "deltabench does not build (DELTABENCH=path uses a binary built elsewhere)"; }
  fi
}

# ---------------------------------------------------------------------------------------------
# pairs: the shared corpus, and our own
# ---------------------------------------------------------------------------------------------
CORPUS_PAIRS=""   # directory holding <name>/{old,new}.tar..., or empty

find_corpus() {
  if [[ -z $C ]]; then
    C="$DELTA_CACHE/corpus"
    if [[ ! -s $C/pairs/sizes.tsv ]]; then
      [[ -f $CORPUS_SCRIPT ]] || die "C is not set and $CORPUS_SCRIPT is not there: set C to a corpus made by shared/bench/corpus/build-corpus.sh"
      log "C not set: building the corpus with $CORPUS_SCRIPT into $C (network, node+npm, apt; 20-30 min the first time)"
      mkdir -p "$C"
      # its own PAIRS knob (corpus pair names) is not ours: it builds every pair
      env -u PAIRS C="$C" timeout 3600 bash "$CORPUS_SCRIPT" >"$DELTA_CACHE/build-corpus.log" 2>&1 ||
        die "build-corpus.sh failed; see $DELTA_CACHE/build-corpus.log"
      [[ -s $C/pairs/sizes.tsv ]] || die "build-corpus.sh made no pairs in $C; see $DELTA_CACHE/build-corpus.log"
    fi
  fi
  if [[ -d $C/pairs ]]; then CORPUS_PAIRS="$C/pairs"
  elif compgen -G "$C/*/new.tar" >/dev/null; then CORPUS_PAIRS="$C"
  else die "no pairs under $C (want $C/pairs/<name>/new.tar)"; fi
  CORPUS_PAIRS="$(cd "$CORPUS_PAIRS" && pwd)"
}

# finish_pair DIR: gzip both tars (Go gzip, default level, like the corpus) unless present.
finish_pair() {
  local d=$1 s
  for s in old new; do
    [[ -s $d/$s.tar.gz ]] || "$DELTABENCH" gz "$d/$s.tar" "$d/$s.tar.gz" >/dev/null
  done
}

own_go_hello() { # own_go_hello DEST
  local dest=$1 src side
  src=$(mktemp -d "$RUN/own-go-hello.XXXXXX")
  for side in old new; do
    mkdir -p "$src/$side/app" "$src/$side/root/usr/local/bin"
    printf 'module example.com/hello\n\ngo 1.24\n' >"$src/$side/app/go.mod"
    cat >"$src/$side/app/main.go" <<'GOSRC'
// hello: a tiny HTTP service, the smallest realistic Go image layer.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
)

var version = "1.0.0"

func main() {
	addr := ":8080"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s (version %s)\n", r.URL.Path, version)
	})
	//NEWLINE
	log.Printf("hello %s listening on %s", version, addr)
	log.Fatal(http.ListenAndServe(addr, nil))
}
GOSRC
    if [[ $side == new ]]; then # the one-line change
      sed -i 's|^\t//NEWLINE$|\thttp.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })|' "$src/$side/app/main.go"
    else
      sed -i '/^\t\/\/NEWLINE$/d' "$src/$side/app/main.go"
    fi
    (cd "$src/$side/app" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 GOWORK=off GOFLAGS=-buildvcs=false \
      timeout 600 go build -trimpath -o "$src/$side/root/usr/local/bin/hello" .) || die "own-go-hello: go build failed"
    "$DELTABENCH" mktar "$src/$side/root" "$dest/$side.tar"
  done
  rm -rf "$src"
}

own_edge_bin() { # own_edge_bin DEST "OLDREV NEWREV": registry-edge's binary layer (as the Dockerfile) at two commits
  local dest=$1 src side rev revs
  read -r -a revs <<<"$2"
  ((${#revs[@]} == 2)) || die "want two revisions, got '$2'"
  src=$(mktemp -d "$RUN/own-edge-bin.XXXXXX")
  for side in old new; do
    rev=${revs[0]}; [[ $side == new ]] && rev=${revs[1]}
    mkdir -p "$src/$side/src" "$src/$side/root/usr/local/bin" "$src/$side/root/var/lib/registry-edge"
    git -C "$ROOT" archive --format=tar "$rev" | tar -x -C "$src/$side/src" || die "own-edge-bin: git archive $rev failed"
    (cd "$src/$side/src" && export CGO_ENABLED=0 GOOS=linux GOARCH=amd64 GOWORK=off GOFLAGS=-buildvcs=false &&
      timeout 900 go build -trimpath -ldflags "-s -w -X github.com/registry-edge/registry-edge/internal/version.Version=${rev:0:12}" \
        -o "$src/$side/root/usr/local/bin/registry-edge" ./cmd/registry-edge &&
      timeout 600 go build -trimpath -ldflags "-s -w" -o "$src/$side/root/usr/local/bin/deltactl" ./cmd/deltactl) >"$src/build-$side.log" 2>&1 ||
      { cat "$src/build-$side.log" >&2; die "own-edge-bin: building $rev failed"; }
    "$DELTABENCH" mktar "$src/$side/root" "$dest/$side.tar"
  done
  rm -rf "$src"
}

own_gomod_src() { # own_gomod_src DEST: module cache trees of GOMOD_OLD -> GOMOD_NEW
  local dest=$1 src side m dir rel
  src=$(mktemp -d "$RUN/own-gomod-src.XXXXXX")
  for side in old new; do
    local mods=$GOMOD_OLD; [[ $side == new ]] && mods=$GOMOD_NEW
    for m in $mods; do
      dir=$( (cd "$src" && GOWORK=off GOFLAGS=-mod=mod timeout 600 go mod download -json "$m") |
        awk -F'"' '$2 == "Dir" {print $4}') || true
      [[ -n $dir && -d $dir ]] || die "own-gomod-src: go mod download $m failed"
      rel=${dir#"$(go env GOMODCACHE)"/}
      mkdir -p "$src/$side/root/go/pkg/mod/$(dirname "$rel")"
      cp -a "$dir" "$src/$side/root/go/pkg/mod/$rel"
    done
    "$DELTABENCH" mktar "$src/$side/root" "$dest/$side.tar"
  done
  chmod -R u+w "$src"; rm -rf "$src"
}

# own_pair NAME -> prints its directory, building it if the cached one is missing or stale
own_pair() {
  local name=$1 dest="$DELTA_CACHE/own/$1" key
  key="$name $(go env GOVERSION) v1"
  case $name in
    own-edge-patch) key+=" $EDGE_PATCH_REVS" ;;
    own-edge-release) key+=" $EDGE_RELEASE_REVS" ;;
    own-gomod-src) key+=" $GOMOD_OLD $GOMOD_NEW" ;;
  esac
  if [[ ! -s $dest/new.tar.gz || "$(cat "$dest/key" 2>/dev/null)" != "$key" ]]; then
    log "building our own pair $name into $dest"
    rm -rf "$dest"; mkdir -p "$dest"
    case $name in
      own-go-hello) own_go_hello "$dest" ;;
      own-edge-patch) own_edge_bin "$dest" "$EDGE_PATCH_REVS" ;;
      own-edge-release) own_edge_bin "$dest" "$EDGE_RELEASE_REVS" ;;
      own-gomod-src) own_gomod_src "$dest" ;;
      *) die "unknown own pair $name (own-go-hello, own-edge-patch, own-edge-release, own-gomod-src)" ;;
    esac
    finish_pair "$dest"
    printf '%s\n' "$key" >"$dest/key"
  fi
  echo "$dest"
}

declare -A PDIR=() PSRC=()
PLIST=()

collect_pairs() {
  local d name n
  if [[ -n $CORPUS_PAIRS ]]; then
    for d in "$CORPUS_PAIRS"/*/; do
      [[ -f $d/new.tar && -f $d/old.tar ]] || continue
      name=$(basename "$d"); PDIR[$name]="${d%/}"; PSRC[$name]=corpus
    done
  fi
  for name in $OWN; do
    if [[ -n $PAIRS ]] && ! grep -qw -- "$name" <<<"$PAIRS"; then continue; fi
    PDIR[$name]=$(own_pair "$name"); PSRC[$name]=own
  done
  local want=("${!PDIR[@]}")
  if [[ -n $PAIRS ]]; then
    want=()
    for n in $PAIRS; do [[ -n ${PDIR[$n]:-} ]] || die "pair $n not found (corpus: ${CORPUS_PAIRS:-none}; own: $OWN)"; want+=("$n"); done
  fi
  # smallest (old + new) first: the quick ones give a first look early
  mapfile -t PLIST < <(for n in "${want[@]}"; do
    echo "$(($(stat -c %s "${PDIR[$n]}/old.tar") + $(stat -c %s "${PDIR[$n]}/new.tar"))) $n"; done | sort -n | cut -d' ' -f2)
  ((${#PLIST[@]})) || die "no pairs to run"
}

# ---------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------
# tv LOG CMDLINE: runs CMDLINE (bash -c; one simple command is exec'd, so its own RSS is measured)
# under /usr/bin/time -v and `timeout -k 10 TOOL_TIMEOUT`, output appended to LOG. Sets T_S (wall,
# s), T_CPU (user+sys, s), T_MIB (peak RSS of the largest process), T_ST (ok | timeout | fail:rc).
tv() {
  local lg=$1 cmd=$2 tf="$W/time.txt" t0 t1 rc
  rm -f "$tf"
  printf '$ %s\n' "$cmd" >>"$lg"
  t0=$(date +%s%N)
  set +e
  timeout -k 10 "$TOOL_TIMEOUT" /usr/bin/time -v -o "$tf" bash -c "$cmd" >>"$lg" 2>&1
  rc=$?
  set -e
  t1=$(date +%s%N)
  T_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", (b - a) / 1e9}')
  T_CPU=-; T_MIB=-
  if [[ -s $tf ]]; then
    T_CPU=$(awk -F': ' '/User time/{u=$2} /System time/{s=$2} END{if (u == "") print "-"; else printf "%.2f", u + s}' "$tf")
    T_MIB=$(awk -F': ' '/Maximum resident set size/{m=sprintf("%.1f", $2 / 1024)} END{print (m == "" ? "-" : m)}' "$tf")
  fi
  case $rc in
    0) T_ST=ok ;;
    124 | 137) T_ST=timeout; T_CPU=-; T_MIB=- ;;
    *) T_ST="fail:$rc" ;;
  esac
  cat "$tf" >>"$lg" 2>/dev/null || true
  printf '# wall %s s, rc %s\n\n' "$T_S" "$rc" >>"$lg"
}

q() { printf '%q' "$1"; } # shell-quote one word for a tv command line

fsize() { stat -c %s "$1" 2>/dev/null || echo 0; }
mbps() { awk -v n="$1" -v s="$2" 'BEGIN{if (s == "-" || s <= 0) print "-"; else printf "%.1f", n / s / 1e6}'; }

# row METHOD BYTES ENC_{S,CPU,MIB,ST} DEC_{S,CPU,MIB,ST} CHECK NOTE -> a line of rows.tsv
ZBYTES=""
row() {
  local m=$1 b=$2 es=$3 ec=$4 em=$5 ds=$7 dc=$8 dm=$9 chk=${11} note=${12:-} pct=- xz=- enc_mbps=- dec_mbps=-
  if [[ $b != - ]]; then
    pct=$(awk -v b="$b" -v g="$NGSIZE" 'BEGIN{printf "%.3f", 100 * b / g}')
    [[ -n $ZBYTES ]] && xz=$(awk -v b="$b" -v z="$ZBYTES" 'BEGIN{printf "%.3f", b / z}')
  fi
  [[ $6 == ok ]] && enc_mbps=$(mbps "$NSIZE" "$es")
  [[ ${10} == ok ]] && dec_mbps=$(mbps "$NSIZE" "$ds")
  [[ $6 == ok ]] || { es="$6"; ec=-; em=-; }
  [[ ${10} == ok || ${10} == - ]] || { ds="${10}"; dc=-; dm=-; }
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$P" "$m" "$b" "$pct" "$xz" \
    "$es" "$ec" "$em" "$enc_mbps" "$ds" "$dc" "$dm" "$dec_mbps" "$chk" "$note" >>"$ROWS"
  log "  $m: $b B ($pct % of gz, x zstd $xz) encode $es s $em MiB, apply $ds s $dm MiB, $chk${note:+ ($note)}"
}

check_out() { # check_out FILE -> ok | MISMATCH | missing
  if [[ ! -f $1 ]]; then echo missing
  elif [[ "$(sha256sum <"$1" | cut -d' ' -f1)" == "$NSHA" ]]; then echo ok
  else echo MISMATCH; fi
}

# method NAME DELTA ENC_CMD DEC_CMD [NOTE]: encode, then (if that worked) apply into $W/out and check
method() {
  local m=$1 dfile=$2 enc=$3 dec=$4 note=${5:-} lg="$LOGDIR/$P.$1.log" b=- chk
  local es ec em est ds=- dc=- dm=- dst=-
  : >"$lg"; rm -f "$dfile" "$W/out"
  tv "$lg" "$enc"; es=$T_S; ec=$T_CPU; em=$T_MIB; est=$T_ST
  if [[ $est == ok ]]; then
    b=$(fsize "$dfile")
    tv "$lg" "$dec"; ds=$T_S; dc=$T_CPU; dm=$T_MIB; dst=$T_ST
    if [[ $dst == ok ]]; then chk=$(check_out "$W/out"); else chk="apply-$dst"; fi
  else
    chk="encode-$est"
  fi
  [[ $m == zstd-19 && $chk == ok ]] && ZBYTES=$b
  row "$m" "$b" "$es" "$ec" "$em" "$est" "$ds" "$dc" "$dm" "$dst" "$chk" "$note"
  [[ $KEEP == 1 ]] || rm -f "$W/out" "$dfile"
}

has() { grep -qw -- "$1" <<<"$METHODS"; }

run_pair() {
  P=$1; local d=${PDIR[$1]}
  W="$RUN/$P"; rm -rf "$W"; mkdir -p "$W"
  local O="$d/old.tar" N="$d/new.tar" NG="$d/new.tar.gz"
  [[ -s $NG && -s "$d/old.tar.gz" ]] || finish_pair "$d"
  OSIZE=$(fsize "$O"); NSIZE=$(fsize "$N"); NGSIZE=$(fsize "$NG"); ZBYTES=""
  NSHA=$(sha256sum <"$N" | cut -d' ' -f1)
  local load1; load1=$(cut -d' ' -f1 /proc/loadavg)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$P" "${PSRC[$P]}" "$OSIZE" "$NSIZE" "$(fsize "$d/old.tar.gz")" "$NGSIZE" "$load1" "$d" >>"$OUT/pairs.tsv"
  log "pair $P (${PSRC[$P]}): old.tar $OSIZE B, new.tar $NSIZE B, new.tar.gz $NGSIZE B; load average $load1"
  local sum=$((OSIZE + NSIZE)) wlog=10 xb s b o
  while (((1 << wlog) < sum)); do wlog=$((wlog + 1)); done
  ((wlog >= 27)) || wlog=27
  xb=$((1 << wlog))

  if has gzip; then
    local es=- ec=- em=-
    tv "$LOGDIR/$P.full-gzip.log" "exec gzip -dc $(q "$NG") > $(q "$W/out")"
    row full-gzip "$NGSIZE" "$es" "$ec" "$em" - "$T_S" "$T_CPU" "$T_MIB" "$T_ST" \
      "$([[ $T_ST == ok ]] && check_out "$W/out" || echo "apply-$T_ST")" "the layer itself; apply = gzip -dc"
    rm -f "$W/out"
  fi
  has zstd && method zstd-19 "$W/pf.zst" \
    "zstd -q -19 --single-thread --long=31 -f --patch-from=$(q "$O") $(q "$N") -o $(q "$W/pf.zst")" \
    "zstd -q -d --long=31 -f --patch-from=$(q "$O") $(q "$W/pf.zst") -o $(q "$W/out")"
  has edge && method registry-edge "$W/edge.delta" \
    "$(q "$DELTABENCH") encode $(q "$O") $(q "$N") $(q "$W/edge.delta")" \
    "$(q "$DELTABENCH") decode $(q "$O") $(q "$W/edge.delta") $(q "$W/out")"
  if has xdelta3; then
    for s in $XDELTA_S; do
      o="-S $s"; [[ $s == default ]] && o=""
      method "xdelta3-9-S$s" "$W/xd.$s" \
        "xdelta3 -e -9 -D -R $o -B $xb -f -s $(q "$O") $(q "$N") $(q "$W/xd.$s")" \
        "xdelta3 -d -D -R -B $xb -f -s $(q "$O") $(q "$W/xd.$s") $(q "$W/out")" "-B $xb"
    done
  fi
  if has bsdiff; then
    local avail_kib; avail_kib=$(awk '/^MemAvailable/{print $2}' /proc/meminfo) # KiB (mawk: no 64-bit %d)
    if ((OSIZE * 17 < avail_kib * 1024 / 2)); then
      method bsdiff "$W/bsd" "bsdiff $(q "$O") $(q "$N") $(q "$W/bsd")" "bspatch $(q "$O") $(q "$W/out") $(q "$W/bsd")"
    else
      row bsdiff - skipped - - skipped - - - - skipped "17 x old.tar > MemAvailable/2"
    fi
  fi
  if has rdiff; then
    for b in $RDIFF_B; do
      o=""; [[ $b == default ]] || o="-b $b"
      method "rdiff-b$b+zstd19" "$W/rd.$b.zst" \
        "rdiff signature $o $(q "$O") $(q "$W/sig.$b") && rdiff delta $(q "$W/sig.$b") $(q "$N") $(q "$W/rd.$b") && zstd -q -19 --single-thread -f $(q "$W/rd.$b") -o $(q "$W/rd.$b.zst")" \
        "zstd -q -dc $(q "$W/rd.$b.zst") | rdiff patch $(q "$O") - $(q "$W/out")" \
        "pipeline: RSS of the largest process"
      [[ -f $W/rd.$b ]] && sed -i "\$s/\$/; raw rdiff delta $(fsize "$W/rd.$b") B, signature $(fsize "$W/sig.$b") B/" "$ROWS"
      rm -f "$W/sig.$b" "$W/rd.$b"
    done
  fi
  grep -h '^deltabench ' "$LOGDIR/$P.registry-edge.log" 2>/dev/null | sed "s/^/$P /" >>"$OUT/deltabench.txt" || true
  [[ $KEEP == 1 ]] || rm -rf "$W"
}

# ---------------------------------------------------------------------------------------------
# summary.md
# ---------------------------------------------------------------------------------------------
write_summary() {
  local md="$OUT/summary.md"
  {
    echo "# Layer deltas (issue #5) — $STAMP"
    echo
    echo "Command: \`$CMDLINE\`  "
    echo "registry-edge (internal/delta): $EDGE_REV; corpus: ${CORPUS_PAIRS:-none}; own pairs: ${OWN:-none}.  "
    echo "Machine: $(nproc) CPUs, $(uname -r), $(go env GOVERSION); load average at the start $LOAD0, at the end $(cut -d' ' -f1-3 /proc/loadavg).  "
    echo "Wall $(($(date +%s) - START_S)) s. Sizes are exact; times and MB/s move with the load (per-pair load in pairs.tsv)."
    echo
    echo "## Targets (registry-edge)"
    echo
    awk -F'\t' -v MiB="$MiB" '
      FNR == 1 {next}
      FNR == NR {order[++np] = $1; src[$1] = $2; otar[$1] = $3; ntar[$1] = $4; ngz[$1] = $6; load[$1] = $7; next}
      {
        p = $1; m = $2; ok = ($14 == "ok")
        if (m == "registry-edge") { eb[p] = $3; eok[p] = ok; ems[p] = $9; emib[p] = $8; dms[p] = $13; dmib[p] = $12; echk[p] = $14 }
        if (!ok) next
        if (m == "zstd-19") z[p] = $3
        if (m ~ /^rdiff/ && (r[p] == "" || $3 + 0 < r[p] + 0)) { r[p] = $3; rm_[p] = m }
        if ((m == "zstd-19" || m ~ /^xdelta3/ || m == "bsdiff") && (best[p] == "" || $3 + 0 < best[p] + 0)) { best[p] = $3; bm[p] = m }
      }
      function v(c) { return c ? "PASS" : "**FAIL**" }
      END {
        print "| pair | src | load | new.tar.gz B | registry-edge B (% of gz) | × zstd-19 (≤ 1.15) | vs best rdiff+zstd (smaller) | × best of zstd/xdelta3/bsdiff (≤ 1.05, stretch) | apply peak RSS MiB (≤ 64) | apply MB/s (≥ 50) | encode MB/s (≥ 20) | encode peak RSS MiB (≤ old.tar + 256) |"
        print "|---|---|---:|---:|---:|---|---|---|---|---|---|---|"
        for (i = 1; i <= np; i++) {
          p = order[i]
          if (!eok[p]) { printf "| %s | %s | %s | %.0f | %s | - | - | - | - | - | - | - |\n", p, src[p], load[p], ngz[p], (echk[p] == "" ? "not run" : "**" echk[p] "**"); continue }
          lim = otar[p] / MiB + 256
          c1 = (z[p] != "") ? sprintf("%.3f %s", eb[p] / z[p], v(eb[p] / z[p] <= 1.15)) : "n/a"
          c2 = (r[p] != "") ? sprintf("%.3f × %s %s", eb[p] / r[p], rm_[p], v(eb[p] + 0 < r[p] + 0)) : "n/a"
          c3 = (best[p] != "") ? sprintf("%.3f × %s %s", eb[p] / best[p], bm[p], v(eb[p] / best[p] <= 1.05)) : "n/a"
          c4 = sprintf("%s %s", dmib[p], v(dmib[p] + 0 <= 64))
          c5 = sprintf("%s %s", dms[p], v(dms[p] + 0 >= 50))
          c6 = sprintf("%s %s", ems[p], v(ems[p] + 0 >= 20))
          c7 = sprintf("%s of %.0f %s", emib[p], lim, v(emib[p] + 0 <= lim))
          printf "| %s | %s | %s | %.0f | %.0f (%.2f %%) | %s | %s | %s | %s | %s | %s | %s |\n", p, src[p], load[p], ngz[p], eb[p], 100 * eb[p] / ngz[p], c1, c2, c3, c4, c5, c6, c7
          te += eb[p]; tz += (z[p] != "" ? z[p] : 0); tg += ngz[p]; if (z[p] == "") nz = 1
        }
        if (np > 1) printf "\nAll pairs together: registry-edge %.0f B = %.2f %% of the gzip layers (%.0f B)%s.\n", te, 100 * te / tg, tg, (nz ? "" : sprintf("; zstd-19 %.0f B, ratio %.3f", tz, te / tz))
      }' "$OUT/pairs.tsv" "$ROWS"
    echo
    echo "## Every method (delta bytes; encode and apply: wall s / CPU s / peak RSS MiB / MB/s of new.tar)"
    echo
    echo "| pair | method | bytes | % of gz | × zstd-19 | encode s | CPU s | MiB | MB/s | apply s | CPU s | MiB | MB/s | sha256 | note |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    awk -F'\t' 'NR > 1 {s = "|"; for (i = 1; i <= NF; i++) s = s " " $i " |"; print s}' "$ROWS"
    echo
    echo "Notes: MB/s = 10^6 bytes of new.tar (uncompressed) per second of wall time, for encode and apply alike;"
    echo "wall time includes process start-up and reading the files (warm page cache: every input was just"
    echo "read). Peak RSS is /usr/bin/time's maximum resident set size (page cache not included; for the rdiff"
    echo "pipelines the largest process, not the sum). full-gzip's bytes are new.tar.gz; its apply is gzip -dc."
    echo "registry-edge's decode takes the base digest from the delta header (a receiver stores bases by diffID)"
    echo "and checks the output's SHA-256 itself; the harness checks every method's output against new.tar again."
  } >"$md"
}

# ---------------------------------------------------------------------------------------------
main() {
  case "${1:-all}" in
    clean) rm -rf "$RUN"; log "removed $RUN"; exit 0 ;;
    tools) mkdir -p "$RUN"; setup_tools; for n in $OWN; do own_pair "$n" >/dev/null; done; log "tools ready: $DELTABENCH"; exit 0 ;;
    all) ;;
    -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) die "unknown command $1 (all|tools|clean|help)" ;;
  esac
  mkdir -p "$RUN"
  exec 9>"$RUN/.lock"; flock -n 9 || die "another benchmarks/delta.sh is running"
  CMDLINE="$(env | grep -E '^(C|PAIRS|OWN|METHODS|XDELTA_S|RDIFF_B|TOOL_TIMEOUT|DELTABENCH|EDGE_PATCH_REVS|EDGE_RELEASE_REVS|GOMOD_OLD|GOMOD_NEW|WAIT_IDLE|IDLE_LOAD|KEEP)=' | sort | tr '\n' ' ')benchmarks/delta.sh"
  setup_tools
  find_corpus
  collect_pairs
  wait_idle
  pgrep -f 'benchmarks/(run|resume)\.sh' >/dev/null && log "WARNING: another benchmark (run.sh/resume.sh) is running: times will be distorted"
  STAMP=$(date -u +%Y%m%dT%H%M%SZ); OUT="$HERE/results/$STAMP-delta"; LOGDIR="$OUT/logs"
  mkdir -p "$LOGDIR"; START_S=$(date +%s); LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
  ROWS="$OUT/rows.tsv"
  printf 'pair\tmethod\tbytes\tpct_of_gz\tx_zstd19\tenc_s\tenc_cpu_s\tenc_rss_mib\tenc_mbps\tdec_s\tdec_cpu_s\tdec_rss_mib\tdec_mbps\tcheck\tnote\n' >"$ROWS"
  printf 'pair\tsource\told_tar\tnew_tar\told_gz\tnew_gz\tload1_at_start\tdir\n' >"$OUT/pairs.tsv"
  : >"$OUT/deltabench.txt"
  {
    echo "stamp $STAMP"; echo "command $CMDLINE"; echo "registry-edge $EDGE_REV"
    echo "deltabench $DELTABENCH"; echo "corpus ${CORPUS_PAIRS:-none}"; echo "pairs ${PLIST[*]}"
    echo "go $(go env GOVERSION)"; echo "kernel $(uname -r)"; echo "nproc $(nproc)"; echo "load $LOAD0"
    echo "zstd $(zstd --version 2>&1 | head -1)"; echo "xdelta3 $(xdelta3 -V 2>&1 | head -1)"
    echo "bsdiff $(dpkg-query -W -f '${Version}' bsdiff 2>/dev/null || echo '?')"; echo "rdiff $(rdiff --version 2>&1 | head -1)"
    echo "tool_timeout $TOOL_TIMEOUT"
  } >"$OUT/env.txt"
  log "results in $OUT; pairs: ${PLIST[*]}"
  for p in "${PLIST[@]}"; do run_pair "$p"; done
  write_summary
  log "done: $OUT/summary.md"
  cat "$OUT/summary.md"
}

cleanup() { [[ $KEEP == 1 ]] || rm -rf "${W:-/nonexistent}"; }
W=""
trap cleanup EXIT; trap 'exit 130' INT TERM
main "$@"
