#!/usr/bin/env bash
# Engine benchmark: ours vs libvips (pyvips thumbnail_buffer, cache off, 1 thread) vs Pillow (the
# original service's code, and Pillow with draft() + exif_transpose), plus the djpeg -scale 1/N
# floor and SSIM against libvips, in-process and as whole processes. Writes bench/engine/RESULTS.md.
# Usage: scripts/bench-engine.sh        (about 5-10 minutes on 2 cores)
# Installs what is missing (apt: libvips-tools libjpeg-turbo-progs imagemagick exiftool;
# pip: pyvips Pillow numpy) and fetches the photos from the Debian wallpaper packages.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE=${BENCH_CACHE:-/tmp/engine-bench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
mkdir -p "$CACHE/work" "$CACHE/corpus"

need_apt=()
command -v vipsthumbnail >/dev/null || need_apt+=(libvips-tools)
command -v djpeg >/dev/null || need_apt+=(libjpeg-turbo-progs)
[ -x /usr/bin/convert ] || need_apt+=(imagemagick)
command -v exiftool >/dev/null || need_apt+=(libimage-exiftool-perl)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
python3 -c "import pyvips, PIL, numpy" 2>/dev/null || python3 -m pip install -q pyvips Pillow numpy

# The photos: r01-r08 straight from the Debian packages, s13 derived as in the corpus' MANIFEST.
C=$CACHE/corpus
if [ ! -f "$C/s13_phone_4032x3024_orient6.jpg" ]; then
  (cd "$CACHE" && apt-get download mate-backgrounds plasma-workspace-wallpapers gnome-backgrounds)
  for d in "$CACHE"/*.deb; do dpkg-deb -x "$d" "$CACHE/debs"; done
  S=$CACHE/debs/usr/share
  cp $S/backgrounds/mate/nature/GreenMeadow.jpg              $C/r01_greenmeadow_1280x1024.jpg
  cp $S/wallpapers/EveningGlow/contents/images/2560x1600.jpg $C/r02_eveningglow_2560x1600.jpg
  cp $S/wallpapers/SafeLanding/contents/images/1622x2880.jpg $C/r03_safelanding_1622x2880.jpg
  cp $S/backgrounds/mate/abstract/Elephants_3840x2160.jpg    $C/r04_elephants_3840x2160.jpg
  cp $S/wallpapers/Volna/contents/images/5120x2880.jpg       $C/r05_volna_5120x2880.jpg
  cp $S/backgrounds/mate/abstract/Elephants_5640x3172.jpg    $C/r06_elephants_5640x3172.jpg
  cp $S/wallpapers/Patak/contents/images/5120x2880.png       $C/r07_patak_5120x2880_rgba.png
  cp $S/backgrounds/gnome/pixels-l.webp                      $C/r08_pixels_4096x4096.webp
  /usr/bin/convert $C/r06_elephants_5640x3172.jpg -resize '4032x3024!' -quality 92 -sampling-factor 2x2 \
    -interlace none $C/s13_phone_4032x3024_orient6.jpg
  exiftool -q -overwrite_original -n -Orientation=6 -Make=Phone -Model=Camera $C/s13_phone_4032x3024_orient6.jpg
fi

cargo build --release -p thumbnail-engine --examples
EX=$CARGO_TARGET_DIR/release/examples
{
  echo "# Engine benchmark"
  echo
  echo "Date: $(date -u +%Y-%m-%dT%H:%MZ); machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs);"
  echo "libvips $(vips --version | cut -d- -f2), Pillow $(python3 -c 'import PIL; print(PIL.__version__)'), one thread everywhere."
  echo "Command: \`scripts/bench-engine.sh\`. In-process times are medians (ours: $EX/bench, 7 runs;"
  echo "libvips: pyvips thumbnail_buffer + write_to_buffer, cache off, 5 runs; Pillow: 3 runs)."
  echo "Process times are medians of 9 whole runs of examples/render, vipsthumbnail and djpeg, taking turns."
  echo "Peak MiB: the job's peak resident memory above the resident memory after loading the input."
  echo
  python3 bench/engine/run.py "$C" "$EX/bench" "$EX/render" "$CACHE/work"
} | tee bench/engine/RESULTS.md.new
mv bench/engine/RESULTS.md.new bench/engine/RESULTS.md
