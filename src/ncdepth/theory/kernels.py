"""Limiting kernels of a two-layer network (NNGP and NTK), and NC1 from a Gram matrix alone.

The network, for an input ``x`` in ``R^{d0}``, width ``n`` and activation ``phi``::

    u(x) = sqrt(weight_var / d0) W x + sqrt(bias_var) b,     W_ij, b_i ~ N(0, 1)
    f(x) = (1 / sqrt(n)) a^T phi(u(x)),                       a_i ~ N(0, 1), no read-out bias

(NTK parameterisation: every trainable parameter is a standard normal, the scales are explicit).
Each hidden pre-activation is a centred Gaussian process with covariance::

    Sigma(x, y) = bias_var + weight_var * x . y / d0

As ``n -> infinity`` (Lee et al. 2018; Jacot et al. 2018)::

    NNGP   K(x, y)     = E[phi(u(x)) phi(u(y))]         (also the covariance of the output f)
    NTK    Theta(x, y) = K(x, y) + Sigma(x, y) Kdot(x, y),   Kdot(x, y) = E[phi'(u(x)) phi'(u(y))]

``K`` is the contribution of the read-out weights ``a``; ``Sigma Kdot`` that of the first layer, its
weights ``W`` giving ``weight_var (x . y / d0) Kdot`` and its biases ``b`` giving ``bias_var Kdot``.
There is no read-out bias and so no constant term (a read-out bias ``c ~ N(0, 1)`` would add ``1``
to both the output covariance and ``Theta``).

Closed forms of the Gaussian expectations, with ``S_xy = Sigma(x, y)``:

* ``relu``: arc-cosine kernels of degree 1 and 0 (Cho & Saul 2009),
  ``cos t = S_xy / sqrt(S_xx S_yy)``::

    K    = sqrt(S_xx S_yy) (sin t + (pi - t) cos t) / (2 pi)
    Kdot = (pi - t) / (2 pi)

* ``erf`` (Williams 1997)::

    K    = (2/pi) arcsin(2 S_xy / sqrt((1 + 2 S_xx)(1 + 2 S_yy)))
    Kdot = (4/pi) / sqrt((1 + 2 S_xx)(1 + 2 S_yy) - 4 S_xy^2)

Everything is float64 on the device of the inputs; arccos and arcsin arguments are clamped to
``[-1, 1]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

ACTIVATIONS = ("relu", "erf")


def nngp(
    x: Tensor,
    y: Tensor | None = None,
    *,
    activation: str = "relu",
    weight_var: float = 1.0,
    bias_var: float = 0.0,
) -> Tensor:
    """NNGP kernel ``K(x_i, y_j) = E[phi(u(x_i)) phi(u(y_j))]`` of the hidden post-activations.

    ``x`` is ``(N, d0)``, ``y`` is ``(M, d0)`` (default: ``x``, and the result is then exactly
    symmetric). Returns the ``(N, M)`` float64 kernel; the module docstring gives the network and
    the closed forms. ``activation`` is one of :data:`ACTIVATIONS`.
    """
    cross, var_x, var_y = preactivation_covariance(x, y, weight_var=weight_var, bias_var=bias_var)
    return post_activation_kernel(cross, var_x, var_y, activation=activation)


def ntk(
    x: Tensor,
    y: Tensor | None = None,
    *,
    activation: str = "relu",
    weight_var: float = 1.0,
    bias_var: float = 0.0,
) -> Tensor:
    """Output NTK ``Theta = K + Sigma Kdot`` of the two-layer net in NTK parameterisation.

    ``K`` (the NNGP) is the read-out weights' contribution, with read-out variance 1; ``Sigma Kdot``
    is the first layer's: weights ``weight_var (x . y / d0) Kdot`` plus biases ``bias_var Kdot``. No
    read-out bias, so no constant term. Shapes and symmetry as :func:`nngp`.
    """
    cross, var_x, var_y = preactivation_covariance(x, y, weight_var=weight_var, bias_var=bias_var)
    kernel = post_activation_kernel(cross, var_x, var_y, activation=activation)
    return kernel + cross * derivative_kernel(cross, var_x, var_y, activation=activation)


def preactivation_covariance(
    x: Tensor, y: Tensor | None = None, *, weight_var: float = 1.0, bias_var: float = 0.0
) -> tuple[Tensor, Tensor, Tensor]:
    """``Sigma(x_i, y_j) = bias_var + weight_var x_i . y_j / d0`` as ``(N, M)``, with its diagonals
    ``Sigma(x_i, x_i)`` ``(N,)`` and ``Sigma(y_j, y_j)`` ``(M,)``, all float64.

    With ``y=None`` the cross term is exactly symmetric and the diagonal is read off it.
    """
    if weight_var < 0:
        raise ValueError(f"weight_var must be >= 0, got {weight_var}")
    if bias_var < 0:
        raise ValueError(f"bias_var must be >= 0, got {bias_var}")
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, d0), got {tuple(x.shape)}")
    x = x.to(torch.float64)
    dim = x.shape[1]
    if y is None:
        gram = x @ x.T
        cross = bias_var + weight_var * 0.5 * (gram + gram.T) / dim
        var_x = cross.diagonal().clone()
        return cross, var_x, var_x
    if y.ndim != 2 or y.shape[1] != dim:
        raise ValueError(f"y must have shape (M, {dim}) like x, got {tuple(y.shape)}")
    y = y.to(device=x.device, dtype=torch.float64)
    cross = bias_var + weight_var * (x @ y.T) / dim
    var_x = bias_var + weight_var * x.pow(2).sum(1) / dim
    var_y = bias_var + weight_var * y.pow(2).sum(1) / dim
    return cross, var_x, var_y


def post_activation_kernel(cross: Tensor, var_x: Tensor, var_y: Tensor, *, activation: str) -> Tensor:
    """``E[phi(u_i) phi(v_j)]`` for centred Gaussians with ``Cov(u_i, v_j) = cross[i, j]``,
    ``Var u_i = var_x[i]`` and ``Var v_j = var_y[j]`` (closed forms in the module docstring).
    Differentiable by autograd for ``erf``, and for ``relu`` away from ``cos t = +-1``. For
    ``relu``, a pair with a zero variance has ``K = 0``.
    """
    _check_activation(activation)
    if activation == "relu":
        scale = (var_x[:, None] * var_y[None, :]).sqrt()
        cosine = _relu_cosine(cross, scale)
        angle = torch.arccos(cosine)
        sine = (1.0 - cosine.pow(2)).clamp(min=0.0).sqrt()
        return scale * (sine + (math.pi - angle) * cosine) / (2.0 * math.pi)
    normaliser = ((1.0 + 2.0 * var_x[:, None]) * (1.0 + 2.0 * var_y[None, :])).sqrt()
    return (2.0 / math.pi) * torch.arcsin((2.0 * cross / normaliser).clamp(-1.0, 1.0))


def derivative_kernel(cross: Tensor, var_x: Tensor, var_y: Tensor, *, activation: str) -> Tensor:
    """``Kdot = E[phi'(u_i) phi'(v_j)]`` for the Gaussians of :func:`post_activation_kernel`.

    For ``relu`` (``phi' = 1[u > 0]``) a pair with a zero variance is taken as uncorrelated,
    ``Kdot = 1/4``. For ``erf`` the determinant ``(1 + 2 S_xx)(1 + 2 S_yy) - 4 S_xy^2`` is ``>= 1``
    by Cauchy-Schwarz, and is clamped there against rounding.
    """
    _check_activation(activation)
    if activation == "relu":
        scale = (var_x[:, None] * var_y[None, :]).sqrt()
        return (math.pi - torch.arccos(_relu_cosine(cross, scale))) / (2.0 * math.pi)
    determinant = (1.0 + 2.0 * var_x[:, None]) * (1.0 + 2.0 * var_y[None, :]) - 4.0 * cross.pow(2)
    return (4.0 / math.pi) / determinant.clamp(min=1.0).sqrt()


def kernel_nc1(kernel: Tensor, labels: Tensor) -> float:
    """``Tr(Sigma_W) / Tr(Sigma_B)`` of features ``h_i`` known only through their Gram matrix
    ``K = H H^T``.

    Equals ``ncdepth.metrics.functional.nc1_trace_ratio(H, labels, C)`` for any class sizes and row
    order (docs/metrics.md: ``Sigma_W`` pooled with ``1/N``, ``Sigma_B`` weighing classes equally around
    the sample-weighted global mean). With ``1_c`` the indicator of class ``c``,
    ``S_cc' = 1_c^T K 1_c'`` and ``p_c = N_c / N``::

        Tr Sigma_W   = (1/N) [tr K - sum_c S_cc / N_c]
        mu_c . mu_c' = S_cc' / (N_c N_c')                  (G, the C x C Gram matrix of the means)
        Tr Sigma_B   = (1/C) tr(R G R^T),  R = I - 1 p^T   (the rows of R M are mu_c - mu_G)

    The classes are the distinct values of ``labels`` (``C`` of them, at least 2).
    """
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1]:
        raise ValueError(f"kernel must be a square (N, N) matrix, got {tuple(kernel.shape)}")
    num_rows = kernel.shape[0]
    if labels.ndim != 1 or labels.shape[0] != num_rows:
        raise ValueError(f"labels must have shape ({num_rows},), got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    kernel = kernel.to(torch.float64)
    classes, class_index = torch.unique(labels.to(kernel.device), return_inverse=True)
    num_classes = classes.numel()
    if num_classes < 2:
        raise ValueError(f"labels must hold at least 2 distinct classes, got {num_classes}")
    indicator = torch.nn.functional.one_hot(class_index, num_classes).to(kernel)
    counts = indicator.sum(0)
    class_sums = indicator.T @ kernel @ indicator
    trace_within = (kernel.trace() - (class_sums.diagonal() / counts).sum()) / num_rows
    mean_gram = class_sums / (counts[:, None] * counts[None, :])
    centring = torch.eye(num_classes, dtype=kernel.dtype, device=kernel.device) - counts[None, :] / num_rows
    trace_between = (centring @ mean_gram @ centring.T).trace() / num_classes
    return float(trace_within / trace_between)


def _relu_cosine(cross: Tensor, scale: Tensor) -> Tensor:
    """``cross / scale`` clamped to ``[-1, 1]``, and ``0`` where ``scale == 0``."""
    safe_scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.where(scale > 0, cross / safe_scale, torch.zeros_like(cross)).clamp(-1.0, 1.0)


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
