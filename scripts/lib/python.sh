# shellcheck shell=bash
# The Python packages the chart checks and the operator's tests use (the real Helm engine through
# helm-python-sdk, kubernetes-validate, pytest, ...), installed from PyPI when missing.
# Sourced by scripts/test.sh and scripts/test-chart.sh; sets PY (the interpreter).

PY=${PYTHON:-python3}
export PYTHONDONTWRITEBYTECODE=1

py_ensure_chart_packages() {
    local missing=() pair module package
    for pair in helm_python:helm-python-sdk kubernetes_validate:kubernetes-validate pytest:pytest \
        yaml:pyyaml jsonschema:jsonschema cel:common-expression-language boto3:boto3; do
        module=${pair%%:*}
        package=${pair#*:}
        "$PY" -c "import $module" 2>/dev/null || missing+=("$package")
    done
    if ((${#missing[@]})); then
        echo "==> installing the Python packages ${missing[*]}" >&2
        "$PY" -m pip install --quiet --disable-pip-version-check "${missing[@]}" ||
            "$PY" -m pip install --quiet --disable-pip-version-check --break-system-packages "${missing[@]}"
    fi
}
