"""``ncdepth.theory.bound``: the comparative generalization bound's estimator on synthetic depths."""

from __future__ import annotations

import math

import pytest

from ncdepth.theory.bound import (
    clopper_pearson_upper,
    concentration_slack,
    depth_event,
    estimate_bound,
    event_count,
    optimal_alpha,
)


def test_the_event_counts_an_unreached_depth_as_true() -> None:
    assert depth_event(3, 2) and depth_event(3, 3) and not depth_event(2, 3)
    assert depth_event(5, None)  # S1 ∪ S̃2 not fitted: no estimate of d_min, the worst case
    assert depth_event(None, 4) and depth_event(None, None)


def test_frequency_is_the_fraction_of_seeds_with_the_event() -> None:
    s1 = [2, 2, 3, 1, None]
    union = [1, 3, 4, None, 6]
    assert event_count(s1, union) == 3
    estimate = estimate_bound(s1, union, p=0.2, m=1000, alpha=0.5)
    assert (estimate.pairs, estimate.events, estimate.probability) == (5, 3, 0.6)
    slack = math.exp(-2 * 1000 * 0.25 * 0.04)
    assert estimate.slack == pytest.approx(slack)
    assert estimate.bound == pytest.approx(0.6 + 1.5 * 0.2 + slack)
    assert estimate.bound_upper == pytest.approx(estimate.probability_upper + 1.5 * 0.2 + slack)
    with pytest.raises(ValueError, match="pair seed by seed"):
        event_count([1, 2], [1])


def test_clopper_pearson_matches_its_closed_forms() -> None:
    # k = 0: (1 - u)^n = 1 - confidence; k = n: 1
    assert clopper_pearson_upper(0, 4) == pytest.approx(1 - 0.05 ** (1 / 4), abs=1e-12)
    assert clopper_pearson_upper(4, 4) == 1.0
    upper = clopper_pearson_upper(2, 10, confidence=0.9)
    cdf = sum(math.comb(10, k) * upper**k * (1 - upper) ** (10 - k) for k in range(3))
    assert cdf == pytest.approx(0.1, abs=1e-10) and upper > 0.2


def test_optimal_alpha_minimises_the_alpha_terms() -> None:
    for m, p in [(400, 0.1), (400, 0.5), (25_000, 0.05)]:
        best = optimal_alpha(m, p)

        def terms(alpha: float, m: int = m, p: float = p) -> float:
            return alpha * p + concentration_slack(m, p, alpha)

        grid = [best * factor for factor in (0.5, 0.8, 0.95, 1.05, 1.25, 2.0)]
        assert all(terms(best) <= terms(alpha) + 1e-12 for alpha in grid)
    with pytest.raises(ValueError, match="p > 0"):
        optimal_alpha(100, 0.0)


def test_the_bound_grows_with_p_when_the_event_frequency_is_fixed() -> None:
    s1, union = [2, 2, 2, 2], [1, 3, 3, 3]
    bounds = [estimate_bound(s1, union, p=p, m=2000).bound for p in (0.05, 0.1, 0.2, 0.4, 0.8)]
    assert all(a < b for a, b in zip(bounds, bounds[1:], strict=False))
    assert all(bound > 0.25 + p for bound, p in zip(bounds, (0.05, 0.1, 0.2, 0.4, 0.8), strict=True))


def test_p_zero_is_vacuous_and_bad_inputs_raise() -> None:
    assert estimate_bound([1], [1], p=0.0, m=10).bound == 2.0  # probability 1 + slack exp(0) = 1
    assert estimate_bound([1], [2], p=0.0, m=10).bound == 1.0
    with pytest.raises(ValueError, match="m \\(the size of S2\\)"):
        estimate_bound([1], [1], p=0.1, m=0)
    with pytest.raises(ValueError, match="p \\(the corrupted fraction"):
        estimate_bound([1], [1], p=1.5, m=10)
    with pytest.raises(ValueError, match="at least one paired seed"):
        estimate_bound([], [], p=0.1, m=10)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        concentration_slack(10, 0.1, 0.0)
