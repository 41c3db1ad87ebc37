#!/usr/bin/env bash
# Set up, start the server with one local worker, generate one video and print its URL.
# The server keeps running afterwards; stop it with: scripts/stop.sh
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1

HOME_DIR=${CINECLOUD_SERVER__HOME:-.cinecloud}
PORT=${CINECLOUD_SERVER__PORT:-8000}
URL="http://127.0.0.1:${PORT}"
mkdir -p "$HOME_DIR"
pidfile="$HOME_DIR/server.pid"

if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "server already running (pid $(cat "$pidfile"))" >&2
else
  setsid cinecloud serve --port "$PORT" --workers 1 >"$HOME_DIR/server.log" 2>&1 &
  echo $! > "$pidfile"
  echo "starting server (log: $HOME_DIR/server.log)" >&2
fi
for _ in $(seq 1 120); do
  curl -fs "$URL/readyz" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fs "$URL/readyz" >/dev/null || { echo "server did not start; see $HOME_DIR/server.log" >&2; exit 1; }

cinecloud generate "${1:-a red circle bouncing on a clear sky background}" --server "$URL" -o out.mp4
echo "video written to out.mp4; server still running at $URL (stop: scripts/stop.sh)" >&2
