#!/usr/bin/env bash
# Renders and lints the Helm chart with the real Helm engine (helm-python-sdk, which wraps Helm's
# Go SDK: no helm binary or cluster needed) and validates every manifest, the CRD and the example
# ThumbnailJobs (see helm-charts/tests/test_chart.py). Installs its Python packages when missing.
# Extra arguments go to pytest, e.g. `scripts/test-chart.sh -k rbac -v`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
export PYTHONDONTWRITEBYTECODE=1
missing=()
for pair in helm_python:helm-python-sdk kubernetes_validate:kubernetes-validate pytest:pytest \
    yaml:pyyaml jsonschema:jsonschema cel:common-expression-language boto3:boto3; do
    module=${pair%%:*}
    package=${pair#*:}
    "$PYTHON" -c "import $module" 2>/dev/null || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "test-chart: installing ${missing[*]}" >&2
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "${missing[@]}" ||
        "$PYTHON" -m pip install --quiet --disable-pip-version-check --break-system-packages "${missing[@]}"
fi

# -p no:cacheprovider: leave no .pytest_cache in the chart directory.
exec "$PYTHON" -m pytest -p no:cacheprovider -q -rfE helm-charts/tests "$@"
