#!/usr/bin/env bash
# The GPU checks, one script, meant to finish in under 5 minutes on one H100/H200 (CI never has a GPU):
#   1. the metric bench: python3 benchmarks/run.py --device cuda --only metrics
#   2. the many-classes passes at C = 50,257, d = 768, N = 200,000 (benchmarks/bench_many_classes.py: data
#      made on the device before the clock starts, checked against the float64 reference)
#   3. the analysis / inference ratio (and the other two ratios) of CONV-8-400 on 50,000 CIFAR-shaped
#      random inputs: python3 benchmarks/run.py --device cuda --only training
#   4. a short ncdepth-train run on trainer=gpu with a deep linear head (imbalanced digits: the head
#      geometry against closed_form's general orthogonal frame, made on the GPU)
#
# It runs from a plain checkout with the machine's own python3 and PYTHONPATH=src: no virtualenv, and it
# installs nothing. The device image has torch, pytorch-lightning, torchmetrics, pandas, matplotlib and
# scikit-learn, but not hydra-core, omegaconf and antlr4 (pure Python), which step 4 needs: copy them from a
# Python that has them into .gpu_site/ (git-ignored; carry it to the device machine), which the script then
# puts on PYTHONPATH:
#   GPU_SH_PREPARE=1 PYTHON=.venv/bin/python bash benchmarks/gpu.sh
# A step whose imports fail is skipped with the reason, and the others still run.
#
# Output goes to stdout, and to $OUT/gpu_bench.txt when OUT is set. Settings (environment):
#   PYTHON           interpreter (default: python3)
#   GPU_SH_DEVICE    cuda (default) or cpu, to check on a machine without a GPU that the script runs
#   GPU_SH_QUICK=1   --quick sizes for steps 1 and 3
#   GPU_SH_CLASSES, GPU_SH_DIM, GPU_SH_SAMPLES   step 2's C, d, N (default 50257, 768, 200000)
#   GPU_SH_DRY_RUN=1 print the commands without running them
# CPU smoke test: GPU_SH_DEVICE=cpu GPU_SH_QUICK=1 GPU_SH_CLASSES=100 GPU_SH_DIM=64 GPU_SH_SAMPLES=2048 bash benchmarks/gpu.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
SITE=.gpu_site
TRAIN_PACKAGES=(hydra omegaconf antlr4)

if [[ "${GPU_SH_PREPARE:-0}" == 1 ]]; then
    rm -rf "$SITE" && mkdir -p "$SITE"
    for package in "${TRAIN_PACKAGES[@]}"; do
        source_dir=$("$PYTHON" -c "import $package, os; print(os.path.dirname($package.__file__))")
        cp -r "$source_dir" "$SITE/"
    done
    find "$SITE" -name __pycache__ -prune -exec rm -rf {} +
    echo "copied ${TRAIN_PACKAGES[*]} into $SITE ($(du -sh "$SITE" | cut -f1)); carry $SITE to the device machine"
    exit 0
fi

export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
if [[ -d "$SITE" ]]; then export PYTHONPATH="$PYTHONPATH:$SITE"; fi
DEVICE="${GPU_SH_DEVICE:-cuda}"
QUICK=()
if [[ "${GPU_SH_QUICK:-0}" == 1 ]]; then QUICK=(--quick); fi
MANY_CLASSES=(--classes "${GPU_SH_CLASSES:-50257}" --dim "${GPU_SH_DIM:-768}"
    --samples "${GPU_SH_SAMPLES:-200000}" --device "$DEVICE")
if [[ "$DEVICE" == cuda ]]; then TRAINER=gpu; else TRAINER=cpu; fi
TRAIN=(-m ncdepth.cli.train +experiment=deep_linear_imbalanced_quick "trainer=$TRAINER"
    model.depth_linear=2 trainer.max_epochs=3 nc.every_n_epochs=1 trainer.enable_progress_bar=false)

# step NAME MODULES -- COMMAND...: run COMMAND unless one of the comma-separated MODULES cannot be imported
step() {
    local name="$1" modules="$2"
    shift 3
    echo "### $name: $*"
    if [[ "${GPU_SH_DRY_RUN:-0}" == 1 ]]; then return; fi
    local missing
    missing=$("$PYTHON" -c "
import importlib.util
print(' '.join(m for m in '$modules'.split(',') if importlib.util.find_spec(m) is None))")
    if [[ -n "$missing" ]]; then
        echo "### $name skipped: $PYTHON cannot import $missing (see the head of benchmarks/gpu.sh)"
        return
    fi
    local start=$SECONDS
    "$@"
    echo "### $name done in $((SECONDS - start)) s"
}

checks() {
    echo "### $(date -u +%FT%TZ) $(hostname), device $DEVICE, PYTHONPATH=$PYTHONPATH"
    if [[ "${GPU_SH_DRY_RUN:-0}" != 1 ]]; then
        "$PYTHON" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')"
    fi
    step metrics torch,torchmetrics -- "$PYTHON" benchmarks/run.py --device "$DEVICE" --only metrics "${QUICK[@]}"
    step many-classes torch,torchmetrics -- "$PYTHON" benchmarks/bench_many_classes.py "${MANY_CLASSES[@]}"
    step training torch,torchmetrics,pytorch_lightning -- \
        "$PYTHON" benchmarks/run.py --device "$DEVICE" --only training "${QUICK[@]}"
    step train pytorch_lightning,hydra,omegaconf,pandas,matplotlib,sklearn -- "$PYTHON" "${TRAIN[@]}"
    echo "### all done in $SECONDS s"
}

if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT"
    checks 2>&1 | tee "$OUT/gpu_bench.txt"
else
    checks
fi
