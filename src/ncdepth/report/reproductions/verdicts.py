"""Verdicts of the reproduction gallery, and the statistics they rest on.

A criterion is fixed in code before the data are read and returns a :class:`Verdict`: one of
:data:`KINDS` and the numbers it rests on.

* **reproduced** / **not reproduced at this scale**: the criterion held or failed on a non-trivial effect.
* **not informative at this scale**: the criterion cannot fail on these data (e.g. an effective
  depth of 1 at every depth L: a plateau that is only the floor).
* **vacuous**: a bound that is at least 1 says nothing about an error rate.
* **precondition not met**: no run meets the claim's precondition (:func:`meets_precondition`);
  runs that miss it are left out of every verdict and counted.
* **too few seeds**: a verdict resting on a mean needs at least :data:`MIN_SEEDS` seeds per mean.

Intervals respect the quantity's range: the 95 % Student-t interval of the mean, clipped to the
range the quantity can take (:func:`clipped_interval`: an accuracy to [0, 1], an effective depth to
[1, L + 1]).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced at this scale"
NOT_INFORMATIVE = "not informative at this scale"
VACUOUS = "vacuous"
PRECONDITION_NOT_MET = "precondition not met"
TOO_FEW_SEEDS = "too few seeds"
KINDS = (REPRODUCED, NOT_REPRODUCED, NOT_INFORMATIVE, VACUOUS, PRECONDITION_NOT_MET, TOO_FEW_SEEDS)
MIN_SEEDS = 5
"""The fewest seeds a mean may rest on for a verdict."""
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Verdict:
    """What a criterion found: ``kind`` (one of :data:`KINDS`), the numbers it rests on (``evidence``)
    and how many runs were left out for missing the precondition (``excluded`` of ``runs``)."""

    kind: str
    evidence: str
    excluded: int = 0
    runs: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown verdict {self.kind!r}; one of {', '.join(KINDS)}")

    def markdown(self) -> str:
        """``**kind** — evidence (k of n runs miss the precondition and are left out)``."""
        text = f"**{self.kind}** — {self.evidence}"
        if self.excluded:
            text += f" ({self.excluded} of {self.runs} runs miss the precondition and are left out)"
        return text


def holds(condition: bool, evidence: str) -> Verdict:
    """:data:`REPRODUCED` when ``condition`` holds, else :data:`NOT_REPRODUCED`."""
    return Verdict(REPRODUCED if condition else NOT_REPRODUCED, evidence)


def clipped_interval(
    values: Iterable[float], low: float = -math.inf, high: float = math.inf
) -> tuple[float, float, float] | None:
    """``(mean, lower, upper)``: the mean of ``values`` (NaN skipped) and its 95 % Student-t interval
    ``mean ± t(0.975, n - 1) s / sqrt(n)`` clipped to the quantity's range ``[low, high]``; the interval
    is the mean itself for one value, ``None`` for none."""
    array = np.asarray([value for value in values if value == value], dtype=float)
    if array.size == 0:
        return None
    mean = float(array.mean())
    if array.size == 1:
        return mean, mean, mean
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, array.size - 1) * array.std(ddof=1) / math.sqrt(array.size)
    return mean, max(mean - half, low), min(mean + half, high)


def interval_text(
    values: Iterable[float], digits: int = 2, low: float = -math.inf, high: float = math.inf
) -> str:
    """``mean [lower, upper]`` of :func:`clipped_interval` (``mean`` alone for one value, ``–`` for none)."""
    found = clipped_interval(values, low, high)
    if found is None:
        return "–"
    mean, lower, upper = found
    if lower == upper == mean:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lower:.{digits}f}, {upper:.{digits}f}]"


def on_seeds(seeds: pd.Series, verdict: Verdict) -> Verdict:
    """``verdict``, unless a mean it rests on has fewer than :data:`MIN_SEEDS` seeds (``seeds``: the
    number behind each mean): then :data:`TOO_FEW_SEEDS`, with the verdict's numbers."""
    fewest = int(seeds.min()) if len(seeds) else 0
    if fewest >= MIN_SEEDS:
        return verdict
    return Verdict(
        TOO_FEW_SEEDS, f"a mean rests on {fewest} seed(s), a verdict needs {MIN_SEEDS}; {verdict.evidence}"
    )


def meets_precondition(runs: pd.DataFrame, limits: Mapping[str, float]) -> pd.Series:
    """Whether each run meets the precondition: every column of ``limits`` (e.g. ``train error``,
    ``last-layer NCC train error``, ``train loss``) at most its limit; a missing value misses it."""
    meets = pd.Series(True, index=runs.index)
    for column, limit in limits.items():
        meets &= runs[column].le(limit).fillna(False).astype(bool)
    return meets


def buildup_exceptions(errors: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Where the layer-wise build-up of NCC separability fails: the rows of ``errors`` (columns ``run,
    layer_index, value``: the NCC train error of each layer at the end of training) whose error exceeds
    the lowest error of any earlier layer of the same run by more than ``tolerance``."""
    ordered = errors.sort_values(["run", "layer_index"])
    best_before = ordered.groupby("run")["value"].transform(lambda value: value.cummin().shift())
    return ordered[ordered["value"] > best_before + tolerance]
