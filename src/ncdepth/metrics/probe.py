"""Per-layer linear probe: the exact ridge least-squares classifier of a layer's features, fitted from
streamed second moments (``docs/metrics.md``, section *Linear probe*).

With ``x_i`` the probe input of sample ``i`` (the features ``h_i``, or ``P h_i`` for a fixed random
projection ``P`` when ``d`` exceeds ``max_dim``), one-hot targets ``e_{y_i}`` and the intercept left
unpenalised, the ridge problem ``min_{V, b} sum_i ||V^T x_i + b - e_{y_i}||^2 + lam ||V||_F^2`` has the
closed form

    V = (T + lam I)^{-1} Y,   T = sum_i (x_i - xbar)(x_i - xbar)^T,   Y = [N_c (xbar_c - xbar)]_c,
    b_c = N_c / N - xbar . V_c,

so the probe predicts ``argmax_c (x - xbar) . V_c + N_c / N``. Everything comes from the class counts, the
class sums (which :class:`~ncdepth.metrics.NeuralCollapse` accumulates anyway) and the uncentred float64
moment ``sum_i x_i x_i^T``, one ``k x k`` state per layer: pass 1 accumulates it, ``next_phase`` fits the probe
and pass 2 counts its hits (``probe_acc``: train accuracy on the train split; on a test split, with the train
split's metric as ``ncc_reference``, the test accuracy of the train split's probe). ``lam = ridge Tr(T) / k``
(scale-free; default ``ridge = 1e-6``). The moment is summed uncentred: products of float32 features are
exact in float64, and centring it once at the end, ``T = sum x x^T - N xbar xbar^T``, costs about
``log10(||xbar||^2 / lambda_min(T / N))`` of float64's 16 digits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

PROBE_MAX_DIM = 1024
"""Layers wider than this are probed on a fixed random projection to this many dimensions."""
PROBE_RIDGE = 1e-6
"""Default ridge, relative to the mean eigenvalue ``Tr(T) / k`` of the centred scatter."""
PROBE_SEED = 0


def make_projection(dim: int, max_dim: int, seed: int, device: torch.device) -> Tensor | None:
    """``None`` when ``dim <= max_dim``; else the ``(max_dim, dim)`` float32 Gaussian ``P``, entries
    ``N(0, 1/max_dim)``, drawn on CPU from ``seed`` (the same matrix on every process and device)."""
    if dim <= max_dim:
        return None
    generator = torch.Generator().manual_seed(seed)
    projection = torch.randn(max_dim, dim, generator=generator) / max_dim**0.5
    return projection.to(device)


def probe_inputs(h: Tensor, projection: Tensor | None) -> Tensor:
    """The ``(B, k)`` float64 probe inputs ``x = h`` or ``P h`` (the product in the working precision)."""
    if projection is not None:
        h = h @ projection.to(h.dtype).T
    return h.double()


def add_moment(moment: Tensor, h: Tensor, projection: Tensor | None) -> None:
    """``moment += sum_i x_i x_i^T`` (float64, in place)."""
    x = probe_inputs(h, projection)
    moment.addmm_(x.T, x)


@dataclass(frozen=True)
class Probe:
    """A fitted probe: ``predict(x) = argmax_c (x - centre) . weight[:, c] + offset[c]``."""

    projection: Tensor | None
    centre: Tensor
    weight: Tensor
    offset: Tensor

    def predict(self, h: Tensor) -> Tensor:
        """``(B,)`` int64 predicted classes of the ``(B, d)`` features ``h``."""
        x = probe_inputs(h, self.projection) - self.centre
        return torch.addmm(self.offset, x, self.weight).argmax(1)


def fit_probe(
    counts: Tensor, sums: Tensor, moment: Tensor, projection: Tensor | None, ridge: float = PROBE_RIDGE
) -> Probe:
    """The ridge probe (module docstring) from float64 class ``counts`` ``(C,)``, class ``sums`` ``(C, d)`` of
    the features and ``moment`` ``(k, k)`` of the probe inputs. Empty classes get no weight (never
    predicted unless every class is)."""
    total = counts.sum()
    class_sums = sums if projection is None else sums @ projection.double().T  # (C, k): P is linear
    centre = class_sums.sum(0) / total
    scatter = moment - total * torch.outer(centre, centre)
    scatter = (scatter + scatter.T) / 2.0
    dim = scatter.shape[0]
    lam = ridge * float(scatter.diagonal().sum()) / dim
    targets = class_sums - counts[:, None] * centre  # N_c (xbar_c - xbar)
    regularised = scatter + lam * torch.eye(dim, dtype=scatter.dtype, device=scatter.device)
    weight = torch.linalg.solve(regularised, targets.T)
    offset = (counts / total).masked_fill(counts == 0, -torch.inf)
    return Probe(projection, centre, weight, offset)
