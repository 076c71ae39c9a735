#!/usr/bin/env bash
# The reproduction gallery: run every repro_* sweep (CPU, embedded data) and write docs/reproductions.md
# with its figures (docs/reproductions/) from their reports.
#   scripts/reproduce.sh [OUT_DIR [OVERRIDE ...]]     # default OUT_DIR: multirun/repro
#   scripts/reproduce.sh multirun/repro hydra/launcher=cpu_pool   # every sweep two jobs at a time on 2 cores
# Each OVERRIDE is passed to every sweep, before -m (e.g. a launcher: hydra/launcher=cpu_pool).
# Each sweep goes to OUT_DIR/<name> (ncdepth.report.reproductions.sweeps.sweep_name). Rerunning resumes: finished jobs say "nothing to do", interrupted
# ones continue from their checkpoints, so the script can be stopped and started again at will.
# Sweeps run one job at a time on one thread each (OMP_NUM_THREADS=1 unless set); about 3 hours in all
# on a 2-core machine. A sweep with failed jobs is reported, the page is still written, and the script
# exits 1.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${NCDEPTH_BIN:-.venv/bin}
OUT=${1:-multirun/repro}
OVERRIDES=("${@:2}")
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
[[ -x $BIN/ncdepth-train ]] || make install

failed=()
sweep() {  # sweep APP GROUP EXPERIMENT: the sweep into OUT/<name>, then its report
  local app=$1 group=$2 experiment=$3
  local name dir
  name=$("$BIN/python" -m ncdepth.report.reproductions.sweeps "$group" "$experiment") || exit 1
  dir=$OUT/$name
  echo "== $(date +%T) $app +$group=$experiment -> $dir"
  "$BIN/$app" "+$group=$experiment" "hydra.sweep.dir=$dir" "${OVERRIDES[@]}" -m > "$dir.log" 2>&1 || failed+=("$name (see $dir.log)")
  "$BIN/ncdepth-report" "$dir" > "$dir.report.log" 2>&1 || failed+=("report of $name (see $dir.report.log)")
}
mkdir -p "$OUT"
sweep ncdepth-train experiment repro_label_noise
sweep ncdepth-train experiment repro_depth
sweep ncdepth-train experiment repro_terminal_phase
sweep ncdepth-train experiment repro_bound
sweep ncdepth-train experiment repro_deep_linear
sweep ncdepth-train experiment repro_deep_linear_imbalanced
sweep ncdepth-kernels kernels_experiment repro_balanced
sweep ncdepth-kernels kernels_experiment repro_imbalanced
sweep ncdepth-ufm ufm_experiment balanced_quick
sweep ncdepth-ufm ufm_experiment imbalanced_quick
sweep ncdepth-lm lm_experiment repro

"$BIN/python" scripts/write_reproductions.py "$OUT" || failed+=("scripts/write_reproductions.py")
if ((${#failed[@]})); then
  printf 'failed: %s\n' "${failed[@]}"
  exit 1
fi
