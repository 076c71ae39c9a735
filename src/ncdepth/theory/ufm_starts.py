"""Where direct optimisation of the deep-linear UFM starts, so that it reaches the closed-form optimum.

In the reduced problem of :mod:`ncdepth.theory.ufm`, ``f = sum_k (n_k / 2N) F_k(x_k)`` with
``F_k(x) = 1/(1 + x^M) + (b/n_k) x``, every class has for ``M >= 2`` two local minima: ``x = 0``
(collapsed; ``F_k'(0) = b/n_k > 0``) and, while ``g(x) = M x^{M-1} / (x^M + 1)^2 = b/n_k`` has
roots ``x^- <= x^+``, the surviving branch ``x^+``. The optimum keeps the class iff
``F_k(x^+) < 1``. A start at the target decays can end on the wrong side of a class either way:
collapsed where the optimum keeps it (``x`` fell below ``x^-``), or kept on the branch where the
optimum collapses it. Two facts of the reduced problem give starts that reach the optimum:

1. **Continuation in the decays ends on the surviving branch of every class that has one.**
   Optimise first with every decay (``lambda_m`` and ``lambda_H``) times ``start_factor``, small
   enough that every class survives with a large ``x^+`` and the collapsed basin ``x < x^-`` is
   small (plain starts reach ``f*`` there), then raise the decays geometrically to the target,
   each stage warm-started from the last (:func:`continuation_factors`, :func:`continuation`). As
   the decay grows, ``b`` grows, ``x^+`` decreases and ``x^-`` increases, so ``x^+`` at a smaller
   decay lies in the basin ``x > x^-`` of ``x^+`` at the larger one: one stage suffices in the
   reduced problem, more keep each warm start closer in the full one.
2. **The optimum keeps exactly the largest classes.** ``min_x F_k`` increases with ``b/n_k``, so
   the classes kept are those with ``n_k >= n*`` for some threshold ``n*``. Collapsing, in the
   continuation end point, every class of size ``<= s`` (:func:`collapse`: ``x_k = 0``, a
   stationary point that the solver does not leave) and re-optimising gives the candidate of
   threshold ``s``, one per distinct class size (:func:`minority_sets`).

The lowest objective among the continuation end point and its minority collapses is then the
optimum (in ufm_experiment/imbalanced_quick and at 300 steps on the decays of
ufm_experiment/imbalanced, for every depth). :func:`starts` lists the starts of a job: the plain
ones (every ``init`` x ``restarts`` seeds) and, per seed, this continuation family.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch

from ncdepth.metrics.validation import ConstantFeaturesWarning
from ncdepth.theory.ufm import UFMResult, optimize, validate
from ncdepth.theory.ufm_job_config import UFMJob


def continuation_factors(stages: int, start_factor: float) -> list[float]:
    """The factors multiplying every decay along a continuation path with ``K = stages`` decays
    below the target: ``start_factor^{(K - j)/K}`` for ``j = 0..K``, geometric from
    ``start_factor`` up to 1 (the target); ``[1.0]`` for ``K = 0``. Raises ``ValueError`` unless
    ``stages >= 0`` and ``0 < start_factor < 1``."""
    if not (stages >= 0 and 0 < start_factor < 1):
        raise ValueError(f"need stages >= 0 and 0 < start_factor < 1, got {stages!r} and {start_factor!r}")
    return [start_factor ** ((stages - j) / stages) for j in range(stages)] + [1.0]


def continuation(
    class_sizes: Sequence[int],
    depth: int,
    weight_decay: float | Sequence[float],
    feature_decay: float,
    *,
    stages: int,
    start_factor: float,
    **options: Any,
) -> UFMResult:
    """:func:`ncdepth.theory.ufm.optimize` (``options``: its keywords) at every decay times each of
    :func:`continuation_factors`, each stage warm-started from the end of the last; the result is
    the last stage's, at the target decays (its ``history`` that stage's, step 0 the warm start)."""
    sizes, decays = validate(class_sizes, depth, weight_decay, feature_decay)
    result = None
    for factor in continuation_factors(stages, start_factor):
        scaled = [factor * value for value in decays]
        result = optimize(sizes, depth, scaled, factor * feature_decay, start=result, **options)
    return result


def minority_sets(class_sizes: Sequence[int]) -> list[tuple[int, ...]]:
    """For every distinct class size ``s``, ascending, the classes of size ``<= s``."""
    return [tuple(k for k, n in enumerate(class_sizes) if n <= s) for s in sorted(set(class_sizes))]


def collapse(result: UFMResult, classes: Sequence[int]) -> UFMResult:
    """``result`` with ``classes`` collapsed: their rows of ``W_M`` and the features of their
    samples set to 0 (the history emptied)."""
    last, features = result.weights[-1].clone(), result.features.clone()
    last[list(classes)] = 0.0
    features[:, torch.isin(result.labels, torch.tensor(classes))] = 0.0
    return replace(result, weights=(*result.weights[:-1], last), features=features, history=[])


def starts(job: UFMJob) -> Iterator[tuple[dict[str, Any], UFMResult]]:
    """The starts of ``job`` as ``(record, result)``, the record naming the start: ``init``,
    ``seed``, ``continuation`` (its stages; 0 for a plain start), ``collapsed`` (the classes
    collapsed in the continuation end point before the last optimisation) and ``final_objective``.
    Plain starts first (every ``init``, then its seeds), then per seed the continuation family
    (module docstring) from ``init[0]``, when ``job.continuation.stages >= 1``."""
    problem = (job.class_sizes, job.depth, job.weight_decay, job.feature_decay)
    options = {
        "width": job.width,
        "bias": job.bias,
        "loss": job.loss,
        "method": job.solver,
        "steps": job.iterations,
        "lr": job.lr,
        "log_every": job.log_every,
    }
    seeds = range(job.seed, job.seed + job.restarts)

    def record(
        init: str, seed: int, stages: int, classes: Sequence[int], result: UFMResult
    ) -> tuple[dict[str, Any], UFMResult]:
        name = {"init": init, "seed": seed, "continuation": stages, "collapsed": list(classes)}
        return {**name, "final_objective": result.final_objective}, result

    for init in job.init:
        for seed in seeds:
            yield record(init, seed, 0, (), optimize(*problem, init=init, seed=seed, **options))
    stages, init = job.continuation.stages, job.init[0]
    if not stages:
        return
    for seed in seeds:
        end = continuation(
            *problem,
            stages=stages,
            start_factor=job.continuation.start_factor,
            init=init,
            seed=seed,
            **options,
        )
        yield record(init, seed, stages, (), end)
        for classes in minority_sets(job.class_sizes):
            with warnings.catch_warnings():  # all classes collapsed: the features are 0 by construction
                warnings.simplefilter("ignore", ConstantFeaturesWarning)
                result = optimize(*problem, start=collapse(end, classes), **options)
            yield record(init, seed, stages, classes, result)
