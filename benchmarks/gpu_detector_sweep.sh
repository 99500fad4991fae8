#!/usr/bin/env bash
# One call on a borrowed CUDA machine: cross-validate several detector settings side by side with
# benchmarks/crop_detector.py (grouped 5-fold on the JSRT development set), one process per setting.
# The machine has no ../shared: the JSRT folder and the ImageNet EfficientNet-Lite0 weights (as a fp16
# safetensors file, to fit the transfer limit) travel in .devdata/ (ignored by git):
#
#   .devdata/jsrt/{images,lung_masks,labels.csv}   a copy of ../shared/data/jsrt
#   .devdata/lite0_fp16.safetensors                 create_backbone("efficientnet_lite0") weights, fp16
#
#   OUT=/tmp/sweep bash benchmarks/gpu_detector_sweep.sh                      # the settings below
#   bash benchmarks/gpu_detector_sweep.sh "rounds4:--set rounds=4" "seed2:--set seed=2"   # NAME:ARGUMENTS each
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sweep}
mkdir -p "$OUT"
{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.is_available())"
  nproc
} >"$OUT/machine.log" 2>&1
python3 benchmarks/jsrt_manifest.py --jsrt .devdata/jsrt -o /tmp/jsrt.csv >>"$OUT/machine.log" 2>&1 || exit 1

run() {  # name, then crop_detector.py arguments
  local name=$1
  shift
  timeout "${LIMIT:-480}" python3 benchmarks/crop_detector.py /tmp/jsrt.csv -o "/tmp/sweep-$name" --folds 5 \
    --weights .devdata/lite0_fp16.safetensors --threads 2 "$@" >"$OUT/$name.log" 2>&1
}
if [ $# -eq 0 ]; then
  set -- base: "seed1:--set seed=1" "rounds16:--set rounds=16" "batch24:--set batch_size=24" \
    "lr1e-3:--set lr=0.001" "frozen2:--set frozen_stages=2"
fi
for setting in "$@"; do
  # shellcheck disable=SC2086  # the arguments after NAME: are meant to split
  run "${setting%%:*}" ${setting#*:} &
done
wait
grep -h "^folds=" "$OUT"/*.log
