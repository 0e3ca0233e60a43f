# Sourced by scripts/profile-gateway.sh and scripts/syscalls-gateway.sh: the loopback rig they
# share, so both measure the same upstream, the same nginx proxy and the same gateway config
# (those of scripts/bench-gateway.sh).
#
#   rig_need TOOL...                  exits with an install hint when one is missing; sets NGINX
#   rig_start NAME                    temp dir $D, PIDS stopped (and $D removed) on exit
#   rig_upstream_conf PORT WORKERS    $D/up.conf: nginx `return 200` with a 48-byte JSON body
#   rig_proxy_conf PORT UP WORKERS    $D/px.conf: nginx as the reverse proxy; with 1 worker and
#                                     no master, so the process started is the one proxying
#   rig_gateway_yaml PORT ADMIN UP WORKERS   $D/gw.yaml: signalbox with one route to UP

rig_need() {
    local tool pkg
    for tool in "$@"; do
        command -v "$tool" >/dev/null && continue
        case $tool in
            valgrind | callgrind_*) pkg=valgrind ;;
            perf) pkg=linux-perf ;;
            nstat) pkg=iproute2 ;;
            *) pkg=$tool ;;
        esac
        echo "needs $tool (apt-get install -y $pkg)" >&2
        exit 1
    done
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    [ -x "$NGINX" ] || { echo "needs nginx (apt-get install -y nginx-light)" >&2; exit 1; }
}

rig_start() {
    D=$(mktemp -d "/tmp/signalbox-$1.XXXXXX")
    chmod 755 "$D"
    mkdir -p "$D/tmp" && chmod 777 "$D/tmp"
    PIDS=()
    trap 'rig_stop; rm -rf "$D"' EXIT
}

rig_stop() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
}

rig_upstream_conf() {
    cat >"$D/up.conf" <<NG
daemon off; master_process on; worker_processes $2; pid $D/up.pid; error_log $D/up.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_timeout 120s; keepalive_requests 10000000;
  client_body_temp_path $D/tmp/b; proxy_temp_path $D/tmp/p;
  server { listen 127.0.0.1:$1; default_type application/json;
    location / { return 200 '{"id":42,"name":"signalbox-bench","status":"ok"}'; } } }
NG
}

rig_proxy_conf() {
    local master=on
    [ "$3" = 1 ] && master=off
    cat >"$D/px.conf" <<NG
daemon off; master_process $master; worker_processes $3; pid $D/px.pid; error_log $D/px.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_timeout 120s; keepalive_requests 10000000;
  client_body_temp_path $D/tmp/b2; proxy_temp_path $D/tmp/p2;
  upstream origin { server 127.0.0.1:$2; keepalive 256; keepalive_requests 10000000; keepalive_timeout 60s; }
  server { listen 127.0.0.1:$1;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto \$scheme; } } }
NG
}

rig_gateway_yaml() {
    cat >"$D/gw.yaml" <<Y
listen: 127.0.0.1:$1
admin: { listen: 127.0.0.1:$2 }
server: { workers: $4 }
log: { level: warn, access_log: false }
upstreams:
  origin: { targets: [127.0.0.1:$3] }
routes:
  - { name: all, paths: [/], split: { origin: 100 } }
Y
}
