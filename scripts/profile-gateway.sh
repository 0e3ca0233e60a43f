#!/usr/bin/env bash
# Counts the gateway's instructions per proxied request with callgrind (valgrind), which is
# steady where wall-clock benchmarks on a shared 2-core machine are not.
#
#   scripts/profile-gateway.sh BINARY [OUT]     e.g. target/dist/signalbox /tmp/gw.callgrind
#   scripts/profile-gateway.sh nginx [OUT]      nginx as the proxy, configured as in
#                                               scripts/bench-gateway.sh: the yardstick
#
# One nginx `return 200` upstream (the one scripts/bench-gateway.sh uses), the gateway under
# callgrind with one serving thread, 3 s of wrk to warm up, then instrumentation on for 10 s
# of `wrk -t1 -c8`. Prints instructions per request and the ten costliest functions;
# `callgrind_annotate OUT.1` shows the rest. Everything runs on 127.0.0.1 and every process
# it starts is stopped by PID on exit.
set -euo pipefail
BIN=${1:?usage: profile-gateway.sh BINARY|nginx [OUT]}
OUT=${2:-$(mktemp -u /tmp/signalbox-gw.XXXXXX).callgrind}
PORT_BASE=${PORT_BASE:-19100}
UP=$((PORT_BASE + 1)) GW=$((PORT_BASE + 3)) ADMIN=$((PORT_BASE + 13))
# shellcheck source=lib/proxy-rig.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/proxy-rig.sh"
rig_need valgrind callgrind_control callgrind_annotate wrk curl
rig_start profile
rig_upstream_conf "$UP" 1
rig_gateway_yaml "$GW" "$ADMIN" "$UP" 1
"$NGINX" -e "$D/up.err" -c "$D/up.conf" &
PIDS+=($!)
if [ "$BIN" = nginx ]; then
    # One worker, no master: the process valgrind starts is the one that proxies.
    rig_proxy_conf "$GW" "$UP" 1
    valgrind --tool=callgrind --callgrind-out-file="$OUT" --instr-atstart=no \
        "$NGINX" -e "$D/px.err" -c "$D/px.conf" 2>"$D/gw.log" &
else
    TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$OUT" --instr-atstart=no \
        "$BIN" gateway --config "$D/gw.yaml" 2>"$D/gw.log" &
fi
GW_PID=$!
PIDS+=("$GW_PID")
for _ in $(seq 600); do curl -fs -o /dev/null "http://127.0.0.1:$GW/" && break; sleep 0.2; done
wrk -t1 -c8 -d3s "http://127.0.0.1:$GW/" >/dev/null
callgrind_control -i on "$GW_PID" >/dev/null 2>&1
REQS=$(wrk -t1 -c8 -d10s "http://127.0.0.1:$GW/" | awk '/requests in/{print $1}')
callgrind_control -i off "$GW_PID" >/dev/null 2>&1
callgrind_control -d "$GW_PID" >/dev/null 2>&1
sleep 1
TOTAL=$(callgrind_annotate "$OUT.1" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
echo "requests: $REQS  instructions: $TOTAL  per request: $((TOTAL / REQS))"
callgrind_annotate --auto=no "$OUT.1" 2>/dev/null | grep -E '^ *[0-9,]+ \(' | sed -n '2,11p' | cut -c1-160
echo "profile: $OUT.1"
