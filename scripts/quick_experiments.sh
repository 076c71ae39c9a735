#!/usr/bin/env bash
# Run every *_quick experiment (CPU, embedded data) and report each sweep:
#   scripts/quick_experiments.sh [OUT_DIR]          # default OUT_DIR: multirun/quick
# One sweep directory per experiment under OUT_DIR, each with its report/ (tables, figures).
# A failing sweep is reported and the script goes on; it exits 1 if any sweep or report failed.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${1:-multirun/quick}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
[[ -x $BIN/ncdepth-train ]] || make install

failed=()
run() {  # run APP EXPERIMENT [OVERRIDE...]: the sweep, then its report
  local app=$1 experiment=$2
  shift 2
  local dir=$OUT/$experiment
  echo "== $app +experiment=$experiment -> $dir"
  if "$BIN/$app" "+experiment=$experiment" "hydra.sweep.dir=$dir" "$@" -m > "$dir.log" 2>&1; then
    "$BIN/ncdepth-report" "$dir" > "$dir.report.log" 2>&1 || failed+=("report of $experiment (see $dir.report.log)")
  else
    failed+=("$experiment (see $dir.log)")
  fi
}
mkdir -p "$OUT"
for path in src/ncdepth/conf/experiment/*_quick.yaml; do
  experiment=$(basename "$path" .yaml)
  case $experiment in
    kernels_*|ufm_*) ;;
    *) run ncdepth-train "$experiment" trainer.enable_progress_bar=false ;;
  esac
done
for experiment in kernels_balanced_quick kernels_imbalanced_quick; do run ncdepth-kernels "$experiment"; done
for experiment in ufm_balanced_quick ufm_imbalanced_quick; do run ncdepth-ufm "$experiment"; done

if ((${#failed[@]})); then
  printf 'failed: %s\n' "${failed[@]}"
  exit 1
fi
echo "all quick experiments reported under $OUT"
