"""What the pass-2 sample check of ``NeuralCollapse`` (``check_samples=True``, the default) adds to pass 2.

The check sums ``g . (h_i - hi_c)`` per class along one fixed direction ``g`` (``ncdepth.metrics.stats``):
one ``B x d`` product per batch and layer. For each case, pass 2 over the same float32 batches (held in
memory, made before the clock starts) with the check on and off, best of 7 interleaved runs (CPU time of the
process on CPU, so that other processes on a shared machine do not count; wall-clock on GPU), and the
overhead ``on / off - 1``. The check is the default because the overhead stays under 5 % (issue 21).

Cases: the projected path (``d >= C``: ``C`` in {10, 100}, ``d = 512``; a conv map, ``d = 4,096``) and the
full scatter (``C = 1,000 > d = 256``). ``python benchmarks/run.py --only sample_check``; ``--quick``
shrinks ``N``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from ncdepth.metrics import NeuralCollapse

BATCH_SIZE = 500
REPEATS = 7
TARGET_OVERHEAD = 0.05


@dataclass(frozen=True)
class Case:
    num_classes: int
    dim: int
    num_samples: int

    def __str__(self) -> str:
        return f"C={self.num_classes} d={self.dim} N={self.num_samples}"


def cases(quick: bool) -> list[Case]:
    samples = 4_000 if quick else 80_000
    return [
        Case(10, 512, samples),
        Case(100, 512, samples),
        Case(10, 4_096, samples // 4),
        Case(1_000, 256, samples),
    ]


def batches(case: Case, device: str) -> list[tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(0)
    means = 2.0 * torch.randn(case.num_classes, case.dim, generator=generator)
    labels = torch.arange(case.num_samples) % case.num_classes
    features = means[labels] + torch.randn(case.num_samples, case.dim, generator=generator)
    return [
        (h.to(device), y.to(device))
        for h, y in zip(features.split(BATCH_SIZE), labels.split(BATCH_SIZE), strict=True)
    ]


def pass_two_seconds(data: list[tuple[Tensor, Tensor]], num_classes: int, check: bool) -> float:
    metric = NeuralCollapse(num_classes, check_samples=check)
    for h, y in data:
        metric.update(h, y)
    metric.next_phase()
    metric.update(*data[0])  # buffers made outside the clock
    device = data[0][0].device
    # CPU: the process's CPU time (on a shared machine, time spent descheduled is not the check's)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = clock()
    for h, y in data[1:]:
        metric.update(h, y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = clock() - start
    metric.compute()  # the check itself passes
    return seconds


def main(quick: bool = False, device: str = "cpu") -> None:
    print(f"threads={torch.get_num_threads()}  batch={BATCH_SIZE}  float32  best of {REPEATS} interleaved")
    print(f"{'case':>26} | {'off (s)':>8} {'on (s)':>8} | overhead")
    worst = -math.inf
    for case in cases(quick):
        data = batches(case, device)
        best = {False: math.inf, True: math.inf}
        for _ in range(REPEATS):
            for check in (False, True):
                best[check] = min(best[check], pass_two_seconds(data, case.num_classes, check))
        overhead = best[True] / best[False] - 1.0
        worst = max(worst, overhead)
        print(f"{case!s:>26} | {best[False]:8.3f} {best[True]:8.3f} | {100 * overhead:+6.1f} %", flush=True)
    verdict = "MET" if worst < TARGET_OVERHEAD else "MISSED"
    print(
        f"sample check adds under {100 * TARGET_OVERHEAD:.0f} % to pass 2: worst {100 * worst:+.1f} %: {verdict}"
    )
