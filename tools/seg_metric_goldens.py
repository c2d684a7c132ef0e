#!/usr/bin/env python3
"""Goldens for graft's segmentation metrics (src/metrics/segmentation.rs): the per-class pixel
statistics of segmentation_models_pytorch's `smp.metrics.get_stats(mode="multiclass",
ignore_index=255)` summed over a split, and `iou_score` / `f1_score` / `recall` / `accuracy`
on them with reductions none, micro and macro (PyPI `segmentation-models-pytorch`, 0.6.0).

    /tmp/pytorch-ref/bin/pip install segmentation-models-pytorch==0.6.0
    /tmp/pytorch-ref/bin/python tools/seg_metric_goldens.py

Each case is seeded random truth with some 255 (ignored) pixels and at least one class absent
(in neither truth nor predictions), plus either logits (predictions = torch.argmax over classes,
first maximum on ties; integer-valued logits make ties common) or integer predictions. A case
is fed to graft in `batches` (images per batch), so the test also checks that batches add up.

smp divides integer stats in float32; the scores here are taken on the same stats as float64
(smp's functions are dtype-generic), so graft's f64 values can be compared at ~1e-12. The
float32 results are checked here to agree within 1e-6. graft scores an absent class 0
(smp's zero_division="warn"); smp's default zero_division=1.0 is recorded as
`iou_macro_default` / `f1_macro_default` to document the difference.
Writes tests/fixtures/goldens/seg_metrics.json.
"""
import json, os

import torch
import segmentation_models_pytorch as smp
from segmentation_models_pytorch import metrics as M

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
IGNORE = 255


def expected(pred, truth, classes):
    tp, fp, fn, tn = M.get_stats(pred, truth, mode="multiclass", ignore_index=IGNORE, num_classes=classes)
    # Dataset sums: "macro" sums over images itself; "none" would score each image, so it gets
    # the summed stats (keepdim: one "image").
    stats = [s.sum(0, keepdim=True) for s in (tp, fp, fn, tn)]
    d = [s.double() for s in stats]
    out = {
        "tp": stats[0][0].tolist(), "fp": stats[1][0].tolist(), "fn": stats[2][0].tolist(), "tn": stats[3][0].tolist(),
        "iou_none": M.iou_score(*d, reduction="none", zero_division="warn")[0].tolist(),
        "iou_macro": float(M.iou_score(*d, reduction="macro", zero_division="warn")),
        "iou_micro": float(M.iou_score(*d, reduction="micro")),
        "f1_none": M.f1_score(*d, reduction="none", zero_division="warn")[0].tolist(),
        "f1_macro": float(M.f1_score(*d, reduction="macro", zero_division="warn")),
        "recall_micro": float(M.recall(*d, reduction="micro")),
        "accuracy_micro": float(M.accuracy(*d, reduction="micro")),
        "iou_macro_default": float(M.iou_score(*d, reduction="macro")),
        "f1_macro_default": float(M.f1_score(*d, reduction="macro")),
    }
    # Per-image stats give the same macro score (smp sums over images first).
    per_image = [s.double() for s in (tp, fp, fn, tn)]
    assert abs(float(M.iou_score(*per_image, reduction="macro", zero_division="warn")) - out["iou_macro"]) < 1e-12
    # smp's own float32 arithmetic agrees.
    assert abs(float(M.iou_score(*stats, reduction="macro", zero_division="warn")) - out["iou_macro"]) < 1e-6
    assert abs(float(M.recall(*stats, reduction="micro")) - out["recall_micro"]) < 1e-6
    return out


def with_ignored(truth, fraction, gen):
    mask = torch.rand(truth.shape, generator=gen) < fraction
    return torch.where(mask, torch.full_like(truth, IGNORE), truth)


def main():
    gen = torch.Generator().manual_seed(0)
    cases = []

    def logits_case(name, logits, truth, batches):
        pred = logits.argmax(1)
        n, c = logits.shape[:2]
        e = expected(pred, truth, c)
        cases.append({"name": name, "classes": c, "shape": list(logits.shape), "batches": batches,
                      "logits": logits.flatten().tolist(), "truth": truth.flatten().tolist(), **e})

    def pred_case(name, classes, pred, truth, batches):
        e = expected(pred, truth, classes)
        cases.append({"name": name, "classes": classes, "shape": list(pred.shape), "batches": batches,
                      "predicted": pred.flatten().tolist(), "truth": truth.flatten().tolist(), **e})

    # Integer logits: ties between classes 0..2 are common (first max wins); class 3 is never
    # predicted (logit -10) nor true: absent.
    logits = torch.randint(-2, 3, (2, 4, 8, 8), generator=gen).float()
    logits[:, 3] = -10.0
    truth = with_ignored(torch.randint(0, 3, (2, 8, 8), generator=gen), 0.1, gen)
    logits_case("logits_ties", logits, truth, [2])

    # Real logits in two batches; class 4 predicted but never true (fp only, IoU 0 without a
    # zero division); class 5 absent (logit −10, never true).
    logits = torch.randn(3, 6, 6, 7, generator=gen) * 2
    logits[:, 5] = -10.0
    truth = with_ignored(torch.randint(0, 4, (3, 6, 7), generator=gen), 0.15, gen)
    logits_case("logits_batches", logits, truth, [2, 1])

    # Integer predictions, mostly right; class 2 absent; image 1 entirely ignored.
    truth = torch.randint(0, 5, (4, 16, 16), generator=gen)
    truth[truth == 2] = 0
    noise = torch.randint(0, 5, truth.shape, generator=gen)
    noise[noise == 2] = 1
    pred = torch.where(torch.rand(truth.shape, generator=gen) < 0.7, truth, noise)
    truth = with_ignored(truth, 0.05, gen)
    truth[1] = IGNORE
    pred_case("predictions", 5, pred, truth, [1, 3])

    # Perfect predictions with an absent class: micro and pixel accuracy 1, macro (3 of 4).
    truth = torch.randint(0, 3, (2, 5, 5), generator=gen)
    pred = truth.clone()
    truth = with_ignored(truth, 0.2, gen)
    pred_case("perfect_absent", 4, pred, truth, [1, 1])

    for c in cases:
        print(c["name"], "miou", c["iou_macro"], "pixel acc", c["recall_micro"], "default miou", c["iou_macro_default"])
    path = os.path.join(ROOT, "tests", "fixtures", "goldens", "seg_metrics.json")
    with open(path, "w") as f:
        json.dump({"smp": smp.__version__, "ignore_index": IGNORE, "cases": cases}, f)
    size = os.path.getsize(path)
    assert size < 100_000, size
    print(path, size, "bytes")


if __name__ == "__main__":
    main()
