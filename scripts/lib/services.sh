# shellcheck shell=bash
# The servers the tests talk to: a throwaway PostgreSQL cluster and an S3 server (s3s-fs, served
# by testing/s3-server), each on a free loopback port, with their data and logs in one state
# directory. Sourced by scripts/test.sh and scripts/dev-services.sh; every function is prefixed `svc_`.
#
# A state directory holds:
#   owner.pid     the process that owns the services (their lifetime follows it; 0 = no owner)
#   env           the TEST_* variables, as `export` lines
#   pg/           the cluster (data/, socket, pg.log), owned by the user postgres runs as
#   s3/           the bucket data, s3s.pid, s3s.log

SVC_PG_PASSWORD="${SVC_PG_PASSWORD:-thumbnail-test}"
SVC_S3_ACCESS_KEY="${SVC_S3_ACCESS_KEY:-thumbnail-test-access}"
SVC_S3_SECRET_KEY="${SVC_S3_SECRET_KEY:-thumbnail-test-secret-key}"
SVC_S3_REGION="${SVC_S3_REGION:-us-east-1}"
# State directories of scripts/test.sh runs are named ${SVC_PREFIX}.XXXXXX.
SVC_PREFIX="${TMPDIR:-/tmp}/thumbnail-test-services"

svc_log() { printf '==> %s\n' "$*" >&2; }
svc_die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }
svc_now() { date +%s.%N; }
# Seconds since $1 (from svc_now), one decimal.
svc_since() { awk -v a="$1" -v b="$(svc_now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- tools ------------------------------------------------------------------------------------

svc_is_root() { [[ "$(id -u)" == 0 ]]; }

svc_apt_updated=""
svc_apt_install() {
    svc_is_root || svc_die "'$*' is missing and installing it needs root: apt-get install $*"
    if [[ -z "$svc_apt_updated" ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || svc_die "apt-get update failed"
        svc_apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2 \
        || svc_die "apt-get install $* failed"
}

# What the upload page's browser test (api/tests/browser.rs) drives: Debian's headless Chromium
# and its chromedriver. Installed when either is missing.
SVC_BROWSER_PACKAGES=(chromium chromium-driver)
svc_ensure_browser() {
    command -v chromium >/dev/null && command -v chromedriver >/dev/null && return 0
    local t0; t0=$(svc_now)
    svc_log "the browser test needs Chromium and chromedriver: apt-get install ${SVC_BROWSER_PACKAGES[*]}"
    svc_apt_install "${SVC_BROWSER_PACKAGES[@]}"
    svc_log "Chromium and chromedriver installed in $(svc_since "$t0") s"
}

# The newest PostgreSQL server binaries directory, or nothing.
# What the engine's C decoders need to build (HEIC/AVIF: libheif, vendored in libheif-sys and
# built by cmake with a C++ compiler against Debian's libde265 and dav1d, found by pkg-config;
# AVIF output: rav1e's assembly, nasm). Installed when any is missing.
SVC_BUILD_PACKAGES=(cmake g++ make nasm pkg-config libde265-dev libdav1d-dev)
svc_ensure_build_packages() {
    local missing=() p
    for p in "${SVC_BUILD_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    local t0; t0=$(svc_now)
    svc_log "the engine's build needs ${missing[*]}: apt-get install"
    svc_apt_install "${missing[@]}"
    svc_log "build packages installed in $(svc_since "$t0") s"
}

svc_pg_bindir() {
    local dir best=""
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]] || continue
        best="$dir"
    done
    # Versions sort as text here (10 < 9 does not matter: Debian 12 ships 15 only).
    printf '%s' "$best"
}

# Install PostgreSQL from Debian's packages when its server binaries are missing.
svc_ensure_postgres() {
    SVC_PG_BIN="$(svc_pg_bindir)"
    if [[ -z "$SVC_PG_BIN" ]]; then
        local t0; t0=$(svc_now)
        svc_log "PostgreSQL is not installed: apt-get install postgresql"
        # Do not let the package start its own cluster on port 5432: it is not needed.
        local policy=/usr/sbin/policy-rc.d created_policy=""
        if [[ ! -e "$policy" ]] && svc_is_root; then
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created_policy=1
        fi
        svc_apt_install postgresql
        [[ -n "$created_policy" ]] && rm -f "$policy"
        SVC_PG_BIN="$(svc_pg_bindir)"
        [[ -n "$SVC_PG_BIN" ]] || svc_die "postgresql installed, but no /usr/lib/postgresql/*/bin/initdb"
        svc_log "PostgreSQL installed in $(svc_since "$t0") s"
    fi
    if svc_is_root && ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin postgres
    fi
}

# The project's cargo target directory (CARGO_TARGET_DIR or target/ of the workspace).
svc_target_dir() {
    local root target
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    target=$(cd "$root" && cargo metadata --format-version 1 --no-deps |
        sed -nE 's/.*"target_directory":"([^"]*)".*/\1/p')
    [[ -n "$target" ]] || svc_die "cargo metadata did not name the target directory"
    printf '%s' "$target"
}

# The S3 server: the workspace's `s3-test-server` (testing/s3-server: the s3s-fs crate's S3
# implementation behind a listener with TCP_NODELAY), built with cargo into the project's target
# directory. SVC_S3S_BUILD_ARGS: what to build (default `-p s3-test-server`; scripts/test.sh builds
# `--workspace --all-targets`, the same set its test step builds, so nothing is compiled twice).
# SVC_S3S=/path/to/binary uses a prebuilt one.
svc_ensure_s3s() {
    if [[ -n "${SVC_S3S:-}" ]]; then
        [[ -x "$SVC_S3S" ]] || svc_die "SVC_S3S=$SVC_S3S is not an executable"
        return 0
    fi
    local root target t0 log
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    command -v cargo >/dev/null 2>&1 || svc_die "cargo is needed to build the S3 test server"
    target=$(svc_target_dir)
    t0=$(svc_now)
    log="$(mktemp)"
    local args
    read -r -a args <<<"${SVC_S3S_BUILD_ARGS:--p s3-test-server}"
    svc_log "building the S3 server: cargo build ${args[*]}"
    if ! (cd "$root" && cargo build --locked "${args[@]}") >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        rm -f "$log"
        svc_die "building s3-test-server failed"
    fi
    rm -f "$log"
    SVC_S3S="$target/debug/s3-test-server"
    [[ -x "$SVC_S3S" ]] || svc_die "s3-test-server was built but $SVC_S3S is missing"
    svc_log "S3 server: $SVC_S3S (ready in $(svc_since "$t0") s)"
}

# --- ports and processes ----------------------------------------------------------------------

# Whether any socket (any state) uses local port $1, from /proc (no ss or netstat needed).
svc_port_in_use() {
    local hex; hex=$(printf ':%04X ' "$1")
    grep -qs -- "$hex" /proc/net/tcp /proc/net/tcp6
}

# A free port on the loopback interface, picked at random in 20000-59999.
svc_free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        if ! svc_port_in_use "$port"; then
            printf '%s' "$port"
            return 0
        fi
    done
    svc_die "no free port found"
}

svc_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

# Run a command as the user the PostgreSQL server must run as (it refuses root).
svc_as_pg() {
    if svc_is_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# --- PostgreSQL -------------------------------------------------------------------------------

# Start a throwaway cluster under $1/pg on a free port. Sets SVC_PG_PORT and SVC_PG_URL.
svc_start_postgres() {
    local state="$1" dir="$1/pg" t0 pwfile
    t0=$(svc_now)
    mkdir -p "$dir"
    # The state directory must be traversable by the postgres user.
    chmod 755 "$state"
    pwfile="$dir/pwfile"
    printf '%s\n' "$SVC_PG_PASSWORD" >"$pwfile"
    if svc_is_root; then chown -R postgres: "$dir"; fi
    chmod 700 "$dir"
    if ! svc_as_pg "$SVC_PG_BIN/initdb" -D "$dir/data" -U postgres --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync \
        >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        svc_die "initdb failed"
    fi
    rm -f "$pwfile"
    local attempt
    for attempt in 1 2 3; do
        SVC_PG_PORT=$(svc_free_port)
        # Durability is not needed for a throwaway cluster: no fsync makes tests much faster.
        if svc_as_pg "$SVC_PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/pg.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $SVC_PG_PORT -k $dir -c fsync=off \
                -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 \
                -c shared_buffers=64MB" \
            start >>"$dir/pg_ctl.log" 2>&1; then
            SVC_PG_URL="postgres://postgres:${SVC_PG_PASSWORD}@127.0.0.1:${SVC_PG_PORT}/postgres"
            svc_log "PostgreSQL $("$SVC_PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$SVC_PG_PORT ($(svc_since "$t0") s)"
            return 0
        fi
        svc_log "PostgreSQL did not start on port $SVC_PG_PORT (attempt $attempt)"
        tail -n 20 "$dir/pg.log" >&2 || true
        svc_as_pg "$SVC_PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    done
    svc_die "PostgreSQL failed to start; log: $dir/pg.log"
}

svc_stop_postgres() {
    local dir="$1/pg"
    [[ -f "$dir/data/postmaster.pid" ]] || return 0
    local bin="${SVC_PG_BIN:-$(svc_pg_bindir)}"
    if [[ -n "$bin" ]]; then
        svc_as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 20 stop >/dev/null 2>&1 || true
    fi
    # pg_ctl gone or failed: stop the postmaster by its recorded pid, if it is one.
    local pid; pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null || true)
    if svc_alive "$pid" && grep -qs postgres "/proc/$pid/cmdline"; then
        kill -QUIT "$pid" 2>/dev/null || true
    fi
}

# --- S3 (s3s-fs) ------------------------------------------------------------------------------

# Whether an HTTP server answers on 127.0.0.1:$1 (any status line), with bash's /dev/tcp.
svc_http_answers() {
    local port="$1" line=""
    (
        exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
        printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$port" >&3
        IFS= read -r -t 2 line <&3 || exit 1
        [[ "$line" == HTTP/* ]]
    ) 2>/dev/null
}

# Start s3s-fs over $1/s3/data on a free port. Sets SVC_S3_PORT and SVC_S3_ENDPOINT.
svc_start_s3() {
    local dir="$1/s3" t0 pid attempt deadline
    t0=$(svc_now)
    mkdir -p "$dir/data"
    for attempt in 1 2 3; do
        SVC_S3_PORT=$(svc_free_port)
        "$SVC_S3S" --host 127.0.0.1 --port "$SVC_S3_PORT" \
            --access-key "$SVC_S3_ACCESS_KEY" --secret-key "$SVC_S3_SECRET_KEY" \
            "$dir/data" >>"$dir/s3s.log" 2>&1 </dev/null &
        pid=$!
        echo "$pid" >"$dir/s3s.pid"
        deadline=$((SECONDS + 30))
        while svc_alive "$pid" && ((SECONDS < deadline)); do
            if svc_http_answers "$SVC_S3_PORT"; then
                SVC_S3_ENDPOINT="http://127.0.0.1:$SVC_S3_PORT"
                svc_log "S3 server (s3s-fs) on $SVC_S3_ENDPOINT ($(svc_since "$t0") s)"
                return 0
            fi
            sleep 0.1
        done
        svc_log "s3s-fs did not answer on port $SVC_S3_PORT (attempt $attempt)"
        tail -n 20 "$dir/s3s.log" >&2 || true
        if svc_alive "$pid"; then kill "$pid" 2>/dev/null || true; fi
        wait "$pid" 2>/dev/null || true
    done
    svc_die "s3s-fs failed to start; log: $dir/s3s.log"
}

svc_stop_s3() {
    local pidfile="$1/s3/s3s.pid" pid
    [[ -f "$pidfile" ]] || return 0
    pid=$(cat "$pidfile")
    # Only the process this state directory started, and only if it still is the S3 server.
    if svc_alive "$pid" && grep -qs s3-test-server "/proc/$pid/cmdline"; then
        kill "$pid" 2>/dev/null || true
        local _
        for _ in $(seq 1 50); do svc_alive "$pid" || break; sleep 0.1; done
        if svc_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$pidfile"
}

# --- the whole set ----------------------------------------------------------------------------

# Write the TEST_* variables of the running services to $1/env and export them here.
svc_write_env() {
    local state="$1"
    cat >"$state/env" <<EOF
export TEST_DATABASE_URL='$SVC_PG_URL'
export TEST_S3_ENDPOINT='$SVC_S3_ENDPOINT'
export TEST_S3_ACCESS_KEY='$SVC_S3_ACCESS_KEY'
export TEST_S3_SECRET_KEY='$SVC_S3_SECRET_KEY'
export TEST_S3_REGION='$SVC_S3_REGION'
EOF
    # shellcheck disable=SC1091
    source "$state/env"
}

# Install what is missing, then start both services in state directory $1 owned by pid $2.
svc_start_all() {
    local state="$1" owner="$2"
    mkdir -p "$state"
    echo "$owner" >"$state/owner.pid"
    svc_ensure_postgres
    svc_ensure_s3s
    svc_start_postgres "$state"
    svc_start_s3 "$state"
    svc_write_env "$state"
}

svc_stop_all() {
    local state="$1"
    [[ -d "$state" ]] || return 0
    svc_stop_s3 "$state"
    svc_stop_postgres "$state"
}

# Print the end of the services' logs (after a failure).
svc_print_logs() {
    local state="$1" log
    for log in "$state/pg/pg.log" "$state/s3/s3s.log"; do
        [[ -s "$log" ]] || continue
        printf '\n----- last lines of %s -----\n' "$log" >&2
        tail -n 40 "$log" >&2
    done
}

# Stop and remove the services of earlier test runs whose owner process is gone (killed with
# SIGKILL, a crashed machine session): only processes recorded in their state directories.
svc_reap_stale() {
    local state owner
    for state in "$SVC_PREFIX".*; do
        [[ -d "$state" && -f "$state/owner.pid" ]] || continue
        owner=$(cat "$state/owner.pid" 2>/dev/null || true)
        if [[ "$owner" != 0 ]] && ! svc_alive "$owner"; then
            svc_log "removing the services of a stale run: $state"
            svc_stop_all "$state"
            rm -rf "$state"
        fi
    done
}
