# Shared by scripts/memory.sh, flood.sh and soak.sh (sourced, not run): a
# temporary directory, background processes stopped on exit, free loopback
# ports, and waiting for a process's "listening on URL" banner.

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    # KEEP_WORK=1 keeps the logs and configs for a look afterwards.
    if [ -n "${KEEP_WORK:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# A port nothing listens on now (the OS picks it).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The URL a process printed as "listening on URL" in FILE (waits up to 5 s).
listening_url() {
    for _ in $(seq 1 100); do grep -qs '^listening on ' "$1" && break; sleep 0.05; done
    sed -n 's/^listening on //p' "$1"
}
