# shellcheck shell=bash
# benchmarks/lib.sh — helpers shared by run.sh and resume.sh (sourced; needs log, die, and for
# start_bg the arrays/vars LOGS and PIDS, for go_tool TOOLS, for mklayer W).

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
