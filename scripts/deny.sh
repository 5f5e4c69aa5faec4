#!/usr/bin/env bash
# cargo deny over the workspace: security advisories, licences, duplicate versions, sources
# (deny.toml says what is allowed and why each exception exists).
#
#   scripts/deny.sh                          # what scripts/test.sh runs
#   scripts/deny.sh --refresh PATH_TO_CLONE  # replace the advisory snapshot from a clone of
#                                            # rustsec/advisory-db (then commit deny/)
#
# cargo-deny is installed from crates.io when missing (pinned below; cached in ~/.cargo/bin).
#
# Advisories: the RustSec database is a git repository that cargo-deny clones from its host,
# which the test machines cannot reach. So the check runs offline (--offline) against the
# snapshot committed in deny/advisory-db.tar.xz (deny/advisory-db.source: which commit, when),
# unpacked into a temporary git repository whose commit date is the snapshot's, so that
# cargo-deny's staleness limit (maximum-db-staleness in deny.toml) measures the snapshot's real
# age. Advisories published after that date are not seen until the snapshot is refreshed; this
# script prints the snapshot's age every run. On a machine that reaches the host, plain
# `cargo deny check` uses the live database instead.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CARGO_DENY_VERSION=0.20.2
SNAPSHOT="$ROOT/deny/advisory-db.tar.xz"
SOURCE="$ROOT/deny/advisory-db.source"

log() { printf '==> [deny] %s\n' "$*" >&2; }
die() { printf 'ERROR: [deny] %s\n' "$*" >&2; exit 1; }

if [[ "${1:-}" == --refresh ]]; then
    clone="${2:?usage: scripts/deny.sh --refresh PATH_TO_ADVISORY_DB_CLONE}"
    git -C "$clone" rev-parse HEAD >/dev/null || die "$clone is not a git clone of the advisory database"
    commit=$(git -C "$clone" rev-parse HEAD)
    date=$(git -C "$clone" show -s --format=%cI HEAD)
    git -C "$clone" archive --format=tar --prefix=advisory-db/ HEAD crates LICENSE.txt | xz -9e >"$SNAPSHOT.tmp"
    mv "$SNAPSHOT.tmp" "$SNAPSHOT"
    sed -i -e "s/^commit=.*/commit=$commit/" -e "s/^date=.*/date=$date/" "$SOURCE"
    log "snapshot of $commit ($date) written to deny/; commit it"
    exit 0
fi

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if [[ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]]; then
    log "installing cargo-deny $CARGO_DENY_VERSION from crates.io (a few minutes, once)"
    cargo install --locked --quiet cargo-deny --version "$CARGO_DENY_VERSION" ||
        die "cargo install cargo-deny failed"
fi

snapshot_date=$(sed -n 's/^date=//p' "$SOURCE")
snapshot_commit=$(sed -n 's/^commit=//p' "$SOURCE")
[[ -n "$snapshot_date" && -n "$snapshot_commit" ]] || die "deny/advisory-db.source names no commit and date"
age_days=$(( ($(date +%s) - $(date -d "$snapshot_date" +%s)) / 86400 ))
log "advisory database: snapshot of rustsec/advisory-db ${snapshot_commit:0:12} from $snapshot_date ($age_days days old)"

DBS=$(mktemp -d "${TMPDIR:-/tmp}/thumbnail-advisory-dbs.XXXXXX")
trap 'rm -rf "$DBS"' EXIT
# The folder cargo-deny $CARGO_DENY_VERSION keeps the default database in: the URL's last segment
# and its xxhash (see url_to_db_path in cargo-deny's src/advisories/helpers/db.rs).
DB="$DBS/advisory-db-3157b0e258782691"
tar -xJf "$SNAPSHOT" -C "$DBS"
mv "$DBS/advisory-db" "$DB"
(
    cd "$DB"
    export GIT_AUTHOR_NAME=snapshot GIT_AUTHOR_EMAIL=snapshot@localhost
    export GIT_COMMITTER_NAME=snapshot GIT_COMMITTER_EMAIL=snapshot@localhost
    export GIT_AUTHOR_DATE="$snapshot_date" GIT_COMMITTER_DATE="$snapshot_date"
    git init -q -b main .
    git add -A
    git commit -q -m "rustsec/advisory-db $snapshot_commit"
    # cargo-deny takes the later of the commit date and HEAD's modification time as the fetch time.
    touch -d "$snapshot_date" .git/HEAD
)

export THUMBNAIL_ADVISORY_DBS="$DBS"
# --offline keeps cargo-deny from fetching the database, and also from letting cargo download the
# crates of other platforms that its `cargo metadata` reads: fetch those first (crates.io).
cargo fetch --locked --quiet
cargo deny --locked --offline check advisories bans licenses sources
