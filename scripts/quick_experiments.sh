#!/usr/bin/env bash
# Run every *_quick experiment (CPU, embedded data) of each app's experiment group and report each sweep:
# experiment/ (ncdepth-train), kernels_experiment/ (ncdepth-kernels), ufm_experiment/ (ncdepth-ufm).
#   scripts/quick_experiments.sh [OUT_DIR]          # default OUT_DIR: multirun/quick
# One sweep directory per experiment under OUT_DIR (kernels_ and ufm_ prefixed for those apps), each
# with its report/ (tables, figures).
# A failing sweep is reported and the script goes on; it exits 1 if any sweep or report failed.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${1:-multirun/quick}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
[[ -x $BIN/ncdepth-train ]] || make install

failed=()
run() {  # run APP GROUP EXPERIMENT [OVERRIDE...]: the sweep, then its report
  local app=$1 group=$2 experiment=$3
  shift 3
  local name=${group%experiment}$experiment  # experiment/x: x; kernels_experiment/x: kernels_x
  local dir=$OUT/$name
  echo "== $app +$group=$experiment -> $dir"
  if "$BIN/$app" "+$group=$experiment" "hydra.sweep.dir=$dir" "$@" -m > "$dir.log" 2>&1; then
    "$BIN/ncdepth-report" "$dir" > "$dir.report.log" 2>&1 || failed+=("report of $name (see $dir.report.log)")
  else
    failed+=("$name (see $dir.log)")
  fi
}
quick() {  # quick APP GROUP [OVERRIDE...]: run every *_quick experiment of the config group GROUP
  local app=$1 group=$2 path
  shift 2
  for path in "src/ncdepth/conf/$group"/*_quick.yaml; do run "$app" "$group" "$(basename "$path" .yaml)" "$@"; done
}
mkdir -p "$OUT"
quick ncdepth-train experiment trainer.enable_progress_bar=false
quick ncdepth-kernels kernels_experiment
quick ncdepth-ufm ufm_experiment

if ((${#failed[@]})); then
  printf 'failed: %s\n' "${failed[@]}"
  exit 1
fi
echo "all quick experiments reported under $OUT"
