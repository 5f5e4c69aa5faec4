# shellcheck shell=bash
# A real Kubernetes control plane for the tests: kube-apiserver and kube-controller-manager 1.20.2
# built from Debian bookworm's `kubernetes` source package, and etcd from Debian's `etcd-server`.
#
# The build takes about 18 minutes on 2 cores, so the binaries are cached outside the clone, in
# $KCP_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/thumbnailer), in a folder keyed by the source
# version and by this recipe's own revision. A later run finds them there and builds nothing.
#
# The recipe (checked on these machines):
# - `apt-get source kubernetes` (needs a deb-src entry for bookworm, added here when missing);
# - the vendored github.com/modern-go/reflect2 1.0.1 crashes the API server under Go 1.18 and later
#   (SIGSEGV in mapiterinit): its .go and .s files are replaced by those of Debian's
#   golang-github-modern-go-reflect2-dev (1.0.2);
# - `make WHAT="cmd/kube-apiserver cmd/kube-controller-manager"` with Debian's golang-go (1.19),
#   rsync and jq, with GOPATH and GO111MODULE unset (the Makefile sets up its own GOPATH).
#
# Sourced by scripts/test.sh and scripts/kube-control-plane.sh; every function is prefixed `kcp_`.
# A step that cannot be done fails loudly (kcp_die): the tests that need the control plane are
# never skipped in silence.

KCP_K8S_SOURCE_VERSION="${KCP_K8S_SOURCE_VERSION:-1.20.5+really1.20.2-1.1+deb12u1}"
# Bump when the recipe changes, so that a cache built by an older recipe is not reused.
KCP_RECIPE_REVISION=1
KCP_CACHE="${KCP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/thumbnailer}"
KCP_DIR="$KCP_CACHE/kubernetes-${KCP_K8S_SOURCE_VERSION}-r${KCP_RECIPE_REVISION}"

kcp_log() { printf '==> [kube] %s\n' "$*" >&2; }
kcp_die() { printf 'ERROR: [kube] %s\n' "$*" >&2; exit 1; }
kcp_now() { date +%s; }

kcp_is_root() { [[ "$(id -u)" == 0 ]]; }

kcp_apt_updated=""
kcp_apt() {
    kcp_is_root || kcp_die "installing '$*' needs root: apt-get install $*"
    if [[ -z "$kcp_apt_updated" ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || kcp_die "apt-get update failed"
        kcp_apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2 \
        || kcp_die "apt-get install $* failed"
}

# Debian packages the recipe needs, installed when missing.
kcp_ensure_packages() {
    local missing=() pkg
    for pkg in golang-go rsync jq etcd-server golang-github-modern-go-reflect2-dev dpkg-dev make; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]} > 0)); then
        kcp_log "installing ${missing[*]}"
        kcp_apt "${missing[@]}"
    fi
}

# A deb-src entry for bookworm, so that `apt-get source kubernetes` works.
kcp_ensure_deb_src() {
    if grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        return 0
    fi
    kcp_is_root || kcp_die "apt-get source needs a deb-src entry for bookworm; add one as root"
    kcp_log "adding a deb-src entry for bookworm"
    cat >/etc/apt/sources.list.d/thumbnailer-bookworm-src.sources <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    kcp_apt_updated=""
}

kcp_have_binaries() {
    [[ -x "$KCP_DIR/bin/kube-apiserver" && -x "$KCP_DIR/bin/kube-controller-manager" ]]
}

# Build kube-apiserver and kube-controller-manager into $KCP_DIR/bin, unless they are cached.
kcp_build() {
    kcp_ensure_packages
    if kcp_have_binaries; then
        kcp_log "cached: $KCP_DIR/bin"
        return 0
    fi
    local t0 work src reflect2 log
    t0=$(kcp_now)
    kcp_ensure_deb_src
    if [[ -z "$kcp_apt_updated" ]] && kcp_is_root; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || kcp_die "apt-get update failed"
        kcp_apt_updated=1
    fi
    work="$KCP_DIR/build"
    rm -rf "$work"
    mkdir -p "$work"
    kcp_log "apt-get source kubernetes=$KCP_K8S_SOURCE_VERSION (into $work)"
    (cd "$work" && apt-get source -q --download-only "kubernetes=$KCP_K8S_SOURCE_VERSION" >&2) \
        || kcp_die "apt-get source kubernetes=$KCP_K8S_SOURCE_VERSION failed (is bookworm's deb-src reachable?)"
    (cd "$work" && dpkg-source --no-check -x ./*.dsc src >"$work/unpack.log" 2>&1) \
        || { tail -n 30 "$work/unpack.log" >&2; kcp_die "dpkg-source -x failed"; }
    src="$work/src"
    [[ -f "$src/Makefile" && -d "$src/vendor/github.com/modern-go/reflect2" ]] \
        || kcp_die "the unpacked source has no Makefile or no vendored reflect2"

    reflect2=$(dpkg -L golang-github-modern-go-reflect2-dev | grep -E '/reflect2\.go$' | head -n 1)
    [[ -n "$reflect2" ]] || kcp_die "golang-github-modern-go-reflect2-dev has no reflect2.go"
    reflect2=$(dirname "$reflect2")
    kcp_log "replacing the vendored reflect2 1.0.1 with Debian's ($reflect2)"
    rm -f "$src/vendor/github.com/modern-go/reflect2/"*.go "$src/vendor/github.com/modern-go/reflect2/"*.s
    cp "$reflect2"/*.go "$src/vendor/github.com/modern-go/reflect2/"
    cp "$reflect2"/*.s "$src/vendor/github.com/modern-go/reflect2/" 2>/dev/null || true
    rm -f "$src/vendor/github.com/modern-go/reflect2/"*_test.go

    log="$work/make.log"
    kcp_log "make WHAT=\"cmd/kube-apiserver cmd/kube-controller-manager\" (about 18 minutes on 2 cores; log: $log)"
    if ! (cd "$src" && env -u GOPATH -u GO111MODULE -u GOFLAGS \
        make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$log" 2>&1); then
        tail -n 60 "$log" >&2
        kcp_die "building the control plane failed; log: $log"
    fi
    mkdir -p "$KCP_DIR/bin"
    local b out
    for b in kube-apiserver kube-controller-manager; do
        out=$(find "$src/_output" -type f -name "$b" -perm -u+x | head -n 1)
        [[ -n "$out" ]] || kcp_die "make succeeded but no $b under $src/_output"
        cp "$out" "$KCP_DIR/bin/$b.tmp" && mv "$KCP_DIR/bin/$b.tmp" "$KCP_DIR/bin/$b"
    done
    "$KCP_DIR/bin/kube-apiserver" --version >&2 || kcp_die "the built kube-apiserver does not run"
    # The source tree and Go's build cache are gigabytes; only the binaries are kept.
    rm -rf "$work"
    kcp_log "built in $(( $(kcp_now) - t0 )) s: $KCP_DIR/bin"
}

# The etcd server binary (Debian's etcd-server).
kcp_etcd() {
    local e
    e=$(command -v etcd || true)
    [[ -n "$e" ]] || e=/usr/bin/etcd
    [[ -x "$e" ]] || kcp_die "etcd is missing (apt-get install etcd-server)"
    printf '%s' "$e"
}

# A kubectl that talks to 1.20: the newest of kubectl.1.27 ... that client-skew allows, else kubectl.
kcp_kubectl() {
    local k
    for k in /usr/bin/kubectl.1.27 /usr/lib/google-cloud-sdk/bin/kubectl.1.27; do
        [[ -x "$k" ]] && { printf '%s' "$k"; return 0; }
    done
    k=$(dpkg -L kubectl 2>/dev/null | grep -E '/kubectl\.1\.27$' | head -n 1 || true)
    [[ -n "$k" && -x "$k" ]] && { printf '%s' "$k"; return 0; }
    k=$(command -v kubectl || true)
    [[ -n "$k" ]] || kcp_die "kubectl is not installed"
    printf '%s' "$k"
}
