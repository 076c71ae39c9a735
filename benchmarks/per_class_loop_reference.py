"""The straightforward CDNV + NCC analysis, one Python loop over the classes, in float32.

The way a research script measures a layer (the "IntermediateNC seed" style): for each class, select its rows
``H_c`` with a mask, take their mean ``mu_c`` and biased variance ``var_c = mean_i ||h_i - mu_c||^2``; then
``cdnv = mean_{c < c'} (var_c + var_c') / (2 ||mu_c - mu_c'||^2)`` over the ``C x C`` distance matrix, and the
NCC accuracy, the fraction of samples whose nearest mean (``torch.cdist``) is their own label's. Everything
is float32, on the whole ``N x d`` matrix; it shares no code with ``ncdepth.metrics``. ``bench_metrics.py``
times it beside ``neural_collapse`` and ``NeuralCollapse``, which compute every metric of
``docs/metrics.md`` as well.
"""

from __future__ import annotations

import torch
from torch import Tensor


def per_class_loop_cdnv_ncc(features: Tensor, labels: Tensor, num_classes: int) -> dict[str, float]:
    """``{"cdnv": ..., "ncc_acc": ...}`` of ``features`` ``(N, d)`` float32 with ``labels`` ``(N,)`` in
    ``0..C-1`` (every class present)."""
    means, variances = [], []
    for c in range(num_classes):
        rows = features[labels == c]
        mean = rows.mean(0)
        means.append(mean)
        variances.append((rows - mean).square().sum(1).mean())
    means, variances = torch.stack(means), torch.stack(variances)
    distances = torch.cdist(means, means).square()
    pairs = torch.triu_indices(num_classes, num_classes, offset=1, device=features.device)
    first, second = pairs[0], pairs[1]
    cdnv = ((variances[first] + variances[second]) / (2.0 * distances[first, second])).mean()
    nearest = torch.cdist(features, means).argmin(1)
    return {"cdnv": float(cdnv), "ncc_acc": float((nearest == labels).float().mean())}
