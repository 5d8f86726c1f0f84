#!/usr/bin/env bash
# The status page as a browser renders it: headless Chromium (Debian's)
# loads the admin page of `modelarts-proxy dev` after a request on each
# route; the rendered DOM is checked (every route and credential shown,
# ready, no script, the self-refresh) and a screenshot is written.
#
#   scripts/browser.sh [path/to/modelarts-proxy] [screenshot.png]
#     (defaults: target/debug/modelarts-proxy, target/status-page.png)
#
# Loopback only; `dev` listens on free ports and is stopped on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${1:-$ROOT/target/debug/modelarts-proxy}
SHOT=${2:-$ROOT/target/status-page.png}
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROMIUM" ] || { echo "chromium is not installed (apt-get install chromium)" >&2; exit 1; }

out=$(mktemp)
profile=$(mktemp -d)
"$BIN" dev --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$out" 2>/dev/null &
dev=$!
trap 'kill "$dev" 2>/dev/null || true; rm -rf "$out" "$profile"' EXIT

proxy="" admin=""
for _ in $(seq 1 150); do
  proxy=$(sed -n 's/^  proxy: *\(http:\/\/[0-9.:]*\).*/\1/p' "$out")
  admin=$(sed -n 's/^  admin: *\(http:\/\/[0-9.:]*\).*/\1/p' "$out")
  [ -n "$proxy" ] && [ -n "$admin" ] && break
  kill -0 "$dev" 2>/dev/null || { echo "modelarts-proxy dev exited" >&2; exit 1; }
  sleep 0.2
done
[ -n "$admin" ] || { echo "modelarts-proxy dev did not start" >&2; exit 1; }
# One request per route, and until the IAM token is in (the page says ready).
curl -fsS -o /dev/null "$proxy/" -H 'Content-Type: application/json' -d '{"prompt":"hello"}'
curl -fsS -o /dev/null "$proxy/apikey"
for _ in $(seq 1 50); do curl -fsS -o /dev/null "$proxy/token" -d 'x' && break; sleep 0.2; done

# As the probe that proved Chromium here runs it: no network but loopback.
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
       --disable-background-networking --disable-component-update --disable-sync
       --user-data-dir="$profile")
dom=$(timeout 60 "$CHROMIUM" "${flags[@]}" --dump-dom "$admin/" 2>/dev/null)
python3 - "$dom" <<'PY'
import sys
from html.parser import HTMLParser

class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.ids, self.text, self.refresh, self.table = [], set(), [], None, None
        self.rows = {}
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "table":
            self.table = a.get("id")
            self.rows[self.table] = []
        if tag == "tr" and self.table:
            self.rows[self.table].append([])
        if tag == "meta" and a.get("http-equiv") == "refresh":
            self.refresh = a.get("content")
    def handle_data(self, data):
        self.text.append(data)
        if self.table and self.rows[self.table]:
            self.rows[self.table][-1].append(data.strip())

p = Page()
p.feed(sys.argv[1])
problems = []
for want in ("routes", "credentials", "gateway-errors", "summary"):
    if want not in p.ids:
        problems.append(f"no #{want}")
if "script" in p.tags:
    problems.append("a <script> in the page")
if p.refresh != "10":
    problems.append(f"refresh is {p.refresh!r}")
text = " ".join(p.text)
if "ready" not in text or "not ready" in text:
    problems.append("the summary does not say ready")
routes = [r[0] for r in p.rows.get("routes", [])[1:] if r]
for prefix in ("/", "/token", "/apikey"):
    if prefix not in routes:
        problems.append(f"route {prefix} not shown (rows: {routes})")
creds = {r[0]: r for r in p.rows.get("credentials", [])[1:] if r}
for name in ("demo", "iam", "appcode"):
    row = creds.get(name)
    if not row or "ready" not in row:
        problems.append(f"credential {name} not shown ready: {row}")
if problems:
    print("status page in Chromium:\n  " + "\n  ".join(problems))
    sys.exit(1)
print(f"status page in Chromium: ok ({len(routes)} routes, {len(creds)} credentials, refresh 10 s, no script)")
PY
timeout 60 "$CHROMIUM" "${flags[@]}" --window-size=1150,640 --screenshot="$SHOT" "$admin/" >/dev/null 2>&1
echo "screenshot: $SHOT"
