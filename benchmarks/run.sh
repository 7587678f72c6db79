#!/usr/bin/env bash
# benchmarks/run.sh — registry-edge side by side with the reference pull-through proxy
# (CNCF distribution `registry` v3.1.2 in proxy mode) and nginx (sendfile), in ONE run,
# on loopback. Adapted from the reference harness in shared/bench/peer/ (start-central.sh,
# start-proxy.sh, start-nginx.sh, seed.sh, bench-throughput.sh, bench-coldmiss.sh,
# tools/edgeload, tools/report.lua); that folder is read-only and not needed at run time.
#
# Usage:  benchmarks/run.sh            build/install what is missing, run everything (~11 min)
#         benchmarks/run.sh tools      only install/build the tools, then exit
#         benchmarks/run.sh clean      delete benchmarks/run/ (state) — results/ is kept
#
# What it does (see benchmarks/README.md for why):
#   1. central  = `registry` (filesystem storage) seeded with crane: edge/bench4k:v1 (one ~4 KiB
#      layer), edge/big:v1 (one BIG_MB MiB random layer), edge/small:v1 (small image, by tag);
#      proxy    = `registry` in proxy mode -> central;  edge = registry-edge serve -> central;
#      nginx    = the same blob bytes as static files, sendfile on.
#   2. cached throughput (mirrors warmed first): 4 KiB blob GET with CSMALL connections (wrk) on
#      nginx, proxy, edge; large blob GET with 1 and CBIG connections; manifest GET by tag
#      (within registry-edge's tag TTL) on proxy, edge (and central, for reference), counting the
#      requests each mirror made to central during the test (central's access log, by user agent).
#   3. cold misses, each mirror wiped and restarted first: COLD_REPS single GETs of the uncached
#      big blob (time to first body byte vs a direct GET from central), then N concurrent GETs of
#      it: upstream GETs and bytes, first-client time to first byte, peak RSS (VmRSS sampled every
#      50 ms + VmHWM), and a digest check of the blob served from cache afterwards.
#      The same cold tests run against nginx as a caching reverse proxy of central (proxy_cache +
#      proxy_cache_lock, :PORT_BASE+81): the least a mirror's hop costs on this machine.
#   4. the Go micro-benchmarks next to the code (internal/verify, internal/blobstore).
#   5. results/<UTC stamp>/results.{tsv,md} (+ throughput.tsv, coldmiss.txt, logs); the newest are
#      also copied to results/latest.{tsv,md}.
#
# Env knobs (defaults):
#   DUR=10s          length of each small-blob and manifest throughput test (wrk -d)
#   DUR_BIG=5s       length of each large-blob throughput test
#   CSMALL=16        connections, small blob and manifest tests     CBIG=4  connections, large blob
#   THREADS=2        wrk threads (never more than connections)
#   ROUNDS=3         rounds of the whole throughput set; a system's figure is its best round (the
#                    machine is shared: the best round is the one least disturbed by other work)
#   N=64             concurrent clients of the cold-miss fan-in     COLD_REPS=5  single cold misses
#   FANIN_REPS=5     rounds of the fan-in (each: wiped + restarted, a direct GET right before, N clients)
#   CLIENT_CONN=warm warm: every cold-miss client opens its connection with GET /v2/ before the timed
#                    request, as registry clients do (edgeload -warm); cold: clients dial inside the
#                    timed window. With warm, one extra dialling fan-in per mirror is reported as info.
#   DIRECT_REPS=7    single GETs straight from central (the time-to-first-byte reference, median)
#   DIRECT_FANIN_REPS=3  rounds of N concurrent GETs straight from central (like-for-like fan-in
#                    reference: median of the first client's time to first byte; reported, not a target)
#   BIG_MB=200       size of the random big layer (MiB, >= 100)     COLD_TIMEOUT=180s  bound per cold test
#   PORT_BASE=15000  central :PORT_BASE, proxy :+1, registry-edge :+2, nginx :+80, nginx cache :+81 (127.0.0.1 only)
#   TESTS=throughput,cold,gobench  which parts to run (2., 3. and 4. above; e.g. TESTS=cold with larger
#                    COLD_REPS and FANIN_REPS for the cold misses alone); rows of parts not run read "-"
#   EDGE_ACCESS_LOG=1  0 = run registry-edge with log.accessLog=false (diagnostic; default = product default)
#   ALLOW_NO_EDGE=0  1 = if registry-edge does not build, still run the references (harness development)
#   REGISTRY_EDGE_TOOLS=$HOME/.cache/registry-edge/tools   where go-installed registry/crane are cached
#   WAIT_IDLE=0      seconds to wait, before starting, for the 1-minute load average to drop below
#                    IDLE_LOAD=0.5 (other work on the 2 cores distorts every figure; 0 = do not wait)
#   KEEP=0           1 = keep benchmarks/run/ data (4 copies of the big blob) after the run
# Machine note: this box has 2 cores shared by the load generators (wrk, edgeload, curl) and all
# servers. GOMAXPROCS is deliberately NOT set for anything; absolute figures are load-generator-bound
# and only the ratios measured in the same run are meant to be compared.
# Everything the script starts is stopped on exit (trap), by PID; it listens on 127.0.0.1 only.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
RUN="$HERE/run"
BIN="$RUN/bin"
DATA="$RUN/data"
LOGS="$RUN/logs"
TOOLS="${REGISTRY_EDGE_TOOLS:-$HOME/.cache/registry-edge/tools}"
REGISTRY_VERSION=v3.1.2
CRANE_VERSION=v0.22.1

DUR="${DUR:-10s}"; CSMALL="${CSMALL:-16}"; CBIG="${CBIG:-4}"; THREADS="${THREADS:-2}"; ROUNDS="${ROUNDS:-3}"; DUR_BIG="${DUR_BIG:-5s}"
N="${N:-64}"; COLD_REPS="${COLD_REPS:-5}"; FANIN_REPS="${FANIN_REPS:-5}"; CLIENT_CONN="${CLIENT_CONN:-warm}"; DIRECT_REPS="${DIRECT_REPS:-7}"; DIRECT_FANIN_REPS="${DIRECT_FANIN_REPS:-3}"; BIG_MB="${BIG_MB:-200}"; COLD_TIMEOUT="${COLD_TIMEOUT:-180s}"
PORT_BASE="${PORT_BASE:-15000}"; EDGE_ACCESS_LOG="${EDGE_ACCESS_LOG:-1}"
TESTS="${TESTS:-throughput,cold,gobench}"; ALLOW_NO_EDGE="${ALLOW_NO_EDGE:-0}"; KEEP="${KEEP:-0}"; WAIT_IDLE="${WAIT_IDLE:-0}"; IDLE_LOAD="${IDLE_LOAD:-0.5}"
WARM=""; [[ $CLIENT_CONN == warm ]] && WARM=-warm
CENTRAL="127.0.0.1:$PORT_BASE"
PROXY="127.0.0.1:$((PORT_BASE + 1))"
EDGE="127.0.0.1:$((PORT_BASE + 2))"
NGINX="127.0.0.1:$((PORT_BASE + 80))"
NGXCACHE="127.0.0.1:$((PORT_BASE + 81))"
EDGE_UA="registry-edge/"     # registry-edge's user agent towards its upstream
PROXY_UA="Go-http-client"    # distribution's proxy uses Go's default user agent
NGXCACHE_UA="nginx-cache-ref" # the nginx caching proxy's user agent towards central (set in its config)
ACC='Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json'

# shellcheck source=benchmarks/lib.sh
source "$HERE/lib.sh"

# ---------------------------------------------------------------------------------------------
# tools: install or build what is missing
# ---------------------------------------------------------------------------------------------
REGISTRY_BIN=""; CRANE_BIN=""; EDGELOAD="$BIN/edgeload"; EDGE_BIN="$BIN/registry-edge"

build_edge() {
  log "building registry-edge"
  EDGE_REV=$(edge_rev)
  if (cd "$ROOT" && timeout 600 go build -o "$EDGE_BIN" ./cmd/registry-edge) 2>"$LOGS/build-edge.err"; then
    EDGE_VERSION=$("$EDGE_BIN" version 2>/dev/null || echo "?")
    return 0
  fi
  cat "$LOGS/build-edge.err" >&2
  if [[ $ALLOW_NO_EDGE == 1 ]]; then log "registry-edge does not build: running the references only"; EDGE_BIN=""; return 0; fi
  die "registry-edge does not build (ALLOW_NO_EDGE=1 runs the references only)"
}

setup_tools() {
  mkdir -p "$BIN" "$LOGS"
  command -v go >/dev/null || die "go is required"
  need_apt nginx nginx-light; need_apt wrk wrk; need_apt jq jq; need_apt curl curl
  REGISTRY_BIN=$(go_tool registry "$REGISTRY_VERSION" github.com/distribution/distribution/v3/cmd/registry)
  CRANE_BIN=$(go_tool crane "$CRANE_VERSION" github.com/google/go-containerregistry/cmd/crane)
  build_bench_tool edgeload "$EDGELOAD"
  build_edge
}

# ---------------------------------------------------------------------------------------------
# processes: every server is a direct child, recorded by name -> PID, stopped by PID on exit
# ---------------------------------------------------------------------------------------------
declare -A PIDS=()
SAMPLER_PID=""
CHILD=""  # the load generator running now (see run_child)


cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -n $CHILD ]] && { kill "$CHILD" 2>/dev/null || true; wait "$CHILD" 2>/dev/null || true; }
  [[ -n $SAMPLER_PID ]] && { kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true; }
  for name in "${!PIDS[@]}"; do stop_one "$name"; done
  if [[ $KEEP != 1 && -d $DATA ]]; then rm -rf "$DATA"; fi
  exit "$rc"
}

wait_http() { # wait_http URL NAME: up to 10 s
  for _ in $(seq 1 100); do curl -fsS --max-time 1 -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  die "$2 did not come up at $1 (see $LOGS/$2.log)"
}

start_proxy() {
  write_registry_conf "$RUN/proxy.yml" "$PROXY" "$DATA/proxy" "http://$CENTRAL"
  mkdir -p "$DATA/proxy"
  start_bg proxy env OTEL_TRACES_EXPORTER=none OTEL_SDK_DISABLED=true "$REGISTRY_BIN" serve "$RUN/proxy.yml"
  wait_http "http://$PROXY/v2/" proxy
}

start_edge() {
  mkdir -p "$DATA/edge"
  local cfg=()
  if [[ $EDGE_ACCESS_LOG == 0 ]]; then
    printf 'log:\n  accessLog: false\n' >"$RUN/edge.yaml"; cfg=(--config "$RUN/edge.yaml")
  fi
  start_bg edge "$EDGE_BIN" serve "${cfg[@]}" --listen "$EDGE" --storage "$DATA/edge" --upstream "http://$CENTRAL"
  wait_http "http://$EDGE/v2/" edge
}

nginx_head() { # nginx_head NAME: the start of an nginx.conf, up to inside http { (temp files under $RUN/NAME)
  cat <<CONF
worker_processes auto;
pid $RUN/$1.pid;
error_log $LOGS/$1-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $RUN/$1; proxy_temp_path $RUN/$1;
  fastcgi_temp_path $RUN/$1; uwsgi_temp_path $RUN/$1; scgi_temp_path $RUN/$1;
CONF
}

start_nginx() {
  # From shared/bench/peer/start-nginx.sh; daemon off so that the master is our child.
  mkdir -p "$RUN/nginx"
  { nginx_head nginx; cat <<CONF
  sendfile on; tcp_nopush on; keepalive_requests 100000;
  default_type application/octet-stream;
  server { listen $NGINX; root $DATA/static; }
}
CONF
  } >"$RUN/nginx.conf"
  start_bg nginx nginx -e "$LOGS/nginx-error.log" -c "$RUN/nginx.conf" -p "$RUN/nginx" -g 'daemon off;'
  wait_http "http://$NGINX/small.bin" nginx
}

# The cold-miss reference for the hop itself: nginx as a caching reverse proxy of central, with
# proxy_cache_lock (one upstream fetch per blob; the first client streams the response while nginx
# writes it to its cache, the others wait for the lock). C, event-driven, no verification: what a
# mirror on this machine costs at the least for a first byte.
start_ngxcache() {
  mkdir -p "$DATA/ngxcache" "$RUN/ngxcache"
  { nginx_head ngxcache; cat <<CONF
  proxy_cache_path $DATA/ngxcache levels=1:2 keys_zone=blobs:10m max_size=10g inactive=1d use_temp_path=off;
  upstream central { server $CENTRAL; keepalive 16; }
  server {
    listen $NGXCACHE;
    location /v2/ {
      proxy_pass http://central;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header User-Agent "$NGXCACHE_UA";
      proxy_cache blobs;
      proxy_cache_valid 200 1d;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 600s;
      proxy_cache_lock_age 600s;
    }
  }
}
CONF
  } >"$RUN/ngxcache.conf"
  start_bg ngxcache nginx -e "$LOGS/ngxcache-error.log" -c "$RUN/ngxcache.conf" -p "$RUN/ngxcache" -g 'daemon off;'
  wait_http "http://$NGXCACHE/v2/" ngxcache
}

restart_wiped() { # restart_wiped proxy|edge|ngxcache: stop, delete its storage, start (cold cache)
  stop_one "$1"; rm -rf "${DATA:?}/$1"
  case $1 in proxy) start_proxy;; edge) start_edge;; ngxcache) start_ngxcache;; esac
}

# ---------------------------------------------------------------------------------------------
# seeding (adapted from shared/bench/peer/seed.sh): new random content, hence new digests, per run
# ---------------------------------------------------------------------------------------------
cr() { timeout 300 "$CRANE_BIN" --insecure "$@" 2>>"$LOGS/seed.log"; }

seed() {
  W="$RUN/seedwork"; rm -rf "$W"; mkdir -p "$W" "$DATA/static"
  log "seeding central: 4 KiB layer, ${BIG_MB} MiB random layer, small tagged image"
  mklayer b4k 4000; mklayer big "${BIG_MB}M"; mklayer tiny 3000
  cr append -f "$W/b4k.tar.gz" -t "$CENTRAL/edge/bench4k:v1" >/dev/null
  cr append -f "$W/big.tar.gz" -t "$CENTRAL/edge/big:v1" >/dev/null
  cr append -f "$W/tiny.tar.gz" -t "$CENTRAL/edge/small:v1" >/dev/null
  SMALL_REPO=edge/bench4k; BIG_REPO=edge/big; TAG_REPO=edge/small; TAG=v1
  SMALL_BLOB=$(cr manifest "$CENTRAL/$SMALL_REPO:v1" | jq -r '.layers[0].digest')
  BIG_BLOB=$(cr manifest "$CENTRAL/$BIG_REPO:v1" | jq -r '.layers[0].digest')
  TAG_MANIFEST=$(cr digest "$CENTRAL/$TAG_REPO:$TAG")
  # nginx serves the very same bytes (checked against the digests)
  mv "$W/big.tar.gz" "$DATA/static/big.bin"; mv "$W/b4k.tar.gz" "$DATA/static/small.bin"
  [[ "sha256:$(sha256sum <"$DATA/static/big.bin" | cut -d' ' -f1)" == "$BIG_BLOB" ]] || die "big.bin is not $BIG_BLOB"
  [[ "sha256:$(sha256sum <"$DATA/static/small.bin" | cut -d' ' -f1)" == "$SMALL_BLOB" ]] || die "small.bin is not $SMALL_BLOB"
  BIG_SIZE=$(stat -c %s "$DATA/static/big.bin"); SMALL_SIZE=$(stat -c %s "$DATA/static/small.bin")
  rm -rf "$W"
  {
    echo "SMALL_REPO=$SMALL_REPO SMALL_BLOB=$SMALL_BLOB SMALL_SIZE=$SMALL_SIZE"
    echo "BIG_REPO=$BIG_REPO BIG_BLOB=$BIG_BLOB BIG_SIZE=$BIG_SIZE"
    echo "TAG_REPO=$TAG_REPO TAG=$TAG TAG_MANIFEST=$TAG_MANIFEST"
  } | tee "$OUT/seed.env" >&2
}

# ---------------------------------------------------------------------------------------------
# measurement helpers
# ---------------------------------------------------------------------------------------------
CLOG="$LOGS/central.log"
clog_mark() { wc -l <"$CLOG"; }

upstream_reqs() { # upstream_reqs FROM_LINE UA -> number of requests central answered for that UA
  tail -n +$(($1 + 1)) "$CLOG" | { grep '^{' || true; } | jq -r --arg ua "$2" \
    'select(.msg=="response completed" and ((."http.request.useragent" // "") | startswith($ua))) | 1' | wc -l
}

upstream_blob_stats() { # upstream_blob_stats FROM_LINE UA DIGEST -> "GETS HEADS BYTES" of that blob
  tail -n +$(($1 + 1)) "$CLOG" | { grep '^{' || true; } | jq -r --arg ua "$2" --arg d "$3" \
    'select(.msg=="response completed" and ((."http.request.useragent" // "") | startswith($ua)) and ((."http.request.uri" // "") | endswith($d)))
     | "\(."http.request.method") \(."http.response.written" // 0)"' |
    awk '{c[$1]++; b[$1]+=$2} END{printf "%d %d %.0f\n", c["GET"], c["HEAD"], b["GET"]}'
}

upstream_summary() { # upstream_summary FROM_LINE UA -> "N x METHOD PATH; ..." (digests folded)
  tail -n +$(($1 + 1)) "$CLOG" | { grep '^{' || true; } | jq -r --arg ua "$2" \
    'select(.msg=="response completed" and ((."http.request.useragent" // "") | startswith($ua))) | "\(."http.request.method") \(."http.request.uri")"' |
    sed -E 's/sha256:[0-9a-f]+/DIGEST/' | sort | uniq -c | awk '{printf "%s x %s %s; ", $1, $2, $3}'
}

kv() { # kv KEY LINE -> value of KEY=value in LINE
  tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1==k{print $2; exit}'
}

TP="" # throughput.tsv
ROUND=1
throughput() { # throughput NAME SYSTEM URL CONNS UA [HEADER]   (env D: duration, default DUR)
  local name=$1 sys=$2 url=$3 c=$4 ua=$5 hdr=${6:-X-Bench: 1} d=${D:-$DUR}
  local t=$THREADS; ((c < t)) && t=$c
  local load; load=$(cut -d' ' -f1 /proc/loadavg)
  local c0; c0=$(clog_mark)
  local line
  run_child "$RUN/load.out" timeout 120 wrk -t"$t" -c"$c" -d"$d" --timeout 30s --latency -H "$hdr" -s "$HERE/tools/report.lua" "$url" ||
    die "wrk failed for $name"
  line=$(grep '^RESULT' "$RUN/load.out") || die "no wrk result for $name"
  local up=0; [[ -n $ua ]] && up=$(upstream_reqs "$c0" "$ua")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$ROUND" "$name" "$sys" "$c" \
    "$(kv rps "$line")" "$(kv MBps "$line")" "$(kv p50ms "$line")" "$(kv p99ms "$line")" \
    "$(kv non2xx "$line")" "$(kv sockerr "$line")" "$up" "$load" >>"$TP"
  log "$(printf 'r%s %-8s %-8s c=%-3s %s upstream=%s' "$ROUND" "$name" "$sys" "$c" "$line" "$up")"
}
tp_get() { # tp_get NAME SYSTEM COLUMN(rps|MBps|up): best round for rps/MBps, sum over rounds for up
  awk -F'\t' -v n="$1" -v s="$2" -v col="$3" '
    $2==n && $3==s { v = (col=="rps") ? $5 : (col=="MBps") ? $6 : $11; found=1
                     if (col=="up") acc += v; else if (v+0 > acc+0) acc = v }
    END { if (found) print acc }' "$TP"
}

rss_sampler() { # rss_sampler PID FILE: max VmRSS (KiB) every 50 ms, written to FILE on TERM
  local pid=$1 f=$2 max=0 v
  trap 'echo "$max" >"$f"; exit 0' TERM
  while :; do
    v=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0); v=${v:-0}
    ((v > max)) && max=$v
    sleep 0.05
  done
}

median() { sort -g | awk '{a[NR]=$1} END{if(NR==0){print "nan"}else if(NR%2){print a[(NR+1)/2]}else{print (a[NR/2]+a[NR/2+1])/2}}'; }

paired_ratios() { # paired_ratios ARRAY_A ARRAY_B -> A[i]/B[i], one per line (rounds where both are numbers)
  local -n a=$1 b=$2; local i
  for i in "${!a[@]}"; do awk -v x="${a[$i]}" -v y="${b[$i]:-}" 'BEGIN{ if (x+0 > 0 && y+0 > 0) printf "%.3f\n", x/y }'; done
}

declare -A COLD=()
COLDTXT=""
cold_tests() { # cold_tests SYSTEM ADDR UA
  local sys=$1 addr=$2 ua=$3 url="http://$2/v2/$BIG_REPO/blobs/$BIG_BLOB" i line c0 st fbs=()
  {
    echo "## $sys: $COLD_REPS single cold GETs (cache wiped and mirror restarted before each)"
  } >>"$COLDTXT"
  local dfbs=() dline
  for i in $(seq 1 "$COLD_REPS"); do
    restart_wiped "$sys"; sleep 0.3
    # a direct GET from central right before, so that both see the same machine load
    run_child "$RUN/load.out" timeout 120 "$EDGELOAD" -once $WARM -c 1 -d 60s -expect-bytes "$BIG_SIZE" -url "http://$CENTRAL/v2/$BIG_REPO/blobs/$BIG_BLOB" || true
    dline=$(grep '^ONCE' "$RUN/load.out" || echo "ONCE n=0 ok=0")
    c0=$(clog_mark)
    run_child "$RUN/load.out" timeout 200 "$EDGELOAD" -once $WARM -c 1 -d "$COLD_TIMEOUT" -expect-bytes "$BIG_SIZE" -url "$url" || true
    line=$(grep '^ONCE' "$RUN/load.out" || echo "ONCE n=0 ok=0")
    sleep 1
    st=$(upstream_blob_stats "$c0" "$ua" "$BIG_BLOB")
    echo "  #$i $line | upstream GET/HEAD/bytes: $st | direct just before: fb_ms=$(kv fb_min_ms "$dline")" >>"$COLDTXT"
    fbs+=("$(kv fb_min_ms "$line")"); dfbs+=("$(kv fb_min_ms "$dline")")
  done
  COLD[$sys.single_fb]=$(printf '%s\n' "${fbs[@]}" | median)
  COLD[$sys.single_direct_fb]=$(printf '%s\n' "${dfbs[@]}" | median)
  COLD[$sys.single_paired]=$(paired_ratios fbs dfbs | median)

  # The fan-in, FANIN_REPS times: wiped + restarted, a direct GET from central right before (same
  # machine load), then N clients at once. Times are medians over the rounds; counts must hold in
  # every round (upstream GETs: the largest, clients served: the smallest); RSS: the highest.
  local r pid rssf rss0 hwm once kinds peak=0 ffbs=() fdfbs=() walls=() gets=0 heads=0 bytes=0 all=0 ok=$N
  for r in $(seq 1 "$FANIN_REPS"); do
    echo "## $sys: $N concurrent GETs of the uncached blob, round $r (wiped + restarted first)" >>"$COLDTXT"
    restart_wiped "$sys"; sleep 0.5
    run_child "$RUN/load.out" timeout 120 "$EDGELOAD" -once $WARM -c 1 -d 60s -expect-bytes "$BIG_SIZE" -url "http://$CENTRAL/v2/$BIG_REPO/blobs/$BIG_BLOB" || true
    dline=$(grep '^ONCE' "$RUN/load.out" || echo "ONCE n=0 ok=0")
    pid=${PIDS[$sys]} rssf="$RUN/rss.$sys"
    rss0=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status")
    rss_sampler "$pid" "$rssf" & SAMPLER_PID=$!
    c0=$(clog_mark)
    run_child "$OUT/coldmiss-$sys.txt" timeout 400 "$EDGELOAD" -once $WARM -c "$N" -d "$COLD_TIMEOUT" -expect-bytes "$BIG_SIZE" -url "$url" ||
      log "edgeload exited non-zero for $sys fan-in (see $OUT/coldmiss-$sys.txt)"
    # let a fill that outlives its clients (the reference proxy stores in the background) finish
    local prev=-1 cur
    for _ in $(seq 1 60); do cur=$(clog_mark); [[ $cur == "$prev" ]] && break; prev=$cur; sleep 1; done
    kill "$SAMPLER_PID"; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=""
    hwm=$(awk '/^VmHWM/{print $2}' "/proc/$pid/status")
    once=$(grep '^ONCE' "$OUT/coldmiss-$sys.txt" || echo "ONCE n=0 ok=0")
    local g h b; read -r g h b <<<"$(upstream_blob_stats "$c0" "$ua" "$BIG_BLOB")"
    ((g > gets)) && gets=$g; ((h > heads)) && heads=$h; ((b > bytes)) && bytes=$b
    cur=$(upstream_reqs "$c0" "$ua"); ((cur > all)) && all=$cur
    cur=$(kv ok "$once"); ((cur < ok)) && ok=$cur
    ffbs+=("$(kv fb_min_ms "$once")"); fdfbs+=("$(kv fb_min_ms "$dline")"); walls+=("$(kv wall_s "$once")")
    cur=$(cat "$rssf"); ((hwm > cur)) && cur=$hwm; ((cur > peak)) && peak=$cur
    kinds=$(upstream_summary "$c0" "$ua")
    {
      echo "  $once"
      echo "  direct GET just before: fb_ms=$(kv fb_min_ms "$dline")"
      echo "  upstream blob GETs=$g HEADs=$h bytes=$b ($(awk -v b="$b" -v s="$BIG_SIZE" 'BEGIN{printf "%.2f", b/s}') x blob size); upstream requests by kind: $kinds"
      echo "  RSS KiB: before=$rss0 sampled peak=$(cat "$rssf") VmHWM=$hwm"
    } >>"$COLDTXT"
  done
  COLD[$sys.gets]=$gets COLD[$sys.heads]=$heads COLD[$sys.bytes]=$bytes COLD[$sys.all]=$all COLD[$sys.ok]=$ok
  COLD[$sys.fanin_fb]=$(printf '%s\n' "${ffbs[@]}" | median)
  COLD[$sys.fanin_direct_fb]=$(printf '%s\n' "${fdfbs[@]}" | median)
  COLD[$sys.fanin_paired]=$(paired_ratios ffbs fdfbs | median)
  COLD[$sys.wall]=$(printf '%s\n' "${walls[@]}" | median)
  COLD[$sys.rss_peak_mib]=$(awk -v k="$peak" 'BEGIN{printf "%.1f", k/1024}')
  # served from cache afterwards: right bytes, no new upstream GET of the blob
  c0=$(clog_mark)
  local sum; sum=$(curl -fsS --max-time 120 "$url" | sha256sum | cut -d' ' -f1)
  local after; after=$(upstream_blob_stats "$c0" "$ua" "$BIG_BLOB")
  COLD[$sys.verify]=$([[ "sha256:$sum" == "$BIG_BLOB" ]] && echo ok || echo "MISMATCH")
  echo "  afterwards from cache: sha256 ${COLD[$sys.verify]}, upstream blob GET/HEAD/bytes during that GET: $after" >>"$COLDTXT"
  if [[ -n $WARM ]]; then
    # once more with clients that dial inside the timed window (the method before 2026-11-24)
    echo "## $sys: $N concurrent GETs of the uncached blob, clients dialling in the timed window" >>"$COLDTXT"
    restart_wiped "$sys"; sleep 0.5; prev=-1
    run_child "$OUT/coldmiss-dial-$sys.txt" timeout 400 "$EDGELOAD" -once -c "$N" -d "$COLD_TIMEOUT" -expect-bytes "$BIG_SIZE" -url "$url" || true
    once=$(grep '^ONCE' "$OUT/coldmiss-dial-$sys.txt" || echo "ONCE n=0 ok=0")
    COLD[$sys.dial_fb]=$(kv fb_min_ms "$once")
    echo "  $once" >>"$COLDTXT"
    for _ in $(seq 1 60); do cur=$(clog_mark); [[ $cur == "$prev" ]] && break; prev=$cur; sleep 1; done
  fi
}
# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a=="" || b=="" || b+0==0) print "nan"; else printf "%.3f", a/b }'; }
verdict() { # verdict VALUE OP TARGET
  awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN{
    if (v=="nan" || v=="") { print "n/a"; exit }
    ok = (op==">=") ? (v+0 >= t+0) : (op=="<=") ? (v+0 <= t+0) : (op=="<") ? (v+0 < t+0) : (v+0 == t+0)
    print ok ? "PASS" : "FAIL" }'
}

write_results() {
  local R="$OUT/results.tsv" M="$OUT/results.md"
  local s_n s_p s_e b1_n b1_p b1_e b4_n b4_p b4_e m_c m_p m_e mu_p mu_e
  s_n=$(tp_get small nginx rps); s_p=$(tp_get small proxy rps); s_e=$(tp_get small edge rps)
  b1_n=$(tp_get big-c1 nginx MBps); b1_p=$(tp_get big-c1 proxy MBps); b1_e=$(tp_get big-c1 edge MBps)
  b4_n=$(tp_get big-c$CBIG nginx MBps); b4_p=$(tp_get big-c$CBIG proxy MBps); b4_e=$(tp_get big-c$CBIG edge MBps)
  m_c=$(tp_get mantag central rps); m_p=$(tp_get mantag proxy rps); m_e=$(tp_get mantag edge rps)
  mu_p=$(tp_get mantag proxy up); mu_e=$(tp_get mantag edge up)
  local c_fb=${COLD[central.fb]:-}
  {
    printf 'metric\tunit\tnginx\tcentral\tproxy\tedge\tratio\tratio_of\ttarget\tverdict\n'
    row() { # metric unit nginx central proxy edge ratio ratio_of op target
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "${3:--}" "${4:--}" "${5:--}" "${6:--}" "$7" "$8" \
        "$([[ -n ${9} ]] && echo "${9} ${10}" || echo "-")" "$([[ -n ${9} ]] && verdict "$7" "$9" "${10}" || echo info)"
    }
    local r
    r=$(ratio "$s_e" "$s_n");   row "small blob GET (4 KiB, c=$CSMALL)" "req/s" "$s_n" "" "$s_p" "$s_e" "$r" "edge/nginx" ">=" 0.5
    r=$(ratio "$b1_e" "$b1_n"); row "large blob GET (${BIG_MB} MiB, c=1)" "MB/s" "$b1_n" "" "$b1_p" "$b1_e" "$r" "edge/nginx" ">=" 0.9
    r=$(ratio "$b4_e" "$b4_n"); row "large blob GET (${BIG_MB} MiB, c=$CBIG)" "MB/s" "$b4_n" "" "$b4_p" "$b4_e" "$r" "edge/nginx" ">=" 0.9
    r=$(ratio "$m_e" "$m_p");   row "manifest GET by tag (c=$CSMALL)" "req/s" "" "$m_c" "$m_p" "$m_e" "$r" "edge/proxy" ">=" 10
    row "upstream requests during manifest-by-tag test" "count" "" "" "$mu_p" "$mu_e" "$mu_e" "edge" "==" 0
    row "cold miss, $N concurrent GETs: upstream blob GETs (most of $FANIN_REPS rounds)" "count" "${COLD[ngxcache.gets]:-}" "" "${COLD[proxy.gets]:-}" "${COLD[edge.gets]:-}" "${COLD[edge.gets]:-nan}" "edge" "==" 1
    r=$(ratio "${COLD[edge.bytes]:-}" "$BIG_SIZE")
    row "cold miss, $N concurrent GETs: bytes central sent" "MB" "" "" \
      "$(awk -v b="${COLD[proxy.bytes]:-0}" 'BEGIN{printf "%.1f", b/1e6}')" "$(awk -v b="${COLD[edge.bytes]:-0}" 'BEGIN{printf "%.1f", b/1e6}')" "$r" "edge bytes/blob size" "" ""
    r=$(ratio "${COLD[edge.fanin_fb]:-}" "${COLD[edge.fanin_direct_fb]:-}")
    row "cold miss, $N concurrent ($CLIENT_CONN connections): first body byte, first client (median of $FANIN_REPS, each after a direct GET)" "ms" "${COLD[ngxcache.fanin_fb]:-}" "${COLD[edge.fanin_direct_fb]:-}" "${COLD[proxy.fanin_fb]:-}" "${COLD[edge.fanin_fb]:-}" "$r" "edge/central direct (interleaved)" "<=" 1.5
    r=$(ratio "${COLD[ngxcache.fanin_fb]:-}" "${COLD[ngxcache.fanin_direct_fb]:-}")
    row "cold miss, $N concurrent: first body byte, first client, of the nginx caching proxy (reference for the hop)" "ms" "${COLD[ngxcache.fanin_fb]:-}" "${COLD[ngxcache.fanin_direct_fb]:-}" "" "" "$r" "nginx cache/central direct (interleaved)" "" ""
    row "cold miss, $N concurrent: first body byte, first client, over the direct GET right before it (median of the $FANIN_REPS rounds' ratios; nginx: the nginx caching proxy's)" "ratio" "${COLD[ngxcache.fanin_paired]:-}" "" "${COLD[proxy.fanin_paired]:-}" "${COLD[edge.fanin_paired]:-}" "${COLD[edge.fanin_paired]:-nan}" "edge, paired by round" "" ""
    r=$(ratio "${COLD[edge.fanin_fb]:-}" "${COLD[ngxcache.fanin_fb]:-}")
    row "cold miss, $N concurrent: first body byte, first client, registry-edge against the nginx caching proxy" "ms" "${COLD[ngxcache.fanin_fb]:-}" "" "" "${COLD[edge.fanin_fb]:-}" "$r" "edge/nginx cache" "" ""
    r=$(ratio "${COLD[edge.fanin_fb]:-}" "${COLD[central.fanin_fb]:-}")
    row "cold miss, $N concurrent ($CLIENT_CONN connections): first body byte, first client, vs $N concurrent direct GETs" "ms" "" "${COLD[central.fanin_fb]:-}" "${COLD[proxy.fanin_fb]:-}" "${COLD[edge.fanin_fb]:-}" "$r" "edge/central $N direct" "" ""
    if [[ -n $WARM ]]; then
      r=$(ratio "${COLD[edge.dial_fb]:-}" "$c_fb")
      row "cold miss, $N concurrent, clients dialling in the timed window: first body byte, first client" "ms" "" "$c_fb" "${COLD[proxy.dial_fb]:-}" "${COLD[edge.dial_fb]:-}" "$r" "edge/central direct (dialling)" "" ""
    fi
    r=$(ratio "${COLD[edge.single_fb]:-}" "${COLD[edge.single_direct_fb]:-}")
    row "cold miss, single GET: first body byte (median of $COLD_REPS, each after a direct GET)" "ms" "${COLD[ngxcache.single_fb]:-}" "${COLD[edge.single_direct_fb]:-}" "${COLD[proxy.single_fb]:-}" "${COLD[edge.single_fb]:-}" "$r" "edge/central direct (interleaved)" "<=" 1.5
    row "cold miss, single GET: first body byte over the direct GET right before it (median of the $COLD_REPS rounds' ratios; nginx: the nginx caching proxy's)" "ratio" "${COLD[ngxcache.single_paired]:-}" "" "${COLD[proxy.single_paired]:-}" "${COLD[edge.single_paired]:-}" "${COLD[edge.single_paired]:-nan}" "edge, paired by round" "" ""
    r=$(ratio "${COLD[ngxcache.single_fb]:-}" "${COLD[ngxcache.single_direct_fb]:-}")
    row "cold miss, single GET: first body byte of the nginx caching proxy (reference for the hop)" "ms" "${COLD[ngxcache.single_fb]:-}" "${COLD[ngxcache.single_direct_fb]:-}" "" "" "$r" "nginx cache/central direct (interleaved)" "" ""
    row "cold miss, $N concurrent: clients complete and correct (fewest of $FANIN_REPS rounds)" "count" "${COLD[ngxcache.ok]:-}" "" "${COLD[proxy.ok]:-}" "${COLD[edge.ok]:-}" "${COLD[edge.ok]:-nan}" "edge" "==" "$N"
    row "cold miss, $N concurrent: wall time for all clients (median)" "s" "" "" "${COLD[proxy.wall]:-}" "${COLD[edge.wall]:-}" "$(ratio "${COLD[edge.wall]:-}" "${COLD[proxy.wall]:-}")" "edge/proxy" "" ""
    row "cold miss, $N concurrent: peak RSS of the mirror (highest of $FANIN_REPS rounds)" "MiB" "" "" "${COLD[proxy.rss_peak_mib]:-}" "${COLD[edge.rss_peak_mib]:-}" "${COLD[edge.rss_peak_mib]:-nan}" "edge" "<" 150
  } >"$R"

  {
    echo "# registry-edge benchmark results — $STAMP"
    echo
    echo "Machine: $(nproc) cores, kernel $(uname -r), $(go version | cut -d' ' -f3-), load average at start: $LOAD0."
    echo "Knobs: DUR=$DUR DUR_BIG=$DUR_BIG ROUNDS=$ROUNDS CSMALL=$CSMALL CBIG=$CBIG THREADS=$THREADS N=$N COLD_REPS=$COLD_REPS FANIN_REPS=$FANIN_REPS CLIENT_CONN=$CLIENT_CONN BIG_MB=$BIG_MB EDGE_ACCESS_LOG=$EDGE_ACCESS_LOG."
    echo "Versions: registry-edge ${EDGE_VERSION:-?} (work tree ${EDGE_REV:-?} when built), distribution registry $("$REGISTRY_BIN" --version 2>/dev/null | awk '{print $3}') (reference proxy and central), crane $("$CRANE_BIN" version), $(nginx -v 2>&1 | cut -d' ' -f3), wrk $(wrk --version 2>&1 | head -1 | awk '{print $2}')."
    echo "Big blob: $BIG_SIZE bytes; small blob: $SMALL_SIZE bytes. Load generator and servers share the same $(nproc) cores; GOMAXPROCS unset."
    echo
    echo "## Targets"
    echo
    awk -F'\t' 'NR==1{print "| " $1 " | " $2 " | nginx | central | proxy | edge | ratio | of | target | verdict |"; print "|---|---|---:|---:|---:|---:|---:|---|---|---|"; next}
      {printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10}' "$R"
    echo
    echo "## Throughput tests (wrk, $DUR each, large blobs $DUR_BIG, $ROUNDS rounds; the targets table uses each system's best round)"
    echo
    echo "| round | test | system | conns | req/s | MB/s | p50 ms | p99 ms | non-2xx | sock err | upstream reqs | load1 |"
    echo "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' 'NR>1{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12}' "$TP"
    echo
    echo "## Cold misses"
    echo
    echo '```'
    cat "$COLDTXT"
    echo '```'
    echo
    echo "## Go micro-benchmarks"
    echo
    echo '```'
    grep -E '^(Benchmark|ok|FAIL|pkg)' "$OUT/gobench.txt" 2>/dev/null || echo "(not run)"
    echo '```'
  } >"$M"
  # latest.* are the last complete run's
  if [[ $TESTS == throughput,cold,gobench ]]; then cp "$R" "$HERE/results/latest.tsv"; cp "$M" "$HERE/results/latest.md"; fi
}

# ---------------------------------------------------------------------------------------------
main() {
  case "${1:-all}" in
    clean) rm -rf "$RUN"; log "removed $RUN"; exit 0;;
    tools) mkdir -p "$LOGS"; setup_tools; log "tools ready: $REGISTRY_BIN $CRANE_BIN $EDGELOAD ${EDGE_BIN:-}"; exit 0;;
    all) ;;
    -h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0;;
    *) die "unknown command $1 (all|tools|clean)";;
  esac
  ((${BIG_MB} >= 100)) || die "BIG_MB must be >= 100"
  trap cleanup EXIT; trap 'exit 130' INT TERM
  mkdir -p "$LOGS"
  setup_tools
  for a in "$CENTRAL" "$PROXY" "$EDGE" "$NGINX" "$NGXCACHE"; do port_free "$a" || die "port ${a##*:} is in use (set PORT_BASE)"; done
  wait_idle
  STAMP=$(date -u +%Y%m%dT%H%M%SZ); OUT="$HERE/results/$STAMP"; mkdir -p "$OUT"
  LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
  rm -rf "$DATA"; mkdir -p "$DATA"; : >"$CLOG"
  for f in proxy edge nginx ngxcache seed; do : >"$LOGS/$f.log"; done
  TP="$OUT/throughput.tsv"; COLDTXT="$OUT/coldmiss.txt"; : >"$COLDTXT"
  printf 'round\ttest\tsystem\tconns\trps\tMBps\tp50ms\tp99ms\tnon2xx\tsockerr\tupstream_reqs\tload1\n' >"$TP"

  log "1. starting central on $CENTRAL"; start_central
  seed
  log "starting reference proxy on $PROXY, nginx on $NGINX${EDGE_BIN:+, registry-edge on $EDGE}"
  start_proxy; start_nginx
  local systems=(proxy) ; [[ -n $EDGE_BIN ]] && { start_edge; systems+=(edge); }
  declare -A ADDR=([proxy]=$PROXY [edge]=$EDGE) UA=([proxy]=$PROXY_UA [edge]=$EDGE_UA)

  if [[ ,$TESTS, == *,throughput,* ]]; then
    log "2. warming the mirrors (full GETs of the blobs and the tag)"
    local s
    for s in "${systems[@]}"; do
      curl -fsS --max-time 120 -o /dev/null "http://${ADDR[$s]}/v2/$BIG_REPO/blobs/$BIG_BLOB"
      curl -fsS --max-time 10 -o /dev/null "http://${ADDR[$s]}/v2/$SMALL_REPO/blobs/$SMALL_BLOB"
      curl -fsS --max-time 10 -o /dev/null -H "$ACC" "http://${ADDR[$s]}/v2/$TAG_REPO/manifests/$TAG"
    done
    sleep 2 # the reference proxy stores a blob in the background after the first GET
    for s in "${systems[@]}"; do # second pass: must now be served from cache
      curl -fsS --max-time 120 -o /dev/null "http://${ADDR[$s]}/v2/$BIG_REPO/blobs/$BIG_BLOB"
      curl -fsS --max-time 10 -o /dev/null "http://${ADDR[$s]}/v2/$SMALL_REPO/blobs/$SMALL_BLOB"
    done
    curl -fsS --max-time 60 -o /dev/null "http://$NGINX/big.bin"

    log "   cached throughput, $DUR per test ($DUR_BIG for large blobs), $ROUNDS rounds"
    for ROUND in $(seq 1 "$ROUNDS"); do
      throughput small nginx "http://$NGINX/small.bin" "$CSMALL" ""
      for s in "${systems[@]}"; do throughput small "$s" "http://${ADDR[$s]}/v2/$SMALL_REPO/blobs/$SMALL_BLOB" "$CSMALL" "${UA[$s]}"; done
      for c in 1 "$CBIG"; do
        D=$DUR_BIG throughput "big-c$c" nginx "http://$NGINX/big.bin" "$c" ""
        for s in "${systems[@]}"; do D=$DUR_BIG throughput "big-c$c" "$s" "http://${ADDR[$s]}/v2/$BIG_REPO/blobs/$BIG_BLOB" "$c" "${UA[$s]}"; done
      done
      for s in "${systems[@]}"; do
        curl -fsS --max-time 10 -o /dev/null -H "$ACC" "http://${ADDR[$s]}/v2/$TAG_REPO/manifests/$TAG" # (re)validated: within the TTL
        throughput mantag "$s" "http://${ADDR[$s]}/v2/$TAG_REPO/manifests/$TAG" "$CSMALL" "${UA[$s]}" "$ACC"
      done
      throughput mantag central "http://$CENTRAL/v2/$TAG_REPO/manifests/$TAG" "$CSMALL" "" "$ACC"
    done
  fi

  if [[ ,$TESTS, == *,cold,* ]]; then
    log "3. cold misses"
    local url="http://$CENTRAL/v2/$BIG_REPO/blobs/$BIG_BLOB" fbs=() line
    curl -fsS --max-time 60 -o /dev/null "$url" # page cache
    {
      echo "# blob $BIG_BLOB, $BIG_SIZE bytes; N=$N"
      echo "## central direct: $DIRECT_REPS single GETs, clients dialling in the timed window (reference for the dialling fan-in; median used)"
    } >>"$COLDTXT"
    for _ in $(seq 1 "$DIRECT_REPS"); do
      run_child "$RUN/load.out" timeout 120 "$EDGELOAD" -once -c 1 -d 60s -expect-bytes "$BIG_SIZE" -url "$url" || true
      line=$(grep '^ONCE' "$RUN/load.out" || echo "ONCE n=0 ok=0")
      echo "  $line" >>"$COLDTXT"; fbs+=("$(kv fb_min_ms "$line")")
    done
    COLD[central.fb]=$(printf '%s\n' "${fbs[@]}" | median)
    # like for like: the same N concurrent clients straight from central (first client's first byte)
    fbs=()
    echo "## central direct: $DIRECT_FANIN_REPS x $N concurrent GETs (like-for-like reference for the fan-in; median of first-client times)" >>"$COLDTXT"
    for _ in $(seq 1 "$DIRECT_FANIN_REPS"); do
      run_child "$RUN/load.out" timeout 400 "$EDGELOAD" -once $WARM -c "$N" -d "$COLD_TIMEOUT" -expect-bytes "$BIG_SIZE" -url "$url" || true
      line=$(grep '^ONCE' "$RUN/load.out" || echo "ONCE n=0 ok=0")
      echo "  $line" >>"$COLDTXT"; fbs+=("$(kv fb_min_ms "$line")")
    done
    COLD[central.fanin_fb]=$(printf '%s\n' "${fbs[@]}" | median)
    for s in "${systems[@]}"; do log "   $s"; cold_tests "$s" "${ADDR[$s]}" "${UA[$s]}"; done
    log "   ngxcache (nginx proxy_cache + proxy_cache_lock, the reference for the hop)"
    cold_tests ngxcache "$NGXCACHE" "$NGXCACHE_UA"; stop_one ngxcache
  fi

  if [[ ,$TESTS, == *,gobench,* ]]; then
    log "4. Go micro-benchmarks next to the code (go test -bench . ./internal/verify ./internal/blobstore ./internal/httpserve)"
    (cd "$ROOT" && timeout 300 go test -run '^$' -bench . -count 1 ./internal/verify ./internal/blobstore ./internal/httpserve) >"$OUT/gobench.txt" 2>&1 ||
      log "   go test -bench failed (see $OUT/gobench.txt)"
  fi

  log "5. results"
  write_results
  cp "$LOGS/build-edge.err" "$OUT/" 2>/dev/null || true
  if command -v column >/dev/null; then column -t -s$'\t' "$OUT/results.tsv" >&2; else cat "$OUT/results.tsv" >&2; fi
  log "written $OUT/results.tsv and $OUT/results.md"
}

main "$@"
