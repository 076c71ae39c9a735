"""``benchmarks/gpu.sh`` starts: its dry run names the three GPU benches and writes ``$OUT/gpu_bench.txt``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.sh"


def test_dry_run_lists_the_three_checks(tmp_path: Path) -> None:
    env = {**os.environ, "GPU_SH_DRY_RUN": "1", "OUT": str(tmp_path), "PYTHON": "python-under-test"}
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if line.startswith("### ") and ": python" in line]
    assert commands == [
        "### metrics: python-under-test benchmarks/run.py --device cuda --only metrics",
        "### many-classes: python-under-test benchmarks/bench_many_classes.py --classes 50257 --dim 768 "
        "--samples 200000 --device cuda",
        "### training: python-under-test benchmarks/run.py --device cuda --only training",
    ]
    assert (tmp_path / "gpu_bench.txt").read_text() == result.stdout
