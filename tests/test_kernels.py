"""``ncdepth.theory``: limiting kernels against Monte Carlo and finite networks, kernel NC1 against
the feature metric, the Gaussian sets, and the adaptive-kernel equation of state."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.func import jacrev, vmap

from ncdepth.metrics.functional import nc1_trace_ratio
from ncdepth.theory.adaptive import adaptive_kernel
from ncdepth.theory.gaussian_data import gaussian_classes
from ncdepth.theory.kernels import (
    derivative_kernel,
    kernel_nc1,
    nngp,
    ntk,
    preactivation_covariance,
)

SETTINGS = [
    pytest.param(activation, weight_var, bias_var, id=f"{activation}-w{weight_var}-b{bias_var}")
    for activation in ("relu", "erf")
    for weight_var, bias_var in ((1.0, 0.0), (1.5, 0.5))
]


def phi(u: Tensor, activation: str) -> Tensor:
    return torch.relu(u) if activation == "relu" else torch.erf(u)


def phi_prime(u: Tensor, activation: str) -> Tensor:
    if activation == "relu":
        return (u > 0).to(u.dtype)
    return 2.0 / math.sqrt(math.pi) * torch.exp(-u.pow(2))


def probe_inputs() -> Tensor:
    """Five points in R^3: two parallel, one anti-parallel, one generic and one short vector."""
    base = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    generic = torch.tensor([0.3, 1.2, -0.7], dtype=torch.float64)
    return torch.stack([base, 2.0 * base, -base, generic, 0.1 * generic])


def monte_carlo_kernels(
    x: Tensor, activation: str, weight_var: float, bias_var: float, units: int, seed: int
) -> dict[str, tuple[Tensor, Tensor]]:
    """Means over ``units`` random hidden units of ``phi(u(x)) phi(u(y))`` and of the NTK summand
    ``phi phi + Sigma phi' phi'``, each with its Monte-Carlo standard error."""
    generator = torch.Generator().manual_seed(seed)
    dim = x.shape[1]
    weights = torch.randn(units, dim, generator=generator, dtype=torch.float64)
    biases = torch.randn(units, 1, generator=generator, dtype=torch.float64)
    u = math.sqrt(weight_var / dim) * weights @ x.T + math.sqrt(bias_var) * biases
    out, slope = phi(u, activation), phi_prime(u, activation)
    sigma = bias_var + weight_var * x @ x.T / dim

    def moment(left: Tensor, right: Tensor) -> Tensor:
        return left.T @ right / units

    products, derivatives = moment(out, out), moment(slope, slope)
    products_sq, derivatives_sq = moment(out**2, out**2), moment(slope**2, slope**2)
    mixed = moment(out * slope, out * slope)
    ntk_mean = products + sigma * derivatives
    ntk_sq = products_sq + 2.0 * sigma * mixed + sigma**2 * derivatives_sq
    return {
        "nngp": (products, ((products_sq - products**2) / units).sqrt()),
        "ntk": (ntk_mean, ((ntk_sq - ntk_mean**2) / units).sqrt()),
    }


@pytest.mark.parametrize(("activation", "weight_var", "bias_var"), SETTINGS)
def test_kernels_match_monte_carlo_over_random_units(activation: str, weight_var: float, bias_var: float):
    x = probe_inputs()
    estimates = monte_carlo_kernels(x, activation, weight_var, bias_var, units=400_000, seed=1)
    exact = {
        "nngp": nngp(x, activation=activation, weight_var=weight_var, bias_var=bias_var),
        "ntk": ntk(x, activation=activation, weight_var=weight_var, bias_var=bias_var),
    }
    for name, (mean, standard_error) in estimates.items():
        deviation = (mean - exact[name]).abs()
        assert (deviation <= 4.0 * standard_error + 1e-12).all(), f"{name}: {deviation / standard_error}"


def empirical_ntk(x: Tensor, activation: str, weight_var: float, bias_var: float, width: int) -> Tensor:
    """``J J^T`` of a random two-layer net in NTK parameterisation, without read-out bias."""
    generator = torch.Generator().manual_seed(2)
    dim = x.shape[1]
    params = {
        "hidden_weight": torch.randn(width, dim, generator=generator, dtype=torch.float64),
        "hidden_bias": torch.randn(width, generator=generator, dtype=torch.float64),
        "readout_weight": torch.randn(width, generator=generator, dtype=torch.float64),
    }

    def output(parameters: dict[str, Tensor], point: Tensor) -> Tensor:
        hidden = math.sqrt(weight_var / dim) * parameters["hidden_weight"] @ point
        hidden = hidden + math.sqrt(bias_var) * parameters["hidden_bias"]
        return parameters["readout_weight"] @ phi(hidden, activation) / math.sqrt(width)

    jacobians = vmap(jacrev(output), in_dims=(None, 0))(params, x)
    flat = torch.cat([j.reshape(x.shape[0], -1) for j in jacobians.values()], dim=1)
    return flat @ flat.T


@pytest.mark.parametrize(("activation", "weight_var", "bias_var"), SETTINGS)
def test_ntk_matches_the_empirical_ntk_of_a_wide_network(activation: str, weight_var: float, bias_var: float):
    x = probe_inputs()
    empirical = empirical_ntk(x, activation, weight_var, bias_var, width=100_000)
    exact = ntk(x, activation=activation, weight_var=weight_var, bias_var=bias_var)
    assert (empirical - exact).abs().max() <= 0.015 * exact.diagonal().max()


def test_closed_forms_at_hand_computed_points():
    one = torch.ones(1, 1, dtype=torch.float64)
    # relu, S = 1 on the diagonal: K = 1/2, Kdot = 1/2, Theta = 1.
    assert nngp(one).item() == pytest.approx(0.5, rel=1e-14)
    assert ntk(one).item() == pytest.approx(1.0, rel=1e-14)
    # relu, orthogonal unit-variance inputs: K = 1/(2 pi); Sigma = 0, so Kdot drops out of Theta.
    e1, e2 = torch.eye(2, dtype=torch.float64).split(1)
    assert nngp(e1, e2, weight_var=2.0).item() == pytest.approx(1.0 / (2.0 * math.pi), rel=1e-14)
    assert ntk(e1, e2, weight_var=2.0).item() == pytest.approx(1.0 / (2.0 * math.pi), rel=1e-14)
    # erf, S = 1: K = (2/pi) arcsin(2/3), Kdot = (4/pi)/sqrt(9 - 4).
    erf_kernel = 2.0 / math.pi * math.asin(2.0 / 3.0)
    erf_slope = 4.0 / math.pi / math.sqrt(5.0)
    assert nngp(one, activation="erf").item() == pytest.approx(erf_kernel, rel=1e-14)
    assert ntk(one, activation="erf").item() == pytest.approx(erf_kernel + erf_slope, rel=1e-14)


def test_erf_ntk_differs_from_the_nngp_by_sigma_times_the_derivative_kernel():
    """Regression test for the upstream defect (the erf derivative kernel built with a dot product
    where an outer product belongs made the NTK almost equal to the NNGP)."""
    x = torch.randn(12, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    cross, var_x, var_y = preactivation_covariance(x, weight_var=1.3, bias_var=0.2)
    kernel = nngp(x, activation="erf", weight_var=1.3, bias_var=0.2)
    tangent = ntk(x, activation="erf", weight_var=1.3, bias_var=0.2)
    slope = derivative_kernel(cross, var_x, var_y, activation="erf")
    torch.testing.assert_close(tangent - kernel, cross * slope, rtol=1e-12, atol=1e-12)
    assert torch.linalg.matrix_norm(tangent - kernel) > 0.5 * torch.linalg.matrix_norm(kernel)


@pytest.mark.parametrize("kernel_fn", [nngp, ntk])
@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_kernels_are_symmetric_psd_and_consistent_across_blocks(kernel_fn, activation: str):
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(40, 6, generator=generator)
    x = torch.cat([x, x[:3], torch.zeros(1, 6)])  # duplicates and a zero input, float32
    gram = kernel_fn(x, activation=activation, bias_var=0.1)
    assert gram.dtype == torch.float64
    assert torch.equal(gram, gram.T)
    eigenvalues = torch.linalg.eigvalsh(gram)
    assert eigenvalues.min() >= -1e-10 * eigenvalues.max()
    block = kernel_fn(x[:10], x[10:25], activation=activation, bias_var=0.1)
    torch.testing.assert_close(block, gram[:10, 10:25], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel_fn", [nngp, ntk])
@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_a_zero_variance_input_has_zero_kernel_row(kernel_fn, activation: str):
    """Without bias, ``x = 0`` gives ``u = 0`` and ``phi(0) = 0``: its row vanishes, with no NaN."""
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0], [-3.0, 0.5]], dtype=torch.float64)
    gram = kernel_fn(x, activation=activation)
    assert torch.isfinite(gram).all()
    assert torch.equal(gram[0], torch.zeros(3, dtype=torch.float64))


def test_kernels_reject_bad_arguments():
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match=r"activation must be one of \['relu', 'erf'\], got 'tanh'"):
        nngp(x, activation="tanh")
    with pytest.raises(ValueError, match="weight_var must be >= 0"):
        ntk(x, weight_var=-1.0)
    with pytest.raises(ValueError, match="bias_var must be >= 0"):
        ntk(x, bias_var=-0.1)
    with pytest.raises(ValueError, match=r"y must have shape \(M, 2\)"):
        nngp(x, torch.randn(3, 5))
    with pytest.raises(ValueError, match="x must have shape"):
        nngp(torch.randn(3))


@pytest.mark.parametrize("class_sizes", [(20, 20, 20), (3, 11, 30, 7)], ids=["balanced", "imbalanced"])
def test_kernel_nc1_equals_the_feature_trace_ratio(class_sizes: tuple[int, ...]):
    generator = torch.Generator().manual_seed(5)
    num_classes = len(class_sizes)
    labels = torch.repeat_interleave(torch.arange(num_classes), torch.tensor(class_sizes))
    centres = 3.0 * torch.randn(num_classes, 9, generator=generator, dtype=torch.float64) + 5.0
    features = centres[labels] + torch.randn(len(labels), 9, generator=generator, dtype=torch.float64)
    order = torch.randperm(len(labels), generator=generator)
    features, labels = features[order], labels[order]
    expected = nc1_trace_ratio(features, labels, num_classes)
    assert kernel_nc1(features @ features.T, labels) == pytest.approx(expected, rel=1e-10)
    # The classes are the distinct label values, whatever they are.
    assert kernel_nc1(features @ features.T, 7 * labels + 2) == pytest.approx(expected, rel=1e-10)


def test_kernel_nc1_rejects_bad_arguments():
    with pytest.raises(ValueError, match="square"):
        kernel_nc1(torch.ones(3, 4), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="at least 2 distinct classes"):
        kernel_nc1(torch.eye(3), torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match="integer"):
        kernel_nc1(torch.eye(3), torch.tensor([0.0, 1.0, 1.0]))


@pytest.mark.parametrize("num_classes", [2, 4])
def test_gaussian_classes_have_the_documented_distribution(num_classes: int):
    x, labels, targets = gaussian_classes(4000, 3, seed=0, num_classes=num_classes)
    assert x.shape == (4000 * num_classes, 3) and x.dtype == torch.float64
    assert labels.dtype == torch.int64 and targets.dtype == torch.float64
    expected_targets = {2: [-1.0, 1.0], 4: [-3.0, -1.0, 1.0, 3.0]}[num_classes]
    for label, target in enumerate(expected_targets):
        members = labels == label
        assert torch.all(targets[members] == target)
        torch.testing.assert_close(
            x[members].mean(0),
            torch.full((3,), 2.0 * target, dtype=torch.float64),
            atol=0.03,
            rtol=0,
        )
        torch.testing.assert_close(
            x[members].std(0), torch.full((3,), 0.5, dtype=torch.float64), atol=0.02, rtol=0
        )


def test_gaussian_classes_are_seeded_and_take_class_sizes():
    first = gaussian_classes([5, 9], 2, seed=7)
    second = gaussian_classes([5, 9], 2, seed=7)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    assert first[1].bincount().tolist() == [5, 9]
    assert not torch.equal(first[0], gaussian_classes([5, 9], 2, seed=8)[0])
    with pytest.raises(ValueError, match=r"num_classes must be one of \[2, 4\], got 3"):
        gaussian_classes(5, 2, seed=0, num_classes=3)
    with pytest.raises(ValueError, match="class_sizes must be"):
        gaussian_classes([5, 0], 2, seed=0)


def trace_objective(x: Tensor, fixed: Tensor, sigma: Tensor, readout_var: float) -> Tensor:
    """``tr(A Q(Sigma))`` via the public NNGP: ``X Sigma X^T`` is the pre-activation covariance of
    inputs ``sqrt(d0) X L`` with ``Sigma = L L^T`` and ``weight_var = 1``."""
    transformed = math.sqrt(x.shape[1]) * x @ torch.linalg.cholesky(sigma)
    return (fixed * readout_var * nngp(transformed, activation="erf")).sum()


def test_adaptive_kernel_solves_the_equation_of_state():
    x, _, targets = gaussian_classes(32, 8, seed=0)
    width, weight_var, readout_var, noise_var = 50.0, 1.2, 0.8, 1e-2
    result = adaptive_kernel(
        x,
        targets,
        width=width,
        weight_var=weight_var,
        readout_var=readout_var,
        noise_var=noise_var,
        tol=1e-9,
    )
    assert result.converged and all(step.converged for step in result.steps)
    assert [step.width for step in result.steps] == [5e5, 5e4, 5e3, 5e2, 50.0]
    assert all(step.residual <= 1e-9 for step in result.steps)
    # Independent check of Sigma^{-1} = (d0/weight_var) I + (1/a) d tr(A Q)/d Sigma: central
    # differences of tr(A Q(Sigma)) along symmetric directions, A built from the returned kernel.
    sigma, kernel = result.sigma, result.kernel
    torch.testing.assert_close(
        kernel,
        readout_var * nngp(math.sqrt(8) * x @ torch.linalg.cholesky(sigma), activation="erf"),
        rtol=1e-12,
        atol=1e-12,
    )
    resolvent = torch.linalg.inv(kernel + noise_var * torch.eye(64, dtype=torch.float64))
    alpha = resolvent @ targets
    fixed = resolvent - torch.outer(alpha, alpha)
    shift = width * (torch.linalg.inv(sigma) - 8.0 / weight_var * torch.eye(8, dtype=torch.float64))
    generator = torch.Generator().manual_seed(6)
    step = 1e-5 * sigma.norm()
    for _ in range(3):
        direction = torch.randn(8, 8, generator=generator, dtype=torch.float64)
        direction = direction + direction.T
        difference = trace_objective(x, fixed, sigma + step * direction, readout_var) - trace_objective(
            x, fixed, sigma - step * direction, readout_var
        )
        assert float(difference / (2 * step)) == pytest.approx(float((shift * direction).sum()), rel=1e-5)


def test_adaptive_kernel_tends_to_the_nngp_as_the_width_grows():
    x, _, targets = gaussian_classes(16, 5, seed=1)
    result = adaptive_kernel(x, targets, width=1e15, weight_var=2.0, readout_var=0.5)
    assert result.converged
    torch.testing.assert_close(result.sigma, 0.4 * torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        result.kernel, 0.5 * nngp(x, activation="erf", weight_var=2.0), rtol=1e-10, atol=1e-12
    )


def test_adaptive_kernel_collapses_more_than_the_nngp_at_finite_width():
    """Kothapalli & Tirer's observation on the Gaussian set: narrower networks, lower kernel NC1."""
    x, labels, targets = gaussian_classes(32, 8, seed=0)
    limit = kernel_nc1(nngp(x, activation="erf"), labels)
    finite = [kernel_nc1(adaptive_kernel(x, targets, width=w).kernel, labels) for w in (500.0, 100.0, 20.0)]
    assert limit > finite[0] > finite[1] > finite[2]


def test_adaptive_kernel_records_non_convergence_instead_of_raising():
    x, _, targets = gaussian_classes(32, 8, seed=0)
    capped = adaptive_kernel(x, targets, width=50.0, anneal=(), max_iter=2)
    assert not capped.converged
    assert capped.steps[-1].iterations == 2 and capped.steps[-1].residual > 1e-8
    too_narrow = adaptive_kernel(x, targets, width=5.0)  # F(Sigma) is indefinite at width 5
    assert all(step.converged for step in too_narrow.steps[:-1]) and not too_narrow.converged
    assert too_narrow.steps[-1].iterations == 0 and too_narrow.steps[-1].residual == math.inf
    assert torch.isfinite(too_narrow.kernel).all()


def test_adaptive_kernel_rejects_bad_arguments():
    x, _, targets = gaussian_classes(4, 2, seed=0)
    with pytest.raises(ValueError, match="noise_var must be > 0"):
        adaptive_kernel(x, targets, width=10.0, noise_var=0.0)
    with pytest.raises(ValueError, match="anneal must be strictly decreasing"):
        adaptive_kernel(x, targets, width=10.0, anneal=(10.0, 100.0))
    with pytest.raises(ValueError, match=r"targets must have shape \(8,\)"):
        adaptive_kernel(x, targets[:, None], width=10.0)
    with pytest.raises(ValueError, match="damping must lie in"):
        adaptive_kernel(x, targets, width=10.0, damping=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_kernels_and_adaptive_kernel_agree_on_cuda_and_cpu():
    x, labels, targets = gaussian_classes(16, 4, seed=2)
    for kernel_fn in (nngp, ntk):
        on_device = kernel_fn(x.cuda(), activation="erf", bias_var=0.1)
        assert on_device.device.type == "cuda"
        torch.testing.assert_close(on_device.cpu(), kernel_fn(x, activation="erf", bias_var=0.1))
    assert kernel_nc1(nngp(x.cuda()), labels.cuda()) == pytest.approx(kernel_nc1(nngp(x), labels), rel=1e-10)
    on_device = adaptive_kernel(x.cuda(), targets.cuda(), width=50.0)
    assert on_device.converged and on_device.sigma.device.type == "cuda"
    on_host = adaptive_kernel(x, targets, width=50.0)
    torch.testing.assert_close(on_device.kernel.cpu(), on_host.kernel, rtol=1e-6, atol=1e-9)
