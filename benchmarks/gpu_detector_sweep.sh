#!/usr/bin/env bash
# One call on a borrowed CUDA machine: cross-validate several detector settings side by side with
# benchmarks/crop_detector.py (grouped 5-fold on the JSRT development set), one process per setting and fold,
# then score each setting's folds together. With PIPELINE=RECIPE it also cross-validates that recipe through
# the whole of `fit` (benchmarks/cv_recipe.py), one process per fold.
# The machine has no ../shared: the JSRT folder and the ImageNet EfficientNet-Lite0 weights (as a fp16
# safetensors file, to fit the transfer limit) travel in .devdata/ (ignored by git):
#
#   .devdata/jsrt/{images,lung_masks,labels.csv}   a copy of ../shared/data/jsrt
#   .devdata/lite0_fp16.safetensors                 create_backbone("efficientnet_lite0") weights, fp16
#
# made here, in the repository root, with:
#
#   mkdir -p .devdata && echo /.devdata/ >> .git/info/exclude && cp -r ../shared/data/jsrt .devdata/
#   python -c 'from safetensors.torch import save_file; from xvision.backbones import create_backbone
#   m = create_backbone("efficientnet_lite0").model
#   save_file({k.removeprefix("body.model."): v.half().contiguous() for k, v in m.state_dict().items()},
#             ".devdata/lite0_fp16.safetensors")'
#
# and carried with the device tool's `carry: [".devdata"]` (about 61 MB with the repository).
#
#   OUT=/tmp/sweep bash benchmarks/gpu_detector_sweep.sh                      # the settings below
#   bash benchmarks/gpu_detector_sweep.sh "rounds4:--set rounds=4" "seed2:--set seed=2"   # NAME:ARGUMENTS each
#   PIPELINE=best bash benchmarks/gpu_detector_sweep.sh "pair:--set members=2"
#
# Each setting's summary line ("folds=...") and the pipeline's ("recipe=...") are printed at the end; the
# logs, summaries and out-of-fold predictions are packed into $OUT/sweep.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
OUT=${OUT:-/tmp/sweep}
FOLDS=${FOLDS:-5}
WEIGHTS=.devdata/lite0_fp16.safetensors
# A fresh working folder per call: a setting name reused with other arguments on a warm machine would find
# the earlier fold runs, which the detector refuses to resume under another configuration.
WORK=$(mktemp -d /tmp/sweep-XXXXXX)
mkdir -p "$OUT" "$WORK/logs"
{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.is_available())"
  nproc
} >"$OUT/machine.log" 2>&1
python3 benchmarks/jsrt_manifest.py --jsrt .devdata/jsrt -o "$WORK/jsrt.csv" >>"$OUT/machine.log" 2>&1 || exit 1

detector() {  # time limit, name, fold ("" = score all folds), then crop_detector.py arguments
  local limit=$1 name=$2 fold=$3
  shift 3
  timeout "$limit" python3 benchmarks/crop_detector.py "$WORK/jsrt.csv" -o "$WORK/$name" --folds "$FOLDS" \
    ${fold:+--only-fold "$fold"} --weights "$WEIGHTS" --threads 1 "$@" >"$WORK/logs/$name${fold:+-fold$fold}.log" 2>&1
}
pipeline() {  # time limit, fold ("" = pool all folds)
  timeout "$1" python3 benchmarks/cv_recipe.py "$WORK/jsrt.csv" --recipe "$PIPELINE" --folds "$FOLDS" \
    ${2:+--only-fold "$2"} --weights "$WEIGHTS" -o "$WORK/cv-$PIPELINE" >"$WORK/logs/cv-$PIPELINE${2:+-fold$2}.log" 2>&1
}
if [ $# -eq 0 ]; then
  set -- base: "seed1:--set seed=1" "rounds16:--set rounds=16" "batch24:--set batch_size=24" \
    "lr1e-3:--set lr=0.001" "frozen2:--set frozen_stages=2"
fi
for setting in "$@"; do
  for fold in $(seq "$FOLDS"); do
    # shellcheck disable=SC2086  # the arguments after NAME: are meant to split
    detector "${LIMIT:-420}" "${setting%%:*}" "$fold" ${setting#*:} &
  done
done
if [ -n "${PIPELINE:-}" ]; then
  for fold in $(seq "$FOLDS"); do pipeline "${LIMIT:-420}" "$fold" & done
fi
wait
# Score each setting's folds together: finished fold runs are reused; an unfinished one is left to the limit.
for setting in "$@"; do
  # shellcheck disable=SC2086
  detector "${SCORE_LIMIT:-120}" "${setting%%:*}" "" ${setting#*:} &
done
[ -n "${PIPELINE:-}" ] && pipeline "${SCORE_LIMIT:-120}" "" &
wait
for log in "$WORK"/logs/*.log; do
  case $log in *-fold*) ;; *) grep -h "^folds=\|^recipe=" "$log" ;; esac  # the fold processes' lines are partial
done
# logs, summaries and pooled predictions, whichever exist (a setting cut off by its limit has no summary)
(cd "$WORK" && shopt -s nullglob && tar czf "$OUT/sweep.tgz" logs ./*/summary.json ./cv-*/folds/*/run/predictions.csv ./cv-*/oof_predictions.csv ./cv-*/metrics.json)
