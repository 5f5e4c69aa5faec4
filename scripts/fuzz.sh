#!/usr/bin/env bash
# Bounded fuzzing of the whole engine pipeline on stable Rust (self-written mutation fuzzer,
# engine/examples/fuzz.rs; cargo-fuzz would need nightly).
# Usage: scripts/fuzz.sh [SECONDS [EXTENSIONS]]   (EXTENSIONS: e.g. heic,avif; default all formats)
# Findings (inputs that panic or take > 2 s) land in fuzz/findings/; each becomes a regression test
# in engine/tests/fuzz_regressions.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-120}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
# shellcheck source=scripts/lib/services.sh
source scripts/lib/services.sh
svc_ensure_build_packages
cargo build --release -p thumbnail-engine --example fuzz
"$CARGO_TARGET_DIR/release/examples/fuzz" "$SECS" engine/tests/fixtures fuzz/findings ${2:+"$2"}
