"""In-process libvips timing: python3 vips_time.py FILE N WIDTH HEIGHT CROP(0/1) [OUT_EXT] -> median_ms peak_kib w h
OUT_EXT (.jpg, .png, .webp): the output format; by default that of the input (PNG for other inputs)."""
import os, sys, time, resource
os.environ.setdefault("VIPS_CONCURRENCY", "1")
import pyvips
pyvips.cache_set_max(0)
pyvips.cache_set_max_mem(0)
pyvips.cache_set_max_files(0)
path, n, w, h, crop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
data = open(path, "rb").read()
def rss(field):
    for l in open("/proc/self/status"):
        if l.startswith(field):
            return int(l.split()[1])
out_ext = sys.argv[6] if len(sys.argv) > 6 else (".jpg" if path.endswith(".jpg") else ".webp" if path.endswith(".webp") else ".png")
kw = {"height": h, "size": "down"}
if crop:
    kw["crop"] = "centre"
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = rss("VmRSS:")
ts = []
for _ in range(n):
    t = time.perf_counter()
    im = pyvips.Image.thumbnail_buffer(data, w, **kw)
    out = im.write_to_buffer(out_ext + "[Q=80,strip]")
    ts.append((time.perf_counter() - t) * 1000)
ts.sort()
print("%.2f %d %d %d" % (ts[len(ts) // 2], rss("VmHWM:") - base, im.width, im.height))
