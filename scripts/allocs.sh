#!/usr/bin/env bash
# Heap allocations per request: uprobes on jemalloc's entry points in a
# `dist` binary built with `--features jemalloc`, counted with `perf stat`
# while wrk sends load through `scripts/bench.py --serve` (nginx upstreams,
# the proxy's routes). The probes slow the proxy down: only the counts mean
# anything, not the rates.
#
#   cargo build --profile dist --features jemalloc --bin modelarts-proxy --example stand_in
#   scripts/allocs.sh                          # target/dist/modelarts-proxy
#   scripts/allocs.sh -b /tmp/older-build      # another build, to compare
#
# Needs perf (linux-perf) and root (uprobes). Prints one line a scenario:
# requests, allocations, allocations per request.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/target/dist/modelarts-proxy
while getopts "b:h" opt; do
    case $opt in
        b) BIN=$(realpath "$OPTARG") ;;
        *) sed -n '2,13p' "$0"; exit 2 ;;
    esac
done

WORK=$(mktemp -d)
GROUP=allocs$$
cleanup() {
    perf probe -q -d "${GROUP}:*" 2>/dev/null || true
    [[ -n "${SERVE:-}" ]] && kill "$SERVE" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

for fn in malloc mallocx calloc rallocx realloc; do
    perf probe -q -x "$BIN" --add "${GROUP}:${fn}=_rjem_${fn}"
done

python3 "$ROOT/scripts/bench.py" --binary "$BIN" --serve >"$WORK/serve.out" 2>&1 &
SERVE=$!
for _ in $(seq 1 60); do
    grep -q '^pids:' "$WORK/serve.out" && break
    sleep 1
done
pid_of() { grep '^pids:' "$WORK/serve.out" | sed -E "s/.*'$1': ([0-9]+).*/\1/"; }
url_of() { awk -v s="$1" '$1 == s {print $3}' "$WORK/serve.out"; }
printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [[{"x":"%s"}]]\n' \
    "$(head -c 1000 /dev/zero | tr '\0' a)" >"$WORK/post.lua"

for scenario in mp-apikey mp-token mp-aksk-post1k tls-h1 tls-h2; do
    pid=$(pid_of proxy)
    [[ $scenario == tls-h1 ]] && pid=$(pid_of proxy_h1)
    script=()
    [[ $scenario == mp-aksk-post1k ]] && script=(-s "$WORK/post.lua")
    url=$(url_of "$scenario")
    wrk -t2 -c32 -d1s "${script[@]}" "$url" >/dev/null   # warm: connections, the token
    perf stat -x, -e "${GROUP}:*" -p "$pid" -o "$WORK/stat" -- sleep 4 &
    STAT=$!
    sleep 0.2   # perf attaches before the measured load starts
    requests=$(wrk -t2 -c32 -d3s "${script[@]}" "$url" | awk '/requests in/ {print $1}')
    wait "$STAT"
    allocations=$(awk -F, '!/^#/ && NF > 1 {s += $1} END {print s}' "$WORK/stat")
    awk -v s="$scenario" -v r="$requests" -v a="$allocations" \
        'BEGIN {printf "%-16s requests %7d  allocations %9d  per request %.1f\n", s, r, a, a / r}'
done
