#!/usr/bin/env python3
"""PyTorch on CUDA for `graft bench --device vulkan|cuda`: the `train-step` and `infer` cases of
../shared/bench/pytorch_reference.py (same models, settings and JSON fields), moved to the GPU.

The reference script itself is CPU-only; this imports its models and repeats its two timing
cases with the tensors on `cuda` and a `torch.cuda.synchronize()` closing every timed call (CUDA
is asynchronous: without it the time would be the launch's, not the work's). Used by
scripts/gpu-check.sh on a lent GPU machine:

  python3 tools/pytorch_cuda_bench.py --reference .gpu/pytorch_reference.py \
      train-step --model resnet18 --image-size 32 --batch-size 64
"""
import argparse
import importlib.util
import json

import torch
import torch.nn.functional as F


def load_reference(path):
    spec = importlib.util.spec_from_file_location("pytorch_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", required=True, help="path to pytorch_reference.py")
    p.add_argument("bench", choices=["train-step", "infer"])
    p.add_argument("--model", default="resnet18", choices=["resnet18", "efficientnet_lite0"])
    p.add_argument("--weights", default="none")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--iters", type=int, default=20)
    a = p.parse_args()
    ref = load_reference(a.reference)
    dev = torch.device("cuda")
    torch.manual_seed(0)
    # The reference's random init: None for resnet18, "none" for efficientnet_lite0.
    weights = None if a.weights == "none" and a.model == "resnet18" else a.weights
    model, _, _ = ref.build_model(a.model, weights, 10)
    model = model.to(dev)
    x = torch.randn(a.batch_size, 3, a.image_size, a.image_size, device=dev)

    def synced(fn):
        def run():
            fn()
            torch.cuda.synchronize()
        return run

    if a.bench == "train-step":
        model.train()
        y = torch.randint(0, 10, (a.batch_size,), device=dev)
        opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)

        def step():
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        t = ref.timed(synced(step), 3, a.iters)
        out = dict(bench="train-step", ms_per_step=round(t * 1e3, 2))
    else:
        model.eval()
        with torch.no_grad():
            t = ref.timed(synced(lambda: ref.features(model, x)), 2, a.iters)
        out = dict(bench="infer", ms_per_batch=round(t * 1e3, 2))
    out.update(model=a.model, image_size=a.image_size, batch_size=a.batch_size,
               images_per_s=round(a.batch_size / t, 1), device="cuda",
               gpu=torch.cuda.get_device_name(0), torch=torch.__version__)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
