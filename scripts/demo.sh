#!/usr/bin/env bash
# The main job on a fresh machine: fetch the real assets, build graft, and train a linear probe on
# ImageNet-pretrained EfficientNet-Lite0 features of Fashion-MNIST, then print the test accuracy.
#
# Defaults are sized to finish in a few minutes on 2 cores (a stratified 6,000-image train subset
# and 2,000 test images at 64 px). The full-accuracy run is the same command with
#   GRAFT_DEMO_ARGS="--val-split 0" ./scripts/demo.sh   # all 60,000 / 10,000 images
# Any extra arguments are passed to `graft fit`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./scripts/fetch-assets.sh
cargo build --release --quiet
limits=${GRAFT_DEMO_ARGS---limit-train 6000 --limit-test 2000 --val-split 0.1}
# shellcheck disable=SC2086
./target/release/graft fit \
  --model efficientnet_lite0 \
  --weights .cache/assets/efficientnet-lite0-57934424.pth \
  --data fashion-mnist \
  --strategy linear-probe \
  --image-size 64 \
  --batch-size 256 \
  --out runs/demo-linear-probe \
  $limits "$@"
