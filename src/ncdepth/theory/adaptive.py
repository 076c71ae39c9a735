"""The adaptive kernel of a two-layer erf network: the equation of state (EoS) of Seroussi, Naveh &
Ringel (2023), as used by Kothapalli & Tirer (2024) to study NC1 beyond the infinite-width limit.

Network ``f(x) = sum_{c=1..n} a_c erf(w_c . x)`` trained to equilibrium with Langevin noise
``noise_var``, priors ``a_c ~ N(0, readout_var / n)`` and ``w_c ~ N(0, (weight_var / d0) I)``.
In the mean-field (Gaussian-variational) treatment each ``w_c ~ N(0, Sigma)`` and, for data ``X``
``(N, d0)`` and targets ``y`` ``(N,)``::

    Q(Sigma)   = readout_var * K_erf(X Sigma X^T)   (the erf NNGP, covariance X Sigma X^T)
    alpha      = (Q + noise_var I)^{-1} y           (y - noise_var alpha: the GP posterior mean)
    A          = (Q + noise_var I)^{-1} - alpha alpha^T
    Sigma^{-1} = (d0 / weight_var) I + (1/a) d tr(A Q(S)) / d S  at S = Sigma,  A held fixed

with ``a`` the width. As ``a -> infinity`` the fixed point is the NNGP point
``Sigma = (weight_var / d0) I``, where ``Q`` is ``readout_var`` times
:func:`ncdepth.theory.kernels.nngp` with ``activation="erf"``.

Solver: the gradient comes from ``torch.autograd`` in float64; every inverse is a Cholesky
factorisation. The width-like factor ``a`` is annealed from ``anneal[0] * width`` down to ``width``,
each step warm-started at the previous one's ``Sigma`` (the first at the NNGP point), by the damped
iteration ``Sigma <- Sigma + damping (F(Sigma) - Sigma)``, ``F`` the inverse of the right-hand side
above, until the relative residual ``||F(Sigma) - Sigma||_F / ||Sigma||_F <= tol``. A step that
does not converge (``max_iter`` reached, or ``F`` leaving the positive-definite cone) is recorded as
such, never raised, and the annealing goes on from where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import Tensor

from ncdepth.theory.kernels import post_activation_kernel

DEFAULT_ANNEAL = (1e4, 1e3, 1e2, 1e1)


@dataclass(frozen=True)
class AnnealStep:
    """Convergence record of one annealing step.

    ``width`` is the width-like factor ``a``; ``iterations`` the damped updates taken; ``residual``
    the relative residual ``||F(Sigma) - Sigma||_F / ||Sigma||_F`` of the ``Sigma`` the step ended
    at (``inf`` when ``F`` was not positive definite even there); ``converged`` whether
    ``residual <= tol``. An unconverged step with ``iterations < max_iter`` stopped because the next
    ``F(Sigma)`` was not positive definite.
    """

    width: float
    iterations: int
    residual: float
    converged: bool


@dataclass(frozen=True)
class AdaptiveKernelResult:
    """The adaptive kernel ``kernel = Q(Sigma)`` ``(N, N)``, the first-layer weight covariance
    ``sigma`` ``(d0, d0)`` at the network width, and one :class:`AnnealStep` per annealing step (the
    last at ``width``)."""

    kernel: Tensor
    sigma: Tensor
    steps: tuple[AnnealStep, ...]

    @property
    def converged(self) -> bool:
        """Whether the final step, at the network width, reached the tolerance."""
        return self.steps[-1].converged


def adaptive_kernel(
    x: Tensor,
    targets: Tensor,
    *,
    width: float,
    weight_var: float = 1.0,
    readout_var: float = 1.0,
    noise_var: float = 1e-2,
    anneal: Sequence[float] = DEFAULT_ANNEAL,
    damping: float = 0.5,
    tol: float = 1e-8,
    max_iter: int = 1000,
) -> AdaptiveKernelResult:
    """Solve the EoS of the module docstring for data ``x`` ``(N, d0)`` and scalar ``targets``
    ``(N,)``.

    ``anneal`` holds the multiples of ``width`` visited before ``width`` itself, strictly decreasing
    and each ``> 1`` (empty: solve at ``width`` directly from the NNGP point). ``damping`` in
    ``(0, 1]`` is the step of the damped fixed-point iteration, ``tol`` the relative-residual
    tolerance, ``max_iter`` the cap on updates per annealing step. Computes in float64 on the device
    of ``x``. Inspect ``result.converged`` / ``result.steps``: non-convergence is not an exception.
    """
    _check_arguments(x, targets, width, weight_var, readout_var, noise_var, anneal, damping, tol, max_iter)
    problem = _Problem(
        x=x.to(torch.float64),
        targets=targets.to(device=x.device, dtype=torch.float64),
        weight_var=weight_var,
        readout_var=readout_var,
        noise_var=noise_var,
    )
    dim = x.shape[1]
    sigma = torch.eye(dim, dtype=torch.float64, device=x.device) * (weight_var / dim)
    steps = []
    for factor in [*anneal, 1.0]:
        sigma, step = _solve_at_width(problem, sigma, factor * width, damping, tol, max_iter)
        steps.append(step)
    return AdaptiveKernelResult(kernel=problem.kernel(sigma).detach(), sigma=sigma, steps=tuple(steps))


@dataclass(frozen=True)
class _Problem:
    x: Tensor
    targets: Tensor
    weight_var: float
    readout_var: float
    noise_var: float

    def kernel(self, sigma: Tensor) -> Tensor:
        """``Q(Sigma) = readout_var * K_erf(X Sigma X^T)``, differentiable in ``sigma``."""
        covariance = self.x @ sigma @ self.x.T
        covariance = 0.5 * (covariance + covariance.T)
        variance = covariance.diagonal()
        return self.readout_var * post_activation_kernel(covariance, variance, variance, activation="erf")

    def update(self, sigma: Tensor, width: float) -> Tensor | None:
        """``F(Sigma)``, the inverse of the EoS right-hand side; ``None`` if a Cholesky fails."""
        with torch.enable_grad():
            leaf = sigma.detach().requires_grad_(True)
            kernel = self.kernel(leaf)
            identity = torch.eye(kernel.shape[0], dtype=kernel.dtype, device=kernel.device)
            factor, info = torch.linalg.cholesky_ex(kernel.detach() + self.noise_var * identity)
            if bool(info):
                return None
            alpha = torch.cholesky_solve(self.targets[:, None], factor)[:, 0]
            fixed = torch.cholesky_inverse(factor) - torch.outer(alpha, alpha)
            (gradient,) = torch.autograd.grad((fixed * kernel).sum(), leaf)
        dim = sigma.shape[0]
        gradient = 0.5 * (gradient + gradient.T)
        precision = torch.eye(dim, dtype=sigma.dtype, device=sigma.device) * (dim / self.weight_var)
        factor, info = torch.linalg.cholesky_ex(precision + gradient / width)
        if bool(info):
            return None
        return torch.cholesky_inverse(factor)


def _solve_at_width(
    problem: _Problem, sigma: Tensor, width: float, damping: float, tol: float, max_iter: int
) -> tuple[Tensor, AnnealStep]:
    """Damped fixed-point iteration from ``sigma``; returns the last ``Sigma`` with a valid F."""
    update = problem.update(sigma, width)
    if update is None:
        return sigma, AnnealStep(width=width, iterations=0, residual=math.inf, converged=False)
    residual = _relative_residual(sigma, update)
    iterations = 0
    while residual > tol and iterations < max_iter:
        candidate = sigma + damping * (update - sigma)
        candidate_update = problem.update(candidate, width)
        if candidate_update is None:
            break
        sigma, update = candidate, candidate_update
        residual = _relative_residual(sigma, update)
        iterations += 1
    return sigma, AnnealStep(width=width, iterations=iterations, residual=residual, converged=residual <= tol)


def _relative_residual(sigma: Tensor, update: Tensor) -> float:
    return float(torch.linalg.matrix_norm(update - sigma) / torch.linalg.matrix_norm(sigma))


def _check_arguments(
    x: Tensor,
    targets: Tensor,
    width: float,
    weight_var: float,
    readout_var: float,
    noise_var: float,
    anneal: Sequence[float],
    damping: float,
    tol: float,
    max_iter: int,
) -> None:
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, d0), got {tuple(x.shape)}")
    if targets.ndim != 1 or targets.shape[0] != x.shape[0]:
        raise ValueError(f"targets must have shape ({x.shape[0]},), got {tuple(targets.shape)}")
    for name, value in (
        ("width", width),
        ("weight_var", weight_var),
        ("readout_var", readout_var),
        ("noise_var", noise_var),
        ("tol", tol),
    ):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    factors = list(anneal)
    if any(not f > 1 for f in factors) or any(a <= b for a, b in pairwise(factors)):
        raise ValueError(f"anneal must be strictly decreasing multiples of width, each > 1, got {factors}")
    if not 0 < damping <= 1:
        raise ValueError(f"damping must lie in (0, 1], got {damping}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
