#!/usr/bin/env bash
# Stop the server that scripts/demo.sh started (and its local workers).
set -euo pipefail
cd "$(dirname "$0")/.."
pidfile="${CINECLOUD_SERVER__HOME:-.cinecloud}/server.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  kill -TERM -- "-$(cat "$pidfile")" 2>/dev/null || kill -TERM "$(cat "$pidfile")"
  echo "stopped server $(cat "$pidfile")"
fi
rm -f "$pidfile"
