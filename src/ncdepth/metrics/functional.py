"""Neural-collapse metrics as pure functions; ``docs/metrics.md`` is the contract for every formula.

Every function takes ``features`` of shape ``(N, ...)`` (flattened to ``(N, d)``) and integer ``labels`` of
shape ``(N,)`` in ``0..C-1``; results are float64. All of them are computed from the sufficient statistics of
:mod:`ncdepth.metrics.stats`, the same code the streaming :class:`~ncdepth.metrics.NeuralCollapse` uses, so
the functional and the streaming results agree to rounding.

Conventions shared by all metrics (``docs/metrics.md`` gives the formulas and how they differ from other
implementations):

* ``mu_G`` is the sample-weighted global mean; ``Sigma_W`` is pooled and biased (``1/N``);
  ``Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T`` weighs classes equally; ``nc1`` divides by ``C``.
* Standard deviations in the NC2 metrics use Bessel's correction (ddof=1), as ``torch.std`` does in
  Papyan, Han & Donoho's reference code.
* ``nc1`` uses the pseudo-inverse of ``Sigma_B`` on its numerical rank: eigenvalues below
  ``rtol * lambda_max`` (default ``rtol = max(d, C) * eps_float64``, as ``torch.linalg.pinv``) are dropped,
  so a layer narrower than ``C - 1`` is handled exactly.
* ``nc4`` compares the network's prediction, bias included, with the nearest-class-centre prediction.
* When all class means coincide (``Sigma_B = 0``, e.g. constant features) the metrics built on the centred
  class means (``nc1``, ``nc1_trace_ratio``, ``cdnv``, ``nc2_*``, ``nc3``) are NaN and a
  :class:`~ncdepth.metrics.validation.ConstantFeaturesWarning` says so.
* A class is *measured* when it has at least ``min_class_count`` samples (default 1). What happens to the
  others is ``empty_classes``: ``"error"`` (default) raises ``ValueError``; ``"nan"`` makes the metrics built
  on all class means (``nc1``, ``nc1_rank_normalized``, ``nc1_trace_ratio``, ``cdnv``, ``nc2_*``, ``nc3``)
  NaN, while ``ncc_acc`` and ``nc4`` are computed over all samples; ``"drop"`` measures every metric over the
  measured classes only, as if the others and their samples were not in the data (classifier rows, bias
  entries, logit columns and NCC centres restricted to them), and reports ``num_classes_present``.
* The nearest class centres default to the class means of the features themselves; ``ncc_means`` (the *train*
  split's class means, from :func:`class_means`) measures a test split as the streaming metric's
  ``ncc_reference`` does, for ``ncc_acc`` and ``nc4`` alike.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from ncdepth.metrics.generalized import generalized_metrics
from ncdepth.metrics.probe import PROBE_MAX_DIM, PROBE_RIDGE, add_moment, fit_probe, make_projection
from ncdepth.metrics.registry import BY_NAME, CORE_NAMES, check_measures
from ncdepth.metrics.stats import (
    ClassStatistics,
    PassTwoSums,
    all_finite,
    class_counts,
    class_sums,
    count_invalid_labels,
    finalize,
    flatten_features,
    make_anchors,
    second_pass,
    uses_full_scatter,
)
from ncdepth.metrics.validation import (
    ConstantFeaturesWarning,
    check_feature_tensor,
    check_logits,
    warn_single_sample_classes,
)

__all__ = [
    "METRIC_NAMES",
    "cdnv",
    "measured_classes",
    "class_means",
    "class_statistics",
    "class_variances",
    "classifier_logits",
    "effective_depth",
    "linear_probe",
    "metrics_from_statistics",
    "nc1",
    "nc1_rank_normalized",
    "nc1_trace_ratio",
    "nc2_equiangle",
    "nc2_equinorm",
    "nc2_etf",
    "nc2_maxangle",
    "nc3",
    "nc4",
    "ncc_acc",
    "ncc_predict",
    "neural_collapse",
]

METRIC_NAMES = CORE_NAMES
EMPTY_CLASS_POLICIES = ("error", "nan", "drop")
_CLASS_MEAN_METRICS = (
    "nc1",
    "nc1_rank_normalized",
    "nc1_trace_ratio",
    "cdnv",
    "nc2_equinorm",
    "nc2_equiangle",
    "nc2_maxangle",
    "nc2_etf",
    "nc3",
)
_PAIR_METRICS = ("cdnv", "nc2_equiangle", "nc2_maxangle")
# Classes per side of a block of pairs when C > d: a 1024 x 1024 float64 block is 8 MiB.
PAIR_BLOCK = 1024
# Class means closer together than this many working-precision epsilons (relative to their norm) are taken
# as coinciding: constant features give at most ~1 eps (float64 sums of equal float32 values).
_COINCIDING_MEANS_EPS = 16.0


def check_labels(labels: Tensor, num_rows: int, num_classes: int) -> None:
    """Validate the shape and dtype of ``labels`` (cheap, no host sync)."""
    if num_classes < 2 or int(num_classes) != num_classes:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}")
    if not isinstance(labels, Tensor):
        raise TypeError(
            f"labels must be an integer Tensor of shape ({num_rows},), got {type(labels).__name__}"
        )
    if labels.ndim != 1 or labels.shape[0] != num_rows:
        hint = ""
        if labels.ndim == 2 and labels.numel() == num_rows:
            hint = " (token-level labels: flatten them with the same mask as the features, labels[mask])"
        raise ValueError(f"labels must have shape ({num_rows},), got {tuple(labels.shape)}{hint}")
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
    means_only: bool = False,
) -> ClassStatistics:
    """Both passes over one batch holding all the data; see :mod:`ncdepth.metrics.stats`.

    Args:
        features: ``(N, ...)`` embeddings.
        labels: ``(N,)`` integer labels in ``0..C-1``.
        num_classes: ``C``.
        logits: ``(N, C)`` network outputs; when given, the statistics count the samples whose
            ``argmax`` differs from the NCC prediction (``nc4``).
        ncc_centres: ``(C, d)`` nearest-class centres replacing the class means (NaN rows: classes that are
            never predicted), e.g. the train split's :func:`class_means`.
        pool: ``"flatten"`` or ``"avg"`` (global average over the spatial axes of ``(N, K, ...)`` maps).
        full_scatter: accumulate the ``d x d`` scatter instead of the ``C x C`` projected one (default: when
            ``d < C``).
        means_only: pass 1 only: the counts and means, every pass-2 sum zero (``eigenvalues`` zero, so no
            ``d x d`` object): enough for the metrics whose registry ``needs`` are the means alone.

    Example:
        >>> import torch
        >>> features = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]])
        >>> stats = class_statistics(features, torch.tensor([0, 0, 1]), 2)
        >>> stats.counts, stats.means
        (tensor([2., 1.], dtype=torch.float64), tensor([[2., 1.],
                [0., 5.]], dtype=torch.float64))
    """
    h = flatten_features(check_feature_tensor("features", features), pool)
    check_labels(labels, h.shape[0], num_classes)
    labels = labels.to(device=h.device, dtype=torch.long)
    if logits is not None:
        check_logits(logits, h.shape[0], num_classes)
    invalid = int(count_invalid_labels(labels, num_classes))
    if invalid:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}: {invalid} of {h.shape[0]} lie outside")
    counts, sums = class_sums(h, labels, num_classes)
    if not all_finite(sums):  # any NaN or Inf feature poisons its class sum
        raise ValueError("features contain NaN or Inf")
    if means_only:
        zeros = torch.zeros_like(counts)
        means = (sums / counts.clamp(min=1)[:, None]).masked_fill_((counts == 0)[:, None], math.nan)
        resolution = torch.finfo(h.dtype).eps
        return ClassStatistics(counts, means, zeros, zeros, zeros, zeros, None, resolution)
    if full_scatter is None:
        full_scatter = uses_full_scatter(h.shape[1], num_classes)
    centres, absent = None, None
    if ncc_centres is not None:
        if ncc_centres.shape != (num_classes, h.shape[1]):
            raise ValueError(
                f"ncc_means must have shape (C, d) = ({num_classes}, {h.shape[1]}), "
                f"got {tuple(ncc_centres.shape)}"
            )
        centres = ncc_centres.detach().to(h.device, torch.float64)
        absent = centres.isnan().any(1)
        if bool(absent.all()):
            raise ValueError("ncc_means has no finite row: no class can be predicted")
        centres = torch.nan_to_num(centres)
    anchors = make_anchors(counts, sums, h.dtype, centres, absent, full_scatter=full_scatter)
    accumulated = PassTwoSums.zeros(num_classes, h.shape[1], full=full_scatter, device=h.device)
    prediction = second_pass(h, labels, anchors, accumulated)
    disagreements = None
    if logits is not None:
        disagreements = (logits.to(h.device).argmax(1) != prediction).sum().double()
    return finalize(counts, anchors, accumulated, disagreements)


def metrics_from_statistics(
    stats: ClassStatistics,
    *,
    weight: Tensor | None = None,
    rtol: float | None = None,
    empty_classes: str = "error",
    min_class_count: int = 1,
    layer: str | None = None,
) -> dict[str, float]:
    """Every metric of ``docs/metrics.md`` for one layer, from its sufficient statistics.

    Args:
        stats: the layer's :class:`~ncdepth.metrics.stats.ClassStatistics`.
        weight: the ``(C, d)`` classifier weight; ``nc3`` is included when it is given.
        rtol: relative eigenvalue cut-off of the pseudo-inverse of ``Sigma_B`` (default ``max(d, C) eps``).
        empty_classes: what to do with classes that have fewer than ``min_class_count`` samples:
            ``"error"`` raises, ``"nan"`` gives NaN for the class-mean metrics. ``"drop"`` expects statistics
            that hold the measured classes only (:func:`neural_collapse` and ``NeuralCollapse`` restrict them
            before pass 2) and adds ``num_classes_present``.
        min_class_count: the fewest samples a class needs to be measured (default 1).
        layer: only names the layer in error messages and warnings.

    ``nc4`` is included when the statistics hold NCC/network disagreements.

    Example:
        >>> import torch
        >>> features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 0.8]])
        >>> stats = class_statistics(features, torch.tensor([0, 0, 1, 1]), 2, logits=features)
        >>> list(metrics_from_statistics(stats, weight=torch.eye(2), layer="penultimate"))
        ['nc1', 'nc1_rank_normalized', 'nc1_trace_ratio', 'cdnv', 'ncc_acc', 'nc2_equinorm', 'nc2_equiangle',
         'nc2_maxangle', 'nc2_etf', 'nc3', 'nc4']
    """
    check_empty_classes(empty_classes)
    check_min_class_count(min_class_count)
    where = f" in layer {layer!r}" if layer is not None else ""
    counts = stats.counts
    total = counts.sum()
    missing = (counts < min_class_count).nonzero().flatten().tolist()
    if missing and empty_classes != "nan":
        raise ValueError(
            unmeasured_classes_message(missing, len(counts), min_class_count, where, empty_classes)
        )
    warn_single_sample_classes(counts, where)
    if missing or _means_coincide(stats, where):
        out = dict.fromkeys(_CLASS_MEAN_METRICS, math.nan)
        if weight is None:
            del out["nc3"]
        elif weight.shape[-1] != stats.means.shape[1]:
            _nc3(weight, stats.centred_means)  # raises the shape error
    else:
        out = _class_mean_metrics(stats, weight=weight, rtol=rtol)
    out["ncc_acc"] = float(stats.ncc_correct.sum() / total)
    if stats.nc4_disagreements is not None:
        out["nc4"] = float(stats.nc4_disagreements / total)
    result = {name: out[name] for name in METRIC_NAMES if name in out}
    if empty_classes == "drop":
        result["num_classes_present"] = float(len(counts))
    return result


def check_min_class_count(min_class_count: int) -> None:
    if int(min_class_count) != min_class_count or min_class_count < 1:
        raise ValueError(f"min_class_count must be an integer >= 1, got {min_class_count}")


def check_empty_classes(empty_classes: str) -> None:
    if empty_classes not in EMPTY_CLASS_POLICIES:
        raise ValueError(f"empty_classes must be one of {list(EMPTY_CLASS_POLICIES)}, got {empty_classes!r}")


def unmeasured_classes_message(
    missing: Sequence[int], num_classes: int, min_class_count: int, where: str, empty_classes: str
) -> str:
    """One line: how many classes have too few samples, the first few of their ids (never all of them: a
    vocabulary may miss thousands), and what to pass instead."""
    fewer = (
        "no samples" if min_class_count == 1 else f"fewer than min_class_count = {min_class_count} samples"
    )
    shown = ", ".join(str(c) for c in missing[:8]) + (", ..." if len(missing) > 8 else "")
    head = (
        f"{len(missing):,} of {num_classes:,} classes {'has' if len(missing) == 1 else 'have'} {fewer}{where}"
    )
    if empty_classes == "drop":
        return (
            f"{head} (classes {shown}): with empty_classes='drop', restrict the statistics to the measured "
            "classes before pass 2 (neural_collapse and NeuralCollapse do)"
        )
    return (
        f"{head} (classes {shown}); pass empty_classes='drop' to measure every metric over the other classes, "
        "or 'nan' for NaN class-mean metrics"
    )


def measured_classes(counts: Tensor, min_class_count: int = 1) -> Tensor:
    """The ``(C',)`` int64 ids, ascending, of the classes with at least ``min_class_count`` samples, given
    the ``(C,)`` class ``counts``: those that ``empty_classes="drop"`` measures.

    Args:
        counts: ``(C,)`` number of samples of each class.
        min_class_count: the fewest samples a class needs to be measured.

    Example:
        >>> import torch
        >>> counts = torch.tensor([1.0, 0.0, 1.0, 0.0, 3.0, 0.0])
        >>> measured_classes(counts), measured_classes(counts, min_class_count=2)
        (tensor([0, 2, 4]), tensor([4]))
    """
    return (counts >= min_class_count).nonzero().flatten()


def _means_coincide(stats: ClassStatistics, where: str) -> bool:
    """Whether all class means are the same point up to rounding (``Sigma_B = 0``); warns if so."""
    spread = float(stats.centred_means.norm(dim=1).max())
    scale = float(stats.means.norm(dim=1).max())
    if spread > _COINCIDING_MEANS_EPS * stats.resolution * scale:
        return False
    warnings.warn(
        f"all class means coincide{where} (Sigma_B = 0, e.g. constant features): nc1, nc1_trace_ratio, "
        "cdnv, nc2_* and nc3 are NaN; ncc_acc and nc4 compare against tied centres",
        ConstantFeaturesWarning,
        stacklevel=3,
    )
    return True


def _class_mean_metrics(
    stats: ClassStatistics, *, weight: Tensor | None, rtol: float | None
) -> dict[str, float]:
    """Every metric built on the class means. ``C <= d``: through the ``C x C`` Gram ``G = M~ M~^T``.
    ``C > d``: nothing ``C x C`` is formed; ``nc1`` and ``nc2_etf`` go through the ``d x d``
    ``B = M~^T M~`` and the pair metrics through blocks of :data:`PAIR_BLOCK` classes."""
    num_classes, dim = stats.means.shape
    centred = stats.centred_means
    variances = stats.within_sq / stats.counts
    norms_sq = centred.square().sum(1)
    trace_within = stats.within_sq.sum() / stats.counts.sum()
    trace_between = norms_sq.sum() / num_classes
    norms = norms_sq.sqrt()
    out = {
        "nc1_trace_ratio": float(trace_within / trace_between),
        "nc2_equinorm": float(norms.std() / norms.mean()),
    }
    if num_classes <= dim:
        gram = smaller = centred @ centred.T
        out.update(_pairs_from_gram(gram, variances, num_classes))
        etf = torch.eye(num_classes, dtype=gram.dtype, device=gram.device) - 1.0 / num_classes
        out["nc2_etf"] = float(torch.linalg.matrix_norm(gram / gram.norm() - etf / etf.norm(), ord="fro"))
    else:
        between = smaller = centred.T @ centred
        out.update(_pairs_in_blocks(centred, variances, num_classes))
        out["nc2_etf"] = _etf_from_between(between, norms_sq.sum(), centred.sum(0), num_classes)
    out["nc1"], out["nc1_rank_normalized"] = _nc1(stats, rtol, smaller)
    if weight is not None:
        out["nc3"] = _nc3(weight, centred)
    return out


def _nc1(stats: ClassStatistics, rtol: float | None, smaller: Tensor) -> tuple[float, float]:
    """``nc1 = Tr(Sigma_W Sigma_B^+) / C = sum_{k: lambda_k > tol} u_k^T Sigma_W u_k / lambda_k`` and
    ``nc1_rank_normalized = Tr(Sigma_W Sigma_B^+) / r = (C / r) nc1``, ``r`` the number of kept eigenvalues
    (the numerical rank of ``Sigma_B``, at most ``min(C - 1, d)``).

    ``(lambda_k, u_k)``: the eigenpairs of ``B = M~^T M~ = C Sigma_B``, in float64 from the means. The
    projected statistics carry them with ``N u_k^T Sigma_W u_k`` (the samples were projected on ``u_k``);
    with the full scatter they come from ``smaller``, the smaller of ``B`` and ``G = M~ M~^T``
    (``u_k = M~^T v_k / sqrt(lambda_k)`` for the eigenvectors ``v_k`` of ``G``).
    """
    num_classes, dim = stats.means.shape
    total = stats.counts.sum()
    if stats.eigenvalues is not None:
        eigenvalues, within = stats.eigenvalues, stats.scatter / total
    else:
        eigenvalues, directions = torch.linalg.eigh(smaller)
        if smaller.shape[0] == num_classes:  # G: v_k -> u_k
            scale = eigenvalues.clamp(min=torch.finfo(torch.float64).tiny).sqrt()
            directions = stats.centred_means.T @ directions / scale
        within = (directions * (stats.scatter @ directions)).sum(0) / total
    rtol = max(dim, num_classes) * torch.finfo(torch.float64).eps if rtol is None else rtol
    largest = eigenvalues.max()
    keep = eigenvalues > largest * rtol
    if largest <= 0 or not bool(keep.any()):
        return math.nan, math.nan
    value = float((within[keep] / eigenvalues[keep]).sum())
    return value, value * num_classes / int(keep.sum())


def _pairs_from_gram(gram: Tensor, variances: Tensor, num_classes: int) -> dict[str, float]:
    """``cdnv``, ``nc2_equiangle`` and ``nc2_maxangle`` from the Gram matrix of the classes taken
    (``C <= d``)."""
    taken = gram.shape[0]
    if taken < 2:
        return dict.fromkeys(_PAIR_METRICS, math.nan)
    norms_sq = gram.diagonal()
    distances = norms_sq[:, None] + norms_sq[None, :] - 2.0 * gram
    rows, cols = torch.triu_indices(taken, taken, 1, device=gram.device)
    ratios = (variances[rows] + variances[cols]) / (2.0 * distances[rows, cols])
    norms = norms_sq.clamp(min=0.0).sqrt()
    cosines = gram / (norms[:, None] * norms[None, :])
    off_diagonal = cosines[~torch.eye(taken, dtype=torch.bool, device=gram.device)]
    return {
        "cdnv": float(ratios.mean()),
        "nc2_equiangle": float(off_diagonal.std()),
        "nc2_maxangle": float((off_diagonal + 1.0 / (num_classes - 1)).abs().mean()),
    }


def _pairs_in_blocks(centred: Tensor, variances: Tensor, num_classes: int) -> dict[str, float]:
    """``cdnv``, ``nc2_equiangle`` and ``nc2_maxangle`` over the unordered pairs of the classes taken
    (rows of ``centred``), in blocks of :data:`PAIR_BLOCK` x :data:`PAIR_BLOCK` pairs (``C > d``).

    Per block, in float64: the cosines ``cos_ab`` from one product of unit rows,
    ``||mu_a - mu_b||^2 = ||m_a||^2 + ||m_b||^2 - 2 ||m_a|| ||m_b|| cos_ab``, the sum of the CDNV terms, the
    sum of ``|cos_ab + 1/(C - 1)|``, and the count, mean and sum of squared deviations of
    ``cos_ab + 1/(C - 1)``, merged across blocks by Chan et al.'s pairwise update (no ``E[x^2] - E[x]^2``).
    Each unordered pair stands for two ordered ones: the ordered std (ddof 1) is ``sqrt(2 M2 / (2 m - 1))``
    over ``m`` pairs.
    """
    taken = centred.shape[0]
    if taken < 2:
        return dict.fromkeys(_PAIR_METRICS, math.nan)
    norms_sq = centred.square().sum(1)
    norms = norms_sq.sqrt()
    unit = centred / norms[:, None]
    target = 1.0 / (num_classes - 1)
    zero = centred.new_zeros(())  # running sums stay on the device: one host sync at the end, not per block
    count, mean, squares, ratio_sum, angle_sum = 0, zero, zero, zero, zero
    for start in range(0, taken, PAIR_BLOCK):
        rows = slice(start, start + PAIR_BLOCK)
        for other in range(start, taken, PAIR_BLOCK):
            cols = slice(other, other + PAIR_BLOCK)
            cosines = unit[rows] @ unit[cols].T
            norm_a, norm_b = norms[rows, None], norms[None, cols]
            var_a, var_b = variances[rows, None], variances[None, cols]
            if other == start:  # a diagonal block: its strict upper triangle
                upper = torch.triu_indices(*cosines.shape, 1, device=cosines.device)
                cosines = cosines[upper[0], upper[1]]
                norm_a, var_a = norm_a[upper[0], 0], var_a[upper[0], 0]
                norm_b, var_b = norm_b[0, upper[1]], var_b[0, upper[1]]
            distances = (norm_a * norm_b).mul_(cosines).mul_(-2.0).add_(norm_a.square()).add_(norm_b.square())
            ratio_sum = ratio_sum + (var_a + var_b).div_(distances).sum() / 2.0
            shifted = cosines.add_(target).flatten()  # cos + 1/(C - 1)
            block_count = shifted.numel()
            angle_sum = angle_sum + torch.linalg.vector_norm(shifted, ord=1)
            block_mean = shifted.sum() / block_count
            deviations = shifted.sub_(block_mean)
            delta = block_mean - mean
            merged = count + block_count
            squares = (
                squares + torch.dot(deviations, deviations) + delta * delta * count * block_count / merged
            )
            mean = mean + delta * block_count / merged
            count = merged
    return {
        "cdnv": float(ratio_sum) / count,
        "nc2_equiangle": math.sqrt(2.0 * float(squares) / (2 * count - 1)),
        "nc2_maxangle": float(angle_sum) / count,
    }


def _etf_from_between(between: Tensor, trace: Tensor, column_sum: Tensor, num_classes: int) -> float:
    """``nc2_etf`` without the ``C x C`` Gram ``G``: with ``E = I - 11^T/C`` (``||E||_F = sqrt(C - 1)``),
    ``||G/||G||_F - E/||E||_F||_F^2 = 2 - 2 <G, E> / (||G||_F sqrt(C - 1))``, where
    ``<G, E> = Tr G - ||sum_c (mu_c - mu_G)||^2 / C`` and ``||G||_F = ||M~^T M~||_F`` (``d x d``). The
    difference of two numbers near 2 gives the value to about ``1e-8`` absolute (the ``C x C`` form, used for
    ``C <= d``, to about ``1e-15``)."""
    inner = trace - column_sum.square().sum() / num_classes
    squared = 2.0 - 2.0 * float(inner) / (float(between.norm()) * math.sqrt(num_classes - 1))
    return math.sqrt(max(squared, 0.0))


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
    logits: Tensor | None = None,
    ncc_means: Tensor | None = None,
    empty_classes: str = "error",
    rtol: float | None = None,
    min_class_count: int = 1,
    measures: Sequence[str] = (),
    layer_weight: Tensor | None = None,
    ood_mean: Tensor | None = None,
) -> dict[str, float]:
    """Every metric of ``docs/metrics.md`` for one layer, keyed by name, in :data:`METRIC_NAMES` order.

    Args:
        features: ``(N, ...)`` embeddings of one layer (conv maps are flattened: ``d = K*H*W``).
        labels: ``(N,)`` integer labels in ``0..C-1``.
        num_classes: ``C``.
        weight: the ``(C, d)`` weight of the linear classifier reading these features; enables ``nc3``, and
            ``nc4`` through the logits ``h W^T + b``.
        bias: the ``(C,)`` classifier bias (part of the network's prediction in ``nc4``).
        logits: ``(N, C)`` network outputs; ``nc4`` compares their ``argmax`` with the NCC prediction
            (instead of ``h W^T + b``).
        ncc_means: ``(C, d)`` nearest-class centres for ``ncc_acc`` and ``nc4``: the *train* split's class
            means (:func:`class_means`) when ``features`` are a test split; by default the class means of
            ``features``. NaN rows mark classes absent from the train split (never predicted).
        empty_classes: what to do with the classes that have fewer than ``min_class_count`` samples:
            ``"error"`` (default) raises; ``"nan"`` gives NaN for the class-mean metrics; ``"drop"`` measures
            every metric over the other classes (:func:`measured_classes`), as if the dropped classes and their
            samples were not in the data: the rows of ``weight``, ``bias`` and ``ncc_means`` and the columns
            of ``logits`` are restricted to them, ``C`` becomes their number, reported as
            ``num_classes_present`` (a vocabulary of which a corpus uses a part).
        rtol: relative eigenvalue cut-off of the pseudo-inverse of ``Sigma_B`` (default ``max(d, C) eps``).
        min_class_count: the fewest samples a class needs to be measured (default 1: any sample).
        measures: extra metrics by registry name (``ncdepth.metrics.registry.EXTRA_NAMES``), appended in
            registry order, as ``NeuralCollapse(measures=...)`` computes them.
        layer_weight: the ``(out, d)`` weight of a linear map reading these features (``w_align``).
        ood_mean: the ``(d,)`` global mean of out-of-distribution features at this layer (``nc5_ood_dev``).

    Returns:
        ``{name: value}`` with ``nc1``, ``nc1_rank_normalized``, ``nc1_trace_ratio``, ``cdnv``, ``ncc_acc``,
        ``nc2_equinorm``, ``nc2_equiangle``, ``nc2_maxangle``, ``nc2_etf``; ``nc3`` with ``weight``; ``nc4``
        with ``weight`` or ``logits``; ``num_classes_present`` with ``empty_classes="drop"``.

    Example:
        >>> import torch
        >>> from ncdepth.metrics.functional import class_means, neural_collapse
        >>> features = torch.tensor([[2.0, 0.0], [2.0, 1.0], [-1.0, 2.0], [-1.0, 1.0], [-1.0, -2.0],
        ...                          [-1.0, -3.0]])
        >>> labels = torch.tensor([0, 0, 1, 1, 2, 2])
        >>> result = neural_collapse(features, labels, num_classes=3)
        >>> {name: round(value, 4) for name, value in result.items()}  # doctest: +NORMALIZE_WHITESPACE
        {'nc1': 0.0312, 'nc1_rank_normalized': 0.0469, 'nc1_trace_ratio': 0.0511, 'cdnv': 0.0182, 'ncc_acc': 1.0, 'nc2_equinorm': 0.1398,
         'nc2_equiangle': 0.2136, 'nc2_maxangle': 0.1776, 'nc2_etf': 0.3154}

        A test split measured against the train split's class means, as the streaming metric's
        ``ncc_reference`` does (``ncc_acc`` and ``nc4``):

        >>> weight = torch.tensor([[1.0, 0.0], [-0.5, 1.0], [-0.5, -1.0]])
        >>> test = torch.tensor([[0.2, 0.5], [1.5, 0.0], [-1.0, 1.5], [-1.0, -1.5]])
        >>> test_labels = torch.tensor([0, 0, 1, 2])
        >>> on_test = neural_collapse(
        ...     test, test_labels, 3, weight=weight, ncc_means=class_means(features, labels, 3)
        ... )
        >>> on_test["ncc_acc"], on_test["nc4"]
        (0.75, 0.0)
        >>> own = neural_collapse(test, test_labels, 3, weight=weight)  # the test split's own means instead
        >>> own["ncc_acc"], own["nc4"]
        (1.0, 0.25)

        A vocabulary of which the data use a part: ``empty_classes="drop"`` measures the classes present.

        >>> tokens = neural_collapse(features, labels + 2 * labels, 9, empty_classes="drop")  # classes 0, 3, 6
        >>> tokens["num_classes_present"], tokens["nc1"] == result["nc1"]
        (3.0, True)
    """
    check_empty_classes(empty_classes)
    if empty_classes == "drop":
        features, labels, num_classes, weight, bias, logits, ncc_means = _measured_only(
            features, labels, num_classes, min_class_count, weight, bias, logits, ncc_means
        )
    if logits is None and weight is not None:
        logits = classifier_logits(features, weight, bias)
    measures = check_measures(measures)
    stats = class_statistics(features, labels, num_classes, logits=logits, ncc_centres=ncc_means)
    result = metrics_from_statistics(
        stats, weight=weight, rtol=rtol, empty_classes=empty_classes, min_class_count=min_class_count
    )
    extra = generalized_metrics(
        stats.means,
        stats.counts,
        measures,
        nc1=result.get("nc1", math.nan),
        weight=weight,
        layer_weight=layer_weight,
        ood_mean=ood_mean,
    )
    if "probe_acc" in measures:
        extra |= linear_probe(features, labels, num_classes)
    return result | {name: extra[name] for name in measures if name in extra}


def linear_probe(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    test_features: Tensor | None = None,
    test_labels: Tensor | None = None,
    ridge: float = PROBE_RIDGE,
    max_dim: int = PROBE_MAX_DIM,
    seed: int = 0,
) -> dict[str, float]:
    """Train (and test) accuracy of the ridge least-squares probe fitted on ``features`` (one-hot targets,
    unpenalised intercept, ``lam = ridge Tr(T)/k``; on a fixed ``N(0, 1/k)`` projection to ``k = max_dim``
    dimensions when ``d > max_dim``): :mod:`ncdepth.metrics.probe`, ``docs/metrics.md`` *Linear probe*.

    Args:
        features: ``(N, ...)`` train embeddings of one layer (the probe is fitted on them).
        labels: ``(N,)`` integer labels in ``0..C-1``.
        num_classes: ``C``.
        test_features: ``(M, ...)`` test embeddings of the same layer.
        test_labels: ``(M,)`` their labels.
        ridge: ``lam = ridge Tr(T) / k``.
        max_dim: ``k``, the widest layer probed on its own features.
        seed: the seed of the projection of wider layers.

    Returns:
        ``{"probe_acc": train accuracy}``, plus ``"probe_test_acc"`` with ``test_features`` and ``test_labels``
        (the streaming metric reports it as the test split's ``probe_acc``).

    Example:
        >>> import torch
        >>> features = torch.tensor([[0.0, 1.0], [0.2, 0.9], [1.0, 0.0], [0.9, 0.1]])
        >>> linear_probe(features, torch.tensor([0, 0, 1, 1]), 2)
        {'probe_acc': 1.0}
    """
    h = flatten_features(check_feature_tensor("features", features))
    check_labels(labels, h.shape[0], num_classes)
    labels = labels.to(device=h.device, dtype=torch.long)
    counts, sums = class_sums(h, labels, num_classes)
    projection = make_projection(h.shape[1], max_dim, seed, h.device)
    size = h.shape[1] if projection is None else max_dim
    moment = torch.zeros(size, size, dtype=torch.float64, device=h.device)
    add_moment(moment, h, projection)
    probe = fit_probe(counts, sums, moment, projection, ridge)
    out = {"probe_acc": float((probe.predict(h) == labels).double().mean())}
    if test_features is not None and test_labels is not None:
        test = flatten_features(check_feature_tensor("test_features", test_features))
        check_labels(test_labels, test.shape[0], num_classes)
        test_labels = test_labels.to(device=test.device, dtype=torch.long)
        out["probe_test_acc"] = float((probe.predict(test) == test_labels).double().mean())
    return out


def _measured_only(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    min_class_count: int,
    weight: Tensor | None,
    bias: Tensor | None,
    logits: Tensor | None,
    ncc_means: Tensor | None,
) -> tuple[Tensor, Tensor, int, Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """The arguments of :func:`neural_collapse` restricted to the measured classes (``empty_classes="drop"``):
    their samples, their labels renumbered ``0..C'-1`` in ascending order, ``C'``, and the rows of
    ``weight``, ``bias`` and ``ncc_means`` and the columns of ``logits`` of those classes."""
    check_feature_tensor("features", features)
    check_labels(labels, features.shape[0], num_classes)
    check_min_class_count(min_class_count)
    labels = labels.to(device=features.device, dtype=torch.long)
    invalid = int(count_invalid_labels(labels, num_classes))
    if invalid:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}: {invalid} of {len(labels)} lie outside")
    kept = measured_classes(class_counts(labels, num_classes), min_class_count)
    if len(kept) == num_classes:
        return features, labels, num_classes, weight, bias, logits, ncc_means
    if len(kept) < 2:
        raise ValueError(
            f"empty_classes='drop' needs 2 classes with at least min_class_count = {min_class_count} samples, "
            f"found {len(kept)}"
        )
    renumber = torch.full((num_classes,), -1, dtype=torch.long, device=labels.device)
    renumber[kept] = torch.arange(len(kept), device=labels.device)
    new_labels = renumber[labels]
    rows = (new_labels >= 0).nonzero().flatten()

    def classes_of(tensor: Tensor | None, dim: int = 0) -> Tensor | None:
        return None if tensor is None else tensor.index_select(dim, kept.to(tensor.device))

    if logits is not None:
        check_logits(logits, features.shape[0], num_classes)
        logits = classes_of(logits.index_select(0, rows.to(logits.device)), 1)
    if weight is not None and (weight.ndim != 2 or weight.shape[0] != num_classes):
        raise ValueError(f"classifier weight must have shape ({num_classes}, d), got {tuple(weight.shape)}")
    if bias is not None and bias.shape != (num_classes,):
        raise ValueError(f"classifier bias must have shape ({num_classes},), got {tuple(bias.shape)}")
    if ncc_means is not None and (ncc_means.ndim != 2 or ncc_means.shape[0] != num_classes):
        raise ValueError(f"ncc_means must have shape ({num_classes}, d), got {tuple(ncc_means.shape)}")
    return (
        features.index_select(0, rows),
        new_labels.index_select(0, rows),
        len(kept),
        classes_of(weight),
        classes_of(bias),
        logits,
        classes_of(ncc_means),
    )


def classifier_logits(features: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``h W^T + b`` in float64, ``h`` the features flattened to ``(N, d)``.

    Args:
        features: ``(N, ...)`` embeddings.
        weight: ``(C, d)`` classifier weight.
        bias: optional ``(C,)`` classifier bias.

    Example:
        >>> import torch
        >>> classifier_logits(torch.tensor([[1.0, 2.0]]), torch.eye(2), torch.tensor([0.5, 0.0]))
        tensor([[1.5000, 2.0000]], dtype=torch.float64)
    """
    h = check_feature_tensor("features", features).reshape(features.shape[0], -1).double()
    if weight.ndim != 2 or weight.shape[1] != h.shape[1]:
        raise ValueError(f"classifier weight must have shape (C, {h.shape[1]}), got {tuple(weight.shape)}")
    logits = h @ weight.detach().to(h).T
    if bias is None:
        return logits
    if bias.shape != (weight.shape[0],):
        raise ValueError(f"classifier bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    return logits + bias.detach().to(h)


def _one(name: str, features: Tensor, labels: Tensor, num_classes: int) -> float:
    """One metric, from only what its registry entry ``needs``: a metric of the class means alone reads
    the features once (pass 1), the others twice."""
    means_only = BY_NAME[name].needs == ("means",)
    return metrics_from_statistics(class_statistics(features, labels, num_classes, means_only=means_only))[
        name
    ]


def nc1(features: Tensor, labels: Tensor, num_classes: int) -> float:
    """``Tr(Sigma_W Sigma_B^+) / C`` (Papyan, Han & Donoho 2020), pseudo-inverse on the numerical rank.

    Args:
        features: ``(N, ...)`` embeddings.
        labels: ``(N,)`` integer labels in ``0..C-1``.
        num_classes: ``C``.

    Example:
        >>> import torch
        >>> features = torch.tensor([[2.0, 0.0], [2.0, 1.0], [-1.0, 2.0], [-1.0, 1.0], [-1.0, -2.0],
        ...                          [-1.0, -3.0]])
        >>> round(nc1(features, torch.tensor([0, 0, 1, 1, 2, 2]), 3), 4)
        0.0312
    """
    return _one("nc1", features, labels, num_classes)


def nc1_rank_normalized(features: Tensor, labels: Tensor, num_classes: int) -> float:
    """``Tr(Sigma_W Sigma_B^+) / rank(Sigma_B) = (C / r) nc1``: the mean, over the ``r <= min(C - 1, d)``
    directions that separate the class means, of the within- to between-class variance ratio along each
    (``docs/metrics.md``, "More classes than dimensions"). Comparable across ``C`` and ``d``; equals
    ``C / (C - 1) nc1`` when the means span ``C - 1`` dimensions.

    Args:
        features: ``(N, ...)`` embeddings.
        labels: ``(N,)`` integer labels in ``0..C-1``.
        num_classes: ``C``.

    Example:
        >>> import torch
        >>> features = torch.tensor([[2.0, 0.0], [2.0, 1.0], [-1.0, 2.0], [-1.0, 1.0], [-1.0, -2.0],
        ...                          [-1.0, -3.0]])
        >>> round(nc1_rank_normalized(features, torch.tensor([0, 0, 1, 1, 2, 2]), 3), 4)  # 3/2 nc1
        0.0469
    """
    return _one("nc1_rank_normalized", features, labels, num_classes)


def nc1_trace_ratio(features: Tensor, labels: Tensor, num_classes: int) -> float:
    """``Tr(Sigma_W) / Tr(Sigma_B)``.

    Args:
        features: ``(N, ...)`` embeddings.
        labels: ``(N,)`` integer labels in ``0..C-1``.
        num_classes: ``C``.

    Example:
        >>> import torch
        >>> features = torch.tensor([[2.0, 0.0], [2.0, 1.0], [-1.0, 2.0], [-1.0, 1.0], [-1.0, -2.0],
        ...                          [-1.0, -3.0]])
        >>> round(nc1_trace_ratio(features, torch.tensor([0, 0, 1, 1, 2, 2]), 3), 4)
        0.0511
    """
    return _one("nc1_trace_ratio", features, labels, num_classes)


def cdnv(features: Tensor, labels: Tensor, num_classes: int) -> float:
    """Class-distance normalised variance (Galanti et al.): mean over pairs ``c < c'`` of
    ``(var_c + var_c') / (2 ||mu_c - mu_c'||^2)``, ``var_c = (1/N_c) sum_{y_i=c} ||h_i - mu_c||^2``.

    Args:
        features: ``(N, ...)`` embeddings.
        labels: ``(N,)`` integer labels in ``0..C-1``.
        num_classes: ``C``.

    Example:
        >>> import torch
        >>> features = torch.tensor([[2.0, 0.0], [2.0, 1.0], [-1.0, 2.0], [-1.0, 1.0], [-1.0, -2.0],
        ...                          [-1.0, -3.0]])
        >>> round(cdnv(features, torch.tensor([0, 0, 1, 1, 2, 2]), 3), 4)
        0.0182
    """
    return _one("cdnv", features, labels, num_classes)


def nc2_equinorm(features: Tensor, labels: Tensor, num_classes: int) -> float:
    """``std(||mu_c - mu_G||) / mean(||mu_c - mu_G||)`` over the classes, std with ddof=1.

    Args:
        features: ``(N, ...)`` embeddings.
        labels: ``(N,)`` integer labels in ``0..C-1``.
        num_classes: ``C``.

    Example:
        >>> import torch
        >>> features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
        >>> round(nc2_equinorm(features, torch.tensor([0, 1, 2]), 3), 4)
        0.2101
    """
    return _one("nc2_equinorm", features, labels, num_classes)


def nc2_equiangle(features: Tensor, labels: Tensor, num_classes: int) -> float:
    """std (ddof=1) over the ``C (C - 1)`` ordered pairs ``c != c'`` of ``cos(mu_c - mu_G, mu_c' - mu_G)``.

    Args:
        features: ``(N, ...)`` embeddings.
        labels: ``(N,)`` integer labels in ``0..C-1``.
        num_classes: ``C``.

    Example:
        >>> import torch
        >>> features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
        >>> round(nc2_equiangle(features, torch.tensor([0, 1, 2]), 3), 4)
        0.3651
    """
    return _one("nc2_equiangle", features, labels, num_classes)


def nc2_maxangle(features: Tensor, labels: Tensor, num_classes: int) -> float:
    """Mean over ``c != c'`` of ``|cos(mu_c - mu_G, mu_c' - mu_G) + 1/(C-1)|`` (0 for a simplex ETF).

    Args:
        features: ``(N, ...)`` embeddings.
        labels: ``(N,)`` integer labels in ``0..C-1``.
        num_classes: ``C``.

    Example:
        >>> import torch
        >>> features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
        >>> round(nc2_maxangle(features, torch.tensor([0, 1, 2]), 3), 4)
        0.3047
    """
    return _one("nc2_maxangle", features, labels, num_classes)


def nc2_etf(features: Tensor, labels: Tensor, num_classes: int) -> float:
    """``|| G/||G||_F - (I - 11^T/C)/||I - 11^T/C||_F ||_F`` with ``G = M~^T M~`` (Zhu et al.).

    Args:
        features: ``(N, ...)`` embeddings.
        labels: ``(N,)`` integer labels in ``0..C-1``.
        num_classes: ``C``.

    Example:
        >>> import torch
        >>> features = torch.tensor([[1.0, 0.0], [-0.5, 0.75 ** 0.5], [-0.5, -(0.75 ** 0.5)]])
        >>> nc2_etf(features, torch.tensor([0, 1, 2]), 3) < 1e-7  # an exact simplex ETF
        True
    """
    return _one("nc2_etf", features, labels, num_classes)


def class_means(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``(C, d)`` float64 class means ``mu_c`` (NaN rows for empty classes).

    Args:
        features: ``(N, ...)`` embeddings.
        labels: ``(N,)`` integer labels in ``0..C-1``.
        num_classes: ``C``.

    Example:
        >>> import torch
        >>> class_means(torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]]), torch.tensor([0, 0, 1]), 2)
        tensor([[2., 1.],
                [0., 5.]], dtype=torch.float64)
    """
    return class_statistics(features, labels, num_classes).means


def class_variances(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``(C,)`` float64 ``var_c = (1/N_c) sum_{y_i=c} ||h_i - mu_c||^2`` (biased, centred).

    Args:
        features: ``(N, ...)`` embeddings.
        labels: ``(N,)`` integer labels in ``0..C-1``.
        num_classes: ``C``.

    Example:
        >>> import torch
        >>> features = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]])
        >>> class_variances(features, torch.tensor([0, 0, 1]), 2).round(decimals=6)  # float32 input
        tensor([2., 0.], dtype=torch.float64)
    """
    stats = class_statistics(features, labels, num_classes)
    return stats.within_sq / stats.counts


def ncc_predict(features: Tensor, means: Tensor) -> Tensor:
    """Nearest-class-centre prediction ``argmin_c ||h - mu_c||`` for each row, as ``(N,)`` int64.

    Args:
        features: ``(N, ...)`` embeddings.
        means: ``(C, d)`` class centres.

    Example:
        >>> import torch
        >>> ncc_predict(torch.tensor([[0.9, 0.1], [0.0, 2.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        tensor([0, 1])
    """
    h = features.reshape(features.shape[0], -1).double()
    centres = means.to(h)
    origin = centres.mean(0)
    h, centres = h - origin, centres - origin
    distances = (h * h).sum(1, keepdim=True) - 2.0 * h @ centres.T + (centres * centres).sum(1)
    return distances.argmin(1)


def ncc_acc(features: Tensor, labels: Tensor, num_classes: int, *, means: Tensor | None = None) -> float:
    """Fraction of samples whose nearest class centre is their label.

    Args:
        features: ``(N, ...)`` embeddings.
        labels: ``(N,)`` integer labels in ``0..C-1``.
        num_classes: ``C``.
        means: ``(C, d)`` centres (the contract: the *train* split's class means, see :func:`class_means`);
            by default the class means of ``features`` themselves.

    Example:
        >>> import torch
        >>> train = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [12.0, 0.0]])
        >>> train_means = class_means(train, torch.tensor([0, 0, 1, 1]), 2)  # centres 1 and 11
        >>> test, test_labels = torch.tensor([[5.0, 0.0], [7.0, 0.0]]), torch.tensor([1, 1])
        >>> ncc_acc(test, test_labels, 2, means=train_means)  # 5 is nearer to 1, 7 to 11
        0.5
    """
    stats = class_statistics(features, labels, num_classes, ncc_centres=means)
    return float(stats.ncc_correct.sum() / stats.counts.sum())


def nc3(weight: Tensor, features: Tensor, labels: Tensor, num_classes: int) -> float:
    """``|| W^T/||W||_F - M~/||M~||_F ||_F^2`` (Papyan) for the ``C x d`` classifier weight ``W``.

    Args:
        weight: ``(C, d)`` classifier weight.
        features: ``(N, ...)`` embeddings (the classifier's input).
        labels: ``(N,)`` integer labels in ``0..C-1``.
        num_classes: ``C``.

    Example:
        >>> import torch
        >>> features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
        >>> means = features - features.mean(0)
        >>> nc3(3.0 * means, features, torch.tensor([0, 1, 2]), 3) < 1e-12  # W proportional to M~
        True
    """
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
    ncc_means: Tensor | None = None,
) -> float:
    """Fraction of samples whose network prediction (``argmax`` of ``logits``, or of ``h W^T + b``, bias
    included) differs from the NCC prediction at this (penultimate) layer.

    Args:
        features: ``(N, ...)`` embeddings of the classifier's input.
        labels: ``(N,)`` integer labels in ``0..C-1``.
        num_classes: ``C``.
        weight: ``(C, d)`` classifier weight (with ``bias``), when ``logits`` are not given.
        bias: ``(C,)`` classifier bias.
        logits: ``(N, C)`` network outputs.
        ncc_means: ``(C, d)`` NCC centres (the train split's class means for a test split); by default the
            class means of ``features``.

    Example:
        >>> import torch
        >>> features = torch.tensor([[1.0, 0.0], [0.8, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> labels = torch.tensor([0, 0, 1, 1])
        >>> nc4(features, labels, 2, weight=torch.eye(2))
        0.0
        >>> nc4(features, labels, 2, weight=torch.eye(2), bias=torch.tensor([10.0, 0.0]))  # always class 0
        0.5
    """
    if logits is None:
        if weight is None:
            raise ValueError("nc4 needs the classifier `weight` (and `bias`) or the `logits`")
        logits = classifier_logits(features, weight, bias)
    stats = class_statistics(features, labels, num_classes, logits=logits, ncc_centres=ncc_means)
    return float(stats.nc4_disagreements / stats.counts.sum())


def effective_depth(ncc_train_errors: Sequence[float], eps: float) -> int | None:
    """Galanti et al.'s effective depth: the smallest 1-based layer index ``l`` whose NCC *train* error is
    ``<= eps``, or ``None`` when no measured layer reaches it.

    Args:
        ncc_train_errors: ``1 - ncc_acc`` on the train split, one per layer, input to output.
        eps: the tolerance, in ``[0, 1]``.

    Example:
        >>> effective_depth([0.6, 0.3, 0.08, 0.01], eps=0.1)
        3
        >>> effective_depth([0.6, 0.3], eps=0.1) is None
        True
    """
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must lie in [0, 1], got {eps}")
    for layer, error in enumerate(ncc_train_errors, start=1):
        if error <= eps:
            return layer
    return None
