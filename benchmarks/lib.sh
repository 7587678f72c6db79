# shellcheck shell=bash
# shellcheck disable=SC2034  # EDGE_REV, EDGE_VERSION and PIDS are the sourcing script's
# benchmarks/lib.sh — helpers shared by the benchmark scripts (sourced; needs HERE and ROOT,
# and for start_bg and stop_one the arrays/vars LOGS and PIDS, for wait_idle WAIT_IDLE and
# IDLE_LOAD, for go_tool TOOLS, for mklayer W, for edge_binary BIN, LOGS and EDGE_BIN, for
# run_child CHILD).

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

wait_idle() { # waits up to WAIT_IDLE seconds for the 1-minute load average to drop below IDLE_LOAD
  local waited=0
  while ((waited < WAIT_IDLE)) && awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v m="$IDLE_LOAD" 'BEGIN{exit !(l >= m)}'; do
    ((waited % 30 == 0)) && log "load average $(cut -d' ' -f1 /proc/loadavg) >= $IDLE_LOAD: waiting (${waited}s of ${WAIT_IDLE}s)"
    sleep 5; waited=$((waited + 5))
  done
  return 0
}

stop_one() { # stop_one NAME [9]   stops a child started by start_bg (9: kill -9 at once, as a crash or power loss would)
  local name=$1 pid=${PIDS[$1]:-}
  [[ -n $pid ]] || return 0
  {
    if [[ ${2:-} == 9 ]]; then kill -9 "$pid" || true; else kill "$pid" || true; fi
    for _ in $(seq 1 100); do kill -0 "$pid" || break; sleep 0.1; done
    kill -0 "$pid" && kill -9 "$pid" || true
    wait "$pid" || true
  } 2>/dev/null # (bash's "Killed" job notice)
  unset "PIDS[$name]"
}

go_tool() { # go_tool NAME VERSION PKG -> prints the binary path, go-installing it if needed
  local name=$1 ver=$2 pkg=$3 dir="$TOOLS/$1-$2"
  if [[ -x "$dir/$name" ]]; then echo "$dir/$name"; return; fi
  # A copy installed by hand or by .ci under ~/.cache/registry-edge/bin is used if its version matches.
  local pre="$HOME/.cache/registry-edge/bin/$name"
  if [[ -x $pre ]] && "$pre" --version 2>/dev/null | grep -q "${ver#v}"; then echo "$pre"; return; fi
  if [[ -x $pre ]] && [[ $name == crane ]] && [[ "$("$pre" version 2>/dev/null)" == "$ver" ]]; then echo "$pre"; return; fi
  # Same cache layout as .ci/test; built outside this module (GOWORK=off, temp dir), then moved in.
  log "go install $pkg@$ver -> $dir (the registry takes minutes on 2 cores the first time)"
  mkdir -p "$TOOLS"
  local tmp; tmp=$(mktemp -d "$TOOLS/.build-$name.XXXXXX")
  (cd "$tmp" && GOWORK=off GOFLAGS=-buildvcs=false GOBIN="$tmp/bin" timeout 900 go install "$pkg@$ver") >&2 ||
    { rm -rf "$tmp"; die "go install $pkg@$ver failed"; }
  mkdir -p "$dir" && mv "$tmp/bin/$name" "$dir/$name" && rm -rf "$tmp"
  echo "$dir/$name"
}

build_bench_tool() { # build_bench_tool NAME OUT: build benchmarks/tools/NAME (its own go.mod) into OUT if missing or stale
  local name=$1 out=$2
  if [[ ! -x $out || "$HERE/tools/$name/main.go" -nt $out ]]; then
    log "building $name (benchmarks/tools/$name)"
    (cd "$HERE/tools/$name" && GOFLAGS=-buildvcs=false go build -o "$out" .) || die "$name build failed"
  fi
}

edge_rev() { # the commit of the working tree, with +dirty if anything outside benchmarks/ differs from it
  echo "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- . ':!benchmarks' 2>/dev/null || echo '+dirty')"
}

edge_binary() { # sets EDGE_BIN (built from ./cmd/registry-edge into $BIN unless EDGE_BIN is given), EDGE_REV, EDGE_VERSION
  if [[ -n $EDGE_BIN ]]; then
    [[ -x $EDGE_BIN ]] || die "EDGE_BIN=$EDGE_BIN is not executable"
    EDGE_REV="(EDGE_BIN given)"
  else
    EDGE_BIN="$BIN/registry-edge"
    log "building registry-edge from ./cmd/registry-edge"
    EDGE_REV=$(edge_rev)
    (cd "$ROOT" && timeout 600 go build -o "$EDGE_BIN" ./cmd/registry-edge) 2>"$LOGS/build-edge.err" ||
      { cat "$LOGS/build-edge.err" >&2; die "registry-edge does not build (EDGE_BIN=path uses a binary built elsewhere)"; }
  fi
  EDGE_VERSION=$("$EDGE_BIN" version 2>/dev/null | head -1 || echo "?")
}

# run_child OUTFILE CMD...: run a bounded load generator as a background child and wait for it, so
# that a signal to the script (trap) stops it at once; bash would otherwise finish the foreground
# command first, and ignore a SIGINT sent to the script alone if the command exits normally.
run_child() {
  local out=$1; shift
  "$@" >"$out" &
  CHILD=$!
  local rc=0
  wait "$CHILD" || rc=$?
  CHILD=""
  return "$rc"
}

start_central() { # the reference `registry` as central at $CENTRAL, storing under $DATA/central (needs RUN, DATA, REGISTRY_BIN and the script's wait_http)
  write_registry_conf "$RUN/central.yml" "$CENTRAL" "$DATA/central"
  mkdir -p "$DATA/central"
  start_bg central env OTEL_TRACES_EXPORTER=none OTEL_SDK_DISABLED=true "$REGISTRY_BIN" serve "$RUN/central.yml"
  wait_http "http://$CENTRAL/v2/" central
}

start_bg() { # start_bg NAME CMD... (stdout+stderr appended to logs/NAME.log)
  local name=$1; shift
  "$@" >>"$LOGS/$name.log" 2>&1 &
  PIDS[$name]=$!
}

need_apt() { # need_apt CMD PKG
  command -v "$1" >/dev/null 2>&1 && return 0
  [[ $(id -u) == 0 ]] || die "$1 missing; install Debian package $2 (needs root)"
  log "installing $2 with apt-get"
  if [[ -z "${APT_UPDATED:-}" ]]; then timeout 300 apt-get update -qq >/dev/null; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "$2" >/dev/null
  command -v "$1" >/dev/null 2>&1 || die "$1 still missing after apt-get install $2"
}

mklayer() { # mklayer NAME SIZE_SPEC -> $W/NAME.tar.gz holding one random file
  mkdir -p "$W/$1"; head -c "$2" /dev/urandom >"$W/$1/$1.bin"
  tar -C "$W/$1" -cf - "$1.bin" | gzip -1 -n >"$W/$1.tar.gz"; rm -rf "${W:?}/$1"
}

port_free() { ! ss -Hltn "sport = :${1##*:}" 2>/dev/null | grep -q .; }

write_registry_conf() { # write_registry_conf FILE ADDR ROOTDIR [PROXY_URL]
  # From shared/bench/peer/start-central.sh and start-proxy.sh.
  cat >"$1" <<YML
version: 0.1
log:
  level: info
  formatter: json
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $3
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $2
YML
  if [[ -n ${4:-} ]]; then printf 'proxy:\n  remoteurl: %s\n  ttl: 168h\n' "$4" >>"$1"; fi
}
