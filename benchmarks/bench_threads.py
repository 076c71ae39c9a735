"""The default ``ncdepth-train`` run beside two busy processes, with and without ncdepth's thread defaults.

Two single-threaded busy loops (``python -c "while True: pass"``, pinned nowhere) run for the whole
benchmark. Beside them, the default run (``ncdepth-train trainer.max_epochs=5 callbacks=none`` in a
temporary run directory, progress bar off) is timed end to end, process start-up included, under:

* ``default``: the user's environment without ``OMP_*`` / ``GOMP_SPINCOUNT`` / ``MKL_NUM_THREADS``, i.e. the
  defaults of :mod:`ncdepth.threads` (``OMP_WAIT_POLICY=PASSIVE`` after a spin of ``GOMP_SPINCOUNT=10000``,
  threads = CPUs available to the process);
* ``OMP_NUM_THREADS=1``: one intra-op thread;
* ``before``: ``NCDEPTH_THREAD_DEFAULTS=0``, torch's and libgomp's own defaults (the old behaviour).

The variants alternate (default, one thread, before, then again; ``--quick``: once, otherwise 3 times);
the table gives the median seconds and ``default / OMP_NUM_THREADS=1`` against the target 1.2, with the
1-minute load average read before the busy loops start and at the end. ``device`` is ignored: this is a
CPU benchmark. ``python benchmarks/bench_threads.py [--quick]`` runs it alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ncdepth.threads import ENVIRONMENT_VARIABLES

EPOCHS = 5
BUSY_PROCESSES = 2
TARGET = 1.2
VARIANTS = {
    "default": {},
    "OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},
    "before (NCDEPTH_THREAD_DEFAULTS=0)": {"NCDEPTH_THREAD_DEFAULTS": "0"},
}


def train_command(run_dir: Path) -> list[str]:
    """The default run: ``ncdepth-train`` of this interpreter's environment, 5 epochs, no callbacks."""
    return [
        str(Path(sys.executable).parent / "ncdepth-train"),
        f"trainer.max_epochs={EPOCHS}",
        "trainer.enable_progress_bar=false",
        "callbacks=none",
        f"hydra.run.dir={run_dir}",
    ]


@contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """``count`` single-threaded busy loops, killed on exit."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def time_run(extra_env: dict[str, str], scratch: Path, index: int) -> float:
    """Seconds of one default run with the user's thread variables cleared and ``extra_env`` set."""
    env = {key: value for key, value in os.environ.items() if key not in ENVIRONMENT_VARIABLES}
    env.update(extra_env)
    start = time.perf_counter()
    subprocess.run(
        train_command(scratch / f"run{index}"),
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return time.perf_counter() - start


def main(quick: bool = False, device: str = "cpu") -> None:
    """Print the median seconds of each variant beside two busy processes and the ratio to one thread."""
    repeats = 1 if quick else 3
    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as scratch, busy_processes(BUSY_PROCESSES):
        index = 0
        for _ in range(repeats):
            for name, extra_env in VARIANTS.items():
                times[name].append(time_run(extra_env, Path(scratch), index))
                index += 1
    load_after = os.getloadavg()[0]
    print(
        f"ncdepth-train, {EPOCHS} epochs, beside {BUSY_PROCESSES} busy processes; {os.cpu_count()} CPUs, "
        f"affinity {len(os.sched_getaffinity(0))}; median of {repeats} (alternating); "
        f"load average (1 min) {load_before:.2f} before, {load_after:.2f} after"
    )
    single = statistics.median(times["OMP_NUM_THREADS=1"])
    print(f"{'threading':<36} {'median s':>9} {'runs s':<24} {'/ 1 thread':>10}")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        runs = " ".join(f"{value:.1f}" for value in seconds)
        print(f"{name:<36} {median:>9.1f} {runs:<24} {median / single:>10.2f}")
    ratio = statistics.median(times["default"]) / single
    print(
        f"default / OMP_NUM_THREADS=1 = {ratio:.2f} (target <= {TARGET}): {'PASS' if ratio <= TARGET else 'MISS'}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one run of each variant")
    main(quick=parser.parse_args().quick)
