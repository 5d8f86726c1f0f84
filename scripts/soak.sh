#!/usr/bin/env bash
# Soak: many requests through the proxy at steady concurrency, checking
# that none fails, that every response is logged `complete`, and that the
# proxy's RSS and open file descriptors stay flat from 10% of the run to
# the end.
#
# The upstream is the verifying stand-in gateway + IAM (examples/stand_in.rs,
# its own process): every AK/SK signature and IAM token is checked, and the
# stand-in's tokens live 30 s, so the proxy refreshes its token during the
# run. wrk rotates six requests: GET and a 1 KiB JSON POST on an AK/SK route
# and on a token route, and a POST on a paced route (rate and concurrency
# queue) and on a route whose first target refuses every connection (retries,
# failover, ejection, probes).
#
# With -u nginx, the proxy reaches the stand-in through nginx as gateways
# run it: HTTPS with h2 and http/1.1 by ALPN, at nginx's defaults
# (keepalive_requests 1000, http2_max_concurrent_streams 128, keep-alive
# connections closed on reload) with proxy_buffering off in front of the
# backend (so a body's END_STREAM comes in an empty DATA frame of its own),
# reloaded every -r seconds. Nothing of that may reach a client as an error.
#
#   cargo build --release --features jemalloc && cargo build --release --examples
#   scripts/soak.sh                     # >= 100,000 requests, 64 connections
#   scripts/soak.sh -n 10000 -d 5       # the short version CI runs
#   scripts/soak.sh -u nginx -n 200000 -r 3   # through nginx, reloaded every 3 s
#
# Options: -n REQUESTS at least this many [100000]; -d SECS at least this
#          long [60]; -c CONNS [64]; -t THREADS wrk threads [2];
#          -b PATH the proxy binary; -u stand-in|nginx the upstream
#          [stand-in]; -r SECS nginx reload interval, 0 for none [3];
#          -2 auto|http1|http2 the proxy's upstream_tls.http2 [auto].
# Exits non-zero if any request failed, any response was not logged
# `complete`, or RSS / fds grew after 10%.
# Loopback only; everything started here stops on exit.
set -euo pipefail

REQUESTS=100000
MIN_SECS=60
CONNS=64
THREADS=2
UPSTREAM=stand-in
RELOAD=3
HTTP2=auto
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/target/release/modelarts-proxy
STAND_IN=$ROOT/target/release/examples/stand_in
while getopts "n:d:c:t:b:u:r:2:h" opt; do
    case $opt in
        n) REQUESTS=$OPTARG ;;
        d) MIN_SECS=$OPTARG ;;
        c) CONNS=$OPTARG ;;
        t) THREADS=$OPTARG ;;
        b) BIN=$OPTARG ;;
        u) UPSTREAM=$OPTARG ;;
        r) RELOAD=$OPTARG ;;
        2) HTTP2=$OPTARG ;;
        h) sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) exit 2 ;;
    esac
done
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
export PATH="$PATH:/usr/sbin"
case $UPSTREAM in
    stand-in) ;;
    nginx)
        command -v nginx >/dev/null || { echo "nginx is not installed (apt-get install nginx-light)" >&2; exit 1; }
        command -v openssl >/dev/null || { echo "openssl is not installed" >&2; exit 1; } ;;
    *) echo "-u takes stand-in or nginx" >&2; exit 2 ;;
esac
for b in "$BIN" "$STAND_IN"; do
    [ -x "$b" ] || { echo "missing $b (cargo build --release --features jemalloc && cargo build --release --examples)" >&2; exit 1; }
done

# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
export STAND_IN_AK=AKSOAKTEST0000000001 STAND_IN_SK=sk-soak-secret STAND_IN_PASSWORD=pw-soak

"$STAND_IN" >"$work/stand_in.out" 2>"$work/stand_in.log" &
pids+=($!)
gw=$(listening_url "$work/stand_in.out")
[ -n "$gw" ] || { echo "the stand-in did not start" >&2; exit 1; }

# The service's base URL: the stand-in itself, or nginx in front of it.
service=$gw
tls=""
if [ "$UPSTREAM" = nginx ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$work/ca.key" -out "$work/ca.pem" -days 2 -subj "/CN=soak CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$work/srv.key" -out "$work/srv.csr" -subj "/CN=localhost" 2>/dev/null
    echo "subjectAltName=DNS:localhost" >"$work/ext.cnf"
    openssl x509 -req -in "$work/srv.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
        -out "$work/srv.pem" -days 2 -extfile "$work/ext.cnf" 2>/dev/null
    ngport=$(free_port)
    mkdir -p "$work/nginx"
    # nginx's defaults towards the proxy, but for room for an 8 KiB IAM
    # token in a header line (APIG takes them; nginx's 8k buffers answer
    # 400 over HTTP/1.1); towards the stand-in, streaming (proxy_buffering
    # off), the signed Host kept (the stand-in checks it, as the gateway
    # does), and keep-alive (so a long soak does not run out of ports).
    cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
daemon off;
events { }
http {
    access_log off;
    large_client_header_buffers 4 32k;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    upstream backend { server ${gw#http://}; keepalive 16; }
    server {
        listen 127.0.0.1:$ngport ssl http2;
        ssl_certificate $work/srv.pem;
        ssl_certificate_key $work/srv.key;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_set_header Host \$host:\$server_port;
        }
    }
}
EOF
    nginx -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" >"$work/nginx.out" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do curl -ks -o /dev/null "https://localhost:$ngport/" && break; sleep 0.05; done
    service="https://localhost:$ngport"
    tls="[upstream_tls]
roots = \"none\"
ca_file = \"$work/ca.pem\"
http2 = \"$HTTP2\""
fi

port=$(free_port)
admin=$(free_port)
dead=$(free_port)
cat >"$work/proxy.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin"
$tls
[[route]]
prefix = "/"
upstream = "$service/v1/infers/soak"
credentials = "aksk"
[[route]]
prefix = "/token"
upstream = "$service/v1/infers/soak"
credentials = "iam"
# Pacing on the way: a queue in front of 48 requests at a time (wrk has 64
# connections), and a rate it keeps under.
[[route]]
prefix = "/paced"
upstream = "$service/v1/infers/soak"
credentials = "aksk"
rate = "50000/s"
concurrency = 48
queue_timeout = "10s"
# Retries and failover on the way: the first target refuses every
# connection, is ejected after 5 failures and probed every 30 s.
[[route]]
prefix = "/failover"
upstream = "http://127.0.0.1:$dead/v1/infers/soak"
credentials = "aksk"
retry = { attempts = 2, backoff = "10ms", max_backoff = "10ms" }
[[route.fallback]]
upstream = "$service/v1/infers/soak"
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
  reqs[5] = wrk.format("POST", "/paced/predict", h, json)
  reqs[6] = wrk.format("POST", "/failover/predict", h, json)
end
request = function()
  n = n + 1
  return reqs[(n % 6) + 1]
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
reloads=0
if [ "$UPSTREAM" = nginx ] && [ "$RELOAD" != 0 ]; then
    # A graceful reload closes every idle keep-alive connection and sends
    # GOAWAY on h2 ones, with requests racing onto them.
    (
        while kill -0 "$proxy" 2>/dev/null; do
            sleep "$RELOAD"
            nginx -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" -s reload 2>/dev/null &&
                echo reload >>"$work/reloads"
        done
    ) &
    pids+=($!)
    reloader=$!
fi
wrk -t"$THREADS" -c"$CONNS" -d"${secs}s" --timeout 10s -s "$work/soak.lua" "http://127.0.0.1:$port" >"$work/wrk.txt"
kill "$sampler" ${reloader:-} 2>/dev/null || true
# With nginx, old connections drain after the last reload: give them 10 s
# to close, then take the fds once more.
settled=$(ls "/proc/$proxy/fd" | wc -l)
if [ "$UPSTREAM" = nginx ]; then
    base=$(awk -v n="$(wc -l <"$work/samples")" 'NR == int(n / 10) + 1 {print $2}' "$work/samples")
    for _ in $(seq 1 100); do
        settled=$(ls "/proc/$proxy/fd" | wc -l)
        [ "$settled" -le $((base + 8)) ] && break
        sleep 0.1
    done
fi
[ -f "$work/reloads" ] && reloads=$(wc -l <"$work/reloads")
# Every access-log line's outcome (the probe's and warm-up's too).
outcomes=$(grep -o 'outcome="\{0,1\}[a-z_]*' "$work/proxy.log" | sed 's/outcome="\{0,1\}//' | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}')
metrics=$(curl -fsS "http://127.0.0.1:$admin/metrics")
resends=$(sed -n 's/^modelarts_proxy_resends_total{reason="\([a-z_]*\)"} \([0-9]*\)/\1=\2/p' <<<"$metrics" | tr '\n' ' ')
retries=$(sed -n 's/^modelarts_proxy_retries_total{route="\([^"]*\)",reason="\([a-z_0-9]*\)"} \([0-9]*\)/\1:\2=\3/p' <<<"$metrics" | tr '\n' ' ')
queued=$(sed -n 's/^modelarts_proxy_queue_seconds_count{route="\/paced"} \([0-9]*\)/\1/p' <<<"$metrics")
# What went wrong, if anything did: the most frequent warnings.
if grep -q ' WARN ' "$work/proxy.log"; then
    echo "most frequent warnings:"
    grep ' WARN ' "$work/proxy.log" | sed 's/^[^ ]* *//; s/request_id=[0-9a-f]*//' | cut -c1-300 | sort | uniq -c | sort -rn | head -5
fi
echo "upstream: $UPSTREAM${tls:+ (TLS, upstream_tls.http2 = $HTTP2)}; nginx reloads: $reloads; resends: ${resends:-none}; retries: ${retries:-none}; paced: ${queued:-0}; outcomes: $outcomes"

result=$(grep '^requests=' "$work/wrk.txt")
python3 - "$work/samples" "$result" "$REQUESTS" "$outcomes" "$CONNS" "$UPSTREAM" "$settled" <<'PY'
import sys
samples = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
result, want = sys.argv[2], int(sys.argv[3])
outcomes = dict(kv.split("=") for kv in sys.argv[4].split())
conns, upstream, settled = int(sys.argv[5]), sys.argv[6], int(sys.argv[7])
# wrk stops with a request in flight on each of its connections (two runs:
# the probe and the soak): those are real client aborts, at most one per
# connection per run. Anything else not complete is a failure.
stopped = min(int(outcomes.get("client_aborted", 0)), 2 * conns)
incomplete = sum(int(n) for k, n in outcomes.items() if k != "complete") - stopped
fields = dict(kv.split("=") for kv in result.split())
requests = int(fields["requests"])
errors = sum(int(fields[k]) for k in ("non2xx", "connect", "read", "write", "timeout"))
start = samples[len(samples) // 10]
rest = samples[len(samples) // 10:]
rss_growth = (max(s[0] for s in rest) - start[0]) / 1024
fd_growth = max(s[1] for s in rest) - start[1]
# A reloading upstream swaps its connections (old ones drain while new
# ones open): there the fds must come back to where they were once the
# last reload has drained, within two sets of client connections on the way.
if upstream == "nginx":
    fds_flat = settled - start[1] <= 8 and fd_growth <= 2 * conns
else:
    fds_flat = fd_growth <= 8
flat = rss_growth <= max(4.0, start[0] / 1024 * 0.1) and fds_flat
print(f"{result}")
print(f"rss at 10%={start[0]/1024:.1f}MiB max after={max(s[0] for s in rest)/1024:.1f}MiB "
      f"(+{rss_growth:.1f}) end={samples[-1][0]/1024:.1f}MiB; "
      f"fds at 10%={start[1]} max after={max(s[1] for s in rest)} end={samples[-1][1]} "
      f"settled={settled}")
ok = requests >= want and errors == 0 and flat and incomplete == 0 and "complete" in outcomes
print("soak: " + ("ok" if ok else "FAILED") + f" ({requests} requests, {errors} errors, "
      + f"{incomplete} not complete besides {stopped} cut by wrk's stop, "
      + ("flat" if flat else "NOT flat") + ")")
sys.exit(0 if ok else 1)
PY
