#!/usr/bin/env bash
# Soak: many requests through the proxy at steady concurrency, checking
# that none fails and that the proxy's RSS and open file descriptors stay
# flat from 10% of the run to the end.
#
# The upstream is the verifying stand-in gateway + IAM (examples/stand_in.rs,
# its own process): every AK/SK signature and IAM token is checked, and the
# stand-in's tokens live 30 s, so the proxy refreshes its token during the
# run. wrk rotates four requests: GET and a 1 KiB JSON POST on an AK/SK route
# and on a token route.
#
#   cargo build --release && cargo build --release --examples
#   scripts/soak.sh                     # >= 100,000 requests, 64 connections
#   scripts/soak.sh -n 10000 -d 5       # the short version CI runs
#
# Options: -n REQUESTS at least this many [100000]; -d SECS at least this
#          long [60]; -c CONNS [64]; -t THREADS wrk threads [2];
#          -b PATH the proxy binary.
# Exits non-zero if any request failed or RSS / fds grew after 10%.
# Loopback only; everything started here stops on exit.
set -euo pipefail

REQUESTS=100000
MIN_SECS=60
CONNS=64
THREADS=2
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/target/release/modelarts-proxy
STAND_IN=$ROOT/target/release/examples/stand_in
while getopts "n:d:c:t:b:h" opt; do
    case $opt in
        n) REQUESTS=$OPTARG ;;
        d) MIN_SECS=$OPTARG ;;
        c) CONNS=$OPTARG ;;
        t) THREADS=$OPTARG ;;
        b) BIN=$OPTARG ;;
        h) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) exit 2 ;;
    esac
done
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
for b in "$BIN" "$STAND_IN"; do
    [ -x "$b" ] || { echo "missing $b (cargo build --release && cargo build --release --examples)" >&2; exit 1; }
done

# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
export STAND_IN_AK=AKSOAKTEST0000000001 STAND_IN_SK=sk-soak-secret STAND_IN_PASSWORD=pw-soak

"$STAND_IN" >"$work/stand_in.out" 2>"$work/stand_in.log" &
pids+=($!)
gw=$(listening_url "$work/stand_in.out")
[ -n "$gw" ] || { echo "the stand-in did not start" >&2; exit 1; }

port=$(free_port)
cat >"$work/proxy.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
[[route]]
prefix = "/"
upstream = "$gw/v1/infers/soak"
credentials = "aksk"
[[route]]
prefix = "/token"
upstream = "$gw/v1/infers/soak"
credentials = "iam"
[credentials.aksk]
type = "aksk"
access_key = { env = "STAND_IN_AK" }
secret_key = { env = "STAND_IN_SK" }
[credentials.iam]
type = "token"
iam_endpoint = "$gw"
user = "soak"
password = { env = "STAND_IN_PASSWORD" }
domain = "soak"
project = "cn-north-4"
EOF
# The shipping default: one access-log line per request (to a file here).
RUST_LOG=info "$BIN" run -c "$work/proxy.toml" 2>"$work/proxy.log" &
proxy=$!
pids+=($proxy)
for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$port/token" 2>/dev/null && break; sleep 0.1; done

cat >"$work/soak.lua" <<'EOF'
local json = '{"input":"' .. string.rep("x", 1010) .. '"}'
local reqs = {}
local n = 0
init = function(args)
  local h = { ["Content-Type"] = "application/json" }
  reqs[1] = wrk.format("GET", "/predict?soak=1")
  reqs[2] = wrk.format("POST", "/predict", h, json)
  reqs[3] = wrk.format("GET", "/token/predict?soak=1")
  reqs[4] = wrk.format("POST", "/token/predict", h, json)
end
request = function()
  n = n + 1
  return reqs[(n % 4) + 1]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("requests=%d non2xx=%d connect=%d read=%d write=%d timeout=%d p50=%.2fms p99=%.2fms\n",
    summary.requests, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
EOF

# Measure the rate briefly, then run long enough for REQUESTS.
wrk -t"$THREADS" -c"$CONNS" -d2s -s "$work/soak.lua" "http://127.0.0.1:$port" >"$work/probe.txt"
rate=$(sed -n 's/^requests=\([0-9]*\).*/\1/p' "$work/probe.txt")
secs=$(( (REQUESTS * 2 + rate - 1) / rate * 12 / 10 + 1 ))
[ "$secs" -ge "$MIN_SECS" ] || secs=$MIN_SECS
echo "probe: $((rate / 2)) req/s; running ${secs}s for >= $REQUESTS requests"

: >"$work/samples"
(
    while kill -0 "$proxy" 2>/dev/null; do
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$proxy/status")
        fds=$(ls "/proc/$proxy/fd" | wc -l)
        echo "$rss $fds" >>"$work/samples"
        sleep 0.5
    done
) &
sampler=$!
pids+=($sampler)
wrk -t"$THREADS" -c"$CONNS" -d"${secs}s" --timeout 10s -s "$work/soak.lua" "http://127.0.0.1:$port" >"$work/wrk.txt"
kill "$sampler" 2>/dev/null || true

result=$(grep '^requests=' "$work/wrk.txt")
python3 - "$work/samples" "$result" "$REQUESTS" <<'PY'
import sys
samples = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
result, want = sys.argv[2], int(sys.argv[3])
fields = dict(kv.split("=") for kv in result.split())
requests = int(fields["requests"])
errors = sum(int(fields[k]) for k in ("non2xx", "connect", "read", "write", "timeout"))
start = samples[len(samples) // 10]
rest = samples[len(samples) // 10:]
rss_growth = (max(s[0] for s in rest) - start[0]) / 1024
fd_growth = max(s[1] for s in rest) - start[1]
flat = rss_growth <= max(4.0, start[0] / 1024 * 0.1) and fd_growth <= 8
print(f"{result}")
print(f"rss at 10%={start[0]/1024:.1f}MiB max after={max(s[0] for s in rest)/1024:.1f}MiB "
      f"(+{rss_growth:.1f}) end={samples[-1][0]/1024:.1f}MiB; "
      f"fds at 10%={start[1]} max after={max(s[1] for s in rest)} end={samples[-1][1]}")
ok = requests >= want and errors == 0 and flat
print("soak: " + ("ok" if ok else "FAILED") + f" ({requests} requests, {errors} errors, "
      + ("flat" if flat else "NOT flat") + ")")
sys.exit(0 if ok else 1)
PY
