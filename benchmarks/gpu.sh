#!/usr/bin/env bash
# The GPU checks, one script, under 5 minutes on one H100/H200 (CI never has a GPU):
#   1. the metric bench: python benchmarks/run.py --device cuda --only metrics
#   2. the many-classes bench at C = 50,257, d = 768, N = 200,000 (benchmarks/bench_many_classes.py)
#   3. the analysis / inference ratio (and the other two ratios) of CONV-8-400 on 50,000 CIFAR-shaped
#      random inputs: python benchmarks/run.py --device cuda --only training
# Output goes to stdout, and to $OUT/gpu_bench.txt when OUT is set. Settings (environment):
#   PYTHON           interpreter (default: .venv/bin/python if present, else python3)
#   GPU_SH_DEVICE    cuda (default) or cpu, to check on a machine without a GPU that the script runs
#   GPU_SH_QUICK=1   --quick sizes for steps 1 and 3
#   GPU_SH_CLASSES, GPU_SH_DIM, GPU_SH_SAMPLES   step 2's C, d, N (default 50257, 768, 200000)
#   GPU_SH_DRY_RUN=1 print the commands without running them
# CPU smoke test: GPU_SH_DEVICE=cpu GPU_SH_QUICK=1 GPU_SH_CLASSES=100 GPU_SH_DIM=64 GPU_SH_SAMPLES=2048 bash benchmarks/gpu.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DEVICE="${GPU_SH_DEVICE:-cuda}"
QUICK=()
if [[ "${GPU_SH_QUICK:-0}" == 1 ]]; then QUICK=(--quick); fi
MANY_CLASSES=(--classes "${GPU_SH_CLASSES:-50257}" --dim "${GPU_SH_DIM:-768}"
    --samples "${GPU_SH_SAMPLES:-200000}" --device "$DEVICE")

step() {
    local name="$1"
    shift
    echo "### $name: $*"
    if [[ "${GPU_SH_DRY_RUN:-0}" == 1 ]]; then return; fi
    local start=$SECONDS
    "$@"
    echo "### $name done in $((SECONDS - start)) s"
}

checks() {
    echo "### $(date -u +%FT%TZ) $(hostname), device $DEVICE"
    if [[ "${GPU_SH_DRY_RUN:-0}" != 1 ]]; then
        "$PYTHON" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')"
    fi
    step metrics "$PYTHON" benchmarks/run.py --device "$DEVICE" --only metrics "${QUICK[@]}"
    step many-classes "$PYTHON" benchmarks/bench_many_classes.py "${MANY_CLASSES[@]}"
    step training "$PYTHON" benchmarks/run.py --device "$DEVICE" --only training "${QUICK[@]}"
    echo "### all done in $SECONDS s"
}

if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT"
    checks 2>&1 | tee "$OUT/gpu_bench.txt"
else
    checks
fi
