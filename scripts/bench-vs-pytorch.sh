#!/usr/bin/env bash
# Runs graft's benchmark and the PyTorch reference (../shared/bench/pytorch_reference.py) side by
# side, alternating run by run, and prints a markdown table of medians, ranges and ratios
# (graft / PyTorch; higher is better for images/s, lower for seconds).
#
#   ./scripts/bench-vs-pytorch.sh [ROUNDS]        # default 3 rounds per case
# Needs: ../shared/bench/setup-pytorch.sh (PyTorch venv at $PYTORCH_VENV, default /tmp/pytorch-ref;
# the text cases also `pip install transformers` into it) and scripts/fetch-assets.sh
# (EfficientNet-Lite0 weights, Fashion-MNIST, all-MiniLM-L6-v2).
# Set GRAFT_BENCH_CASES to a subset of the case names below to run fewer.
# BENCH_AGAINST=burn-kernels compares graft with its own kernels against the same binary on burn's
# stock ops (GRAFT_KERNELS=burn) instead of PyTorch.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
rounds=${1:-3}
venv=${PYTORCH_VENV:-/tmp/pytorch-ref}
ref="$root/../shared/bench/pytorch_reference.py"
[ -x "$venv/bin/python" ] || "$root/../shared/bench/setup-pytorch.sh" "$venv" >&2
./scripts/fetch-assets.sh
cargo build --release --quiet
effw=.cache/assets/efficientnet-lite0-57934424.pth
minilm=.cache/assets/all-MiniLM-L6-v2
declare -A CASES=(
  [train-step-resnet18-32-bs64]="train-step --model resnet18 --image-size 32 --batch-size 64 --iters 10"
  [infer-resnet18-32-bs64]="infer --model resnet18 --image-size 32 --batch-size 64 --iters 10"
  [infer-resnet18-224-bs16]="infer --model resnet18 --image-size 224 --batch-size 16 --iters 5"
  [infer-effnet-224-bs16]="infer --model efficientnet_lite0 --image-size 224 --batch-size 16 --iters 5 --weights $effw"
  [linear-probe-effnet-fmnist]="linear-probe --model efficientnet_lite0 --image-size 64 --epochs 10 --weights $effw --limit-train 6000 --limit-test 2000"
  [fine-tune-effnet-fmnist]="fine-tune --model efficientnet_lite0 --image-size 64 --epochs 1 --weights $effw --limit-train 3000 --limit-test 1000"
  [text-infer-minilm-bs32-len128]="text-infer --weights $minilm --batch-size 32 --seq-len 128 --iters 5"
  [text-step-minilm-bs32-len128]="text-step --weights $minilm --batch-size 32 --seq-len 128 --iters 3"
)
order=(train-step-resnet18-32-bs64 infer-resnet18-32-bs64 infer-resnet18-224-bs16 infer-effnet-224-bs16 linear-probe-effnet-fmnist fine-tune-effnet-fmnist text-infer-minilm-bs32-len128 text-step-minilm-bs32-len128)
[ -n "${GRAFT_BENCH_CASES:-}" ] && read -r -a order <<<"$GRAFT_BENCH_CASES"
out=$(mktemp -d)
for name in "${order[@]}"; do
  args=${CASES[$name]}
  for r in $(seq "$rounds"); do
    echo "[$name] round $r" >&2
    # shellcheck disable=SC2086
    ./target/release/graft bench $args >>"$out/$name.graft"
    # shellcheck disable=SC2086
    if [ "${BENCH_AGAINST:-pytorch}" = burn-kernels ]; then
      GRAFT_KERNELS=burn ./target/release/graft bench $args >>"$out/$name.torch"
    elif [[ $name == text-* ]]; then
      # The text cases' reference (transformers' BertModel): tools/text_reference.py.
      "$venv/bin/python" tools/text_reference.py $args >>"$out/$name.torch"
    else
      "$venv/bin/python" "$ref" $args >>"$out/$name.torch"
    fi
  done
done
python3 - "$out" "${order[@]}" <<'PY'
import json, statistics, sys, os
out, names = sys.argv[1], sys.argv[2:]
def load(p):
    return [json.loads(l) for l in open(p) if l.strip().startswith("{")]
other = "burn stock ops" if os.environ.get("BENCH_AGAINST") == "burn-kernels" else "PyTorch"
print(f"| case | metric | graft median (range) | {other} median (range) | ratio graft/{other} |")
print("|---|---|---|---|---|")
for n in names:
    g, t = load(os.path.join(out, n + ".graft")), load(os.path.join(out, n + ".torch"))
    for metric in ("images_per_s", "texts_per_s", "total_seconds", "test_accuracy"):
        if metric in g[0] and metric in t[0]:
            gv, tv = [r[metric] for r in g], [r[metric] for r in t]
            # (an even number of rounds averages the middle two: round away float noise)
            gm, tm = round(statistics.median(gv), 4), round(statistics.median(tv), 4)
            ratio = gm / tm if metric != "total_seconds" else tm / gm
            label = "speed-up" if metric == "total_seconds" else ""
            print(f"| {n} | {metric} | {gm} ({min(gv)}–{max(gv)}) | {tm} ({min(tv)}–{max(tv)}) | {ratio:.2f}{' '+label if label else ''} |")
PY
