#!/usr/bin/env python3
"""Side-by-side load benchmark: modelarts-proxy against nginx and against
the upstream direct, on one machine, in one run, with one load generator
(wrk), over alternated rounds. Run it through scripts/bench.sh (installs
nginx and wrk, builds the `dist` binaries: the profile that ships).

  scripts/bench.sh                         # every scenario, 5 rounds of 5 s
  scripts/bench.sh --rounds 7 --duration 5 --only tls-h1,tls-h2
  scripts/bench.sh --list                  # the scenarios
  scripts/bench.sh --connections 64        # 64 client connections (32 by default)
  scripts/bench.sh --one-core              # the compared proxies on CPU 0 alone, one
                                           # worker each; wrk and the upstreams elsewhere

What runs (all on 127.0.0.1, ports picked by the OS):
  upstream   nginx, 1 worker: `return 200 '{"status":"ok"}'` (15 bytes) on a
             plain port and on a TLS port offering h2 and http/1.1 by ALPN
  peer       nginx, as many workers as the proxy has threads (2 here), a
             reverse proxy with `proxy_set_header X-Auth-Token <static>` and a
             keep-alive upstream pool (the job token and API-key mode do)
  proxy      modelarts-proxy with one route per mode (no auth, token from the
             stand-in IAM, API key, AK/SK auto/signed/unsigned, TLS), and a
             second one with `[upstream_tls] http2 = "http1"` for the h1 row
  stand-in   examples/stand_in (IAM only: the token mode's token)
  gw         nginx as gateways run it, in front of the upstream: TLS with h2
             and http/1.1 by ALPN, its default keep-alive settings towards
             clients (h2 GOAWAY after 1,000 requests), proxy_buffering off;
             the gw-* rows must have no non-2xx

Both proxies log every request (nginx `access_log`, modelarts-proxy's access
log at RUST_LOG=info) to files: what each ships with. `--quiet-logs` turns
both off.

Per scenario and round: wrk for --duration seconds after a 1 s warm-up; the
proxy's (or nginx's master+workers') CPU seconds from /proc/PID/stat, peak
RSS from VmHWM (reset with clear_refs before each run). Ratios are taken
within a round (the scenarios of one round run back to back, in an order
rotated each round), then the median over rounds is reported with the
spread (min-max) of req/s.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
TOKEN = "MIIbench-static-token-" + "x" * 64
# What the stand-in IAM issues (and real IAM tokens are of this order): the
# nginx row for token mode injects one as large.
# (nginx takes config parameters of up to 4 KiB: four 2 KiB pieces.)
TOKEN_PIECE = "t" * 2048
APP_CODE = "bench-app-code-0123456789abcdef"
AK = "BENCHAKEXAMPLE000001"
SK = "bench-sk-secret-0123456789abcdefghijkl"
IAM_PASSWORD = "bench-iam-password"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class Procs:
    """Background processes, all stopped on exit."""

    def __init__(self):
        self.procs = []

    def start(self, args, log, env=None, cpus=None):
        # `cpus`: the CPUs the process (and what it starts) may run on, set
        # before it starts, so a thread-per-core proxy sees only those.
        p = subprocess.Popen(
            args,
            stdout=open(log, "w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        self.procs.append(p)
        return p

    def stop(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


# ---------------------------------------------------------------- processes


def pids_of(group_leader):
    """The leader and its children (nginx master + workers)."""
    pids = [group_leader]
    try:
        out = subprocess.run(
            ["pgrep", "-P", str(group_leader)], capture_output=True, text=True
        ).stdout
        pids += [int(x) for x in out.split()]
    except FileNotFoundError:
        pass
    return pids


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (FileNotFoundError, IndexError):
            pass
    return total / CLK_TCK


def kib(pid, key):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def reset_peak(pids):
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


def peak_rss_mib(pids):
    return sum(kib(p, "VmHWM") for p in pids) / 1024


# --------------------------------------------------------------------- setup


def tls_files(work):
    ca_key, ca, key, csr, cert = (
        os.path.join(work, n) for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem")
    )
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": True}
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=bench CA"], **quiet)
    subprocess.run(
        ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", key, "-out", csr, "-subj", "/CN=localhost"], **quiet)
    ext = os.path.join(work, "ext.cnf")
    open(ext, "w").write("subjectAltName=DNS:localhost\n")
    subprocess.run(
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "2", "-extfile", ext], **quiet)
    return ca, cert, key


def nginx_conf(work, name, workers, body, logs, defaults=False):
    """`defaults`: nginx's own keep-alive settings towards its clients
    (keepalive_requests 1000, keepalive_timeout 75s), as gateways run it."""
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    access = f"access_log {d}/access.log;" if logs else "access_log off;"
    keepalive = "" if defaults else "keepalive_requests 1000000;\n    keepalive_timeout 300s;"
    conf = f"""
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    {access}
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    {keepalive}
    # Room for an 8 KiB X-Auth-Token (nginx's default line buffer is 8 KiB).
    large_client_header_buffers 4 32k;
    client_max_body_size 16m;
    {body}
}}
"""
    path = os.path.join(d, "nginx.conf")
    open(path, "w").write(conf)
    return path


def start_everything(args, work, procs):
    ports = {k: free_port() for k in ("up", "up_tls", "gw", "peer", "peer_tls", "proxy", "proxy_h1", "iam", "sse")}
    ca, cert, key = tls_files(work)
    upstream = nginx_conf(work, "upstream", 1, f"""
    server {{
        listen 127.0.0.1:{ports['up']};
        listen 127.0.0.1:{ports['up_tls']} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_session_cache shared:up:1m;
        location / {{ default_type application/json; return 200 '{{"status":"ok"}}'; }}
        # The large uploads: `return` answers before the body is read (and wrk,
        # seeing the answer, starts its next request in the middle of the
        # body); here nginx reads the whole body first, then passes it to the
        # location above.
        location /v1/infers/upload {{
            client_body_buffer_size 16m;
            proxy_pass http://127.0.0.1:{ports['up']}/v1/infers/bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}""", logs=False)
    # A gateway as they run: nginx at its defaults towards its clients (h2
    # GOAWAY after 1,000 requests, 128 streams), streaming (proxy_buffering
    # off, so END_STREAM comes in an empty frame of its own) from the
    # upstream above.
    gw = nginx_conf(work, "gw", 1, f"""
    upstream up {{ server 127.0.0.1:{ports['up']}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{ports['gw']} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}""", logs=False, defaults=True)
    peer = nginx_conf(work, "peer", args.threads, f"""
    upstream up {{ server 127.0.0.1:{ports['up']}; keepalive 64; }}
    upstream up_tls {{ server 127.0.0.1:{ports['up_tls']}; keepalive 64; }}
    upstream gw {{ server 127.0.0.1:{ports['gw']}; keepalive 64; }}
    upstream sse {{ server 127.0.0.1:{ports['sse']}; }}
    server {{
        listen 127.0.0.1:{ports['peer']};
        location /token8k {{
            proxy_pass http://up/v1/infers/bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            set $piece "{TOKEN_PIECE}";
            proxy_set_header X-Auth-Token "$piece$piece$piece$piece";
        }}
        location /sse {{
            proxy_pass http://sse;
            proxy_http_version 1.1;
            proxy_buffering off;
            proxy_set_header Connection "";
            proxy_set_header X-Auth-Token "{TOKEN}";
        }}
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Auth-Token "{TOKEN}";
        }}
    }}
    server {{
        listen 127.0.0.1:{ports['peer_tls']};
        location /gw/ {{
            proxy_pass https://gw/v1/infers/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Auth-Token "{TOKEN}";
            proxy_ssl_server_name on;
            proxy_ssl_name localhost;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_session_reuse on;
        }}
        location / {{
            proxy_pass https://up_tls;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Auth-Token "{TOKEN}";
            proxy_ssl_server_name on;
            proxy_ssl_name localhost;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_session_reuse on;
        }}
    }}""", logs=not args.quiet_logs)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    up = procs.start([nginx, "-c", upstream, "-e", os.path.join(work, "upstream", "error.log")],
                     os.path.join(work, "upstream.out"), cpus=load_cpus(args))
    peer_p = procs.start([nginx, "-c", peer, "-e", os.path.join(work, "peer", "error.log")],
                         os.path.join(work, "peer.out"), cpus=measured_cpus(args))
    procs.start([nginx, "-c", gw, "-e", os.path.join(work, "gw", "error.log")],
                os.path.join(work, "gw.out"), cpus=load_cpus(args))
    iam = procs.start(
        [os.path.join(ROOT, "target/dist/examples/stand_in"), "--listen",
         f"127.0.0.1:{ports['iam']}", "--token-lifetime", "24h"],
        os.path.join(work, "iam.out"),
        env={"STAND_IN_AK": AK, "STAND_IN_SK": SK, "STAND_IN_PASSWORD": IAM_PASSWORD},
    )
    procs.start([sys.executable, os.path.abspath(__file__), "--sse-upstream", str(ports["sse"])],
                os.path.join(work, "sse.out"))
    for p in ("up", "up_tls", "gw", "peer", "peer_tls", "iam", "sse"):
        wait_port(ports[p])

    def proxy_config(listen, http2):
        u = f"http://127.0.0.1:{ports['up']}/v1/infers/bench"
        upload = f"http://127.0.0.1:{ports['up']}/v1/infers/upload"
        t = f"https://localhost:{ports['up_tls']}/v1/infers/bench"
        g = f"https://localhost:{ports['gw']}/v1/infers/bench"
        return f"""
[server]
listen = "127.0.0.1:{listen}"
[upstream_tls]
roots = "none"
ca_file = "{ca}"
http2 = "{http2}"
[[route]]
prefix = "/none"
upstream = "{u}"
[[route]]
prefix = "/token"
upstream = "{u}"
credentials = "iam"
[[route]]
prefix = "/apikey"
upstream = "{u}"
credentials = "key"
[[route]]
prefix = "/aksk"
upstream = "{u}"
credentials = "aksk"
[[route]]
prefix = "/aksk-signed"
upstream = "{upload}"
credentials = "aksk"
payload = "signed"
[[route]]
prefix = "/aksk-unsigned"
upstream = "{upload}"
credentials = "aksk"
payload = "unsigned"
[[route]]
prefix = "/sse"
upstream = "http://127.0.0.1:{ports['sse']}/sse"
credentials = "key"
[[route]]
prefix = "/tls"
upstream = "{t}"
credentials = "key"
[[route]]
prefix = "/gw"
upstream = "{g}"
credentials = "key"
[credentials.iam]
type = "token"
iam_endpoint = "http://127.0.0.1:{ports['iam']}"
user = "soak"
password = {{ env = "BENCH_IAM_PASSWORD" }}
domain = "soak"
project = "cn-north-4"
[credentials.key]
type = "apikey"
app_code = {{ env = "BENCH_APP_CODE" }}
[credentials.aksk]
type = "aksk"
access_key = {{ env = "BENCH_AK" }}
secret_key = {{ env = "BENCH_SK" }}
"""

    env = {
        "BENCH_IAM_PASSWORD": IAM_PASSWORD,
        "BENCH_APP_CODE": APP_CODE,
        "BENCH_AK": AK,
        "BENCH_SK": SK,
        "RUST_LOG": "warn" if args.quiet_logs else "info",
    }
    binary = args.binary or os.path.join(ROOT, "target/dist/modelarts-proxy")
    proxies = {}
    for name, port, http2 in (("proxy", ports["proxy"], "auto"), ("proxy_h1", ports["proxy_h1"], "http1")):
        cfg = os.path.join(work, f"{name}.toml")
        open(cfg, "w").write(proxy_config(port, http2))
        proxies[name] = procs.start([binary, "run", "-c", cfg], os.path.join(work, f"{name}.log"), env=env,
                                    cpus=measured_cpus(args))
        wait_port(port)
    # The token route answers once the first token is in.
    for _ in range(100):
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                              f"http://127.0.0.1:{ports['proxy']}/token/"], capture_output=True, text=True)
        if out.stdout == "200":
            break
        time.sleep(0.1)
    return ports, {"upstream": up.pid, "peer": peer_p.pid, **{k: v.pid for k, v in proxies.items()}}


# ----------------------------------------------------------------- scenarios


def scenarios(ports):
    up, peer, peer_tls = ports["up"], ports["peer"], ports["peer_tls"]
    p, h1 = ports["proxy"], ports["proxy_h1"]
    kib = "x" * 1000
    one_k = '{"inputs":"' + kib + '"}'  # 1014 bytes
    mib = lambda n: '{"inputs":"' + "x" * (n * 1024 * 1024 - 14) + '"}'  # noqa: E731
    s = [
        # name, url, who serves as "the proxy", method, body, connections, baseline group
        ("direct", f"http://127.0.0.1:{up}/v1/infers/bench", None, "GET", None, None, "get"),
        ("nginx", f"http://127.0.0.1:{peer}/v1/infers/bench", "peer", "GET", None, None, "get"),
        ("mp-none", f"http://127.0.0.1:{p}/none", "proxy", "GET", None, None, "get"),
        ("nginx-token8k", f"http://127.0.0.1:{peer}/token8k", "peer", "GET", None, None, "token"),
        ("mp-token", f"http://127.0.0.1:{p}/token", "proxy", "GET", None, None, "token"),
        ("mp-apikey", f"http://127.0.0.1:{p}/apikey", "proxy", "GET", None, None, "get"),
        ("direct-post1k", f"http://127.0.0.1:{up}/v1/infers/bench", None, "POST", one_k, None, "post1k"),
        ("nginx-post1k", f"http://127.0.0.1:{peer}/v1/infers/bench", "peer", "POST", one_k, None, "post1k"),
        ("mp-aksk-post1k", f"http://127.0.0.1:{p}/aksk", "proxy", "POST", one_k, None, "post1k"),
        ("mp-aksk-1m-signed", f"http://127.0.0.1:{p}/aksk-signed", "proxy", "POST", mib(1), 1, "big"),
        ("mp-aksk-1m-unsigned", f"http://127.0.0.1:{p}/aksk-unsigned", "proxy", "POST", mib(1), 1, "big"),
        ("mp-aksk-12m-signed", f"http://127.0.0.1:{p}/aksk-signed", "proxy", "POST", mib(12), 1, "big"),
        ("mp-aksk-12m-unsigned", f"http://127.0.0.1:{p}/aksk-unsigned", "proxy", "POST", mib(12), 1, "big"),
        ("nginx-tls", f"http://127.0.0.1:{peer_tls}/v1/infers/bench", "peer", "GET", None, None, "tls"),
        ("tls-h1", f"http://127.0.0.1:{h1}/tls", "proxy_h1", "GET", None, None, "tls"),
        ("tls-h2", f"http://127.0.0.1:{p}/tls", "proxy", "GET", None, None, "tls"),
        # Through nginx at its defaults (see "gw" above): non-2xx must be 0.
        ("nginx-gw", f"http://127.0.0.1:{peer_tls}/gw/bench", "peer", "GET", None, None, "gw"),
        ("gw-h1", f"http://127.0.0.1:{h1}/gw", "proxy_h1", "GET", None, None, "gw"),
        ("gw-h2", f"http://127.0.0.1:{p}/gw", "proxy", "GET", None, None, "gw"),
    ]
    return s


def lua(work, name, method, body):
    path = os.path.join(work, f"{name}.lua")
    with open(path, "w") as f:
        f.write(f'wrk.method = "{method}"\n')
        if body is not None:
            f.write('wrk.headers["Content-Type"] = "application/json"\n')
            f.write(f"wrk.body = [[{body}]]\n")
    return path


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)$", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")


def measured_cpus(args):
    """--one-core: the proxies compared (ours and the nginx peer) get CPU 0."""
    return {0} if args.one_core else None


def load_cpus(args):
    """--one-core: wrk and the upstreams stay off CPU 0."""
    if not args.one_core:
        return None
    rest = set(os.sched_getaffinity(0)) - {0}
    return rest or None


def wrk(url, script, connections, duration, cpus=None):
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script, url],
        capture_output=True, text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    ).stdout
    r = {"raw": out}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in", out)
    r["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out)
    r["max"] = ms(m.group(1)) if m else float("nan")
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}%\s+(\S+)", out)
        r["p" + pct] = ms(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["errors"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    r["socket_errors"] = m.group(1) if m else ""
    return r


def run_one(sc, work, pids, args):
    name, url, who, method, body, conns, _group = sc
    script = lua(work, name, method, body)
    conns = conns or args.connections
    watched = pids_of(pids[who]) if who else []
    wrk(url, script, conns, 1, load_cpus(args))  # warm-up (connections, pools, TLS sessions)
    reset_peak(watched)
    cpu0 = cpu_seconds(watched)
    r = wrk(url, script, conns, args.duration, load_cpus(args))
    cpu = cpu_seconds(watched) - cpu0
    r["cpu_per_10k"] = cpu / r["requests"] * 10_000 if who and r["requests"] else float("nan")
    r["rss"] = peak_rss_mib(watched) if who else float("nan")
    return r


# ----------------------------------------------------------------------- SSE
#
# The upstream sends EVENTS events SSE_INTERVAL apart on each stream, each
# carrying the CLOCK_MONOTONIC time it was written at; the client notes the
# time each arrives. Both are this script, so their own costs are the same
# on every path: what the proxy adds is its latency minus direct's.

EVENTS = 100
SSE_INTERVAL = 0.01
SSE_STREAMS = 4


def sse_upstream(port):
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(EVENTS):
                event = f"data: {time.monotonic_ns()}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
                time.sleep(SSE_INTERVAL)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def log_message(self, *args):
            pass

    http.server.ThreadingHTTPServer.daemon_threads = True
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def sse_stream(port, path):
    """Per-event latencies (ms) of one stream."""
    lat = []
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                  "Connection: close\r\n\r\n".encode())
        pending = b""
        while True:
            data = s.recv(65536)
            now = time.monotonic_ns()
            if not data:
                break
            pending += data
            for m in re.finditer(rb"data: (\d+)\n\n", pending):
                lat.append((now - int(m.group(1))) / 1e6)
            last = pending.rfind(b"\n\n")
            if last >= 0:
                pending = pending[last + 2:]
    return lat


def sse_run(port, path):
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(SSE_STREAMS) as pool:
        streams = list(pool.map(lambda _: sse_stream(port, path), range(SSE_STREAMS)))
    lat = sorted(x for st in streams for x in st)
    got = len(lat)
    pct = lambda q: lat[min(got - 1, int(q * got))] if got else float("nan")  # noqa: E731
    return {"events": got, "p50": pct(0.5), "p99": pct(0.99), "max": lat[-1] if got else float("nan")}


def sse_scenarios(ports):
    return [
        ("sse-direct", ports["sse"], "/sse"),
        ("sse-nginx", ports["peer"], "/sse"),
        ("sse-mp", ports["proxy"], "/sse"),
    ]


def report_sse(rounds, names):
    lines = [
        f"| SSE ({SSE_STREAMS} streams × {EVENTS} events, {SSE_INTERVAL * 1000:.0f} ms apart) | events | "
        "p50 ms | p99 ms | max ms | p50 added vs direct | p99 added vs direct |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        rows = [r[name] for r in rounds]

        def added(key):
            if name == "sse-direct" or "sse-direct" not in rounds[0]:
                return "—"
            return fmt(med([r[name][key] - r["sse-direct"][key] for r in rounds]), 3)

        lines.append(
            f"| {name} | {sum(x['events'] for x in rows)} | {fmt(med([x['p50'] for x in rows]), 3)} | "
            f"{fmt(med([x['p99'] for x in rows]), 3)} | {fmt(med([x['max'] for x in rows]), 2)} | "
            f"{added('p50')} | {added('p99')} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------- report


def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def fmt(x, digits=2):
    if x != x:
        return "—"
    return f"{x:.{digits}f}"


def report(rounds, scs):
    baseline_nginx = {"get": "nginx", "token": "nginx-token8k", "post1k": "nginx-post1k", "tls": "nginx-tls",
                      "gw": "nginx-gw"}
    baseline_direct = {"get": "direct", "token": "direct", "post1k": "direct-post1k"}
    lines = [
        "| scenario | req/s median (min–max) | × nginx | × direct | p50 ms | p99 ms | max ms | CPU s / 10k req | × nginx CPU | peak RSS MiB | non-2xx |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for sc in scs:
        name, group = sc[0], sc[6]
        rows = [r[name] for r in rounds]
        rps = [x["rps"] for x in rows]

        def ratio(base, key):
            if base is None or base == name or any(base not in r for r in rounds):
                return "—"
            vals = [r[name][key] / r[base][key] for r in rounds if r[base][key]]
            return fmt(med(vals)) + "×"

        nb = baseline_nginx.get(group)
        db = baseline_direct.get(group)
        lines.append(
            f"| {name} | {med(rps):,.0f} ({min(rps):,.0f}–{max(rps):,.0f}) | {ratio(nb, 'rps')} | "
            f"{ratio(db, 'rps')} | {fmt(med([x['p50'] for x in rows]), 3)} | "
            f"{fmt(med([x['p99'] for x in rows]), 3)} | {fmt(med([x['max'] for x in rows]), 1)} | "
            f"{fmt(med([x['cpu_per_10k'] for x in rows]), 3)} | "
            f"{ratio(nb, 'cpu_per_10k') if sc[2] else '—'} | "
            f"{fmt(med([x['rss'] for x in rows]), 1)} | {sum(x['errors'] for x in rows)} |"
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5, help="seconds per measured run")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--one-core", action="store_true",
                    help="the proxies compared run on CPU 0 alone (one worker each); wrk and the upstreams elsewhere")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="nginx peer workers")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--quiet-logs", action="store_true", help="no access logs in either proxy")
    ap.add_argument("--binary", default="", help="the modelarts-proxy binary")
    ap.add_argument("--out", default="", help="also write the table (markdown) here")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--sse-upstream", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--serve", action="store_true",
                    help="start everything, print the ports and PIDs, wait for Ctrl-C (to profile by hand)")
    args = ap.parse_args()
    if args.one_core:
        args.threads = 1  # one nginx worker, as one proxy worker
    if args.sse_upstream:
        return sse_upstream(args.sse_upstream)

    work = tempfile.mkdtemp(prefix="mp-bench-")
    procs = Procs()
    try:
        ports, pids = start_everything(args, work, procs)
        scs = scenarios(ports)
        sses = sse_scenarios(ports)
        if args.list:
            for sc in scs:
                print(sc[0])
            for sc in sses:
                print(sc[0])
            return
        if args.serve:
            for sc in scs:
                print(f"{sc[0]:<22} {sc[3]:<4} {sc[1]}")
            print(f"pids: {pids}; work dir {work}; Ctrl-C stops", flush=True)
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT, signal.SIGTERM])
            signal.sigwait([signal.SIGINT, signal.SIGTERM])
            return
        if args.only:
            keep = set(args.only.split(","))
            scs = [sc for sc in scs if sc[0] in keep]
            sses = [sc for sc in sses if sc[0] in keep]
        idle = kib(pids["proxy"], "VmRSS") / 1024
        print(f"# modelarts-proxy idle RSS: {idle:.1f} MiB; work dir {work}", file=sys.stderr)
        rounds = []
        for i in range(args.rounds):
            k = i % len(scs) if scs else 0
            order = scs[k:] + scs[:k]
            results = {}
            for sc in order:
                results[sc[0]] = r = run_one(sc, work, pids, args)
                print(f"round {i + 1}/{args.rounds} {sc[0]:<22} {r['rps']:>10,.0f} req/s  "
                      f"p50 {fmt(r['p50'], 3)} ms  p99 {fmt(r['p99'], 3)} ms  non-2xx {r['errors']}"
                      f"{'  socket errors: ' + r['socket_errors'] if r['socket_errors'] else ''}",
                      file=sys.stderr, flush=True)
            for name, port, path in sses:
                results[name] = r = sse_run(port, path)
                print(f"round {i + 1}/{args.rounds} {name:<22} {r['events']} events  p50 {fmt(r['p50'], 3)} ms  "
                      f"p99 {fmt(r['p99'], 3)} ms  max {fmt(r['max'], 2)} ms", file=sys.stderr, flush=True)
            rounds.append(results)
        upstream_conns = established(
            ports["up_tls"], {"tls-h2": pids["proxy"], "tls-h1": pids["proxy_h1"], "nginx-tls": pids["peer"]}
        )
        table = report(rounds, scs) if scs else ""
        if sses:
            table += "\n\n" + report_sse(rounds, [n for n, _, _ in sses])
        machine = machine_line()
        text = (f"{table}\n\nidle RSS of modelarts-proxy: {idle:.1f} MiB. "
                "Connections open to the TLS upstream at the end, by client: "
                f"{', '.join(f'{k} {v}' for k, v in upstream_conns.items())} "
                f"(wrk used {args.connections} client connections).\n"
                f"Machine: {machine}\n")
        print(text)
        if args.out:
            open(args.out, "w").write(text)
    finally:
        procs.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


def established(port, pids):
    """Open connections to 127.0.0.1:port, per process of `pids` (name -> pid)."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True).stdout
    counts = {}
    for name, pid in pids.items():
        family = set(pids_of(pid))
        counts[name] = sum(
            1 for line in out.splitlines()
            if any(f"pid={p}," in line for p in family)
        )
    return counts


def machine_line():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[:1]
    return f"{os.cpu_count()} × {cpu}, Linux {os.uname().release}; {nginx}; {' '.join(wrk_v)}"


if __name__ == "__main__":
    main()
