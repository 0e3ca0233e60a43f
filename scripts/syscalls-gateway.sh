#!/usr/bin/env bash
# Counts what the kernel does per proxied request, for signalbox and for nginx as the proxy,
# configured as in scripts/bench-gateway.sh: system calls (perf's syscall tracepoints) and TCP
# segments on loopback (nstat). It answers "is the gap to nginx in the kernel or in user
# space?" where wall-clock runs on two shared cores cannot.
#
#   scripts/syscalls-gateway.sh BINARY        e.g. target/dist/signalbox
#
# Each proxy in turn: 2 s of `wrk -t2 -c64` to warm up, then 5 s counted. nstat's counters are
# machine-wide, so run it on an otherwise quiet machine. Everything runs on 127.0.0.1 and every
# process it starts is stopped by PID on exit.
set -euo pipefail
BIN=${1:?usage: syscalls-gateway.sh BINARY}
PORT_BASE=${PORT_BASE:-19200}
UP=$((PORT_BASE + 1)) PX=$((PORT_BASE + 2)) ADMIN=$((PORT_BASE + 13))
# shellcheck source=lib/proxy-rig.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/proxy-rig.sh"
rig_need perf nstat wrk curl
rig_start syscalls
rig_upstream_conf "$UP" 2
rig_proxy_conf "$PX" "$UP" 2
rig_gateway_yaml "$PX" "$ADMIN" "$UP" 2

EVENTS=syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_read,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_getsockopt,syscalls:sys_enter_futex,context-switches

measure() { # NAME
    local pids reqs
    for _ in $(seq 300); do curl -fs -o /dev/null "http://127.0.0.1:$PX/" && break; sleep 0.1; done
    wrk -t2 -c64 -d2s "http://127.0.0.1:$PX/" >/dev/null
    if [ "$1" = nginx ]; then pids=$(pgrep -P "${PIDS[-1]}" | paste -sd,); else pids=${PIDS[-1]}; fi
    nstat -n >/dev/null
    perf stat -e "$EVENTS" -x, -o "$D/stat.txt" -p "$pids" -- sleep 5.5 &
    local perf_pid=$!
    sleep 0.2
    reqs=$(wrk -t2 -c64 -d5s "http://127.0.0.1:$PX/" | awk '/requests in/{print $1}')
    nstat >"$D/nstat.txt"
    wait "$perf_pid"
    echo "## $1: $reqs requests in 5 s"
    awk -F, -v n="$reqs" '$1 ~ /^[0-9]+$/ {sub("syscalls:sys_enter_", "", $3); printf "  %-18s %7.3f per request\n", $3, $1 / n}' "$D/stat.txt"
    awk -v n="$reqs" '$1 ~ /^Tcp(OutSegs|ExtTCPPureAcks|ExtDelayedACKs|RetransSegs)$/ {printf "  %-18s %7.3f per request (whole machine)\n", $1, $2 / n}' "$D/nstat.txt"
}

"$NGINX" -e "$D/up.err" -c "$D/up.conf" &
UP_PID=$!
TOKIO_WORKER_THREADS=2 "$BIN" gateway --config "$D/gw.yaml" 2>"$D/gw.log" &
PIDS=("$UP_PID" $!)
measure signalbox
kill "${PIDS[1]}"
wait "${PIDS[1]}" 2>/dev/null || true
"$NGINX" -e "$D/px.err" -c "$D/px.conf" &
PIDS=("$UP_PID" $!)
measure nginx
