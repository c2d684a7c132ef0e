#!/usr/bin/env bash
# How well `graft rank` orders backbones: for Fashion-MNIST (5,000 training images) and UCI's
# digits (the scikit-learn wheel's, as an image folder), five candidates — EfficientNet-Lite0/1/2
# with their ImageNet weights, Lite0 and ResNet-18 with random weights — are
#   1. ranked from frozen features by every metric (`graft rank --metric all`), and
#   2. probed (`graft compare --ranking`: an L-BFGS probe per candidate, tested),
# each with its own empty feature cache, so both times include feature extraction; then
# Kendall's tau between each metric and the probes' test accuracy (`graft rank --against`).
# The third case is the intended use: probes on all 60,000 Fashion-MNIST training images, rank on
# a stratified 2,000 of them (RANK_CASES="fashion-mnist digits" skips it: ~10 min on 2 cores).
# Needs scripts/fetch-assets.sh's weights and the PyTorch reference venv (for the digits folder).
# Writes runs/rank-vs-probes/{fashion-mnist,digits}/{rank,probes}/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
A=.cache/assets
graft=./target/release/graft
py=${PYTHON:-/tmp/pytorch-ref/bin/python}
out=runs/rank-vs-probes
models=efficientnet_lite0@$A/efficientnet-lite0-57934424.pth,efficientnet_lite1@$A/efficientnet-lite1-77cc7160.pth,efficientnet_lite2@$A/efficientnet-lite2-9656183e.pth,efficientnet_lite0@none,resnet18@none
[ -d "$out/digits-images" ] || "$py" scripts/make-digits-folder.py "$out/digits-images"
declare -A CASES=(
  [fashion-mnist]="fashion-mnist|--limit-train 5000 --limit-test 2000|"
  [digits]="folder:$out/digits-images||"
  [fashion-mnist-full]="fashion-mnist||--limit-train 2000"
)
for name in ${RANK_CASES:-fashion-mnist digits fashion-mnist-full}; do
  IFS='|' read -r data limits rank_limits <<< "${CASES[$name]}"
  d=$out/$name
  rm -rf "$d"
  mkdir -p "$d"
  # shellcheck disable=SC2086
  /usr/bin/time -f "$name probes: %e s" $graft compare --ranking --data "$data" --image-size 64 $limits \
    --grid "model=$models" --cache-dir "$d/cache-probes" --out "$d/probes" --quiet
  # shellcheck disable=SC2086
  /usr/bin/time -f "$name rank: %e s" $graft rank --data "$data" --image-size 64 $limits $rank_limits --metric all \
    --models "$models" --cache-dir "$d/cache-rank" --out "$d/rank" --against "$d/probes" --quiet
done
