#!/usr/bin/env bash
# A silent-connection flood under a small open-file limit: the proxy runs
# with `ulimit -n 1024`; a client opens N TCP connections that never send a
# byte and holds them; meanwhile a real request is sent every 0.5 s. Reports
# how many real requests succeeded and how long they took, the proxy's
# connections and RSS, and how many "accept failed" lines it logged.
#
#   cargo build --release --examples && cargo build --release --features jemalloc
#   scripts/flood.sh                   # 1100 silent connections for 40 s
#   scripts/flood.sh -n 3000 -t 60 -b /path/to/older/modelarts-proxy
#
# Options: -n N silent connections [1100]; -t SECS flood length [40];
#          -l LIMIT the proxy's open-file limit [1024]; -b PATH the proxy binary.
# Loopback only; everything started here stops on exit.
set -euo pipefail

N=1100
SECS=40
LIMIT=1024
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/target/release/modelarts-proxy
UPSTREAM_BIN=$ROOT/target/release/examples/bench_upstream
while getopts "n:t:l:b:h" opt; do
    case $opt in
        n) N=$OPTARG ;;
        t) SECS=$OPTARG ;;
        l) LIMIT=$OPTARG ;;
        b) BIN=$OPTARG ;;
        h) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) exit 2 ;;
    esac
done

# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

"$UPSTREAM_BIN" >"$work/upstream.out" &
pids+=($!)
upstream=$(listening_url "$work/upstream.out")
port=$(free_port)
bash -c "ulimit -n $LIMIT; exec \"$BIN\" run --auth none --upstream \"$upstream/\" --listen 127.0.0.1:$port" \
    2>"$work/proxy.log" &
proxy=$!
pids+=($proxy)
for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break; sleep 0.1; done

ulimit -n $((N + 1024)) 2>/dev/null || true
python3 - "$port" "$N" "$SECS" "$proxy" <<'PY'
import socket, sys, time, urllib.request, os
port, n, secs, pid = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
silent = []
for _ in range(n):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        silent.append(s)
    except OSError:
        s.close()
ok = fail = 0
worst = 0.0
times = []
end = time.time() + secs
while time.time() < end:
    t0 = time.time()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            r.read()
            ok += r.status == 200
    except Exception:
        fail += 1
    dt = time.time() - t0
    times.append(dt)
    worst = max(worst, dt)
    time.sleep(max(0, 0.5 - dt))
status = open(f"/proc/{pid}/status").read()
rss = next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmRSS:"))
fds = len(os.listdir(f"/proc/{pid}/fd"))
times.sort()
p50 = times[len(times) // 2] if times else 0
print(f"silent={len(silent)}/{n} real_ok={ok} real_failed={fail} p50={p50*1000:.0f}ms worst={worst*1000:.0f}ms "
      f"proxy_fds={fds} proxy_rss={rss//1024}MiB", end=" ")
for s in silent:
    s.close()
PY
echo "accept_failed_lines=$(grep -c 'accept failed' "$work/proxy.log" || true)"
grep -m1 'max_connections' "$work/proxy.log" | sed 's/^.*WARN //' || true
