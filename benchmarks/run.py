"""``make bench``: run every ``benchmarks/bench_*.py`` module's ``main(quick=..., device=...)`` in turn.

Usage: ``python benchmarks/run.py [--quick] [--device cpu|cuda] [--only SUBSTRING ...]``.

The benchmarks run under the thread defaults of the command-line tools (:mod:`ncdepth.threads`:
``OMP_WAIT_POLICY=PASSIVE`` after a short spin and one intra-op thread per CPU available to the process,
unless the user set their own), applied before torch loads, so that they measure what a
user's run gets. ``OMP_NUM_THREADS=1`` gives the single-threaded figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from ncdepth import threads

APPLIED_THREAD_DEFAULTS = threads.configure()  # before torch loads: libgomp reads OMP_WAIT_POLICY once

import torch  # noqa: E402

BENCHMARK_DIR = Path(__file__).resolve().parent
DEVICES = ("cpu", "cuda")


def discover(only: Sequence[str] = ()) -> list[Path]:
    """The ``bench_*.py`` files next to this script, sorted, keeping those whose name contains one of
    ``only`` (all when ``only`` is empty)."""
    paths = sorted(BENCHMARK_DIR.glob("bench_*.py"))
    return [path for path in paths if not only or any(word in path.stem for word in only)]


def load(path: Path) -> ModuleType:
    """Import a benchmark file as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import benchmark {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small configurations (seconds)")
    parser.add_argument("--device", default="cpu", help=f"one of {list(DEVICES)} (default: cpu)")
    parser.add_argument(
        "--only", nargs="*", default=[], help="run only benchmarks whose file name contains one of these"
    )
    args = parser.parse_args(argv)
    if args.device not in DEVICES:
        raise ValueError(f"--device must be one of {list(DEVICES)}, got {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch.cuda.is_available() is False")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the selected benchmarks one after the other, each under a header with its wall time."""
    args = parse_args(argv)
    applied = (
        ", ".join(f"{key}={value}" for key, value in APPLIED_THREAD_DEFAULTS.items())
        or "none (set by the user)"
    )
    print(f"thread defaults applied: {applied}; torch threads: {torch.get_num_threads()}")
    paths = discover(args.only)
    if not paths:
        raise ValueError(f"no benchmarks/bench_*.py matches --only {args.only}")
    for path in paths:
        print(f"\n=== {path.stem} (device={args.device}{', quick' if args.quick else ''}) ===", flush=True)
        start = time.perf_counter()
        load(path).main(quick=args.quick, device=args.device)
        print(f"=== {path.stem} done in {time.perf_counter() - start:.1f} s ===", flush=True)


if __name__ == "__main__":
    main()
