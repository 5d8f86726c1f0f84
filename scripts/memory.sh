#!/usr/bin/env bash
# Memory under a burst of large signed uploads: idle RSS, peak RSS, and RSS
# after the burst, for N concurrent 12 MiB JSON uploads (signed payload, so
# the proxy buffers and hashes each one) through the proxy to an upstream
# that waits before reading (a slow backend).
#
#   cargo build --release --examples && cargo build --release --features jemalloc
#   scripts/memory.sh                 # 32 uploads, upstream reads after 3 s, 30 s settle
#   scripts/memory.sh -n 100 -s 30    # 100 uploads
#
# Options:
#   -n N      concurrent uploads                    [default 32]
#   -d DELAY  upstream waits this long before reading each body [default 3s]
#   -s SECS   wait after the burst before the "after" reading   [default 30]
#   -b PATH   the proxy binary (e.g. an older build) [default target/release/modelarts-proxy]
#   -x TOML   extra [server] lines for the proxy's config (e.g. 'buffer_wait = "60s"')
# Prints one line: idle / peak / after RSS (MiB) and the status codes seen.
# Everything listens on 127.0.0.1; everything started here stops on exit.
set -euo pipefail

N=32
DELAY=3s
SETTLE=30
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/target/release/modelarts-proxy
UPSTREAM_BIN=$ROOT/target/release/examples/bench_upstream
EXTRA=""
while getopts "n:d:s:b:x:h" opt; do
    case $opt in
        n) N=$OPTARG ;;
        d) DELAY=$OPTARG ;;
        s) SETTLE=$OPTARG ;;
        b) BIN=$OPTARG ;;
        x) EXTRA=$OPTARG ;;
        h) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) exit 2 ;;
    esac
done
[ -x "$BIN" ] || { echo "no proxy binary at $BIN (cargo build --release --features jemalloc)" >&2; exit 1; }
[ -x "$UPSTREAM_BIN" ] || { echo "no $UPSTREAM_BIN (cargo build --release --examples)" >&2; exit 1; }

# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
wait_for() { for _ in $(seq 1 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "not up: $1" >&2; exit 1; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }

"$UPSTREAM_BIN" --read-delay "$DELAY" >"$work/upstream.out" &
pids+=($!)
upstream=$(listening_url "$work/upstream.out")

port=$(free_port)
admin=$(free_port)
cat >"$work/proxy.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin"
$EXTRA
[[route]]
upstream = "$upstream/v1/infers/memory"
credentials = "default"
payload = "signed"
[credentials.default]
type = "aksk"
access_key = { env = "BENCH_AK" }
secret_key = { env = "BENCH_SK" }
EOF
BENCH_AK=AKMEMORYBENCH BENCH_SK=sk-memory-bench RUST_LOG=warn "$BIN" run -c "$work/proxy.toml" 2>"$work/proxy.log" &
proxy=$!
pids+=($proxy)
wait_for "http://127.0.0.1:$admin/healthz"

# A 12 MiB JSON document (exactly the gateway's limit).
python3 -c "
import sys
n = 12 * 1024 * 1024
head, tail = b'{\"data\":\"', b'\"}'
sys.stdout.buffer.write(head + b'x' * (n - len(head) - len(tail)) + tail)" >"$work/body.json"

sleep 1
idle=$(rss_kib "$proxy")
peak_seen=$idle
for i in $(seq 1 "$N"); do
    curl -sS -o /dev/null -w '%{http_code}\n' --max-time 120 -X POST -T "$work/body.json" \
        -H 'Content-Type: application/json' -H 'Expect:' "http://127.0.0.1:$port/" \
        >>"$work/codes" 2>/dev/null &
    pids+=($!)
done
while [ "$(wc -l <"$work/codes" 2>/dev/null || echo 0)" -lt "$N" ]; do
    r=$(rss_kib "$proxy"); [ "$r" -gt "$peak_seen" ] && peak_seen=$r
    sleep 0.1
done
peak=$(hwm_kib "$proxy")
sleep "$SETTLE"
after=$(rss_kib "$proxy")
codes=$(sort "$work/codes" | uniq -c | awk '{printf "%s×%s ", $1, $2}')
echo "uploads=$N idle=$(mib "$idle")MiB peak=$(mib "$peak")MiB after_${SETTLE}s=$(mib "$after")MiB codes: $codes"
