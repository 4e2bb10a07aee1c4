#!/usr/bin/env bash
# pip-audit over the locked dependencies: the dev lock and each function's package lock.
# Fails on any known vulnerability. If the vulnerability service cannot be reached (PyPI's
# per-release JSON API, or OSV), pip-audit can only skip packages: this says so loudly and
# passes, unless PIP_AUDIT_STRICT=1 (set it where the service is reachable).
set -euo pipefail
PIP_AUDIT=${1:?usage: pip-audit.sh PATH_TO_PIP_AUDIT}
LOCKS=(requirements/dev.lock src/requirements/api.txt src/requirements/worker.txt)
report=$(mktemp)
trap 'rm -f "$report"' EXIT
status=0
for lock in "${LOCKS[@]}"; do
    rc=0
    "$PIP_AUDIT" --no-deps --disable-pip --progress-spinner off --format json --output "$report" \
        -r "$lock" 2>/dev/null || rc=$?
    summary=$("$(dirname "$PIP_AUDIT")/python" - "$report" <<'PY'
import json, sys
deps = json.load(open(sys.argv[1]))["dependencies"]
vulns = [(d["name"], d["version"], v["id"]) for d in deps for v in d.get("vulns", [])]
skipped = [d["name"] for d in deps if "skip_reason" in d]
for name, version, vuln in vulns:
    print(f"  VULNERABLE {name}=={version}: {vuln}")
print(f"{len(deps)} {len(skipped)} {len(vulns)}")
PY
)
    read -r total skipped vulns <<<"$(tail -n1 <<<"$summary")"
    head -n -1 <<<"$summary"
    if [[ $vulns -gt 0 || ( $rc -ne 0 && $skipped -lt $total ) ]]; then
        echo "pip-audit: $lock: $vulns known vulnerabilities"
        status=1
    elif [[ $skipped -gt 0 ]]; then
        echo "pip-audit: $lock: WARNING $skipped of $total packages NOT audited (vulnerability service unreachable)"
        [[ ${PIP_AUDIT_STRICT:-0} == 1 ]] && status=1
    else
        echo "pip-audit: $lock: $total packages, no known vulnerabilities"
    fi
done
exit $status
