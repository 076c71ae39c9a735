"""``neural_collapse`` and ``NeuralCollapse`` side by side with the memory-traffic floor, a per-class-loop
analysis, a float64 reference, and (at ``C = 10,000``) per-batch one-hot accumulators.

For each layer width ``d`` and class count ``C``, on the same seeded float32 features (batches of 1,000, also
held as one ``N x d`` matrix), best of 3 interleaved runs each:

* **functional**: ``neural_collapse(H, y, C)`` on the whole matrix;
* **streaming**: ``NeuralCollapse(C)`` over the batches: pass 1, ``next_phase()``, pass 2, ``compute()``;
* **floor**: the least work any two-pass method does: read the features twice (a column sum per batch,
  twice) plus one ``N x d x C`` matrix product (each batch times a ``d x C`` matrix);
* **loop**: ``per_class_loop_reference.py``, CDNV and NCC accuracy alone by a Python loop over the classes
  (float32, the whole matrix);
* **reference**: ``tests/reference_nc.py`` on the whole matrix (float64, full ``d x d`` covariances and a
  pseudo-inverse), one run, skipped when ``d x d`` does not fit (``d > 4096``).

On CPU, ``neural_collapse`` and the floor are timed again at one and at two intra-op threads (when the
process has two CPUs), side by side: the ratio to the floor must hold at both.

Both of ours are checked equal to the reference (relative difference; float32 against float64) and the loop
to ours. Peak memory is measured above the level at the start of each call: ``torch.cuda.max_memory_allocated``
on GPU, the resident set's high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``) on CPU.

A second table times ``NeuralCollapse``'s two passes at ``C = 10,000``, ``d = 256`` against
``one_hot_reference.py`` (the per-batch one-hot accumulators of ``rhubarbwu/neural-collapse``). The run ends
with the goals: ours within 3x the floor, faster than the loop at every case, faster than the one-hot passes.
"""

from __future__ import annotations

import ctypes
import importlib.util
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import torch
from torch import Tensor

from ncdepth.metrics import NeuralCollapse
from ncdepth.metrics.functional import neural_collapse

BATCH_SIZE = 1_000
REFERENCE_MAX_DIM = 4_096
TARGET_RATIO_TO_FLOOR = 3.0
REPEATS = 3
THREAD_COUNTS = (1, 2)  # the functional/floor ratio is measured at each (CPU; those the process can use)
SEED = 0
# Allowed disagreement between float32 streaming and the float64 reference on the same values.
RELATIVE_TOLERANCE = 1e-4
COUNT_TOLERANCE = 1e-3  # ncc_acc: a few near-ties may flip under float32 rounding
LOOP_TOLERANCE = 1e-3  # the per-class loop's cdnv: float32 sums of N_c squared residuals
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
HERE = Path(__file__).resolve().parent

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

    def __str__(self) -> str:
        return f"d={self.dim}, C={self.num_classes}"


@dataclass(frozen=True)
class Timed:
    """Wall seconds and peak memory in bytes above the start (``None`` when unknown)."""

    seconds: float
    peak_bytes: int | None


def load_module(path: Path) -> ModuleType:
    """Import a file as a module (neither tests/ nor benchmarks/ is a package)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def cases(quick: bool, device: str) -> list[Case]:
    """The benchmark grid; ``N`` is 50,000 on GPU and smaller on CPU, capped by the memory available."""
    if quick:
        dims, classes, target = (64, 512), (10, 100), 3_000
    else:
        dims, classes = (512, 4_096, 25_600), (10, 100)
        target = 50_000 if device == "cuda" else 10_000
    return [Case(d, c, samples_that_fit(target, d, device)) for d in dims for c in classes]


def samples_that_fit(target: int, dim: int, device: str) -> int:
    """``target`` rounded down to whole batches, or fewer so that the float32 features (batches and one
    matrix) plus the reference's float64 copies (about ``32 d`` bytes a sample) stay under half the free
    memory."""
    free = torch.cuda.mem_get_info()[0] if device == "cuda" else os.sysconf("SC_AVPHYS_PAGES") * PAGE_SIZE
    bytes_per_sample = (8 + (24 if dim <= REFERENCE_MAX_DIM else 0)) * dim
    fits = int(0.5 * free // bytes_per_sample)
    return max(BATCH_SIZE, min(target, fits) // BATCH_SIZE * BATCH_SIZE)


def synthetic_batches(case: Case, device: str, *, balanced: bool = False) -> tuple[Batches, Tensor]:
    """Seeded float32 batches ``h = mu_y + noise`` (``mu_c ~ N(0, 0.1^2 I)``, unit noise) and the ``(C, d)``
    means; batch ``b`` comes from its own generator seeded ``SEED + 1 + b``. Labels are uniform, or with
    ``balanced`` sample ``i`` has label ``i mod C`` (every class present once ``N >= C``)."""
    means = 0.1 * torch.randn(
        case.num_classes, case.dim, generator=torch.Generator().manual_seed(SEED), dtype=torch.float32
    )
    batches = []
    for index in range(case.num_samples // BATCH_SIZE):
        generator = torch.Generator().manual_seed(SEED + 1 + index)
        if balanced:
            labels = torch.arange(index * BATCH_SIZE, (index + 1) * BATCH_SIZE) % case.num_classes
        else:
            labels = torch.randint(0, case.num_classes, (BATCH_SIZE,), generator=generator)
        features = means[labels] + torch.randn(BATCH_SIZE, case.dim, generator=generator)
        batches.append((features.to(device), labels.to(device)))
    return batches, means.to(device)


def streaming(batches: Batches, num_classes: int) -> dict[str, float]:
    """Both streaming passes over ``batches`` and the final metrics."""
    metric = NeuralCollapse(num_classes).to(batches[0][0].device)
    for features, labels in batches:
        metric.update(features, labels)
    metric.next_phase()
    for features, labels in batches:
        metric.update(features, labels)
    return metric.compute()["features"]


def floor(batches: Batches, directions: Tensor) -> None:
    """Read every batch twice, then one ``(C, d) x (d, B)`` product per batch (``directions`` ``(C, d)``; on
    CPU this layout of the skinny product is up to 2.5x faster than ``(B, d) x (d, C)``)."""
    for _ in range(2):
        for features, _labels in batches:
            features.sum(0)
    for features, _labels in batches:
        directions @ features.T
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


def clocked(function: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """``function()`` and its wall seconds, device work included."""
    synchronize(device)
    start = time.perf_counter()
    result = function()
    synchronize(device)
    return result, time.perf_counter() - start


def best_interleaved(
    functions: dict[str, Callable[[], object]], device: str
) -> tuple[dict, dict[str, float]]:
    """Each function's last result and its best wall time over :data:`REPEATS` rounds, the functions
    taking turns within a round (so load on a shared machine falls on all of them alike)."""
    results, best = {}, dict.fromkeys(functions, math.inf)
    for _ in range(REPEATS):
        for name, function in functions.items():
            results[name], seconds = clocked(function, torch.device(device))
            best[name] = min(best[name], seconds)
    return results, best


def timed_with_peak(function: Callable[[], T], device: str) -> tuple[T, Timed]:
    """One call of ``function``: its result, wall time and peak memory."""
    with peak_memory(device) as box:
        result, seconds = clocked(function, torch.device(device))
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


def check_loop(loop: dict[str, float], ours: dict[str, float], case: Case) -> None:
    """The per-class loop must find our ``cdnv`` (to float32 rounding) and ``ncc_acc``."""
    if abs(loop["cdnv"] - ours["cdnv"]) > LOOP_TOLERANCE * abs(ours["cdnv"]):
        raise RuntimeError(f"{case}: cdnv {loop['cdnv']!r} (loop) vs {ours['cdnv']!r} (ours)")
    if abs(loop["ncc_acc"] - ours["ncc_acc"]) > COUNT_TOLERANCE:
        raise RuntimeError(f"{case}: ncc_acc {loop['ncc_acc']!r} (loop) vs {ours['ncc_acc']!r} (ours)")


def megabytes(peak: int | None) -> str:
    """MiB, or ``n/a``; a peak below the starting level (memory given back during the call) reads 0."""
    return "n/a" if peak is None else f"{max(peak, 0) / 2**20:.0f}"


@dataclass(frozen=True)
class Row:
    """One case's measurements: best seconds by name (``functional``, ``streaming``, ``floor``, ``loop``),
    peak memory of ours, and the reference (``None`` when skipped)."""

    case: Case
    seconds: dict[str, float]
    functional_peak: int | None
    streaming_peak: int | None
    reference: Timed | None
    difference: float | None
    functional_by_threads: dict[int, float]  # functional / floor at each intra-op thread count (CPU)

    def ratio_to_floor(self, name: str) -> float:
        return self.seconds[name] / self.seconds["floor"]

    def loop_speedup(self, name: str) -> float:
        return self.seconds["loop"] / self.seconds[name]

    def __str__(self) -> str:
        t = self.seconds
        if self.reference is None or self.difference is None:
            reference = f"{'--':>7} {'--':>8}"
            reference_memory, difference = "--", "(skipped)"
        else:
            speedup = self.reference.seconds / t["streaming"]
            reference = f"{self.reference.seconds:7.2f} {speedup:8.0f}"
            reference_memory, difference = megabytes(self.reference.peak_bytes), f"{self.difference:.1e}"
        return (
            f"{self.case.dim:5d} {self.case.num_classes:3d} {self.case.num_samples:6d} | "
            f"{t['functional']:7.3f} {t['streaming']:7.3f} {t['floor']:7.3f} "
            f"{self.ratio_to_floor('functional'):6.2f} {self.ratio_to_floor('streaming'):6.2f} | "
            f"{t['loop']:7.3f} {self.loop_speedup('functional'):6.2f} {self.loop_speedup('streaming'):6.2f} | "
            f"{reference} | {megabytes(self.functional_peak):>5} {megabytes(self.streaming_peak):>5} "
            f"{reference_memory:>6} | {difference:>8}"
        )


HEADER = (
    f"{'d':>5} {'C':>3} {'N':>6} | {'func s':>7} {'strm s':>7} {'floor s':>7} {'func/':>6} {'strm/':>6} | "
    f"{'loop s':>7} {'loop/':>6} {'loop/':>6} | {'ref s':>7} {'ref/strm':>8} | {'MiB':>5} {'MiB':>5} "
    f"{'MiB':>6} | {'max rel':>8}\n"
    f"{'':>5} {'':>3} {'':>6} | {'':>7} {'':>7} {'':>7} {'floor':>6} {'floor':>6} | "
    f"{'':>7} {'func':>6} {'strm':>6} | {'':>7} {'':>8} | {'func':>5} {'strm':>5} {'ref':>6} | {'diff':>8}"
)


def measure(case: Case, device: str, modules: dict[str, ModuleType]) -> Row:
    """Time ours (both APIs), the floor and the loop (best of 3, interleaved), then one more call of each of
    ours for its peak memory and, where ``d x d`` fits, the reference (one call); check the results."""
    batches, means = synthetic_batches(case, device)
    features = torch.cat([f for f, _ in batches])
    labels = torch.cat([y for _, y in batches])
    directions = means.contiguous()
    loop = modules["loop"].per_class_loop_cdnv_ncc
    functions = {
        "functional": partial(neural_collapse, features, labels, case.num_classes),
        "streaming": partial(streaming, batches, case.num_classes),
        "floor": partial(floor, batches, directions),
        "loop": partial(loop, features, labels, case.num_classes),
    }
    streaming(batches[:2], case.num_classes)  # warm-up: first-call allocations and kernels
    neural_collapse(features[:BATCH_SIZE], labels[:BATCH_SIZE], case.num_classes)
    floor(batches[:2], directions)
    results, seconds = best_interleaved(functions, device)
    by_threads = functional_ratio_by_threads(functions, device)
    functional_peak = timed_with_peak(functions["functional"], device)[1].peak_bytes
    streaming_peak = timed_with_peak(functions["streaming"], device)[1].peak_bytes
    check_loop(results["loop"], results["streaming"], case)
    if not case.runs_reference:
        return Row(case, seconds, functional_peak, streaming_peak, None, None, by_threads)
    expected, reference_timed = timed_with_peak(
        partial(modules["reference"].reference_neural_collapse, features, labels, case.num_classes), device
    )
    difference = max(check_equal(results[name], expected, case) for name in ("functional", "streaming"))
    return Row(case, seconds, functional_peak, streaming_peak, reference_timed, difference, by_threads)


def functional_ratio_by_threads(functions: dict[str, Callable[[], object]], device: str) -> dict[int, float]:
    """``neural_collapse`` over the floor, both timed (best of :data:`REPEATS`, interleaved) at each of
    :data:`THREAD_COUNTS` intra-op threads that the process has CPUs for; the thread count is restored."""
    if device != "cpu":
        return {}
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    previous, ratios = torch.get_num_threads(), {}
    try:
        for count in (c for c in THREAD_COUNTS if c <= available):
            torch.set_num_threads(count)
            pair = {name: functions[name] for name in ("functional", "floor")}
            best = best_interleaved(pair, device)[1]
            ratios[count] = best["functional"] / best["floor"]
    finally:
        torch.set_num_threads(previous)
    return ratios


# ------------------------------------------------------------------ many classes: one-hot accumulators
@dataclass(frozen=True)
class PassTimes:
    """Best seconds of pass 1, ``next_phase()`` (ours) and pass 2, for ours and the one-hot reference."""

    case: Case
    ours: tuple[float, float, float]
    one_hot: tuple[float, float]

    @property
    def speedup(self) -> float:
        """One-hot pass 1 + pass 2 over ours."""
        return sum(self.one_hot) / (self.ours[0] + self.ours[2])

    def __str__(self) -> str:
        pass1, next_phase, pass2 = self.ours
        return (
            f"{self.case.num_classes:6d} {self.case.dim:4d} {self.case.num_samples:6d} | {pass1:7.3f} "
            f"{next_phase:7.3f} {pass2:7.3f} | {self.one_hot[0]:7.3f} {self.one_hot[1]:7.3f} | "
            f"{self.speedup:8.2f}"
        )


PASS_HEADER = (
    f"{'C':>6} {'d':>4} {'N':>6} | {'pass 1':>7} {'next':>7} {'pass 2':>7} | {'1-hot 1':>7} {'1-hot 2':>7} | "
    f"{'1-hot/ours':>8}"
)


def one_hot_case(quick: bool, device: str) -> Case:
    """``C = 10,000``, ``d = 256``, balanced labels, 20,000 samples (100,000 on GPU; ``--quick``: ``C = 1,000``,
    ``d = 64``, 3,000 samples)."""
    if quick:
        return Case(64, 1_000, 3_000)
    return Case(256, 10_000, 100_000 if device == "cuda" else 20_000)


def streaming_passes(batches: Batches, num_classes: int) -> tuple[NeuralCollapse, tuple[float, float, float]]:
    """``NeuralCollapse`` after both passes, and the seconds of pass 1, ``next_phase()`` and pass 2."""
    device = batches[0][0].device
    metric = NeuralCollapse(num_classes).to(device)

    def one_pass() -> None:
        for features, labels in batches:
            metric.update(features, labels)

    _, pass1 = clocked(one_pass, device)
    _, next_phase = clocked(metric.next_phase, device)
    _, pass2 = clocked(one_pass, device)
    return metric, (pass1, next_phase, pass2)


def one_hot_passes(
    batches: Batches, num_classes: int, module: ModuleType
) -> tuple[dict, tuple[float, float]]:
    """The one-hot reference's pass-2 results and the seconds of its two passes."""
    device = batches[0][0].device
    (means, counts), pass1 = clocked(partial(module.one_hot_pass_one, batches, num_classes), device)
    result, pass2 = clocked(partial(module.one_hot_pass_two, batches, means, counts), device)
    return result, (pass1, pass2)


def measure_passes(case: Case, device: str, module: ModuleType) -> PassTimes:
    """Best of 3 interleaved runs of both; checks that they agree on ``Sigma_W`` and ``ncc_acc``."""
    batches, _ = synthetic_batches(case, device, balanced=True)
    streaming_passes(batches[: math.ceil(case.num_classes / BATCH_SIZE)], case.num_classes)  # warm-up
    best_ours, best_one_hot = (math.inf,) * 3, (math.inf,) * 2
    for _ in range(REPEATS):
        metric, ours = streaming_passes(batches, case.num_classes)
        reference, one_hot = one_hot_passes(batches, case.num_classes, module)
        best_ours = tuple(map(min, best_ours, ours))
        best_one_hot = tuple(map(min, best_one_hot, one_hot))
    within = metric.within_class_covariance("features").float()
    error = float((within - reference["within_covariance"]).norm() / within.norm())
    ncc_acc = metric.compute()["features"]["ncc_acc"]
    if error > RELATIVE_TOLERANCE or abs(ncc_acc - reference["ncc_acc"]) > COUNT_TOLERANCE:
        raise RuntimeError(f"{case}: one-hot reference disagrees (Sigma_W {error:.1e}, ncc_acc {ncc_acc})")
    return PassTimes(case, best_ours, best_one_hot)


# ------------------------------------------------------------------ the run
def goals(rows: list[Row], passes: PassTimes, quick: bool) -> list[str]:
    """One line per goal: the worst case and whether it is met."""

    def verdict(met: bool) -> str:
        return "MET" if met else "MISSED"

    lines = []
    for count in THREAD_COUNTS:
        measured = [row for row in rows if count in row.functional_by_threads]
        if measured:
            worst = max(measured, key=lambda row: row.functional_by_threads[count])
            ratio = worst.functional_by_threads[count]
            lines.append(
                f"functional / floor <= {TARGET_RATIO_TO_FLOOR:.0f} at {count} thread(s), every case: worst "
                f"{ratio:.2f} ({worst.case}): {verdict(ratio <= TARGET_RATIO_TO_FLOOR)}"
            )
    for name in ("functional", "streaming"):
        worst = max(rows, key=lambda row: row.ratio_to_floor(name))
        ratio = worst.ratio_to_floor(name)
        lines.append(
            f"{name} / floor <= {TARGET_RATIO_TO_FLOOR:.0f} at every case: worst {ratio:.2f} ({worst.case}): "
            f"{verdict(ratio <= TARGET_RATIO_TO_FLOOR)}"
        )
    for name in ("functional", "streaming"):
        worst = min(rows, key=lambda row: row.loop_speedup(name))
        speedup = worst.loop_speedup(name)
        lines.append(
            f"{name} faster than the per-class loop at every case: worst loop/{name} {speedup:.2f} "
            f"({worst.case}): {verdict(speedup > 1.0)}"
        )
    lines.append(
        f"streaming pass 1 + pass 2 faster than the one-hot accumulators at {passes.case}: one-hot/ours "
        f"{passes.speedup:.2f}: {verdict(passes.speedup > 1.0)}"
    )
    if quick:
        lines.append("(--quick: a small grid, not the configurations the goals name)")
    return lines


def main(quick: bool = False, device: str = "cpu") -> None:
    """Print one row per case (times, ratios to the floor and to the loop, the reference, peak memory), the
    one-hot comparison, and the goals."""
    modules = {
        "reference": load_module(HERE.parent / "tests" / "reference_nc.py"),
        "loop": load_module(HERE / "per_class_loop_reference.py"),
        "one_hot": load_module(HERE / "one_hot_reference.py"),
    }
    if device == "cuda":
        memory_note = "torch.cuda.max_memory_allocated above the start"
    elif cpu_peak_measurable():
        memory_note = "peak RSS above the start (VmHWM)"
    else:
        memory_note = "not measurable on this OS"
    print(
        f"threads={torch.get_num_threads()}  batch={BATCH_SIZE}  features float32  best of {REPEATS} "
        f"interleaved  memory: {memory_note}"
    )
    print(HEADER)
    print("-" * len(HEADER.splitlines()[0]))
    rows = []
    for case in cases(quick, device):
        rows.append(measure(case, device, modules))
        print(rows[-1], flush=True)
    print(f"reference skipped for d > {REFERENCE_MAX_DIM} (d x d float64 matrices of several GB each)\n")
    if any(row.functional_by_threads for row in rows):
        print("functional / floor by intra-op threads (best of 3 interleaved, side by side)")
        for row in rows:
            ratios = "  ".join(f"{n} thread(s): {r:.2f}" for n, r in row.functional_by_threads.items())
            print(f"  {row.case.dim:5d} {row.case.num_classes:3d} {row.case.num_samples:6d} | {ratios}")
        print()
    print("NeuralCollapse's passes vs one-hot accumulators (seconds, best of 3 interleaved)")
    print(PASS_HEADER)
    print("-" * len(PASS_HEADER))
    passes = measure_passes(one_hot_case(quick, device), device, modules["one_hot"])
    print(passes, "\n")
    for line in goals(rows, passes, quick):
        print(line)
