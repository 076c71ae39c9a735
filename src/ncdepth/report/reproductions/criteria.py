"""The criteria of Galanti, Galanti & Ben-Shaul's claims (the neural-collapse claims' are in
:mod:`.collapse_criteria`): functions of a sweep's tables returning a
:class:`~ncdepth.report.reproductions.verdicts.Verdict` with the numbers it rests on.

``runs``: one row per finished run that meets the precondition, with the depth ``model.depth`` (from
the run's config when it is not swept) and ``effective_depth@EPS`` (empty when the run never reaches
ε). An effective depth lies in [1, L + 1]: a run that never reaches ε ranks as L + 1, deeper than any
layer of the network.
"""

from __future__ import annotations

import pandas as pd
from scipy import stats

from ncdepth.report.reproductions.verdicts import (
    NOT_INFORMATIVE,
    VACUOUS,
    Verdict,
    buildup_exceptions,
    holds,
    interval_text,
    on_seeds,
)

DEPTH = "model.depth"
PLATEAU_SPREAD = 1.0
"""Layers: the most the mean effective depth may vary over the deeper half of the depths."""
MONOTONE_STEP = 0.5
"""Layers: the most the mean rank-depth may fall from one label noise to the next."""
SIGNIFICANCE = 0.05
BUILDUP_TOLERANCE = 0.01
"""The most a layer's final NCC train error may exceed that of an earlier layer of the same run."""


def eps_columns(runs: pd.DataFrame) -> list[str]:
    """The ``effective_depth@EPS`` columns of ``runs``."""
    return [column for column in runs.columns if column.startswith("effective_depth@")]


def depth_rank(runs: pd.DataFrame, column: str) -> pd.Series:
    """The effective depths of ``column`` with "never reached" ranked as ``L + 1``."""
    return runs[column].astype("Float64").fillna(runs[DEPTH].astype(float) + 1).astype(float)


def depth_plateau(runs: pd.DataFrame, column: str) -> Verdict:
    """The effective depth stops growing with depth: over the deeper half of the swept depths L, every
    run reaches ε and the mean effective depth varies by at most :data:`PLATEAU_SPREAD` layer. Not
    informative when every run at every L has effective depth 1 (a plateau at the floor); at least
    :data:`~ncdepth.report.reproductions.verdicts.MIN_SEEDS` seeds per L."""
    depths = sorted(runs[DEPTH].unique())
    deep = runs[runs[DEPTH].isin(depths[len(depths) // 2 :])]
    ranked = depth_rank(deep, column)
    means = {
        depth: interval_text(ranked[deep[DEPTH] == depth], low=1, high=depth + 1)
        for depth in sorted(deep[DEPTH].unique())
    }
    mean_by_depth = ranked.groupby(deep[DEPTH]).mean()
    spread = mean_by_depth.max() - mean_by_depth.min()
    evidence = (
        "mean effective depth (never reached = L + 1) at "
        + ", ".join(f"L = {depth}: {text}" for depth, text in means.items())
        + f"; spread {spread:.2f} layers; {int(deep[column].notna().sum())} of {len(deep)} runs reach ε"
    )
    if (depth_rank(runs, column) == 1).all():
        return Verdict(NOT_INFORMATIVE, f"effective depth 1 at every L: a plateau at the floor; {evidence}")
    plateau = holds(bool(deep[column].notna().all() and spread <= PLATEAU_SPREAD), evidence)
    return on_seeds(deep.groupby(DEPTH).size(), plateau)


def monotone_in(runs: pd.DataFrame, key: str, column: str) -> Verdict:
    """The effective depth grows with ``key``: Spearman's ρ between ``key`` and the effective depth
    (never reached = L + 1) over the runs is positive with p < :data:`SIGNIFICANCE`, and the mean of
    that rank never falls by more than :data:`MONOTONE_STEP` layer from one value to the next. Not
    informative when the rank is the same in every run; at least
    :data:`~ncdepth.report.reproductions.verdicts.MIN_SEEDS` seeds per value."""
    ranked = depth_rank(runs, column)
    means = ranked.groupby(runs[key]).mean().sort_index()
    means_text = ", ".join(f"{value:g}: {mean:.2f}" for value, mean in means.items())
    if ranked.nunique() <= 1:
        return Verdict(NOT_INFORMATIVE, f"the same rank-depth {ranked.iloc[0]:g} in every run")
    rho, p_value = stats.spearmanr(runs[key].astype(float), ranked)
    evidence = f"Spearman ρ = {rho:.2f} (p = {p_value:.2g}); mean rank-depth per value: {means_text}"
    steps_ok = bool((means.diff().dropna() >= -MONOTONE_STEP).all())
    return on_seeds(
        runs.groupby(key).size(), holds(bool(rho > 0 and p_value < SIGNIFICANCE and steps_ok), evidence)
    )


def bound_holds(bound: pd.DataFrame) -> Verdict:
    """The bound (``bound.csv``: ``eps, p, bound, test_error_mean``) is at least the measured mean test
    error in every row where it is below 1; vacuous when it is at least 1 in every row."""
    informative = bound[bound["bound"] < 1.0]
    vacuous = f"{len(bound) - len(informative)} of {len(bound)} rows have a bound ≥ 1 (vacuous)"
    if informative.empty:
        return Verdict(VACUOUS, vacuous)
    below = informative[informative["bound"] < informative["test_error_mean"]]
    return holds(
        below.empty,
        f"the bound is below the test error in {len(below)} of the {len(informative)} rows with a bound "
        f"below 1; {vacuous}",
    )


def layerwise_buildup(errors: pd.DataFrame) -> Verdict:
    """NCC separability builds up layer by layer: in every run, no layer's final NCC train error exceeds
    that of an earlier layer by more than :data:`BUILDUP_TOLERANCE` (``errors``: ``run, layer_index,
    value``); the exceptions are listed."""
    exceptions = buildup_exceptions(errors, BUILDUP_TOLERANCE)
    runs = errors["run"].nunique()
    listed = "; ".join(
        f"run {row.run} layer {row.layer_index}: {row.value:.3f}" for row in exceptions.itertuples()
    )
    evidence = (
        f"{exceptions['run'].nunique()} of {runs} runs have a layer whose NCC train error rises above an "
        f"earlier layer's by more than {BUILDUP_TOLERANCE:g}" + (f" ({listed})" if listed else "")
    )
    return holds(exceptions.empty, evidence)
