#!/usr/bin/env bash
# Engine benchmark: ours vs libvips (pyvips thumbnail_buffer, cache off, 1 thread) vs Pillow (the
# original service's code, and Pillow with draft() + exif_transpose), plus the djpeg -scale 1/N
# floor and SSIM against libvips, in-process and as whole processes. Writes bench/engine/RESULTS.md.
#
#   scripts/bench-engine.sh                  # everything (about 5-10 minutes on 2 cores)
#   BENCH_QUICK=1 scripts/bench-engine.sh    # quick mode
#
# BENCH_QUICK=1 is the quick mode scripts/test.sh runs on every run: one image (r01), one run of
# each measurement, on the DEBUG build of the examples that the tests already made (a release
# build would take minutes; the engine is optimised in debug builds too, see Cargo.toml). Its
# report goes to a temporary file, never to bench/engine/RESULTS.md, and its figures mean nothing:
# it checks that every step runs and prints its table, and fails when one does not.
#
# Installs what is missing (apt: libvips-tools libjpeg-turbo-progs, and for the full run
# imagemagick and libimage-exiftool-perl; pip: pyvips Pillow numpy) and fetches the photos from
# the Debian wallpaper packages (scripts/lib/bench.sh).
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
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-engine.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

need_apt=()
command -v vipsthumbnail >/dev/null || need_apt+=(libvips-tools)
command -v djpeg >/dev/null || need_apt+=(libjpeg-turbo-progs)
if [[ -z "$QUICK" ]]; then
    # Debian's ImageMagick (a `convert` elsewhere on PATH may be something else).
    [[ -x /usr/bin/convert ]] || need_apt+=(imagemagick)
    command -v exiftool >/dev/null || need_apt+=(libimage-exiftool-perl)
    # The encoders people make the newer formats with (the rows f01-f06).
    command -v heif-enc >/dev/null || need_apt+=(libheif-examples)
    command -v avifenc >/dev/null || need_apt+=(libavif-bin)
    command -v cjxl >/dev/null || need_apt+=(libjxl-tools)
fi
if ((${#need_apt[@]} > 0)); then
    svc_apt_install "${need_apt[@]}"
fi
if ! python3 -c "import pyvips, PIL, numpy" 2>/dev/null; then
    python3 -m pip --version >/dev/null 2>&1 || svc_apt_install python3-pip
    python3 -m pip install -q --disable-pip-version-check pyvips Pillow numpy ||
        python3 -m pip install -q --disable-pip-version-check --break-system-packages pyvips Pillow numpy
fi

# The photos: r01-r08 straight from the Debian packages, s13 derived as in the corpus' MANIFEST.
if [[ -n "$QUICK" ]]; then
    IMAGES=(r01_greenmeadow_1280x1024.jpg)
else
    IMAGES=(r01_greenmeadow_1280x1024.jpg r02_eveningglow_2560x1600.jpg r03_safelanding_1622x2880.jpg
        r04_elephants_3840x2160.jpg r05_volna_5120x2880.jpg r06_elephants_5640x3172.jpg
        r07_patak_5120x2880_rgba.png r08_pixels_4096x4096.webp)
fi
for name in "${IMAGES[@]}"; do bench_photo "$name" >/dev/null; done
C="$BENCH_CACHE/corpus"
if [[ -z "$QUICK" ]]; then
    if [[ ! -s "$C/s13_phone_4032x3024_orient6.jpg" ]]; then
        /usr/bin/convert "$C/r06_elephants_5640x3172.jpg" -resize '4032x3024!' -quality 92 -sampling-factor 2x2 \
            -interlace none "$C/s13.tmp.jpg"
        exiftool -q -overwrite_original -n -Orientation=6 -Make=Phone -Model=Camera "$C/s13.tmp.jpg"
        mv "$C/s13.tmp.jpg" "$C/s13_phone_4032x3024_orient6.jpg"
    fi
    IMAGES+=(s13_phone_4032x3024_orient6.jpg)
    # The newer input formats, each made from a corpus photo with the encoder people use: a
    # phone-sized picture (r06 at 4032x3024, as s13) as HEIC, AVIF and JPEG XL; r05 as the LZW
    # TIFF a scanner writes; r01 as a 24-bit BMP; and an SVG wallpaper of Debian's (972 paths).
    base="$WORK/phone_4032x3024.png"
    phone_base() { [[ -s "$base" ]] || /usr/bin/convert "$C/r06_elephants_5640x3172.jpg" -resize '4032x3024!' -strip "$base"; }
    if [[ ! -s "$C/f01_phone_4032x3024.heic" ]]; then
        # Quality 50: about the 2-3 MB of a 12-megapixel iPhone HEIC.
        phone_base && heif-enc -q 50 -o "$C/f01.tmp.heic" "$base" >/dev/null && mv "$C/f01.tmp.heic" "$C/f01_phone_4032x3024.heic"
    fi
    if [[ ! -s "$C/f02_phone_4032x3024.avif" ]]; then
        phone_base && avifenc -s 6 --min 18 --max 28 "$base" "$C/f02.tmp.avif" >/dev/null && mv "$C/f02.tmp.avif" "$C/f02_phone_4032x3024.avif"
    fi
    if [[ ! -s "$C/f03_phone_4032x3024.jxl" ]]; then
        phone_base && cjxl --quiet -d 1 "$base" "$C/f03.tmp.jxl" && mv "$C/f03.tmp.jxl" "$C/f03_phone_4032x3024.jxl"
    fi
    if [[ ! -s "$C/f04_volna_5120x2880.tif" ]]; then
        /usr/bin/convert "$C/r05_volna_5120x2880.jpg" -compress lzw "$C/f04.tmp.tif" && mv "$C/f04.tmp.tif" "$C/f04_volna_5120x2880.tif"
    fi
    if [[ ! -s "$C/f05_greenmeadow_1280x1024.bmp" ]]; then
        /usr/bin/convert "$C/r01_greenmeadow_1280x1024.jpg" BMP3:"$C/f05.tmp.bmp" && mv "$C/f05.tmp.bmp" "$C/f05_greenmeadow_1280x1024.bmp"
    fi
    if [[ ! -s "$C/f06_inksplat_1920x1080.svg" ]]; then
        bench_unpack desktop-base
        cp "$BENCH_CACHE/debs/desktop-base/usr/share/desktop-base/joy-inksplat-theme/wallpaper/contents/images/1920x1080.svg" \
            "$C/f06.tmp.svg" && mv "$C/f06.tmp.svg" "$C/f06_inksplat_1920x1080.svg"
    fi
    IMAGES+=(f01_phone_4032x3024.heic f02_phone_4032x3024.avif f03_phone_4032x3024.jxl f04_volna_5120x2880.tif
        f05_greenmeadow_1280x1024.bmp f06_inksplat_1920x1080.svg)
else
    # One newer format in the quick mode too (its table and code path), made with libvips itself.
    if [[ ! -s "$C/f04_greenmeadow_1280x1024.tif" ]]; then
        vips copy "$C/r01_greenmeadow_1280x1024.jpg" "$C/f04.tmp.tif[compression=lzw]" &&
            mv "$C/f04.tmp.tif" "$C/f04_greenmeadow_1280x1024.tif"
    fi
    IMAGES+=(f04_greenmeadow_1280x1024.tif)
fi

if [[ -n "$QUICK" ]]; then
    PROFILE=debug
    # The very build scripts/test.sh makes before its tests (so a no-op there): selecting fewer
    # packages would unify features differently and rebuild the engine for minutes.
    cargo build --locked --workspace --all-targets >&2
    REPORT="$WORK/RESULTS.md"
else
    PROFILE=release
    cargo build --release --locked -p thumbnail-engine --examples >&2
    REPORT="$ROOT/bench/engine/RESULTS.md"
fi
EX="$(svc_target_dir)/$PROFILE/examples"
{
  echo "# Engine benchmark"
  echo
  echo "Date: $(date -u +%Y-%m-%dT%H:%MZ); machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), load average before the run $(cut -d' ' -f1-3 /proc/loadavg);"
  echo "libvips $(vips --version | cut -d- -f2), Pillow $(python3 -c 'import PIL; print(PIL.__version__)'), one thread everywhere."
  if [[ -n "$QUICK" ]]; then runs=(1 1 1 1); else runs=(7 5 3 9); fi
  echo "Command: \`${QUICK:+BENCH_QUICK=1 }scripts/bench-engine.sh\` ($PROFILE build). In-process times are medians (ours: examples/bench, ${runs[0]} runs;"
  echo "libvips: pyvips thumbnail_buffer + write_to_buffer, cache off, ${runs[1]} runs; Pillow: ${runs[2]} runs)."
  echo "Process times are medians of ${runs[3]} whole runs of examples/render, vipsthumbnail and djpeg, taking turns."
  echo "Peak MiB: the job's peak resident memory above the resident memory after loading the input."
  [[ -z "$QUICK" ]] || echo "QUICK MODE: one run of each, debug build; the figures mean nothing."
  echo
  BENCH_QUICK="$QUICK" python3 bench/engine/run.py "$C" "$EX/bench" "$EX/render" "$WORK" "${IMAGES[@]}"
} | tee "$REPORT.new"
mv "$REPORT.new" "$REPORT"
# Every image must have its two rows (both geometries) in the table.
rows=$(grep -c '^| [rsf][0-9][0-9]_' "$REPORT" || true)
if ((rows != 2 * ${#IMAGES[@]})); then
    svc_die "bench-engine: the table has $rows rows, expected $((2 * ${#IMAGES[@]}))"
fi
