#!/usr/bin/env bash
# The project's test command (CI runs exactly this, see .ci/run).
#
# Installs what is missing (PostgreSQL, Chromium and chromedriver from Debian's packages), builds
# the S3 server (testing/s3-server) and, when not cached, a real Kubernetes control plane (kube-apiserver and
# kube-controller-manager 1.20 from Debian's sources: scripts/lib/kube-control-plane.sh), starts a
# throwaway PostgreSQL cluster, the S3 server and the control plane (with etcd) on free loopback
# ports, runs every test of the workspace against them and the doctests, then the chart checks
# (scripts/test-chart.sh), schemathesis against the OpenAPI document in each auth mode
# (scripts/test-openapi.sh), the test command's own tests (scripts/tests), the quick modes of both
# benchmarks (against the debug builds the tests made), cargo deny (scripts/deny.sh), rustfmt and
# clippy. The services are stopped and their files removed on exit, whatever happened.
#
# Every step runs even when an earlier one failed; the summary at the end says which failed, and
# the exit status is non-zero if any did. The closing line counts the tests of every counted step
# (scripts/lib/count_tests.py: a crashed or uncompiled test binary and pytest errors count as
# failed).
#
# Environment:
#   KEEP_SERVICES=1   leave the state directory (data and logs) in place after the run
#   SKIP_LINT=1       skip rustfmt and clippy
#   CARGO_TEST_ARGS   extra arguments after `cargo test --workspace --all-targets`
# UPDATE_* variables (UPDATE_OPENAPI, UPDATE_GENERATED: tests that rewrite committed generated
# files instead of checking them) are unset here, so that a stale file cannot pass.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"
# shellcheck source=scripts/lib/kube-control-plane.sh
source "$ROOT/scripts/lib/kube-control-plane.sh"
# shellcheck source=scripts/lib/python.sh
source "$ROOT/scripts/lib/python.sh"

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
# A one-shot build gains nothing from the incremental cache, which costs gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# A test that rewrites a committed file passes whatever the file held: never here.
for var in $(compgen -e); do
    if [[ "$var" == UPDATE_* ]]; then
        svc_log "unsetting $var: the test command checks committed files, it never rewrites them"
        unset "$var"
    fi
done

T_START=$(svc_now)
STATE=""
FAILED=()
TIMINGS=()

cleanup() {
    local status=$?
    set +e
    if [[ -n "$STATE" ]]; then
        if ((status != 0)) || ((${#FAILED[@]} > 0)); then
            svc_print_logs "$STATE"
            kcp_print_logs "$STATE"
        fi
        kcp_stop "$STATE"
        svc_stop_all "$STATE"
        if [[ "${KEEP_SERVICES:-}" == 1 ]]; then
            echo "0" >"$STATE/owner.pid"
            svc_log "kept $STATE"
        else
            rm -rf "$STATE"
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# step NAME COMMAND...: run a step, time it, remember a failure and go on. STEP_RC: its status.
STEP_RC=0
step() {
    local name="$1" t0 rc
    shift
    printf '\n==> [%s] %s\n' "$name" "$*" >&2
    t0=$(svc_now)
    set +e
    "$@"
    rc=$?
    set -e
    STEP_RC=$rc
    TIMINGS+=("$(printf '%-14s %6ss  %s' "$name" "$(svc_since "$t0")" "$([[ $rc == 0 ]] && echo ok || echo "FAILED ($rc)")")")
    if ((rc != 0)); then
        FAILED+=("$name")
        printf '==> [%s] FAILED with exit status %s\n' "$name" "$rc" >&2
    fi
    return 0
}

command -v cargo >/dev/null 2>&1 || svc_die "cargo is not on PATH"

svc_reap_stale
# A clean build of the workspace and its tests needs a few gigabytes; say so before it fails.
free_kib=$(df -Pk "$ROOT" | awk 'NR == 2 { print $4 }')
svc_log "free disk space: $((free_kib / 1024 / 1024)) GiB"
if ((free_kib < 6 * 1024 * 1024)); then
    svc_log "warning: less than 6 GiB free; the build may run out of disk space"
fi
STATE="$(mktemp -d "$SVC_PREFIX.XXXXXX")"
svc_log "services state directory: $STATE"
# The control plane's build (about 18 minutes when not cached, then cached outside the clone)
# runs while the workspace compiles; the tests wait for it. A failed build fails the run: the
# operator's tests are never skipped.
t0=$(svc_now)
# apt is used here only, one after the other; the compile in the background needs none.
svc_ensure_build_packages
svc_ensure_browser
svc_ensure_postgres
kcp_prepare
KCP_LOG="$STATE/kube-build.log"
(kcp_compile) >"$KCP_LOG" 2>&1 &
KCP_BUILD_PID=$!
# The tests render the chart's RBAC with the real Helm engine (helm-python-sdk).
py_ensure_chart_packages
# The command-line client's terminal test (client/tests/terminal.rs) runs it in a real tmux.
command -v tmux >/dev/null 2>&1 || svc_apt_install tmux
# The S3 server is a workspace binary: building it with the same targets the test step builds
# compiles the workspace once.
export SVC_S3S_BUILD_ARGS="${SVC_S3S_BUILD_ARGS:---workspace --all-targets}"
svc_start_all "$STATE" "$$"
TIMINGS+=("$(printf '%-14s %6ss  %s' services "$(svc_since "$t0")" ok)")
t0=$(svc_now)
if ! wait "$KCP_BUILD_PID"; then
    cat "$KCP_LOG" >&2
    svc_die "building the Kubernetes control plane failed (log above)"
fi
grep -E '^==> \[kube\]' "$KCP_LOG" >&2 || true
kcp_start "$STATE"
TIMINGS+=("$(printf '%-14s %6ss  %s' kubernetes "$(svc_since "$t0")" ok)")
svc_log "TEST_DATABASE_URL=$TEST_DATABASE_URL"
svc_log "TEST_S3_ENDPOINT=$TEST_S3_ENDPOINT"
svc_log "TEST_KUBE_URL=$TEST_KUBE_URL"

# counted_step NAME KIND COMMAND...: a step whose output is kept (and shown) to count its tests at
# the end; KIND is how to read it (cargo or pytest, see scripts/lib/count_tests.py).
counted_step() {
    local name="$1" kind="$2" log="$STATE/$1.log"
    shift 2
    step "$name" run_logged "$log" "$@"
    printf '%s %s %s\n' "$kind" "$STEP_RC" "$log" >>"$STATE/counted"
}
run_logged() {
    local log="$1"
    shift
    "$@" 2>&1 | tee "$log"
}
count_tests() {
    python3 "$ROOT/scripts/lib/count_tests.py" "$STATE/counted"
}
: >"$STATE/counted"

# shellcheck disable=SC2086
counted_step tests cargo cargo test --workspace --all-targets --no-fail-fast ${CARGO_TEST_ARGS:-}
# `--all-targets` leaves out the doctests.
counted_step doctests cargo cargo test --workspace --doc --no-fail-fast

# The chart, run for real against these services and the binaries the tests built.
counted_step chart pytest env CHART_REQUIRE_SERVICES=1 THUMBNAIL_BIN_DIR="$(svc_target_dir)/debug" \
    bash "$ROOT/scripts/test-chart.sh"
counted_step scripts pytest bash "$ROOT/scripts/test-scripts.sh"

# The OpenAPI document against the running server, by schemathesis, in each auth mode.
step openapi bash "$ROOT/scripts/test-openapi.sh"

# The benchmarks' quick modes (a few jobs, one image) on the debug builds above: they must run to
# the end and print their tables; their figures are not checked here.
step bench-engine env BENCH_QUICK=1 bash "$ROOT/scripts/bench-engine.sh"
step bench-service env BENCH_QUICK=1 bash "$ROOT/scripts/bench-service.sh"

step deny bash "$ROOT/scripts/deny.sh"

if [[ "${SKIP_LINT:-}" != 1 ]]; then
    step rustfmt cargo fmt --all --check
    step clippy cargo clippy --workspace --all-targets -- -D warnings
fi

printf '\n==> summary (total %ss)\n' "$(svc_since "$T_START")" >&2
printf '    %s\n' "${TIMINGS[@]}" >&2
if ((${#FAILED[@]} > 0)); then
    printf '==> FAILED steps: %s\n' "${FAILED[*]}" >&2
    count_tests
    exit 1
fi
printf '==> all steps passed\n' >&2
count_tests
