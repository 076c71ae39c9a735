"""Neural-collapse metrics as pure functions (DESIGN §1 is the contract for every formula).

Every function takes ``features`` of shape ``(N, ...)`` (flattened to ``(N, d)``) and integer ``labels`` of
shape ``(N,)`` in ``0..C-1``; results are float64. All of them are computed from the sufficient statistics of
:mod:`ncdepth.metrics.stats`, the same code the streaming :class:`~ncdepth.metrics.NeuralCollapse` uses, so the
functional and the streaming results agree to rounding.

Conventions shared by all metrics:

* ``mu_G`` is the sample-weighted global mean; ``Sigma_W`` is pooled and biased (``1/N``);
  ``Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T`` weighs classes equally.
* Standard deviations in the NC2 metrics use Bessel's correction (ddof=1), as ``torch.std`` does in
  Papyan, Han & Donoho's reference code.
* ``nc1`` uses the pseudo-inverse of ``Sigma_B`` on its numerical rank: eigenvalues below
  ``rtol * lambda_max`` (default ``rtol = max(d, C) * eps_float64``, as ``torch.linalg.pinv``) are dropped, so a
  layer narrower than ``C - 1`` is handled exactly. When all class means coincide (``Sigma_B = 0``) ``nc1`` is NaN.
* A class with no samples raises ``ValueError``; with ``empty_classes="nan"`` the metrics built on all class
  means (``nc1``, ``nc1_trace_ratio``, ``cdnv``, ``nc2_*``, ``nc3``) are NaN, while ``ncc_acc`` and ``nc4`` are
  computed over the classes that are present.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ncdepth.metrics.stats import (
    ClassStatistics,
    class_sums,
    count_invalid_labels,
    finalize,
    flatten_features,
    make_anchors,
    second_pass,
)

METRIC_NAMES = (
    "nc1",
    "nc1_trace_ratio",
    "cdnv",
    "ncc_acc",
    "nc2_equinorm",
    "nc2_equiangle",
    "nc2_maxangle",
    "nc2_etf",
    "nc3",
    "nc4",
)
EMPTY_CLASS_POLICIES = ("error", "nan")
_CLASS_MEAN_METRICS = (
    "nc1",
    "nc1_trace_ratio",
    "cdnv",
    "nc2_equinorm",
    "nc2_equiangle",
    "nc2_maxangle",
    "nc2_etf",
    "nc3",
)


def check_labels(labels: Tensor, num_rows: int, num_classes: int) -> None:
    """Validate the shape and dtype of ``labels`` (cheap, no host sync)."""
    if num_classes < 2 or int(num_classes) != num_classes:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}")
    if labels.ndim != 1 or labels.shape[0] != num_rows:
        raise ValueError(f"labels must have shape ({num_rows},), got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")


def class_statistics(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    logits: Tensor | None = None,
    ncc_centres: Tensor | None = None,
    pool: str = "flatten",
    full_scatter: bool | None = None,
) -> ClassStatistics:
    """Both passes over one batch holding all the data; see :mod:`ncdepth.metrics.stats`.

    ``full_scatter`` (default: when ``d < C``) accumulates the ``d x d`` scatter instead of the ``C x C``
    projected one. ``ncc_centres`` ``(C, d)`` replaces the class means as nearest-class centres.
    """
    h = flatten_features(features, pool)
    check_labels(labels, h.shape[0], num_classes)
    labels = labels.to(device=h.device, dtype=torch.long)
    if not bool(torch.isfinite(h).all()):
        raise ValueError("features contain NaN or Inf")
    if bool(count_invalid_labels(labels, num_classes) > 0):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    if full_scatter is None:
        full_scatter = h.shape[1] < num_classes
    counts, sums = class_sums(h, labels, num_classes)
    centres = None if ncc_centres is None else ncc_centres.to(h.device, torch.float64)
    anchors = make_anchors(counts, sums, h.dtype, centres)
    batch = second_pass(h, labels, anchors, full_scatter=full_scatter)
    disagreements = None
    if logits is not None:
        disagreements = (logits.argmax(1) != batch.ncc_prediction).sum().double()
    return finalize(
        counts,
        anchors,
        batch.offsets,
        batch.within_sq,
        batch.scatter,
        batch.ncc_correct,
        disagreements,
        full_scatter=full_scatter,
    )


def metrics_from_statistics(
    stats: ClassStatistics,
    *,
    weight: Tensor | None = None,
    rtol: float | None = None,
    empty_classes: str = "error",
    layer: str | None = None,
) -> dict[str, float]:
    """Every DESIGN §1 metric of one layer from its sufficient statistics.

    ``nc3`` is included when the classifier ``weight`` ``(C, d)`` is given, ``nc4`` when the statistics hold
    NCC/network disagreements. ``layer`` only names the layer in error messages.
    """
    if empty_classes not in EMPTY_CLASS_POLICIES:
        raise ValueError(f"empty_classes must be one of {list(EMPTY_CLASS_POLICIES)}, got {empty_classes!r}")
    where = f" in layer {layer!r}" if layer is not None else ""
    counts = stats.counts
    total = counts.sum()
    out: dict[str, float] = {}
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty and empty_classes == "error":
        raise ValueError(
            f"classes {empty} have no samples{where}; pass empty_classes='nan' to get NaN for the "
            "metrics that need every class mean"
        )
    if empty:
        out = dict.fromkeys(_CLASS_MEAN_METRICS, math.nan)
        if weight is None:
            del out["nc3"]
    else:
        out = _class_mean_metrics(stats, weight=weight, rtol=rtol)
    out["ncc_acc"] = float(stats.ncc_correct.sum() / total)
    if stats.nc4_disagreements is not None:
        out["nc4"] = float(stats.nc4_disagreements / total)
    return {name: out[name] for name in METRIC_NAMES if name in out}


def _class_mean_metrics(
    stats: ClassStatistics, *, weight: Tensor | None, rtol: float | None
) -> dict[str, float]:
    num_classes, dim = stats.means.shape
    centred = stats.centred_means
    gram = centred @ centred.T
    variances = stats.within_sq / stats.counts
    trace_within = stats.within_sq.sum() / stats.counts.sum()
    trace_between = gram.trace() / num_classes

    out = {
        "nc1": _nc1(gram, stats.projected_scatter / stats.counts.sum(), rtol, dim),
        "nc1_trace_ratio": float(trace_within / trace_between),
        "cdnv": _cdnv(gram, variances),
    }
    out.update(_nc2(gram))
    if weight is not None:
        out["nc3"] = _nc3(weight, centred)
    return out


def _nc1(gram: Tensor, projected_within: Tensor, rtol: float | None, dim: int) -> float:
    """``Tr(Sigma_W Sigma_B^+) / C`` from ``G = M~ M~^T`` and ``A = M~ Sigma_W M~^T``.

    With ``G = V diag(lambda) V^T`` and ``Sigma_B = M~^T M~ / C``:
    ``Tr(Sigma_W Sigma_B^+) / C = sum_{k: lambda_k > tol} (V^T A V)_kk / lambda_k^2``.
    """
    num_classes = gram.shape[0]
    rtol = max(dim, num_classes) * torch.finfo(torch.float64).eps if rtol is None else rtol
    eigenvalues, vectors = torch.linalg.eigh(gram)
    keep = eigenvalues > eigenvalues.max() * rtol
    if eigenvalues.max() <= 0 or not bool(keep.any()):
        return math.nan
    projected = (vectors * (projected_within @ vectors)).sum(0)
    return float((projected[keep] / eigenvalues[keep] ** 2).sum())


def _cdnv(gram: Tensor, variances: Tensor) -> float:
    """Mean over ``c < c'`` of ``(var_c + var_c') / (2 ||mu_c - mu_c'||^2)``."""
    num_classes = gram.shape[0]
    norms = gram.diagonal()
    distances = norms[:, None] + norms[None, :] - 2.0 * gram
    rows, cols = torch.triu_indices(num_classes, num_classes, 1, device=gram.device)
    ratios = (variances[rows] + variances[cols]) / (2.0 * distances[rows, cols])
    return float(ratios.mean())


def _nc2(gram: Tensor) -> dict[str, float]:
    """Equinorm, equiangularity, max-angle and distance-to-simplex-ETF of the centred means."""
    num_classes = gram.shape[0]
    norms = gram.diagonal().clamp(min=0.0).sqrt()
    cosines = gram / (norms[:, None] * norms[None, :])
    off_diagonal = cosines[~torch.eye(num_classes, dtype=torch.bool, device=gram.device)]
    etf = torch.eye(num_classes, dtype=gram.dtype, device=gram.device) - 1.0 / num_classes
    return {
        "nc2_equinorm": float(norms.std() / norms.mean()),
        "nc2_equiangle": float(off_diagonal.std()),
        "nc2_maxangle": float((off_diagonal + 1.0 / (num_classes - 1)).abs().mean()),
        "nc2_etf": float(torch.linalg.matrix_norm(gram / gram.norm() - etf / etf.norm(), ord="fro")),
    }


def _nc3(weight: Tensor, centred: Tensor) -> float:
    """``|| W^T/||W||_F - M~/||M~||_F ||_F^2`` with ``W`` the ``C x d`` classifier weight."""
    weight = weight.detach().to(centred)
    if weight.shape != centred.shape:
        raise ValueError(
            f"classifier weight must have shape {tuple(centred.shape)} (C, d), got {tuple(weight.shape)}"
        )
    return float((weight / weight.norm() - centred / centred.norm()).pow(2).sum())


def neural_collapse(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
) -> dict[str, float]:
    """All DESIGN §1 metrics of one layer, keyed by their names.

    ``nc3`` and ``nc4`` are included when the classifier ``weight`` ``(C, d)`` (and optional ``bias`` ``(C,)``)
    is given; ``nc4`` compares the linear classifier's prediction on these features with the NCC prediction.
    """
    logits = None if weight is None else classifier_logits(features, weight, bias)
    stats = class_statistics(features, labels, num_classes, logits=logits)
    return metrics_from_statistics(stats, weight=weight)


def classifier_logits(features: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``h W^T + b`` in float64."""
    h = features.reshape(features.shape[0], -1).double()
    if weight.ndim != 2 or weight.shape[1] != h.shape[1]:
        raise ValueError(f"classifier weight must have shape (C, {h.shape[1]}), got {tuple(weight.shape)}")
    logits = h @ weight.detach().to(h).T
    return logits if bias is None else logits + bias.detach().to(h)


def _one(name: str, features: Tensor, labels: Tensor, num_classes: int) -> float:
    return metrics_from_statistics(class_statistics(features, labels, num_classes))[name]


def nc1(features: Tensor, labels: Tensor, num_classes: int) -> float:
    """``Tr(Sigma_W Sigma_B^+) / C`` (Papyan, Han & Donoho 2020)."""
    return _one("nc1", features, labels, num_classes)


def nc1_trace_ratio(features: Tensor, labels: Tensor, num_classes: int) -> float:
    """``Tr(Sigma_W) / Tr(Sigma_B)``."""
    return _one("nc1_trace_ratio", features, labels, num_classes)


def cdnv(features: Tensor, labels: Tensor, num_classes: int) -> float:
    """Class-distance normalised variance: mean over ``c < c'`` of
    ``(var_c + var_c') / (2 ||mu_c - mu_c'||^2)`` (Galanti et al.)."""
    return _one("cdnv", features, labels, num_classes)


def nc2_equinorm(features: Tensor, labels: Tensor, num_classes: int) -> float:
    """``std(||mu_c - mu_G||) / mean(||mu_c - mu_G||)``, std with ddof=1."""
    return _one("nc2_equinorm", features, labels, num_classes)


def nc2_equiangle(features: Tensor, labels: Tensor, num_classes: int) -> float:
    """std (ddof=1) over ordered pairs ``c != c'`` of ``cos(mu_c - mu_G, mu_c' - mu_G)``."""
    return _one("nc2_equiangle", features, labels, num_classes)


def nc2_maxangle(features: Tensor, labels: Tensor, num_classes: int) -> float:
    """Mean over ``c != c'`` of ``|cos(mu_c - mu_G, mu_c' - mu_G) + 1/(C-1)|``."""
    return _one("nc2_maxangle", features, labels, num_classes)


def nc2_etf(features: Tensor, labels: Tensor, num_classes: int) -> float:
    """``|| G/||G||_F - (I - 11^T/C)/||I - 11^T/C||_F ||_F`` with ``G = M~^T M~`` (Zhu et al.)."""
    return _one("nc2_etf", features, labels, num_classes)


def class_means(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``(C, d)`` float64 class means ``mu_c`` (NaN rows for empty classes)."""
    return class_statistics(features, labels, num_classes).means


def class_variances(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``(C,)`` float64 ``var_c = (1/N_c) sum_{y_i=c} ||h_i - mu_c||^2`` (biased, centred)."""
    stats = class_statistics(features, labels, num_classes)
    return stats.within_sq / stats.counts


def ncc_predict(features: Tensor, means: Tensor) -> Tensor:
    """Nearest-class-centre prediction ``argmin_c ||h - mu_c||`` for each row, as ``(N,)`` int64."""
    h = features.reshape(features.shape[0], -1).double()
    centres = means.to(h)
    origin = centres.mean(0)
    h, centres = h - origin, centres - origin
    distances = (h * h).sum(1, keepdim=True) - 2.0 * h @ centres.T + (centres * centres).sum(1)
    return distances.argmin(1)


def ncc_acc(features: Tensor, labels: Tensor, num_classes: int, *, means: Tensor | None = None) -> float:
    """Fraction of samples whose nearest class centre is their label.

    ``means`` ``(C, d)`` are the centres (DESIGN: the *train* split's class means); by default the class
    means of ``features`` themselves.
    """
    stats = class_statistics(features, labels, num_classes, ncc_centres=means)
    return float(stats.ncc_correct.sum() / stats.counts.sum())


def nc3(weight: Tensor, features: Tensor, labels: Tensor, num_classes: int) -> float:
    """``|| W^T/||W||_F - M~/||M~||_F ||_F^2`` (Papyan) for the ``C x d`` classifier weight ``W``."""
    stats = class_statistics(features, labels, num_classes)
    return metrics_from_statistics(stats, weight=weight)["nc3"]


def nc4(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    logits: Tensor | None = None,
) -> float:
    """Fraction of samples whose network prediction (``argmax`` of ``logits``, or of ``h W^T + b``, bias
    included) differs from the NCC prediction at this (penultimate) layer."""
    if logits is None:
        if weight is None:
            raise ValueError("nc4 needs the classifier `weight` (and `bias`) or the `logits`")
        logits = classifier_logits(features, weight, bias)
    stats = class_statistics(features, labels, num_classes, logits=logits)
    return float(stats.nc4_disagreements / stats.counts.sum())


def effective_depth(ncc_train_errors: Sequence[float], eps: float) -> int | None:
    """Galanti et al.'s effective depth: the smallest 1-based layer index ``l`` whose NCC *train* error is
    ``<= eps``, or ``None`` when no measured layer reaches it."""
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must lie in [0, 1], got {eps}")
    for layer, error in enumerate(ncc_train_errors, start=1):
        if error <= eps:
            return layer
    return None
