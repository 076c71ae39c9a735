"""``ncdepth.theory.ufm_starts``: the continuation path, the minority collapses, and that together
they reach the closed-form optimum on the side of the survival threshold where the continuation end
point alone (and a plain start) stays in a spurious minimum."""

from __future__ import annotations

import pytest
import torch

from ncdepth.theory.ufm import closed_form, objective, optimize
from ncdepth.theory.ufm_job import OBJECTIVE_GAP_TOL
from ncdepth.theory.ufm_starts import collapse, continuation, continuation_factors, minority_sets

IMBALANCED = (20, 10, 5, 5)


@pytest.fixture(autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gap(result, reference) -> float:
    return (result.final_objective - reference["fstar"]) / reference["fstar"]


def test_continuation_factors_rise_geometrically_to_the_target() -> None:
    assert continuation_factors(0, 0.1) == [1.0]
    assert continuation_factors(1, 0.1) == [0.1, 1.0]
    assert continuation_factors(2, 0.01) == pytest.approx([0.01, 0.1, 1.0])
    for stages, start_factor in ((-1, 0.1), (1, 1.0), (1, 0.0)):
        with pytest.raises(ValueError, match="start_factor"):
            continuation_factors(stages, start_factor)


def test_minority_sets_nest_by_class_size() -> None:
    assert minority_sets((200, 100, 50, 50)) == [(2, 3), (1, 2, 3), (0, 1, 2, 3)]
    assert minority_sets((7, 7, 7)) == [(0, 1, 2)]


def test_collapse_zeroes_the_classes_at_a_stationary_point_of_their_directions() -> None:
    result = collapse(optimize(IMBALANCED, 3, 1e-2, 1e-2, steps=20, log_every=20), (2, 3))
    assert result.weights[-1][2:].abs().max() == 0 and result.history == []
    assert result.features[:, result.labels >= 2].abs().max() == 0
    assert result.features[:, result.labels < 2].abs().min() > 0
    weights = [weight.clone().requires_grad_() for weight in result.weights]
    features = result.features.clone().requires_grad_()
    objective(weights, features, None, result.labels, (1e-2,) * 3, 1e-2).backward()
    assert weights[-1].grad[2:].abs().max() == 0
    assert features.grad[:, result.labels >= 2].abs().max() == 0


def test_minority_collapse_reaches_the_optimum_past_the_survival_threshold() -> None:
    """M = 2, lambda = 3e-2: classes 2 and 3 collapse at the optimum, yet their surviving branch
    still exists (a spurious minimum): continuation and a plain start keep them, collapsing them in
    the continuation end point reaches f*."""
    depth, decay = 2, 3e-2
    reference = closed_form(IMBALANCED, depth, decay, decay)
    assert reference["collapsed"].nonzero().flatten().tolist() == [2, 3]
    options = {"init": "orthogonal", "steps": 300, "log_every": 300}
    end = continuation(IMBALANCED, depth, decay, decay, stages=1, start_factor=0.1, **options)
    plain = optimize(IMBALANCED, depth, decay, decay, **options)
    assert min(gap(end, reference), gap(plain, reference)) > 1e-3
    result = optimize(IMBALANCED, depth, decay, decay, start=collapse(end, (2, 3)), **options)
    assert gap(result, reference) < OBJECTIVE_GAP_TOL
