#!/usr/bin/env bash
# benchmarks/replicas.sh — issue #8 ("Regional tier at scale"): registry-edge replicas sharing one S3
# bucket behind the documented nginx load balancer (docs/deploy/nginx-replicas.conf), in ONE run, on
# loopback: cold-miss fan-in from many sites, cache-hit throughput with 1, 2 and 3 replicas, and the
# delta precomputation throughput of a regional replica.
#
# Usage:  benchmarks/replicas.sh           build/install what is missing, run everything (~8-10 min)
#         benchmarks/replicas.sh tools     only install/build the tools, then exit
#         benchmarks/replicas.sh clean     delete benchmarks/run-replicas/ (state); results/ is kept
#
# Topology (all on 127.0.0.1):
#   central = `registry` v3.1.2 (filesystem), seeded with crane; s3 = versitygw v1.8.0 (posix backend,
#   one bucket); replicas r1 r2 r3 = registry-edge, each with its own storage.root, blobs in the bucket
#   under one rootDirectory, storage.blobs.replica.id rN (evict: false on r2, r3), --upstream central;
#   lb-hash-R (R = 1, 2, 3) = nginx running docs/deploy/nginx-replicas.conf as shipped, with only its
#   `server` lines (r1..rR), its `listen` line and its access_log path rewritten; lb-rr-3 = the same
#   file with the `hash ... consistent;` line removed (nginx's default round robin: a plain load
#   balancer) in front of r1..r3; static = nginx serving the same blob bytes as files (sendfile).
#
# What it measures (see benchmarks/README.md, "Regional tier at scale"):
#   1. fan-in: K cold layers (LAYER_MB MiB random each, one image per layer); for each, S clients
#      ("sites"), all K x S GETs released together (benchmarks/tools/fanin: each client checks the
#      sha256 of what it got). Through lb-hash-3, then (bucket and roots wiped, replicas restarted)
#      through lb-rr-3. Per blob: GETs central answered to registry-edge (its access log, by user
#      agent) and bytes it sent, vs the blob's size; the replicas nginx sent each blob to.
#   2. cached throughput (wrk, ROUNDS rounds, best round kept): one 4 KiB blob and SMALL_N distinct
#      4 KiB blobs (CSMALL connections), one BIG_MB MiB blob and the K layers (CBIG connections), on
#      static, r1 directly, lb-hash-1/2/3 and lb-rr-3; central's requests during each test (must be 0);
#      CPU seconds per process group during each test (cpu.tsv).
#   3. delta precomputation: a region (r1's config plus deltas {serve, precompute, workers: W}) and a
#      site registry-edge (--upstream the region); v1 of every pair served to the site, one small
#      update pulled by the site so that the region has been asked for a delta once (precompute
#      starts only then), then v2's manifest of every pair GET from the region at once: from the
#      region's "computed a delta for a lower tier" lines (size, tar_size, delta_size, duration), deltas per
#      second and MB/s of layers (compressed, as stored) over the wall time, the codec's MB/s of tar content, for each W in
#      DELTA_WORKERS; then the site pulls every v2 and rebuilds it from the precomputed deltas.
#   Results in benchmarks/results/<UTC stamp>-replicas/ (results.md, fanin.txt, throughput.tsv,
#   cpu.tsv, deltas.tsv, seed.env, logs/).
#
# Env knobs (defaults):
#   PARTS="fanin throughput delta"   which measurements to run
#   K=8  LAYER_MB=4  S=16  FANIN_TIMEOUT=180s      fan-in: layers, their size, clients per layer
#   SMALL_N=32  BIG_MB=64                           throughput: distinct 4 KiB blobs, big blob (MiB)
#   DUR=6s  DUR_BIG=4s  CSMALL=16  CBIG=4  THREADS=2  ROUNDS=2    wrk (best round kept per figure)
#   NGINX_WORKERS=auto                              worker_processes of every nginx
#   DELTA_DIR=        dir of <pair>/{old,new}.tar[.gz]; default /tmp/dcorpus/corpus/pairs, else
#                     ~/.cache/registry-edge/delta/own, else DELTA_SYNTH synthetic pairs (random files,
#                     a few edited) generated here
#   DELTA_PAIRS=      pair names (default: all in DELTA_DIR)   DELTA_SYNTH=4
#   DELTA_WORKERS="1 2"   deltas.workers values    DELTA_TIMEOUT=300 (s, bound of one precompute run)
#   PORT_BASE=17600   central +0, s3 +1, r1..r3 +11..+13, lb-hash-1..3 +21..+23, lb-rr-3 +30,
#                     static +40, region +50, site +51
#   EDGE_BIN=         use this registry-edge binary instead of building ./cmd/registry-edge
#   REGISTRY_EDGE_TOOLS=$HOME/.cache/registry-edge/tools   go-installed registry/crane/versitygw
#   WAIT_IDLE=0       seconds to wait, before starting, for the 1-minute load average to drop below
#                     IDLE_LOAD=0.5 (0 = do not wait)
#   KEEP=0            1 = keep benchmarks/run-replicas/data afterwards
# Machine note: 2 cores shared by wrk/fanin, nginx, up to 3 replicas, versitygw and central: absolute
# figures are CPU-bound; only ratios measured in the same run are meant to be compared.
# Everything the script starts is stopped on exit (trap), by PID; it listens on 127.0.0.1 only.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
RUN="$HERE/run-replicas"
BIN="$RUN/bin"; DATA="$RUN/data"; LOGS="$RUN/logs"
TOOLS="${REGISTRY_EDGE_TOOLS:-$HOME/.cache/registry-edge/tools}"
REGISTRY_VERSION=v3.1.2; CRANE_VERSION=v0.22.1; VERSITYGW_VERSION=v1.8.0

PARTS="${PARTS:-fanin throughput delta}"
K="${K:-8}"; LAYER_MB="${LAYER_MB:-4}"; S="${S:-16}"; FANIN_TIMEOUT="${FANIN_TIMEOUT:-180s}"
SMALL_N="${SMALL_N:-32}"; BIG_MB="${BIG_MB:-64}"
DUR="${DUR:-6s}"; DUR_BIG="${DUR_BIG:-4s}"; CSMALL="${CSMALL:-16}"; CBIG="${CBIG:-4}"; THREADS="${THREADS:-2}"; ROUNDS="${ROUNDS:-2}"
NGINX_WORKERS="${NGINX_WORKERS:-auto}"
DELTA_DIR="${DELTA_DIR:-}"; DELTA_PAIRS="${DELTA_PAIRS:-}"; DELTA_SYNTH="${DELTA_SYNTH:-4}"
DELTA_WORKERS="${DELTA_WORKERS:-1 2}"; DELTA_TIMEOUT="${DELTA_TIMEOUT:-300}"
PORT_BASE="${PORT_BASE:-17600}"; EDGE_BIN="${EDGE_BIN:-}"
WAIT_IDLE="${WAIT_IDLE:-0}"; IDLE_LOAD="${IDLE_LOAD:-0.5}"; KEEP="${KEEP:-0}"

CENTRAL="127.0.0.1:$PORT_BASE"; S3="127.0.0.1:$((PORT_BASE + 1))"
declare -A ADDR=([r1]="127.0.0.1:$((PORT_BASE + 11))" [r2]="127.0.0.1:$((PORT_BASE + 12))" [r3]="127.0.0.1:$((PORT_BASE + 13))"
                 [lb-hash-1]="127.0.0.1:$((PORT_BASE + 21))" [lb-hash-2]="127.0.0.1:$((PORT_BASE + 22))"
                 [lb-hash-3]="127.0.0.1:$((PORT_BASE + 23))" [lb-rr-3]="127.0.0.1:$((PORT_BASE + 30))"
                 [static]="127.0.0.1:$((PORT_BASE + 40))" [region]="127.0.0.1:$((PORT_BASE + 50))" [site]="127.0.0.1:$((PORT_BASE + 51))")
S3_BUCKET=registry-edge-bench; S3_REGION=us-east-1; S3_ROOTDIR=/region
S3_AK=replicasbench; S3_SK=replicas-bench-secret # a throw-away local gateway on loopback
NGINX_DOC="$ROOT/docs/deploy/nginx-replicas.conf"
EDGE_UA="registry-edge/"
ACC='Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json'

# shellcheck source=benchmarks/lib.sh
source "$HERE/lib.sh"

# ---------------------------------------------------------------------------------------------
# tools
# ---------------------------------------------------------------------------------------------
REGISTRY_BIN=""; CRANE_BIN=""; VGW_BIN=""; FANIN="$BIN/fanin"; EDGE_REV="?"; EDGE_VERSION="?"

setup_tools() {
  mkdir -p "$BIN" "$LOGS"
  command -v go >/dev/null || die "go is required"
  need_apt nginx nginx-light; need_apt wrk wrk; need_apt jq jq; need_apt curl curl; need_apt perl perl; need_apt ss iproute2
  REGISTRY_BIN=$(go_tool registry "$REGISTRY_VERSION" github.com/distribution/distribution/v3/cmd/registry)
  CRANE_BIN=$(go_tool crane "$CRANE_VERSION" github.com/google/go-containerregistry/cmd/crane)
  VGW_BIN=$(go_tool versitygw "$VERSITYGW_VERSION" github.com/versity/versitygw/cmd/versitygw)
  build_bench_tool fanin "$FANIN"
  edge_binary
}

# ---------------------------------------------------------------------------------------------
# processes: every server is a direct child, recorded by name -> PID, stopped by PID on exit
# ---------------------------------------------------------------------------------------------
declare -A PIDS=()
CHILD=""


cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -n $CHILD ]] && { kill "$CHILD" 2>/dev/null || true; wait "$CHILD" 2>/dev/null || true; }
  local name
  for name in "${!PIDS[@]}"; do stop_one "$name"; done
  if [[ $KEEP != 1 && -d $DATA ]]; then rm -rf "$DATA"; fi
  exit "$rc"
}

wait_http() { # wait_http URL NAME: up to 10 s for a 2xx
  for _ in $(seq 1 100); do curl -fsS --max-time 1 -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  tail -20 "$LOGS/$2.log" >&2 || true
  die "$2 did not come up at $1 (see $LOGS/$2.log)"
}

s3_curl() { # s3_curl ARGS... : a SigV4-signed request to the gateway
  curl -fsS --max-time 10 --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_AK:$S3_SK" \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@"
}

start_s3() { # versitygw, posix backend over $DATA/s3; the bucket is a directory that exists before it starts
  mkdir -p "$DATA/s3/$S3_BUCKET" "$DATA/s3home"
  # a clean environment, as internal/testutil/s3test does: nothing configures the gateway behind our back
  start_bg s3 env -i HOME="$DATA/s3home" PATH="$PATH" "$VGW_BIN" --port "$S3" --access "$S3_AK" --secret "$S3_SK" \
    --region "$S3_REGION" --quiet posix "$DATA/s3"
  local i
  for i in $(seq 1 100); do curl -s --max-time 1 -o /dev/null "http://$S3/" && break; sleep 0.1; done
  ((i < 100)) || die "versitygw did not come up on $S3 (see $LOGS/s3.log)"
  s3_curl -o /dev/null "http://$S3/$S3_BUCKET?list-type=2&max-keys=1" || die "bucket $S3_BUCKET is not listable on $S3"
}

s3_objects() { # s3_objects PREFIX -> number of objects under PREFIX (first 1000)
  s3_curl "http://$S3/$S3_BUCKET?list-type=2&prefix=${1//\//%2F}" | grep -o '<Key>' | wc -l
}

write_replica_conf() { # write_replica_conf FILE ID LISTEN ROOT [EXTRA_YAML]
  {
    echo "# written by benchmarks/replicas.sh: a replica as docs/deploy/replicas.md configures one"
    echo "listen: $3"
    echo "storage:"
    echo "  root: $4"
    echo "  blobs:"
    echo "    driver: s3"
    echo "    s3:"
    echo "      bucket: $S3_BUCKET"
    echo "      region: $S3_REGION"
    echo "      regionEndpoint: \"http://$S3\""
    echo "      forcePathStyle: true"
    echo "      accessKey: $S3_AK"
    echo "      secretKey: $S3_SK"
    echo "      rootDirectory: $S3_ROOTDIR"
    echo "    replica:"
    echo "      id: $2"
    if [[ $2 != r1 ]]; then echo "      evict: false"; fi
    if [[ -n ${5:-} ]]; then printf '%s\n' "$5"; fi
  } >"$1"
  "$EDGE_BIN" check-config "$1" >/dev/null 2>"$LOGS/$2-config.err" ||
    { cat "$LOGS/$2-config.err" >&2; die "registry-edge rejects $1"; }
}

start_replica() { # start_replica NAME ID [EXTRA_YAML]   (NAME: r1..r3 or region; listens on ADDR[NAME])
  mkdir -p "$DATA/$1"
  write_replica_conf "$RUN/$1.yaml" "$2" "${ADDR[$1]}" "$DATA/$1" "${3:-}"
  : >"$LOGS/$1.log"
  start_bg "$1" "$EDGE_BIN" serve --config "$RUN/$1.yaml" --upstream "http://$CENTRAL"
  wait_http "http://${ADDR[$1]}/v2/" "$1"
}

# nginx_conf MODE LISTEN ACCESS_LOG REPLICA_ADDR... : docs/deploy/nginx-replicas.conf with only its
# server lines, listen line and access_log path replaced (as internal/e2e/replicas_test.go does);
# MODE rr also removes the `hash ... consistent;` line (nginx's default: round robin). Fails if the
# file no longer has the shape docs/deploy/replicas.md tells operators to edit.
nginx_conf() {
  perl -e '
    local $/; my $c = <STDIN>;
    my ($mode, $listen, $log, @reps) = @ARGV;
    my @b = ($c =~ /(upstream registry_edge \{.*?\n\})/sg);
    @b == 1 or die "want 1 upstream registry_edge block, found " . scalar(@b) . "\n";
    my $up = $b[0];
    my @s = ($up =~ /^(\s*server\s+)(\S+)([^\n]*;[^\n]*)$/m) or die "no server line in the upstream block\n";
    my $lines = join("\n", map { $s[0] . $_ . $s[2] } @reps);
    my $first = 1;
    (my $new = $up) =~ s/^\s*server\s+\S+[^\n]*;[^\n]*$/$first ? do { $first = 0; $lines } : ""/mge;
    if ($mode eq "rr") {
      ($new =~ s/^\s*hash\s[^;]*\sconsistent;[^\n]*\n//m) == 1 or die "no `hash ... consistent;` line\n";
    }
    $c =~ s/\Q$up\E/$new/;
    my $n = () = $c =~ /^\s*listen\s+[^;]+;/mg;
    $n == 1 or die "want 1 listen line, found $n\n";
    $c =~ s/^(\s*listen\s+)[^;]+;/${1}$listen;/m;
    $n = () = $c =~ /^\s*access_log\s+\S+\s[^;]*;/mg;
    $n == 1 or die "want 1 access_log line, found $n\n";
    $c =~ s/^(\s*access_log\s+)(\S+)(\s[^;]*;)/${1}$log${3}/m;
    print $c;
  ' "$@" <"$NGINX_DOC"
}

nginx_main() { # nginx_main DIR NAME INCLUDE|"" [STATIC_ROOT]: a minimal events{} http{} wrapper
  cat <<CONF
# written by benchmarks/replicas.sh
worker_processes $NGINX_WORKERS;
pid $1/nginx.pid;
error_log $LOGS/$2-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $1/client_body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
CONF
  if [[ -n $3 ]]; then
    echo "    include $3;"
  else
    echo "    sendfile on; tcp_nopush on; keepalive_requests 100000; default_type application/octet-stream;"
    echo "    server { listen ${ADDR[$2]}; root $4; }"
  fi
  echo "}"
}

start_nginx() { # start_nginx NAME (static | lb-hash-R | lb-rr-3)
  local name=$1 dir="$RUN/nginx/$1" reps=() mode inc=""
  rm -rf "$dir"; mkdir -p "$dir"
  if [[ $name != static ]]; then
    mode=${name#lb-}; mode=${mode%-*}
    local r; for r in $(seq 1 "${name##*-}"); do reps+=("${ADDR[r$r]}"); done
    nginx_conf "$mode" "${ADDR[$name]}" "$LOGS/$name-access.log" "${reps[@]}" >"$dir/registry-edge.conf" ||
      die "cannot rewrite $NGINX_DOC"
    inc="$dir/registry-edge.conf"
    : >"$LOGS/$name-access.log"
  fi
  nginx_main "$dir" "$name" "$inc" "$DATA/static" >"$dir/nginx.conf"
  nginx -t -q -p "$dir/" -e "$LOGS/$name-error.log" -c "$dir/nginx.conf" 2>>"$LOGS/$name.log" || { cat "$LOGS/$name.log" >&2; die "nginx -t failed for $name"; }
  start_bg "$name" nginx -p "$dir/" -e "$LOGS/$name-error.log" -c "$dir/nginx.conf" -g 'daemon off;'
  if [[ $name == static ]]; then wait_http "http://${ADDR[$name]}/$SMALL_HEX1" "$name"
  else for _ in $(seq 1 100); do curl -s --max-time 1 -o /dev/null "http://${ADDR[$name]}/v2/" && break; sleep 0.1; done; fi
}

wipe_tier() { # stop the replicas, load balancers and gateway; delete the bucket and every storage.root
  local n
  for n in lb-hash-1 lb-hash-2 lb-hash-3 lb-rr-3 r1 r2 r3 region site s3; do stop_one "$n"; done
  rm -rf "${DATA:?}/s3" "${DATA:?}/s3home" "${DATA:?}"/r[123] "${DATA:?}/region" "${DATA:?}/site"
  start_s3
}

# ---------------------------------------------------------------------------------------------
# seeding: new random content (new digests) per run
# ---------------------------------------------------------------------------------------------
cr() { timeout 300 "$CRANE_BIN" --insecure "$@" 2>>"$LOGS/seed.log"; }
layer_digests() { cr manifest "$CENTRAL/$1" | jq -r '.layers[].digest'; }

declare -a FAN_REPOS=() FAN_BLOBS=() SMALL_BLOBS=() PAIRS=()
declare -A PAIR_V1=() PAIR_V2=()
declare -A BLOB_SIZE=()
BIG_BLOB=""; BIG_SIZE=0; LAYER_SIZE=0; FAN_TOTAL=0; SMALL_HEX1=""

seed() {
  W="$RUN/seedwork"; rm -rf "$W"; mkdir -p "$W" "$DATA/static"
  log "seeding central: $K x ${LAYER_MB} MiB layers, $SMALL_N x 4 KiB layers, a ${BIG_MB} MiB layer"
  local i d f
  for i in $(seq 1 "$K"); do
    mklayer "l$i" "${LAYER_MB}M"
    cr append -b "" -f "$W/l$i.tar.gz" -t "$CENTRAL/fanin/img$i:v1" >/dev/null
    d=$(layer_digests "fanin/img$i:v1")
    [[ "sha256:$(sha256sum <"$W/l$i.tar.gz" | cut -d' ' -f1)" == "$d" ]] || die "layer $i is not $d"
    FAN_REPOS+=("fanin/img$i"); FAN_BLOBS+=("$d"); mv "$W/l$i.tar.gz" "$DATA/static/${d#sha256:}"
  done
  LAYER_SIZE=$(stat -c %s "$DATA/static/${FAN_BLOBS[0]#sha256:}") # gzip of random bytes: sizes differ by a few bytes
  for d in "${FAN_BLOBS[@]}"; do FAN_TOTAL=$((FAN_TOTAL + $(stat -c %s "$DATA/static/${d#sha256:}"))); done
  local fs=()
  for i in $(seq 1 "$SMALL_N"); do mklayer "s$i" 4000; fs+=(-f "$W/s$i.tar.gz"); done
  cr append -b "" "${fs[@]}" -t "$CENTRAL/edge/small4k:v1" >/dev/null
  mapfile -t SMALL_BLOBS < <(layer_digests edge/small4k:v1)
  ((${#SMALL_BLOBS[@]} == SMALL_N)) || die "edge/small4k:v1 has ${#SMALL_BLOBS[@]} layers, want $SMALL_N"
  for i in $(seq 1 "$SMALL_N"); do f="$W/s$i.tar.gz"; mv "$f" "$DATA/static/$(sha256sum <"$f" | cut -d' ' -f1)"; done
  for d in "${SMALL_BLOBS[@]}"; do [[ -f $DATA/static/${d#sha256:} ]] || die "small layer $d has no static copy"; done
  SMALL_HEX1=${SMALL_BLOBS[0]#sha256:}
  mklayer big "${BIG_MB}M"
  cr append -b "" -f "$W/big.tar.gz" -t "$CENTRAL/edge/big:v1" >/dev/null
  BIG_BLOB=$(layer_digests edge/big:v1)
  mv "$W/big.tar.gz" "$DATA/static/${BIG_BLOB#sha256:}"
  [[ "sha256:$(sha256sum <"$DATA/static/${BIG_BLOB#sha256:}" | cut -d' ' -f1)" == "$BIG_BLOB" ]] || die "big layer is not $BIG_BLOB"
  BIG_SIZE=$(stat -c %s "$DATA/static/${BIG_BLOB#sha256:}")
  {
    echo "K=$K FAN_TOTAL=$FAN_TOTAL FAN_BLOBS=${FAN_BLOBS[*]}"
    echo "SMALL_N=$SMALL_N SMALL_BLOB1=${SMALL_BLOBS[0]}"
    echo "BIG_BLOB=$BIG_BLOB BIG_SIZE=$BIG_SIZE"
  } >>"$OUT/seed.env"
  [[ " $PARTS " == *" delta "* ]] && seed_pairs
  rm -rf "$W"
}

synth_pairs() { # synth_pairs DIR: DELTA_SYNTH pairs of 64 random 256 KiB files, 4 of them rewritten in new
  local p f dir
  for p in $(seq 1 "$DELTA_SYNTH"); do
    dir="$1/synth-$p"; mkdir -p "$dir/files"
    for f in $(seq 1 64); do head -c 262144 /dev/urandom >"$dir/files/f$f.bin"; done
    tar -C "$dir/files" -cf "$dir/old.tar" .
    for f in 3 17 33 60; do head -c 262144 /dev/urandom >"$dir/files/f$f.bin"; done
    tar -C "$dir/files" -cf "$dir/new.tar" .; rm -rf "$dir/files"
  done
}

seed_pairs() {
  if [[ -z $DELTA_DIR ]]; then
    if [[ -d /tmp/dcorpus/corpus/pairs ]]; then DELTA_DIR=/tmp/dcorpus/corpus/pairs
    elif [[ -d $HOME/.cache/registry-edge/delta/own ]]; then DELTA_DIR=$HOME/.cache/registry-edge/delta/own
    else DELTA_DIR="$RUN/synth"; rm -rf "$DELTA_DIR"; log "no delta corpus found: generating $DELTA_SYNTH synthetic pairs"; synth_pairs "$DELTA_DIR"
    fi
  fi
  if [[ -n $DELTA_PAIRS ]]; then read -ra PAIRS <<<"$DELTA_PAIRS"
  else mapfile -t PAIRS < <(cd "$DELTA_DIR" && for d in */; do d=${d%/}; [[ -f $d/old.tar || -f $d/old.tar.gz ]] && echo "$d"; done)
  fi
  ((${#PAIRS[@]} > 0)) || die "no pairs in $DELTA_DIR"
  log "seeding central: delta pairs from $DELTA_DIR: ${PAIRS[*]}"
  # the trigger: a 256 KiB random file and the same file with 6 bytes changed (a lower tier's delta request)
  mkdir -p "$W/trig"; head -c 262144 /dev/urandom >"$W/trig/app.bin"; tar -C "$W/trig" -cf "$W/trig-v1.tar" app.bin
  printf 'edited' | dd of="$W/trig/app.bin" bs=1 seek=4096 conv=notrunc status=none; tar -C "$W/trig" -cf "$W/trig-v2.tar" app.bin
  cr append -b "" -f "$W/trig-v1.tar" -t "$CENTRAL/fleet/trigger:v1" >/dev/null
  cr append -b "" -f "$W/trig-v2.tar" -t "$CENTRAL/fleet/trigger:v2" >/dev/null
  local p v f
  for p in "${PAIRS[@]}"; do
    for v in old new; do
      f="$DELTA_DIR/$p/$v.tar"; [[ -f $f ]] || f="$f.gz"; [[ -f $f ]] || die "no $DELTA_DIR/$p/$v.tar[.gz]"
      # .tar: crane compresses it with Go's gzip, as Docker, BuildKit and ko do (delta-site.sh does the same)
      cr append -b "" -f "$f" -t "$CENTRAL/fleet/$p:$([[ $v == old ]] && echo v1 || echo v2)" >/dev/null
    done
    PAIR_V1[$p]=$(layer_digests "fleet/$p:v1" | paste -sd,); PAIR_V2[$p]=$(layer_digests "fleet/$p:v2" | paste -sd,)
    while read -r d size; do BLOB_SIZE[$d]=$size; done < <(cr manifest "$CENTRAL/fleet/$p:v2" | jq -r '.layers[] | "\(.digest) \(.size)"')
    echo "PAIR=$p V1_LAYERS=${PAIR_V1[$p]} V2_LAYERS=${PAIR_V2[$p]}" >>"$OUT/seed.env"
  done
}

# ---------------------------------------------------------------------------------------------
# central's access log
# ---------------------------------------------------------------------------------------------
CLOG="$LOGS/central.log"
clog_mark() { wc -l <"$CLOG"; }

central_reqs() { # central_reqs FROM_LINE -> "METHOD URI BYTES" of every request registry-edge made since
  tail -n +$(($1 + 1)) "$CLOG" | { grep '^{' || true; } | jq -r --arg ua "$EDGE_UA" \
    'select(.msg=="response completed" and ((."http.request.useragent" // "") | startswith($ua)))
     | "\(."http.request.method") \(."http.request.uri") \(."http.response.written" // 0)"'
}

wait_central_quiet() { # until central's log has not grown for 2 s (fills that outlive their clients), max 60 s
  local prev=-1 cur
  for _ in $(seq 1 60); do cur=$(clog_mark); [[ $cur == "$prev" ]] && return 0; prev=$cur; sleep 2; done
}

# ---------------------------------------------------------------------------------------------
# 1. cold-miss fan-in
# ---------------------------------------------------------------------------------------------
FANTXT=""; declare -A FAN=()

fanin_run() { # fanin_run MODE (hash | rr)
  local mode=$1 lb="lb-$1-3" urls=() i c0 out="$OUT/fanin-$1.txt"
  wipe_tier
  start_replica r1 r1; start_replica r2 r2; start_replica r3 r3
  start_nginx "$lb"
  for i in "${!FAN_BLOBS[@]}"; do urls+=("http://${ADDR[$lb]}/v2/${FAN_REPOS[$i]}/blobs/${FAN_BLOBS[$i]}"); done
  log "   $lb: $K cold layers x $S clients, all at once"
  c0=$(clog_mark)
  run_child "$out" timeout 400 "$FANIN" -c "$S" -d "$FANIN_TIMEOUT" "${urls[@]}" ||
    log "   fanin exited non-zero for $lb (see $out)"
  wait_central_quiet
  central_reqs "$c0" >"$RUN/central-$mode.txt"
  local summary; summary=$(grep '^FANIN' "$out" || echo "FANIN n=0 ok=0")
  local gets bytes heads other
  gets=$(awk '$1=="GET" && $2 ~ /\/blobs\//' "$RUN/central-$mode.txt" | wc -l)
  heads=$(awk '$1=="HEAD"' "$RUN/central-$mode.txt" | wc -l)
  bytes=$(awk '$1=="GET" && $2 ~ /\/blobs\// {b+=$3} END{printf "%.0f", b}' "$RUN/central-$mode.txt")
  other=$(awk '!($1=="GET" && $2 ~ /\/blobs\//)' "$RUN/central-$mode.txt" | wc -l)
  FAN[$mode.ok]=$(kv ok "$summary"); FAN[$mode.n]=$(kv n "$summary"); FAN[$mode.wall]=$(kv wall_s "$summary")
  FAN[$mode.fb_p50]=$(kv fb_p50_ms "$summary"); FAN[$mode.total_max]=$(kv total_max_ms "$summary")
  FAN[$mode.gets]=$gets; FAN[$mode.heads]=$heads; FAN[$mode.bytes]=$bytes; FAN[$mode.other]=$other
  local per_min=999 per_max=0 d g r line nrep
  {
    echo "## $lb ($([[ $mode == hash ]] && echo "the documented config: consistent hash of the digest" || echo "hash line removed: round robin")), 3 replicas, bucket and roots wiped first"
    echo "  $summary"
    echo "  central: $gets blob GETs, $heads HEADs, $other other requests from registry-edge; $bytes bytes of blobs sent = $(ratio "$bytes" "$FAN_TOTAL") x the $K layers ($FAN_TOTAL bytes)"
    echo "  per layer: upstream GETs | replicas nginx sent its $S clients to (requests each)"
  } >>"$FANTXT"
  for d in "${FAN_BLOBS[@]}"; do
    g=$(awk -v d="$d" '$1=="GET" && index($2, "/blobs/" d) {n++} END{print n+0}' "$RUN/central-$mode.txt")
    ((g < per_min)) && per_min=$g; ((g > per_max)) && per_max=$g
    r=$(grep -F "/blobs/$d " "$LOGS/$lb-access.log" | grep -o 'upstream="[^"]*"' | sort | uniq -c | awk '{printf "%s%s=%s", (NR>1?" ":""), $2, $1}' | sed "s/upstream=//g; s/\"//g; s/${ADDR[r1]}/r1/g; s/${ADDR[r2]}/r2/g; s/${ADDR[r3]}/r3/g")
    nrep=$(grep -F "/blobs/$d " "$LOGS/$lb-access.log" | grep -o 'upstream="[^"]*"' | sort -u | wc -l)
    line="    ${d:0:19}…  GETs=$g  replicas=$nrep ($r)"
    echo "$line" >>"$FANTXT"
    FAN[$mode.reps]="${FAN[$mode.reps]:-} $nrep"
  done
  FAN[$mode.per_min]=$per_min; FAN[$mode.per_max]=$per_max
  local objs; objs=$(s3_objects "${S3_ROOTDIR#/}/blobs/")
  echo "  bucket afterwards: $objs objects under ${S3_ROOTDIR#/}/blobs/ (want $K)" >>"$FANTXT"
  FAN[$mode.objects]=$objs
}

# ---------------------------------------------------------------------------------------------
# 2. cached throughput
# ---------------------------------------------------------------------------------------------
TP=""; CPU=""; ROUND=1

mk_lua() { # mk_lua FILE PATH... : wrk script cycling over the paths, with report.lua's summary line
  local f=$1; shift
  {
    echo "-- written by benchmarks/replicas.sh: cycles over ${#} path(s), then benchmarks/tools/report.lua"
    echo "local paths = {"
    printf '  "%s",\n' "$@"
    echo "}"
    echo "local i = 0"
    echo 'request = function() i = i % #paths + 1; return wrk.format(nil, paths[i]) end'
    cat "$HERE/tools/report.lua"
  } >"$f"
}

test_paths() { # test_paths TEST SYSTEM -> the request paths
  local t=$1 sys=$2 i
  case $t in
    small1) if [[ $sys == static ]]; then echo "/$SMALL_HEX1"; else echo "/v2/edge/small4k/blobs/${SMALL_BLOBS[0]}"; fi;;
    smallN) for i in "${SMALL_BLOBS[@]}"; do if [[ $sys == static ]]; then echo "/${i#sha256:}"; else echo "/v2/edge/small4k/blobs/$i"; fi; done;;
    big1) if [[ $sys == static ]]; then echo "/${BIG_BLOB#sha256:}"; else echo "/v2/edge/big/blobs/$BIG_BLOB"; fi;;
    layersK) for i in "${!FAN_BLOBS[@]}"; do if [[ $sys == static ]]; then echo "/${FAN_BLOBS[$i]#sha256:}"; else echo "/v2/${FAN_REPOS[$i]}/blobs/${FAN_BLOBS[$i]}"; fi; done;;
  esac
}

cpu_ticks() { # cpu_ticks -> "name ticks" for every server (nginx: master + workers), utime+stime
  local name pid p t
  for name in "${!PIDS[@]}"; do
    pid=${PIDS[$name]}; t=0
    for p in "$pid" $(ps -o pid= --ppid "$pid" 2>/dev/null); do
      t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$name $t"
  done
}

busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; } # user nice system irq softirq

throughput() { # throughput TEST SYSTEM CONNS DURATION
  local t=$1 sys=$2 c=$3 d=$4 th=$THREADS lua="$RUN/wrk-$1-$2.lua" load c0 line paths=()
  ((c < th)) && th=$c
  mapfile -t paths < <(test_paths "$t" "$sys")
  mk_lua "$lua" "${paths[@]}"
  load=$(cut -d' ' -f1 /proc/loadavg)
  c0=$(clog_mark)
  local before busy0 t0 t1
  before=$(cpu_ticks); busy0=$(busy_ticks); t0=$(date +%s.%N)
  run_child "$RUN/load.out" timeout 120 wrk -t"$th" -c"$c" -d"$d" --timeout 30s --latency -H "X-Bench: 1" -s "$lua" "http://${ADDR[$sys]}" ||
    die "wrk failed for $t on $sys"
  t1=$(date +%s.%N)
  line=$(grep '^RESULT' "$RUN/load.out") || die "no wrk result for $t on $sys"
  local up; up=$(central_reqs "$c0" | wc -l)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$ROUND" "$t" "$sys" "$c" \
    "$(kv rps "$line")" "$(kv MBps "$line")" "$(kv p50ms "$line")" "$(kv p99ms "$line")" "$(kv non2xx "$line")" \
    "$(kv sockerr "$line")" "$up" "$load" >>"$TP"
  # CPU (cores used) per server group during the test; the rest of the busy time is wrk and the kernel
  local hz; hz=$(getconf CLK_TCK)
  awk -v r="$ROUND" -v t="$t" -v s="$sys" -v hz="$hz" -v el="$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" \
    -v busy="$(($(busy_ticks) - busy0))" '
    NR==FNR { b[$1]=$2; next }
    { g=$1; sub(/-[0-9]+$/, "", g); if (g ~ /^r[0-9]$/) g="replicas"; if (g ~ /^lb-/) g="nginx-lb"; if (g=="static") g="nginx-static"
      u[g]+=($2-b[$1]) }
    END { out=""; sum=0; for (g in u) if (u[g] > 0) { out=out sprintf(" %s=%.2f", g, u[g]/hz/el); sum+=u[g] }
          printf "%s\t%s\t%s\tall=%.2f servers=%.2f other(wrk,kernel)=%.2f%s\n", r, t, s, busy/hz/el, sum/hz/el, (busy-sum)/hz/el, out }' \
    <(echo "$before") <(cpu_ticks) >>"$CPU"
  log "   round $ROUND $t $sys c=$c: $(kv rps "$line") req/s $(kv MBps "$line") MB/s, central requests $up"
}

warm() { # warm SYSTEM: GET every blob of the throughput tests twice (the second must come from the bucket)
  local sys=$1 t p
  for _ in 1 2; do
    for t in small1 smallN big1 layersK; do
      while read -r p; do curl -fsS --max-time 120 -o /dev/null "http://${ADDR[$sys]}$p" || die "warm-up GET $p on $sys failed"; done < <(test_paths "$t" "$sys")
    done
  done
}

throughput_all() {
  # the bucket still holds the K layers from the round-robin fan-in; r1..r3 and lb-rr-3 are running
  local n sys
  for n in r1 r2 r3; do [[ -n ${PIDS[$n]:-} ]] || start_replica "$n" "$n"; done
  for n in lb-hash-1 lb-hash-2 lb-hash-3 lb-rr-3 static; do [[ -n ${PIDS[$n]:-} ]] || start_nginx "$n"; done
  local systems=(static r1 lb-hash-1 lb-hash-2 lb-hash-3 lb-rr-3)
  log "   warming: every blob through every system, twice"
  for sys in lb-hash-3 "${systems[@]}"; do warm "$sys"; done
  sleep 2
  for ROUND in $(seq 1 "$ROUNDS"); do
    for sys in "${systems[@]}"; do
      throughput small1 "$sys" "$CSMALL" "$DUR"
      throughput smallN "$sys" "$CSMALL" "$DUR"
      throughput big1 "$sys" "$CBIG" "$DUR_BIG"
      throughput layersK "$sys" "$CBIG" "$DUR_BIG"
    done
  done
}

tp_best() { # tp_best TEST SYSTEM FIELD(rps|MBps) -> best round
  awk -F'\t' -v t="$1" -v s="$2" -v f="$3" 'NR==1{for(i=1;i<=NF;i++) col[$i]=i; next}
    $2==t && $3==s { v=$col[f]+0; if (v>best) best=v } END{ if (best!="") print best }' "$TP"
}

# ---------------------------------------------------------------------------------------------
# 3. delta precomputation
# ---------------------------------------------------------------------------------------------
DTSV=""; DELTATXT=""; declare -A DEL=()

pull() { # pull REF: crane pull into a fresh OCI layout (crane verifies every digest), then delete it
  local dir; dir=$(mktemp -d "$DATA/pull.XXXXXX")
  timeout 600 "$CRANE_BIN" --insecure pull --format oci "$1" "$dir" >>"$LOGS/crane.log" 2>&1 || die "crane pull $1 failed"
  rm -rf "$dir"
}

go_secs() { # go_secs DURATION (Go's String form: 1.5s, 850.2ms, 1m2.5s, 900µs) -> seconds
  perl -e 'my %u = (h => 3600, m => 60, s => 1, ms => 1e-3, us => 1e-6, ns => 1e-9);
    my ($d, $s) = ($ARGV[0], 0); $d =~ s/\xc2\xb5s/us/g;
    while ($d =~ /([0-9.]+)(h|ms|m|us|ns|s)/g) { $s += $1 * $u{$2} } printf "%.6f\n", $s' "$1"
}

held_by_site() { # held_by_site -> changed v2 layers that are also another pair's v1 layer (the site has them already)
  local all_v1 p n=0 d
  all_v1=$(for p in "${PAIRS[@]}"; do tr ',' '\n' <<<"${PAIR_V1[$p]}"; done)
  for p in "${PAIRS[@]}"; do
    for d in $(tr ',' ' ' <<<"${PAIR_V2[$p]}"); do
      if ! grep -qxF "$d" <<<"$(tr ',' '\n' <<<"${PAIR_V1[$p]}")" && grep -qxF "$d" <<<"$all_v1"; then n=$((n + 1)); fi
    done
  done
  echo "$n"
}

changed_layers() { # changed_layers PAIR -> number of v2 layers that are not v1 layers
  awk -v a="${PAIR_V1[$1]}" -v b="${PAIR_V2[$1]}" 'BEGIN{ n = split(a, x, ","); for (i = 1; i <= n; i++) old[x[i]] = 1
    m = split(b, y, ","); c = 0; for (i = 1; i <= m; i++) if (!(y[i] in old)) c++; print c }'
}

log_epoch() { # log_epoch TIME (slog: 2026-11-24T01:41:23.322Z) -> seconds since the epoch
  date -d "$1" +%s.%N
}

delta_run() { # delta_run W
  local w=$1 p
  wipe_tier
  start_replica region r1 "$(printf 'deltas:\n  serve: true\n  precompute: true\n  workers: %s\n' "$w")"
  mkdir -p "$DATA/site"; : >"$LOGS/site.log"
  start_bg site "$EDGE_BIN" serve --listen "${ADDR[site]}" --storage "$DATA/site" --upstream "http://${ADDR[region]}"
  wait_http "http://${ADDR[site]}/v2/" site
  log "   W=$w: the site pulls v1 of ${#PAIRS[@]} pairs, then the trigger update"
  for p in "${PAIRS[@]}"; do pull "${ADDR[site]}/fleet/$p:v1"; done
  pull "${ADDR[site]}/fleet/trigger:v1"; pull "${ADDR[site]}/fleet/trigger:v2"
  grep -qE 'msg="(computed a delta for a lower tier|no delta worth sending)".* repo=fleet/trigger' "$LOGS/region.log" ||
    log "   WARNING: the region logged no delta for the trigger: precompute may not start (see $LOGS/region.log)"
  local expected=0 mark t0
  for p in "${PAIRS[@]}"; do expected=$((expected + $(changed_layers "$p"))); done
  mark=$(wc -l <"$LOGS/region.log")
  log "   W=$w: GET v2's manifest of every pair from the region at once; $expected layers to precompute"
  t0=$(date +%s.%N)
  local pids=()
  for p in "${PAIRS[@]}"; do curl -fsS --max-time 60 -o /dev/null -H "$ACC" "http://${ADDR[region]}/v2/fleet/$p/manifests/v2" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || die "GET of a v2 manifest from the region failed"; done
  local got=0 waited=0 pat='msg="(computed a delta for a lower tier|no delta worth sending|cannot precompute a delta)"'
  while ((waited < DELTA_TIMEOUT * 5)); do
    got=$(tail -n +$((mark + 1)) "$LOGS/region.log" | grep -cE "$pat" || true)
    ((got >= expected)) && break
    sleep 0.2; waited=$((waited + 1))
  done
  ((got >= expected)) || log "   WARNING: W=$w: $got of $expected precomputations logged within ${DELTA_TIMEOUT}s"
  sleep 1
  local lines; lines=$(tail -n +$((mark + 1)) "$LOGS/region.log" | grep -E "$pat" || true)
  local n_ok=0 n_none=0 n_err=0 sum=0 all=0 dsum=0 csum=0 tsum=0 last="$t0" tm repo size dsize tsize dur kind secs dg
  while IFS= read -r l; do
    [[ -n $l ]] || continue
    tm=$(log_epoch "$(sed -E 's/^time=([^ ]+).*/\1/' <<<"$l")")
    awk -v a="$tm" -v b="$last" 'BEGIN{exit !(a > b)}' && last=$tm
    repo=$(grep -oE ' repo=[^ ]+' <<<"$l" | cut -d= -f2); dg=$(grep -oE ' digest=[^ ]+' <<<"$l" | cut -d= -f2)
    all=$((all + ${BLOB_SIZE[$dg]:-0}))
    case $l in
      *'computed a delta for a lower tier'*)
        size=$(grep -oE ' size=[0-9]+' <<<"$l" | cut -d= -f2); dsize=$(grep -oE ' delta_size=[0-9]+' <<<"$l" | cut -d= -f2)
        tsize=$(grep -oE ' tar_size=[0-9]+' <<<"$l" | cut -d= -f2); tsum=$((tsum + ${tsize:-0}))
        kind=$(grep -oE ' kind=[^ ]+' <<<"$l" | cut -d= -f2); dur=$(grep -oE ' duration=[^ ]+' <<<"$l" | cut -d= -f2)
        secs=$(go_secs "$dur")
        n_ok=$((n_ok + 1)); sum=$((sum + size)); dsum=$((dsum + dsize)); csum=$(awk -v a="$csum" -v b="$secs" 'BEGIN{print a+b}')
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%.3f\n' "$w" "${repo#fleet/}" "$size" "$dsize" "$kind" "$secs" "$(awk -v a="$tm" -v b="$t0" 'BEGIN{print a-b}')" >>"$DTSV";;
      *'no delta worth sending'*) n_none=$((n_none + 1)); printf '%s\t%s\t%s\t-\tnone (> maxRatio)\t-\t%.3f\n' "$w" "${repo#fleet/}" "${BLOB_SIZE[$dg]:--}" "$(awk -v a="$tm" -v b="$t0" 'BEGIN{print a-b}')" >>"$DTSV";;
      *) n_err=$((n_err + 1)); echo "  W=$w error: $l" >>"$DELTATXT";;
    esac
  done <<<"$lines"
  local wall; wall=$(awk -v a="$last" -v b="$t0" 'BEGIN{printf "%.2f", a-b}')
  DEL[$w.n]=$n_ok; DEL[$w.none]=$n_none; DEL[$w.err]=$n_err; DEL[$w.expected]=$expected; DEL[$w.wall]=$wall
  DEL[$w.bytes]=$sum; DEL[$w.dbytes]=$dsum; DEL[$w.codec]=$(printf '%.2f' "$csum")
  DEL[$w.dps]=$(awk -v n="$n_ok" -v t="$wall" 'BEGIN{ if (t>0) printf "%.2f", n/t; else print "nan" }')
  DEL[$w.mbps]=$(awk -v b="$sum" -v t="$wall" 'BEGIN{ if (t>0) printf "%.1f", b/t/1e6; else print "nan" }')
  DEL[$w.all_mbps]=$(awk -v b="$all" -v t="$wall" 'BEGIN{ if (t>0) printf "%.1f", b/t/1e6; else print "nan" }'); DEL[$w.all]=$all
  DEL[$w.codec_mbps]=$(awk -v b="$sum" -v t="$csum" 'BEGIN{ if (t>0) printf "%.1f", b/t/1e6; else print "nan" }')
  # tar_size (uncompressed) is logged since 2026-11-24: the codec's MB/s in delta.sh's unit
  DEL[$w.codec_tar_mbps]=$(awk -v b="$tsum" -v t="$csum" 'BEGIN{ if (t>0 && b>0) printf "%.1f", b/t/1e6; else print "-" }')
  DEL[$w.conc]=$(awk -v c="$csum" -v t="$wall" 'BEGIN{ if (t>0) printf "%.2f", c/t; else print "nan" }')
  # the site now pulls every v2: each changed layer rebuilt from the delta the region precomputed
  local rebuilt0 computed0
  rebuilt0=$(grep -c 'layer rebuilt from a delta' "$LOGS/site.log" || true)
  computed0=$(grep -c 'computed a delta for a lower tier' "$LOGS/region.log" || true)
  for p in "${PAIRS[@]}"; do pull "${ADDR[site]}/fleet/$p:v2"; done
  # the site logs a rebuild once the layer is verified, which may be just after its client got the last byte
  local rebuilt=0
  for _ in $(seq 1 50); do
    rebuilt=$(($(grep -c 'layer rebuilt from a delta' "$LOGS/site.log" || true) - rebuilt0))
    ((rebuilt >= n_ok)) && break
    sleep 0.1
  done
  DEL[$w.rebuilt]=$rebuilt; DEL[$w.held]=$(held_by_site)
  DEL[$w.recomputed]=$(($(grep -c 'computed a delta for a lower tier' "$LOGS/region.log" || true) - computed0))
  {
    echo "## W=$w: $expected layers to precompute; $n_ok deltas computed, $n_none not worth sending, $n_err errors"
    echo "  wall (first v2 manifest GET to last result line) ${wall}s; layers with a delta $sum bytes (all layers processed $all bytes), deltas $dsum bytes; codec time of the deltas summed ${DEL[$w.codec]}s"
    echo "  then the site pulled every v2: ${DEL[$w.rebuilt]} layers rebuilt from a delta (${DEL[$w.held]} changed layers were already at the site: another pair's v1); ${DEL[$w.recomputed]} deltas computed again at the region"
  } >>"$DELTATXT"
  cp "$LOGS/region.log" "$OUT/logs/region-w$w.log"; cp "$LOGS/site.log" "$OUT/logs/site-w$w.log"
  stop_one site; stop_one region
  log "   W=$w: $n_ok deltas in ${wall}s = ${DEL[$w.dps]} deltas/s, ${DEL[$w.mbps]} MB/s of layers"
}

# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a=="" || b=="" || b+0==0) print "nan"; else printf "%.2f", a/b }'; }
kv() { tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1==k{print $2; exit}'; }

write_results() {
  local M="$OUT/results.md" t f u
  {
    echo "# registry-edge replicas benchmark — $STAMP"
    echo
    echo "Command: \`$CMDLINE\`"
    echo
    echo "Machine: $(nproc) cores, kernel $(uname -r), $(go version | cut -d' ' -f3-), load average at start: $LOAD0."
    echo "Versions: $EDGE_VERSION (work tree $EDGE_REV when built), distribution registry $("$REGISTRY_BIN" --version 2>/dev/null | awk '{print $3}'), versitygw $VERSITYGW_VERSION, crane $("$CRANE_BIN" version), $(nginx -v 2>&1 | cut -d' ' -f3), wrk $(wrk --version 2>&1 | head -1 | awk '{print $2}')."
    echo "Knobs: PARTS=\"$PARTS\" K=$K LAYER_MB=$LAYER_MB S=$S SMALL_N=$SMALL_N BIG_MB=$BIG_MB DUR=$DUR DUR_BIG=$DUR_BIG CSMALL=$CSMALL CBIG=$CBIG THREADS=$THREADS ROUNDS=$ROUNDS NGINX_WORKERS=$NGINX_WORKERS DELTA_WORKERS=\"$DELTA_WORKERS\"."
    echo
    if [[ " $PARTS " == *" fanin "* ]]; then
      echo "## 1. Cold-miss fan-in: $K cold layers (about $LAYER_SIZE bytes each) x $S clients, all at once, 3 replicas"
      echo
      echo "| load balancer | clients ok (sha256 checked) | upstream GETs per layer (min-max) | upstream blob GETs | bytes from central / bytes of the $K layers | replicas per layer | objects in the bucket | wall (s) |"
      echo "|---|---:|---:|---:|---:|---|---:|---:|"
      for u in hash rr; do
        [[ -n ${FAN[$u.n]:-} ]] || continue
        printf '| %s | %s / %s | %s-%s | %s | %s | %s | %s | %s |\n' \
          "$([[ $u == hash ]] && echo "documented config (hash of the digest)" || echo "round robin (hash line removed)")" \
          "${FAN[$u.ok]}" "${FAN[$u.n]}" "${FAN[$u.per_min]}" "${FAN[$u.per_max]}" "${FAN[$u.gets]}" \
          "$(ratio "${FAN[$u.bytes]}" "$FAN_TOTAL")" "$(tr ' ' '\n' <<<"${FAN[$u.reps]}" | sed '/^$/d' | sort | uniq -c | awk '{printf "%s%s x %s", (NR>1?", ":""), $1, $2}')" \
          "${FAN[$u.objects]}" "${FAN[$u.wall]}"
      done
      echo
      echo '```'; cat "$FANTXT"; echo '```'
      echo
    fi
    if [[ " $PARTS " == *" throughput "* ]]; then
      echo "## 2. Cached throughput (wrk, best of $ROUNDS rounds; every blob in the bucket)"
      echo
      echo "| test | unit | static nginx | r1 direct | lb-hash-1 | lb-hash-2 | lb-hash-3 | lb-rr-3 | hash-2 / hash-1 | hash-3 / hash-1 | hash-1 / r1 direct | hash-3 / rr-3 | hash-1 / static |"
      echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
      for t in small1 smallN big1 layersK; do
        case $t in small1|smallN) f=rps; u="req/s";; *) f=MBps; u="MB/s";; esac
        local st r1 h1 h2 h3 rr desc
        st=$(tp_best "$t" static "$f"); r1=$(tp_best "$t" r1 "$f"); h1=$(tp_best "$t" lb-hash-1 "$f")
        h2=$(tp_best "$t" lb-hash-2 "$f"); h3=$(tp_best "$t" lb-hash-3 "$f"); rr=$(tp_best "$t" lb-rr-3 "$f")
        case $t in
          small1) desc="one 4 KiB blob, c=$CSMALL";; smallN) desc="$SMALL_N distinct 4 KiB blobs, c=$CSMALL";;
          big1) desc="one $BIG_SIZE-byte blob, c=$CBIG";; layersK) desc="$K distinct layers of about $LAYER_SIZE bytes, c=$CBIG";;
        esac
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$desc" "$u" "$st" "$r1" "$h1" "$h2" "$h3" "$rr" \
          "$(ratio "$h2" "$h1")" "$(ratio "$h3" "$h1")" "$(ratio "$h1" "$r1")" "$(ratio "$h3" "$rr")" "$(ratio "$h1" "$st")"
      done
      echo
      echo "Requests central answered to registry-edge during all throughput tests: $(awk -F'\t' 'NR>1{s+=$11} END{print s+0}' "$TP"); non-2xx: $(awk -F'\t' 'NR>1{s+=$9} END{print s+0}' "$TP"); socket errors: $(awk -F'\t' 'NR>1{s+=$10} END{print s+0}' "$TP")."
      echo
      echo "### Every round"
      echo
      echo "| round | test | system | conns | req/s | MB/s | p50 ms | p99 ms | non-2xx | sock err | central reqs | load1 |"
      echo "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
      awk -F'\t' 'NR>1{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12}' "$TP"
      echo
      echo "### CPU during each test (cores: 2 = the whole machine; replicas = r1+r2+r3, other = wrk and the kernel)"
      echo
      echo '```'; cat "$CPU"; echo '```'
      echo
    fi
    if [[ " $PARTS " == *" delta "* ]]; then
      echo "## 3. Delta precomputation at the region (pairs from $DELTA_DIR: ${PAIRS[*]})"
      echo
      echo "| deltas.workers | deltas computed / layers | wall (s) | deltas/s | MB/s of layers with a delta | MB/s of all layers processed | codec time summed (s) | codec MB/s (per delta) | codec MB/s of tar content | codec busy / wall | not worth sending | errors | site rebuilt v2 from them (already held) | computed again |"
      echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
      for u in $DELTA_WORKERS; do
        [[ -n ${DEL[$u.n]:-} ]] || continue
        printf '| %s | %s / %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s (%s) | %s |\n' "$u" "${DEL[$u.n]}" "${DEL[$u.expected]}" "${DEL[$u.wall]}" \
          "${DEL[$u.dps]}" "${DEL[$u.mbps]}" "${DEL[$u.all_mbps]}" "${DEL[$u.codec]}" "${DEL[$u.codec_mbps]}" "${DEL[$u.codec_tar_mbps]}" "${DEL[$u.conc]}" "${DEL[$u.none]}" "${DEL[$u.err]}" \
          "${DEL[$u.rebuilt]}" "${DEL[$u.held]}" "${DEL[$u.recomputed]}"
      done
      echo
      echo "| W | pair | layer (bytes) | delta (bytes) | kind | codec (s) | done at (s after the GETs) |"
      echo "|---:|---|---:|---:|---|---:|---:|"
      awk -F'\t' 'NR>1{printf "| %s | %s | %s | %s | %s | %s | %s |\n", $1,$2,$3,$4,$5,$6,$7}' "$DTSV"
      echo
      echo '```'; cat "$DELTATXT"; echo '```'
    fi
  } >"$M"
}

# ---------------------------------------------------------------------------------------------
main() {
  case "${1:-all}" in
    clean) rm -rf "$RUN"; log "removed $RUN"; exit 0;;
    tools) setup_tools; log "tools ready: $REGISTRY_BIN $CRANE_BIN $VGW_BIN $FANIN $EDGE_BIN"; exit 0;;
    all) ;;
    -h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0;;
    *) die "unknown command $1 (all|tools|clean)";;
  esac
  local p
  for p in $PARTS; do [[ $p == fanin || $p == throughput || $p == delta ]] || die "unknown part $p in PARTS"; done
  [[ -f $NGINX_DOC ]] || die "$NGINX_DOC not found"
  CMDLINE="$(env | grep -E '^(PARTS|K|LAYER_MB|S|FANIN_TIMEOUT|SMALL_N|BIG_MB|DUR|DUR_BIG|CSMALL|CBIG|THREADS|ROUNDS|NGINX_WORKERS|DELTA_DIR|DELTA_PAIRS|DELTA_SYNTH|DELTA_WORKERS|DELTA_TIMEOUT|PORT_BASE|EDGE_BIN|WAIT_IDLE|IDLE_LOAD|KEEP)=' | sort | sed -E "s/^([^=]+)=(.*[ ].*)$/\1='\2'/" | tr '\n' ' ')benchmarks/replicas.sh"
  trap cleanup EXIT; trap 'exit 130' INT TERM
  mkdir -p "$LOGS"
  setup_tools
  local a
  for a in "$CENTRAL" "$S3" "${ADDR[@]}"; do port_free "$a" || die "port ${a##*:} is in use (set PORT_BASE)"; done
  wait_idle
  STAMP=$(date -u +%Y%m%dT%H%M%SZ); OUT="$HERE/results/$STAMP-replicas"; mkdir -p "$OUT/logs"
  LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
  rm -rf "$DATA" "$RUN/nginx"; mkdir -p "$DATA"; : >"$CLOG"; : >"$LOGS/seed.log"; : >"$LOGS/crane.log"
  FANTXT="$OUT/fanin.txt"; : >"$FANTXT"; DELTATXT="$OUT/deltas.txt"; : >"$DELTATXT"
  TP="$OUT/throughput.tsv"; CPU="$OUT/cpu.tsv"; : >"$CPU"; DTSV="$OUT/deltas.tsv"
  printf 'round\ttest\tsystem\tconns\trps\tMBps\tp50ms\tp99ms\tnon2xx\tsockerr\tcentral_reqs\tload1\n' >"$TP"
  printf 'W\tpair\tlayer_bytes\tdelta_bytes\tkind\tcodec_s\tdone_at_s\n' >"$DTSV"

  log "starting central on $CENTRAL"; start_central
  seed
  if [[ " $PARTS " == *" fanin "* ]]; then
    log "1. cold-miss fan-in, 3 replicas: documented config (hash of the digest), then round robin"
    fanin_run hash
    fanin_run rr
  fi
  if [[ " $PARTS " == *" throughput "* ]]; then
    log "2. cached throughput: static nginx, r1 directly, lb-hash-1/2/3, lb-rr-3 ($ROUNDS rounds)"
    [[ -n ${PIDS[s3]:-} ]] || start_s3
    throughput_all
  fi
  if [[ " $PARTS " == *" delta "* ]]; then
    log "3. delta precomputation at the region, deltas.workers in: $DELTA_WORKERS"
    local w; for w in $DELTA_WORKERS; do delta_run "$w"; done
  fi
  write_results
  local f; for f in "$LOGS"/*.log; do [[ $f == */region.log || $f == */site.log ]] || cp "$f" "$OUT/logs/"; done
  cp "$RUN/nginx/lb-hash-3/registry-edge.conf" "$OUT/nginx-lb-hash-3.conf" 2>/dev/null || true
  cp "$RUN/nginx/lb-rr-3/registry-edge.conf" "$OUT/nginx-lb-rr-3.conf" 2>/dev/null || true
  cat "$OUT/results.md" >&2
  log "written $OUT/results.md"
}

main "$@"
