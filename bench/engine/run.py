#!/usr/bin/env python3
"""Engine benchmark driver (called by scripts/bench-engine.sh). Prints a markdown report.
usage: run.py CORPUS_DIR OUR_BENCH OUR_RENDER WORK_DIR IMAGE...
BENCH_QUICK=1: one run of each measurement (the quick mode of scripts/test.sh)."""
import math, os, statistics, subprocess, sys, time
import numpy as np
from PIL import Image

corpus, our_bench, our_render, work = sys.argv[1:5]
IMAGES = sys.argv[5:]
HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable
GEOMS = [("100x100 cover", 100, 100, True), ("400w contain", 400, 4096, False)]
N_OURS, N_VIPS, N_PIL, N_PROC = (1, 1, 1, 1) if os.environ.get("BENCH_QUICK") else (7, 5, 3, 9)
env1 = dict(os.environ, VIPS_CONCURRENCY="1", OMP_NUM_THREADS="1")


def line(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env1)
    if out.returncode != 0:
        raise SystemExit(f"failed: {cmd}\n{out.stderr}")
    t, kib, w, h = out.stdout.split()[:4]
    return float(t), int(kib), int(w), int(h)


def proc_medians(cmds, n=N_PROC):
    """Median wall time of each command as a whole process. The commands take turns (round
    robin), so that a burst of load on this shared machine falls on all of them alike instead of
    on whichever happened to be running."""
    ts = [[] for _ in cmds]
    for _ in range(n):
        for i, cmd in enumerate(cmds):
            t = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env1, check=True)
            ts[i].append((time.perf_counter() - t) * 1000)
    return [(statistics.median(t), min(t)) for t in ts]


def load_flat(path):
    im = Image.open(path)
    im.load()
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("L"), dtype=np.float64)


def ssim(a, b):
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    a, b = a[:h, :w], b[:h, :w]
    k = 7
    if h < k or w < k:
        return float("nan")
    def box(x):
        c = np.cumsum(np.cumsum(np.pad(x, ((1, 0), (1, 0))), 0), 1)
        return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)
    mu_a, mu_b = box(a), box(b)
    va = box(a * a) - mu_a ** 2
    vb = box(b * b) - mu_b ** 2
    cov = box(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
    return float(s.mean())


def gmean(xs):
    xs = [x for x in xs if x and not math.isnan(x)]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


rows = []
for name in IMAGES:
    path = os.path.join(corpus, name)
    is_jpeg = name.endswith(".jpg")
    # The newer input formats (HEIC, AVIF, JPEG XL, TIFF, BMP, SVG: names f..): both sides write
    # JPEG, and Pillow (which reads few of them) is not measured.
    is_new = name.startswith("f")
    for gname, w, h, crop in GEOMS:
        fit = "cover" if crop else "contain"
        flags = ["--width", str(w), "--height", str(h), "--fit", fit]
        ext = os.path.splitext(name)[1]
        if is_new:
            flags += ["--format", "jpeg"]
            ext = ".jpg"
        ours = line([our_bench, *flags, path, str(N_OURS)])
        vips = line([PY, os.path.join(HERE, "vips_time.py"), path, str(N_VIPS), str(w), str(h), "1" if crop else "0", ext])
        if is_new:
            orig = draft = None
        else:
            orig = line([PY, os.path.join(HERE, "pillow_time.py"), path, str(N_PIL), str(w), str(h), "1" if crop else "0", "orig"])
            draft = line([PY, os.path.join(HERE, "pillow_time.py"), path, str(N_PIL), str(w), str(h), "1" if crop else "0", "draft"])
        # Whole processes.
        our_out = os.path.join(work, "ours" + ext if ext != ".webp" else "ours.webp")
        vips_out = os.path.join(work, "vips" + (ext if ext != ".png" else ".png"))
        vt = ["vipsthumbnail", path, "--size", f"{w}x{h}>" if not crop else f"{w}x{h}", "-o", vips_out + "[Q=80,strip]"]
        if crop:
            vt += ["--smartcrop", "centre"]
        procs = [[our_render, path, our_out, *flags], vt]
        if is_jpeg:
            # djpeg floor: the smallest 1/N scale at or above the target (in displayed orientation).
            im = Image.open(path)
            iw, ih = im.size
            o = im.getexif().get(0x0112, 1)
            dw, dh = (ih, iw) if o >= 5 else (iw, ih)
            s = max(w / dw, h / dh) if crop else min(w / dw, h / dh)
            n = 8
            while n > 1 and s > 1 / n:
                n //= 2
            procs.append(["djpeg", "-scale", f"1/{n}", "-outfile", "/dev/null", path])
        (p_ours, p_ours_min), (p_vips, _), *djpeg = proc_medians(procs)
        djpeg, djpeg_min = djpeg[0] if djpeg else (None, None)
        q = ssim(load_flat(our_out), load_flat(vips_out))
        rows.append(dict(name=name, geom=gname, ours=ours, vips=vips, orig=orig, draft=draft,
                         p_ours=p_ours, p_vips=p_vips, djpeg=djpeg, ssim=q, jpeg=is_jpeg,
                         p_ours_min=p_ours_min, djpeg_min=djpeg_min, new=is_new))
        print(f"{name} {gname}: ours {ours[0]:.1f} ms, vips {vips[0]:.1f} ms, ssim {q:.4f}", file=sys.stderr)

new_rows = [r for r in rows if r["new"]]
rows = [r for r in rows if not r["new"]]
print("| image | geometry | ours ms | libvips ms | ours/vips | Pillow orig ms | Pillow draft ms | djpeg 1/N ms (process) | ours ms (process) | vipsthumbnail ms (process) | ours peak MiB | libvips peak MiB | Pillow orig peak MiB | out | SSIM vs libvips |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
for r in rows:
    dj = f"{r['djpeg']:.1f}" if r["djpeg"] else "–"
    print(f"| {r['name']} | {r['geom']} | {r['ours'][0]:.1f} | {r['vips'][0]:.1f} | {r['ours'][0] / r['vips'][0]:.2f} | "
          f"{r['orig'][0]:.1f} | {r['draft'][0]:.1f} | {dj} | {r['p_ours']:.1f} | {r['p_vips']:.1f} | "
          f"{r['ours'][1] / 1024:.1f} | {r['vips'][1] / 1024:.1f} | {r['orig'][1] / 1024:.1f} | {r['ours'][2]}x{r['ours'][3]} | {r['ssim']:.4f} |")
print()
ratios = [r["ours"][0] / r["vips"][0] for r in rows]
jp = [r for r in rows if r["jpeg"]]
print(f"- geometric mean ours/libvips (in-process, all {len(rows)} runs): **{gmean(ratios):.3f}** (target ≤ 0.6)")
worst = max(rows, key=lambda r: r["ours"][0] / r["vips"][0])
print(f"- slowest relative to libvips: {worst['name']} {worst['geom']} at {worst['ours'][0] / worst['vips'][0]:.2f}x (target ≤ 1.2x)")
print(f"- geometric mean Pillow original / ours over JPEG photos: **{gmean([r['orig'][0] / r['ours'][0] for r in jp]):.2f}x** faster (target ≥ 2x)")
print(f"- geometric mean Pillow draft+exif_transpose / ours over JPEG photos: {gmean([r['draft'][0] / r['ours'][0] for r in jp]):.2f}x")
worst_dj = max(jp, key=lambda r: r["p_ours"] / r["djpeg"])
print(f"- JPEG whole process ours / djpeg -scale 1/N, worst: {worst_dj['p_ours'] / worst_dj['djpeg']:.2f} ({worst_dj['name']} {worst_dj['geom']}; target ≤ 1.3), geometric mean {gmean([r['p_ours'] / r['djpeg'] for r in jp]):.2f}")
# Load from other tenants only ever adds time, so the fastest of the runs is the steadiest
# estimate of what each program itself costs; both are given.
worst_min = max(jp, key=lambda r: r["p_ours_min"] / r["djpeg_min"])
print(f"- the same from the fastest of the {N_PROC} runs of each: worst {worst_min['p_ours_min'] / worst_min['djpeg_min']:.2f} ({worst_min['name']} {worst_min['geom']}), geometric mean {gmean([r['p_ours_min'] / r['djpeg_min'] for r in jp]):.2f}")
print(f"- whole process geometric mean ours/vipsthumbnail: {gmean([r['p_ours'] / r['p_vips'] for r in rows]):.3f}")
print(f"- peak memory per job (VmHWM over RSS after loading the input) ours ≤ libvips in {sum(r['ours'][1] <= r['vips'][1] for r in rows)} of {len(rows)} runs")
print(f"- SSIM vs libvips: min {min(r['ssim'] for r in rows):.4f}, geometric mean {gmean([r['ssim'] for r in rows]):.4f}")

if new_rows:
    print()
    print("Newer input formats, both sides writing JPEG (Q80):")
    print()
    print("| image | geometry | ours ms | libvips ms | ours/vips | ours ms (process) | vipsthumbnail ms (process) | ours peak MiB | libvips peak MiB | out | SSIM vs libvips |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in new_rows:
        print(f"| {r['name']} | {r['geom']} | {r['ours'][0]:.1f} | {r['vips'][0]:.1f} | {r['ours'][0] / r['vips'][0]:.2f} | "
              f"{r['p_ours']:.1f} | {r['p_vips']:.1f} | {r['ours'][1] / 1024:.1f} | {r['vips'][1] / 1024:.1f} | "
              f"{r['ours'][2]}x{r['ours'][3]} | {r['ssim']:.4f} |")
    print()
    worst = max(new_rows, key=lambda r: r["ours"][0] / r["vips"][0])
    print(f"- newer formats, slowest relative to libvips: {worst['name']} {worst['geom']} at {worst['ours'][0] / worst['vips'][0]:.2f}x (target ≤ 1.5x); geometric mean {gmean([r['ours'][0] / r['vips'][0] for r in new_rows]):.3f}")
    print(f"- newer formats, peak memory ours ≤ libvips in {sum(r['ours'][1] <= r['vips'][1] for r in new_rows)} of {len(new_rows)} runs")
