"""Sufficient statistics of neural collapse, accumulated in two passes over the data.

Notation (``docs/metrics.md``): ``h_i`` is the embedding of sample ``i`` (flattened to ``d`` numbers),
``y_i`` its label in ``0..C-1``, ``N_c`` the class count, ``mu_c`` the class mean, ``mu_G`` the
sample-weighted global mean and ``M~`` the ``C x d`` matrix whose rows are the centred means ``mu_c - mu_G``.

Pass 1 sums ``N_c`` and ``S_c = sum_{y_i=c} h_i`` in float64, straight into the running sums (no per-batch
``C x d`` array). Pass 2, with the pass-1 means ``m_c`` fixed (``hi_c``: ``m_c`` rounded to the working
precision), sums

* ``R_c = sum_{y_i=c} (h_i - hi_c)``, which refines the mean to ``mu_c = hi_c + R_c / N_c`` (exact, whatever
  the rounding of ``hi_c``),
* ``Q_c = sum_{y_i=c} ||h_i - mu_c||^2``                 (so ``var_c = Q_c / N_c``),
* the within-class scatter, in one of two forms:

  - **projected** (``d >= C``): ``P = sum_i z_i z_i^T`` (``C x C``), ``z_i = T^T (h_i - mu_{y_i})`` with ``T``
    an *orthonormal* basis (``d x C``, working precision) of the span of the pass-1 centred means, so
    ``P = N T^T Sigma_W T``. Rounding ``z_i`` is relative to the sample's residual ``||h_i - hi_c||``,
    whatever the conditioning of the class means;
  - **full** (``d < C``, or ``d <= full_covariance_max_dim``): ``sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T``
    (``d x d``, ``= N Sigma_W``);

* the number of samples whose nearest class centre is their own label, and (for the classifier layer)
  the number whose network prediction differs from the nearest-class-centre prediction.

Everything is summed in float64, so the statistics of disjoint shards add up (DDP: ``dist_reduce_fx="sum"``).
Memory per layer: ``C x d`` sums plus a ``min(C, d)``-square scatter; no ``C x C`` object when ``C > d``.

**Centring without cancellation.** Per-batch work runs in the input's precision (float32 for float32,
bfloat16 and float16 inputs; float64 for float64). Pass 2 centres each sample on ``hi_c``; ``h - hi_c`` is
exact in float32 when ``h`` is near ``hi_c`` (Sterbenz), so everything pass 2 squares is small and exact.
With ``r_c = R_c / N_c = mu_c - hi_c`` the offset is removed once, in float64, at the end:

    sum_{y_i=c} ||h_i - mu_c||^2 = sum_{y_i=c} ||h_i - hi_c||^2 - N_c ||r_c||^2,

and likewise for the scatters. No ``E||h||^2 - ||mu||^2`` appears anywhere.

**Nearest class centre.** With centres ``nu_k`` (the class means, or the train split's) and ``o`` the
global mean in the working precision,
``argmin_k ||h - nu_k||^2 = argmin_k ||nu_k - o||^2 - 2 (h - o).(nu_k - o)``.
The projected path takes ``(h - o).(nu_k - o) = (h - hi_y).(nu_k - o) + (hi_y - o).(nu_k - o)``: the first
term from the batch's projections, the second from a ``C x C`` float64 table. The full path (``C > d``) takes
the ``B x d x C`` product of ``h - o`` with the centres directly, in blocks of :data:`NCC_BLOCK_ELEMENTS`
scores, keeping a running minimum: nothing of size ``C x C`` or ``B x C`` is formed.

**One read of each block.** Both passes go over a batch in blocks of rows, on CPU small enough to stay in
cache (:data:`BLOCK_ELEMENTS`), held in two buffers reused from block to block, so nothing of size ``B x d``
is allocated. Pass 2 reads each block of features once: it writes the residuals ``e = h - hi_y`` into the
first buffer (working precision), multiplies them by the ``K x d`` directions (one product per block, into
the ``K x B`` projections), and copies them to the second (float64, exact) for ``R_c``, ``Q_c`` and the full
scatter. The residual norms are not taken as ``||h||^2 - 2 h.hi_y + ||hi_y||^2`` from the product: in float32
that cancels catastrophically once the classes collapse.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

POOLING = ("flatten", "avg")
# The full-path NCC scores are formed in blocks of at most this many (B x block) entries: 16 MiB of float32.
NCC_BLOCK_ELEMENTS = 2**22
# Per-batch work goes over blocks of rows of about this many features. On CPU a block's centred copy
# (float32) and its float64 copy, 3 MiB together, stay in a core's L2 cache while the block is read again;
# a GPU wants few, large kernels (a batch is one block up to 2**26 / B features a sample; 768 MiB of buffers).
BLOCK_ELEMENTS = 2**18
ACCELERATOR_BLOCK_ELEMENTS = 2**26


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


def add_class_sums(counts: Tensor, sums: Tensor, h: Tensor, labels: Tensor) -> None:
    """Pass 1 of one batch, in place: ``counts`` ``(C,)`` += ``N_c``, ``sums`` ``(C, d)`` += ``S_c``, float64.

    Each block of rows (:func:`row_blocks`) is converted to float64 in one buffer and added row by row, so
    nothing of size ``B x d`` or ``C x d`` is formed per batch. A label outside ``0..C-1`` is not counted
    and its row goes to the sum of the nearest valid class: such labels are counted by
    :func:`count_invalid_labels` and make ``next_phase()`` and ``class_statistics`` raise before any sum is
    used. A NaN or Inf feature makes its class sum non-finite, which is how non-finite features are detected.
    """
    num_classes = counts.shape[0]
    index = labels.clamp(0, num_classes - 1)
    wide = h.new_empty(block_rows(h), h.shape[1], dtype=torch.float64)
    for rows in row_blocks(h):
        sums.index_add_(0, index[rows], wide[: rows.stop - rows.start].copy_(h[rows]))
    counts.index_add_(0, index, ((labels >= 0) & (labels < num_classes)).to(torch.float64))


def block_rows(h: Tensor, min_rows: int = 1) -> int:
    """The rows of a block of the ``(B, d)`` batch ``h``: as many as :data:`BLOCK_ELEMENTS` features allow
    (:data:`ACCELERATOR_BLOCK_ELEMENTS` off the CPU), but at least ``min_rows`` (and one), at most ``B``.
    Pass 2 asks for at least ``K`` rows, the number of directions each block is multiplied by, so that
    reading the ``K x d`` directions costs no more than reading the block."""
    rows, dim = h.shape
    elements = BLOCK_ELEMENTS if h.device.type == "cpu" else ACCELERATOR_BLOCK_ELEMENTS
    return max(1, min(rows, max(min_rows, elements // max(dim, 1))))


def row_blocks(h: Tensor, min_rows: int = 1) -> list[slice]:
    """Consecutive slices of the rows of ``h``, :func:`block_rows` each (the last one may be shorter)."""
    rows, step = h.shape[0], block_rows(h, min_rows)
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


def class_sums(h: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Pass 1 over all of ``h``: float64 class counts ``N_c`` ``(C,)`` and class sums ``S_c`` ``(C, d)``."""
    counts = torch.zeros(num_classes, dtype=torch.float64, device=h.device)
    sums = torch.zeros(num_classes, h.shape[1], dtype=torch.float64, device=h.device)
    add_class_sums(counts, sums, h, labels)
    return counts, sums


def class_counts(labels: Tensor, num_classes: int) -> Tensor:
    """``(C,)`` float64 counts of the labels in ``0..C-1`` (no host sync)."""
    counts = torch.zeros(num_classes + 1, dtype=torch.float64, device=labels.device)
    index = torch.where((labels >= 0) & (labels < num_classes), labels, num_classes)
    return counts.index_add_(0, index, torch.ones_like(index, dtype=torch.float64))[:num_classes]


def count_invalid_labels(labels: Tensor, num_classes: int) -> Tensor:
    """The number of labels outside ``0..C-1``, as a 0-dim float64 tensor (no host sync)."""
    return ((labels < 0) | (labels >= num_classes)).sum().double()


def uses_full_scatter(dim: int, num_classes: int, full_covariance_max_dim: int = 0) -> bool:
    """Whether a layer keeps the full ``d x d`` scatter: ``d < C`` (it is then the smaller of the two), or
    ``d <= full_covariance_max_dim``."""
    return dim < num_classes or dim <= full_covariance_max_dim


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: ``torch.cuda.mem_get_info`` on GPU, ``MemAvailable`` on Linux CPUs."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_scatter_fits(dim: int, device: torch.device, layer: str) -> None:
    """Refuse, before allocating, a full ``d x d`` float64 scatter that does not fit: it needs ``8 d^2`` bytes
    for the state and as much again for the work of ``compute()``."""
    needed = 2 * 8 * dim * dim
    free = available_bytes(device)
    if needed > free:
        raise MemoryError(
            f"layer {layer!r}: the full d x d within-class scatter (d = {dim}) needs {needed:,} bytes "
            f"({needed / 2**30:.1f} GiB: the float64 state and one working copy) but only {free:,} bytes are "
            f"available on {device}; set full_covariance_max_dim below {dim}"
        )


@dataclass(frozen=True)
class Anchors:
    """What pass 2 needs of the pass-1 means of one layer, precomputed once.

    ``means``: ``(C, d)`` float64 pass-1 means ``m_c`` (NaN rows for empty classes).
    ``rounded``: ``(C, d)`` ``hi_c``, the means rounded to the working precision ``dtype``, on which each
    sample is centred.
    ``origin``: ``(d,)`` ``o``, the global mean in the working precision.
    ``basis``: projected path only, ``(d, C)`` orthonormal basis ``T`` of the centred means, in the working
    precision.
    ``directions``: the ``(K, d)`` rows the centred batch is multiplied by (stored as rows: the skinny
    product ``D E^T`` is up to 2.5x faster than ``E D^T`` on CPU). Projected path: the columns of ``T``,
    followed by the NCC centres ``nu_k - o`` when they are not the class means; full path: the centres
    ``nu_k - o`` (multiplied by ``h - o``).
    ``centre_table``: projected path: ``(C, K)`` float64 ``||hi_a - nu_k||^2``; full path: ``(K,)``
    ``||nu_k - o||^2`` in the working precision. ``+inf`` for centres never predicted (empty classes).
    ``coefficients``: projected path with the class means as centres: ``(C, K)`` float64 coordinates of
    ``nu_k - o`` in ``T`` (so ``(h - hi_y).(nu_k - o) = z.coefficients_k``).
    """

    means: Tensor
    rounded: Tensor
    dtype: torch.dtype
    origin: Tensor
    basis: Tensor | None
    directions: Tensor
    centre_table: Tensor
    coefficients: Tensor | None

    @property
    def num_classes(self) -> int:
        return self.means.shape[0]

    @property
    def full(self) -> bool:
        return self.basis is None


def make_anchors(
    counts: Tensor,
    sums: Tensor,
    dtype: torch.dtype,
    ncc_centres: Tensor | None = None,
    ncc_absent: Tensor | None = None,
    *,
    full_scatter: bool,
) -> Anchors:
    """Build pass-2 anchors from global float64 counts and sums.

    ``ncc_centres`` (``(K, d)`` float64, e.g. the train split's class means for the test split) replaces the
    class means as nearest-class centres; by default the class means themselves are the centres.
    """
    empty = counts == 0
    means = (sums / counts.clamp(min=1)[:, None]).masked_fill(empty[:, None], float("nan"))
    rounded = means.to(dtype)
    origin = (sums.sum(0) / counts.sum().clamp(min=1)).to(dtype)
    o64 = origin.double()
    own = ncc_centres is None
    if own:
        absent = empty
        centres = (means - o64).masked_fill(empty[:, None], 0.0)
    else:
        absent = ncc_absent if ncc_absent is not None else torch.zeros_like(empty)
        centres = (ncc_centres.to(sums) - o64).masked_fill(absent[:, None], 0.0)
    centres = centres.to(dtype)  # nu_k - o as the batch sees it
    if full_scatter:
        table = centres.double().square().sum(1).masked_fill(absent, float("inf")).to(dtype)
        return Anchors(means, rounded, dtype, origin, None, centres.contiguous(), table, None)
    centred = (means - o64).masked_fill(empty[:, None], 0.0)
    basis = torch.linalg.qr(centred.T).Q.to(dtype)  # orthonormal, d x C
    shifted = rounded.double().nan_to_num() - o64  # hi_a - o
    nu = centres.double()
    table = (shifted.square().sum(1)[:, None] + nu.square().sum(1) - 2.0 * shifted @ nu.T).clamp(min=0.0)
    table = table.masked_fill(absent[None, :], float("inf"))
    if own:
        b64 = basis.double()
        coefficients = torch.linalg.solve(b64.T @ b64, b64.T @ nu.T)
        return Anchors(means, rounded, dtype, origin, basis, basis.T.contiguous(), table, coefficients)
    directions = torch.cat([basis.T, centres]).contiguous()
    return Anchors(means, rounded, dtype, origin, basis, directions, table, None)


@dataclass(frozen=True)
class PassTwoSums:
    """The float64 running sums of pass 2 of one layer (added to in place by :func:`second_pass`).

    ``offsets`` ``(C, d)``: ``sum (h - hi_y)`` per class; ``within_sq`` ``(C,)``: ``sum ||h - hi_y||^2`` per
    class (offset not yet removed); ``scatter``: ``(C, C)`` ``sum z z^T`` (projected) or ``(d, d)``
    ``sum (h - hi_y)(h - hi_y)^T`` (full); ``ncc_correct`` ``(C,)``: samples of class ``c`` whose nearest
    centre is ``c``.
    """

    offsets: Tensor
    within_sq: Tensor
    scatter: Tensor
    ncc_correct: Tensor

    @classmethod
    def zeros(cls, num_classes: int, dim: int, *, full: bool, device: torch.device) -> PassTwoSums:
        side = dim if full else num_classes
        options = dict(dtype=torch.float64, device=device)
        return cls(
            torch.zeros(num_classes, dim, **options),
            torch.zeros(num_classes, **options),
            torch.zeros(side, side, **options),
            torch.zeros(num_classes, **options),
        )


def second_pass(h: Tensor, labels: Tensor, anchors: Anchors, sums: PassTwoSums) -> Tensor:
    """Pass 2 of one batch: add its contributions to ``sums`` and return the ``(B,)`` int64 nearest-centre
    prediction of each sample (see the module docstring for the NCC scores).

    Work per batch: the ``B x d x K`` product (projected: ``z = (h - hi_y) T``; full: ``(h - o)`` times the
    centres, in blocks) plus ``O(B d)`` (projected) or ``O(B d^2)`` (full, ``d < C``) more, over blocks of
    rows (``_residual_blocks``); nothing scales with ``C x d``, and on CPU nothing of size ``B x d`` is
    allocated.
    """
    index = labels.clamp(0, anchors.num_classes - 1)  # out-of-range labels were rejected after pass 1
    if anchors.full:
        prediction = _full_pass(h, index, anchors, sums)
    else:
        prediction = _projected_pass(h, index, anchors, sums)
    sums.ncc_correct.index_add_(0, index, (prediction == labels).to(torch.float64))
    return prediction


def _residual_blocks(h: Tensor, index: Tensor, anchors: Anchors) -> Iterator[tuple[slice, Tensor, Tensor]]:
    """For each block of rows (:func:`row_blocks`, at least as many rows as there are directions): its slice,
    the residuals ``e = h - hi_y`` in the working precision and ``e`` in float64 (exact: a float32 value
    converts exactly).

    Two buffers of one block each serve every block (one, shared by both, for float64 inputs), so a block's
    tensors hold until the next block is made.
    """
    min_rows = anchors.directions.shape[0]
    centred = h.new_empty(block_rows(h, min_rows), h.shape[1])
    wide = centred if h.dtype == torch.float64 else torch.empty_like(centred, dtype=torch.float64)
    for block in row_blocks(h, min_rows):
        size = block.stop - block.start
        residual = torch.index_select(anchors.rounded, 0, index[block], out=centred[:size])
        torch.sub(h[block], residual, out=residual)
        yield block, residual, residual if wide is centred else wide[:size].copy_(residual)


def _projected_pass(h: Tensor, index: Tensor, anchors: Anchors, sums: PassTwoSums) -> Tensor:
    """``d >= C``: the ``(K, B)`` products ``D e`` of the directions with the residuals, block by block;
    then, once per batch, the scatter ``P += z z^T`` of their first ``C`` rows ``z = T^T e`` and the
    nearest centres ``argmin_k ||hi_y - nu_k||^2 - 2 e.(nu_k - o)``."""
    num_classes = anchors.num_classes
    products = h.new_empty(anchors.directions.shape[0], h.shape[0])
    for block, residual, exact in _residual_blocks(h, index, anchors):
        torch.mm(anchors.directions, residual.T, out=products[:, block])
        _add_residuals(sums, index[block], exact)
    products = products.double().T
    own = products[:, :num_classes]
    sums.scatter.addmm_(own.T, own)
    to_centres = own @ anchors.coefficients if anchors.coefficients is not None else products[:, num_classes:]
    return torch.add(anchors.centre_table.index_select(0, index), to_centres, alpha=-2.0).argmin(1)


def _full_pass(h: Tensor, index: Tensor, anchors: Anchors, sums: PassTwoSums) -> Tensor:
    """``d < C``: per block, the ``d x d`` scatter ``S += e^T e`` in float64, then ``h - o`` in the residuals'
    buffer for the nearest centres ``argmin_k ||nu_k - o||^2 - 2 (h - o).(nu_k - o)``."""
    prediction = torch.empty_like(index)
    for block, residual, exact in _residual_blocks(h, index, anchors):
        sums.scatter.addmm_(exact.T, exact)
        _add_residuals(sums, index[block], exact)
        shifted = torch.sub(h[block], anchors.origin, out=residual)
        prediction[block] = _nearest_centres(shifted, anchors.directions, anchors.centre_table)
    return prediction


def _add_residuals(sums: PassTwoSums, index: Tensor, exact: Tensor) -> None:
    """``R_c += sum_{y_i=c} e_i`` and ``Q'_c += sum_{y_i=c} ||e_i||^2`` from the float64 residuals
    ``exact`` (the norm, one read of the block, squared again: within 2 float64 ulps)."""
    sums.offsets.index_add_(0, index, exact)
    sums.within_sq.index_add_(0, index, torch.linalg.vector_norm(exact, dim=1).square_())


def _nearest_centres(shifted: Tensor, centres: Tensor, squared_norms: Tensor) -> Tensor:
    """``argmin_k ||c_k||^2 - 2 x.c_k`` for each row ``x`` of ``shifted`` (``(B, d)``) and row ``c_k`` of
    ``centres`` (``(K, d)``), over blocks of centres (first index on ties)."""
    rows, total = shifted.shape[0], centres.shape[0]
    block = max(1, NCC_BLOCK_ELEMENTS // max(rows, 1))
    best_value = best_index = None
    for start in range(0, total, block):
        scores = torch.addmm(
            squared_norms[start : start + block], shifted, centres[start : start + block].T, alpha=-2.0
        )
        index = scores.argmin(1)
        value = scores.gather(1, index[:, None])[:, 0]
        if best_value is None:
            best_value, best_index = value, index
        else:
            better = value < best_value
            best_value = torch.where(better, value, best_value)
            best_index = torch.where(better, index + start, best_index)
    return best_index


@dataclass(frozen=True)
class ClassStatistics:
    """Final float64 statistics of one layer: everything the metrics of ``docs/metrics.md`` are functions of.

    ``within_sq[c] = sum_{y_i=c} ||h_i - mu_c||^2``; ``scatter``: ``N T^T Sigma_W T`` (``C x C``) with
    ``basis = T`` (``d x C``, the working-precision basis as float64), or ``N Sigma_W`` (``d x d``) when
    ``basis`` is ``None``; ``ncc_correct`` per class; ``nc4_disagreements`` (a 0-dim tensor) when logits were
    given for this layer; ``resolution`` the machine epsilon of the per-batch working precision (to tell
    coinciding class means from rounding).
    """

    counts: Tensor
    means: Tensor
    within_sq: Tensor
    scatter: Tensor
    basis: Tensor | None
    ncc_correct: Tensor
    nc4_disagreements: Tensor | None
    resolution: float = torch.finfo(torch.float64).eps

    @property
    def full_scatter(self) -> Tensor | None:
        """``N Sigma_W`` (``d x d``) when it was accumulated, else ``None``."""
        return self.scatter if self.basis is None else None

    @property
    def global_mean(self) -> Tensor:
        present = self.counts > 0
        return self.counts[present] @ self.means[present] / self.counts.sum()

    @property
    def centred_means(self) -> Tensor:
        """``M~`` as a ``(C, d)`` matrix (rows of empty classes are NaN)."""
        return self.means - self.global_mean


def finalize(
    counts: Tensor, anchors: Anchors, sums: PassTwoSums, nc4_disagreements: Tensor | None
) -> ClassStatistics:
    """Move the pass-2 sums from the centres ``hi_c`` to the exact means (see the module docstring).

    With ``r_c = R_c / N_c``: ``mu_c = hi_c + r_c``, ``Q_c = Q'_c - N_c ||r_c||^2``; full
    ``S = S' - sum_c N_c r_c r_c^T``; projected, with ``l_c = T^T r_c``, ``P = P' - sum_c N_c l_c l_c^T``.
    Empty classes get NaN means.
    """
    empty = counts == 0
    shift = (sums.offsets / counts.clamp(min=1)[:, None]).masked_fill(empty[:, None], 0.0)
    means = (anchors.rounded.double() + shift).masked_fill(empty[:, None], float("nan"))
    within_sq = sums.within_sq - counts * shift.square().sum(1)
    weighted = shift * counts[:, None]
    if anchors.full:
        basis = None
        scatter = sums.scatter - weighted.T @ shift
    else:
        basis = anchors.basis.double()
        scatter = sums.scatter - (weighted @ basis).T @ (shift @ basis)
    return ClassStatistics(
        counts=counts,
        means=means,
        within_sq=within_sq.clamp(min=0.0),
        scatter=scatter,
        basis=basis,
        ncc_correct=sums.ncc_correct,
        nc4_disagreements=nc4_disagreements,
        resolution=torch.finfo(anchors.dtype).eps,
    )
