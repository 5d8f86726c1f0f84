#!/usr/bin/env bash
# Checks the deployment files as CI does:
#   - deploy/kubernetes/*.yaml against the Kubernetes 1.31 schemas (kubernetes-validate,
#     pinned, from PyPI) and against the "restricted" Pod Security Standard;
#   - deploy/systemd/modelarts-proxy.service with `systemd-analyze verify`, and its
#     `systemd-analyze security` exposure (at most 2.0), where systemd-analyze exists.
# (The configs inside the ConfigMaps are validated by `cargo test`, tests/examples.rs.)
#
#   scripts/check_deploy.sh [path/to/modelarts-proxy]   (for systemd-analyze verify)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${1:-$ROOT/target/debug/modelarts-proxy}
# systemd wants an absolute path.
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
KUBERNETES_VALIDATE=1.31.0
KUBERNETES=1.31.0

venv=${KUBERNETES_VALIDATE_VENV:-${TMPDIR:-/tmp}/modelarts-proxy-deploy-venv}
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE"
fi
echo "kubernetes-validate $KUBERNETES_VALIDATE, Kubernetes $KUBERNETES schemas:"
"$venv/bin/kubernetes-validate" -k "$KUBERNETES" --strict "$ROOT"/deploy/kubernetes/*.yaml

"$venv/bin/python" - "$ROOT"/deploy/kubernetes/*.yaml <<'PY'
"""The restricted Pod Security Standard, for every pod template."""
import sys, yaml
problems = []
for path in sys.argv[1:]:
    for doc in yaml.safe_load_all(open(path)):
        spec = (doc or {}).get("spec", {}).get("template", {}).get("spec")
        if not spec:
            continue
        name = f"{path}: {doc['kind']} {doc['metadata']['name']}"
        pod = spec.get("securityContext", {})
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            sc = c.get("securityContext", {})
            where = f"{name}, container {c['name']}"
            merged = {**pod, **sc}
            if not merged.get("runAsNonRoot"):
                problems.append(f"{where}: runAsNonRoot is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                problems.append(f"{where}: capabilities.drop lacks ALL")
            if merged.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
                problems.append(f"{where}: no seccompProfile RuntimeDefault")
            if c["name"] == "modelarts-proxy":
                if not isinstance(merged.get("runAsUser"), int) or merged["runAsUser"] == 0:
                    problems.append(f"{where}: runAsUser is not a numeric non-root user")
                if not sc.get("readOnlyRootFilesystem"):
                    problems.append(f"{where}: readOnlyRootFilesystem is not true")
                if "limits" not in c.get("resources", {}):
                    problems.append(f"{where}: no resource limits")
        for c in spec.get("initContainers", []):
            if c["name"] == "modelarts-proxy":
                if c.get("restartPolicy") != "Always":
                    problems.append(f"{name}: the proxy init container is not a native sidecar")
                if "startupProbe" not in c:
                    problems.append(f"{name}: the sidecar has no startupProbe")
if problems:
    print("\n".join(problems))
    sys.exit(1)
print("restricted Pod Security Standard: ok")
PY

if command -v systemd-analyze >/dev/null 2>&1; then
    unit=$(mktemp -d)/modelarts-proxy.service
    # verify wants the executable to exist: point the unit at this build.
    sed "s|/usr/local/bin/modelarts-proxy|$BIN|g" "$ROOT/deploy/systemd/modelarts-proxy.service" >"$unit"
    out=$(systemd-analyze verify "$unit" 2>&1 | grep -v -e "EnvironmentFile" -e "Failed to prepare filename" || true)
    if [ -n "$out" ]; then echo "$out"; exit 1; fi
    exposure=$(systemd-analyze security --offline=yes "$unit" 2>/dev/null | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
    echo "systemd-analyze verify: ok; security exposure $exposure (lower is better; 10 is fully exposed)"
    python3 -c "import sys; sys.exit(0 if float('$exposure') <= 2.0 else 1)" || { echo "exposure above 2.0" >&2; exit 1; }
else
    echo "systemd-analyze is not installed: the unit was not verified"
fi
