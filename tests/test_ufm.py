"""``ncdepth.theory.ufm`` and ``ncdepth.theory.geometry``: the closed-form optimum of the
deep-linear UFM against direct L-BFGS optimisation, the root finding against a dense grid, minority
collapse, the simplex ETF with a bias, and argument validation."""

from __future__ import annotations

import math

import pytest
import torch

from ncdepth.theory.geometry import (
    alignment,
    frame_distance,
    frame_distances,
    general_frame_distances,
    grams,
    minority_collapse,
    orthogonal_frame,
    simplex_etf,
)
from ncdepth.theory.ufm import (
    class_loss,
    closed_form,
    coupling,
    objective,
    optimal_x,
    optimize,
    stationarity,
)

IMBALANCED = (20, 10, 5, 5)  # (200, 100, 50, 50) scaled down by 10


@pytest.fixture(autouse=True)
def single_thread():
    """The UFM tensors are tiny: intra-op threads only add contention (10x slower on a busy
    machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_matches_closed_form(result, reference) -> None:
    final = result.history[-1]
    assert abs(final["objective"] - reference["fstar"]) <= 1e-6 * reference["fstar"]
    for name in ("WWT", "HTH", "WH"):
        assert final[f"closed_form_{name}"] < 1e-3, name


def closed_form_point(reference: dict, sizes: tuple[int, ...], feature_decay: float, bias: bool):
    """Weights, class means and bias built from ``closed_form``: ``W_m = diag(s_m)`` (with a bias,
    ``s_m`` times the centring projector), ``Hbar = (W^T W + N lambda_H I)^{-1} W^T`` and
    ``b = 1/C``."""
    num_classes = len(sizes)
    if bias:
        weights = [values[0] * simplex_etf(num_classes) for values in reference["singular_values"]]
    else:
        weights = [torch.diag(values) for values in reference["singular_values"]]
    product = weights[0]
    for weight in weights[1:]:
        product = weight @ product
    ridge = sum(sizes) * feature_decay * torch.eye(num_classes, dtype=torch.float64)
    class_means = torch.linalg.solve(product.T @ product + ridge, product.T)
    offset = torch.full((num_classes,), 1 / num_classes, dtype=torch.float64) if bias else None
    return weights, product, class_means, offset


@pytest.mark.parametrize(
    ("sizes", "depth", "weight_decay", "feature_decay", "bias"),
    [
        ((6, 6, 6), 1, 2e-3, 2e-3, False),
        ((6, 6, 6), 4, (1e-3, 2e-3, 4e-3, 8e-3), 5e-3, True),
        (IMBALANCED, 3, (1e-3, 5e-3, 2e-3), 1e-3, False),
        (IMBALANCED, 2, 3e-2, 3e-2, False),
    ],
)
def test_fstar_and_grams_hold_at_the_closed_form_point(
    sizes, depth, weight_decay, feature_decay, bias
) -> None:
    reference = closed_form(sizes, depth, weight_decay, feature_decay, bias=bias)
    weights, product, class_means, offset = closed_form_point(reference, sizes, feature_decay, bias)
    labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    decays = weight_decay if isinstance(weight_decay, tuple) else (weight_decay,) * depth
    value = objective(weights, class_means[:, labels], offset, labels, decays, feature_decay)
    assert math.isclose(float(value), reference["fstar"], rel_tol=1e-12)
    for name, gram in grams(product, class_means).items():
        assert torch.allclose(gram, reference[name], rtol=1e-10, atol=1e-14), name


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_balanced_closed_form_is_the_lbfgs_optimum(depth: int) -> None:
    sizes, decay = (6, 6, 6), 2e-3
    reference = closed_form(sizes, depth, decay, decay)
    result = optimize(sizes, depth, decay, decay, steps=250, log_every=250)
    assert_matches_closed_form(result, reference)
    assert torch.allclose(reference["WWT"], reference["WWT"][0, 0] * orthogonal_frame(3))
    final = result.history[-1]
    assert final["nc1_trace_ratio"] < 1e-8 and final["ncc_acc"] == 1.0
    assert frame_distance(grams(result.product, result.class_means)["WWT"], orthogonal_frame(3)) < 1e-3


@pytest.mark.parametrize(("depth", "weight_decay", "seed"), [(2, (1e-3, 4e-3), 0), (3, 2e-3, 1)])
def test_imbalanced_closed_form_is_the_lbfgs_optimum(depth, weight_decay, seed) -> None:
    reference = closed_form(IMBALANCED, depth, weight_decay, 2e-3)
    result = optimize(IMBALANCED, depth, weight_decay, 2e-3, steps=300, log_every=300, seed=seed)
    assert_matches_closed_form(result, reference)
    # general orthogonal frame: diagonal, entries increasing with the class size
    diagonal = reference["WWT"].diagonal()
    assert torch.equal(reference["WWT"], torch.diag(diagonal)) and diagonal[0] > diagonal[1] > diagonal[2]
    for layer, weight in enumerate(result.weights):
        expected = reference["singular_values"][layer].sort(descending=True).values
        assert torch.allclose(torch.linalg.svdvals(weight), expected, rtol=1e-3)
    assert torch.allclose(alignment(result.product, result.class_means), torch.ones(4, dtype=torch.float64))


def test_large_decay_collapses_the_minority_classes() -> None:
    depth, decay = 2, 3e-2
    reference = closed_form(IMBALANCED, depth, decay, decay)
    assert reference["collapsed"].tolist() == [False, False, True, True]
    assert reference["WWT"][2:, 2:].abs().max() == 0 and reference["HTH"][2:, 2:].abs().max() == 0
    result = optimize(IMBALANCED, depth, decay, decay, steps=300, log_every=300)
    assert abs(result.final_objective - reference["fstar"]) <= 1e-6 * reference["fstar"]
    ratios = minority_collapse(result.product, result.class_means, IMBALANCED)
    for name in ("classifier_norm_ratio", "mean_norm_ratio"):
        assert ratios[name][2:].max() < 1e-4, name
        assert ratios[name][1] > 0.1, name


@pytest.mark.parametrize("depth", range(1, 10))
def test_root_is_the_global_minimiser_never_spurious(depth: int) -> None:
    grid = torch.cat([torch.zeros(1), torch.logspace(-4, 3, 20001)]).to(torch.float64)
    for ratio in torch.logspace(-6, 1, 36).tolist():
        x = optimal_x(ratio, depth)
        grid_minimum = float((1.0 / (1.0 + grid.pow(depth)) + ratio * grid).min())
        if x > 0:
            assert class_loss(x, ratio, depth) < 1.0
            assert math.isclose(stationarity(x, depth), ratio, rel_tol=1e-9)
            assert stationarity(x * (1 + 1e-6), depth) < ratio  # the largest root: g decreases there
        else:
            assert grid_minimum >= 1.0 - 1e-12
        assert class_loss(x, ratio, depth) <= grid_minimum + 1e-12


@pytest.mark.parametrize("depth", range(1, 10))
def test_closed_form_survivors_and_collapsed_classes_over_decays(depth: int) -> None:
    for decay in (1e-6, 1e-4, 1e-2, 1e-1, 1.0, 10.0):
        reference = closed_form(IMBALANCED, depth, decay, decay)
        b = coupling(40, depth, [decay] * depth, decay)
        for x, n, collapsed in zip(
            reference["x"].tolist(), IMBALANCED, reference["collapsed"].tolist(), strict=True
        ):
            assert collapsed == (x == 0.0)
            assert (class_loss(x, b / n, depth) < 1.0) != collapsed
        assert torch.isfinite(reference["WWT"]).all() and 0 < reference["fstar"] <= 0.5


def test_depth_one_root_is_the_quadratic_formula() -> None:
    for ratio in (1e-4, 0.3, 0.99):
        assert math.isclose(optimal_x(ratio, 1), 1 / math.sqrt(ratio) - 1, rel_tol=1e-12)
    assert optimal_x(1.0, 1) == 0.0


def test_bias_gives_the_simplex_etf() -> None:
    sizes, depth, decay = (6, 6, 6), 2, 2e-3
    reference = closed_form(sizes, depth, decay, decay, bias=True)
    for name in ("WWT", "HTH", "WH"):
        assert frame_distance(reference[name], simplex_etf(3)) < 1e-12
    result = optimize(sizes, depth, decay, decay, bias=True, steps=250, log_every=250)
    assert_matches_closed_form(result, reference)
    distances = frame_distances(result.product, result.class_means, simplex_etf(3))
    assert max(distances.values()) < 1e-3
    assert torch.allclose(result.bias, torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-4)


def test_bias_with_imbalanced_classes_optimises_without_a_closed_form() -> None:
    result = optimize(IMBALANCED, 2, 1e-2, 1e-2, bias=True, steps=50, log_every=50)
    final = result.history[-1]
    assert final["objective"] < result.history[0]["objective"] and "objective_gap" not in final
    assert result.bias is not None and result.bias.shape == (4,)


def test_gradient_descent_approaches_the_optimum() -> None:
    result = optimize((6, 6, 6), 1, 1e-2, 1e-2, method="gd", lr=0.5, steps=300, log_every=100)
    objectives = [entry["objective"] for entry in result.history]
    assert objectives == sorted(objectives, reverse=True)
    assert result.history[-1]["objective_gap"] < 1e-3


def test_cross_entropy_logs_the_etf_distances() -> None:
    result = optimize((6, 6, 6), 1, 1e-2, 1e-2, loss="ce", steps=100, log_every=100)
    first, final = result.history[0], result.history[-1]
    assert final["objective"] < first["objective"] and "closed_form_WWT" not in final
    assert max(final[f"etf_{name}"] for name in ("WWT", "HTH", "WH")) < 1e-3


def test_grams_are_invariant_to_rotations_of_the_feature_space() -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 7, generator=generator, dtype=torch.float64)
    means = torch.randn(7, 4, generator=generator, dtype=torch.float64)
    rotation = torch.linalg.qr(torch.randn(7, 7, generator=generator, dtype=torch.float64)).Q
    for name, gram in grams(weight @ rotation.T, rotation @ means).items():
        assert torch.allclose(gram, grams(weight, means)[name])
    assert frame_distance(3.0 * simplex_etf(4), simplex_etf(4)) < 1e-15
    assert math.isclose(
        frame_distance(orthogonal_frame(4), simplex_etf(4)),
        float((torch.eye(4) / 2 - simplex_etf(4) / math.sqrt(3)).norm()),
        rel_tol=1e-6,
    )


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"depth": 0}, "depth"),
        ({"depth": 2.0}, "depth"),
        ({"weight_decay": -1e-3}, "weight_decay"),
        ({"weight_decay": (1e-3,)}, "weight_decay"),
        ({"feature_decay": -1e-3}, "feature_decay"),
        ({"feature_decay": 0.0}, "feature_decay"),
        ({"class_sizes": (5,)}, "class_sizes"),
        ({"bias": True}, "bias"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs: dict, argument: str) -> None:
    arguments = {
        "class_sizes": IMBALANCED,
        "depth": 2,
        "weight_decay": 1e-3,
        "feature_decay": 1e-3,
    } | kwargs
    bias = arguments.pop("bias", False)
    with pytest.raises(ValueError, match=argument):
        closed_form(**arguments, bias=bias)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"width": 3}, "width"),
        ({"loss": "hinge"}, "loss"),
        ({"method": "adam"}, "method"),
        ({"steps": 0}, "steps"),
        ({"start": optimize((5, 5), 2, 1e-3, 1e-3, steps=1)}, "start"),
    ],
)
def test_bad_optimiser_arguments_raise_naming_the_argument(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        optimize(IMBALANCED, 2, 1e-3, 1e-3, **kwargs)


def test_orthogonal_start_reaches_the_optimum_of_a_deep_head() -> None:
    sizes, depth, decay = (20, 20, 20), 6, 5e-3
    reference = closed_form(sizes, depth, decay, decay)
    result = optimize(sizes, depth, decay, decay, init="orthogonal", steps=300, log_every=300)
    assert_matches_closed_form(result, reference)


def test_every_class_collapsed_logs_the_absolute_distance_to_zero() -> None:
    reference = closed_form(IMBALANCED, 2, 1.0, 1.0)
    assert bool(reference["collapsed"].all()) and reference["fstar"] == 0.5
    final = optimize(IMBALANCED, 2, 1.0, 1.0, steps=100, log_every=100).history[-1]
    assert abs(final["objective_gap"]) < 1e-6
    assert max(final[f"closed_form_{name}"] for name in ("WWT", "HTH", "WH")) < 1e-6


def test_general_frame_distances_compare_each_gram_with_its_own_reference() -> None:
    reference = closed_form(IMBALANCED, 3, 2e-3, 2e-3)
    weight = torch.diag(reference["singular_values"].prod(dim=0))
    ridge = sum(IMBALANCED) * 2e-3 * torch.eye(4, dtype=torch.float64)
    class_means = torch.linalg.solve(weight.T @ weight + ridge, weight.T)
    assert max(general_frame_distances(weight, class_means, reference).values()) < 1e-12
    # one shared reference cannot fit all three: HTH's diagonal decreases where WWT's increases
    assert frame_distances(weight, class_means, reference["WWT"])["HTH"] > 0.1
