#!/usr/bin/env bash
# Build (or find cached) the real Kubernetes control plane the operator's tests run against, and
# print the folder holding kube-apiserver and kube-controller-manager. See
# scripts/lib/kube-control-plane.sh for the recipe and the cache.
#
#   scripts/kube-control-plane.sh build   build when not cached, print the bin folder
#   scripts/kube-control-plane.sh path    print the bin folder (fails when not built)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/kube-control-plane.sh
source "$ROOT/scripts/lib/kube-control-plane.sh"
case "${1:-build}" in
build) kcp_build; printf '%s\n' "$KCP_DIR/bin" ;;
path) kcp_have_binaries || kcp_die "not built: run scripts/kube-control-plane.sh build"; printf '%s\n' "$KCP_DIR/bin" ;;
*) kcp_die "usage: $0 [build|path]" ;;
esac
