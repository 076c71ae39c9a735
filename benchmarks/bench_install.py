"""Install footprint of each dependency set and the time of ``import ncdepth.metrics``.

**Sizes.** For each set (``pip install ncdepth``, ``'ncdepth[train]'``, ...), the installed
distributions it needs (``tests/installs.py``'s ``dependency_closure`` over this virtualenv's
metadata, so run it after ``make install``: extras followed, markers evaluated) and the bytes of
their installed files (their ``RECORD``). torch's own closure is shown apart: its size
depends on the build (the CUDA build with its NVIDIA libraries and triton, here).

**Import time.** ``import ncdepth.metrics`` timed inside a fresh interpreter (``time.perf_counter``
around the import), median of several processes, in two fresh virtualenvs holding the built wheel:
one with only torch, torchmetrics and their dependencies, one with every package of this
virtualenv (as ``pip install 'ncdepth[train]'`` would have). ``import torch`` alone is the floor.
"""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20
IMPORT_TIMER = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def load_installs() -> ModuleType:
    """``tests/installs.py`` (tests/ is not a package)."""
    path = REPO / "tests" / "installs.py"
    spec = importlib.util.spec_from_file_location("installs", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


installs = load_installs()


def import_seconds(python: Path, module: str, runs: int) -> float:
    """Median over ``runs`` fresh interpreters of the seconds ``import module`` takes."""
    seconds = []
    for _ in range(runs):
        result = subprocess.run(
            [str(python), "-c", IMPORT_TIMER.format(module=module)],
            capture_output=True,
            text=True,
            check=True,
            env=installs.clean_env(),
        )
        seconds.append(float(result.stdout))
    return statistics.median(seconds)


def main(quick: bool = False, device: str = "cpu") -> None:
    del device  # sizes and import times do not depend on it
    sets = {
        "torch (its closure)": ["torch"],
        "ncdepth (default: ncdepth.metrics)": ["ncdepth"],
        "ncdepth[train]": ["ncdepth[train]"],
        "ncdepth[report] (+ parquet)": ["ncdepth[report]"],
        "ncdepth[dev] (make install)": ["ncdepth[dev]"],
    }
    torch_names = set(installs.dependency_closure(["torch"]))
    print(f"{'set':40s} {'dists':>6s} {'MiB':>9s} {'MiB beyond torch':>17s}")
    for name, requirements in sets.items():
        closure = installs.dependency_closure(requirements)
        sizes = {dist: installs.installed_bytes(closure[dist]) for dist in closure}
        beyond = sum(size for dist, size in sizes.items() if dist not in torch_names)
        print(f"{name:40s} {len(closure):6d} {sum(sizes.values()) / MIB:9.1f} {beyond / MIB:17.1f}")

    runs = 3 if quick else 7
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        wheel = installs.build_wheel(root / "build")
        packages = installs.link_distributions(
            installs.dependency_closure(["torch", "torchmetrics"]), root / "metrics-packages"
        )
        metrics_bin = installs.make_venv(root / "metrics", wheel, [packages])
        train_bin = installs.make_venv(root / "train", wheel, [installs.DEV_SITE_PACKAGES])
        print(f"\nimport time, median of {runs} fresh interpreters ({sys.version.split()[0]}):")
        for label, python, module in (
            ("torch, torchmetrics only", metrics_bin / "python", "torch"),
            ("torch, torchmetrics only", metrics_bin / "python", "ncdepth.metrics"),
            ("every dev package", train_bin / "python", "ncdepth.metrics"),
            ("every dev package", train_bin / "python", "ncdepth.training"),
        ):
            print(f"  {label:26s} import {module:18s} {import_seconds(python, module, runs):6.2f} s")
