#!/usr/bin/env bash
# The test command's own tests (scripts/tests): how scripts/test.sh counts tests, checked on what
# the real cargo and pytest print. Installs pytest when missing. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONDONTWRITEBYTECODE=1
if ! "$PYTHON" -c "import pytest" 2>/dev/null; then
    echo "test-scripts: installing pytest" >&2
    "$PYTHON" -m pip install --quiet --disable-pip-version-check pytest ||
        "$PYTHON" -m pip install --quiet --disable-pip-version-check --break-system-packages pytest
fi
exec "$PYTHON" -m pytest -p no:cacheprovider -q -rfE scripts/tests "$@"
