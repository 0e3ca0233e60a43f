#!/usr/bin/env bash
# Benchmarks the signalbox gateway against nginx as a reverse proxy, on 127.0.0.1 only.
#
# One nginx `return 200` upstream is shared by three proxies: nginx, signalbox with no
# plugins, and signalbox with key_auth + rate_limit (a limit that never triggers). wrk
# measures each in turn, rotating the order every round, so slow drift on a shared machine
# hits all three alike. Before each measurement the script waits for the machine to be
# quiet, and it measures how much CPU other processes took during the run; a run that
# competed with something else is repeated (see FOREIGN_MAX). Then it measures signalbox's
# memory idle and with HOLD_CONNS idle keep-alive connections.
#
# Progress goes to stderr, the Markdown summary to stdout; RESULTS_TSV=FILE keeps the raw
# per-run numbers. Every process it starts is stopped by PID on exit.
#
# Knobs (environment): ROUNDS=5 DURATION=10 THREADS=2 CONNS=64 WARMUP=3 HOLD_CONNS=1000
#   PORT_BASE=18000 IDLE_BUSY_MAX=10 IDLE_WAIT_MAX=900 FOREIGN_MAX=10 RETRIES=3
#   WORKERS=$(nproc) (nginx worker_processes and signalbox's tokio worker threads)
#   SIGNALBOX_BIN=path: measure this binary instead of building the working tree
#   RESULTS_TSV=path: keep the per-run numbers
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
CONNS=${CONNS:-64}
WARMUP=${WARMUP:-3}
HOLD_CONNS=${HOLD_CONNS:-1000}
PORT_BASE=${PORT_BASE:-18000}
IDLE_BUSY_MAX=${IDLE_BUSY_MAX:-10} # % of all CPUs others may use before a run starts
IDLE_WAIT_MAX=${IDLE_WAIT_MAX:-900} # seconds to wait for that, per run
FOREIGN_MAX=${FOREIGN_MAX:-10}      # % of all CPUs others may take during a run
RETRIES=${RETRIES:-3}               # attempts per run when others competed
NCPU=$(nproc)
WORKERS=${WORKERS:-$NCPU}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
HZ=$(getconf CLK_TCK)

UP_PORT=$((PORT_BASE + 1))
NGX_PORT=$((PORT_BASE + 2))
SB_PORT=$((PORT_BASE + 3))
SBF_PORT=$((PORT_BASE + 4))
SB_ADMIN=$((PORT_BASE + 13))
SBF_ADMIN=$((PORT_BASE + 14))

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# --- prerequisites ------------------------------------------------------------------
need_pkgs=()
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v curl >/dev/null || need_pkgs+=(curl)
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || need_pkgs+=(nginx)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${need_pkgs[*]}: install them (apt-get install -y wrk nginx-light curl)"
    pkgs=("${need_pkgs[@]/nginx/nginx-light}")
    log "installing ${pkgs[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}" >&2; then
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}" >&2 ||
            DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_pkgs[@]}" >&2
    fi
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi

if [ -n "${SIGNALBOX_BIN:-}" ]; then
    SB_BIN=$SIGNALBOX_BIN
    [ -x "$SB_BIN" ] || die "SIGNALBOX_BIN=$SB_BIN is not an executable"
    log "using $SB_BIN (SIGNALBOX_BIN), not building"
else
    log "building signalbox (the dist profile: release + fat LTO, what ships)"
    (cd "$REPO" && nice -n 10 cargo build --profile dist --locked --bin signalbox >&2)
    SB_BIN=$TARGET_DIR/dist/signalbox
    [ -x "$SB_BIN" ] || die "the build produced no $SB_BIN"
fi

# Held connections and wrk need descriptors beyond the usual 1024.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -gt $((HOLD_CONNS + 512)) ] || die "open-file limit $(ulimit -n) is too low for HOLD_CONNS=$HOLD_CONNS"

for p in $UP_PORT $NGX_PORT $SB_PORT $SBF_PORT $SB_ADMIN $SBF_ADMIN; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        die "port $p is in use; set PORT_BASE"
    fi
done

# --- processes and cleanup ------------------------------------------------------------
T=$(mktemp -d /tmp/signalbox-bench.XXXXXX)
chmod 755 "$T"
# The connection holder uses only std; rustc builds it in a second, where `cargo build
# --example` would first build every dev-dependency in release.
HOLD_BIN=$T/hold_connections
RUSTC=$(cd "$REPO" && rustup which rustc 2>/dev/null || command -v rustc)
"$RUSTC" --edition 2024 -O "$REPO/examples/hold_connections.rs" -o "$HOLD_BIN" >&2 ||
    { rm -rf "$T"; die "cannot build examples/hold_connections.rs"; }
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() { # URL [CURL_ARGS...]: until it answers 2xx, up to 30 s
    local url=$1
    shift
    for _ in $(seq 300); do
        curl -fs -o /dev/null "$@" "$url" && return 0
        sleep 0.1
    done
    die "$url did not come up"
}

nginx_conf() { # NAME SERVER_BLOCK [HTTP_EXTRA]
    local d=$T/$1
    mkdir -p "$d/tmp"
    chmod 777 "$d/tmp"
    cat >"$d/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $WORKERS;
worker_rlimit_nofile 65536;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_timeout 120s;
    keepalive_requests 10000000;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    ${3:-}
    $2
}
EOF
    "$NGINX" -t -q -e "$d/error.log" -c "$d/nginx.conf" || die "nginx config $1 is invalid: $(cat "$d/error.log")"
}

start_nginx() { # NAME -> sets LAST_PID
    "$NGINX" -e "$T/$1/error.log" -c "$T/$1/nginx.conf" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# The upstream: a fixed small JSON body, the cheapest answer nginx can give.
BODY='{"id":42,"name":"signalbox-bench","status":"ok"}'
nginx_conf upstream "server {
        listen 127.0.0.1:$UP_PORT;
        default_type application/json;
        location / { return 200 '$BODY'; }
    }"
start_nginx upstream
UP_PID=$LAST_PID
wait_http "http://127.0.0.1:$UP_PORT/"

# nginx as the reverse proxy: keep-alive pool to the upstream, the usual forwarding headers
# (signalbox adds X-Forwarded-For/-Proto too), no access log.
nginx_conf proxy "server {
        listen 127.0.0.1:$NGX_PORT;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }" "upstream origin {
        server 127.0.0.1:$UP_PORT;
        keepalive 256;
        keepalive_requests 10000000;
        keepalive_timeout 60s;
    }"
start_nginx proxy
NGX_PID=$LAST_PID
wait_http "http://127.0.0.1:$NGX_PORT/"

API_KEY=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export SIGNALBOX_BENCH_API_KEY=$API_KEY
# The main runtime (accept, admin API) is tokio's multi-thread one; requests run on
# `server.workers` serving threads (set below), one per CPU by default.
export TOKIO_WORKER_THREADS=$WORKERS

sb_conf() { # FILE PORT ADMIN_PORT PLUGINS_YAML
    cat >"$1" <<EOF
listen: 127.0.0.1:$2
admin: { listen: 127.0.0.1:$3 }
server: { workers: $WORKERS }
log: { level: warn, access_log: false }
consumers:
  - { name: bench, keys: [{ env: SIGNALBOX_BENCH_API_KEY }] }
upstreams:
  origin: { targets: [127.0.0.1:$UP_PORT] }
routes:
  - name: all
    paths: [/]
    split: { origin: 100 }
$4
EOF
    "$SB_BIN" config check "$1" >&2 || die "signalbox config $1 is invalid"
}

start_sb() { # NAME CONFIG PORT ADMIN -> sets LAST_PID
    "$SB_BIN" gateway --config "$2" 2>"$T/$1.log" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    wait_http "http://127.0.0.1:$4/readyz"
    wait_http "http://127.0.0.1:$3/" -H "X-API-Key: $API_KEY"
}

sb_conf "$T/sb-plain.yaml" $SB_PORT $SB_ADMIN ""
sb_conf "$T/sb-filters.yaml" $SBF_PORT $SBF_ADMIN "    plugins:
      key_auth: { header: X-API-Key }
      rate_limit: { per_second: 100000000, by: consumer }"

# --- measurement helpers ------------------------------------------------------------
cpu_line() { awk '/^cpu /{b=$2+$3+$4+$7+$8+$9; t=b+$5+$6; print b, t; exit}' /proc/stat; }

busy_pct() { # % of all CPUs busy over ~1 s
    local b0 t0 b1 t1
    read -r b0 t0 < <(cpu_line)
    sleep 1
    read -r b1 t1 < <(cpu_line)
    echo $(((b1 - b0) * 100 / (t1 - t0 > 0 ? t1 - t0 : 1)))
}

wait_quiet() {
    local waited=0 b
    while :; do
        b=$(busy_pct)
        if [ "$b" -le "$IDLE_BUSY_MAX" ]; then
            echo "$b"
            return
        fi
        if [ $waited -ge "$IDLE_WAIT_MAX" ]; then
            log "machine still ${b}% busy after ${waited}s; measuring anyway"
            echo "$b"
            return
        fi
        [ $((waited % 60)) = 0 ] && log "machine ${b}% busy (others); waiting for it to quiet down"
        sleep 4
        waited=$((waited + 5))
    done
}

ticks_of() { # PIDS... -> utime+stime of each process and its children processes (nginx workers)
    local all=() p
    for p in "$@"; do
        all+=("$p")
        while read -r c; do all+=("$c"); done < <(pgrep -P "$p" || true)
    done
    local sum=0 s
    for p in "${all[@]}"; do
        # Fields after the ")" that ends the command name: utime is the 12th, stime 13th.
        s=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12+$13}') || s=0
        sum=$((sum + ${s:-0}))
    done
    echo $sum
}

children_secs() { # from a saved `times` output: CPU seconds of this shell's waited children
    awk 'NR==2 {
        n=split($1" "$2, f, " "); s=0
        for (i=1;i<=n;i++) { split(f[i], a, "m"); sub("s","",a[2]); s+=a[1]*60+a[2] }
        print s }' "$1"
}

to_ms() { # wrk latency like 812.00us, 1.23ms, 1.01s
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub("us","",v); printf "%.3f", v/1000 }
        else if (v ~ /ms$/) { sub("ms","",v); printf "%.3f", v }
        else if (v ~ /m$/) { sub("m","",v); printf "%.3f", v*60000 }
        else { sub("s","",v); printf "%.3f", v*1000 } }'
}

declare -A URL PROC WRK_ARGS LABEL
URL[nginx]="http://127.0.0.1:$NGX_PORT/"
URL[sb]="http://127.0.0.1:$SB_PORT/"
URL[sbf]="http://127.0.0.1:$SBF_PORT/"
LABEL[nginx]="nginx"
LABEL[sb]="signalbox plain"
LABEL[sbf]="signalbox filters"
WRK_ARGS[nginx]=""
WRK_ARGS[sb]=""
WRK_ARGS[sbf]="X-API-Key: $API_KEY"

RESULTS=$T/results.tsv
printf 'round\ttarget\trps\tp50_ms\tp99_ms\trequests\terrors\tproxy_cpu_pct\tcpu_us_per_req\tother_cpu_pct\tbusy_before_pct\tattempts\n' >"$RESULTS"

run_wrk() { # KEY SECONDS OUT
    local hdr=()
    [ -n "${WRK_ARGS[$1]}" ] && hdr=(-H "${WRK_ARGS[$1]}")
    wrk -t"$THREADS" -c"$CONNS" -d"${2}s" --latency "${hdr[@]}" "${URL[$1]}" >"$3" 2>&1 ||
        die "wrk failed against ${LABEL[$1]}: $(cat "$3")"
}

measure() { # ROUND KEY: one wrk run, repeated when other processes competed
    local round=$1 key=$2 attempt=0 out=$T/wrk-$1-$2.txt
    local before b0 t0 b1 t1 o0 o1 p0 p1 w0 w1
    while :; do
        attempt=$((attempt + 1))
        before=$(wait_quiet)
        times >"$T/times0"
        read -r b0 t0 < <(cpu_line)
        o0=$(ticks_of "${ALL_PIDS[@]}")
        p0=$(ticks_of "${PROC[$key]}")
        run_wrk "$key" "$DURATION" "$out"
        p1=$(ticks_of "${PROC[$key]}")
        o1=$(ticks_of "${ALL_PIDS[@]}")
        read -r b1 t1 < <(cpu_line)
        times >"$T/times1"
        w0=$(children_secs "$T/times0")
        w1=$(children_secs "$T/times1")
        # Everything busy minus the benchmark's own processes (proxies, upstream, wrk).
        other=$(awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) -v o=$((o1 - o0)) -v w="$(awk -v a="$w0" -v z="$w1" 'BEGIN{print z-a}')" -v hz="$HZ" \
            'BEGIN { x = (b - o - w*hz) * 100 / (t > 0 ? t : 1); if (x < 0) x = 0; printf "%.1f", x }')
        if awk -v x="$other" -v m="$FOREIGN_MAX" 'BEGIN{exit !(x > m)}' && [ "$attempt" -lt "$RETRIES" ]; then
            log "round $round ${LABEL[$key]}: other processes took ${other}% of the CPUs; repeating"
            continue
        fi
        break
    done
    local rps p50 p99 reqs errs
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    p50=$(to_ms "$(awk '$1=="50%" {print $2}' "$out")")
    p99=$(to_ms "$(awk '$1=="99%" {print $2}' "$out")")
    reqs=$(awk '/requests in/ {print $1}' "$out")
    errs=$(awk '/Non-2xx or 3xx responses:/ {n+=$NF} /Socket errors:/ {gsub(",",""); n+=$4+$6+$8+$10} END {print n+0}' "$out")
    [ -n "$rps" ] && [ -n "$reqs" ] || die "cannot read wrk output: $(cat "$out")"
    if grep -q 'Non-2xx' "$out"; then
        die "${LABEL[$key]} answered non-2xx responses; the numbers would be meaningless: $(cat "$out")"
    fi
    local cpu_pct us_req
    cpu_pct=$(awk -v d=$((p1 - p0)) -v hz="$HZ" -v s="$DURATION" 'BEGIN{printf "%.0f", d*100/hz/s}')
    us_req=$(awk -v d=$((p1 - p0)) -v hz="$HZ" -v r="$reqs" 'BEGIN{printf "%.1f", d/hz*1e6/r}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$key" "$rps" "$p50" "$p99" "$reqs" "$errs" \
        "$cpu_pct" "$us_req" "$other" "$before" "$attempt" >>"$RESULTS"
    log "round $round ${LABEL[$key]}: ${rps} req/s, p99 ${p99} ms, proxy CPU ${cpu_pct}%, ${us_req} µs CPU/request, others ${other}%"
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
rss_tree_kib() { # a process and its direct children (nginx master + workers)
    local sum=0 p
    for p in "$1" $(pgrep -P "$1" || true); do sum=$((sum + $(rss_kib "$p"))); done
    echo $sum
}

hold_and_measure() { # NAME PORT PID RSS_FN -> sets M_IDLE M_HELD M_AFTER M_EST M_OPEN (KiB, counts)
    local name=$1 port=$2 pid=$3 fn=$4
    M_IDLE=$($fn "$pid")
    "$HOLD_BIN" "127.0.0.1:$port" "$HOLD_CONNS" 6 >"$T/hold-$name.out" 2>"$T/hold-$name.err" &
    local hp=$!
    PIDS+=("$hp")
    for _ in $(seq 600); do
        grep -q '^READY' "$T/hold-$name.out" && break
        kill -0 $hp 2>/dev/null || die "hold_connections against $name failed: $(cat "$T/hold-$name.err")"
        sleep 0.1
    done
    grep -q '^READY' "$T/hold-$name.out" || die "hold_connections against $name never got ready"
    sleep 2
    M_HELD=$($fn "$pid")
    M_EST=$(awk -v p="$(printf ':%04X' "$port")" '$2 ~ p"$" && $4=="01" {n++} END {print n+0}' /proc/net/tcp)
    wait $hp || die "hold_connections against $name failed: $(cat "$T/hold-$name.err")"
    sleep 2
    M_AFTER=$($fn "$pid")
    M_OPEN=$(awk '/^OPEN/ {print $2}' "$T/hold-$name.out")
}

# --- the runs -------------------------------------------------------------------------
log "machine: $NCPU CPUs; load: $(cut -d' ' -f1-3 /proc/loadavg)"
top -bn1 | head -15 >&2

# Memory first, on fresh processes: signalbox idle and with HOLD_CONNS idle connections.
start_sb sb "$T/sb-plain.yaml" $SB_PORT $SB_ADMIN
SB_PID=$LAST_PID
sleep 2
log "holding $HOLD_CONNS connections on signalbox"
hold_and_measure signalbox $SB_PORT $SB_PID rss_kib
SB_IDLE=$M_IDLE SB_HELD=$M_HELD SB_AFTER=$M_AFTER SB_EST=$M_EST SB_OPEN=$M_OPEN
log "holding $HOLD_CONNS connections on nginx"
hold_and_measure nginx $NGX_PORT $NGX_PID rss_tree_kib
NG_IDLE=$M_IDLE NG_HELD=$M_HELD NG_AFTER=$M_AFTER NG_EST=$M_EST NG_OPEN=$M_OPEN

start_sb sbf "$T/sb-filters.yaml" $SBF_PORT $SBF_ADMIN
SBF_PID=$LAST_PID
code=$(curl -s -o /dev/null -w '%{http_code}' "${URL[sbf]}")
[ "$code" = 401 ] || die "signalbox filters answered $code without an API key; key_auth is not on"
for k in nginx sb sbf; do
    hdr=()
    [ -n "${WRK_ARGS[$k]}" ] && hdr=(-H "${WRK_ARGS[$k]}")
    got=$(curl -fs "${hdr[@]}" "${URL[$k]}") || die "${LABEL[$k]} does not proxy"
    [ "$got" = "$BODY" ] || die "${LABEL[$k]} returned $got, not the upstream's body"
done

PROC[nginx]=$NGX_PID
PROC[sb]=$SB_PID
PROC[sbf]=$SBF_PID
ALL_PIDS=("$UP_PID" "$NGX_PID" "$SB_PID" "$SBF_PID")

log "warm-up: ${WARMUP}s each"
for k in nginx sb sbf; do run_wrk "$k" "$WARMUP" "$T/warmup-$k.txt"; done

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
order=(nginx sb sbf)
for r in $(seq 1 "$ROUNDS"); do
    for i in 0 1 2; do
        measure "$r" "${order[$(((i + r - 1) % 3))]}"
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
SB_LOADED=$(rss_kib $SB_PID)
SBF_LOADED=$(rss_kib $SBF_PID)
metrics=$(curl -fs "http://127.0.0.1:$SBF_ADMIN/metrics")
limited=$(awk '/^signalbox_rate_limited_total/ {n+=$NF} END {print n+0}' <<<"$metrics")
[ "$limited" = 0 ] || die "the rate limit triggered $limited times; raise it"
[ -n "${RESULTS_TSV:-}" ] && cp "$RESULTS" "$RESULTS_TSV"

# --- the summary --------------------------------------------------------------------
median() { # KEY COLUMN
    awk -F'\t' -v k="$1" -v c="$2" 'NR>1 && $2==k {print $c}' "$RESULTS" | sort -g |
        awk '{v[NR]=$1} END { if (NR%2) print v[(NR+1)/2]; else printf "%.3f\n", (v[NR/2]+v[NR/2+1])/2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a/b}'; }
verdict() { # VALUE OP LIMIT
    awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN{ok = (op==">=") ? v>=l : v<=l; print ok ? "met" : "**missed**"}'
}
for k in nginx sb sbf; do
    declare "RPS_$k=$(median $k 3)" "P50_$k=$(median $k 4)" "P99_$k=$(median $k 5)" \
        "CPU_$k=$(median $k 8)" "US_$k=$(median $k 9)"
done
R_RPS=$(ratio "$RPS_sb" "$RPS_nginx")
R_P99=$(ratio "$P99_sb" "$P99_nginx")
F_RPS=$(ratio "$RPS_sbf" "$RPS_sb")
F_P99=$(ratio "$P99_sbf" "$P99_sb")
N_RPS=$(ratio "$RPS_sbf" "$RPS_nginx")
N_P99=$(ratio "$P99_sbf" "$P99_nginx")
R_US=$(ratio "$US_sb" "$US_nginx")
F_US=$(ratio "$US_sbf" "$US_sb")
max_other=$(awk -F'\t' 'NR>1 && $10>m {m=$10} END {print m+0}' "$RESULTS")
repeats=$(awk -F'\t' 'NR>1 {n+=$12-1} END {print n+0}' "$RESULTS")

per_conn() { awk -v a="$1" -v b="$2" -v n="$HOLD_CONNS" 'BEGIN{printf "%.1f", (b-a)/n}'; }
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }

cat <<EOF
## signalbox gateway vs nginx

- Date (UTC): $STARTED; machine: $NCPU CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)
- Everything on 127.0.0.1 and on the same $NCPU CPUs: wrk, the proxy under test, and the upstream. Nothing is pinned.
- Upstream (shared): nginx $("$NGINX" -v 2>&1 | sed 's|.*/||') \`return 200\` with a ${#BODY}-byte JSON body, $WORKERS workers.
- nginx proxy: $WORKERS workers, keep-alive upstream pool (256), \`access_log off\`, X-Forwarded-For/-Proto set.
- signalbox: \`gateway\` with \`server.workers: $WORKERS\` serving threads (one single-threaded runtime and upstream pool each), \`access_log: false\`, level warn. Request ids and metrics are always on.
  "filters" adds \`key_auth\` and \`rate_limit\` (100,000,000/s per consumer: never triggered, checked: $limited rejections).
- Load: \`wrk -t$THREADS -c$CONNS -d${DURATION}s --latency\`, $ROUNDS rounds, each round runs all three targets with the order rotated; ${WARMUP}s warm-up each first.
- Other CPU users: load average $LOAD_BEFORE before, $LOAD_AFTER after. Each run waited for the machine to be below ${IDLE_BUSY_MAX}% busy;
  the most CPU other processes took during any kept run was ${max_other}% of the machine; runs repeated because others competed: $repeats.

### Every run

| round | target | req/s | p50 ms | p99 ms | proxy CPU % | CPU µs / req | others' CPU % | errors |
| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
$(awk -F'\t' -v a="nginx" -v b="signalbox plain" -v c="signalbox filters" 'NR>1 {
    l = ($2=="nginx") ? a : ($2=="sb") ? b : c
    printf "| %s | %s | %.0f | %.2f | %.2f | %s | %s | %s | %s |\n", $1, l, $3, $4, $5, $8, $9, $10, $7 }' "$RESULTS")

### Medians

| target | req/s | p50 ms | p99 ms | proxy CPU % | CPU µs / req |
| --- | ---: | ---: | ---: | ---: | ---: |
| nginx | $(printf '%.0f' "$RPS_nginx") | $P50_nginx | $P99_nginx | $CPU_nginx | $US_nginx |
| signalbox plain | $(printf '%.0f' "$RPS_sb") | $P50_sb | $P99_sb | $CPU_sb | $US_sb |
| signalbox filters | $(printf '%.0f' "$RPS_sbf") | $P50_sbf | $P99_sbf | $CPU_sbf | $US_sbf |

### Ratios (of medians)

| ratio | req/s | p99 | CPU / req | target | verdict |
| --- | ---: | ---: | ---: | --- | --- |
| signalbox plain / nginx | $R_RPS | $R_P99 | $R_US | req/s ≥ 1, p99 ≤ 1 | $(verdict "$R_RPS" ">=" 1), $(verdict "$R_P99" "<=" 1) |
| signalbox filters / signalbox plain | $F_RPS | $F_P99 | $F_US | req/s ≥ 0.9 | $(verdict "$F_RPS" ">=" 0.9) |
| signalbox filters / nginx | $N_RPS | $N_P99 | $(ratio "$US_sbf" "$US_nginx") | (for reference) | |

### Memory (VmRSS)

| process | idle | $HOLD_CONNS idle keep-alive connections | per connection | after they close | after the load runs |
| --- | ---: | ---: | ---: | ---: | ---: |
| signalbox | $(mib "$SB_IDLE") MiB | $(mib "$SB_HELD") MiB | $(per_conn "$SB_IDLE" "$SB_HELD") KiB | $(mib "$SB_AFTER") MiB | $(mib "$SB_LOADED") MiB (filters instance: $(mib "$SBF_LOADED") MiB) |
| nginx proxy (master + workers) | $(mib "$NG_IDLE") MiB | $(mib "$NG_HELD") MiB | $(per_conn "$NG_IDLE" "$NG_HELD") KiB | $(mib "$NG_AFTER") MiB | |

Connections established while measuring: signalbox $SB_EST, nginx $NG_EST (of $HOLD_CONNS); still open 6 s after the
last one was opened: signalbox $SB_OPEN, nginx $NG_OPEN. signalbox was measured on a freshly started process.
EOF
