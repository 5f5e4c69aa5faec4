"""In-process Pillow timing: python3 pillow_time.py FILE N WIDTH HEIGHT CROP(0/1) MODE(orig|draft)
-> median_ms peak_kib w h.  MODE orig = the original service's code (open, ImageOps.fit / thumbnail,
save at quality 80); draft = the same with Image.draft() shrink-on-load and exif_transpose."""
import io, sys, time
from PIL import Image, ImageOps
path, n, w, h, crop, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1", sys.argv[6]
data = open(path, "rb").read()
def rss(field):
    for l in open("/proc/self/status"):
        if l.startswith(field):
            return int(l.split()[1])
def run():
    img = Image.open(io.BytesIO(data))
    fmt = img.format
    if mode == "draft":
        img.draft("RGB", (w, h) if crop else (w, 1))
        img = ImageOps.exif_transpose(img)
    if crop:
        img = ImageOps.fit(img, (w, h), Image.LANCZOS)
    else:
        img.thumbnail((w, h), Image.LANCZOS)
    out = io.BytesIO()
    if fmt == "JPEG":
        img.convert("RGB").save(out, "JPEG", quality=80)
    elif fmt == "WEBP":
        img.save(out, "WEBP", quality=80)
    else:
        img.save(out, "PNG")
    return img.size
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = rss("VmRSS:")
ts = []
for _ in range(n):
    t = time.perf_counter()
    size = run()
    ts.append((time.perf_counter() - t) * 1000)
ts.sort()
print("%.2f %d %d %d" % (ts[len(ts) // 2], rss("VmHWM:") - base, size[0], size[1]))
