#!/usr/bin/env bash
# A pocnode federation across network namespaces: each node a separate "host" with its own
# address on a private bridge, as states' nodes would be. Needs root and iproute2.
#
#   deploy/netns-federation.sh up DIR N      create hosts poc1..pocN on a bridge, a federation
#                                            of N members in DIR (empty or absent), start
#                                            every node in its namespace, wait until each
#                                            answers
#   deploy/netns-federation.sh status DIR    each member, its namespace and address, and
#                                            whether its node answers (exit 1 if one does not)
#   deploy/netns-federation.sh down DIR      stop every node (SIGTERM, SIGKILL after 20 s)
#                                            and delete every namespace; safe to repeat
#
# Layout: namespace pocsw holds bridge br0; namespace pocI (I = 1..N, N <= 99) holds eth0,
# one end of a veth pair whose other end is port I of br0, address 10.231.0.1XX/24 (XX = I,
# two digits). Every member advertises https://10.231.0.1XX:7443; its operator API is on
# 127.0.0.1:7444 inside its own namespace. Nothing is created or changed in the host's own
# namespace: no link, no address, no route. The interpreter is $POCNODE_PYTHON (default
# python3), which must have pocnode installed. Logs: DIR/<MEMBER>/node.log.
set -euo pipefail

PY="${POCNODE_PYTHON:-python3}"
SWITCH=pocsw
SUBNET=10.231.0
PEER_PORT=7443
OPERATOR_PORT=7444
# A node starts in about a second; thirty means something is wrong (see its node.log).
START_TIMEOUT_S=30
# The daemon stops gracefully on SIGTERM within a second or two; SIGKILL after this.
STOP_TIMEOUT_S=20

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
  exit 2
}

die() { echo "netns-federation: $*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" -eq 0 ] || die "needs root (ip netns)"
  command -v ip >/dev/null || die "needs ip (iproute2)"
}

# Member data directories of DIR, one per line.
member_dirs() {
  local d
  for d in "$1"/*/; do
    if [ -f "${d}config.toml" ]; then echo "${d%/}"; fi
  done
}

# The namespace index of a member: from the address it advertises, 10.231.0.1XX -> XX.
member_index() {
  local xx
  xx=$(sed -n 's|^advertise = "https://10\.231\.0\.1\([0-9][0-9]\):7443".*|\1|p' "$1/config.toml")
  [ -n "$xx" ] || die "$1/config.toml does not advertise https://${SUBNET}.1XX:${PEER_PORT}"
  echo $((10#$xx))
}

# Namespaces this script creates (pocsw, poc1, poc2, ...) that exist now.
our_namespaces() {
  ip netns list | awk '{print $1}' | grep -E "^(${SWITCH}|poc[0-9]+)\$" || true
}

# True if PID is a `pocnode run` process: a stale pid file must not make us signal a
# process that has since taken its number.
is_node() {
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -- '-m pocnode run'
}

# True while PID is a live process (a zombie awaiting its reaper counts as gone).
alive() {
  local state
  # The state follows the parenthesised command name, which may itself hold spaces.
  state=$(sed -n 's/^.*) \([A-Za-z]\) .*/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

health() {  # health NAMESPACE: exit 0 if the node there answers /v1/health with "ok"
  ip netns exec "$1" "$PY" -c '
import json, sys, urllib.request
url = "http://127.0.0.1:%s/v1/health" % sys.argv[1]
with urllib.request.urlopen(url, timeout=3) as resp:
    sys.exit(0 if json.load(resp).get("status") == "ok" else 1)
' "$OPERATOR_PORT" >/dev/null 2>&1
}

# On any failure of `up` (set -e or die), say how to undo what was made so far.
UP_DIR=
up_failed() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "netns-federation: up failed; clean up with: $0 down $UP_DIR" >&2
  fi
}

up() {
  local dir=$1 n=$2 i ns addr d idx pid member
  if ! [[ "$n" =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ] || [ "$n" -gt 99 ]; then
    die "N must be a number from 1 to 99, got '$n'"
  fi
  need_root
  if ! "$PY" -P -m pocnode --version >/dev/null 2>&1; then
    die "$PY cannot run pocnode (set POCNODE_PYTHON to a Python that has it installed)"
  fi
  if [ -n "$(our_namespaces)" ]; then
    die "namespaces from an earlier run exist ($(our_namespaces | tr '\n' ' ')): run down first"
  fi
  if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ]; then die "$dir is not empty"; fi
  UP_DIR=$dir
  trap up_failed EXIT

  ip netns add "$SWITCH"
  ip -n "$SWITCH" link set lo up
  ip -n "$SWITCH" link add br0 type bridge
  ip -n "$SWITCH" link set br0 up
  for i in $(seq 1 "$n"); do
    ns="poc$i"
    addr=$(printf '%s.1%02d' "$SUBNET" "$i")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # Both ends are made inside our namespaces (eth0 in the simulated host, port$i in the
    # switch), never in the real host's own namespace.
    ip -n "$ns" link add eth0 type veth peer name "port$i" netns "$SWITCH"
    ip -n "$SWITCH" link set "port$i" master br0
    ip -n "$SWITCH" link set "port$i" up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
  done

  "$PY" -P -m pocnode federation create --members "$n" --dir "$dir" \
    --endpoint-template "https://${SUBNET}.1{index:02d}:${PEER_PORT}" --listen-host 0.0.0.0 \
    --peer-port "$PEER_PORT" --operator-port "$OPERATOR_PORT" >/dev/null

  while read -r d; do
    idx=$(member_index "$d")
    ns="poc$idx"
    echo "$ns" >"$d/netns"
    # `ip netns exec` enters the namespace and execs the interpreter: $! is the node's pid.
    PYTHONUNBUFFERED=1 ip netns exec "$ns" "$PY" -P -m pocnode run --data-dir "$d" \
      </dev/null >>"$d/node.log" 2>&1 &
    echo "$!" >"$d/node.pid"
  done < <(member_dirs "$dir")

  local deadline=$((SECONDS + START_TIMEOUT_S))
  while read -r d; do
    member=$(basename "$d")
    ns=$(cat "$d/netns")
    pid=$(cat "$d/node.pid")
    until health "$ns"; do
      if ! alive "$pid"; then
        tail -n 5 "$d/node.log" >&2 || true
        die "$member's node (pid $pid, $ns) exited; see $d/node.log; then: $0 down $dir"
      fi
      if [ "$SECONDS" -ge "$deadline" ]; then
        die "$member's node ($ns) did not answer within ${START_TIMEOUT_S} s; see $d/node.log"
      fi
      sleep 0.2
    done
  done < <(member_dirs "$dir")
  trap - EXIT
  echo "federation of $n nodes up in $dir, one per namespace:"
  status "$dir"
}

status() {
  local dir=$1 d ns state all=0
  [ -d "$dir" ] || die "$dir does not exist"
  need_root
  printf '%-8s %-10s %-16s %s\n' member namespace address node
  while read -r d; do
    ns=$(cat "$d/netns" 2>/dev/null || echo -)
    if [ "$ns" != - ] && ip netns list | awk '{print $1}' | grep -qx "$ns" && health "$ns"; then
      state=up
    else
      state=down
      all=1
    fi
    printf '%-8s %-10s %-16s %s\n' "$(basename "$d")" "$ns" \
      "$(printf '%s.1%02d' "$SUBNET" "$(member_index "$d")")" "$state"
  done < <(member_dirs "$dir")
  return "$all"
}

down() {
  local dir=$1 d pid ns
  need_root
  local pids=()
  if [ -d "$dir" ]; then
    while read -r d; do
      pid=$(cat "$d/node.pid" 2>/dev/null || true)
      if [ -n "$pid" ] && is_node "$pid"; then pids+=("$pid"); fi
    done < <(member_dirs "$dir")
  fi
  # Also whatever still runs inside our namespaces (a lost pid file, a node started by hand).
  for ns in $(our_namespaces); do
    while read -r pid; do
      if [ -n "$pid" ]; then pids+=("$pid"); fi
    done < <(ip netns pids "$ns" 2>/dev/null || true)
  done

  # The same node is usually found both ways: signal and count each once.
  local -A seen=()
  local unique=()
  for pid in "${pids[@]}"; do
    if [ -z "${seen[$pid]:-}" ]; then seen[$pid]=1; unique+=("$pid"); fi
  done
  pids=("${unique[@]}")
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  local deadline=$((SECONDS + STOP_TIMEOUT_S)) left
  while :; do
    left=()
    for pid in "${pids[@]}"; do if alive "$pid"; then left+=("$pid"); fi; done
    if [ "${#left[@]}" -eq 0 ] || [ "$SECONDS" -ge "$deadline" ]; then break; fi
    sleep 0.1
  done
  for pid in "${left[@]}"; do
    echo "netns-federation: pid $pid did not stop within ${STOP_TIMEOUT_S} s: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  done
  deadline=$((SECONDS + 5))
  for pid in "${left[@]}"; do
    while alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
  done

  if [ -d "$dir" ]; then
    while read -r d; do rm -f "$d/node.pid" "$d/netns"; done < <(member_dirs "$dir")
  fi
  for ns in $(our_namespaces); do ip netns delete "$ns"; done
  [ -z "$(our_namespaces)" ] || die "could not delete: $(our_namespaces | tr '\n' ' ')"
  echo "stopped ${#pids[@]} nodes; namespaces deleted"
}

case "${1:-}" in
  up) [ $# -eq 3 ] || usage; up "$2" "$3" ;;
  status) [ $# -eq 2 ] || usage; status "$2" ;;
  down) [ $# -eq 2 ] || usage; down "$2" ;;
  *) usage ;;
esac
