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
for tool in valgrind callgrind_control callgrind_annotate wrk curl; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y valgrind wrk curl)" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "needs nginx (apt-get install -y nginx-light)" >&2; exit 1; }

D=$(mktemp -d /tmp/signalbox-profile.XXXXXX)
chmod 755 "$D"
mkdir -p "$D/tmp" && chmod 777 "$D/tmp"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$D"
}
trap cleanup EXIT

cat >"$D/up.conf" <<NG
daemon off; master_process on; worker_processes 1; pid $D/up.pid; error_log $D/up.err warn;
events { worker_connections 1024; }
http { access_log off; keepalive_timeout 120s; keepalive_requests 10000000;
  client_body_temp_path $D/tmp/b; proxy_temp_path $D/tmp/p;
  server { listen 127.0.0.1:$UP; default_type application/json;
    location / { return 200 '{"id":42,"name":"signalbox-bench","status":"ok"}'; } } }
NG
cat >"$D/gw.yaml" <<Y
listen: 127.0.0.1:$GW
admin: { listen: 127.0.0.1:$ADMIN }
server: { workers: 1 }
log: { level: warn, access_log: false }
upstreams:
  origin: { targets: [127.0.0.1:$UP] }
routes:
  - { name: all, paths: [/], split: { origin: 100 } }
Y
"$NGINX" -e "$D/up.err" -c "$D/up.conf" &
PIDS+=($!)
if [ "$BIN" = nginx ]; then
    # One worker, no master: the process valgrind starts is the one that proxies.
    cat >"$D/px.conf" <<NG
daemon off; master_process off; worker_processes 1; pid $D/px.pid; error_log $D/px.err warn;
events { worker_connections 1024; }
http { access_log off; keepalive_timeout 120s; keepalive_requests 10000000;
  client_body_temp_path $D/tmp/b2; proxy_temp_path $D/tmp/p2;
  upstream origin { server 127.0.0.1:$UP; keepalive 256; keepalive_requests 10000000; keepalive_timeout 60s; }
  server { listen 127.0.0.1:$GW;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto \$scheme; } } }
NG
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
