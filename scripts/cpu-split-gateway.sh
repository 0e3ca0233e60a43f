#!/usr/bin/env bash
# Splits each proxy's CPU per request into user and system time (from /proc/PID/task/*/stat),
# signalbox against nginx as the proxy, configured as in scripts/bench-gateway.sh: where
# instruction counts are level, it says whether the rest of the gap is in user space (cache,
# branches: fewer instructions per cycle) or in the kernel.
#
#   scripts/cpu-split-gateway.sh BINARY [ROUNDS]     e.g. target/dist/signalbox 3
#
# Each round: signalbox, then nginx, each 2 s of `wrk -t2 -c64` to warm up and 8 s counted.
# Everything runs on 127.0.0.1 and every process it starts is stopped by PID on exit.
set -euo pipefail
BIN=${1:?usage: cpu-split-gateway.sh BINARY [ROUNDS]}
ROUNDS=${2:-3}
PORT_BASE=${PORT_BASE:-19400}
UP=$((PORT_BASE + 1)) PX=$((PORT_BASE + 2)) ADMIN=$((PORT_BASE + 13))
# shellcheck source=lib/proxy-rig.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/proxy-rig.sh"
rig_need wrk curl
rig_start cpu-split
rig_upstream_conf "$UP" 2
rig_proxy_conf "$PX" "$UP" 2
rig_gateway_yaml "$PX" "$ADMIN" "$UP" 2
HZ=$(getconf CLK_TCK)
cpu() { # PIDS... -> "utime stime" summed over processes' threads
    local u=0 s=0 p f
    for p in "$@"; do
        for f in /proc/$p/task/*/stat; do
            read -r -a a < "$f" || continue
            u=$((u + a[13])); s=$((s + a[14]))
        done
    done
    echo "$u $s"
}
measure() {
    local pids reqs
    for _ in $(seq 300); do curl -fs -o /dev/null "http://127.0.0.1:$PX/" && break; sleep 0.1; done
    wrk -t2 -c64 -d2s "http://127.0.0.1:$PX/" >/dev/null
    if [ "$1" = nginx ]; then pids=$(pgrep -P "${PIDS[-1]}"); else pids=${PIDS[-1]}; fi
    read -r u0 s0 < <(cpu $pids)
    reqs=$(wrk -t2 -c64 -d8s "http://127.0.0.1:$PX/" | awk '/requests in/{print $1}')
    read -r u1 s1 < <(cpu $pids)
    awk -v n="$reqs" -v u=$((u1-u0)) -v s=$((s1-s0)) -v hz="$HZ" -v who="$1" 'BEGIN{printf "%-10s %8d req  user %5.1f us/req  sys %5.1f us/req\n", who, n, u/hz/n*1e6, s/hz/n*1e6}'
}
"$NGINX" -e "$D/up.err" -c "$D/up.conf" &
UP_PID=$!
for _ in $(seq "$ROUNDS"); do
    TOKIO_WORKER_THREADS=2 "$BIN" gateway --config "$D/gw.yaml" 2>"$D/gw.log" &
    PIDS=("$UP_PID" $!)
    measure signalbox
    kill "${PIDS[1]}"; wait "${PIDS[1]}" 2>/dev/null || true
    "$NGINX" -e "$D/px.err" -c "$D/px.conf" &
    PIDS=("$UP_PID" $!)
    measure nginx
    kill "${PIDS[1]}"; wait "${PIDS[1]}" 2>/dev/null || true
    sleep 1
done
PIDS=("$UP_PID")
