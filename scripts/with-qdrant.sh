#!/usr/bin/env bash
# Runs a command with a fresh Qdrant server for the Qdrant test suites: starts the Qdrant binary
# of MIRAGE_QDRANT_TOOLS (a folder with `qdrant`, `start.sh`, `stop.sh`; default: the first
# shared/tools/qdrant found beside or above this checkout) on free loopback ports with storage in
# a temporary folder, exports MIRAGE_QDRANT_URL (its gRPC URL), MIRAGE_QDRANT_REST_URL and MIRAGE_QDRANT_TOOLS (for the
# tests that start, kill and restart nodes of their own), runs the command, and stops the server
# by its pid file whatever the command's outcome.
#
#   scripts/with-qdrant.sh scripts/test.sh [ARGS...]
#   scripts/with-qdrant.sh --find      prints the Qdrant tools folder, or fails when there is none
set -euo pipefail
cd "$(dirname "$0")/.."
(($#)) || { echo "usage: scripts/with-qdrant.sh COMMAND [ARGS...]" >&2; exit 2; }

tools="${MIRAGE_QDRANT_TOOLS:-}"
if [[ -z "$tools" ]]; then
  dir="$PWD"
  while [[ "$dir" != / ]]; do
    dir="$(dirname "$dir")"
    if [[ -x "$dir/shared/tools/qdrant/start.sh" ]]; then
      tools="$dir/shared/tools/qdrant"
      break
    fi
  done
fi
if [[ -z "$tools" || ! -x "$tools/start.sh" || ! -x "$tools/qdrant" ]]; then
  echo "with-qdrant: no Qdrant server found: set MIRAGE_QDRANT_TOOLS to a folder with the qdrant binary, start.sh and stop.sh" >&2
  exit 1
fi
tools="$(cd "$tools" && pwd)"
if [[ "$1" == --find ]]; then
  echo "$tools"
  exit 0
fi

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
data="$(mktemp -d "${TMPDIR:-/tmp}/mirage-qdrant.XXXXXX")"
http_port="$(free_port)"
grpc_port="$(free_port)"
stop() {
  "$tools/stop.sh" --dir "$data" >/dev/null 2>&1 || true
  rm -rf "$data"
}
trap stop EXIT
if ! "$tools/start.sh" --wait --dir "$data" --http-port "$http_port" --grpc-port "$grpc_port" >&2; then
  echo "with-qdrant: Qdrant did not start; its log:" >&2
  tail -n 40 "$data/qdrant.log" >&2 || true
  exit 1
fi
export MIRAGE_QDRANT_URL="http://127.0.0.1:$grpc_port"
# Its REST URL: snapshots are downloaded and uploaded there.
export MIRAGE_QDRANT_REST_URL="http://127.0.0.1:$http_port"
export MIRAGE_QDRANT_TOOLS="$tools"
echo "with-qdrant: $("$tools/qdrant" --version 2>/dev/null || echo qdrant) at $MIRAGE_QDRANT_URL (storage $data)" >&2
"$@"
