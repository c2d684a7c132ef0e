#!/usr/bin/env python3
"""Builds a small real-data semantic-segmentation dataset from Fashion-MNIST, the way M2NIST
is built from MNIST: real 28x28 Fashion-MNIST items pasted onto a textured canvas, with a
per-pixel mask of class indices.

    python3 scripts/fashion-mnist-scenes.py --out data/fm-scenes
    graft fit --task segmentation --data seg:data/fm-scenes ...

Source: the idx .gz files of Debian's `dataset-fashion-mnist` package
(/usr/share/datasets/fashion-mnist; `apt install dataset-fashion-mnist`), or --source DIR
holding train-/t10k- images-idx3 / labels-idx1 -ubyte[.gz]. Needs numpy and Pillow.

Recipe, per scene (canvas S x S, S = --size, default 64):
  * background: a mild real-looking texture, a random 5x5..9x9 grid upsampled (Pillow
    bilinear) to S x S plus a little per-pixel noise, values roughly 0..60 of 255, with a
    mild per-scene colour cast;
  * 1..4 items drawn uniformly from Fashion-MNIST, each rescaled by a random factor in
    [0.8, 1.3] (Pillow bilinear) and pasted at a random position fully inside the canvas,
    later items on top of earlier ones;
  * an item's pixel is foreground where its (rescaled) intensity is > 40 of 255; there the
    image takes the item's intensity times a random per-item, per-channel tint in [0.7, 1.0]
    and the mask takes the item's class index + 1; 0 is background.
Train scenes draw items only from Fashion-MNIST's training file, test scenes only from its
test (t10k) file, so no item appears in both splits. Output is deterministic for a seed, and
the test split does not depend on --train (each split has its own random stream).

Layout written under --out:
  train/images/NNNNN.png   RGB scene
  train/masks/NNNNN.png    8-bit greyscale ('L') mask of class indices 0..10, same stem
  test/images/, test/masks/
  classes.txt              11 lines: background, then Fashion-MNIST's 10 class names
Stale NNNNN.png files from an earlier, larger run into the same folder are removed.
"""
import argparse
import gzip
import os
import re
import sys
import time

try:
    import numpy as np
    from PIL import Image
except ImportError as e:
    sys.exit(
        f"fashion-mnist-scenes: {e}. This script needs numpy and Pillow: "
        "`pip install numpy pillow` (or `apt install python3-numpy python3-pil`), "
        "or run it with a Python that has them (e.g. the PyTorch reference venv)."
    )

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FG_THRESHOLD = 40          # item intensity (0..255) above which a pixel is foreground
SCALE_RANGE = (0.8, 1.3)   # per-item rescale factor
TINT_RANGE = (0.7, 1.0)    # per-item, per-channel intensity multiplier
MAX_ITEMS = 4


def open_maybe_gz(path):
    if os.path.exists(path):
        return open(path, "rb")
    if os.path.exists(path + ".gz"):
        return gzip.open(path + ".gz", "rb")
    raise FileNotFoundError(path + "[.gz]")


def read_idx(path, want_magic):
    with open_maybe_gz(path) as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    if magic != want_magic:
        sys.exit(f"fashion-mnist-scenes: {path}: bad idx magic {magic:#x}, want {want_magic:#x}")
    n = int.from_bytes(data[4:8], "big")
    if want_magic == 0x803:
        rows, cols = int.from_bytes(data[8:12], "big"), int.from_bytes(data[12:16], "big")
        arr = np.frombuffer(data, np.uint8, n * rows * cols, 16).reshape(n, rows, cols)
    else:
        arr = np.frombuffer(data, np.uint8, n, 8)
    return arr


def load_split(source, prefix):
    images = read_idx(os.path.join(source, f"{prefix}-images-idx3-ubyte"), 0x803)
    labels = read_idx(os.path.join(source, f"{prefix}-labels-idx1-ubyte"), 0x801)
    if len(images) != len(labels) or images.shape[1:] != (28, 28):
        sys.exit(f"fashion-mnist-scenes: {source}/{prefix}: {images.shape} images vs {len(labels)} labels")
    if labels.max() >= len(CLASSES):
        sys.exit(f"fashion-mnist-scenes: {source}/{prefix}: label {labels.max()} out of range")
    return images, labels


def background(rng, size):
    g = int(rng.integers(5, 10))
    grid = rng.uniform(0, 45, (g, g)).astype(np.float32)
    smooth = np.asarray(Image.fromarray(grid).resize((size, size), Image.BILINEAR))
    base = smooth + rng.normal(0, 4, (size, size)).astype(np.float32) + 5
    cast = rng.uniform(0.85, 1.0, 3).astype(np.float32)
    return np.clip(base[:, :, None] * cast, 0, 60)


def make_scene(rng, images, labels, size):
    img = background(rng, size)
    mask = np.zeros((size, size), np.uint8)
    max_scale = min(SCALE_RANGE[1], size / 28)
    for _ in range(int(rng.integers(1, MAX_ITEMS + 1))):
        k = int(rng.integers(len(images)))
        item = images[k]
        side = int(round(28 * rng.uniform(SCALE_RANGE[0], max_scale)))
        side = min(side, size)
        if side != 28:
            item = np.asarray(Image.fromarray(item).resize((side, side), Image.BILINEAR))
        y = int(rng.integers(0, size - side + 1))
        x = int(rng.integers(0, size - side + 1))
        fg = item > FG_THRESHOLD
        tint = rng.uniform(*TINT_RANGE, 3).astype(np.float32)
        region = img[y:y + side, x:x + side]
        region[fg] = item[fg].astype(np.float32)[:, None] * tint
        mask[y:y + side, x:x + side][fg] = labels[k] + 1
    return np.round(img).astype(np.uint8), mask


STEM = re.compile(r"^(\d+)\.png$")


def write_split(out, name, count, rng, images, labels, size):
    counts = np.zeros(len(CLASSES) + 1, np.int64)
    dirs = [os.path.join(out, name, sub) for sub in ("images", "masks")]
    for d in dirs:
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):  # stale scenes from an earlier, larger run
            m = STEM.match(f)
            if m and int(m.group(1)) >= count:
                os.remove(os.path.join(d, f))
    for i in range(count):
        img, mask = make_scene(rng, images, labels, size)
        Image.fromarray(img).save(os.path.join(dirs[0], f"{i:05d}.png"))
        Image.fromarray(mask).save(os.path.join(dirs[1], f"{i:05d}.png"))
        counts += np.bincount(mask.ravel(), minlength=len(counts))
    return counts


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--train", type=int, default=2000, help="train scenes (default 2000)")
    p.add_argument("--test", type=int, default=500, help="test scenes (default 500)")
    p.add_argument("--size", type=int, default=64, help="canvas side in pixels (default 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--source", default=DEBIAN_DIR,
                   help=f"Fashion-MNIST idx folder (default {DEBIAN_DIR})")
    a = p.parse_args()
    if a.train < 0 or a.test < 0:
        p.error("--train and --test must be >= 0")
    if a.size < 28:
        p.error("--size must be >= 28 (a Fashion-MNIST item is 28x28)")
    if not os.path.isdir(a.source):
        hint = ("install Debian's package with `apt install dataset-fashion-mnist`, or "
                if a.source == DEBIAN_DIR else "")
        sys.exit(f"fashion-mnist-scenes: Fashion-MNIST folder {a.source} not found: {hint}"
                 "pass --source DIR holding train-/t10k- images-idx3 / labels-idx1 -ubyte[.gz]")

    t0 = time.time()
    try:
        train_src = load_split(a.source, "train")
        test_src = load_split(a.source, "t10k")
    except FileNotFoundError as e:
        sys.exit(f"fashion-mnist-scenes: missing {e.args[0]} in {a.source} "
                 "(Debian: `apt install dataset-fashion-mnist`)")
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "classes.txt"), "w") as f:
        f.write("\n".join(["background"] + CLASSES) + "\n")
    # One independent stream per split: the test scenes do not depend on --train.
    train_counts = write_split(a.out, "train", a.train,
                               np.random.default_rng([a.seed, 0]), *train_src, a.size)
    test_counts = write_split(a.out, "test", a.test,
                              np.random.default_rng([a.seed, 1]), *test_src, a.size)
    frac = train_counts / max(train_counts.sum(), 1)
    names = ["background"] + CLASSES
    fracs = " ".join(f"{n}={x:.3f}" for n, x in zip(names, frac))
    missing = [n for n, c in zip(names, test_counts) if c == 0]
    note = f"; test lacks {missing}" if missing and a.test else ""
    print(f"wrote {a.train} train + {a.test} test {a.size}x{a.size} scenes to {a.out} "
          f"in {time.time() - t0:.1f}s; train pixel fractions: {fracs}{note}")


if __name__ == "__main__":
    main()
