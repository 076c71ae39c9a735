"""Streaming ``NeuralCollapse`` vs the brute-force float64 reference vs the memory-traffic floor.

For each layer width ``d`` and class count ``C``, on the same seeded float32 features (batches of 1,000):

* **ours**: ``NeuralCollapse(C)``: pass 1, ``next_phase()``, pass 2, ``compute()``;
* **reference**: ``tests/reference_nc.py`` on the whole ``N x d`` matrix (float64, full ``d x d``
  covariances and a pseudo-inverse), skipped when ``d x d`` does not fit (``d > 4096``);
* **floor**: the least work any two-pass method does: read the features twice (a column sum per batch,
  twice) plus one ``N x d x C`` matrix product (each batch times a ``d x C`` matrix).

Both results are checked equal (relative difference; float32 against float64). Peak memory is measured
above the level at the start of each timed call: ``torch.cuda.max_memory_allocated`` on GPU, the resident
set's high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``) on CPU. The features are held in
memory before timing starts, so neither timing includes generating them.
"""

from __future__ import annotations

import ctypes
import importlib.util
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor

from ncdepth.metrics import NeuralCollapse

BATCH_SIZE = 1_000
REFERENCE_MAX_DIM = 4_096
TARGET_RATIO_TO_FLOOR = 3.0
SEED = 0
# Allowed disagreement between float32 streaming and the float64 reference on the same values.
RELATIVE_TOLERANCE = 1e-4
COUNT_TOLERANCE = 1e-3  # ncc_acc: a few near-ties may flip under float32 rounding
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers

T = TypeVar("T")
Batches = list[tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class Case:
    dim: int
    num_classes: int
    num_samples: int

    @property
    def runs_reference(self) -> bool:
        return self.dim <= REFERENCE_MAX_DIM


@dataclass(frozen=True)
class Timed:
    """Wall seconds and peak memory in bytes above the start (``None`` when unknown)."""

    seconds: float
    peak_bytes: int | None


def load_reference() -> Callable[..., dict[str, float]]:
    """``reference_neural_collapse`` from ``tests/reference_nc.py`` (tests/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "reference_nc.py"
    spec = importlib.util.spec_from_file_location("reference_nc", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the reference implementation {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_neural_collapse


def cases(quick: bool, device: str) -> list[Case]:
    """The benchmark grid; ``N`` is 50,000 on GPU and smaller on CPU, capped by the memory available."""
    if quick:
        dims, classes, target = (64, 512), (10, 100), 3_000
    else:
        dims, classes = (512, 4_096, 25_600), (10, 100)
        target = 50_000 if device == "cuda" else 10_000
    return [Case(d, c, samples_that_fit(target, d, device)) for d in dims for c in classes]


def samples_that_fit(target: int, dim: int, device: str) -> int:
    """``target`` rounded down to whole batches, or fewer so that the float32 features plus the reference's
    float64 copies (about ``28 d`` bytes a sample) stay under half the free memory."""
    free = torch.cuda.mem_get_info()[0] if device == "cuda" else os.sysconf("SC_AVPHYS_PAGES") * PAGE_SIZE
    bytes_per_sample = (4 + (24 if dim <= REFERENCE_MAX_DIM else 0)) * dim
    fits = int(0.5 * free // bytes_per_sample)
    return max(BATCH_SIZE, min(target, fits) // BATCH_SIZE * BATCH_SIZE)


def synthetic_batches(case: Case, device: str) -> tuple[Batches, Tensor]:
    """Seeded float32 batches ``h = mu_y + noise`` (``mu_c ~ N(0, 0.1^2 I)``, unit noise, uniform labels)
    and the ``(C, d)`` means; batch ``b`` comes from its own generator seeded ``SEED + 1 + b``."""
    means = 0.1 * torch.randn(
        case.num_classes, case.dim, generator=torch.Generator().manual_seed(SEED), dtype=torch.float32
    )
    batches = []
    for index in range(case.num_samples // BATCH_SIZE):
        generator = torch.Generator().manual_seed(SEED + 1 + index)
        labels = torch.randint(0, case.num_classes, (BATCH_SIZE,), generator=generator)
        features = means[labels] + torch.randn(BATCH_SIZE, case.dim, generator=generator)
        batches.append((features.to(device), labels.to(device)))
    return batches, means.to(device)


def ours(batches: Batches, num_classes: int) -> dict[str, float]:
    """Both streaming passes over ``batches`` and the final metrics."""
    metric = NeuralCollapse(num_classes).to(batches[0][0].device)
    for features, labels in batches:
        metric.update(features, labels)
    metric.next_phase()
    for features, labels in batches:
        metric.update(features, labels)
    return metric.compute()["features"]


def floor(batches: Batches, directions: Tensor) -> None:
    """Read every batch twice, then one ``(B, d) x (d, C)`` product per batch."""
    for _ in range(2):
        for features, _labels in batches:
            features.sum(0)
    for features, _labels in batches:
        features @ directions
    synchronize(directions.device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_bytes(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, flags=re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}")
    return int(match.group(1)) * 1024


def cpu_peak_measurable() -> bool:
    """Linux lets a process reset its resident high-water mark (``echo 5 > /proc/self/clear_refs``)."""
    return Path("/proc/self/clear_refs").exists()


def route_large_blocks_to_mmap(threshold: int) -> bool:
    """glibc: serve every block of ``threshold`` bytes or more by its own mapping, given back to the OS
    when freed, keep at most ``2 * threshold`` free bytes at the top of the heap (``mallopt``, as glibc's
    own dynamic thresholds do), and return the heap's free memory to the OS now (``malloc_trim``).
    ``False`` where there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return (
        bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
        and bool(libc.mallopt(M_TRIM_THRESHOLD, 2 * threshold))
        and libc.malloc_trim(0) >= 0
    )


@contextmanager
def peak_memory(device: str) -> Iterator[list[int | None]]:
    """Yields a one-element list that holds, on exit, the peak bytes allocated above the level at entry.

    On CPU, glibc would otherwise recycle freed tensors inside the heap, where a new allocation does not
    raise the resident set: inside the block every allocation of 128 KiB or more is mapped on its own
    (so the high-water mark of the resident set counts it), and on exit the threshold returns to glibc's
    largest dynamic value (32 MiB).
    """
    box: list[int | None] = [None]
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        yield box
        torch.cuda.synchronize()
        box[0] = torch.cuda.max_memory_allocated() - start
    elif cpu_peak_measurable():
        route_large_blocks_to_mmap(128 * 2**10)
        Path("/proc/self/clear_refs").write_text("5")
        start = _proc_status_bytes("VmRSS")
        try:
            yield box
            box[0] = _proc_status_bytes("VmHWM") - start
        finally:
            route_large_blocks_to_mmap(32 * 2**20)
    else:
        yield box


def best_time(function: Callable[[], T], device: str, repeats: int) -> tuple[T, float]:
    """The result of ``function`` and its best wall time over ``repeats`` calls."""
    best, result = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        synchronize(torch.device(device))
        best = min(best, time.perf_counter() - start)
    return result, best


def timed_with_peak(function: Callable[[], T], device: str) -> tuple[T, Timed]:
    """One call of ``function``: its result, wall time and peak memory."""
    with peak_memory(device) as box:
        result, seconds = best_time(function, device, repeats=1)
    return result, Timed(seconds, box[0])


def check_equal(got: dict[str, float], expected: dict[str, float], case: Case) -> float:
    """The largest relative difference over the continuous metrics; raises if any metric disagrees."""
    if list(got) != list(expected):
        raise RuntimeError(f"{case}: metric names differ: {list(got)} vs {list(expected)}")
    worst = 0.0
    for name, value in expected.items():
        if name == "ncc_acc":
            ok = abs(got[name] - value) <= COUNT_TOLERANCE
        else:
            difference = abs(got[name] - value) / max(abs(value), 1e-300)
            worst = max(worst, difference)
            ok = difference <= RELATIVE_TOLERANCE
        if not ok:
            raise RuntimeError(f"{case}: {name} = {got[name]!r} (ours) vs {value!r} (reference)")
    return worst


def megabytes(peak: int | None) -> str:
    return "n/a" if peak is None else f"{peak / 2**20:.0f}"


@dataclass(frozen=True)
class Row:
    """One case's measurements; ``reference`` and ``difference`` are ``None`` when the reference is
    skipped."""

    case: Case
    ours: Timed
    floor_seconds: float
    reference: Timed | None
    difference: float | None

    @property
    def ratio_to_floor(self) -> float:
        return self.ours.seconds / self.floor_seconds

    def __str__(self) -> str:
        if self.reference is None or self.difference is None:
            reference = f"{'--':>8} {'--':>8}"
            reference_memory, difference = "--", "(skipped)"
        else:
            speedup = self.reference.seconds / self.ours.seconds
            reference = f"{self.reference.seconds:8.2f} {speedup:8.1f}"
            reference_memory, difference = megabytes(self.reference.peak_bytes), f"{self.difference:.1e}"
        return (
            f"{self.case.dim:6d} {self.case.num_classes:4d} {self.case.num_samples:6d} | "
            f"{self.ours.seconds:8.3f} {reference} | {self.floor_seconds:8.3f} {self.ratio_to_floor:10.2f} | "
            f"{megabytes(self.ours.peak_bytes):>8} {reference_memory:>8} | {difference:>12}"
        )


HEADER = (
    f"{'d':>6} {'C':>4} {'N':>6} | {'ours s':>8} {'ref s':>8} {'ref/ours':>8} | {'floor s':>8} "
    f"{'ours/floor':>10} | {'ours MiB':>8} {'ref MiB':>8} | {'max rel diff':>12}"
)


def measure(case: Case, device: str, reference: Callable[..., dict[str, float]]) -> Row:
    """Time ours (best of 3, then one more call for its peak memory), the floor (best of 3) and, where
    ``d x d`` fits, the reference (one call), and check that ours equals the reference."""
    batches, means = synthetic_batches(case, device)
    directions = means.T.contiguous()
    ours(batches[:2], case.num_classes)  # warm-up: first-call allocations and kernels
    floor(batches[:2], directions)
    run_ours = partial(ours, batches, case.num_classes)
    result, ours_seconds = best_time(run_ours, device, repeats=3)
    ours_timed = Timed(ours_seconds, timed_with_peak(run_ours, device)[1].peak_bytes)
    _, floor_seconds = best_time(partial(floor, batches, directions), device, repeats=3)
    if not case.runs_reference:
        return Row(case, ours_timed, floor_seconds, None, None)
    features = torch.cat([f for f, _ in batches])
    labels = torch.cat([y for _, y in batches])
    expected, reference_timed = timed_with_peak(
        partial(reference, features, labels, case.num_classes), device
    )
    return Row(case, ours_timed, floor_seconds, reference_timed, check_equal(result, expected, case))


def main(quick: bool = False, device: str = "cpu") -> None:
    """Print one row per case: times, speed-up over the reference, ratio to the floor, peak memory."""
    reference = load_reference()
    if device == "cuda":
        memory_note = "torch.cuda.max_memory_allocated above the start"
    elif cpu_peak_measurable():
        memory_note = "peak RSS above the start (VmHWM)"
    else:
        memory_note = "not measurable on this OS"
    print(f"threads={torch.get_num_threads()}  batch={BATCH_SIZE}  features float32  memory: {memory_note}")
    print(HEADER)
    print("-" * len(HEADER))
    rows = []
    for case in cases(quick, device):
        rows.append(measure(case, device, reference))
        print(rows[-1], flush=True)
    worst = max(row.ratio_to_floor for row in rows)
    print(
        f"reference skipped for d > {REFERENCE_MAX_DIM} (d x d float64 matrices of several GB each); "
        f"ours/floor worst {worst:.2f} (target <= {TARGET_RATIO_TO_FLOOR:.0f})"
    )
