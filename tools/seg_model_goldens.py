#!/usr/bin/env python3
"""Goldens for graft's segmentation models: segmentation_models_pytorch (PyPI
`segmentation-models-pytorch`, 0.6.0) FPN and Unet on a ResNet-18 encoder, 3 classes.

    /tmp/pytorch-ref/bin/pip install segmentation-models-pytorch==0.6.0
    /tmp/pytorch-ref/bin/python tools/seg_model_goldens.py

Writes tests/fixtures/goldens/seg_models.json. No weights are stored: every tensor of the state
dict is `det_tensor_for(key, shape)` from tools/goldens.py (mirrored in `tests/common/mod.rs`),
BatchNorm running statistics included. Models run in eval() mode (BatchNorm on running stats,
FPN's Dropout2d off); the input is `det_input("seg_input", shape)` (scale 1.0).

Layout:
    {"models": {"fpn_resnet18": {"params": P, "state_dict": [[key, shape], ...]}, "unet_resnet18": ...},
     "cases": [{"name", "model", "input_name", "input_shape", "input_scale", "output_shape",
                "logits" (flattened NCHW, 7 significant digits), "torch_f32_error", "tolerance",
                "intermediates": {name: {"shape", "sum", "abs_sum", "head"}}}, ...]}

`state_dict` lists the keys in PyTorch's order, without `num_batches_tracked`; `params` counts
trainable parameters (BatchNorm running statistics excluded). `torch_f32_error` is
max|f32 - f64| / max|f64| of PyTorch's own f32 forward; `tolerance` = max(1e-4, 10x that),
relative to max|logits| (the convention of forward.json). `intermediates` (encoder features,
decoder output; f32) are for debugging a mismatch and are not needed by a pass/fail test.
"""
import json, os, sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from goldens import det_input, set_det_weights  # noqa: E402  (no side effects beyond torch settings)

import segmentation_models_pytorch as smp  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "goldens",
                   "seg_models.json")
INPUT_NAME = "seg_input"
INPUT_SCALE = 1.0


def r7(x):
    return float(f"{float(x):.7g}")


def flat7(t):
    return [r7(v) for v in t.detach().reshape(-1).tolist()]


def summary(t):
    t = t.detach()
    return {"shape": list(t.shape), "sum": float(t.double().sum()), "abs_sum": float(t.double().abs().sum()),
            "head": flat7(t.reshape(-1)[:8])}


def make(kind):
    torch.manual_seed(0)  # irrelevant after set_det_weights, but keeps construction reproducible
    if kind == "fpn_resnet18":
        m = smp.FPN(encoder_name="resnet18", encoder_weights=None, classes=3)
    elif kind == "unet_resnet18":
        m = smp.Unet(encoder_name="resnet18", encoder_weights=None, classes=3)
    else:
        raise ValueError(kind)
    return set_det_weights(m).eval()


def model_info(m):
    sd = m.state_dict()
    keys = [[k, list(v.shape)] for k, v in sd.items() if not k.endswith("num_batches_tracked")]
    return {"params": sum(p.numel() for p in m.parameters()), "state_dict": keys}


def case(name, kind, model, input_shape):
    x = det_input(INPUT_NAME, input_shape, INPUT_SCALE)
    with torch.no_grad():
        feats = model.encoder(x)
        dec = model.decoder(feats)
        logits = model.segmentation_head(dec)
        full = model(x)
        assert torch.equal(full, logits)
        exact = model.double()(x.double())
        model.float()
    own = float((logits.double() - exact).abs().max() / exact.abs().max())
    inter = {f"encoder.features.{i}": summary(f) for i, f in enumerate(feats)}
    inter["decoder.output"] = summary(dec)
    return {"name": name, "model": kind, "input_name": INPUT_NAME, "input_shape": list(input_shape),
            "input_scale": INPUT_SCALE, "output_shape": list(logits.shape), "logits": flat7(logits),
            "logits_sum": float(logits.double().sum()), "logits_abs_max": float(logits.abs().max()),
            "torch_f32_error": own, "tolerance": max(1e-4, 10 * own), "intermediates": inter}


def main():
    models, cases = {}, []
    for kind in ("fpn_resnet18", "unet_resnet18"):
        m = make(kind)
        models[kind] = model_info(m)
        cases.append(case(kind + "_64x64", kind, m, (2, 3, 64, 64)))
        if kind == "fpn_resnet18":
            # Non-square: FPN needs both sides divisible by 32 (encoder output stride).
            cases.append(case(kind + "_64x96", kind, m, (2, 3, 64, 96)))
    obj = {"smp_version": smp.__version__, "torch_version": torch.__version__, "models": models, "cases": cases}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")
    for c in cases:
        print(f"  {c['name']}: out {c['output_shape']} max|y| {c['logits_abs_max']:.4g} "
              f"f32 err {c['torch_f32_error']:.2e} tol {c['tolerance']:.2e}")
    for k, v in models.items():
        print(f"  {k}: {v['params']} params, {len(v['state_dict'])} state_dict entries")


if __name__ == "__main__":
    main()
