#!/usr/bin/env bash
# Bounded loopback load test: the `dev` stand-in service hit directly vs
# through the proxy, with wrk.
#
#   cargo build --release --features jemalloc
#   scripts/load.sh                      # 10 s per target, 32 connections
#   scripts/load.sh -d 30 -c 64 -t 4     # longer, more connections, 4 wrk threads
#
# Options (or the environment variables in brackets):
#   -d SECS   measured duration per target          [DURATION, default 10, max 300]
#   -c CONNS  concurrent keep-alive connections     [CONCURRENCY, default 32]
#   -t N      wrk threads (<= CONNS)                [THREADS, default 2]
#   -w SECS   unmeasured warm-up per target         [WARMUP, default 2]
#   -b PATH   the binary                            [PROXY_BIN, default target/release/modelarts-proxy]
# RUST_LOG is passed through (default "info", the shipping default: one
# access-log line per request, written to a temp file). RUST_LOG=warn
# measures the proxy without access logging.
#
# What is compared, and why it is like-for-like
# ---------------------------------------------
# `modelarts-proxy dev --listen 127.0.0.1:0` starts a stand-in ModelArts
# service that verifies every SDK-HMAC-SHA256 signature and echoes the
# request as JSON, and a proxy in front of it that signs with a random demo
# key. An unsigned request sent straight to the stand-in is rejected with a
# small 401 before any HMAC work, so it would be a cheaper, different request.
# Instead this script sends ONE request through the proxy, reads the
# signature the proxy made (the stand-in echoes the Host, X-Sdk-Date and
# Authorization it received) and REPLAYS that exact signed request straight
# to the stand-in for the baseline. The stand-in accepts a signature for 15
# minutes and keeps no replay cache, so both runs make it do the same work
# (read the body, verify, echo 200 JSON) for the same bytes; the difference
# is the proxy hop: accept, route, buffer + hash + sign the JSON body, and
# forward over its pooled upstream connection. Every response must be 200:
# non-2xx counts are printed and flagged.
#
# Everything listens on 127.0.0.1 port 0 (the OS picks free ports; the
# addresses are read from the dev banner on stdout). Everything started here
# is stopped on exit, including Ctrl-C. Client, proxy and stand-in share the
# machine's CPUs: compare the two rows of one run, not runs across machines.

set -euo pipefail

DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-32}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROXY_BIN=${PROXY_BIN:-$ROOT/target/release/modelarts-proxy}

usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while getopts "d:c:t:w:b:h" opt; do
    case $opt in
        d) DURATION=$OPTARG ;;
        c) CONCURRENCY=$OPTARG ;;
        t) THREADS=$OPTARG ;;
        w) WARMUP=$OPTARG ;;
        b) PROXY_BIN=$OPTARG ;;
        h) usage 0 ;;
        *) usage 2 >&2 ;;
    esac
done

die() { echo "load.sh: $*" >&2; exit 2; }
for v in DURATION CONCURRENCY THREADS WARMUP; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
((DURATION >= 1 && DURATION <= 300)) || die "DURATION must be 1..300 s (the replayed signature is valid for 15 minutes)"
((CONCURRENCY >= 1)) || die "CONCURRENCY must be at least 1"
((THREADS >= 1 && THREADS <= CONCURRENCY)) || die "THREADS must be 1..CONCURRENCY"

if ! command -v wrk >/dev/null 2>&1; then
    die "wrk is not installed. Install it with:  sudo apt-get install wrk   (Debian/Ubuntu)
         or:  brew install wrk   (macOS), then run this script again."
fi
command -v curl >/dev/null 2>&1 || die "curl is needed (sudo apt-get install curl)"
if command -v jq >/dev/null 2>&1; then
    json_get() { jq -r "$1 // empty"; }
elif command -v python3 >/dev/null 2>&1; then
    # $1 is a jq-style path such as .headers["x-sdk-date"] or .verified.
    json_get() {
        python3 -c 'import json, re, sys
v = json.load(sys.stdin)
for key in re.findall(r"\.(\w+)|\[\"([^\"]+)\"\]", sys.argv[1]):
    v = v.get(key[0] or key[1]) if isinstance(v, dict) else None
print("" if v is None else (str(v).lower() if isinstance(v, bool) else v))' "$1"
    }
else
    die "jq or python3 is needed to read the stand-in's JSON echo"
fi
[[ -x $PROXY_BIN ]] || die "no binary at $PROXY_BIN: run 'cargo build --release --features jemalloc' first (or pass -b PATH)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/modelarts-load.XXXXXX")
DEV_PID=
cleanup() {
    local status=$?
    trap - EXIT INT TERM HUP PIPE
    if [[ -n $DEV_PID ]] && kill -0 "$DEV_PID" 2>/dev/null; then
        kill -TERM "$DEV_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$DEV_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$DEV_PID" 2>/dev/null || true
        wait "$DEV_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE

# --- start dev mode and read its addresses from the banner ---------------
: >"$TMP/dev.out" # exists before the background process opens it, for the polling below
RUST_LOG=${RUST_LOG:-info} "$PROXY_BIN" dev --listen 127.0.0.1:0 >"$TMP/dev.out" 2>"$TMP/dev.err" &
DEV_PID=$!
SERVICE_URL= PROXY_URL=
for _ in $(seq 100); do
    SERVICE_URL=$(sed -n 's/^ *stand-in ModelArts service: *\(http:[^ ]*\).*/\1/p' "$TMP/dev.out")
    PROXY_URL=$(sed -n 's/^ *proxy: *\(http:[^ ]*\).*/\1/p' "$TMP/dev.out")
    [[ -n $SERVICE_URL && -n $PROXY_URL ]] && break
    kill -0 "$DEV_PID" 2>/dev/null || { cat "$TMP/dev.err" >&2; die "'$PROXY_BIN dev' exited early"; }
    sleep 0.1
done
[[ -n $SERVICE_URL && -n $PROXY_URL ]] || { cat "$TMP/dev.out" "$TMP/dev.err" >&2; die "no addresses in the dev banner after 10 s"; }
case "$SERVICE_URL $PROXY_URL" in
    "http://127.0.0.1:"*" http://127.0.0.1:"*) ;;
    *) die "refusing non-loopback addresses: $SERVICE_URL $PROXY_URL" ;;
esac
PROXY_URL=${PROXY_URL%/}/

# --- one signed request through the proxy, to replay directly -------------
BODY='{"prompt":"Summarise this paragraph.","max_tokens":128}'
ECHO=$(curl -sS --max-time 10 -X POST "$PROXY_URL" -H 'Content-Type: application/json' --data-binary "$BODY")
[[ $(json_get '.verified' <<<"$ECHO") == true ]] || die "the proxied request was not verified by the stand-in: $ECHO"
SIG_HOST=$(json_get '.headers.host' <<<"$ECHO")
SIG_DATE=$(json_get '.headers["x-sdk-date"]' <<<"$ECHO")
SIG_AUTH=$(json_get '.headers.authorization' <<<"$ECHO")
[[ -n $SIG_HOST && -n $SIG_DATE && -n $SIG_AUTH ]] || die "the echo lacks host/x-sdk-date/authorization: $ECHO"
REPLAY=$(curl -sS --max-time 10 -X POST "$SERVICE_URL" -H "Host: $SIG_HOST" \
    -H 'Content-Type: application/json' -H "X-Sdk-Date: $SIG_DATE" -H "Authorization: $SIG_AUTH" \
    --data-binary "$BODY")
[[ $(json_get '.verified' <<<"$REPLAY") == true ]] || die "the replayed signed request was rejected: $REPLAY"

# wrk request scripts. Long Lua strings: the values hold no "]]".
cat >"$TMP/direct.lua" <<EOF
wrk.method = "POST"
wrk.body = [[$BODY]]
wrk.headers["Host"] = [[$SIG_HOST]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Sdk-Date"] = [[$SIG_DATE]]
wrk.headers["Authorization"] = [[$SIG_AUTH]]
EOF
cat >"$TMP/proxy.lua" <<EOF
wrk.method = "POST"
wrk.body = [[$BODY]]
wrk.headers["Content-Type"] = "application/json"
EOF

# --- load ------------------------------------------------------------------
echo "modelarts-proxy load test: ${DURATION}s per target (+${WARMUP}s warm-up), $CONCURRENCY connections, $THREADS wrk threads, RUST_LOG=${RUST_LOG:-info}"
echo "  direct: $SERVICE_URL   (replayed signed request)"
echo "  proxy:  $PROXY_URL   (signs each request)"
echo

alive() { # Ctrl-C reaches dev mode too, and wrk exits 0 on it: stop here, not with a confusing error.
    kill -0 "$DEV_PID" 2>/dev/null || die "dev mode is no longer running (interrupted?); see above"
}
run() { # name url lua
    local name=$1 url=$2 lua=$3
    alive
    if ((WARMUP > 0)); then
        wrk -t "$THREADS" -c "$CONCURRENCY" -d "${WARMUP}s" --timeout 5s -s "$lua" "$url" >/dev/null
    fi
    echo "== $name: $url"
    wrk -t "$THREADS" -c "$CONCURRENCY" -d "${DURATION}s" --timeout 5s --latency -s "$lua" "$url" | tee "$TMP/$name.txt"
    alive
    echo
}
run direct "$SERVICE_URL" "$TMP/direct.lua"
run proxy "$PROXY_URL" "$TMP/proxy.lua"

# --- summary ---------------------------------------------------------------
pct() { awk -v p="$1" '$1 == p { print $2 }' "$2"; }
rps() { awk '/^Requests\/sec:/ { print $2 }' "$1"; }
non2xx() { awk '/Non-2xx or 3xx responses:/ { print $NF; f = 1 } END { if (!f) print 0 }' "$1"; }
sockerr() { awk '/Socket errors:/ { sub(/^ *Socket errors: */, ""); print; f = 1 } END { if (!f) print "none" }' "$1"; }
printf '%-8s %12s %10s %10s %10s %10s %8s  %s\n' target req/s p50 p75 p90 p99 non-2xx "socket errors"
bad=0
for name in direct proxy; do
    f=$TMP/$name.txt
    n=$(non2xx "$f")
    [[ $n == 0 ]] || bad=1
    printf '%-8s %12s %10s %10s %10s %10s %8s  %s\n' "$name" "$(rps "$f")" \
        "$(pct 50% "$f")" "$(pct 75% "$f")" "$(pct 90% "$f")" "$(pct 99% "$f")" "$n" "$(sockerr "$f")"
done
awk -v d="$(rps "$TMP/direct.txt")" -v p="$(rps "$TMP/proxy.txt")" \
    'BEGIN { if (d > 0) printf "proxy throughput: %.1f%% of direct\n", 100 * p / d }'
if ((bad)); then
    echo "WARNING: some responses were not 2xx; the numbers above are not a valid comparison." >&2
    tail -n 5 "$TMP/dev.err" >&2 || true
    exit 1
fi
