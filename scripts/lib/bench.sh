# shellcheck shell=bash
# What both benchmarks share: the photos of the corpus, fetched from the Debian packages they come
# from (apt-get download, no installation) into a cache outside the clone, so that a second run
# downloads nothing. Sourced by scripts/bench-engine.sh and scripts/bench-service.sh after
# scripts/lib/services.sh (for svc_log, svc_die, svc_apt_install).
#
# BENCH_CACHE: the cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/thumbnail-bench).

BENCH_CACHE="${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/thumbnail-bench}"

# corpus name -> "package path-inside-the-package" (the corpus' MANIFEST.tsv says the same).
declare -A BENCH_SOURCES=(
    [r01_greenmeadow_1280x1024.jpg]="mate-backgrounds usr/share/backgrounds/mate/nature/GreenMeadow.jpg"
    [r02_eveningglow_2560x1600.jpg]="plasma-workspace-wallpapers usr/share/wallpapers/EveningGlow/contents/images/2560x1600.jpg"
    [r03_safelanding_1622x2880.jpg]="plasma-workspace-wallpapers usr/share/wallpapers/SafeLanding/contents/images/1622x2880.jpg"
    [r04_elephants_3840x2160.jpg]="mate-backgrounds usr/share/backgrounds/mate/abstract/Elephants_3840x2160.jpg"
    [r05_volna_5120x2880.jpg]="plasma-workspace-wallpapers usr/share/wallpapers/Volna/contents/images/5120x2880.jpg"
    [r06_elephants_5640x3172.jpg]="mate-backgrounds usr/share/backgrounds/mate/abstract/Elephants_5640x3172.jpg"
    [r07_patak_5120x2880_rgba.png]="plasma-workspace-wallpapers usr/share/wallpapers/Patak/contents/images/5120x2880.png"
    [r08_pixels_4096x4096.webp]="gnome-backgrounds usr/share/backgrounds/gnome/pixels-l.webp"
)

# Unpack Debian package $1 into $BENCH_CACHE/debs/$1 unless already there.
bench_unpack() {
    local pkg="$1" dir="$BENCH_CACHE/debs/$1" tmp
    [[ -f "$dir/.unpacked" ]] && return 0
    command -v apt-get >/dev/null 2>&1 || svc_die "apt-get is needed to fetch $pkg"
    mkdir -p "$BENCH_CACHE"
    tmp=$(mktemp -d "$BENCH_CACHE/download.XXXXXX")
    svc_log "fetching $pkg (apt-get download)"
    if ! (cd "$tmp" && apt-get download -q "$pkg" >&2); then
        # A fresh machine may have no package lists yet.
        if svc_is_root; then
            DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || svc_die "apt-get update failed"
        fi
        (cd "$tmp" && apt-get download -q "$pkg" >&2) || svc_die "apt-get download $pkg failed"
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    dpkg-deb -x "$tmp"/*.deb "$dir" || svc_die "dpkg-deb -x of $pkg failed"
    rm -rf "$tmp"
    touch "$dir/.unpacked"
}

# Print the path of corpus photo $1 (a key of BENCH_SOURCES), fetching its package when needed.
bench_photo() {
    local name="$1" source pkg path dest
    source="${BENCH_SOURCES[$name]:-}"
    [[ -n "$source" ]] || svc_die "no Debian source known for $name"
    pkg=${source%% *}
    path=${source#* }
    dest="$BENCH_CACHE/corpus/$name"
    if [[ ! -s "$dest" ]]; then
        mkdir -p "$BENCH_CACHE/corpus"
        bench_unpack "$pkg"
        [[ -f "$BENCH_CACHE/debs/$pkg/$path" ]] || svc_die "$pkg has no $path"
        cp "$BENCH_CACHE/debs/$pkg/$path" "$dest.tmp" && mv "$dest.tmp" "$dest"
    fi
    printf '%s' "$dest"
}
