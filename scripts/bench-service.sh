#!/usr/bin/env bash
# Service benchmark: N concurrent clients each upload a JPEG and poll its job until SUCCESS,
# against the embedded default (SQLite + local directory) and against PostgreSQL + an S3 server
# (s3s-fs, served by testing/s3-server), with release builds. Prints uploads/s, jobs/s, p50/p99
# upload and upload-to-SUCCESS latency and the API's peak RSS; then the worst /health latency while
# S3 stalls, the peak RSS under 50 concurrent 25 MiB uploads, and the cost of authentication
# (jobs/s with AUTH_MODE=api-key against none, alternating, on both backends).
#
#   scripts/bench-service.sh            # everything (about 5 minutes on 2 cores after the build)
#   JOBS=200 scripts/bench-service.sh   # fewer jobs per run
#   BENCH_QUICK=1 scripts/bench-service.sh
#
# BENCH_QUICK=1 is the quick mode scripts/test.sh runs on every run: one image (r01), a few jobs,
# seconds of load, on the DEBUG builds the tests already made (a release build would take many
# minutes; cargo only checks that the debug ones are fresh). Its figures mean nothing; it checks
# that every step runs and prints its table, and fails when one does not.
#
# Installs what is missing (curl, PostgreSQL: see scripts/lib/services.sh). The photos are fetched
# from Debian's packages (apt-get download) into BENCH_CACHE (default ~/.cache/thumbnail-bench),
# not read from anywhere else.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# shellcheck source=scripts/lib/services.sh
source scripts/lib/services.sh
# shellcheck source=scripts/lib/bench.sh
source scripts/lib/bench.sh
# The engine's C decoders (libheif) need cmake and a C++ compiler to build.
svc_ensure_build_packages

QUICK="${BENCH_QUICK:-}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-service.XXXXXX")
if [[ -n "$QUICK" ]]; then
    JOBS="${JOBS:-12}"
    ONE_CLIENT_JOBS=4
    MANY_CLIENTS=4
    PROBE_SECONDS=2
    PROBE_UPLOADS=2
    BIG_UPLOADS=3
    PROFILE=debug
else
    JOBS="${JOBS:-400}"
    ONE_CLIENT_JOBS=60
    MANY_CLIENTS=16
    PROBE_SECONDS=10
    PROBE_UPLOADS=8
    BIG_UPLOADS=50
    PROFILE=release
fi

command -v curl >/dev/null 2>&1 || svc_apt_install curl ca-certificates
command -v python3 >/dev/null 2>&1 || svc_apt_install python3

# --- inputs: r01 (1.3 MP) and r02 (4 MP) of the corpus, from their Debian packages ---------------
R01=$(bench_photo r01_greenmeadow_1280x1024.jpg)
IMAGES=("$R01")
if [[ -z "$QUICK" ]]; then
    IMAGES+=("$(bench_photo r02_eveningglow_2560x1600.jpg)")
fi

# Two cargo runs: one `-p A -p B --bin X` line applies --bin to both packages, and then never
# builds the S3 server's binary.
if [[ "$PROFILE" == release ]]; then
    cargo build --release --locked -p thumbnail-api --bin thumbnail-api --example loadgen >&2
    cargo build --release --locked -p s3-test-server --bin s3-test-server >&2
else
    # The very build scripts/test.sh makes before its tests (so a no-op there): selecting fewer
    # packages would unify features differently and rebuild for minutes.
    cargo build --locked --workspace --all-targets >&2
fi
TARGET="$(svc_target_dir)/$PROFILE"
# The S3 server built just above (svc_start_all then builds nothing).
export SVC_S3S="$TARGET/s3-test-server"
BIN="$TARGET/thumbnail-api"
LOADGEN="$TARGET/examples/loadgen"
for b in "$SVC_S3S" "$BIN" "$LOADGEN"; do
    [[ -x "$b" ]] || svc_die "$b was not built"
done

API_PID=""
STATE=""
cleanup() {
    [[ -n "$API_PID" ]] && kill "$API_PID" 2>/dev/null || true
    if [[ -n "$STATE" ]]; then
        svc_stop_all "$STATE" || true
        rm -rf "$STATE"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Start the API with the given environment (VAR=value ...); sets API_PID and BASE.
start_api() {
    local port data
    port=$(svc_free_port)
    data=$(mktemp -d "$WORK/data.XXXXXX")
    # The load comes from one client: the upload rate limit is set out of its way.
    env UPLOADS_PER_MINUTE=100000000 UPLOAD_BURST=10000000 "$@" LOG_LEVEL=warn "$BIN" --host 127.0.0.1 \
        --port "$port" --data-dir "$data" \
        >"$data/api.log" 2>&1 &
    API_PID=$!
    BASE="http://127.0.0.1:$port"
    local deadline=$((SECONDS + 120))
    until curl -sf "$BASE/health" >/dev/null; do
        ((SECONDS < deadline)) || { cat "$data/api.log" >&2; svc_die "the API did not start"; }
        sleep 0.1
    done
}
stop_api() {
    kill -TERM "$API_PID" 2>/dev/null || true
    wait "$API_PID" 2>/dev/null || true
    API_PID=""
}

RESULTS="$WORK/service-results.jsonl"
: >"$RESULTS"
# CPU time per job is reported for the API and, when running, the S3 server (S3_PID).
S3_PID=""
scenario() { # label, env...
    local label="$1"
    shift
    for image in "${IMAGES[@]}"; do
        start_api "$@"
        local cpu=(--cpu "api=$API_PID")
        [[ -n "$S3_PID" ]] && cpu+=(--cpu "s3=$S3_PID")
        # One client: latency without queueing. Sixteen: throughput and tail latency.
        "$LOADGEN" run --base "$BASE" --file "$image" --clients 1 --jobs "$ONE_CLIENT_JOBS" \
            --pid "$API_PID" "${cpu[@]}" --label "$label" | tee -a "$RESULTS"
        "$LOADGEN" run --base "$BASE" --file "$image" --clients "$MANY_CLIENTS" --jobs "$JOBS" \
            --pid "$API_PID" "${cpu[@]}" --label "$label" | tee -a "$RESULTS"
        stop_api
    done
}

echo "== embedded default (SQLite + local directory)" >&2
scenario embedded

echo "== PostgreSQL + S3 (s3s-fs)" >&2
STATE=$(mktemp -d "${SVC_PREFIX}.XXXXXX")
svc_start_all "$STATE" "$$"
S3_PID=$(cat "$STATE/s3/s3s.pid")
S3_ENV=(DATABASE_URL="$TEST_DATABASE_URL" S3_ENDPOINT_URL="$TEST_S3_ENDPOINT" S3_BUCKET_NAME=bench
    S3_CREATE_BUCKET=true AWS_ACCESS_KEY_ID="$TEST_S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$TEST_S3_SECRET_KEY"
    S3_REGION="$TEST_S3_REGION")
scenario postgres+s3 "${S3_ENV[@]}"

echo "== /health while S3 stalls (s3s-fs stopped with SIGSTOP; $PROBE_UPLOADS uploads hang meanwhile)" >&2
start_api "${S3_ENV[@]}"
kill -STOP "$S3_PID"
"$LOADGEN" health-probe --base "$BASE" --file "$R01" --uploads "$PROBE_UPLOADS" --seconds "$PROBE_SECONDS" |
    tee -a "$RESULTS"
kill -CONT "$S3_PID"
stop_api

echo "== $BIG_UPLOADS concurrent 25 MiB uploads (PostgreSQL + S3)" >&2
start_api "${S3_ENV[@]}" MAX_UPLOAD_BYTES=27262976
"$LOADGEN" big-uploads --base "$BASE" --clients "$BIG_UPLOADS" --mib 25 --pid "$API_PID" | tee -a "$RESULTS"
stop_api

# Authentication's cost: the same load with AUTH_MODE=none and api-key, alternating AUTH_ROUNDS
# times on each backend (so that the shared machine's load falls on both alike). The upload rate
# limit is out of the way in both modes (start_api); everything else (the key check, per-owner
# quotas admitted under the owner's lock) is what a tenant's upload costs.
AUTH_ROUNDS="${AUTH_ROUNDS:-${QUICK:+1}}"
AUTH_ROUNDS="${AUTH_ROUNDS:-3}"
BENCH_KEY=$(python3 -c 'import secrets, string
a = string.ascii_letters + string.digits
print("thn_" + "".join(secrets.choice(a) for _ in range(12)) + "_" + "".join(secrets.choice(a) for _ in range(43)))')
auth_cost() { # label, env...
    local label="$1" round mode
    shift
    for round in $(seq "$AUTH_ROUNDS"); do
        for mode in none api-key; do
            local auth=()
            [[ $mode == api-key ]] && auth=(--api-key "$BENCH_KEY")
            start_api "$@" AUTH_MODE="$mode" ADMIN_API_KEY="$BENCH_KEY"
            "$LOADGEN" run --base "$BASE" --file "$R01" --clients 16 --jobs "$JOBS" --pid "$API_PID" \
                --label "auth-$label" "${auth[@]}" | tee -a "$RESULTS"
            stop_api
        done
    done
}
echo "== authentication cost: none against api-key, r01, 16 clients, $AUTH_ROUNDS rounds" >&2
auth_cost embedded
auth_cost postgres+s3 "${S3_ENV[@]}"

echo
echo "Service benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load average $(cut -d' ' -f1-3 /proc/loadavg), $PROFILE build${QUICK:+ (quick mode: the figures mean nothing)}"
# Every step must have reported: 2 runs per image and backend, 2 per authentication round and
# backend, the probe and the big uploads.
python3 - "$RESULTS" "$((2 * 2 * ${#IMAGES[@]}))" "$((2 * 2 * AUTH_ROUNDS))" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs = [r for r in rows if "jobs_per_s" in r and not r["label"].startswith("auth-")]
auth_runs = [r for r in rows if "jobs_per_s" in r and r["label"].startswith("auth-")]
if (len(runs) != int(sys.argv[2]) or len(auth_runs) != int(sys.argv[3])
        or not any("worst_ms" in r for r in rows) or not any("upload_mib" in r for r in rows)):
    sys.exit(f"bench-service: missing results: {len(runs)} of {sys.argv[2]} load runs, "
             f"{len(auth_runs)} of {sys.argv[3]} authentication runs, probe {any('worst_ms' in r for r in rows)}, big uploads {any('upload_mib' in r for r in rows)}")
print("| backend | image | clients | jobs | jobs/s | uploads/s | upload p50 / p99 ms | upload→SUCCESS p50 / p99 ms | API peak RSS MiB | CPU ms per job: API / S3 server |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    if "jobs_per_s" in r and not r["label"].startswith("auth-"):
        rss = r["peak_rss_mib"].split(":")[-1]
        cpu = r.get("cpu_ms_per_job", {})
        cpu_cell = " / ".join(f"{cpu[k]:.1f}" if k in cpu else "–" for k in ("api", "s3"))
        print(f"| {r['label']} | {r['image'][:3]} | {r['clients']} | {r['jobs']} | {r['jobs_per_s']:.1f} | "
              f"{r['uploads_per_s']:.1f} | {r['upload_p50_ms']:.1f} / {r['upload_p99_ms']:.1f} | "
              f"{r['success_p50_ms']:.1f} / {r['success_p99_ms']:.1f} | {rss} | {cpu_cell} |")
for r in rows:
    if "worst_ms" in r:
        print(f"\n/health while S3 stalls: {r['health_probes']} probes, {r['failed']} failed, worst {r['worst_ms']:.1f} ms")
    if "upload_mib" in r:
        print(f"\n{r['uploads']} concurrent uploads of {r['upload_mib']:.1f} MiB: {r['accepted']} accepted in "
              f"{r['seconds']:.1f} s; API peak RSS {r['peak_rss_mib'].split(':')[-1]} MiB")
auth = {}
for r in rows:
    if "jobs_per_s" in r and r["label"].startswith("auth-"):
        auth.setdefault(r["label"][5:], {}).setdefault(r["auth"], []).append(r["jobs_per_s"])
if auth:
    import statistics
    print("\n| backend (r01, 16 clients) | AUTH_MODE=none jobs/s | AUTH_MODE=api-key jobs/s | api-key / none |")
    print("|---|---|---|---|")
    for backend, runs in auth.items():
        none, key = statistics.median(runs["none"]), statistics.median(runs["api-key"])
        print(f"| {backend} | {none:.1f} ({', '.join(f'{v:.0f}' for v in runs['none'])}) | "
              f"{key:.1f} ({', '.join(f'{v:.0f}' for v in runs['api-key'])}) | {key / none:.3f} |")
EOF
