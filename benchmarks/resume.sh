#!/usr/bin/env bash
# benchmarks/resume.sh — issue #4 ("cellular-grade transfers") side by side: registry-edge vs the
# reference pull-through proxy (CNCF distribution `registry` v3.1.2 in proxy mode), in ONE run.
# Each mirror reaches central through its own flaky relay (benchmarks/tools/flaky), whose counters
# are the bytes that crossed the (metered) link; the shaped link of scenario c and the silent drop of
# scenario d use network namespaces (benchmarks/cellular.sh) when this machine allows them.
# Adapted from shared/bench/flaky and shared/bench/peer/netem.sh (read-only; not needed at run time).
#
# Usage:  benchmarks/resume.sh            build/install what is missing, run a b c d (~8-10 min)
#         benchmarks/resume.sh tools      only install/build the tools, then exit
#         benchmarks/resume.sh clean      delete benchmarks/run-resume/ (state); results/ is kept
#
# Scenarios (see benchmarks/README.md, "Resume and cellular links"):
#   a. BIG_MB random blob in central; mirror -> relay that cuts EVERY connection after A_CUT_MB of
#      upstream->mirror bytes -> central. One client GET through the (cold) mirror: complete, right
#      sha256? Bytes that crossed the link / blob size (target edge <= 1.02). If that GET fails, the
#      client retries up to A_RETRIES times (a real client's behaviour), each reported.
#   b. kill -9 of the mirror at about B_KILL_PCT % of a BIG_MB fill (relay paced at B_RATE_MB MB/s so
#      that the relay's byte counter can be watched), restart on the same storage, GET again:
#      complete, right sha256? Bytes across the link (both lives) / blob size (target edge <= 1.05).
#   c. link of C_RATE with C_LOSS % random loss each way (namespaces: tbf + nftables; without them:
#      the relay's shared rate limit, NO loss): cold GET of a C_MB blob through each mirror vs a plain
#      curl of the same blob from central over the same link: throughput ratio (target edge >= 0.9).
#   d. a tag cached by the mirror, then the upstream blackholed: time to answer a GET of the manifest
#      by tag once the tag is older than registry-edge's cache.tagTTL (D_TAG_TTL), i.e. when it must
#      ask upstream (target edge <= 3 s; reference capped at D_CAP s). Two kinds of blackhole:
#      "relay" (connections accepted, nothing ever answered) always; "link" (nftables drops every
#      packet: no SYN-ACK) when namespaces work. Also reported: the same GET while the tag is fresh.
#
# Env knobs (defaults):
#   SCENARIOS="a b c d"   which to run          PORT_BASE=17000 (see ports below; 127.0.0.1 only)
#   BIG_MB=200            size of the a/b blob   A_CUT_MB=8  A_RETRIES=2  A_TIMEOUT=180 (s per client GET)
#   B_KILL_PCT=50         B_RATE_MB=20 (relay pace during the fill, MB/s)   B_TIMEOUT=180 (s per step)
#   C_MB=16  C_RATE=2mbit  C_LOSS=1 (%)  C_TIMEOUT=300 (s per transfer)  C_PROXY=1 (0 = skip the proxy in c)
#   D_TAG_TTL=5s (registry-edge cache.tagTTL in this harness)  D_CAP=60 (s, bound of each probe)  D_PROBES=3
#   NETNS=auto            auto | 0 (never use namespaces: c without loss, d relay only) | 1 (require them)
#   EDGE_BIN=             use this registry-edge binary instead of building ./cmd/registry-edge
#   EDGE_YAML=            extra top-level YAML lines for registry-edge's config (not `cache`/`upstreams`)
#   EDGE_CACHE_YAML=      extra lines inside `cache:` (indented by 2 spaces, e.g. "  revalidateTimeout: 1s")
#   EDGE_UPSTREAM_YAML=   extra lines inside the (only) upstream entry, indented by 4 spaces, e.g.
#                         $'    timeouts:\n      connect: 1s\n    breaker:\n      failures: 1'
#                         (registry-edge's config is written per mirror: benchmarks/run-resume/<mirror>.yaml)
#   REGISTRY_EDGE_TOOLS=$HOME/.cache/registry-edge/tools   go-installed registry/crane (as run.sh)
#   KEEP=0                1 = keep benchmarks/run-resume/data afterwards (several copies of the big blob)
#   WAIT_BENCH=0          seconds to wait for a running benchmarks/run.sh to finish (0 = refuse to start)
# Ports (127.0.0.1): central PORT_BASE, registry-edge +1, reference proxy +2, relay for edge +10
#   (stats/control +11), relay for the proxy +12 (+13). In the namespaces: central-in-core CORE_IP:+20,
#   site mirrors on the site namespace's own 127.0.0.1:+21 (edge) and +22 (proxy).
# State (binaries, data, logs) in benchmarks/run-resume/ (git-ignored), results in
# benchmarks/results/<UTC stamp>-resume/ (results.tsv, results.md, a.txt b.txt c.txt d.txt, logs/).
# Everything the script starts is stopped on exit (trap), by PID; namespaces it created are removed.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
RUN="$HERE/run-resume"
BIN="$RUN/bin"; DATA="$RUN/data"; LOGS="$RUN/logs"
TOOLS="${REGISTRY_EDGE_TOOLS:-$HOME/.cache/registry-edge/tools}"
REGISTRY_VERSION=v3.1.2; CRANE_VERSION=v0.22.1
CELL="$HERE/cellular.sh"

SCENARIOS="${SCENARIOS:-a b c d}"; PORT_BASE="${PORT_BASE:-17000}"
BIG_MB="${BIG_MB:-200}"; A_CUT_MB="${A_CUT_MB:-8}"; A_RETRIES="${A_RETRIES:-2}"; A_TIMEOUT="${A_TIMEOUT:-180}"
B_KILL_PCT="${B_KILL_PCT:-50}"; B_RATE_MB="${B_RATE_MB:-20}"; B_TIMEOUT="${B_TIMEOUT:-180}"
C_MB="${C_MB:-16}"; C_RATE="${C_RATE:-2mbit}"; C_LOSS="${C_LOSS:-1}"; C_TIMEOUT="${C_TIMEOUT:-300}"; C_PROXY="${C_PROXY:-1}"
D_TAG_TTL="${D_TAG_TTL:-5s}"; D_CAP="${D_CAP:-60}"; D_PROBES="${D_PROBES:-3}"
NETNS="${NETNS:-auto}"; KEEP="${KEEP:-0}"; WAIT_BENCH="${WAIT_BENCH:-0}"
EDGE_YAML="${EDGE_YAML:-}"; EDGE_CACHE_YAML="${EDGE_CACHE_YAML:-}"; EDGE_UPSTREAM_YAML="${EDGE_UPSTREAM_YAML:-}"

CENTRAL="127.0.0.1:$PORT_BASE"
declare -A ADDR=([edge]="127.0.0.1:$((PORT_BASE + 1))" [proxy]="127.0.0.1:$((PORT_BASE + 2))"
                 [edge-site]="127.0.0.1:$((PORT_BASE + 21))" [proxy-site]="127.0.0.1:$((PORT_BASE + 22))")
declare -A RELAY=([edge]="127.0.0.1:$((PORT_BASE + 10))" [proxy]="127.0.0.1:$((PORT_BASE + 12))")
declare -A RSTATS=([edge]="127.0.0.1:$((PORT_BASE + 11))" [proxy]="127.0.0.1:$((PORT_BASE + 13))")
CORE_PORT=$((PORT_BASE + 20))
EDGE_UA="registry-edge"; PROXY_UA="Go-http-client"
ACC='Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json'
MiB=1048576

# shellcheck source=benchmarks/lib.sh
source "$HERE/lib.sh"

# ---------------------------------------------------------------------------------------------
# tools (as in run.sh): registry + crane from the shared cache, flaky + registry-edge built here
# ---------------------------------------------------------------------------------------------
REGISTRY_BIN=""; CRANE_BIN=""; FLAKY="$BIN/flaky"; EDGE_BIN="${EDGE_BIN:-}"; EDGE_REV="?"; EDGE_VERSION="?"

setup_tools() {
  mkdir -p "$BIN" "$LOGS"
  command -v go >/dev/null || die "go is required"
  need_apt jq jq; need_apt curl curl; need_apt ss iproute2; need_apt flock util-linux
  REGISTRY_BIN=$(go_tool registry "$REGISTRY_VERSION" github.com/distribution/distribution/v3/cmd/registry)
  CRANE_BIN=$(go_tool crane "$CRANE_VERSION" github.com/google/go-containerregistry/cmd/crane)
  build_bench_tool flaky "$FLAKY"
  edge_binary
}

# ---------------------------------------------------------------------------------------------
# processes: every server is a direct child (also those in a namespace: `ip netns exec` execs),
# recorded by name -> PID, stopped by PID on exit
# ---------------------------------------------------------------------------------------------
declare -A PIDS=()
CHILD=""; CELL_UP=0; OUT=""; RESULTS_WRITTEN=0

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -n $CHILD ]] && { kill "$CHILD" 2>/dev/null || true; wait "$CHILD" 2>/dev/null || true; }
  local name
  for name in "${!PIDS[@]}"; do stop_one "$name"; done
  [[ $CELL_UP == 1 ]] && { "$CELL" down >/dev/null 2>&1 || true; }
  if [[ -n $OUT && $RESULTS_WRITTEN == 0 && -f $OUT/results.tsv ]]; then write_md "(interrupted: rc=$rc)" || true; fi
  if [[ $KEEP != 1 && -d $DATA ]]; then rm -rf "$DATA"; fi
  exit "$rc"
}

wait_http() { # wait_http URL NAME [NS]: up to 10 s
  local ns=()
  [[ -n ${3:-} ]] && ns=(ip netns exec "$3")
  for _ in $(seq 1 100); do "${ns[@]}" curl -fsS --max-time 1 -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  die "$2 did not come up at $1 (see $LOGS/$2.log)"
}

# write_edge_conf SYS UPSTREAM_URL: defaults except a short tag TTL; the upstream is written in the file
# (not --upstream, which would replace it with one that has default settings) so that per-upstream keys
# (EDGE_UPSTREAM_YAML: timeouts, retry, breaker, offline...) apply.
write_edge_conf() {
  local f="$RUN/$1.yaml" hp=${2#http://}
  {
    echo "# written by benchmarks/resume.sh: defaults except a short tag TTL (scenario d needs a stale tag)"
    echo "cache:"
    echo "  tagTTL: $D_TAG_TTL"
    [[ -n $EDGE_CACHE_YAML ]] && printf '%s\n' "$EDGE_CACHE_YAML"
    [[ -n $EDGE_YAML ]] && printf '%s\n' "$EDGE_YAML"
    echo "upstreams:"
    echo "  - registry: \"$hp\""
    echo "    url: $2"
    echo "    default: true"
    [[ -n $EDGE_UPSTREAM_YAML ]] && printf '%s\n' "$EDGE_UPSTREAM_YAML"
  } >"$f"
  "$EDGE_BIN" check-config "$f" >/dev/null 2>"$LOGS/edge-config.err" ||
    { cat "$LOGS/edge-config.err" >&2; die "registry-edge rejects $f"; }
}

start_relay() { # start_relay edge|proxy
  start_bg "relay-$1" "$FLAKY" -listen "${RELAY[$1]}" -to "$CENTRAL" -stats "${RSTATS[$1]}"
  wait_http "http://${RSTATS[$1]}/" "relay-$1"
}

# mirror SYS: edge | proxy (loopback, upstream = its relay); edge-site | proxy-site (site namespace,
# upstream = central-in-core across the shaped veth)
start_mirror() {
  local sys=$1 ns=() nsname="" up
  case $sys in
    edge|proxy) up="http://${RELAY[$sys]}";;
    *-site) up="http://$CORE_IP:$CORE_PORT"; nsname=$CELL_SITE; ns=(ip netns exec "$CELL_SITE");;
  esac
  mkdir -p "$DATA/$sys"
  case $sys in
    edge*) write_edge_conf "$sys" "$up"
           start_bg "$sys" "${ns[@]}" "$EDGE_BIN" serve --config "$RUN/$sys.yaml" --listen "${ADDR[$sys]}" --storage "$DATA/$sys";;
    proxy*) write_registry_conf "$RUN/$sys.yml" "${ADDR[$sys]}" "$DATA/$sys" "$up"
            start_bg "$sys" "${ns[@]}" env OTEL_TRACES_EXPORTER=none OTEL_SDK_DISABLED=true "$REGISTRY_BIN" serve "$RUN/$sys.yml";;
  esac
  wait_http "http://${ADDR[$sys]}/v2/" "$sys" "$nsname"
}
restart_wiped() { stop_one "$1"; rm -rf "${DATA:?}/$1"; start_mirror "$1"; }

# ---------------------------------------------------------------------------------------------
# relay control and measurement helpers
# ---------------------------------------------------------------------------------------------
relay_cfg() { curl -fsS --max-time 5 -X POST "http://${RSTATS[$1]}/config?$2" >/dev/null; }
relay_reset() { curl -fsS --max-time 5 -X DELETE "http://${RSTATS[$1]}/" >/dev/null; }
relay_get() { curl -fsS --max-time 5 "http://${RSTATS[$1]}/" | jq -r ".$2"; }
relay_clean() { relay_cfg "$1" "rate=0&link_rate=0&cut_every=0&max_cuts=-1&cut_at=0&cut_mode=close&blackhole=0"; }
settle() { # settle RELAY: wait until no byte crossed it for 2 s (at most 30 s): background fills end
  local prev=-1 cur same=0
  for _ in $(seq 1 60); do
    cur=$(relay_get "$1" down_bytes)
    if [[ $cur == "$prev" ]]; then same=$((same + 1)); ((same >= 4)) && return 0; else same=0; fi
    prev=$cur; sleep 0.5
  done
}

CLOG="$LOGS/central.log"
clog_mark() { wc -l <"$CLOG"; }
upstream_blob() { # upstream_blob FROM_LINE UA DIGEST [LOGFILE] -> "GET 200 x1 (8.4 MB); GET 206 x24 (...); HEAD 200 x1"
  tail -n +$(($1 + 1)) "${4:-$CLOG}" | { grep '^{' || true; } | jq -r --arg ua "$2" --arg d "$3" \
    'select(.msg=="response completed" and ((."http.request.useragent" // "") | startswith($ua)) and ((."http.request.uri" // "") | endswith($d)))
     | "\(."http.request.method") \(."http.response.status") \(."http.response.written" // 0)"' |
    awk '{k=$1" "$2; c[k]++; b[k]+=$3} END{for (k in c) printf "%s x%d (%.1f MB); ", k, c[k], b[k]/1e6}'
}
edge_metrics() { # edge_metrics ADDR [NS] -> the resume-related counters, one line
  local ns=(); [[ -n ${2:-} ]] && ns=(ip netns exec "$2")
  "${ns[@]}" curl -fsS --max-time 5 "http://$1/metrics" 2>/dev/null |
    grep -E '^registry_edge_(fill_resumes_total|fill_refetched_bytes_total|fill_stalls_total|fill_failures_total|upstream_fetched_bytes_total|client_stalls_total|fill_duration_seconds_count)' |
    sed -E 's/\{upstream="[^"]*",?/{/; s/\{\}//' | tr '\n' ';' | sed 's/;$//'
}

# get URL FILE TIMEOUT [NS]: sets LINE="rc=.. http=.. bytes=.. time=.. sha=ok|BAD" (sha against $EXPECT).
# Not called in $(...): curl is a child of this shell, so the trap can stop it at once.
EXPECT=""; LINE=""
get() {
  local url=$1 f=$2 to=$3 ns=() rc=0 w sha=BAD
  [[ -n ${4:-} ]] && ns=(ip netns exec "$4")
  rm -f "$f"
  "${ns[@]}" curl -sS -o "$f" --max-time "$to" -w 'http=%{http_code} bytes=%{size_download} time=%{time_total}' "$url" >"$RUN/curl.out" 2>"$RUN/curl.err" &
  CHILD=$!; wait "$CHILD" || rc=$?; CHILD=""
  w=$(cat "$RUN/curl.out")
  [[ -f $f && "sha256:$(sha256sum <"$f" | cut -d' ' -f1)" == "$EXPECT" ]] && sha=ok
  LINE="rc=$rc $w sha=$sha"
  ((rc == 0)) || LINE+=" err=\"$(tr '\n' ' ' <"$RUN/curl.err" | cut -c1-120)\""
}

probe() { # probe URL [NS]: sets LINE="http=.. time=.. rc=.." (manifest GET by tag, bounded by D_CAP)
  local ns=() rc=0
  [[ -n ${2:-} ]] && ns=(ip netns exec "$2")
  "${ns[@]}" curl -sS -o /dev/null -H "$ACC" --max-time "$D_CAP" -w 'http=%{http_code} time=%{time_total}' "$1" >"$RUN/probe.out" 2>/dev/null &
  CHILD=$!; wait "$CHILD" || rc=$?; CHILD=""
  LINE="$(cat "$RUN/probe.out") rc=$rc"
}
kv() { tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1==k{print $2; exit}'; }
# time of a probe for the table: seconds, or "> D_CAP" when it hit the cap, or "err" without an answer
probe_val() { local l=$1; if [[ $(kv rc "$l") == 28 ]]; then echo "> $D_CAP"; elif [[ $(kv http "$l") == 200 ]]; then kv time "$l"; else echo "$(kv time "$l") (http $(kv http "$l"))"; fi; }
fmt() { awk -v a="$1" -v b="$2" -v d="${3:-3}" 'BEGIN{ if (a=="" || b=="" || b+0==0) print "nan"; else printf "%.*f", d, a/b }'; }

# ---------------------------------------------------------------------------------------------
# results: one row per measured figure, appended as soon as it is known
# ---------------------------------------------------------------------------------------------
row() { # row SCENARIO METRIC UNIT CENTRAL PROXY EDGE VALUE OF OP TARGET [VERDICT]
  local v=${11:-}
  if [[ -z $v ]]; then
    if [[ -z ${9} ]]; then v=info
    else v=$(awk -v x="$7" -v op="$9" -v t="${10}" 'BEGIN{
      if (x=="nan" || x=="" || x ~ /^>/ || x ~ /[a-z(]/) { print "FAIL"; exit }
      ok = (op==">=") ? (x+0 >= t+0) : (op=="<=") ? (x+0 <= t+0) : (x+0 == t+0); print ok ? "PASS" : "FAIL" }')
    fi
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:--}" "${5:--}" "${6:--}" "$7" "$8" \
    "$([[ -n ${9} ]] && echo "${9} ${10}" || echo -)" "$v" >>"$OUT/results.tsv"
}

# ---------------------------------------------------------------------------------------------
# seeding: new random content per run (crane, as run.sh)
# ---------------------------------------------------------------------------------------------
cr() { timeout 300 "$CRANE_BIN" --insecure "$@" 2>>"$LOGS/seed.log"; }
seed() {
  W="$RUN/seedwork"; rm -rf "$W"; mkdir -p "$W"
  log "seeding central: ${BIG_MB} MiB and ${C_MB} MiB random layers, a small tagged image"
  mklayer big "${BIG_MB}M"; mklayer mid "${C_MB}M"; mklayer tiny 3000
  cr append -f "$W/big.tar.gz" -t "$CENTRAL/edge/big:v1" >/dev/null
  cr append -f "$W/mid.tar.gz" -t "$CENTRAL/edge/mid:v1" >/dev/null
  cr append -f "$W/tiny.tar.gz" -t "$CENTRAL/edge/small:v1" >/dev/null
  BIG_BLOB=$(cr manifest "$CENTRAL/edge/big:v1" | jq -r '.layers[0].digest')
  MID_BLOB=$(cr manifest "$CENTRAL/edge/mid:v1" | jq -r '.layers[0].digest')
  TAG_DIGEST=$(cr digest "$CENTRAL/edge/small:v1")
  [[ "sha256:$(sha256sum <"$W/big.tar.gz" | cut -d' ' -f1)" == "$BIG_BLOB" ]] || die "big layer is not $BIG_BLOB"
  BIG_SIZE=$(stat -c %s "$W/big.tar.gz"); MID_SIZE=$(stat -c %s "$W/mid.tar.gz")
  rm -rf "$W"
  printf 'BIG_BLOB=%s BIG_SIZE=%s\nMID_BLOB=%s MID_SIZE=%s\nTAG=edge/small:v1 TAG_DIGEST=%s\n' \
    "$BIG_BLOB" "$BIG_SIZE" "$MID_BLOB" "$MID_SIZE" "$TAG_DIGEST" | tee "$OUT/seed.env" >&2
}

# ---------------------------------------------------------------------------------------------
# a. link cut every A_CUT_MB
# ---------------------------------------------------------------------------------------------
declare -A A=() B=() Cc=()
scenario_a() {
  local sys ua url line i f="$RUN/a.blob" c0 tot
  echo "# a. ${BIG_MB} MiB blob ($BIG_SIZE B), relay cuts every connection after $((A_CUT_MB * MiB)) upstream->mirror bytes (FIN)" >>"$OUT/a.txt"
  for sys in edge proxy; do
    ua=$EDGE_UA; [[ $sys == proxy ]] && ua=$PROXY_UA
    url="http://${ADDR[$sys]}/v2/edge/big/blobs/$BIG_BLOB"; EXPECT=$BIG_BLOB
    restart_wiped "$sys"
    relay_clean "$sys"; relay_cfg "$sys" "cut_every=$((A_CUT_MB * MiB))"; relay_reset "$sys"
    c0=$(clog_mark)
    echo "## $sys (cold, wiped)" >>"$OUT/a.txt"
    A[$sys.ok1]=0; A[$sys.gets]="never"
    for i in $(seq 1 $((1 + A_RETRIES))); do
      log "   a. $sys: client GET #$i"
      get "$url" "$f" "$A_TIMEOUT"; line=$LINE
      ((i == 1)) && A[$sys.t1]=$(kv time "$line")
      echo "  client GET #$i: $line | link so far: $(relay_get "$sys" down_bytes) B in $(relay_get "$sys" conns) connections, $(relay_get "$sys" cuts) cuts" >>"$OUT/a.txt"
      if [[ $(kv sha "$line") == ok ]]; then
        ((i == 1)) && A[$sys.ok1]=1
        A[$sys.gets]=$i; break
      fi
    done
    settle "$sys"
    tot=$(relay_get "$sys" down_bytes)
    A[$sys.bytes]=$tot; A[$sys.ratio]=$(fmt "$tot" "$BIG_SIZE"); A[$sys.disp]=${A[$sys.ratio]}
    [[ ${A[$sys.gets]} == never ]] && A[$sys.disp]="${A[$sys.ratio]} (never complete)"
    {
      echo "  link after settling: down=$tot B (x$(fmt "$tot" "$BIG_SIZE") blob size) up=$(relay_get "$sys" up_bytes) B, connections=$(relay_get "$sys" conns), cuts=$(relay_get "$sys" cuts)"
      echo "  central saw (blob, by the mirror's user agent): $(upstream_blob "$c0" "$ua" "$BIG_BLOB")"
      [[ $sys == edge ]] && echo "  registry-edge metrics: $(edge_metrics "${ADDR[edge]}")"
      echo "  mirror log, last warnings/errors: $(grep -iE 'level=(warn|error)|"level":"(warn|error)' "$LOGS/$sys.log" | tail -n 3 | cut -c1-300 | tr '\n' '|')"
    } >>"$OUT/a.txt"
    relay_clean "$sys"
    log "   a. $sys: complete on GET #1: ${A[$sys.ok1]}, GETs to a correct blob: ${A[$sys.gets]}, link bytes x${A[$sys.ratio]}"
  done
  rm -f "$f"
  local desc="${BIG_MB} MiB, link cut every ${A_CUT_MB} MiB"
  row a "$desc: first client GET complete, sha256 right" "1=yes" "" "${A[proxy.ok1]}" "${A[edge.ok1]}" "${A[edge.ok1]}" "edge" "==" 1
  local v=${A[edge.ratio]} verdict=""
  [[ ${A[edge.ok1]} == 1 ]] || verdict="FAIL"
  row a "$desc: bytes across the link / blob size (all client GETs)" "x" "" "${A[proxy.disp]}" "${A[edge.disp]}" "$v" "edge" "<=" 1.02 "$verdict"
  row a "$desc: duration of the first client GET" "s" "" "${A[proxy.t1]}" "${A[edge.t1]}" "${A[edge.t1]}" "edge" "" ""
  row a "$desc: client GETs until a complete, correct blob (at most $((1 + A_RETRIES)))" "count" "" "${A[proxy.gets]}" "${A[edge.gets]}" "${A[edge.gets]}" "edge" "" ""
}

# ---------------------------------------------------------------------------------------------
# b. kill -9 at about half of the fill, restart on the same storage
# ---------------------------------------------------------------------------------------------
scenario_b() {
  local sys ua url line f="$RUN/b.blob" c0 target at_kill after_kill tot pid rc t0
  target=$((BIG_SIZE * B_KILL_PCT / 100))
  echo "# b. ${BIG_MB} MiB blob ($BIG_SIZE B): kill -9 of the mirror when $target B (${B_KILL_PCT} %) crossed the link (paced at ${B_RATE_MB} MB/s), restart on the same storage, GET again" >>"$OUT/b.txt"
  for sys in edge proxy; do
    ua=$EDGE_UA; [[ $sys == proxy ]] && ua=$PROXY_UA
    url="http://${ADDR[$sys]}/v2/edge/big/blobs/$BIG_BLOB"; EXPECT=$BIG_BLOB
    restart_wiped "$sys"
    relay_clean "$sys"; relay_cfg "$sys" "link_rate=$((B_RATE_MB * 1000000))"; relay_reset "$sys"
    c0=$(clog_mark)
    echo "## $sys (cold, wiped)" >>"$OUT/b.txt"
    log "   b. $sys: GET, kill -9 at ${B_KILL_PCT} %"
    rm -f "$f"
    curl -sS -o "$f" --max-time "$B_TIMEOUT" -w 'http=%{http_code} bytes=%{size_download} time=%{time_total}' "$url" >"$RUN/curl.out" 2>"$RUN/curl.err" &
    CHILD=$!; pid=$CHILD
    t0=$(date +%s)
    at_kill=0
    while kill -0 "$pid" 2>/dev/null && (($(date +%s) - t0 < B_TIMEOUT)); do
      at_kill=$(relay_get "$sys" down_bytes)
      ((at_kill >= target)) && break
      sleep 0.05
    done
    stop_one "$sys" 9
    at_kill=$(relay_get "$sys" down_bytes)
    B[$sys.pct]=$(awk -v a="$at_kill" -v s="$BIG_SIZE" 'BEGIN{printf "%.1f", 100*a/s}')
    relay_cfg "$sys" "link_rate=0"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill "$pid" 2>/dev/null || true; rc=0; wait "$pid" || rc=$?; CHILD=""
    sleep 1; after_kill=$(relay_get "$sys" down_bytes)
    echo "  killed -9 at link down=$at_kill B (${B[$sys.pct]} % of the blob); $after_kill B once the dead connection drained; client: rc=$rc $(cat "$RUN/curl.out")" >>"$OUT/b.txt"
    echo "  storage after the kill: $(du -sb "$DATA/$sys" | cut -f1) B under $DATA/$sys" >>"$OUT/b.txt"
    start_mirror "$sys"
    log "   b. $sys: restarted, GET again"
    get "$url" "$f" "$B_TIMEOUT"; line=$LINE
    settle "$sys"
    tot=$(relay_get "$sys" down_bytes)
    B[$sys.ok]=$([[ $(kv sha "$line") == ok ]] && echo 1 || echo 0)
    B[$sys.ratio]=$(fmt "$tot" "$BIG_SIZE"); B[$sys.disp]=${B[$sys.ratio]}
    [[ ${B[$sys.ok]} == 1 ]] || B[$sys.disp]="${B[$sys.ratio]} (GET failed)"
    {
      echo "  client GET after the restart: $line"
      echo "  link after settling: down=$tot B (x${B[$sys.ratio]} blob size; $((tot - after_kill)) B after the restart), connections=$(relay_get "$sys" conns)"
      echo "  central saw (blob, by the mirror's user agent): $(upstream_blob "$c0" "$ua" "$BIG_BLOB")"
      [[ $sys == edge ]] && echo "  registry-edge metrics (restarted process): $(edge_metrics "${ADDR[edge]}")"
    } >>"$OUT/b.txt"
    relay_clean "$sys"
    log "   b. $sys: killed at ${B[$sys.pct]} %, GET after restart ok=${B[$sys.ok]}, link bytes x${B[$sys.ratio]}"
  done
  rm -f "$f"
  local desc="kill -9 at ${B[edge.pct]} % (proxy ${B[proxy.pct]} %) of a ${BIG_MB} MiB fill, restart"
  row b "$desc: GET after the restart complete, sha256 right" "1=yes" "" "${B[proxy.ok]}" "${B[edge.ok]}" "${B[edge.ok]}" "edge" "==" 1
  local verdict=""; [[ ${B[edge.ok]} == 1 ]] || verdict="FAIL"
  row b "$desc: bytes across the link / blob size (both lives)" "x" "" "${B[proxy.disp]}" "${B[edge.disp]}" "${B[edge.ratio]}" "edge" "<=" 1.05 "$verdict"
}

# ---------------------------------------------------------------------------------------------
# c. shaped link: 2 Mbit/s, 1 % loss
# ---------------------------------------------------------------------------------------------
USE_NS=0; CELL_CORE=""; CELL_SITE=""; CORE_IP=""
netns_up() { # bring the namespaces up once (c and d share them): central-in-core + site mirrors
  ((USE_NS == 1)) || return 1
  [[ $CELL_UP == 1 ]] && return 0
  RATE="$C_RATE" LOSS_PCT="$C_LOSS" "$CELL" up 2>>"$LOGS/cellular.log" || die "cellular.sh up failed (see $LOGS/cellular.log)"
  CELL_UP=1
  write_registry_conf "$RUN/central-core.yml" "$CORE_IP:$CORE_PORT" "$DATA/central"
  start_bg central-core ip netns exec "$CELL_CORE" env OTEL_TRACES_EXPORTER=none OTEL_SDK_DISABLED=true "$REGISTRY_BIN" serve "$RUN/central-core.yml"
  wait_http "http://$CORE_IP:$CORE_PORT/v2/" central-core "$CELL_SITE"
  start_mirror edge-site; start_mirror proxy-site
}

scenario_c() {
  local line sys url f="$RUN/c.blob" mode
  EXPECT=$MID_BLOB
  declare -A URL=() NSOF=()
  if ((USE_NS == 1)); then
    mode="namespaces: tbf $C_RATE + nftables ${C_LOSS} % random loss, each way"
    netns_up
    URL[central]="http://$CORE_IP:$CORE_PORT/v2/edge/mid/blobs/$MID_BLOB"
    URL[edge]="http://${ADDR[edge-site]}/v2/edge/mid/blobs/$MID_BLOB"
    URL[proxy]="http://${ADDR[proxy-site]}/v2/edge/mid/blobs/$MID_BLOB"
    NSOF=([central]=$CELL_SITE [edge]=$CELL_SITE [proxy]=$CELL_SITE)
  else
    local bps; bps=$(rate_bps "$C_RATE")
    mode="NO namespaces: flaky relay's shared rate limit $C_RATE ($bps B/s), NO loss"
    relay_clean edge; relay_clean proxy
    relay_cfg edge "link_rate=$bps"; relay_cfg proxy "link_rate=$bps"
    URL[central]="http://${RELAY[edge]}/v2/edge/mid/blobs/$MID_BLOB"   # the same relay (link) as the edge
    URL[edge]="http://${ADDR[edge]}/v2/edge/mid/blobs/$MID_BLOB"
    URL[proxy]="http://${ADDR[proxy]}/v2/edge/mid/blobs/$MID_BLOB"
    NSOF=([central]="" [edge]="" [proxy]="")
  fi
  Cc[mode]=$mode
  echo "# c. cold GET of a ${C_MB} MiB blob ($MID_SIZE B) over the link ($mode)" >>"$OUT/c.txt"
  local systems=(central edge); [[ $C_PROXY == 1 ]] && systems+=(proxy)
  for sys in "${systems[@]}"; do
    log "   c. $sys: GET over the link ($(awk -v s="$MID_SIZE" -v r="$(rate_bps "$C_RATE")" 'BEGIN{printf "~%d s", s/r}'))"
    [[ $USE_NS == 1 ]] && "$CELL" counters >"$RUN/cnt0" 2>/dev/null
    get "${URL[$sys]}" "$f" "$C_TIMEOUT" "${NSOF[$sys]}"; line=$LINE
    Cc[$sys.ok]=$([[ $(kv sha "$line") == ok ]] && echo 1 || echo 0)
    Cc[$sys.kBps]=$(awk -v b="$(kv bytes "$line")" -v t="$(kv time "$line")" 'BEGIN{ if (t+0>0) printf "%.1f", b/t/1000; else print "nan"}')
    [[ ${Cc[$sys.ok]} == 1 ]] || Cc[$sys.kBps]="${Cc[$sys.kBps]}"
    echo "  $sys: $line => ${Cc[$sys.kBps]} kB/s$([[ $USE_NS == 1 ]] && printf ' | link counters before: %s | after: %s' "$(tr '\n' ' ' <"$RUN/cnt0")" "$("$CELL" counters 2>/dev/null | tr '\n' ' ')")" >>"$OUT/c.txt"
    log "   c. $sys: ${Cc[$sys.kBps]} kB/s, sha256 $( [[ ${Cc[$sys.ok]} == 1 ]] && echo ok || echo BAD)"
  done
  [[ $USE_NS == 1 ]] && echo "  registry-edge metrics: $(edge_metrics "${ADDR[edge-site]}" "$CELL_SITE")" >>"$OUT/c.txt"
  [[ $USE_NS == 1 ]] || { relay_clean edge; relay_clean proxy; }
  rm -f "$f"
  local r verdict=""; r=$(fmt "${Cc[edge.kBps]}" "${Cc[central.kBps]}")
  [[ ${Cc[edge.ok]} == 1 && ${Cc[central.ok]} == 1 ]] || verdict="FAIL"
  local tag="$C_RATE, ${C_LOSS} % loss"; [[ $USE_NS == 1 ]] || tag="$C_RATE, relay throttle, no loss"
  row c "cold GET of a ${C_MB} MiB blob over a $tag link: throughput" "kB/s" "${Cc[central.kBps]}" "${Cc[proxy.kBps]:-}" "${Cc[edge.kBps]}" "$r" "edge/central direct" ">=" 0.9 "$verdict"
  row c "same: complete and sha256 right (central direct / proxy / edge)" "1=yes" "${Cc[central.ok]}" "${Cc[proxy.ok]:-}" "${Cc[edge.ok]}" "${Cc[edge.ok]}" "edge" "==" 1
}
rate_bps() { # tc rate (2mbit, 500kbit, 1mbps...) -> bytes/s
  local r=${1,,}
  awk -v r="$r" 'BEGIN{ n=r+0; u=r; sub(/^[0-9.]+/, "", u)
    m = (u=="kbit")?125 : (u=="mbit")?125000 : (u=="gbit")?125000000 : (u=="bit")?0.125 : (u=="kbps")?1000 : (u=="mbps")?1000000 : 1
    printf "%d", n*m }'
}

# ---------------------------------------------------------------------------------------------
# d. upstream blackholed, cached tag
# ---------------------------------------------------------------------------------------------
ttl_secs() { awk -v t="$D_TAG_TTL" 'BEGIN{ n=t+0; if (t ~ /ms$/) n/=1000; else if (t ~ /m$/) n*=60; else if (t ~ /h$/) n*=3600; printf "%d", n+0.999 }'; }

# d_kind KIND: KIND=relay (loopback mirrors, relay blackhole) | link (site mirrors, nftables drop)
d_kind() {
  local kind=$1 sys nsn="" line fresh i vals=() p
  declare -A MM=()
  if [[ $kind == relay ]]; then MM=([edge]=edge [proxy]=proxy); else MM=([edge]=edge-site [proxy]=proxy-site); nsn=$CELL_SITE; fi
  echo "## blackhole by $kind: $([[ $kind == relay ]] && echo 'relay accepts connections, forwards and answers nothing' || echo 'nftables drops every packet on the veth, both ways (no SYN-ACK, no RST)')" >>"$OUT/d.txt"
  [[ $kind == relay ]] && { relay_clean edge; relay_clean proxy; }
  for sys in edge proxy; do # warm: the tag (and its manifest) cached by both mirrors
    probe "http://${ADDR[${MM[$sys]}]}/v2/edge/small/manifests/v1" "$nsn"; line=$LINE
    echo "  warm $sys: $line" >>"$OUT/d.txt"
    [[ $(kv http "$line") == 200 ]] || log "   d. $kind: warming $sys failed: $line"
  done
  local t_warm; t_warm=$(date +%s.%N)
  if [[ $kind == relay ]]; then relay_cfg edge blackhole=1; relay_cfg proxy blackhole=1; else "$CELL" block 2>>"$LOGS/cellular.log"; fi
  probe "http://${ADDR[${MM[edge]}]}/v2/edge/small/manifests/v1" "$nsn"; fresh=$LINE
  echo "  edge, tag still within cache.tagTTL=$D_TAG_TTL: $fresh" >>"$OUT/d.txt"
  local wait; wait=$(awk -v w="$t_warm" -v n="$(date +%s.%N)" -v ttl="$(ttl_secs)" 'BEGIN{ d = w + ttl + 1 - n; printf "%.2f", (d > 0 ? d : 0) }')
  sleep "$wait"
  for i in $(seq 1 "$D_PROBES"); do
    probe "http://${ADDR[${MM[edge]}]}/v2/edge/small/manifests/v1" "$nsn"; line=$LINE
    echo "  edge, stale tag, GET #$i: $line" >>"$OUT/d.txt"; vals+=("$(probe_val "$line")")
  done
  log "   d. $kind: edge fresh $(probe_val "$fresh") s, stale: ${vals[*]}"
  log "   d. $kind: proxy (bounded by $D_CAP s)"
  probe "http://${ADDR[${MM[proxy]}]}/v2/edge/small/manifests/v1" "$nsn"; line=$LINE
  echo "  proxy, GET: $line" >>"$OUT/d.txt"
  p=$(probe_val "$line")
  if [[ $kind == relay ]]; then
    echo "  relay stats while blackholed: edge $(curl -fsS --max-time 5 "http://${RSTATS[edge]}/" | jq -c '{conns,active,held}') proxy $(curl -fsS --max-time 5 "http://${RSTATS[proxy]}/" | jq -c '{conns,active,held}')" >>"$OUT/d.txt"
    relay_cfg edge blackhole=0; relay_cfg proxy blackhole=0
  else
    "$CELL" unblock 2>>"$LOGS/cellular.log"
  fi
  echo "  registry-edge metrics: $(edge_metrics "${ADDR[${MM[edge]}]}" "$nsn")" >>"$OUT/d.txt"
  local desc; [[ $kind == relay ]] && desc="relay blackhole (connect succeeds, no answer)" || desc="link drop, nftables (no SYN-ACK)"
  row d "upstream blackholed by $desc: cached tag past its TTL, first GET" "s" "" "$p" "${vals[0]}" "${vals[0]}" "edge" "<=" 3
  ((D_PROBES > 1)) && row d "same, stale tag, GET$( ((D_PROBES > 2)) && echo "s #2..#$D_PROBES" || echo " #2") right after (edge)" "s" "" "" "$(IFS=' '; echo "${vals[*]:1}")" "-" "" "" ""
  row d "same, tag still within its TTL (edge; no upstream request due)" "s" "" "" "$(probe_val "$fresh")" "-" "" "" ""
}
scenario_d() {
  echo "# d. upstream blackholed after the mirror cached edge/small:v1 ($TAG_DIGEST); registry-edge cache.tagTTL=$D_TAG_TTL; every GET bounded by $D_CAP s" >>"$OUT/d.txt"
  d_kind relay
  if ((USE_NS == 1)); then netns_up; d_kind link
  else echo "## blackhole by link: skipped (no network namespaces here)" >>"$OUT/d.txt"; fi
}

# ---------------------------------------------------------------------------------------------
write_md() {
  local note=${1:-} R="$OUT/results.tsv" MD="$OUT/results.md"
  {
    echo "# registry-edge resume / cellular benchmark — $STAMP ${note}"
    echo
    echo "Machine: $(nproc) cores, kernel $(uname -r), $(go version | cut -d' ' -f3-), load average at start: $LOAD0."
    echo "${EDGE_VERSION} (work tree $EDGE_REV when built), config (loopback edge): \`$(grep -v '^#' "$RUN/edge.yaml" 2>/dev/null | tr '\n' ' ')\`"
    echo "Reference proxy and central: distribution registry $REGISTRY_VERSION. Link/relay: benchmarks/tools/flaky; namespaces: $([[ $USE_NS == 1 ]] && echo "yes (benchmarks/cellular.sh)" || echo "NOT used ($NETNS_WHY)")."
    echo "Knobs: SCENARIOS='$SCENARIOS' BIG_MB=$BIG_MB A_CUT_MB=$A_CUT_MB A_RETRIES=$A_RETRIES B_KILL_PCT=$B_KILL_PCT B_RATE_MB=$B_RATE_MB C_MB=$C_MB C_RATE=$C_RATE C_LOSS=$C_LOSS D_TAG_TTL=$D_TAG_TTL D_CAP=$D_CAP D_PROBES=$D_PROBES."
    echo
    echo "## Targets"
    echo
    echo "| scen. | metric | unit | central direct | proxy | edge | value | of | target | verdict |"
    echo "|---|---|---|---:|---:|---:|---:|---|---|---|"
    awk -F'\t' 'NR>1{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10}' "$R"
    local s
    for s in a b c d; do
      [[ -f $OUT/$s.txt ]] || continue
      echo; echo "## Scenario $s"; echo; echo '```'; cat "$OUT/$s.txt"; echo '```'
    done
  } >"$MD"
  mkdir -p "$OUT/logs"; cp "$LOGS"/*.log "$OUT/logs/" 2>/dev/null || true
  RESULTS_WRITTEN=1
}

main() {
  case "${1:-all}" in
    clean) rm -rf "$RUN"; log "removed $RUN"; exit 0;;
    tools) mkdir -p "$LOGS"; setup_tools; log "tools ready: $REGISTRY_BIN $CRANE_BIN $FLAKY $EDGE_BIN"; exit 0;;
    all) ;;
    -h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0;;
    *) die "unknown command $1 (all|tools|clean)";;
  esac
  ((BIG_MB >= 2 * A_CUT_MB)) || die "BIG_MB must be at least 2 x A_CUT_MB"
  mkdir -p "$RUN" "$LOGS"
  # never two benchmark scripts at once: they share 2 cores and would distort each other
  exec 9>"$RUN/.lock"; flock -n 9 || die "another benchmarks/resume.sh is running"
  local waited=0
  while pgrep -f 'benchmarks/run\.sh' >/dev/null; do
    ((waited >= WAIT_BENCH)) && die "benchmarks/run.sh is running (pid $(pgrep -f 'benchmarks/run\.sh' | tr '\n' ' ')); WAIT_BENCH=SECS waits for it"
    ((waited % 60 == 0)) && log "benchmarks/run.sh is running: waiting (${waited}s of ${WAIT_BENCH}s)"
    sleep 5; waited=$((waited + 5))
  done
  trap cleanup EXIT; trap 'exit 130' INT TERM
  setup_tools
  local a
  for a in "$CENTRAL" "${ADDR[edge]}" "${ADDR[proxy]}" "${RELAY[edge]}" "${RSTATS[edge]}" "${RELAY[proxy]}" "${RSTATS[proxy]}"; do
    port_free "$a" || die "port ${a##*:} is in use (set PORT_BASE)"
  done
  NETNS_WHY=""
  case $NETNS in
    0) USE_NS=0; NETNS_WHY="NETNS=0";;
    *) if "$CELL" check 2>"$LOGS/cellular-check.log"; then USE_NS=1
       else USE_NS=0; NETNS_WHY=$(sed 's/^cellular: //' "$LOGS/cellular-check.log" | tr '\n' ' ')
         [[ $NETNS == 1 ]] && die "NETNS=1 but $NETNS_WHY"
         log "no network namespaces ($NETNS_WHY): c uses the relay's rate limit without loss, d the relay blackhole only"
       fi;;
  esac
  if ((USE_NS == 1)); then eval "$("$CELL" env)"; fi

  STAMP=$(date -u +%Y%m%dT%H%M%SZ); OUT="$HERE/results/$STAMP-resume"; mkdir -p "$OUT"
  LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
  printf 'scenario\tmetric\tunit\tcentral\tproxy\tedge\tvalue\tof\ttarget\tverdict\n' >"$OUT/results.tsv"
  rm -rf "$DATA"; mkdir -p "$DATA"
  local f; for f in "$LOGS"/*.log; do [[ -e $f ]] && : >"$f"; done

  log "starting central on $CENTRAL, relays on ${RELAY[edge]} (edge) and ${RELAY[proxy]} (proxy)"
  start_central; seed
  start_relay edge; start_relay proxy
  start_mirror edge; start_mirror proxy
  local s
  for s in $SCENARIOS; do
    case $s in
      a) log "a. link cut every ${A_CUT_MB} MiB"; scenario_a;;
      b) log "b. kill -9 at ${B_KILL_PCT} % of the fill, restart"; scenario_b;;
      c) log "c. cold GET over a $C_RATE, ${C_LOSS} % loss link"; scenario_c;;
      d) log "d. upstream blackholed, cached tag"; scenario_d;;
      *) die "unknown scenario $s";;
    esac
  done
  write_md
  if command -v column >/dev/null; then column -t -s$'\t' "$OUT/results.tsv" >&2; else cat "$OUT/results.tsv" >&2; fi
  log "written $OUT/results.tsv and $OUT/results.md"
}

main "$@"
