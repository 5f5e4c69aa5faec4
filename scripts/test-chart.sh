#!/usr/bin/env bash
# Renders and lints the Helm chart with the real Helm engine (helm-python-sdk, which wraps Helm's
# Go SDK: no helm binary or cluster needed) and validates every manifest, the CRD and the example
# ThumbnailJobs (see helm-charts/tests/test_chart.py). Installs its Python packages when missing.
# Extra arguments go to pytest, e.g. `scripts/test-chart.sh -k rbac -v`.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib/python.sh
source scripts/lib/python.sh
py_ensure_chart_packages

# -p no:cacheprovider: leave no .pytest_cache in the chart directory.
exec "$PY" -m pytest -p no:cacheprovider -q -rfE helm-charts/tests "$@"
