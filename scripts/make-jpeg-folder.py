#!/usr/bin/env python3
"""Writes a class-per-subfolder JPEG dataset for the loader benchmark (graft bench loader).

    python3 scripts/make-jpeg-folder.py OUT_DIR [N_PER_CLASS] [SIZE]

Images are Fashion-MNIST test images upscaled to SIZE (default 96) and saved as RGB JPEGs, so the
decoder does real work on real content. Needs Pillow (in the PyTorch reference venv) and the
Debian dataset-fashion-mnist package.
"""
import gzip, os, struct, sys

from PIL import Image

out = sys.argv[1]
per_class = int(sys.argv[2]) if len(sys.argv) > 2 else 200
size = int(sys.argv[3]) if len(sys.argv) > 3 else 96
src = "/usr/share/datasets/fashion-mnist"
with gzip.open(os.path.join(src, "t10k-images-idx3-ubyte.gz")) as f:
    data = f.read()
with gzip.open(os.path.join(src, "t10k-labels-idx1-ubyte.gz")) as f:
    labels = f.read()[8:]
n, h, w = struct.unpack(">III", data[4:16])
count = [0] * 10
for i in range(n):
    c = labels[i]
    if count[c] >= per_class:
        continue
    img = Image.frombytes("L", (w, h), data[16 + i * h * w:16 + (i + 1) * h * w]).convert("RGB").resize((size, size))
    d = os.path.join(out, f"class{c}")
    os.makedirs(d, exist_ok=True)
    img.save(os.path.join(d, f"{i}.jpg"), quality=90)
    count[c] += 1
print(f"wrote {sum(count)} JPEGs to {out}")
