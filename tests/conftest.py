"""Shared fixtures: one tiny real bound sweep (``ncdepth-train -m``) and its ``ncdepth-report``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
TINY_BOUND_SWEEP = [
    "+experiment=bound_quick",
    "seed=0,1",
    "data.extra_label_noise=null,0.5",
    "data.samples_per_class=10",
    "data.extra_samples_per_class=10",
    "model.depth=3",
    "model.width=32",
    "trainer.max_epochs=2",
    "nc.every_n_epochs=1",
]
"""bound_quick cut to 2 seeds x (S1, p=0.5), 3 layers, 2 epochs: 4 runs, seconds each."""


def run_command(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``command`` single-threaded (2-core CI machines); raise with its output if it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"{command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def tiny_bound_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A finished 4-run bound sweep with its report in ``<sweep>/report``; returns the sweep
    directory and the report command's output."""
    sweep = tmp_path_factory.mktemp("bound_sweep")
    run_command([str(BIN / "ncdepth-train"), *TINY_BOUND_SWEEP, f"hydra.sweep.dir={sweep}", "-m"])
    report = run_command([str(BIN / "ncdepth-report"), str(sweep)])
    return sweep, report.stdout


def directory_fingerprint(directory: Path) -> dict[str, tuple[int, str]]:
    """``{relative path: (mtime_ns, sha256)}`` of every file under ``directory``: equal before and
    after a command exactly when the command changed nothing there."""
    return {
        path.relative_to(directory).as_posix(): (
            path.stat().st_mtime_ns,
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }
