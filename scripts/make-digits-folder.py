#!/usr/bin/env python3
"""Writes UCI's handwritten digits (the 1,797 8x8 images inside the scikit-learn wheel) as a
class-per-subfolder PNG dataset, a second real dataset for `graft rank` and `compare`:

    python3 scripts/make-digits-folder.py OUT_DIR      # then: graft ... --data folder:OUT_DIR

Pixel values 0..16 are scaled to 0..255 (grey); graft resizes to --image-size. Needs
scikit-learn and Pillow (the PyTorch reference venv has both).
"""
import os, sys

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

out = sys.argv[1]
digits = load_digits()
for i, (img, label) in enumerate(zip(digits.images, digits.target)):
    d = os.path.join(out, str(label))
    os.makedirs(d, exist_ok=True)
    Image.fromarray((img * 255.0 / 16.0).round().astype(np.uint8), "L").save(os.path.join(d, f"{i:04d}.png"))
print(f"wrote {len(digits.target)} images to {out}")
