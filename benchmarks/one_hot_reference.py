"""Per-batch one-hot accumulators, the way ``rhubarbwu/neural-collapse`` measures a layer (written here from
that description; nothing is fetched).

Pass 1, per batch ``(X, y)``: the ``B x C`` one-hot matrix ``Y`` gives the class sums ``Y^T X`` (``C x d``)
and counts ``1^T Y``; the means are ``sums / counts``. Pass 2, per batch, with ``E = X - M[y]``: the
within-class covariance sum ``E^T E`` (``d x d``), the per-class variance sums ``Y^T ||E||^2`` and the
nearest-class-centre hits from the ``B x C`` distance matrix ``cdist(X, M)``. Everything is float32, like the
features. Both passes cost a ``B x C x d`` product per batch (the one-hot one and the distances), which is
what ``bench_metrics.py`` compares ``NeuralCollapse``'s two passes against at ``C = 10,000``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor


def one_hot_pass_one(batches: Iterable[tuple[Tensor, Tensor]], num_classes: int) -> tuple[Tensor, Tensor]:
    """The class means ``(C, d)`` and counts ``(C,)`` from one-hot products."""
    sums = counts = None
    for features, labels in batches:
        one_hot = F.one_hot(labels, num_classes).to(features.dtype)
        batch_sums, batch_counts = one_hot.T @ features, one_hot.sum(0)
        sums = batch_sums if sums is None else sums + batch_sums
        counts = batch_counts if counts is None else counts + batch_counts
    return sums / counts[:, None], counts


def one_hot_pass_two(
    batches: Iterable[tuple[Tensor, Tensor]], means: Tensor, counts: Tensor
) -> dict[str, Tensor | float]:
    """``within_covariance`` ``(d, d)`` (``Sigma_W``, pooled, ``1/N``), ``variances`` ``(C,)`` and
    ``ncc_acc``."""
    num_classes, dim = means.shape
    covariance = means.new_zeros(dim, dim)
    variance_sums = means.new_zeros(num_classes)
    hits = 0
    for features, labels in batches:
        one_hot = F.one_hot(labels, num_classes).to(features.dtype)
        residuals = features - means[labels]
        covariance += residuals.T @ residuals
        variance_sums += one_hot.T @ residuals.square().sum(1)
        hits += int((torch.cdist(features, means).argmin(1) == labels).sum())
    total = counts.sum()
    return {
        "within_covariance": covariance / total,
        "variances": variance_sums / counts,
        "ncc_acc": hits / float(total),
    }
