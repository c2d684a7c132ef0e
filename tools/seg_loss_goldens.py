#!/usr/bin/env python3
"""Goldens for graft's dense (segmentation) losses: segmentation_models_pytorch's DiceLoss,
JaccardLoss and FocalLoss (PyPI `segmentation-models-pytorch`, 0.6.0) and PyTorch's
F.cross_entropy on maps, each value with its gradient with respect to the logits.

    /tmp/pytorch-ref/bin/pip install segmentation-models-pytorch==0.6.0
    /tmp/pytorch-ref/bin/python tools/seg_loss_goldens.py

Inputs are seeded random logits (2, 4, 5, 6) and targets with some pixels 255 (ignored) and class
3 absent (smp masks absent classes out); binary cases use one channel and 0/1/255 targets. Focal cases are named
focal[_binary][_ignore][_alpha<a>][_gamma<g>] (defaults: multiclass, alpha None, gamma 2).
Writes tests/fixtures/goldens/seg_losses.json.
"""
import json, os

import torch
import torch.nn.functional as F
import segmentation_models_pytorch as smp
from segmentation_models_pytorch.losses import DiceLoss, FocalLoss, JaccardLoss

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
torch.manual_seed(0)
N, C, H, W = 2, 4, 5, 6


def case(name, loss_fn, logits, target):
    x = logits.clone().requires_grad_(True)
    loss = loss_fn(x, target)
    loss.backward()
    return {"name": name, "shape": list(logits.shape), "logits": x.detach().flatten().tolist(),
            "target": target.flatten().tolist(), "loss": float(loss.detach()), "grad": x.grad.flatten().tolist()}


def main():
    logits = torch.randn(N, C, H, W) * 2
    target = torch.randint(0, 3, (N, H, W))  # class 3 absent
    target[0, 0, :3] = 255
    target[1, 4, 2:] = 255
    binary_logits = torch.randn(N, 1, H, W) * 2
    binary_target = torch.randint(0, 2, (N, H, W))
    binary_target[0, 2, 1:4] = 255
    weights = [0.5, 1.0, 2.0, 1.5]
    cases = [
        case("dice", DiceLoss("multiclass"), logits, target.clamp_max(2)),
        case("dice_ignore", DiceLoss("multiclass", ignore_index=255), logits, target),
        case("dice_log_smooth", DiceLoss("multiclass", log_loss=True, smooth=1.0, ignore_index=255), logits, target),
        case("jaccard_ignore", JaccardLoss("multiclass", ignore_index=255), logits, target),
        case("dice_binary_ignore", DiceLoss("binary", ignore_index=255), binary_logits, binary_target),
        case("jaccard_binary", JaccardLoss("binary"), binary_logits, binary_target.clamp_max(1)),
        case("ce_weighted_ignore", lambda x, t: F.cross_entropy(x, t, weight=torch.tensor(weights), ignore_index=255), logits, target),
        case("ce", lambda x, t: F.cross_entropy(x, t), logits, target.clamp_max(2)),
        case("focal", FocalLoss("multiclass"), logits, target.clamp_max(2)),
        case("focal_ignore", FocalLoss("multiclass", ignore_index=255), logits, target),
        case("focal_ignore_alpha0.25", FocalLoss("multiclass", alpha=0.25, ignore_index=255), logits, target),
        case("focal_ignore_gamma0.5", FocalLoss("multiclass", gamma=0.5, ignore_index=255), logits, target),
        case("focal_binary", FocalLoss("binary"), binary_logits, binary_target.clamp_max(1)),
        case("focal_binary_ignore_alpha0.25", FocalLoss("binary", alpha=0.25, ignore_index=255), binary_logits, binary_target),
        # Large logits: the log-sigmoid form must neither overflow nor lose the gradient.
        case("focal_binary_ignore_gamma0", FocalLoss("binary", gamma=0.0, ignore_index=255), binary_logits * 20, binary_target),
    ]
    for c in cases:
        print(c["name"], c["loss"])
    with open(os.path.join(ROOT, "tests", "fixtures", "goldens", "seg_losses.json"), "w") as f:
        json.dump({"smp": smp.__version__, "weights": weights, "cases": cases}, f)


if __name__ == "__main__":
    main()
