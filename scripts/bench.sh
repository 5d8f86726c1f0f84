#!/usr/bin/env bash
# One command for the side-by-side benchmark (scripts/bench.py): installs
# what it needs (nginx-light, wrk, curl, openssl from Debian), builds the
# release binaries, then runs every scenario over alternated rounds and
# prints a markdown table (BENCHMARKS.md has the latest).
#
#   scripts/bench.sh                          # 5 rounds x 5 s per scenario (~10 min)
#   scripts/bench.sh --rounds 7 --only tls-h1,tls-h2,nginx-tls
#   scripts/bench.sh --quiet-logs             # both proxies without access logs
#   scripts/bench.sh --help
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v ss >/dev/null 2>&1 || need+=(iproute2)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
    # Debian starts the packaged nginx; the benchmark runs its own.
    $sudo systemctl stop nginx 2>/dev/null || $sudo service nginx stop 2>/dev/null || true
fi
export PATH="$PATH:/usr/sbin"

cd "$ROOT"
# The profile that ships (fat LTO); the stand-in only issues the IAM token.
cargo build --profile dist --features jemalloc --quiet --bin modelarts-proxy --example stand_in
exec python3 "$ROOT/scripts/bench.py" "$@"
