"""Agreement of ncdepth's measures with the peer library's own code, on the same seeded features.

The peer is ``rhubarbwu/neural-collapse`` (Wu & Papyan, *Linguistic Collapse*), at commit ``c05a0b8``. Its
code is not part of ncdepth: this script imports its ``neural_collapse`` package at run time from the
checkout given as ``--peer PATH``::

    git clone https://github.com/rhubarbwu/neural-collapse && git -C neural-collapse checkout c05a0b8
    OMP_NUM_THREADS=1 python benchmarks/peer_agreement.py --peer neural-collapse

Without a usable checkout it prints one line saying how to get one and exits with status 2.

**What is compared.** For each configuration (``C = 10, d = 64`` balanced; ``C = 10, d = 64`` imbalanced;
``C = 1,000, d = 64`` imbalanced, the peer's kernels in tiles of 256 classes), seeded Gaussian class centres
plus a common offset plus unit noise are drawn in float64 and measured twice: as float64 features (torch's
default dtype set to float64 while the peer runs, so that its kernel grids are float64) and as the same
features cast to float32 (default dtype left at float32). The peer's statistics come from its accumulators
used as its README does (``MeanAccumulator``, then ``CovarAccumulator`` and ``VarNormAccumulator`` with those
means; batches of 1,024 samples; ``dtype=torch.float64``); the only change made to it is a fixed seed for
the random start vector of the ``scipy`` ``svds`` its ``"svd"`` metric calls. Ours come from
``ncdepth.metrics.functional.neural_collapse(features, labels, C, weight=W, measures=(...), ood_mean=...)``.
The peer's global mean is the unweighted mean of its class means by default (and its
``compute(weighted=True)`` fails with a shape error in ``c05a0b8``), so ncdepth's sample-weighted ``mu_G``
(``sum_c N_c mu_c / N`` from ``ncdepth.metrics.functional.class_statistics``) is passed as ``m_G`` to every
peer measure that takes one (``docs/metrics.md``, "Generalized measures"). Ours against the peer's:

* ``nc1`` -- ``measure.covariance_ratio(Sigma_W, M, mu_G, "pinv")`` and, where ``svds`` can run
  (``C - 1 < d``), ``covariance_ratio(..., "svd")``: the peer's ``Sigma_B = M~^T M~ / K`` weighs classes
  equally and its ``/K`` is ours ``/C``; its ``Sigma_W`` is pooled and divided by ``N``, as ours.
* ``nc1_trace_ratio`` -- ``covariance_ratio(Sigma_W, M, mu_G, "quotient")``.
* ``cdnv`` -- ``measure.variability_cdnv(var_norms, M, tile_size=...)`` (``dist_exp`` 1), ``var_norms`` from
  ``VarNormAccumulator.compute()`` (biased per-class variances, as ours); no global mean involved.
* ``nc2_etf`` -- ``measure.simplex_etf_error(M, mu_G)``: ``|| G/||G||_F - (I - 11^T/K)/sqrt(K - 1) ||_F``
  with ``G`` the Gram matrix of the centred means, the same definition as ours.
* ``nc2g_dist``, ``nc2g_log`` -- the variance returned by ``kernels.kernel_stats(M, mu_G, tile_size=...)``
  with ``kernels.dist_kernel`` and ``kernels.log_kernel`` (ddof 0 over the unordered pairs, as ours).
* ``nc3u_uni_dual`` -- ``measure.similarities(W, M, mu_G).var()`` (ddof 1, as ours).
* ``nc5_ood_dev`` -- ``measure.orthogonality_deviation(M, mu_G_ood)`` (uncentred means); both sides get
  the same ``mu_G_ood``: the float64 mean of a seeded set of out-of-distribution features of the same dtype.

Not compared, because the definitions differ: the peer's ``self_duality_error`` (the ETF error of
``W M~^T``; our ``nc3`` is ``|| W^T/||W||_F - M~/||M~||_F ||_F^2``) and ``clf_ncc_agreement`` (agreement of
``argmax W h`` without the bias with the NCC; our ``nc4`` is the disagreement of the biased prediction).

**Printed**: one row per configuration, dtype and measure -- ours, the peer's and their relative difference
``|ours - peer| / max(|ours|, |peer|)`` -- then the largest relative difference on float64 and on float32
features (and per measure), and, to tell which side a float32 difference comes from, the largest distance
of each side from ncdepth run in float64 on the same (float32-valued) features; then the wall time (5 to
10 s on one thread). Not part of ``make bench`` (it needs the peer).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

PEER_COMMIT = "c05a0b8"
HOW_TO_GET = (
    "git clone https://github.com/rhubarbwu/neural-collapse && "
    f"git -C neural-collapse checkout {PEER_COMMIT}, then pass --peer neural-collapse"
)
PEER_MODULES = (
    "neural_collapse",
    "neural_collapse.accumulate",
    "neural_collapse.measure",
    "neural_collapse.kernels",
)
MEASURES = (
    "nc1 (pinv)",
    "nc1 (svd)",
    "nc1_trace_ratio (quotient)",
    "cdnv",
    "nc2_etf",
    "nc2g_dist",
    "nc2g_log",
    "nc3u_uni_dual",
    "nc5_ood_dev",
)
EXTRA = ("nc2g_dist", "nc2g_log", "nc3u_uni_dual", "nc5_ood_dev")
BATCH = 1024


@dataclass(frozen=True)
class Configuration:
    name: str
    num_classes: int
    dim: int
    counts: tuple[int, ...]
    tile: int | None  # the peer's tile_size for its C x C kernel grids


CONFIGURATIONS = (
    Configuration("C=10 d=64 balanced", 10, 64, (100,) * 10, None),
    Configuration("C=10 d=64 imbalanced", 10, 64, tuple(20 + 40 * c for c in range(10)), None),
    Configuration("C=1000 d=64 tiles 256", 1000, 64, tuple(10 + c % 11 for c in range(1000)), 256),
)


def fail(reason: str) -> None:
    print(f"peer_agreement: {reason}; get the peer with: {HOW_TO_GET}", file=sys.stderr)
    raise SystemExit(2)


def load_peer(path: str) -> dict[str, ModuleType]:
    """Import the peer's ``neural_collapse`` package from the checkout at ``path`` (exit 2 if it cannot)."""
    root = Path(path).expanduser().resolve()
    if not (root / "neural_collapse" / "__init__.py").is_file():
        fail(f"no neural_collapse package under --peer {path}")
    sys.path.insert(0, str(root))
    try:
        modules = {name: importlib.import_module(name) for name in PEER_MODULES}
    except Exception as error:
        fail(f"importing neural_collapse from {root} failed ({type(error).__name__}: {error})")
    origin = Path(modules["neural_collapse"].__file__ or "").resolve()
    if root not in origin.parents:
        fail(f"neural_collapse was imported from {origin}, not from {root}")
    seed_svds(modules["neural_collapse.measure"])
    return modules


def seed_svds(measure: ModuleType) -> None:
    """Give the ``svds`` that the peer's ``covariance_ratio(..., "svd")`` calls a fixed random start vector,
    so that its last digits are the same from run to run (ARPACK's start is random otherwise)."""
    import inspect

    svds = measure.svds
    names = inspect.signature(svds).parameters
    keyword = "rng" if "rng" in names else "random_state" if "random_state" in names else None
    if keyword is not None:
        measure.svds = lambda *args, **kwargs: svds(*args, **{keyword: 0}, **kwargs)


def make_data(config: Configuration, seed: int):
    """Float64 features, labels (shuffled), classifier weight and out-of-distribution features."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    centres = 3.0 * torch.randn(config.num_classes, config.dim, generator=generator, dtype=f64)
    offset = 2.0 * torch.randn(config.dim, generator=generator, dtype=f64)
    labels = torch.repeat_interleave(torch.arange(config.num_classes), torch.tensor(config.counts))
    labels = labels[torch.randperm(len(labels), generator=generator)]
    noise = torch.randn(len(labels), config.dim, generator=generator, dtype=f64)
    features = centres[labels] + offset + noise
    weight = torch.randn(config.num_classes, config.dim, generator=generator, dtype=f64) / config.dim**0.5
    ood = torch.randn(500, config.dim, generator=generator, dtype=f64) + 4.0 * torch.randn(
        config.dim, generator=generator, dtype=f64
    )
    return features, labels, weight, ood


def ours(features, labels, config: Configuration, weight, ood_mean) -> dict[str, float]:
    from ncdepth.metrics.functional import neural_collapse

    result = neural_collapse(
        features, labels, config.num_classes, weight=weight, measures=EXTRA, ood_mean=ood_mean
    )
    values = {
        "nc1 (pinv)": result["nc1"],
        "nc1 (svd)": result["nc1"],
        "nc1_trace_ratio (quotient)": result["nc1_trace_ratio"],
        "cdnv": result["cdnv"],
        "nc2_etf": result["nc2_etf"],
    }
    return values | {name: result[name] for name in EXTRA}


def weighted_global_mean(features, labels, num_classes: int):
    """ncdepth's sample-weighted ``mu_G = sum_c N_c mu_c / N`` (float64)."""
    from ncdepth.metrics.functional import class_statistics

    stats = class_statistics(features, labels, num_classes, means_only=True)
    return stats.counts @ stats.means / stats.counts.sum()


def peers(peer: dict[str, ModuleType], features, labels, config: Configuration, weight, mu_g, ood_mean):
    """The peer's measures, its default dtype float64 for float64 features (as the docs describe)."""
    import torch

    accumulate, measure, kernels = (
        peer[f"neural_collapse.{name}"] for name in ("accumulate", "measure", "kernels")
    )
    C, d, tile, f64 = config.num_classes, config.dim, config.tile, torch.float64
    batches = [(features[i : i + BATCH], labels[i : i + BATCH]) for i in range(0, len(labels), BATCH)]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(features.dtype)
    try:
        mean_accum = accumulate.MeanAccumulator(C, d, "cpu", dtype=f64)
        for X, Y in batches:
            mean_accum.accumulate(X, Y)
        means, _ = mean_accum.compute()  # its own global mean is unweighted: ours is passed instead
        covar_accum = accumulate.CovarAccumulator(C, d, "cpu", dtype=f64, M=means)
        var_norms_accum = accumulate.VarNormAccumulator(C, d, "cpu", dtype=f64, M=means)
        for X, Y in batches:
            covar_accum.accumulate(X, Y, means)
            var_norms_accum.accumulate(X, Y, means)
        covar_within = covar_accum.compute()
        var_norms, _ = var_norms_accum.compute()
        return {
            "nc1 (pinv)": measure.covariance_ratio(covar_within, means, mu_g, "pinv"),
            "nc1 (svd)": measure.covariance_ratio(covar_within, means, mu_g, "svd") if C - 1 < d else None,
            "nc1_trace_ratio (quotient)": measure.covariance_ratio(covar_within, means, mu_g, "quotient"),
            "cdnv": measure.variability_cdnv(var_norms, means, tile_size=tile),
            "nc2_etf": measure.simplex_etf_error(means, mu_g),
            "nc2g_dist": kernels.kernel_stats(means, mu_g, tile_size=tile)[1],
            "nc2g_log": kernels.kernel_stats(means, mu_g, kernel=kernels.log_kernel, tile_size=tile)[1],
            "nc3u_uni_dual": measure.similarities(weight, means, mu_g).var().item(),
            "nc5_ood_dev": measure.orthogonality_deviation(means, ood_mean),
        }
    finally:
        torch.set_default_dtype(previous)


def relative_difference(a: float, b: float) -> float:
    scale = max(abs(a), abs(b))
    return abs(a - b) / scale if scale else 0.0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--peer", required=True, help="a checkout of rhubarbwu/neural-collapse (commit c05a0b8)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    peer = load_peer(args.peer)

    import torch

    print(f"peer: {Path(peer['neural_collapse'].__file__).parent.parent} (compared at commit {PEER_COMMIT})")
    print(f"torch {torch.__version__}; relative difference |ours - peer| / max(|ours|, |peer|)\n")
    header = f"| {'configuration':<22} | {'dtype':<7} | {'measure':<26} | {'ours':>24} | {'peer':>24} | rel. diff |"
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    largest: dict[str, tuple[float, str]] = {}
    per_measure: dict[tuple[str, str], float] = {}
    from_exact: dict[tuple[str, str], float] = {}  # float32 features: (side, measure) -> distance
    for index, config in enumerate(CONFIGURATIONS):
        features64, labels, weight64, ood64 = make_data(config, args.seed + index)
        for dtype in (torch.float64, torch.float32):
            dname = str(dtype).removeprefix("torch.")
            features, weight = features64.to(dtype), weight64.to(dtype)
            ood_mean = ood64.to(dtype).double().mean(0)
            mu_g = weighted_global_mean(features, labels, config.num_classes)
            mine = ours(features, labels, config, weight, ood_mean)
            theirs = peers(peer, features, labels, config, weight, mu_g, ood_mean)
            if dtype == torch.float32:  # which side is off: both against float64 on the same values
                exact = ours(features.double(), labels, config, weight.double(), ood_mean)
                for side, values in (("ours", mine), ("peer", theirs)):
                    for name in MEASURES:
                        if values[name] is not None:
                            rel = relative_difference(values[name], exact[name])
                            from_exact[side, name] = max(from_exact.get((side, name), 0.0), rel)
            for name in MEASURES:
                if theirs[name] is None:
                    row = f"| {config.name:<22} | {dname:<7} | {name:<26} | {mine[name]:>24.17g} | "
                    print(row + f"{'n/a (svds: C-1 >= d)':>24} | {'':>9} |")
                    continue
                rel = relative_difference(mine[name], theirs[name])
                print(
                    f"| {config.name:<22} | {dname:<7} | {name:<26} | {mine[name]:>24.17g} | "
                    f"{theirs[name]:>24.17g} | {rel:>9.1e} |"
                )
                if rel >= largest.get(dname, (-1.0, ""))[0]:
                    largest[dname] = (rel, f"{name}, {config.name}")
                per_measure[dname, name] = max(per_measure.get((dname, name), 0.0), rel)
    print()
    for dname in ("float64", "float32"):
        rel, where = largest[dname]
        print(f"largest relative difference, {dname} features: {rel:.1e} ({where})")
        each = ", ".join(f"{name} {per_measure[dname, name]:.1e}" for name in MEASURES)
        print(f"  per measure: {each}")
    print("float32 features, largest relative distance from ncdepth in float64 on the same (float32) values:")
    for side in ("ours", "peer"):
        print(f"  {side}: " + ", ".join(f"{name} {from_exact[side, name]:.1e}" for name in MEASURES))
    print(f"\nwall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
