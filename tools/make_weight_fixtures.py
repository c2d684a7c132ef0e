#!/usr/bin/env python3
"""Writes the small weight-file fixtures that `tests/weights.rs` reads.

Run from the repository root with a Python that has PyTorch (no other packages needed):

    /tmp/pytorch-ref/bin/python tools/make_weight_fixtures.py

Output goes to tests/fixtures/weights/ (every file well under 20 KB). The script is
deterministic: running it again with the same torch version rewrites identical bytes.

What it writes, all from ONE small state dict (see `state_dict()`):

  weights_zip.pth       torch.save default (zip) format
  weights_legacy.pth    torch.save(..., _use_new_zipfile_serialization=False)
  weights.safetensors   written by hand below (struct + json), so no extra package is needed
  expected.json         every tensor's name, dtype, shape and row-major values (as floats),
                        plus the expected param_count and what the wrapped files contain
  module_prefixed.pth   {"epoch": 3, "state_dict": {"module.<name>": ...}} (zip): the
                        checkpoint wrapper and the DataParallel prefix
  wrapped_legacy.pth    {"model": {...}, "optimizer": {...tensors...}, "epoch": 2} (legacy):
                        storages outside the state dict must be skipped, not misread
  evil.pth              zip whose data.pkl calls `os.system` through GLOBAL + REDUCE
  evil_legacy.pth       the same in the legacy layout
  evil_eval.pth         zip, pickle protocol 4, calling `builtins.eval` through STACK_GLOBAL

The evil payloads only ever run `echo pwned > /tmp/graft-pwned`, and this script never
unpickles them (it only checks their bytes), so generating them is harmless.
"""

import io
import json
import pickle
import pickletools
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "weights"
PAYLOAD = "echo pwned > /tmp/graft-pwned"

# f16 bit patterns worth checking by hand: zeros, ±1/±2, the largest normal, the smallest
# normal, the smallest and largest subnormals, and a few arbitrary values.
HALF_BITS = [0x0000, 0x8000, 0x3C00, 0xC000, 0x7BFF, 0xFBFF, 0x0400, 0x0001, 0x03FF, 0x3555, 0x1234, 0xB0A1]

DTYPE_NAMES = {
    torch.float32: ("f32", "F32"),
    torch.float64: ("f64", "F64"),
    torch.float16: ("f16", "F16"),
    torch.bfloat16: ("bf16", "BF16"),
    torch.int64: ("i64", "I64"),
    torch.int8: ("i8", "I8"),
    torch.bool: ("bool", "BOOL"),
}


def state_dict():
    """The shared state dict: one of each case the readers must get right."""
    g = torch.Generator().manual_seed(1234)
    sd = OrderedDict()
    sd["conv.weight"] = torch.randn(2, 3, 3, 3, generator=g)
    # A Parameter pickles through torch._utils._rebuild_parameter.
    sd["conv.bias"] = torch.nn.Parameter(torch.tensor([0.5, -1.25]))
    m = torch.randn(3, 4, generator=g)
    sd["fc.weight"] = m
    # Non-contiguous: the transpose shares fc.weight's storage with strides (1, 4).
    sd["fc.weight_t"] = m.t()
    # Two views into one 12-element storage that is not saved as a tensor of its own:
    # an offset slice (offset 3) and an offset, strided 2-D view (offset 4, strides (4, 2)).
    shared = torch.arange(12, dtype=torch.float32) / 8 - 0.5
    sd["shared.slice"] = shared[3:7]
    sd["shared.strided"] = shared.view(3, 4)[1:, ::2]
    sd["bn.running_var"] = torch.tensor([1.0, 0.5])
    sd["bn.num_batches_tracked"] = torch.tensor(7)  # int64 scalar, shape []
    signed = [b - 0x10000 if b >= 0x8000 else b for b in HALF_BITS]
    sd["half"] = torch.tensor(signed, dtype=torch.int16).view(torch.float16).reshape(3, 4)
    sd["bfloat"] = torch.tensor([1.0, -3.0, 0.1, 1e-30, 3.0e38, -0.0]).to(torch.bfloat16)
    sd["double"] = torch.tensor([1 / 3, -2.5e-8, 1e30], dtype=torch.float64)
    sd["mask"] = torch.tensor([True, False, True])
    sd["int8"] = torch.tensor([-128, -1, 0, 127], dtype=torch.int8)
    # What nn.Module.state_dict() attaches; pickled via BUILD on the OrderedDict.
    sd._metadata = OrderedDict([("", {"version": 1}), ("bn", {"version": 2})])
    return sd


def param_count(sd):
    """Mirrors TensorMap::param_count: float tensors, minus BatchNorm buffers."""
    skip = ("running_mean", "running_var", "num_batches_tracked")
    return sum(t.numel() for k, t in sd.items() if t.is_floating_point() and not k.endswith(skip))


def raw_bytes(t):
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def write_safetensors(path, tensors):
    """The safetensors layout: u64 LE header length, JSON header (space-padded to 8 bytes),
    then every tensor's bytes, contiguous and little-endian."""
    header, blobs, offset = OrderedDict(), [], 0
    header["__metadata__"] = {"format": "pt"}
    for name, t in tensors.items():
        b = raw_bytes(t)
        header[name] = {
            "dtype": DTYPE_NAMES[t.dtype][1],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(b)],
        }
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def pickle_ends(data, count):
    """Offsets just past each of the first `count` pickles in `data` (not unpickled)."""
    f, ends = io.BytesIO(data), []
    for _ in range(count):
        for _op, _arg, _pos in pickletools.genops(f):
            pass
        ends.append(f.tell())
    return ends


def save_legacy(obj, path, tensors):
    """torch.save in the legacy format, with storage keys made deterministic.

    torch names legacy storages by memory address (str(storage._cdata)) and writes them in
    sorted-address order, which changes from run to run. Rewrite the keys as "0", "1", ... in
    order of first use and lay the storages out in that order.
    """
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    ends = pickle_ends(data, 5)
    keys = pickle.loads(data[ends[3] : ends[4]])  # a plain list of str
    elem_size = {str(t.untyped_storage()._cdata): t.element_size() for t in tensors}
    storages, pos = {}, ends[4]
    for k in keys:
        (count,) = struct.unpack_from("<Q", data, pos)
        n = 8 + count * elem_size[k]
        storages[k] = data[pos : pos + n]
        pos += n
    assert pos == len(data), "unexpected bytes after the storages"

    def literal(k):  # BINUNICODE, how protocol 2 writes a str
        return b"X" + struct.pack("<I", len(k)) + k.encode()

    main = data[ends[2] : ends[3]]
    order = sorted(keys, key=lambda k: main.index(literal(k)))
    for i, k in enumerate(order):
        assert main.count(literal(k)) >= 1, k
        main = main.replace(literal(k), literal(str(i)))
    new_keys = pickle.dumps([str(i) for i in range(len(order))], protocol=2)
    out = data[: ends[2]] + main + new_keys + b"".join(storages[k] for k in order)
    path.write_bytes(out)
    return out


def write_zip(path, entries):
    """A zip with fixed timestamps, stored (torch never compresses)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries:
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)


def _graft_placeholder(cmd):
    raise RuntimeError("never called: its GLOBAL is rewritten to os.system")


class EvilSystem:
    """Pickles as _graft_placeholder(PAYLOAD); the GLOBAL is then rewritten to `os system`."""

    def __reduce__(self):
        return (_graft_placeholder, (PAYLOAD,))


class EvilEval:
    """Pickles as builtins.eval(...) — with protocol 4 that is STACK_GLOBAL."""

    def __reduce__(self):
        return (eval, (f"__import__('os').system({PAYLOAD!r})",))


PLACEHOLDER_GLOBAL = f"c{_graft_placeholder.__module__}\n_graft_placeholder\n".encode()
OS_SYSTEM_GLOBAL = b"cos\nsystem\n"


def rewrite_zip_pickle(path, fn):
    with zipfile.ZipFile(path) as z:
        entries = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    entries = [(n, fn(d) if n.endswith("/data.pkl") else d) for n, d in entries]
    write_zip(path, entries)


def to_os_system(pkl):
    assert pkl.count(PLACEHOLDER_GLOBAL) == 1
    return pkl.replace(PLACEHOLDER_GLOBAL, OS_SYSTEM_GLOBAL)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    sd = state_dict()
    tensors = list(sd.values())

    torch.save(sd, OUT / "weights_zip.pth")
    save_legacy(sd, OUT / "weights_legacy.pth", tensors)
    write_safetensors(OUT / "weights.safetensors", sd)

    prefixed = OrderedDict(("module." + k, v) for k, v in sd.items())
    torch.save({"epoch": 3, "state_dict": prefixed, "note": "DataParallel"}, OUT / "module_prefixed.pth")

    model = OrderedDict((k, sd[k]) for k in ["conv.weight", "fc.weight_t", "half"])
    momentum = torch.full((2,), 0.25)
    wrapped = {
        "model": model,
        "optimizer": {"state": {0: {"momentum_buffer": momentum}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "epoch": 2,
    }
    save_legacy(wrapped, OUT / "wrapped_legacy.pth", list(model.values()) + [momentum])

    weight = torch.ones(2, 2)
    torch.save(OrderedDict(weight=weight, payload=EvilSystem()), OUT / "evil.pth")
    rewrite_zip_pickle(OUT / "evil.pth", to_os_system)
    legacy = save_legacy(OrderedDict(weight=weight, payload=EvilSystem()), OUT / "evil_legacy.pth", [weight])
    (OUT / "evil_legacy.pth").write_bytes(to_os_system(legacy))
    torch.save(OrderedDict(weight=weight, payload=EvilEval()), OUT / "evil_eval.pth", pickle_protocol=4)
    rewrite_zip_pickle(OUT / "evil_eval.pth", lambda d: d)  # fixed timestamps, same layout

    # Check the evil files say what the tests expect, without ever unpickling them.
    with zipfile.ZipFile(OUT / "evil.pth") as z:
        assert OS_SYSTEM_GLOBAL in z.read("evil/data.pkl")
    assert OS_SYSTEM_GLOBAL in (OUT / "evil_legacy.pth").read_bytes()
    with zipfile.ZipFile(OUT / "evil_eval.pth") as z:
        ops = [op.name for op, _, _ in pickletools.genops(z.read("evil_eval/data.pkl"))]
        assert "STACK_GLOBAL" in ops and "GLOBAL" not in ops, ops

    # The good files must round-trip through torch's own (weights-only) loader.
    for name in ["weights_zip.pth", "weights_legacy.pth"]:
        back = torch.load(OUT / name, weights_only=True)
        assert list(back) == list(sd), name
        for k, v in sd.items():
            assert back[k].dtype == v.dtype and torch.equal(back[k], v.detach()), (name, k)
    back = torch.load(OUT / "wrapped_legacy.pth", weights_only=True)
    assert torch.equal(back["optimizer"]["state"][0]["momentum_buffer"], momentum)
    assert all(torch.equal(back["model"][k], v) for k, v in model.items())
    back = torch.load(OUT / "module_prefixed.pth", weights_only=True)
    assert all(torch.equal(back["state_dict"][k], v.detach()) for k, v in prefixed.items())

    expected = {
        "param_count": param_count(sd),
        "tensors": [
            {
                "name": k,
                "dtype": DTYPE_NAMES[v.dtype][0],
                "shape": list(v.shape),
                "values": [float(x) for x in v.detach().to(torch.float64).reshape(-1).tolist()],
            }
            for k, v in sd.items()
        ],
        "module_prefixed": {"prefix": "module.", "names": list(sd)},
        "wrapped_legacy": list(model),
    }
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")

    for p in sorted(OUT.iterdir()):
        size = p.stat().st_size
        assert size < 20_000, (p, size)
        print(f"{size:7d}  {p.relative_to(OUT.parent.parent.parent)}")


if __name__ == "__main__":
    main()
