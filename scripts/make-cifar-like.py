#!/usr/bin/env python3
"""Writes CIFAR-10-format binary batches (data_batch_1..5.bin, test_batch.bin, batches.meta.txt)
from Fashion-MNIST, padded to 32x32 RGB, for the loader benchmark when CIFAR-10 itself is not at
hand (the loader only sees the format: 1 label byte + 3072 CHW bytes per record).

    python3 scripts/make-cifar-like.py OUT_DIR
Needs only the Python standard library and the Debian dataset-fashion-mnist package.
"""
import gzip, os, struct, sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
src = "/usr/share/datasets/fashion-mnist"


def read(prefix):
    with gzip.open(os.path.join(src, f"{prefix}-images-idx3-ubyte.gz")) as f:
        img = f.read()
    with gzip.open(os.path.join(src, f"{prefix}-labels-idx1-ubyte.gz")) as f:
        lab = f.read()[8:]
    n = struct.unpack(">I", img[4:8])[0]
    return img[16:], lab, n


def record(pixels, i, label):
    plane = bytearray(1024)
    for y in range(28):
        row = pixels[i * 784 + y * 28:i * 784 + y * 28 + 28]
        plane[(y + 2) * 32 + 2:(y + 2) * 32 + 30] = row
    return bytes([label]) + bytes(plane) * 3


pix, lab, n = read("train")
per = n // 5
for b in range(5):
    with open(os.path.join(out, f"data_batch_{b + 1}.bin"), "wb") as f:
        for i in range(b * per, (b + 1) * per):
            f.write(record(pix, i, lab[i]))
pix, lab, n = read("t10k")
with open(os.path.join(out, "test_batch.bin"), "wb") as f:
    for i in range(n):
        f.write(record(pix, i, lab[i]))
names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
open(os.path.join(out, "batches.meta.txt"), "w").write("\n".join(names) + "\n")
print(f"wrote CIFAR-format batches to {out}")
