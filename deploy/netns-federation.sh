#!/usr/bin/env bash
# A pocnode federation across network namespaces: each node a separate "host" with its own
# address on a private bridge, as states' nodes would be. Needs root and iproute2.
#
#   deploy/netns-federation.sh up DIR N      create N hosts poc1..pocN, a federation in DIR,
#                                            and start every node in its namespace
#   deploy/netns-federation.sh status DIR    each host and whether its node answers
#   deploy/netns-federation.sh down DIR      stop every node, delete every namespace
#
# Addresses: 10.231.0.1XX/24 (XX = index), only inside namespaces this script creates; the
# host's own namespace and routes are never touched. The interpreter is $POCNODE_PYTHON
# (default python3), which must have pocnode installed.
set -euo pipefail

PY="${POCNODE_PYTHON:-python3}"
SWITCH=pocsw
usage() { sed -n '2,12p' "$0"; exit 2; }

members_of() { find "$1" -mindepth 1 -maxdepth 1 -type d -exec test -f '{}/config.toml' ';' -print | sort; }

up() {
  local dir=$1 n=$2
  [ "$n" -ge 1 ] && [ "$n" -le 99 ] || { echo "N must be 1..99" >&2; exit 2; }
  ip netns add "$SWITCH"
  ip -n "$SWITCH" link add br0 type bridge
  ip -n "$SWITCH" link set br0 up
  for i in $(seq 1 "$n"); do
    local ns="poc$i" addr; addr=$(printf '10.231.0.1%02d' "$i")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link add "veth$i" netns "$ns" type veth peer name "port$i" netns "$SWITCH"
    ip -n "$SWITCH" link set "port$i" master br0 up
    ip -n "$ns" addr add "$addr/24" dev "veth$i"
    ip -n "$ns" link set "veth$i" up
  done
  "$PY" -m pocnode federation create --members "$n" --dir "$dir" \
    --endpoint-template 'https://10.231.0.1{index:02d}:7443' --listen-host 0.0.0.0 \
    --peer-port 7443 --operator-port 7444 >/dev/null
  local i=0
  while read -r member_dir; do
    i=$((i + 1))
    ip netns exec "poc$i" "$PY" -m pocnode run --data-dir "$member_dir" \
      >>"$member_dir/node.log" 2>&1 </dev/null &
    echo $! >"$member_dir/node.pid"
    echo "poc$i" >"$member_dir/netns"
  done < <(members_of "$dir")
  echo "federation of $n nodes starting in $dir"
}

health() {  # health NAMESPACE -> exit 0 if the node there answers /v1/health
  ip netns exec "$1" "$PY" -c 'import json,sys,urllib.request
sys.exit(0 if json.load(urllib.request.urlopen("http://127.0.0.1:7444/v1/health", timeout=3))["status"] == "ok" else 1)' 2>/dev/null
}

status() {
  while read -r member_dir; do
    local ns; ns=$(cat "$member_dir/netns" 2>/dev/null || echo "?")
    if [ "$ns" != "?" ] && health "$ns"; then s=up; else s=down; fi
    printf '%s\t%s\t%s\n' "$(basename "$member_dir")" "$ns" "$s"
  done < <(members_of "$1")
}

down() {
  local dir=$1
  if [ -d "$dir" ]; then
    while read -r member_dir; do
      [ -f "$member_dir/node.pid" ] && kill -TERM "$(cat "$member_dir/node.pid")" 2>/dev/null || true
    done < <(members_of "$dir")
    for _ in $(seq 1 200); do   # up to 20 s for graceful stops
      local alive=0
      while read -r member_dir; do
        [ -f "$member_dir/node.pid" ] && kill -0 "$(cat "$member_dir/node.pid")" 2>/dev/null && alive=1
      done < <(members_of "$dir")
      [ "$alive" = 0 ] && break
      sleep 0.1
    done
    while read -r member_dir; do
      [ -f "$member_dir/node.pid" ] && kill -KILL "$(cat "$member_dir/node.pid")" 2>/dev/null || true
      rm -f "$member_dir/node.pid" "$member_dir/netns"
    done < <(members_of "$dir")
  fi
  for ns in $(ip netns list | awk '{print $1}' | grep -E '^poc([0-9]+|sw)$' || true); do
    ip netns delete "$ns"
  done
}

case "${1:-}" in
  up) [ $# -eq 3 ] || usage; up "$2" "$3" ;;
  status) [ $# -eq 2 ] || usage; status "$2" ;;
  down) [ $# -eq 2 ] || usage; down "$2" ;;
  *) usage ;;
esac
