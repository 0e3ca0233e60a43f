#!/usr/bin/env bash
# Screenshots of the real cockpit: a sandbox (--no-tui) with live traffic, the cockpit in
# tmux, `capture-pane -e` (text with colours) → aha (HTML) → headless Chromium (PNG).
#   scripts/screenshots.sh [PORT_BASE]        (needs tmux, aha, chromium; writes screenshots/*.png)
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:-24300}
TARGET=${CARGO_TARGET_DIR:-target}
BIN=${BIN:-$TARGET/debug/signalbox}
OUT=screenshots
SOCK=signalbox-shots-$$
for tool in tmux aha chromium; do
  command -v "$tool" >/dev/null || { echo "screenshots.sh: $tool is missing (apt-get install tmux aha chromium)" >&2; exit 1; }
done
[ -x "$BIN" ] || nice -n 10 cargo build --bin signalbox
WORK=$(mktemp -d)
SANDBOX_PID=
cleanup() {
  tmux -L "$SOCK" kill-server 2>/dev/null || true
  [ -n "$SANDBOX_PID" ] && kill "$SANDBOX_PID" 2>/dev/null && wait "$SANDBOX_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" sandbox --no-tui --port-base "$BASE" --rps 20 --state-dir "$WORK/state" >"$WORK/ready" 2>"$WORK/sandbox.err" &
SANDBOX_PID=$!
for _ in $(seq 100); do grep -q '^READY' "$WORK/ready" && break; sleep 0.1; done
grep -q '^READY' "$WORK/ready" || { cat "$WORK/sandbox.err" >&2; exit 1; }
CONFIG="$WORK/state/signalbox.toml"
# Something to look at: dev's payments canary answers 30% of its requests with 500.
"$BIN" sandbox fault --config "$CONFIG" --env dev --service payments --version v2 --error-rate 0.3 >/dev/null

wait_for() { # text, then up to 10 s
  for _ in $(seq 100); do tmux -L "$SOCK" capture-pane -p -t shots | grep -qF -- "$1" && return 0; sleep 0.1; done
  echo "screenshots.sh: timed out waiting for '$1'" >&2; tmux -L "$SOCK" capture-pane -p -t shots >&2; exit 1
}
keys() { tmux -L "$SOCK" send-keys -t shots -l -- "$1"; sleep 0.4; }
shot() { # name cols rows
  local name=$1 cols=$2 rows=$3
  tmux -L "$SOCK" capture-pane -e -p -t shots >"$WORK/$name.ansi"
  aha --black --title "signalbox: $name" <"$WORK/$name.ansi" \
    | sed 's#<pre>#<pre style="font-family:DejaVu Sans Mono,monospace;font-size:14px;line-height:16px;margin:8px">#' \
    >"$WORK/$name.html"
  local w=$((cols * 85 / 10 + 16)) h=$((rows * 16 + 16))
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1 \
    --window-size="$w,$h" --screenshot="$OUT/$name.png" "file://$WORK/$name.html" >/dev/null 2>&1
  echo "wrote $OUT/$name.png"
}
start() { # cols rows
  tmux -L "$SOCK" kill-server 2>/dev/null || true
  while tmux -L "$SOCK" list-sessions >/dev/null 2>&1; do sleep 0.1; done
  sleep 0.5
  tmux -L "$SOCK" new-session -d -s shots -x "$1" -y "$2" "TERM=xterm-256color $BIN --config $CONFIG"
  wait_for "connected"
  sleep "${SETTLE:-20}" # metrics history for the sparklines
}

mkdir -p "$OUT"
start 160 48
keys j; sleep 1
shot overview 160 48
keys a; shot all-environments 160 48
keys o; keys 2; keys j; keys +; wait_for "confirm change"; shot confirm-dialog 160 48
tmux -L "$SOCK" send-keys -t shots Escape; sleep 0.5
keys H; keys j; sleep 1; shot history 160 48
keys o; keys :; keys 'weight payments 30'; shot palette 160 48
tmux -L "$SOCK" send-keys -t shots Escape
start 80 24
keys j; sleep 1; shot overview-80x24 80 24
keys a; shot all-environments-80x24 80 24
