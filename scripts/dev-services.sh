#!/usr/bin/env bash
# PostgreSQL and an S3 server for running tests by hand (`cargo test -p ...`), the same ones
# scripts/test.sh starts for a whole run, but kept until stopped:
#
#   scripts/dev-services.sh start            install what is missing, start both, print the env
#   eval "$(scripts/dev-services.sh env)"    export TEST_DATABASE_URL and TEST_S3_* in this shell
#   scripts/dev-services.sh status
#   scripts/dev-services.sh stop             stop both and remove their data
#
# The state (data, logs, env) lives in $THUMBNAIL_DEV_SERVICES (default
# ${TMPDIR:-/tmp}/thumbnail-dev-services).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

STATE="${THUMBNAIL_DEV_SERVICES:-${TMPDIR:-/tmp}/thumbnail-dev-services}"

running() {
    [[ -f "$STATE/env" && -f "$STATE/s3/s3s.pid" && -f "$STATE/pg/data/postmaster.pid" ]] || return 1
    svc_alive "$(cat "$STATE/s3/s3s.pid")" || return 1
    svc_alive "$(head -n 1 "$STATE/pg/data/postmaster.pid")" || return 1
}

case "${1:-}" in
start)
    if running; then
        svc_log "already running ($STATE)"
    else
        # Left-overs of a run that did not stop cleanly.
        svc_stop_all "$STATE"
        rm -rf "$STATE"
        trap '[[ $? == 0 ]] || svc_print_logs "$STATE"' EXIT
        # Owner 0: nobody reaps these; they live until `stop`.
        svc_start_all "$STATE" 0
    fi
    cat "$STATE/env"
    svc_log "use them with: eval \"\$($0 env)\""
    ;;
env)
    running || svc_die "not running: $0 start"
    cat "$STATE/env"
    ;;
status)
    if running; then
        echo "running ($STATE)"
        cat "$STATE/env"
    else
        echo "not running"
        exit 1
    fi
    ;;
stop)
    svc_stop_all "$STATE"
    rm -rf "$STATE"
    svc_log "stopped"
    ;;
logs)
    svc_print_logs "$STATE"
    ;;
*)
    echo "usage: $0 start|stop|env|status|logs" >&2
    exit 2
    ;;
esac
