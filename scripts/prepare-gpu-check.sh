#!/usr/bin/env bash
# Prepares what scripts/gpu-check.sh runs on a lent GPU machine, which has PyTorch with CUDA but
# no Rust toolchain and no internet: everything is built and fetched here, into .gpu/ (ignored by
# git; carry it with the run, with .cache/assets/efficientnet-lite0-57934424.pth for the
# real-weights parity test):
#   .gpu/bundle-images.tar.xz  graft (release, --features vulkan) and tests/parity.rs, stripped
#   .gpu/bundle-text.tar.xz    graft and tests/text_parity.rs
#     A lease carries one of the two (with the weights, both would pass the 64 MiB a run carries):
#     carry .gpu/bundle-images.tar.xz .gpu/debs .gpu/fashion-mnist .gpu/pytorch_reference.py and
#     .cache/assets/efficientnet-lite0-57934424.pth for steps 1-4, .gpu/bundle-text.tar.xz and
#     .gpu/debs for step 1 on the text encoder (STEPS=1).
#   .gpu/debs/           the Vulkan loader and glvnd (Debian packages; the NVIDIA driver is there)
#   .gpu/fashion-mnist/  the first 3,000 training and 1,000 test images of Fashion-MNIST
#   .gpu/pytorch_reference.py  ../shared/bench's reference (its models, for the CUDA timings)
# Needs: cargo, apt-get, python3, Debian's dataset-fashion-mnist, scripts/fetch-assets.sh run.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/debs .gpu/bin .gpu/fashion-mnist

# The binaries. The test binaries read their goldens from this checkout's path (compiled in):
# gpu-check.sh links that path to the copy on the GPU machine.
cargo build --release --features vulkan
tests=$(cargo test --release --features vulkan --no-run --message-format=json \
  --test parity --test text_parity 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])')
cp target/release/graft .gpu/bin/graft
while read -r name exe; do cp "$exe" ".gpu/bin/$name"; done <<< "$tests"
strip .gpu/bin/*
pwd > .gpu/bin/checkout
for part in "images parity" "text text_parity"; do
  set -- $part
  tar -C .gpu -cf - bin/graft bin/checkout "bin/$2" | xz -T0 -6 > ".gpu/bundle-$1.tar.xz"
done
rm -rf .gpu/bin

# The Vulkan loader and glvnd's libraries NVIDIA's Vulkan driver links against, as Debian
# packages (unpacked there with dpkg -x; without them no Vulkan adapter is found).
(cd .gpu/debs && apt-get download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 \
  libgles2 >/dev/null 2>&1)

# A Fashion-MNIST subset in the same IDX format.
python3 - <<'EOF'
import gzip, struct
src, dst = "/usr/share/datasets/fashion-mnist", ".gpu/fashion-mnist"
for split, n in [("train", 3000), ("t10k", 1000)]:
    for kind, item in [("images-idx3-ubyte", 784), ("labels-idx1-ubyte", 1)]:
        data = gzip.open(f"{src}/{split}-{kind}.gz").read()
        ndim = data[3]
        dims = list(struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim]))
        dims[0] = n
        head = data[:4] + struct.pack(">" + "I" * ndim, *dims)
        body = data[4 + 4 * ndim:4 + 4 * ndim + n * item]
        with gzip.open(f"{dst}/{split}-{kind}.gz", "wb") as f:
            f.write(head + body)
EOF
cp ../shared/bench/pytorch_reference.py .gpu/
du -sh .gpu .cache/assets/efficientnet-lite0-57934424.pth
