#!/usr/bin/env python3
"""The PyTorch reference for `graft bench seg-step`: one training step of a segmentation model,
with the same cases, flags and JSON fields, measured the way ../shared/bench/pytorch_reference.py
measures its train-step (threads = all cores unless --threads, 3 warm-up steps, median of
--iters timed steps).

    /tmp/pytorch-ref/bin/pip install segmentation-models-pytorch==0.6.0
    /tmp/pytorch-ref/bin/python tools/seg_reference_bench.py seg-step --model resnet18 \\
        --image-size 64 --batch-size 16 --classes 11 --iters 10

The step: smp 0.6.0's `FPN(encoder, classes)` (or `--decoder unet`: `Unet`) with a random
encoder (`encoder_weights=None`; graft's seg-step is random too), in train() mode (BatchNorm on
batch statistics, FPN's Dropout2d on); loss F.cross_entropy(ignore_index=255) +
smp.losses.DiceLoss("multiclass", ignore_index=255) (`--loss ce+dice`, the default; `ce`,
`dice`); backward; torch.optim.Adam(lr=1e-3) on every parameter.

Models: `resnet18` (smp's torchvision ResNet encoder) and `efficientnet_lite0` (smp's
`timm-tf_efficientnet_lite0` encoder: the same stages and channels as graft's, 24/40/112/320
at strides 4 to 32, symmetric padding where graft's has TensorFlow's "SAME" (the same work);
its stochastic depth — timm's DropPath, which graft's EfficientNet-Lite does not have — is
replaced by the identity so both do the same work).

Inputs: random images (seeded); masks `(i * 7 + i // w) % classes` over the flattened
(n, h, w) index `i`, every 23rd pixel 255 (ignored) — the masks graft's seg-step builds.

Besides the step's median, the JSON has the median of each phase over --iters more steps:
forward + loss (read back with .item()), backward, the optimizer step (with zero_grad).
`--parts` adds each part alone (its input a fresh leaf that requires grad, its output summed
for the backward; the loss its own value): the encoder (the maps the decoder reads), the
decoder, the head (FPN: 1x1 convolution + bilinear x4), the loss; medians of forward and
backward over --iters runs after 2 warm-ups. `graft bench seg-step --parts` times the same.
`--ops` (FPN) walks smp's FPNDecoder op by op on its real inputs made fresh leaves (conv1x1,
nearest x2, add, conv3x3, GroupNorm, ReLU, bilinear x2, Dropout2d, the head's conv and bilinear
x4, each loss term): per kind, the summed medians of forward and backward (of the output's
sum), as `graft bench seg-step --ops`.
"""

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ENCODERS = {"resnet18": "resnet18", "efficientnet_lite0": "timm-tf_efficientnet_lite0"}


def timed(fn, warm, iters):
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def build(a):
    import segmentation_models_pytorch as smp

    kind = {"fpn": smp.FPN, "unet": smp.Unet}[a.decoder]
    model = kind(encoder_name=ENCODERS[a.model], encoder_weights=None, classes=a.classes)
    dropped = 0
    for m in list(model.modules()):
        for child_name, child in list(m.named_children()):
            if type(child).__name__ == "DropPath":
                setattr(m, child_name, nn.Identity())
                dropped += 1
    return model, dropped


def fwd_bwd(iters, f):
    fw, bw = [], []
    for i in range(max(iters, 1) + 2):
        t0 = time.perf_counter()
        out = f()
        out.item()
        t1 = time.perf_counter()
        out.backward()
        t2 = time.perf_counter()
        if i >= 2:
            fw.append((t1 - t0) * 1e3)
            bw.append((t2 - t1) * 1e3)
    return statistics.median(fw), statistics.median(bw)


def parts(a, model, x, loss_of):
    """Forward and backward of each part alone (see the module's doc)."""
    first = 2 if a.decoder == "fpn" else 1  # the encoder maps the decoder reads

    def part(f):
        fw, bw = fwd_bwd(a.iters, f)
        model.zero_grad()
        return {"forward_ms": round(fw, 2), "backward_ms": round(bw, 2)}

    res = {"backbone": part(lambda: sum(m.sum() for m in model.encoder(x)[first:]))}
    with torch.no_grad():
        feats = model.encoder(x)
    leaves = [f.detach().requires_grad_() for f in feats]
    res["decoder"] = part(lambda: model.decoder(leaves).sum())
    with torch.no_grad():
        dec = model.decoder(leaves)
    dec = dec.detach().requires_grad_()
    res["head"] = part(lambda: model.segmentation_head(dec).sum())
    with torch.no_grad():
        logits = model(x)
    logits = logits.detach().requires_grad_()
    res["loss"] = part(lambda: loss_of(logits))
    return res


def fpn_ops(a, model, x, masks, dice):
    """Every op of smp's FPN decoder, head and loss alone (see the module's doc)."""
    if a.decoder != "fpn":
        raise SystemExit("--ops: fpn only")
    res = {}

    def run(name, inputs, f):
        leaves = [t.detach().requires_grad_() for t in inputs]
        fw, bw = fwd_bwd(a.iters, lambda: f(*leaves).sum())
        calls, f0, b0 = res.get(name, (0, 0.0, 0.0))
        res[name] = (calls + 1, f0 + fw, b0 + bw)
        with torch.no_grad():
            return f(*leaves).detach()

    dec = model.decoder
    with torch.no_grad():
        c2, c3, c4, c5 = model.encoder(x)[-4:]
    p = run("conv1x1 (lateral)", [c5], dec.p5)
    pyramid = [p]
    for block, skip in [(dec.p4, c4), (dec.p3, c3), (dec.p2, c2)]:
        up = run("upsample nearest x2", [p], lambda t: F.interpolate(t, scale_factor=2.0, mode="nearest"))
        lateral = run("conv1x1 (lateral)", [skip], block.skip_conv)
        p = run("add", [up, lateral], lambda u, v: u + v)
        pyramid.append(p)
    merged = None
    for seg, y in zip(dec.seg_blocks, pyramid):
        for cgr in seg.block:
            conv, gn, _ = cgr.block
            y = run("conv3x3", [y], conv)
            y = run("groupnorm", [y], gn)
            y = run("relu", [y], F.relu)
            if cgr.upsample:
                y = run("bilinear x2", [y],
                        lambda t: F.interpolate(t, scale_factor=2.0, mode="bilinear", align_corners=True))
        merged = y if merged is None else run("add", [merged, y], lambda u, v: u + v)
    # (smp applies it in place; a leaf cannot be changed in place)
    dropped = run("dropout2d", [merged], lambda t: F.dropout2d(t, dec.dropout.p, training=True))
    head = model.segmentation_head
    logits = run("conv1x1 (head)", [dropped], head[0])
    logits = run("bilinear x4 (head)", [logits], head[1])
    out = {k: {"calls": c, "forward_ms": round(f, 2), "backward_ms": round(b, 2)} for k, (c, f, b) in res.items()}
    for name, fn in [("loss ce", lambda t: F.cross_entropy(t, masks, ignore_index=255)),
                     ("loss dice", lambda t: dice(t, masks))]:
        leaf = logits.detach().requires_grad_()
        fw, bw = fwd_bwd(a.iters, lambda: fn(leaf))
        out[name] = {"calls": 1, "forward_ms": round(fw, 2), "backward_ms": round(bw, 2)}
    model.zero_grad()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench", choices=["seg-step"])
    p.add_argument("--model", default="resnet18", choices=sorted(ENCODERS))
    p.add_argument("--decoder", default="fpn", choices=["fpn", "unet"])
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--classes", type=int, default=11)
    p.add_argument("--loss", default="ce+dice", choices=["ce", "dice", "ce+dice"])
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--ops", action="store_true",
                   help="(fpn) also time every op of the decoder, head and loss alone, summed per kind")
    p.add_argument("--parts", action="store_true",
                   help="also time the parts alone, forward and backward (backbone, decoder, head, loss)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    import segmentation_models_pytorch as smp

    model, dropped = build(a)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    dice = smp.losses.DiceLoss("multiclass", ignore_index=255)
    b, s = a.batch_size, a.image_size
    x = torch.randn(b, 3, s, s)
    i = torch.arange(b * s * s)
    masks = ((i * 7 + i // s) % a.classes).masked_fill(i % 23 == 0, 255).reshape(b, s, s)

    def loss_of(logits):
        if a.loss == "ce":
            return F.cross_entropy(logits, masks, ignore_index=255)
        if a.loss == "dice":
            return dice(logits, masks)
        return F.cross_entropy(logits, masks, ignore_index=255) + dice(logits, masks)

    def step():
        opt.zero_grad()
        loss_of(model(x)).backward()
        opt.step()

    t = timed(step, 3, a.iters)
    phases = [[], [], []]
    for _ in range(max(a.iters, 1)):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = loss_of(model(x))
        loss.item()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        for k, (u, v) in enumerate([(t0, t1), (t1, t2), (t2, t3)]):
            phases[k].append((v - u) * 1e3)
    fwd, bwd, step_ms = (round(statistics.median(v), 2) for v in phases)
    by_part = parts(a, model, x, loss_of) if a.parts else None
    by_op = fpn_ops(a, model, x, masks, dice) if a.ops else None
    print(json.dumps({
        "bench": "seg-step", "model": a.model, "decoder": a.decoder, "encoder": ENCODERS[a.model],
        "image_size": s, "batch_size": b, "classes": a.classes, "loss": a.loss,
        "ms_per_step": round(t * 1e3, 2), "images_per_s": round(b / t, 1),
        "forward_loss_ms": fwd, "backward_ms": bwd, "optimizer_ms": step_ms, "parts": by_part, "ops": by_op,
        "params": sum(q.numel() for q in model.parameters()), "drop_paths_removed": dropped,
        "torch": torch.__version__, "smp": smp.__version__, "threads": torch.get_num_threads(),
    }), flush=True)


if __name__ == "__main__":
    main()
