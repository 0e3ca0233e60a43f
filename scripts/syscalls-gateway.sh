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
for tool in perf nstat wrk curl; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y linux-perf iproute2 wrk curl)" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "needs nginx (apt-get install -y nginx-light)" >&2; exit 1; }

D=$(mktemp -d /tmp/signalbox-syscalls.XXXXXX)
chmod 755 "$D"
mkdir -p "$D/tmp" && chmod 777 "$D/tmp"
PIDS=()
stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
}
trap 'stop_all; rm -rf "$D"' EXIT

cat >"$D/up.conf" <<NG
daemon off; master_process on; worker_processes 2; pid $D/up.pid; error_log $D/up.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_timeout 120s; keepalive_requests 10000000;
  client_body_temp_path $D/tmp/b; proxy_temp_path $D/tmp/p;
  server { listen 127.0.0.1:$UP; default_type application/json;
    location / { return 200 '{"id":42,"name":"signalbox-bench","status":"ok"}'; } } }
NG
cat >"$D/px.conf" <<NG
daemon off; master_process on; worker_processes 2; pid $D/px.pid; error_log $D/px.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_timeout 120s; keepalive_requests 10000000;
  client_body_temp_path $D/tmp/b2; proxy_temp_path $D/tmp/p2;
  upstream origin { server 127.0.0.1:$UP; keepalive 256; keepalive_requests 10000000; keepalive_timeout 60s; }
  server { listen 127.0.0.1:$PX;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto \$scheme; } } }
NG
cat >"$D/gw.yaml" <<Y
listen: 127.0.0.1:$PX
admin: { listen: 127.0.0.1:$ADMIN }
server: { workers: 2 }
log: { level: warn, access_log: false }
upstreams:
  origin: { targets: [127.0.0.1:$UP] }
routes:
  - { name: all, paths: [/], split: { origin: 100 } }
Y

EVENTS=syscalls:sys_enter_recvfrom,syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_read,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_getsockopt,syscalls:sys_enter_futex,context-switches

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
