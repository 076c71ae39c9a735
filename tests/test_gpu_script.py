"""``benchmarks/gpu.sh`` starts on a fresh device machine: its dry run names the four GPU checks, run with a
plain ``python3`` and ``PYTHONPATH=src`` (no virtualenv), and writes ``$OUT/gpu_bench.txt``; its prepare mode
copies the pure-Python packages the device image lacks into ``.gpu_site``, from which ``ncdepth-train``'s
configuration library imports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.sh"


def test_dry_run_lists_the_four_checks(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHON", "PYTHONPATH")}
    env.update({"GPU_SH_DRY_RUN": "1", "OUT": str(tmp_path)})
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "PYTHONPATH=src" in result.stdout.splitlines()[0]
    commands = [
        line for line in result.stdout.splitlines() if line.startswith("### ") and ": python3 " in line
    ]
    assert commands == [
        "### metrics: python3 benchmarks/run.py --device cuda --only metrics",
        "### many-classes: python3 benchmarks/bench_many_classes.py --classes 50257 --dim 768 "
        "--samples 200000 --device cuda",
        "### training: python3 benchmarks/run.py --device cuda --only training",
        "### train: python3 -m ncdepth.cli.train +experiment=deep_linear_imbalanced_quick trainer=gpu "
        "model.depth_linear=2 trainer.max_epochs=3 nc.every_n_epochs=1 trainer.enable_progress_bar=false",
    ]
    assert (tmp_path / "gpu_bench.txt").read_text() == result.stdout


def test_prepare_copies_the_packages_the_device_image_lacks(tmp_path: Path) -> None:
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(SCRIPT, tmp_path / "benchmarks" / "gpu.sh")
    env = {**os.environ, "GPU_SH_PREPARE": "1", "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", "benchmarks/gpu.sh"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    site = tmp_path / ".gpu_site"
    assert sorted(path.name for path in site.iterdir()) == ["antlr4", "hydra", "omegaconf"]
    check = "import sys; sys.path.insert(0, sys.argv[1]); import hydra, omegaconf; print(omegaconf.__file__)"
    imported = subprocess.run([sys.executable, "-c", check, str(site)], capture_output=True, text=True)
    assert imported.stdout.strip() == str(site / "omegaconf" / "__init__.py"), imported.stderr
