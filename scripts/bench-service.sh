#!/usr/bin/env bash
# Service benchmark: N concurrent clients each upload a JPEG and poll its job until SUCCESS,
# against the embedded default (SQLite + local directory) and against PostgreSQL + an S3 server
# (s3s-fs, served by testing/s3-server), with release builds. Prints uploads/s, jobs/s, p50/p99
# upload and upload-to-SUCCESS latency and the API's peak RSS; then the worst /health latency while
# S3 stalls, the peak RSS under 50 concurrent 25 MiB uploads, and the cost of authentication
# (jobs/s with AUTH_MODE=api-key against none, alternating, on both backends).
#
#   scripts/bench-service.sh            # everything (about 5 minutes on 2 cores)
#   JOBS=200 scripts/bench-service.sh   # fewer jobs per run
#
# The photos are fetched from Debian's packages (apt-get download), not read from anywhere else.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# shellcheck source=scripts/lib/services.sh
source scripts/lib/services.sh

WORK="$ROOT/bench/work"
JOBS="${JOBS:-400}"
mkdir -p "$WORK"

# --- inputs: r01 (1.3 MP) and r02 (4 MP) of the corpus, from their Debian packages ---------------
fetch_photo() { # package, path inside the package, destination name
    local pkg="$1" path="$2" dest="$WORK/$3"
    [[ -s "$dest" ]] && return 0
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download "$pkg" >/dev/null 2>&1) || {
        apt-get update >/dev/null && (cd "$tmp" && apt-get download "$pkg" >/dev/null)
    }
    dpkg-deb -x "$tmp"/*.deb "$tmp/x"
    cp "$tmp/x/$path" "$dest"
    rm -rf "$tmp"
}
fetch_photo mate-backgrounds usr/share/backgrounds/mate/nature/GreenMeadow.jpg r01_greenmeadow_1280x1024.jpg
fetch_photo plasma-workspace-wallpapers usr/share/wallpapers/EveningGlow/contents/images/2560x1600.jpg \
    r02_eveningglow_2560x1600.jpg
R01="$WORK/r01_greenmeadow_1280x1024.jpg"
R02="$WORK/r02_eveningglow_2560x1600.jpg"

cargo build --release --locked -p thumbnail-api --bin thumbnail-api --example loadgen -p s3-test-server >&2
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
# The S3 server, release-built in the same cargo run (see svc_ensure_s3s).
export SVC_S3S="$TARGET/release/s3-test-server"
BIN="$TARGET/release/thumbnail-api"
LOADGEN="$TARGET/release/examples/loadgen"

API_PID=""
STATE=""
cleanup() {
    [[ -n "$API_PID" ]] && kill "$API_PID" 2>/dev/null || true
    [[ -n "$STATE" ]] && svc_stop_all "$STATE" || true
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
    for image in "$R01" "$R02"; do
        start_api "$@"
        local cpu=(--cpu "api=$API_PID")
        [[ -n "$S3_PID" ]] && cpu+=(--cpu "s3=$S3_PID")
        # One client: latency without queueing. Sixteen: throughput and tail latency.
        "$LOADGEN" run --base "$BASE" --file "$image" --clients 1 --jobs 60 --pid "$API_PID" \
            "${cpu[@]}" --label "$label" | tee -a "$RESULTS"
        "$LOADGEN" run --base "$BASE" --file "$image" --clients 16 --jobs "$JOBS" --pid "$API_PID" \
            "${cpu[@]}" --label "$label" | tee -a "$RESULTS"
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

echo "== /health while S3 stalls (s3s-fs stopped with SIGSTOP; 8 uploads hang meanwhile)" >&2
start_api "${S3_ENV[@]}"
kill -STOP "$S3_PID"
"$LOADGEN" health-probe --base "$BASE" --file "$R01" --uploads 8 --seconds 10 | tee -a "$RESULTS"
kill -CONT "$S3_PID"
stop_api

echo "== 50 concurrent 25 MiB uploads (PostgreSQL + S3)" >&2
start_api "${S3_ENV[@]}" MAX_UPLOAD_BYTES=27262976
"$LOADGEN" big-uploads --base "$BASE" --clients 50 --mib 25 --pid "$API_PID" | tee -a "$RESULTS"
stop_api

# Authentication's cost: the same load with AUTH_MODE=none and api-key, alternating AUTH_ROUNDS
# times on each backend (so that the shared machine's load falls on both alike). The upload rate
# limit is out of the way in both modes (start_api); everything else (the key check, per-owner
# quotas admitted under the owner's lock) is what a tenant's upload costs.
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
echo "Service benchmark, $(date -u +%Y-%m-%d), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
python3 - "$RESULTS" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
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
