"""Sufficient statistics of neural collapse, accumulated in two passes over the data.

Notation (``docs/metrics.md``): ``h_i`` is the embedding of sample ``i`` (flattened to ``d`` numbers),
``y_i`` its label in ``0..C-1``, ``N_c`` the class count, ``mu_c`` the class mean, ``mu_G`` the
sample-weighted global mean and ``M~`` the ``C x d`` matrix whose rows are the centred means ``mu_c - mu_G``.

Pass 1 sums ``N_c`` and ``S_c = sum_{y_i=c} h_i`` in float64, straight into the running sums (no per-batch
``C x d`` array), which fixes the means ``mu_c = S_c / N_c`` (float64: a float32 feature converts exactly, so
the only rounding is that of the float64 additions). Pass 2 sees the same samples again, each centred on
``hi_c``, ``mu_c`` rounded to the working precision, and sums

* ``Q_c = sum_{y_i=c} ||h_i - mu_c||^2``                 (so ``var_c = Q_c / N_c``),
* the within-class scatter, in one of two forms:

  - **projected** (``d >= C``): ``s_k = sum_i (u_k . (h_i - mu_{y_i}))^2 = N u_k^T Sigma_W u_k`` for the ``C``
    eigenvectors ``u_k`` of ``B = M~^T M~`` (orthonormal, in the span of the centred means; fixed with the
    means after pass 1). ``Tr(Sigma_W Sigma_B^+)`` needs nothing else. Rounding ``u_k . e`` is relative to the
    sample's residual ``||h_i - hi_c||``, whatever the conditioning of the class means;
  - **full** (``d < C``, or ``d <= full_covariance_max_dim``): ``sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T``
    (``d x d``, ``= N Sigma_W``);

* the number of samples whose nearest class centre is their own label, and (for the classifier layer)
  the number whose network prediction differs from the nearest-class-centre prediction.

Everything is summed in float64, so the statistics of disjoint shards add up (DDP: ``dist_reduce_fx="sum"``).
Memory per layer: ``C x d`` sums (then means) plus a ``d x d`` scatter when ``d < C``, or ``C`` sums and the
``d x C`` eigenvectors when ``d >= C``; no ``C x C`` object when ``C > d``.

**Centring without cancellation.** Per-batch work runs in the input's precision (float32 for float32,
bfloat16 and float16 inputs; float64 for float64). Pass 2 centres each sample on ``hi_c``; ``h - hi_c`` is
exact in float32 when ``h`` is near ``hi_c`` (Sterbenz), so everything pass 2 squares is small and exact.
With ``r_c = mu_c - hi_c`` (the rounding of the mean, known in float64, since
``sum_{y_i=c} (h_i - hi_c) = N_c r_c``) the offset is removed once, in float64, at the end:

    sum_{y_i=c} ||h_i - mu_c||^2 = sum_{y_i=c} ||h_i - hi_c||^2 - N_c ||r_c||^2,

and likewise for the scatters. No ``E||h||^2 - ||mu||^2`` appears anywhere. The squared residual norms are
summed within a row in the working precision (relative error about ``sqrt(d)`` units in the last place of
``||h_i - hi_c||^2``, which rounding ``h_i`` itself already costs) and across rows in float64; the scatters
are float32 products of chunks of :data:`SCATTER_CHUNK_ROWS` centred rows, added in float64 (relative error
at most ``gamma_k = k u / (1 - k u)`` of ``sum |e_j| |e_l|`` per entry, ``k`` the chunk's rows).

**Same samples in both passes.** Pass 2 also sums, per class, ``P_c = sum_{y_i=c} g . (h_i - hi_c)`` along a
fixed random unit direction ``g`` (the same on every process); over the samples of pass 1 it equals
``N_c g . r_c`` up to rounding (:func:`mismatched_classes` bounds it), so a pass 2 fed other samples with the
same class counts is caught at ``compute()``. Cost: one ``B x d`` product with ``g`` per batch (on the
projected path, one more row of the product with the directions).

**Precision and devices.** Per-batch work runs with autocast turned off (under ``torch.autocast`` a float32
product would run in bfloat16 or float16, and an NCC score above 65,504 would overflow float16), on the
device of the features; every tensor made here follows that device.

**Nearest class centre.** With centres ``nu_k`` (the class means, or the train split's) and ``o`` the
global mean in the working precision,
``argmin_k ||h - nu_k||^2 = argmin_k ||nu_k - o||^2 - 2 (h - o).(nu_k - o)``.
The scores are compared in the working precision, like the features themselves. The projected path writes,
with ``e = h - hi_y``,
``||h - nu_k||^2 = ||e||^2 + 2 e.(hi_y - o) + ||hi_y - nu_k||^2 - 2 e.(nu_k - o)``, and compares the last two
terms (the first two do not depend on ``k``): a ``C x C`` table of ``||hi_a - nu_k||^2`` computed in float64,
and ``e.(nu_k - o)`` from the batch's projections (for the class means, ``e.(mu_k - mu_G)``, which differs from
it by a term that does not depend on ``k``, from the projections on the ``u_k``). The scores are thus
relative to the distances between centres, not to ``||h||``. The full path (``C > d``) takes
the ``B x d x C`` product of ``h - o`` with the centres directly, in blocks of :data:`NCC_BLOCK_ELEMENTS`
scores, keeping a running minimum: nothing of size ``C x C`` or ``B x C`` is formed.

**One read of each block.** Both passes go over a batch in blocks of rows, on CPU small enough to stay in
cache (:data:`BLOCK_ELEMENTS`), held in buffers reused from block to block and, by the streaming metric, from
batch to batch (:class:`Workspace`), so nothing of size ``B x d`` is allocated. Pass 2 reads each block of
features once: it writes the residuals ``e = h - hi_y`` into the first buffer (working precision), takes their
norms and multiplies them by the ``K x d`` directions (one product per block, into the ``K x B`` projections);
the full path multiplies them in chunks of :data:`SCATTER_CHUNK_ROWS` rows into the second buffer (float32
``d x d`` products added to the float64 scatter: no float64 product per batch; error bound in
``docs/metrics.md``, "Precision"). The residual
norms are not taken as ``||h||^2 - 2 h.hi_y + ||hi_y||^2`` from the product: in float32 that cancels
catastrophically once the classes collapse.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
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
# The full d x d scatter is a sum of float32 products of this many centred rows, each added in float64:
# per-entry error at most gamma_k (k u, 7.6e-6 for k = 128) of sum |e_j||e_l|, typically sqrt(k) u.
SCATTER_CHUNK_ROWS = 128
# The sample check of pass 2 (module docstring) flags a class whose pass-2 mean differs from its pass-1 mean,
# along the probe, by more than this fraction of the class's spread per dimension.
SAMPLE_CHECK_TOLERANCE = 1e-3
_PROBE_SEED = 20250521


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """A context with autocast turned off on ``device`` when it is on (a no-op otherwise), so that float32
    products stay float32."""
    try:
        enabled = torch.is_autocast_enabled(device.type)
    except RuntimeError:  # a device type autocast does not know (meta)
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False) if enabled else contextlib.nullcontext()


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


def add_class_sums(
    counts: Tensor, sums: Tensor, h: Tensor, labels: Tensor, workspace: Workspace | None = None
) -> None:
    """Pass 1 of one batch, in place: ``counts`` ``(C,)`` += ``N_c``, ``sums`` ``(C, d)`` += ``S_c``, float64.

    Each block of rows (:func:`row_blocks`) is converted to float64 in one buffer (of ``workspace``) and added
    row by row, so nothing of size ``B x d`` or ``C x d`` is formed per batch. A label outside ``0..C-1`` is
    not counted and its row goes to the sum of the nearest valid class: such labels are counted by
    :func:`count_invalid_labels` and make ``next_phase()`` and ``class_statistics`` raise before any sum is
    used. A NaN or Inf feature makes its class sum non-finite, which is how non-finite features are detected.
    """
    num_classes = counts.shape[0]
    index = labels.clamp(0, num_classes - 1)
    workspace = Workspace() if workspace is None else workspace
    wide = workspace.rows(block_rows(h), h.shape[1], h.device, torch.float64)
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


class Workspace:
    """Buffers reused from batch to batch, one per use (``slot``), device and dtype (replaced by a larger one
    when asked for), so that the per-batch work allocates, and on CPU page-faults, nothing of the size of a
    block of rows. Blocks are processed one after the other, so one buffer per use suffices. The buffers are
    made on the device of the features they serve; :meth:`clear` releases them (``NeuralCollapse.reset()`` and
    ``.to()`` do)."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, torch.device, torch.dtype], Tensor] = {}

    def rows(
        self, rows: int, dim: int, device: torch.device, dtype: torch.dtype, slot: str = "rows"
    ) -> Tensor:
        """A ``(rows, dim)`` view of the buffer ``slot`` for ``(device, dtype)`` (its values are arbitrary)."""
        size = rows * dim
        key = (slot, torch.device(device), dtype)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < size:
            self._buffers.pop(key, None)  # free the smaller one first
            buffer = self._buffers[key] = torch.empty(size, dtype=dtype, device=device)
        return buffer[:size].view(rows, dim)

    def clear(self) -> None:
        """Release every buffer (they are re-made, on the features' device, when next needed)."""
        self._buffers.clear()

    @property
    def nbytes(self) -> int:
        return sum(buffer.numel() * buffer.element_size() for buffer in self._buffers.values())


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


def all_finite(sums: Tensor) -> bool:
    """Whether every entry of the float64 ``sums`` is finite, from their total: a NaN or an infinity makes
    it NaN or infinite (sums of float32-range features cannot overflow float64). One read, no temporary of
    the size of ``sums`` (``C x d`` may be a vocabulary times a width)."""
    return bool(torch.isfinite(sums.sum()))


def uses_full_scatter(dim: int, num_classes: int, full_covariance_max_dim: int = 0) -> bool:
    """Whether a layer keeps the full ``d x d`` scatter: ``d < C`` (it is then the smaller of the two), or
    ``d <= full_covariance_max_dim``."""
    return dim < num_classes or dim <= full_covariance_max_dim


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device``. GPU: ``torch.cuda.mem_get_info``'s free bytes plus what PyTorch's caching
    allocator holds without using (``memory_reserved - memory_allocated``, which it hands out again before
    asking the driver); CPU: ``MemAvailable`` on Linux."""
    if device.type == "cuda":
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return torch.cuda.mem_get_info(device)[0] + cached
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def scatter_bytes(dim: int) -> int:
    """Bytes a full ``d x d`` scatter needs: the float64 state, as much again for the work of ``compute()``,
    and the float32 product of a chunk of rows."""
    return (8 + 8 + 4) * dim * dim


def check_scatter_fits(dim: int, device: torch.device, layer: str, free: int | None = None) -> None:
    """Refuse, before allocating, a full ``d x d`` scatter that does not fit in ``free`` bytes (default: what
    :func:`available_bytes` reports on ``device``; under DDP the caller passes the smallest over processes, so
    that every process decides alike)."""
    needed = scatter_bytes(dim)
    free = available_bytes(device) if free is None else free
    if needed > free:
        raise MemoryError(
            f"layer {layer!r}: the full d x d within-class scatter (d = {dim}) needs {needed:,} bytes "
            f"({needed / 2**30:.1f} GiB: the float64 state, one working copy and a float32 product) but only {free:,} bytes are "
            f"available on {device}; set full_covariance_max_dim below {dim}"
        )


@dataclass(frozen=True)
class Anchors:
    """What pass 2 needs of the pass-1 means of one layer, precomputed once.

    ``means``: ``(C, d)`` float64 means ``mu_c`` (NaN rows for empty classes).
    ``rounded``: ``(C, d)`` ``hi_c``, the means rounded to the working precision ``dtype``, on which each
    sample is centred.
    ``origin``: ``(d,)`` ``o``, the global mean in the working precision.
    ``eigenvalues``, ``eigenbasis``: projected path only: the eigenpairs ``(lambda_k, u_k)`` of
    ``B = M~^T M~ = C Sigma_B`` on the span of the centred means, ``(C,)`` and ``(d, C)`` float64 with
    orthonormal columns ``U`` (from the QR factorisation ``M~^T = T R`` and the eigenpairs
    ``R R^T = V diag(lambda) V^T``: ``U = T V``).
    ``directions``: the ``(K, d)`` rows the centred batch is multiplied by, in the working precision
    (stored as rows: the skinny product ``D E^T`` is up to 2.5x faster than ``E D^T`` on CPU). Projected
    path: ``U^T``, followed by the NCC centres ``nu_k - o`` when they are not the class means; full path:
    the centres ``nu_k - o`` (multiplied by ``h - o``).
    ``centre_table``: projected path: ``(C, K)`` ``||hi_a - nu_k||^2``; full path: ``(K,)``
    ``||nu_k - o||^2``; computed in float64, stored in the working precision. ``+inf`` for centres never
    predicted (empty classes).
    ``coefficients``: projected path with the class means as centres: ``(C, C)`` coordinates
    ``U^T (mu_k - mu_G) = V^T R`` of the centred means in ``U`` (so ``e.(mu_k - mu_G) = (U^T e).coefficients_k``),
    in the working precision.
    ``probe``: ``(d,)`` the unit direction ``g`` of the sample check (module docstring), in the working
    precision, or ``None`` without the check; on the projected path it is also the last row of
    ``directions``.
    """

    means: Tensor
    rounded: Tensor
    dtype: torch.dtype
    origin: Tensor
    eigenvalues: Tensor | None
    eigenbasis: Tensor | None
    directions: Tensor
    centre_table: Tensor
    coefficients: Tensor | None
    probe: Tensor | None = None

    @property
    def num_classes(self) -> int:
        return self.means.shape[0]

    @property
    def full(self) -> bool:
        return self.eigenbasis is None


def make_anchors(
    counts: Tensor,
    sums: Tensor,
    dtype: torch.dtype,
    ncc_centres: Tensor | None = None,
    ncc_absent: Tensor | None = None,
    *,
    full_scatter: bool,
    check_samples: bool = False,
) -> Anchors:
    """Build pass-2 anchors from global float64 counts and sums (every tensor on their device).

    ``ncc_centres`` (``(K, d)`` float64, e.g. the train split's class means for the test split) replaces the
    class means as nearest-class centres; by default the class means themselves are the centres.
    ``check_samples``: draw the probe ``g`` of the sample check (the same on every process).
    """
    with autocast_off(sums.device):
        anchors = _make_anchors(counts, sums, dtype, ncc_centres, ncc_absent, full_scatter)
    if not check_samples:
        return anchors
    generator = torch.Generator().manual_seed(_PROBE_SEED)
    probe = torch.randn(sums.shape[1], generator=generator, dtype=torch.float64, device="cpu")
    probe = (probe / torch.linalg.vector_norm(probe)).to(device=sums.device, dtype=dtype)
    if anchors.full:
        return dataclasses.replace(anchors, probe=probe)
    directions = torch.cat([anchors.directions, probe[None]])  # one more row of the batch's product
    return dataclasses.replace(anchors, probe=probe, directions=directions)


def _make_anchors(
    counts: Tensor,
    sums: Tensor,
    dtype: torch.dtype,
    ncc_centres: Tensor | None,
    ncc_absent: Tensor | None,
    full_scatter: bool,
) -> Anchors:
    empty = counts == 0
    means = (sums / counts.clamp(min=1)[:, None]).masked_fill_(empty[:, None], float("nan"))
    rounded = means.to(dtype)
    global_mean = sums.sum(0) / counts.sum().clamp(min=1)
    origin = global_mean.to(dtype)
    own = ncc_centres is None
    absent = empty if own else ncc_absent if ncc_absent is not None else torch.zeros_like(empty)
    if full_scatter:  # C x d temporaries are few: C may be a vocabulary
        centres = rounded - origin if own else ncc_centres.to(dtype) - origin  # nu_k - o as the batch sees it
        centres.masked_fill_(absent[:, None], 0.0)
        table = torch.linalg.vector_norm(centres, dim=1).square_().masked_fill_(absent, float("inf"))
        return Anchors(means, rounded, dtype, origin, None, None, centres, table, None)
    o64 = origin.double()
    if own:
        nu = (means - o64).masked_fill(empty[:, None], 0.0)
    else:
        nu = (ncc_centres.to(sums) - o64).masked_fill(absent[:, None], 0.0).to(dtype).double()
    shifted = rounded.double().nan_to_num() - o64  # hi_a - o
    table = (shifted.square().sum(1)[:, None] + nu.square().sum(1) - 2.0 * shifted @ nu.T).clamp(min=0.0)
    table = table.masked_fill(absent[None, :], float("inf")).to(dtype)
    centred = (means - global_mean).masked_fill(empty[:, None], 0.0)  # M~, exactly centred
    basis, triangle = torch.linalg.qr(centred.T)
    eigenvalues, rotation = torch.linalg.eigh(triangle @ triangle.T)
    eigenbasis = basis @ rotation
    if own:
        coefficients = (rotation.T @ triangle).to(dtype)
        directions = eigenbasis.T.to(dtype).contiguous()
    else:
        coefficients = None
        directions = torch.cat([eigenbasis.T, nu]).to(dtype).contiguous()
    return Anchors(means, rounded, dtype, origin, eigenvalues, eigenbasis, directions, table, coefficients)


@dataclass(frozen=True)
class PassTwoSums:
    """The float64 running sums of pass 2 of one layer (added to in place by :func:`second_pass`).

    ``within_sq`` ``(C,)``: ``sum ||e||^2`` per class, ``e = h - hi_y`` (offset not yet removed);
    ``scatter``: projected path, ``(C,)`` ``sum (u_k . e)^2``, the diagonal of the scatter in the eigenbasis
    ``U`` (all that ``Tr(Sigma_W Sigma_B^+)`` needs); full path, ``(d, d)`` ``sum e e^T``; ``ncc_correct``
    ``(C,)``: samples of class ``c`` whose nearest centre is ``c``; ``probe`` ``(C,)``: ``P_c = sum g . e``
    (sample check; ``None`` without it).
    """

    within_sq: Tensor
    scatter: Tensor
    ncc_correct: Tensor
    probe: Tensor | None = None

    @classmethod
    def zeros(cls, num_classes: int, dim: int, *, full: bool, device: torch.device) -> PassTwoSums:
        options = dict(dtype=torch.float64, device=device)
        return cls(
            torch.zeros(num_classes, **options),
            torch.zeros(scatter_shape(dim, num_classes, full=full), **options),
            torch.zeros(num_classes, **options),
        )


def scatter_shape(dim: int, num_classes: int, *, full: bool) -> tuple[int, ...]:
    """``(d, d)`` for the full scatter, ``(C,)`` for its diagonal in the eigenbasis (projected path)."""
    return (dim, dim) if full else (num_classes,)


def second_pass(
    h: Tensor, labels: Tensor, anchors: Anchors, sums: PassTwoSums, workspace: Workspace | None = None
) -> Tensor:
    """Pass 2 of one batch: add its contributions to ``sums`` and return the ``(B,)`` int64 nearest-centre
    prediction of each sample (see the module docstring for the NCC scores).

    Work per batch: the ``B x d x K`` product (projected: ``U^T e``; full: ``(h - o)`` times the centres,
    in blocks) plus ``O(B d + B C^2)`` (projected) or ``O(B d^2)`` (full, ``d < C``) more, over blocks of
    rows (``_residual_blocks``) held in ``workspace``; nothing scales with ``C x d``.
    """
    workspace = Workspace() if workspace is None else workspace
    index = labels.clamp(0, anchors.num_classes - 1)  # out-of-range labels were rejected after pass 1
    with autocast_off(h.device):
        if anchors.full:
            prediction = _full_pass(h, index, anchors, sums, workspace)
        else:
            prediction = _projected_pass(h, index, anchors, sums, workspace)
    sums.ncc_correct.index_add_(0, index, (prediction == labels).to(torch.float64))
    return prediction


def _residual_blocks(
    h: Tensor, index: Tensor, anchors: Anchors, sums: PassTwoSums, workspace: Workspace
) -> Iterator[tuple[slice, Tensor]]:
    """For each block of rows (:func:`row_blocks`, at least as many rows as there are directions): its slice
    and the residuals ``e = h - hi_y`` in the working precision; once every block has been seen, their
    squared norms are added to ``Q'_c = sum_{y_i=c} ||e_i||^2`` (float64 across rows, in row order).

    One buffer serves every block, so a block's residuals hold until the next block is made.
    """
    min_rows = anchors.directions.shape[0]
    centred = workspace.rows(block_rows(h, min_rows), h.shape[1], h.device, h.dtype)
    norms = workspace.rows(1, h.shape[0], h.device, h.dtype, slot="norms")[0]
    for block in row_blocks(h, min_rows):
        size = block.stop - block.start
        residual = torch.index_select(anchors.rounded, 0, index[block], out=centred[:size])
        torch.sub(h[block], residual, out=residual)
        torch.linalg.vector_norm(residual, dim=1, out=norms[block])
        yield block, residual
    sums.within_sq.index_add_(0, index, norms.double().square_())


def _projected_pass(
    h: Tensor, index: Tensor, anchors: Anchors, sums: PassTwoSums, workspace: Workspace
) -> Tensor:
    """``d >= C``: the ``(K, B)`` products ``D e`` of the directions with the residuals, block by block;
    then, once per batch, ``sum (u_k . e)^2`` (float64) of their first ``C`` rows ``U^T e`` and the nearest
    centres ``argmin_k ||hi_y - nu_k||^2 - 2 e.(nu_k - o)``."""
    num_classes, rows, device = anchors.num_classes, h.shape[0], h.device
    products = workspace.rows(anchors.directions.shape[0], rows, device, h.dtype, slot="products")
    for block, residual in _residual_blocks(h, index, anchors, sums, workspace):
        torch.mm(anchors.directions, residual.T, out=products[:, block])
    own = products[:num_classes]
    sums.scatter.add_(torch.linalg.vector_norm(own, dim=1, dtype=torch.float64).square_())
    centres = products[num_classes:]
    if anchors.probe is not None:  # the last row: g . e
        sums.probe.index_add_(0, index, products[-1].double())
        centres = centres[:-1]
    scores = workspace.rows(rows, anchors.centre_table.shape[1], device, h.dtype, slot="scores")
    torch.index_select(anchors.centre_table, 0, index, out=scores)
    if anchors.coefficients is not None:
        scores.addmm_(own.T, anchors.coefficients, alpha=-2.0)
    else:
        scores.add_(centres.T, alpha=-2.0)
    return scores.min(1).indices  # first index on ties, as argmin; twice as fast on CPU


def _full_pass(h: Tensor, index: Tensor, anchors: Anchors, sums: PassTwoSums, workspace: Workspace) -> Tensor:
    """``d < C``: per block, the ``d x d`` scatter ``S += e^T e`` (:func:`_add_scatter`), then ``h - o`` in the
    residuals' buffer for the nearest centres ``argmin_k ||nu_k - o||^2 - 2 (h - o).(nu_k - o)``."""
    prediction = torch.empty_like(index)
    for block, residual in _residual_blocks(h, index, anchors, sums, workspace):
        if anchors.probe is not None:
            sums.probe.index_add_(0, index[block], torch.mv(residual, anchors.probe).double())
        _add_scatter(sums.scatter, residual, workspace)
        shifted = torch.sub(h[block], anchors.origin, out=residual)
        prediction[block] = _nearest_centres(shifted, anchors.directions, anchors.centre_table)
    return prediction


def _add_scatter(scatter: Tensor, residual: Tensor, workspace: Workspace) -> None:
    """``scatter += e^T e`` for the ``(rows, d)`` residuals ``e``: in float64 for float64 residuals; else as
    float32 products of :data:`SCATTER_CHUNK_ROWS` rows at a time, each added to the float64 ``scatter``
    (float64 work: one ``d x d`` addition per chunk, no float64 product)."""
    if residual.dtype == torch.float64:
        scatter.addmm_(residual.T, residual)
        return
    dim = residual.shape[1]
    product = workspace.rows(dim, dim, residual.device, residual.dtype, slot="product")
    for start in range(0, residual.shape[0], SCATTER_CHUNK_ROWS):
        chunk = residual[start : start + SCATTER_CHUNK_ROWS]
        scatter.add_(torch.mm(chunk.T, chunk, out=product))


def mismatched_classes(counts: Tensor, anchors: Anchors, sums: PassTwoSums) -> Tensor:
    """``(C,)`` bool: the classes whose pass-2 probe sum ``P_c`` is not ``N_c g . r_c`` (module docstring).

    Rounding bound (``u`` the working precision's epsilon, ``Q'_c = sum ||e_i||^2``): each ``g . e_i`` is
    off by at most ``(d + 2) u ||e_i||`` and ``sum ||e_i|| <= sqrt(N_c Q'_c)``; the float64 means by at most
    ``N_c u_64 ||mu_c||`` each; a forward pass recomputed on a device may differ by a few ``u ||h_i||``
    (16 are allowed). A class is flagged past that plus :data:`SAMPLE_CHECK_TOLERANCE` times
    ``sqrt(N_c Q'_c / d)``: a pass-2 mean shifted by that fraction of the class's spread per dimension.
    """
    dim = anchors.means.shape[1]
    present = counts > 0
    offset = (anchors.means - anchors.rounded).masked_fill_(~present[:, None], 0.0)
    expected = counts * (offset @ anchors.probe.double())
    eps = torch.finfo(anchors.dtype).eps
    spread = (counts * sums.within_sq.clamp(min=0.0)).sqrt()
    scale = torch.linalg.vector_norm(anchors.rounded.double().nan_to_num(), dim=1)
    bound = (SAMPLE_CHECK_TOLERANCE / math.sqrt(dim) + (dim + 2) * eps) * spread
    bound += (16 * eps + counts * torch.finfo(torch.float64).eps) * counts * scale
    return present & ~((sums.probe - expected).abs() <= bound)


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
        value, index = scores.min(1)  # first index on ties, as argmin; twice as fast on CPU
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

    ``within_sq[c] = sum_{y_i=c} ||h_i - mu_c||^2``; ``scatter``: ``N Sigma_W`` (``d x d``) on the full path,
    or, on the projected path, ``N u_k^T Sigma_W u_k`` (``(C,)``) for the eigenpairs ``(eigenvalues[k], u_k)``
    of ``B = M~^T M~`` on the span of the centred means (``eigenvalues`` is ``None`` on the full path);
    ``ncc_correct`` per class; ``nc4_disagreements`` (a 0-dim tensor) when logits were given for this layer;
    ``resolution`` the machine epsilon of the per-batch working precision (to tell coinciding class means
    from rounding).
    """

    counts: Tensor
    means: Tensor
    within_sq: Tensor
    scatter: Tensor
    eigenvalues: Tensor | None
    ncc_correct: Tensor
    nc4_disagreements: Tensor | None
    resolution: float = torch.finfo(torch.float64).eps

    @property
    def full_scatter(self) -> Tensor | None:
        """``N Sigma_W`` (``d x d``) when it was accumulated, else ``None``."""
        return self.scatter if self.eigenvalues is None else None

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
    """Move the pass-2 sums from the centres ``hi_c`` to the means (see the module docstring).

    With ``r_c = mu_c - hi_c``: ``Q_c = Q'_c - N_c ||r_c||^2``; full ``S = S' - sum_c N_c r_c r_c^T``;
    projected ``s_k = s'_k - sum_c N_c (u_k . r_c)^2``. Empty classes have NaN means.
    """
    weighted = anchors.means - anchors.rounded  # r_c, then sqrt(N_c) r_c: one C x d temporary
    weighted.masked_fill_((counts == 0)[:, None], 0.0).mul_(counts.sqrt()[:, None])
    within_sq = sums.within_sq - torch.linalg.vector_norm(weighted, dim=1).square_()
    if anchors.full:
        scatter = sums.scatter - weighted.T @ weighted
    else:
        scatter = sums.scatter - (weighted @ anchors.eigenbasis).square_().sum(0)
    return ClassStatistics(
        counts=counts,
        means=anchors.means,
        within_sq=within_sq.clamp(min=0.0),
        scatter=scatter,
        eigenvalues=anchors.eigenvalues,
        ncc_correct=sums.ncc_correct,
        nc4_disagreements=nc4_disagreements,
        resolution=torch.finfo(anchors.dtype).eps,
    )
