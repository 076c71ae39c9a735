"""Sufficient statistics of neural collapse, accumulated in two passes over the data.

Notation (``docs/metrics.md``): ``h_i`` is the embedding of sample ``i`` (flattened to ``d`` numbers),
``y_i`` its label in ``0..C-1``, ``N_c`` the class count, ``mu_c`` the class mean, ``mu_G`` the
sample-weighted global mean and ``M~`` the ``C x d`` matrix whose rows are the centred means ``mu_c - mu_G``.

Pass 1 sums ``N_c`` and ``S_c = sum_{y_i=c} h_i``. Pass 2, with the pass-1 means fixed, sums

* ``R_c = sum_{y_i=c} (h_i - m_c)`` with ``m_c`` the pass-1 mean rounded to the working precision, which
  refines the mean to ``mu_c = m_c + R_c / N_c`` (exact, whatever the rounding of pass 1),
* ``Q_c = sum_{y_i=c} ||h_i - mu_c||^2``                 (so ``var_c = Q_c / N_c``),
* ``P   = sum_i z_i z_i^T``, ``z_i = M~ (h_i - mu_{y_i})``  (``= N M~ Sigma_W M~^T``, C x C), or, for layers
  with few dimensions, the full scatter ``sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T`` (d x d),
* the number of samples whose nearest class centre is their own label, and (for the classifier layer)
  the number whose network prediction differs from the nearest-class-centre prediction.

Everything is summed in float64, so the statistics of disjoint shards add up (DDP: ``dist_reduce_fx="sum"``).

**Centring without cancellation.** Per-batch work runs in the input's precision (float32 for float32,
bfloat16 and float16 inputs; float64 for float64). Pass 2 centres each sample on ``m_c``; ``h - m_c`` is
exact in float32 when ``h`` is near ``m_c`` (Sterbenz), so everything pass 2 squares is small and exact. With
``r_c = R_c / N_c = mu_c - m_c`` the offset is removed once, in float64, at the end:

    sum_{y_i=c} ||h_i - mu_c||^2 = sum_{y_i=c} ||h_i - m_c||^2 - N_c ||r_c||^2,

and likewise for the scatters. No ``E||h||^2 - ||mu||^2`` appears anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

POOLING = ("flatten", "avg")


def work_dtype(x: Tensor) -> torch.dtype:
    """The precision of per-batch work: float64 for float64 inputs, float32 for everything else."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def flatten_features(features: Tensor, pool: str = "flatten") -> Tensor:
    """``(N, ...)`` embeddings as an ``(N, d)`` matrix in the working precision.

    ``pool="flatten"`` keeps every coordinate (a conv map ``(N, K, H, W)`` gives ``d = K*H*W``);
    ``pool="avg"`` averages a map over its spatial axes first (``d = K``).
    """
    if pool not in POOLING:
        raise ValueError(f"pool must be one of {list(POOLING)}, got {pool!r}")
    if not isinstance(features, Tensor):
        raise TypeError(f"features must be a Tensor of shape (N, d, ...), got {type(features).__name__}")
    if features.ndim < 2:
        raise ValueError(f"features must have shape (N, d, ...), got {tuple(features.shape)}")
    if pool == "avg" and features.ndim > 2:
        features = features.flatten(2).mean(-1)
    h = features.reshape(features.shape[0], -1)
    return h.to(work_dtype(h))


def class_sums(h: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Pass 1 of one batch: float64 class counts ``N_c`` ``(C,)`` and class sums ``S_c`` ``(C, d)``.

    Labels outside ``0..C-1`` are ignored here (they are counted by :func:`count_invalid_labels`).
    """
    valid = (labels >= 0) & (labels < num_classes)
    index = torch.where(valid, labels, num_classes)  # invalid labels land in a discarded extra row
    sums = torch.zeros(num_classes + 1, h.shape[1], dtype=h.dtype, device=h.device)
    sums.index_add_(0, index, h)
    return class_counts(labels, num_classes), sums[:num_classes].double()


def class_counts(labels: Tensor, num_classes: int) -> Tensor:
    """``(C,)`` float64 counts of the labels in ``0..C-1`` (no host sync)."""
    counts = torch.zeros(num_classes + 1, dtype=torch.float64, device=labels.device)
    index = torch.where((labels >= 0) & (labels < num_classes), labels, num_classes)
    return counts.index_add_(0, index, torch.ones_like(index, dtype=torch.float64))[:num_classes]


def count_invalid_labels(labels: Tensor, num_classes: int) -> Tensor:
    """The number of labels outside ``0..C-1``, as a 0-dim float64 tensor (no host sync)."""
    return ((labels < 0) | (labels >= num_classes)).sum().double()


@dataclass(frozen=True)
class Anchors:
    """What pass 2 needs of the pass-1 means of one layer, precomputed once.

    ``hi``: ``(C, d)`` pass-1 means ``m_c`` in the working precision (the centre of every sample in pass 2).
    ``directions``: ``(d, C + K)`` in the working precision, columns ``mu_c - mu_G`` followed by
    ``nu_k - mu_G`` for the ``K`` NCC centres ``nu`` (none when the NCC centres are the class means).
    ``centre_gap``: ``(C, K)`` float64, ``||hi_a - nu_k||^2`` — the NCC distance of a sample sitting at
    ``hi_a``; ``+inf`` in the columns of NCC centres that belong to empty classes (never predicted).
    """

    hi: Tensor
    directions: Tensor
    centre_gap: Tensor
    own_centres: bool

    @property
    def num_classes(self) -> int:
        return self.hi.shape[0]


def make_anchors(
    counts: Tensor,
    sums: Tensor,
    dtype: torch.dtype,
    ncc_centres: Tensor | None = None,
    ncc_absent: Tensor | None = None,
) -> Anchors:
    """Build pass-2 anchors from global counts and sums.

    ``ncc_centres`` (``(K, d)`` float64, e.g. the train split's class means for the test split) replaces the
    class means as nearest-class centres; by default the class means themselves are the centres.
    """
    empty = counts == 0
    means = sums / counts.clamp(min=1)[:, None]
    global_mean = sums.sum(0) / counts.sum().clamp(min=1)
    hi = means.to(dtype)
    centred = (means - global_mean).masked_fill(empty[:, None], 0.0)
    if ncc_centres is None:
        own, absent = True, empty
        columns = [centred]
        gap = _squared_distances(hi.double() - global_mean, centred)
    else:
        own = False
        absent = ncc_absent if ncc_absent is not None else torch.zeros_like(empty)
        other = (ncc_centres.to(sums) - global_mean).masked_fill(absent[:, None], 0.0)
        columns = [centred, other]
        gap = _squared_distances(hi.double() - global_mean, other)
    directions = torch.cat(columns, 0).T.to(dtype).contiguous()
    gap = gap.masked_fill(absent[None, :], float("inf"))
    return Anchors(hi=hi, directions=directions, centre_gap=gap, own_centres=own)


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """``||a_i - b_j||^2`` for rows of ``a`` and ``b`` (both already centred, so the Gram form is safe)."""
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T).clamp(min=0.0)


@dataclass(frozen=True)
class SecondPass:
    """Pass-2 contributions of one batch (all float64, all summable across batches and processes)."""

    offsets: Tensor  # (C, d) sum (h - hi_y) per class
    within_sq: Tensor  # (C,)  sum ||h - hi_y||^2 per class (offset not yet removed)
    scatter: Tensor  # (C, C) sum z z^T with z = M~ (h - hi_y), or (d, d) sum of (h-hi_y)(h-hi_y)^T
    ncc_correct: Tensor  # (C,)  samples of class c whose nearest centre is c
    ncc_prediction: Tensor  # (B,) int64, the nearest centre of each sample


def second_pass(h: Tensor, labels: Tensor, anchors: Anchors, *, full_scatter: bool) -> SecondPass:
    """Pass 2 of one batch: one GEMM of the centred batch against the centred means gives both the
    projections ``z_i`` and the NCC distances

        ||h_i - nu_k||^2 = ||h_i - hi_y||^2 + 2 (h_i - hi_y) . (hi_y - nu_k) + ||hi_y - nu_k||^2,

    where ``(h_i - hi_y) . (hi_y - nu_k) = z_{i,y} - z'_{i,k}`` up to the float32 rounding of the means.
    The first term and ``z_{i,y}`` do not depend on ``k``, so the nearest centre is the ``k`` that
    minimises ``||hi_y - nu_k||^2 - 2 z'_{i,k}``.
    """
    num_classes = anchors.num_classes
    index = labels.clamp(0, num_classes - 1)  # out-of-range labels were rejected after pass 1
    centres = anchors.hi.index_select(0, index)
    diff = torch.sub(h, centres, out=centres)
    sq = torch.linalg.vector_norm(diff, dim=1).double().square()
    projections = (diff @ anchors.directions).double()
    own = projections[:, :num_classes]
    to_centres = own if anchors.own_centres else projections[:, num_classes:]

    prediction = torch.add(anchors.centre_gap[index], to_centres, alpha=-2.0).argmin(1)

    offsets = torch.zeros_like(anchors.hi).index_add_(0, index, diff).double()
    zeros = torch.zeros(num_classes, dtype=torch.float64, device=h.device)
    within_sq = zeros.index_add(0, index, sq)
    ncc_correct = zeros.index_add(0, index, (prediction == labels).double())
    if full_scatter:
        d64 = diff.double()
        scatter = d64.T @ d64
    else:
        scatter = own.T @ own
    return SecondPass(offsets, within_sq, scatter, ncc_correct, prediction)


@dataclass(frozen=True)
class ClassStatistics:
    """Final float64 statistics of one layer: everything the metrics of ``docs/metrics.md`` are functions of.

    ``within_sq[c] = sum_{y_i=c} ||h_i - mu_c||^2``; ``projected_scatter = N M~ Sigma_W M~^T`` (C x C);
    ``full_scatter = N Sigma_W`` (d x d) when it was accumulated; ``ncc_correct`` per class;
    ``nc4_disagreements`` (a 0-dim tensor) when logits were given for this layer; ``resolution`` the machine
    epsilon of the per-batch working precision (to tell coinciding class means from rounding).
    """

    counts: Tensor
    means: Tensor
    within_sq: Tensor
    projected_scatter: Tensor
    full_scatter: Tensor | None
    ncc_correct: Tensor
    nc4_disagreements: Tensor | None
    resolution: float = torch.finfo(torch.float64).eps

    @property
    def global_mean(self) -> Tensor:
        present = self.counts > 0
        return self.counts[present] @ self.means[present] / self.counts.sum()

    @property
    def centred_means(self) -> Tensor:
        """``M~`` as a ``(C, d)`` matrix (rows of empty classes are NaN)."""
        return self.means - self.global_mean


def finalize(
    counts: Tensor,
    anchors: Anchors,
    offsets: Tensor,
    within_sq: Tensor,
    scatter: Tensor,
    ncc_correct: Tensor,
    nc4_disagreements: Tensor | None,
    *,
    full_scatter: bool,
) -> ClassStatistics:
    """Move the pass-2 sums from the centres ``m_c`` to the exact means (see the module docstring).

    With ``r_c = R_c / N_c`` and ``l_c = P^T r_c`` (``P`` the projection directions):
    ``mu_c = m_c + r_c``, ``Q_c = Q'_c - N_c ||r_c||^2``, ``P = P' - sum_c N_c l_c l_c^T``,
    full ``S = S' - sum_c N_c r_c r_c^T``. Empty classes get NaN means.
    """
    empty = counts == 0
    shift = offsets / counts.clamp(min=1)[:, None]
    means = (anchors.hi.double() + shift).masked_fill(empty[:, None], float("nan"))
    within_sq = within_sq - counts * (shift * shift).sum(1)
    directions = anchors.directions[:, : counts.shape[0]].double()
    full = None
    if full_scatter:
        full = scatter - (shift * counts[:, None]).T @ shift
        projected = directions.T @ full @ directions
    else:
        remainder = shift @ directions
        projected = scatter - (remainder * counts[:, None]).T @ remainder
    return ClassStatistics(
        counts=counts,
        means=means,
        within_sq=within_sq.clamp(min=0.0),
        projected_scatter=projected,
        full_scatter=full,
        ncc_correct=ncc_correct,
        nc4_disagreements=nc4_disagreements,
        resolution=torch.finfo(anchors.hi.dtype).eps,
    )
