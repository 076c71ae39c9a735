"""The comparative generalization bound of Galanti, Galanti & Ben-Shaul (TMLR 2023), estimated.

Setting. ``S1`` (the training set) and ``S2`` (``m`` fresh samples, disjoint from ``S1``) are drawn
i.i.d. from the data distribution ``P``; ``S̃2`` is ``S2`` with a fraction ``p`` of its labels moved to
another class at random. ``f_S1`` is the network trained on ``S1``, ``d_eps(f)`` its effective depth
(smallest layer whose NCC train error is ``<= eps``) and ``d_min(S)`` the smallest NCC depth at which a
network of the class fits ``S``. The bound reads

    E[err_P(f_S1)]  <=  P[ d_eps(f_S1) >= d_min(S1 ∪ S̃2) ]  +  (1 + alpha) p  +  exp(-2 m alpha² p²)  +  delta,

for every ``alpha > 0``; the probability is over ``S1, S2``, the corruption and the training randomness.

Where the terms come from. Write ``q = err_P(f_S1)`` and ``q̂`` for the fraction of ``S2`` that ``f_S1``
misclassifies. (i) ``q <= 1`` gives ``E[q] <= (1 + alpha) p + P[q > (1 + alpha) p]``. (ii) Given ``S1``,
``q̂`` is a mean of ``m`` i.i.d. Bernoulli(``q``) draws, so by Hoeffding ``P[q > (1 + alpha) p, q̂ < p] <=
exp(-2 m alpha² p²)`` (the *concentration slack*, computed here). (iii) When ``q̂ >= p``, relabelling
``S2`` by ``f_S1``'s own predictions changes at least a fraction ``p`` of its labels and gives a set that
``f_S1`` fits at depth ``d_eps(f_S1)``; the paper's assumption is that such a set is no easier to fit
than a random ``p``-corruption ``S̃2``, i.e. ``P[q̂ >= p] <= P[d_eps(f_S1) >= d_min(S1 ∪ S̃2)] + delta``.
``delta`` (how often that assumption fails) cannot be estimated from runs: it is **dropped** (taken as 0).

What is estimated, and how (:func:`estimate_bound`):

* the probability, by the frequency of the event over ``n`` paired seeds: seed ``s`` trains one network
  on ``S1`` and one on ``S1 ∪ S̃2`` (same ``S1``; ``S2``, the corruption, the initialisation and the batch
  order redrawn with the seed). This treats the seeds as independent draws of the whole randomness;
  :func:`clopper_pearson_upper` gives the one-sided exact binomial upper confidence limit beside it;
* ``d_min(S1 ∪ S̃2)``, a minimum over *all* networks of the class, by the effective depth of the one
  network SGD trained on ``S1 ∪ S̃2``. That is an upper estimate of ``d_min``, which makes the frequency
  (and the bound) *smaller* than with the true ``d_min``: the estimate relies on the paper's hypothesis
  that SGD finds networks of near-minimal effective depth;
* a depth that is never reached (``None``: no measured layer has NCC train error ``<= eps``) makes the
  event count as true, the conservative choice: ``d_eps(f_S1) = None`` is deeper than every layer, and a
  network that does not fit ``S1 ∪ S̃2`` gives no upper estimate of ``d_min`` at all.

The measured test error of ``f_S1`` does not depend on ``p``; since the bound holds for every ``p`` and
every ``alpha``, the best bound is the smallest over ``p`` (with ``alpha`` chosen by
:func:`optimal_alpha`, which minimises the two ``alpha`` terms for each ``p``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
"""Default one-sided confidence of :func:`clopper_pearson_upper`."""
_BISECTION_STEPS = 100

Depth = int | None
"""An effective depth: a 1-based layer index, or ``None`` when no measured layer reaches ``eps``."""


def depth_event(s1_depth: Depth, union_depth: Depth) -> bool:
    """``d_eps(f_S1) >= d_min(S1 ∪ S̃2)``, counted true when either depth is ``None`` (module docstring)."""
    return s1_depth is None or union_depth is None or s1_depth >= union_depth


def event_count(s1_depths: Sequence[Depth], union_depths: Sequence[Depth]) -> int:
    """Number of paired seeds ``s`` with ``depth_event(s1_depths[s], union_depths[s])``."""
    if len(s1_depths) != len(union_depths):
        raise ValueError(
            f"s1_depths and union_depths must pair seed by seed, got {len(s1_depths)} and {len(union_depths)}"
        )
    return sum(depth_event(a, b) for a, b in zip(s1_depths, union_depths, strict=True))


def clopper_pearson_upper(successes: int, trials: int, confidence: float = CONFIDENCE) -> float:
    """One-sided exact upper confidence limit ``u`` of a binomial probability: the ``u`` with
    ``P[Bin(trials, u) <= successes] = 1 - confidence`` (``1`` when ``successes == trials``)."""
    if not 0 <= successes <= trials or trials < 1:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if successes == trials:
        return 1.0
    low, high = successes / trials, 1.0
    for _ in range(_BISECTION_STEPS):  # the binomial CDF decreases in u
        middle = (low + high) / 2
        cdf = sum(
            math.comb(trials, k) * middle**k * (1 - middle) ** (trials - k) for k in range(successes + 1)
        )
        low, high = (middle, high) if cdf > 1 - confidence else (low, middle)
    return high


def concentration_slack(m: int, p: float, alpha: float) -> float:
    """Hoeffding's ``exp(-2 m alpha² p²)``: the chance that ``f_S1`` errs on less than a fraction ``p``
    of ``m`` fresh samples although its test error exceeds ``(1 + alpha) p``."""
    _check(m, p)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    return math.exp(-2.0 * m * alpha**2 * p**2)


def optimal_alpha(m: int, p: float) -> float:
    """The ``alpha > 0`` minimising ``alpha p + exp(-2 m alpha² p²)`` (the bound's ``alpha`` terms).

    With ``t = alpha p`` the stationarity condition is ``4 m t exp(-2 m t²) = 1``; its larger root
    (the minimum; it exists for ``m >= 1``) lies above ``t₀ = 1 / (2 sqrt(m))``, where the left side
    peaks, and is found by bisection. Needs ``p > 0`` (at ``p = 0`` the terms are ``0 + 1`` for
    every ``alpha``).
    """
    _check(m, p)
    if p == 0.0:
        raise ValueError("optimal_alpha needs p > 0: at p = 0 every alpha gives the same bound")
    low, high = 1.0 / (2.0 * math.sqrt(m)), 1.0
    while 4.0 * m * high * math.exp(-2.0 * m * high**2) > 1.0:
        high *= 2.0
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        above = 4.0 * m * middle * math.exp(-2.0 * m * middle**2) > 1.0
        low, high = (middle, high) if above else (low, middle)
    return high / p


@dataclass(frozen=True)
class BoundEstimate:
    """The estimated bound at one corruption fraction ``p`` (module docstring).

    ``bound = probability + (1 + alpha) p + slack``; ``bound_upper`` uses ``probability_upper``, the
    Clopper-Pearson limit at ``confidence``, instead of the frequency. ``delta`` is dropped.
    """

    p: float
    alpha: float
    m: int
    pairs: int
    events: int
    probability: float
    probability_upper: float
    slack: float
    bound: float
    bound_upper: float


def estimate_bound(
    s1_depths: Sequence[Depth],
    union_depths: Sequence[Depth],
    p: float,
    m: int,
    alpha: float | None = None,
    confidence: float = CONFIDENCE,
) -> BoundEstimate:
    """Estimate the bound at ``p`` from ``n`` paired seeds.

    ``s1_depths[s]`` is ``d_eps`` of the network trained on ``S1`` with seed ``s`` and
    ``union_depths[s]`` that of the network trained on ``S1 ∪ S̃2`` (``|S2| = m``, a fraction ``p``
    corrupted) with the same seed. ``alpha=None`` uses :func:`optimal_alpha` (``1`` at ``p = 0``,
    where every ``alpha`` gives the vacuous ``probability + 0 + 1``).
    """
    _check(m, p)
    pairs = len(s1_depths)
    if pairs < 1:
        raise ValueError("estimate_bound needs at least one paired seed")
    events = event_count(s1_depths, union_depths)
    if alpha is None:
        alpha = optimal_alpha(m, p) if p > 0 else 1.0
    slack = concentration_slack(m, p, alpha)
    alpha_terms = (1.0 + alpha) * p + slack
    probability = events / pairs
    upper = clopper_pearson_upper(events, pairs, confidence)
    return BoundEstimate(
        p=p,
        alpha=alpha,
        m=m,
        pairs=pairs,
        events=events,
        probability=probability,
        probability_upper=upper,
        slack=slack,
        bound=probability + alpha_terms,
        bound_upper=upper + alpha_terms,
    )


def _check(m: int, p: float) -> None:
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"m (the size of S2) must be an integer >= 1, got {m!r}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p (the corrupted fraction of S2) must lie in [0, 1], got {p}")
