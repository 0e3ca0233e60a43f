#!/usr/bin/env bash
# Runs every test. Installs what the tests need on a fresh Debian machine first:
# Prometheus (the real server, and promtool), tmux (the end-to-end TUI test) and wrk
# (the load in the changes-under-load suite).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
if ((${#need[@]})); then
    echo "installing test dependencies: ${need[*]}" >&2
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cargo test --locked "$@"
