#!/usr/bin/env bash
# The GPU check, run on a lent GPU machine (PyTorch with CUDA, no Rust, no internet) from the
# repository's root, after scripts/prepare-gpu-check.sh made .gpu/ here and it was carried over
# (with .cache/assets/efficientnet-lite0-57934424.pth). Sized for a 15-minute lease including
# the machine's start: about 3 minutes on an H200, each step under its own time limit. Prints everything
# and writes it to $OUT (or ./gpu-results):
#   1. parity on the GPU: tests/parity.rs and tests/text_parity.rs with GRAFT_TEST_DEVICE=vulkan
#      (every forward/training-step/loss/optimizer golden, the real EfficientNet-Lite0 weights);
#   2. a one-epoch fine-tune of EfficientNet-Lite0 on 3,000 Fashion-MNIST images on the GPU,
#      evaluated on the GPU and on the CPU, then resumed on the CPU for a second epoch (what
#      tests/gpu.rs checks on lavapipe in CI);
#   3. `graft bench` train-step / infer rows on the GPU next to PyTorch on CUDA
#      (tools/pytorch_cuda_bench.py), with the GPU's utilisation over them;
#   4. where a GPU training step's time goes: cubecl's kernel profile, summed per kernel kind.
# STEPS="1 4" runs only those steps (default: all). A test binary missing from the bundle is
# skipped (the bundle may hold only some, to stay under the carry limit).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-check.log") 2>&1
step() { echo; echo "== $* ($(date +%T))"; }

step "setup"
for f in .gpu/debs/*.deb; do dpkg -x "$f" /; done
ldconfig
# NVIDIA's Vulkan driver is a glvnd library: it needs the loader and glvnd's dispatch libraries
# (the debs), and its manifest may sit outside the loader's search path.
for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json \
           /etc/vulkan/icd.d/nvidia_icd.json; do
  [ -f "$icd" ] && export VK_DRIVER_FILES=$icd && break
done
for egl in /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json; do
  [ -f "$egl" ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$egl
done
echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-none}"
mkdir -p /tmp/gpu && for b in .gpu/bundle*.tar.xz; do tar -C /tmp/gpu -xJf "$b"; done
B=/tmp/gpu/bin
# The test binaries find goldens and graft under the checkout they were built in.
checkout=$(cat $B/checkout)
if [ "$checkout" != "$PWD" ]; then
  mkdir -p "$(dirname "$checkout")" && ln -sfn "$PWD" "$checkout"
fi
mkdir -p target/release && cp $B/graft target/release/graft
G=target/release/graft
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
lscpu | grep -E "Model name|^CPU\(s\)"
export GRAFT_TEST_DEVICE=vulkan GRAFT_REQUIRE_GPU=1 RUST_BACKTRACE=1
# No Vulkan device: say what the machine has and stop (the rest would only repeat the error).
if ! timeout 60 $G bench infer --model resnet18 --image-size 32 --batch-size 2 --iters 1 --device vulkan; then
  find / -xdev -name 'nvidia_icd*.json' 2>/dev/null | head -n 5
  ls /usr/local/nvidia/lib64 2>/dev/null | grep -iE "vulkan|GLX_nvidia|glvk" | head -n 5
  exit 1
fi

want() { [[ " ${STEPS:-1 2 3 4} " == *" $1 "* ]]; }

if want 1; then
step "1. parity on the GPU"
[ -x $B/parity ] && timeout 120 $B/parity --test-threads 2 2>&1 | grep -E "rel|test |error|panicked|result" | tail -n 40
[ -x $B/text_parity ] && timeout 60 $B/text_parity --test-threads 2 2>&1 | grep -E "test |error|panicked|result" | tail -n 20
fi

if want 2; then
step "2. one-epoch fine-tune on the GPU (3,000 Fashion-MNIST images, 64 px), eval and resume on the CPU"
time timeout 100 $G fit --model efficientnet_lite0 \
  --weights .cache/assets/efficientnet-lite0-57934424.pth --data idx:.gpu/fashion-mnist \
  --strategy fine-tune --epochs 1 --image-size 64 --limit-train 3000 --device vulkan \
  --out /tmp/ft --json
for d in vulkan cpu; do
  echo "eval on $d: $(timeout 45 $G eval --run /tmp/ft --device $d --json | python3 -c \
    'import json,sys; e=json.load(sys.stdin); print("accuracy", e["accuracy"], "mean_loss", e["mean_loss"])')"
done
time timeout 60 $G fit --resume /tmp/ft --epochs 2 --device cpu --json
fi

if want 3; then
step "3. speed: graft on the GPU next to PyTorch on CUDA, case by case"
nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 200 > "$OUT/util.txt" &
smi=$!
for c in "train-step --model resnet18 --image-size 32 --batch-size 64" \
         "infer --model efficientnet_lite0 --image-size 224 --batch-size 16" \
         "train-step --model resnet18 --image-size 224 --batch-size 64" \
         "infer --model efficientnet_lite0 --image-size 224 --batch-size 128"; do
  # shellcheck disable=SC2086
  timeout 50 $G bench $c --weights none --iters 10 --device vulkan
  # shellcheck disable=SC2086
  timeout 30 python3 tools/pytorch_cuda_bench.py --reference .gpu/pytorch_reference.py $c
done
kill $smi
echo "GPU utilisation over the benches (%, 200 ms samples, nonzero ones): $(awk '$1>0{n++;s+=$1}END{if(n)printf "mean %.0f over %d samples", s/n, n}' "$OUT/util.txt")"
fi

if want 4; then
step "4. where the time goes: kernel profile of resnet18 train steps (224 px, batch 64)"
CUBECL_DEBUG_LOG=/tmp/cubecl.log CUBECL_DEBUG_OPTION=profile timeout 90 $G bench train-step \
  --model resnet18 --image-size 224 --batch-size 64 --weights none --iters 2 --device vulkan
python3 tools/kernel_profile.py /tmp/cubecl.log --top 15 | tee "$OUT/kernel-profile.txt"
fi
step "done"
