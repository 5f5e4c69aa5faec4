#!/usr/bin/env bash
# Checks the API against its own OpenAPI document with schemathesis (PyPI), a client nobody here
# wrote: `st run --checks all` against the running server in each auth mode (none, api-key with
# an admin key, jwt with the tests' own issuer serving a real JWKS). Every check must pass:
# status codes, content types, headers and bodies as declared, valid requests accepted, invalid
# ones refused, credentials enforced. The exceptions are in scripts/lib/schemathesis.toml, each
# with its reason. Installs schemathesis when missing.
#
#   scripts/test-openapi.sh                 # all three modes
#   MODES="api-key" scripts/test-openapi.sh
#   MAX_EXAMPLES=200 scripts/test-openapi.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# shellcheck source=scripts/lib/services.sh
source scripts/lib/services.sh

PYTHON=${PYTHON:-python3}
MODES=${MODES:-"none api-key jwt"}
MAX_EXAMPLES=${MAX_EXAMPLES:-40}
if ! "$PYTHON" -c "import schemathesis" 2>/dev/null; then
    echo "test-openapi: installing schemathesis" >&2
    "$PYTHON" -m pip install --quiet --disable-pip-version-check schemathesis ||
        "$PYTHON" -m pip install --quiet --disable-pip-version-check --break-system-packages schemathesis
fi

cargo build --locked -p thumbnail-api --bin thumbnail-api --example test_issuer >&2
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/debug/thumbnail-api"
ISSUER_BIN="$TARGET/debug/examples/test_issuer"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# The tests' own issuer, for jwt mode.
"$ISSUER_BIN" >"$WORK/issuer.out" 2>"$WORK/issuer.err" &
PIDS+=($!)
deadline=$((SECONDS + 30))
until grep -q '^token=' "$WORK/issuer.out" 2>/dev/null; do
    ((SECONDS < deadline)) || { cat "$WORK/issuer.err" >&2; svc_die "the test issuer did not start"; }
    sleep 0.1
done
ISSUER=$(sed -n 's/^issuer=//p' "$WORK/issuer.out")
TOKEN=$(sed -n 's/^token=//p' "$WORK/issuer.out")

failed=()
for mode in $MODES; do
    data="$WORK/$mode"
    mkdir -p "$data"
    auth=()
    env=(AUTH_MODE="$mode" LOG_LEVEL=warn DATA_DIR="$data"
        # Let the generator reach the upload path; the limits have tests of their own.
        UPLOADS_PER_MINUTE=1000000 UPLOAD_BURST=100000
        # Webhooks on, so that `webhook_url` fields are accepted (generated targets are refused
        # or unreachable at delivery, which does not concern the requests).
        WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw)
    case "$mode" in
    api-key)
        key=$("$BIN" keys --data-dir "$data" create --owner schemathesis --scope admin 2>/dev/null)
        auth=(-H "Authorization: Bearer $key")
        ;;
    jwt)
        env+=(JWT_ISSUER="$ISSUER" JWT_AUDIENCE=thumbnail-api)
        auth=(-H "Authorization: Bearer $TOKEN")
        ;;
    esac
    port=$(svc_free_port)
    env "${env[@]}" "$BIN" --host 127.0.0.1 --port "$port" >"$data/api.log" 2>&1 &
    api=$!
    PIDS+=("$api")
    deadline=$((SECONDS + 60))
    until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do
        ((SECONDS < deadline)) || { cat "$data/api.log" >&2; svc_die "the API ($mode) did not start"; }
        sleep 0.1
    done
    printf '\n==> schemathesis, AUTH_MODE=%s\n' "$mode" >&2
    if PYTHONPATH="$ROOT/scripts/lib${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m schemathesis.cli \
        --config-file "$ROOT/scripts/lib/schemathesis.toml" run "http://127.0.0.1:$port/openapi.json" \
        --checks all --max-examples "$MAX_EXAMPLES" --no-color "${auth[@]}"; then
        :
    else
        failed+=("$mode")
        echo "==> API log ($mode):" >&2
        tail -n 50 "$data/api.log" >&2
    fi
    kill "$api" 2>/dev/null || true
    wait "$api" 2>/dev/null || true
done

if ((${#failed[@]})); then
    echo "test-openapi: schemathesis failed in: ${failed[*]}" >&2
    exit 1
fi
echo "test-openapi: schemathesis passed in every mode ($MODES)" >&2
