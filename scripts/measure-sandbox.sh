#!/usr/bin/env bash
# Measures `signalbox sandbox --no-tui`: time from spawn to its READY line (median of
# STARTS runs), then, on one running sandbox, the RSS of the whole process tree and its CPU
# use over WINDOW seconds at the default --rps, with the request rate its gateways served.
# Prints a Markdown summary on stdout; progress on stderr. Stops what it starts, by PID.
#
# Knobs: STARTS=5 WARM=10 WINDOW=30 PORT_BASE=31000 SIGNALBOX_BIN=path (else builds release)
set -euo pipefail

STARTS=${STARTS:-5}
WARM=${WARM:-10}
WINDOW=${WINDOW:-30}
PORT_BASE=${PORT_BASE:-31000}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HZ=$(getconf CLK_TCK)

log() { printf '[sandbox %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

if [ -n "${SIGNALBOX_BIN:-}" ]; then
    BIN=$SIGNALBOX_BIN
else
    (cd "$REPO" && cargo build --release --locked --bin signalbox >&2)
    BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/signalbox
fi
[ -x "$BIN" ] || die "no binary at $BIN"

T=$(mktemp -d /tmp/signalbox-sandbox-measure.XXXXXX)
PID=
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PID" 2>/dev/null || true
    fi
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start: launches the sandbox, waits for READY; sets PID and READY_MS.
start() {
    local out=$T/out.$1
    local t0 t1
    t0=$(date +%s%N)
    "$BIN" sandbox --no-tui --port-base "$PORT_BASE" --state-dir "$T/state.$1" >"$out" 2>"$T/err.$1" &
    PID=$!
    for _ in $(seq 1000); do
        grep -q '^READY ' "$out" && break
        kill -0 "$PID" 2>/dev/null || die "sandbox exited: $(cat "$T/err.$1")"
        sleep 0.002
    done
    t1=$(date +%s%N)
    grep -q '^READY ' "$out" || die "no READY line"
    READY_MS=$(((t1 - t0) / 1000000))
}

stop() {
    local t0 t1
    t0=$(date +%s%N)
    kill -TERM "$PID"
    wait "$PID" || die "sandbox exited non-zero on SIGTERM"
    t1=$(date +%s%N)
    STOP_MS=$(((t1 - t0) / 1000000))
    PID=
}

tree() { # PID and all descendants
    local p=$1 c
    echo "$p"
    for c in $(pgrep -P "$p" || true); do tree "$c"; done
}
rss_kib() { local s=0 p; for p in $(tree "$PID"); do s=$((s + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done; echo $s; }
ticks() { local s=0 p; for p in $(tree "$PID"); do s=$((s + $(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12+$13}'))); done; echo $s; }
served() { # requests counted by all three gateways
    local total=0 url n
    for url in $(grep '^READY ' "$T/out.$1" | sed 's/^READY //' | python3 -c 'import json,sys
d=json.load(sys.stdin)
for e in d["envs"].values(): print(e["admin"].rstrip("/") + "/metrics")'); do
        n=$(curl -fs "$url" | awk '/^signalbox_requests_total/ {s+=$NF} END {printf "%d", s}')
        total=$((total + n))
    done
    echo $total
}

ready=()
for i in $(seq 1 "$STARTS"); do
    start "$i"
    ready+=("$READY_MS")
    log "start $i: READY after ${READY_MS} ms"
    if [ "$i" -lt "$STARTS" ]; then stop; fi
done
median=$(printf '%s\n' "${ready[@]}" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')

log "warming up ${WARM}s, then measuring ${WINDOW}s"
sleep "$WARM"
r0=$(served "$STARTS")
c0=$(ticks)
sleep "$WINDOW"
c1=$(ticks)
r1=$(served "$STARTS")
rss=$(rss_kib)
procs=$(tree "$PID" | wc -l)
threads=$(awk '/^Threads:/ {print $2}' "/proc/$PID/status")
stop
cpu=$(awk -v d=$((c1 - c0)) -v hz="$HZ" -v w="$WINDOW" 'BEGIN {printf "%.1f", d*100/hz/w}')
rate=$(awk -v d=$((r1 - r0)) -v w="$WINDOW" 'BEGIN {printf "%.0f", d/w}')

cat <<EOF
## Sandbox (\`scripts/measure-sandbox.sh\`)

- Date (UTC): $(date -u +%Y-%m-%dT%H:%M:%SZ); machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)); load average before: $(cut -d' ' -f1-3 /proc/loadavg)
- Binary: \`$(basename "$BIN")\` (release), \`sandbox --no-tui\` with the default \`--rps\`.

| measure | value |
| --- | --- |
| spawn → READY, median of $STARTS starts | **$median ms** (all: ${ready[*]} ms) |
| RSS of the whole sandbox (processes: $procs, threads: $threads) | **$(awk -v k="$rss" 'BEGIN {printf "%.1f", k/1024}') MiB** |
| CPU over ${WINDOW}s, after ${WARM}s warm-up | **${cpu}% of one CPU** |
| requests served by the three gateways | $rate req/s |
| SIGTERM → exit 0 | $STOP_MS ms |
EOF
