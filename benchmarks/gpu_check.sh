#!/usr/bin/env bash
# One short call on a borrowed CUDA machine: the gpu-marked tests, then the extraction benchmark on the GPU
# (VGG16 and EfficientNet-Lite0, random weights offline: the speed is the same). Prints the figures to record
# in the README's Performance section. About 3-5 minutes on one H100 with 16 CPU cores.
#
#   bash benchmarks/gpu_check.sh            # N=1024 synthetic 1024 px PNGs
#   N=4096 bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
N=${N:-1024}
IMAGES=${IMAGES:-/tmp/xvision-gpu-synth}

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
nproc

echo "== synthetic images ($N at 1024 px)"
"$PY" benchmarks/synthetic.py "$N" "$IMAGES" --jobs "$(nproc)" 2>&1 | tail -1

echo "== gpu-marked tests"
"$PY" -m pytest -q -p no:cacheprovider -m gpu tests/backbones/test_runtime.py tests/features/test_fast_path.py \
  || echo "GPU TESTS FAILED"

echo "== VGG16 pool5, CUDA default path vs naive CPU path"
"$PY" benchmarks/extract.py --images "$IMAGES" --limit "$N" --naive-limit 32 --device cuda
echo "== VGG16 pool5, CUDA, fp16 store"
"$PY" benchmarks/extract.py --images "$IMAGES" --limit "$N" --naive-limit 8 --device cuda --dtype float16 | tail -1
echo "== EfficientNet-Lite0, CUDA"
"$PY" benchmarks/extract.py --images "$IMAGES" --limit "$N" --naive-limit 32 --device cuda --backbone efficientnet_lite0
