#!/usr/bin/env bash
# The real Kubernetes control plane the operator's tests run against (see
# scripts/lib/kube-control-plane.sh for the recipe, the cache and what runs).
#
#   scripts/kube-control-plane.sh build        build when not cached; print the bin folder
#   scripts/kube-control-plane.sh path         print the bin folder (fails when not built)
#   scripts/kube-control-plane.sh start DIR    build if needed, start etcd, kube-apiserver and
#                                              kube-controller-manager with their state in DIR/kube,
#                                              print the TEST_KUBE_* variables
#   scripts/kube-control-plane.sh env DIR      print them again (eval "$(... env DIR)")
#   scripts/kube-control-plane.sh stop DIR     stop them
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"
# shellcheck source=scripts/lib/kube-control-plane.sh
source "$ROOT/scripts/lib/kube-control-plane.sh"
need_dir() { [[ -n "${1:-}" ]] || kcp_die "usage: $0 ${2} DIR"; }
case "${1:-build}" in
build) kcp_build; printf '%s\n' "$KCP_DIR/bin" ;;
path) kcp_have_binaries || kcp_die "not built: run $0 build"; printf '%s\n' "$KCP_DIR/bin" ;;
start)
    need_dir "${2:-}" start
    kcp_build
    mkdir -p "$2"
    dir="$(cd "$2" && pwd)"
    trap '[[ $? == 0 ]] || { kcp_print_logs "$dir"; kcp_stop "$dir"; }' EXIT
    kcp_start "$dir"
    cat "$dir/kube/env"
    ;;
env) need_dir "${2:-}" env; cat "$2/kube/env" ;;
stop) need_dir "${2:-}" stop; kcp_stop "$(cd "$2" && pwd)" ;;
*) kcp_die "usage: $0 [build|path|start DIR|env DIR|stop DIR]" ;;
esac
