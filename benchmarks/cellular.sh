#!/usr/bin/env bash
# benchmarks/cellular.sh — a "cellular" uplink between a site and its upstream, built with two network
# namespaces joined by a veth pair. Adapted from shared/bench/peer/netem.sh (read-only; not needed at
# run time). Usable by hand and by benchmarks/resume.sh.
#
#   [CORE ns]  upstream (central registry)  CORE_IP  ==veth (shaped both ways)==  SITE_IP  [SITE ns]  mirror + clients
#
# This kernel has NO sch_netem ("Specified qdisc kind is unknown"), so instead of
# `tc qdisc ... netem rate 2mbit delay 100ms loss 1%`:
#   rate  : tc tbf on each veth's egress (RATE, burst BURST, queue bounded by LATENCY: the queueing
#           delay under load is bufferbloat-like, as on a modem)
#   loss  : nftables `numgen random mod 100 < LOSS_PCT drop` on each side's egress (random loss, both ways)
#   delay : NOT emulated (no netem); only the queueing delay tbf adds under load
#   down  : an nftables table that drops everything leaving either veth (silent blackhole: no RST, no
#           ICMP; open sockets stay open and TCP retransmits, new connections get no SYN-ACK)
#
# Usage (as root):
#   cellular.sh check          exit 0 if namespaces, veth, tbf and nftables all work here (prints why not)
#   cellular.sh up             create the namespaces, the veth pair, rate limit and loss (replaces an old one)
#   cellular.sh down           remove them (processes still inside lose their network; stop them first)
#   cellular.sh cut SECS       link down for SECS seconds (blackhole both ways), then up again
#   cellular.sh block          link down until `unblock`          cellular.sh unblock
#   cellular.sh shape RATE LOSS_PCT   change rate (tc syntax: 2mbit, 500kbit) and loss (percent, 0 = none) live
#   cellular.sh status         qdiscs, nftables rules, addresses
#   cellular.sh counters       per side: packets sent, dropped by tbf (queue full), dropped by the loss rule
#   cellular.sh exec core|site CMD...   run CMD inside a namespace (e.g. exec site curl http://$CORE_IP:5000/v2/)
#   cellular.sh env            print the names/addresses as shell assignments (for scripts: eval "$(cellular.sh env)")
# Env (defaults): CELL_NAME=re-cell (namespaces $CELL_NAME-core, $CELL_NAME-site)
#   CORE_IP=10.200.7.1 SITE_IP=10.200.7.2 (only inside these two namespaces; nothing is routed out)
#   RATE=2mbit LOSS_PCT=1 BURST=32kbit LATENCY=400ms
# Example by hand:
#   benchmarks/cellular.sh up
#   benchmarks/cellular.sh exec core registry serve core.yml &          # upstream on $CORE_IP
#   benchmarks/cellular.sh exec site registry-edge serve --listen 127.0.0.1:5000 --upstream http://10.200.7.1:5000 &
#   benchmarks/cellular.sh exec site curl -o /dev/null http://127.0.0.1:5000/v2/...   # in the site
#   benchmarks/cellular.sh cut 20; benchmarks/cellular.sh down
set -euo pipefail

CELL_NAME="${CELL_NAME:-re-cell}"
CORE="$CELL_NAME-core"; SITE="$CELL_NAME-site"
CORE_IP="${CORE_IP:-10.200.7.1}"; SITE_IP="${SITE_IP:-10.200.7.2}"
RATE="${RATE:-2mbit}"; LOSS_PCT="${LOSS_PCT:-1}"; BURST="${BURST:-32kbit}"; LATENCY="${LATENCY:-400ms}"
VCORE=cell-core; VSITE=cell-site   # interface names, inside their namespaces only

say() { printf 'cellular: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
C() { ip netns exec "$CORE" "$@"; }
S() { ip netns exec "$SITE" "$@"; }
sides() { printf '%s %s\n%s %s\n' "$CORE" "$VCORE" "$SITE" "$VSITE"; }
exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$1"; }

check() { # can this machine do it? (a throwaway namespace pair with the same features)
  local why="" t="re-chk$$"
  [[ $(id -u) == 0 ]] || why="not root"
  [[ -z $why ]] && { command -v ip >/dev/null && command -v tc >/dev/null && command -v nft >/dev/null; } || why=${why:-"ip, tc or nft missing (Debian: iproute2, nftables)"}
  if [[ -z $why ]]; then
    if ! ip netns add "$t-a" 2>/dev/null; then why="ip netns add refused"; else
      ip netns add "$t-b" 2>/dev/null || why="ip netns add refused"
      [[ -z $why ]] && { ip link add chk-a netns "$t-a" type veth peer name chk-b netns "$t-b" 2>/dev/null || why="veth refused"; }
      [[ -z $why ]] && { ip netns exec "$t-a" tc qdisc add dev chk-a root tbf rate 2mbit burst 32kbit latency 400ms 2>/dev/null || why="tc tbf refused"; }
      [[ -z $why ]] && { ip netns exec "$t-a" nft add table inet chk 2>/dev/null &&
        ip netns exec "$t-a" nft add chain inet chk out '{ type filter hook output priority 0; }' 2>/dev/null &&
        ip netns exec "$t-a" nft add rule inet chk out oifname chk-a numgen random mod 100 '<' 1 drop 2>/dev/null || why="nftables (numgen) refused"; }
      ip netns del "$t-a" 2>/dev/null || true; ip netns del "$t-b" 2>/dev/null || true
    fi
  fi
  if [[ -n $why ]]; then say "network namespaces not usable here: $why"; return 1; fi
  say "ok: network namespaces, veth, tc tbf and nftables numgen work (netem: $(netem_note))"
}
netem_note() { # just informative: is sch_netem there after all?
  local t="re-net$$" r="absent (expected on this kernel)"
  ip netns add "$t" 2>/dev/null || { echo "not checked"; return; }
  ip -n "$t" link add d0 type dummy 2>/dev/null && ip -n "$t" link set d0 up 2>/dev/null &&
    ip netns exec "$t" tc qdisc add dev d0 root netem delay 1ms 2>/dev/null && r="present"
  ip netns del "$t" 2>/dev/null || true; echo "$r"
}

loss_rules() { # (re)apply LOSS_PCT on both sides
  local ns dev
  while read -r ns dev; do
    ip netns exec "$ns" nft delete table inet cellloss 2>/dev/null || true
    if awk -v p="$LOSS_PCT" 'BEGIN{exit !(p+0 > 0)}'; then
      ip netns exec "$ns" nft add table inet cellloss
      ip netns exec "$ns" nft add chain inet cellloss out '{ type filter hook output priority 0; }'
      ip netns exec "$ns" nft add rule inet cellloss out oifname "$dev" numgen random mod 100 '<' "$LOSS_PCT" counter drop
    fi
  done < <(sides)
}

up() {
  [[ $LOSS_PCT =~ ^[0-9]+$ ]] || die "LOSS_PCT must be a whole percent (numgen mod 100), got $LOSS_PCT"
  down_quiet
  ip netns add "$CORE"; ip netns add "$SITE"
  ip link add "$VCORE" netns "$CORE" type veth peer name "$VSITE" netns "$SITE"
  C ip addr add "$CORE_IP/24" dev "$VCORE"; S ip addr add "$SITE_IP/24" dev "$VSITE"
  for ns in "$CORE" "$SITE"; do ip -n "$ns" link set lo up; done
  C ip link set "$VCORE" up; S ip link set "$VSITE" up
  C tc qdisc add dev "$VCORE" root tbf rate "$RATE" burst "$BURST" latency "$LATENCY"
  S tc qdisc add dev "$VSITE" root tbf rate "$RATE" burst "$BURST" latency "$LATENCY"
  loss_rules
  say "up: $CORE ($CORE_IP) <-> $SITE ($SITE_IP), tbf $RATE burst $BURST latency $LATENCY each way, ${LOSS_PCT}% random loss each way"
}

down_quiet() { exists "$CORE" && ip netns del "$CORE"; exists "$SITE" && ip netns del "$SITE"; return 0; }
down() { down_quiet; say "down: namespaces $CORE, $SITE removed"; }

block() {
  local ns dev
  exists "$CORE" || die "not up"
  while read -r ns dev; do
    ip netns exec "$ns" nft list table inet cellcut >/dev/null 2>&1 && continue
    ip netns exec "$ns" nft add table inet cellcut
    ip netns exec "$ns" nft add chain inet cellcut out '{ type filter hook output priority -10; }'
    ip netns exec "$ns" nft add rule inet cellcut out oifname "$dev" drop
  done < <(sides)
  say "link DOWN (blackhole both ways) at $(date -u +%T.%N | cut -c1-12)"
}
unblock() {
  local ns dev
  while read -r ns dev; do ip netns exec "$ns" nft delete table inet cellcut 2>/dev/null || true; done < <(sides)
  say "link UP at $(date -u +%T.%N | cut -c1-12)"
}

shape() { # shape RATE LOSS_PCT
  [[ $# == 2 ]] || die "usage: shape RATE LOSS_PCT"
  RATE=$1; LOSS_PCT=$2
  C tc qdisc replace dev "$VCORE" root tbf rate "$RATE" burst "$BURST" latency "$LATENCY"
  S tc qdisc replace dev "$VSITE" root tbf rate "$RATE" burst "$BURST" latency "$LATENCY"
  loss_rules
  say "shaped: $RATE, ${LOSS_PCT}% loss each way"
}

status() {
  exists "$CORE" || { say "not up"; return 1; }
  local ns dev
  while read -r ns dev; do
    echo "== $ns"
    ip -n "$ns" -br addr show dev "$dev"
    ip netns exec "$ns" tc -s qdisc show dev "$dev" | head -3
    ip netns exec "$ns" nft list ruleset | grep -E 'table|drop' || true
  done < <(sides)
}

counters() { # one line per side: packets sent on the veth, dropped by tbf, dropped by the loss rule
  local ns dev sent tbfd loss
  while read -r ns dev; do
    read -r sent tbfd < <(ip netns exec "$ns" tc -s qdisc show dev "$dev" | awk '/Sent/{gsub(/[,)]/,""); print $4, $7; exit}')
    loss=$(ip netns exec "$ns" nft list table inet cellloss 2>/dev/null | awk '/packets/{for(i=1;i<=NF;i++) if($i=="packets") print $(i+1)}')
    printf '%s: sent_pkts=%s tbf_dropped=%s loss_dropped=%s\n' "${ns##*-}" "${sent:-?}" "${tbfd:-?}" "${loss:-0}"
  done < <(sides)
}

case "${1:-}" in
  counters) counters;;
  check) check;;
  up) check >/dev/null 2>&1 || { check; exit 1; }; up;;
  down) down;;
  cut) [[ ${2:-} =~ ^[0-9]+([.][0-9]+)?$ ]] || die "usage: cut SECS"
       trap unblock EXIT INT TERM; block; sleep "$2"; trap - EXIT INT TERM; unblock;;
  block) block;;
  unblock) unblock;;
  shape) shift; shape "$@";;
  status) status;;
  exec) [[ ${2:-} == core || ${2:-} == site ]] || die "usage: exec core|site CMD..."
        ns=$CORE; [[ $2 == site ]] && ns=$SITE; shift 2; exec ip netns exec "$ns" "$@";;
  env) printf 'CELL_CORE=%s CELL_SITE=%s CORE_IP=%s SITE_IP=%s\n' "$CORE" "$SITE" "$CORE_IP" "$SITE_IP";;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; [[ -z ${1:-} || $1 == -h || $1 == --help || $1 == help ]] || exit 2;;
esac
