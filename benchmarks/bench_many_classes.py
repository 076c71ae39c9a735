"""``NeuralCollapse`` at vocabulary scale: ``C`` up to 50,257 classes, ``d`` in {256, 768}.

Features (``h = mu_y + noise``, float32, batches of 1,024, balanced labels ``7919 i mod C``, the noise of
batch ``b`` from its own generator seeded ``SEED + 1 + b``) are made on the device before the clock starts
and before the peak memory is measured (on a GPU, generating them inside the timed loop timed CPU ``randn``
and a synchronous copy rather than the metric: about 4 ms a batch against 1.3 ms of pass 2). For each
configuration it prints pass 1, ``next_phase()``, pass 2 and ``compute()`` times and the peak memory above
the start (``VmHWM`` on CPU, ``max_memory_allocated`` on GPU, see ``bench_metrics.py``). The result is checked
against a float64 tiled reference written here from the formulas (full ``d x d`` ``Sigma_W`` and
``pinv(Sigma_B)``, pairs and NCC distances in float64 blocks), which shares no code with
``ncdepth.metrics``: on CPU where ``C <= 10,000`` (above, it takes hours), on a GPU at every size.

``make bench`` (``main``): ``C`` in {1,000, 10,000} at ``d = 256``, ``N = 100,000`` (``--quick``:
``N = 20,000``).
The vocabulary-scale grid, ``C`` in {1,000, 10,000, 50,257} x ``d`` in {256, 768} with ``N`` = 50k, 100k and
200k, takes about 10 minutes on one core: ``python benchmarks/bench_many_classes.py --many-classes``; one
configuration:
``--classes 50257 --dim 768 --samples 200000``.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ncdepth.metrics import NeuralCollapse

BATCH_SIZE = 1_024
SEED = 0
REFERENCE_MAX_CLASSES = 10_000  # on CPU
RELATIVE_TOLERANCE = 1e-5  # float32 batches against the float64 reference on the same values
COUNT_TOLERANCE = 1e-3  # ncc_acc: near-ties may flip under float32 rounding
BLOCK = 1_024
LABEL_STRIDE = 7_919  # a prime: sample i has label 7919 i mod C, so every class has N/C or N/C + 1 samples


def _load_bench_metrics():
    path = Path(__file__).resolve().parent / "bench_metrics.py"
    spec = importlib.util.spec_from_file_location("bench_metrics_helpers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Case:
    num_classes: int
    dim: int
    num_samples: int

    @property
    def num_batches(self) -> int:
        return math.ceil(self.num_samples / BATCH_SIZE)


def true_means(case: Case, device: str) -> Tensor:
    """``(C, d)`` float32 class means with ``||mu_c|| ~ 3``, around a common offset of 5."""
    generator = torch.Generator().manual_seed(SEED)
    means = 3.0 / math.sqrt(case.dim) * torch.randn(case.num_classes, case.dim, generator=generator)
    return (means + 5.0).to(device)


def batches(case: Case, means: Tensor) -> list[tuple[Tensor, Tensor]]:
    """The seeded float32 batches, made on the device of ``means`` (its own random generator there)."""
    device = means.device
    made = []
    for index in range(case.num_batches):
        rows = min(BATCH_SIZE, case.num_samples - index * BATCH_SIZE)
        generator = torch.Generator(device=device).manual_seed(SEED + 1 + index)
        first = index * BATCH_SIZE
        labels = torch.arange(first, first + rows, device=device) * LABEL_STRIDE % case.num_classes
        noise = torch.randn(rows, case.dim, generator=generator, device=device)
        made.append((means[labels] + noise, labels))
    return made


@dataclass(frozen=True)
class Timings:
    pass1: float
    next_phase: float
    pass2: float
    compute: float
    peak_bytes: int | None
    result: dict[str, float]


def ours(case: Case, data: list[tuple[Tensor, Tensor]], device: str, helpers) -> Timings:
    """Both streaming passes over ``data`` and ``compute()``, timed phase by phase under one peak-memory
    measurement."""
    helpers.synchronize(torch.device(device))
    with helpers.peak_memory(device) as box:
        metric = NeuralCollapse(case.num_classes).to(device)

        def one_pass(metric: NeuralCollapse) -> float:
            start = time.perf_counter()
            for h, y in data:
                metric.update(h, y)
            helpers.synchronize(torch.device(device))
            return time.perf_counter() - start

        pass1 = one_pass(metric)
        start = time.perf_counter()
        metric.next_phase()
        next_phase = time.perf_counter() - start
        pass2 = one_pass(metric)
        start = time.perf_counter()
        result = metric.compute()["features"]
        compute = time.perf_counter() - start
        del metric
    return Timings(pass1, next_phase, pass2, compute, box[0], result)


def reference(case: Case, data: list[tuple[Tensor, Tensor]]) -> dict[str, float]:
    """The metrics of ``docs/metrics.md`` in float64 from the formulas, over the same batches:
    ``Sigma_W`` and ``Sigma_B`` as full ``d x d`` matrices, ``nc1 = Tr(Sigma_W pinv(Sigma_B))/C``; the
    pair metrics as float64 sums of the pair terms and of their squares over blocks of classes; NCC from
    explicit float64 distances to blocks of class means."""
    num_classes, dim = case.num_classes, case.dim
    f64 = dict(dtype=torch.float64, device=data[0][0].device)
    counts, sums = torch.zeros(num_classes, **f64), torch.zeros(num_classes, dim, **f64)
    for h, y in data:
        counts.index_add_(0, y, torch.ones(len(y), **f64))
        sums.index_add_(0, y, h.double())
    means = sums / counts[:, None]
    global_mean = sums.sum(0) / counts.sum()
    centred = means - global_mean
    within = torch.zeros(dim, dim, **f64)
    within_sq = torch.zeros(num_classes, **f64)
    correct = 0
    for h, y in data:
        residual = h.double() - means[y]
        within += residual.T @ residual
        within_sq.index_add_(0, y, residual.square().sum(1))
        best = torch.full((len(y),), math.inf, **f64)
        nearest = torch.zeros(len(y), dtype=torch.long, device=y.device)
        for start in range(0, num_classes, BLOCK):
            distances = torch.cdist(h.double(), means[start : start + BLOCK])
            value, index = distances.min(1)
            better = value < best
            best, nearest = torch.where(better, value, best), torch.where(better, index + start, nearest)
        correct += int((nearest == y).sum())
    total = counts.sum()
    sigma_w = within / total
    sigma_b = centred.T @ centred / num_classes
    rtol = max(dim, num_classes) * torch.finfo(torch.float64).eps
    variances = within_sq / counts
    norms = centred.norm(dim=1)
    cdnv_sum = cos_sum = cos_sq_sum = angle_sum = gram_sq = 0.0
    for a in range(0, num_classes, BLOCK):
        for b in range(0, num_classes, BLOCK):
            gram = centred[a : a + BLOCK] @ centred[b : b + BLOCK].T
            gram_sq += float(gram.square().sum())
            cosines = gram / (norms[a : a + BLOCK, None] * norms[None, b : b + BLOCK])
            distances = torch.cdist(means[a : a + BLOCK], means[b : b + BLOCK]).square()
            terms = (variances[a : a + BLOCK, None] + variances[None, b : b + BLOCK]) / (2 * distances)
            off = ~torch.eye(cosines.shape[0], cosines.shape[1], dtype=torch.bool, device=gram.device) | (
                a != b
            )
            cdnv_sum += float(terms[off].sum())
            cos_sum += float(cosines[off].sum())
            cos_sq_sum += float(cosines[off].square().sum())
            angle_sum += float((cosines[off] + 1.0 / (num_classes - 1)).abs().sum())
    ordered = num_classes * (num_classes - 1)
    inner = float(centred.square().sum() - centred.sum(0).square().sum() / num_classes)
    etf_sq = 2.0 - 2.0 * inner / (math.sqrt(gram_sq) * math.sqrt(num_classes - 1))
    return {
        "nc1": float(
            torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True, rtol=rtol)) / num_classes
        ),
        "nc1_trace_ratio": float(torch.trace(sigma_w) / torch.trace(sigma_b)),
        "cdnv": cdnv_sum / ordered,
        "ncc_acc": correct / float(total),
        "nc2_equinorm": float(norms.std() / norms.mean()),
        "nc2_equiangle": math.sqrt((cos_sq_sum - cos_sum**2 / ordered) / (ordered - 1)),
        "nc2_maxangle": angle_sum / ordered,
        "nc2_etf": math.sqrt(max(etf_sq, 0.0)),
    }


def largest_difference(got: dict[str, float], expected: dict[str, float], case: Case) -> float:
    """The largest relative difference over the continuous metrics; raises if a metric disagrees."""
    worst = 0.0
    for name, value in expected.items():
        if name == "ncc_acc":
            if abs(got[name] - value) > COUNT_TOLERANCE:
                raise RuntimeError(f"{case}: ncc_acc {got[name]} (ours) vs {value} (reference)")
            continue
        difference = abs(got[name] - value) / abs(value)
        if difference > RELATIVE_TOLERANCE:
            raise RuntimeError(f"{case}: {name} = {got[name]!r} (ours) vs {value!r} (reference)")
        worst = max(worst, difference)
    return worst


HEADER = (
    f"{'C':>6} {'d':>4} {'N':>7} | {'pass 1 s':>8} {'next s':>7} {'pass 2 s':>8} {'s/batch':>7} "
    f"{'compute s':>9} | {'peak GiB':>8} | {'ref s':>7} {'max rel diff':>12}"
)


def measure(case: Case, device: str, helpers) -> str:
    data = batches(case, true_means(case, device))
    timings = ours(case, data, device, helpers)
    peak = "n/a" if timings.peak_bytes is None else f"{timings.peak_bytes / 2**30:.2f}"
    row = (
        f"{case.num_classes:6d} {case.dim:4d} {case.num_samples:7d} | {timings.pass1:8.1f} "
        f"{timings.next_phase:7.2f} {timings.pass2:8.1f} {timings.pass2 / case.num_batches:7.3f} "
        f"{timings.compute:9.2f} | {peak:>8} | "
    )
    if device == "cpu" and case.num_classes > REFERENCE_MAX_CLASSES:
        return row + f"{'--':>7} {'(skipped)':>12}"
    start = time.perf_counter()
    expected = reference(case, data)
    seconds = time.perf_counter() - start
    return row + f"{seconds:7.1f} {largest_difference(timings.result, expected, case):12.1e}"


def run(cases: list[Case], device: str = "cpu") -> None:
    helpers = _load_bench_metrics()
    print(f"threads={torch.get_num_threads()}  batch={BATCH_SIZE}  features float32, made on {device} first")
    print(HEADER)
    print("-" * len(HEADER), flush=True)
    for case in cases:
        print(measure(case, device, helpers), flush=True)


def main(quick: bool = False, device: str = "cpu") -> None:
    """``make bench``: ``C`` in {1,000, 10,000} at ``d = 256`` (``N = 100,000``; ``--quick``: 20,000)."""
    samples = 20_000 if quick else 100_000
    run([Case(classes, 256, samples) for classes in (1_000, 10_000)], device)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--many-classes", action="store_true", help="the whole grid (hours on 2 cores)")
    parser.add_argument("--classes", type=int, nargs="*", default=[], help="one or more C")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--device", default="cpu")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    if args.many_classes:
        samples = {1_000: 50_000, 10_000: 100_000, 50_257: 200_000}
        grid = [Case(c, d, n) for d in (256, 768) for c, n in samples.items()]
    else:
        grid = [Case(c, args.dim, args.samples) for c in args.classes]
    if not grid:
        raise SystemExit("nothing to run: pass --many-classes or --classes C [C ...]")
    run(grid, args.device)
