#!/usr/bin/env bash
# Runs the Postman collection (deploy/postman/) with newman against
# `modelarts-proxy dev`: Postman with no credentials configured, through the
# proxy, to a stand-in that verifies AK/SK signatures, IAM tokens and app codes.
#
#   scripts/postman.sh [path/to/modelarts-proxy]     (default: target/debug/modelarts-proxy)
#
# Loopback only; `dev` listens on a free port and is stopped on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${1:-$ROOT/target/debug/modelarts-proxy}
command -v newman >/dev/null || { echo "newman is not installed (npm install -g newman)" >&2; exit 1; }

out=$(mktemp)
"$BIN" dev --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$out" 2>/dev/null &
dev=$!
trap 'kill "$dev" 2>/dev/null || true; rm -f "$out"' EXIT

# The banner names the proxy's address once it is listening (at most 30 s).
proxy=""
for _ in $(seq 1 150); do
  proxy=$(sed -n 's/^  proxy: *\(http:\/\/[0-9.:]*\).*/\1/p' "$out")
  [ -n "$proxy" ] && break
  kill -0 "$dev" 2>/dev/null || { echo "modelarts-proxy dev exited" >&2; exit 1; }
  sleep 0.2
done
[ -n "$proxy" ] || { echo "modelarts-proxy dev did not start" >&2; exit 1; }

# The environment beside the collection names the file to upload; --env-var
# points it at the proxy dev started.
newman run "$ROOT/deploy/postman/modelarts-proxy.postman_collection.json" \
  --environment "$ROOT/deploy/postman/modelarts-proxy.postman_environment.json" \
  --working-dir "$ROOT/deploy/postman" \
  --env-var "proxy=$proxy" --color off
