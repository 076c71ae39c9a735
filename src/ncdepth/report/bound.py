"""The generalization-bound table and figure of a bound sweep (``ncdepth/conf/experiment/bound*.yaml``).

A *bound sweep* varies ``data.extra_label_noise``: runs with ``null`` trained on ``S1``, runs with a
fraction ``p`` trained on ``S1 ∪ S̃2`` (``ncdepth.data.NCDataModule``). Runs pair by seed within each
combination of the other grouping keys; :func:`ncdepth.theory.bound.estimate_bound` turns the pairs'
effective depths into the bound at ``p``, for every threshold ``eps`` the runs measured, and the test
error ``1 - final_acc_test`` of the ``S1`` networks is set beside it (mean, std with ddof=1, count).
Only finished runs enter; a seed without both of its runs is left out of that ``p``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from ncdepth.report.collect import SEED_KEY, Sweep
from ncdepth.report.figures import EFFECTIVE_DEPTH_PREFIX
from ncdepth.report.style import (
    NothingToPlot,
    flat_axes,
    format_value,
    grid_figure,
    group_colour,
    key_values_label,
    legend_below,
    spread_handle,
)
from ncdepth.theory.bound import estimate_bound

EXTRA_NOISE_KEY = "data.extra_label_noise"
BOUND_FILE = "bound.csv"
BOUND_FIGURE = "generalization_bound"
RESULT_COLUMNS = (
    "eps",
    "p",
    "alpha",
    "m",
    "pairs",
    "events",
    "probability",
    "probability_upper",
    "slack",
    "bound",
    "bound_upper",
    "test_error_mean",
    "test_error_std",
    "test_error_count",
)
"""Columns of the bound table after the other grouping keys."""


def is_bound_sweep(sweep: Sweep) -> bool:
    """Whether the sweep varies :data:`EXTRA_NOISE_KEY` (``S1`` and ``S1 ∪ S̃2`` runs)."""
    return EXTRA_NOISE_KEY in sweep.varying_keys


def bound_table(sweep: Sweep, runs: pd.DataFrame, alpha: float | None = None) -> pd.DataFrame:
    """One row per (other grouping keys, ``eps``, ``p``) with the bound's terms
    (:class:`ncdepth.theory.bound.BoundEstimate`) and the ``S1`` networks' test error.

    ``runs`` is :func:`ncdepth.report.tables.runs_table` of ``sweep``; ``m = |S2|`` is read from each
    ``S1 ∪ S̃2`` run's ``summary.json`` (``data.n_extra``). Raises :class:`NothingToPlot` when the sweep
    is not a bound sweep or lacks a finished ``S1`` run paired with a finished ``S1 ∪ S̃2`` run.
    """
    if not is_bound_sweep(sweep):
        raise NothingToPlot(f"the sweep does not vary {EXTRA_NOISE_KEY}")
    others = [key for key in sweep.grouping_keys if key != EXTRA_NOISE_KEY]
    finished = runs[runs["status"] == "finished"].copy()
    summaries = {run.name: run.summary or {} for run in sweep.runs}
    finished["m"] = [summaries[name].get("data", {}).get("n_extra") for name in finished["run"]]
    seeds_of = {run.name: run.config.get(SEED_KEY) for run in sweep.runs}
    finished[SEED_KEY] = [seeds_of[name] for name in finished["run"]]
    depth_columns = sorted(
        (column for column in runs.columns if column.startswith(EFFECTIVE_DEPTH_PREFIX)),
        key=lambda column: float(column.removeprefix(EFFECTIVE_DEPTH_PREFIX)),
    )
    rows: list[dict[str, Any]] = []
    for group_values, group in _groups(finished, others):
        s1 = group[group[EXTRA_NOISE_KEY].isna()].set_index(SEED_KEY)
        for p, union in group[group[EXTRA_NOISE_KEY].notna()].groupby(EXTRA_NOISE_KEY):
            union = union.set_index(SEED_KEY)
            seeds = sorted(set(s1.index) & set(union.index))
            if not seeds:
                continue
            if union.loc[seeds, "m"].isna().any():
                raise NothingToPlot(f"an S1 ∪ S̃2 run at p={p} has no data.n_extra in its summary.json")
            errors = 1.0 - s1.loc[seeds, "final_acc_test"].astype(float)
            for column in depth_columns:
                estimate = estimate_bound(
                    [_depth(s1.at[seed, column]) for seed in seeds],
                    [_depth(union.at[seed, column]) for seed in seeds],
                    p=float(p),
                    m=int(union.loc[seeds, "m"].min()),
                    alpha=alpha,
                )
                rows.append(
                    {
                        **dict(zip(others, group_values, strict=True)),
                        "eps": float(column.removeprefix(EFFECTIVE_DEPTH_PREFIX)),
                        **asdict(estimate),
                        "test_error_mean": errors.mean(),
                        "test_error_std": errors.std(ddof=1),
                        "test_error_count": len(errors),
                    }
                )
    if not rows:
        raise NothingToPlot(f"no finished S1 run ({EXTRA_NOISE_KEY}=null) shares a seed with an S1 ∪ S̃2 run")
    table = pd.DataFrame(rows)
    return table[[*others, *RESULT_COLUMNS]].sort_values([*others, "eps", "p"], ignore_index=True)


def bound_figure(table: pd.DataFrame) -> Figure:
    """The bound (frequency: solid; Clopper-Pearson upper limit: dashed) vs ``p``, one panel per
    combination of the other grouping keys and ``eps`` (:func:`ncdepth.report.style.grid_figure`;
    a row per combination when at most three ``eps``), beside the ``S1``
    networks' test error (mean, band of one std over the seed pairs) and the probability term
    (dotted)."""
    others = [column for column in table.columns if column not in RESULT_COLUMNS]
    groups = _groups(table, others)
    eps_values = sorted(table["eps"].unique())
    p_values = sorted(table["p"].unique())
    cells = [(group_values, group, eps) for group_values, group in groups for eps in eps_values]
    figure, axes = grid_figure(len(cells), columns=len(eps_values), sharey=True)
    bound_colour, test_colour = group_colour(0, 2), group_colour(1, 2)
    for ax, (group_values, group, eps) in zip(flat_axes(axes), cells, strict=True):
        curve = group[group["eps"] == eps].sort_values("p")
        ax.plot(curve["p"], curve["bound"], marker="o", color=bound_colour, label="bound")
        ax.plot(curve["p"], curve["bound_upper"], ls="--", color=bound_colour, label="bound (95% upper)")
        ax.plot(curve["p"], curve["probability"], ls=":", marker=".", color="grey", label="probability term")
        error, spread = curve["test_error_mean"], curve["test_error_std"].fillna(0.0)
        ax.plot(curve["p"], error, marker="s", color=test_colour, label="test error of the S1 nets (mean)")
        ax.fill_between(curve["p"], error - spread, error + spread, color=test_colour, alpha=0.2, lw=0)
        ax.axhline(1.0, color="black", lw=0.6)
        title = ", ".join(part for part in (key_values_label(others, group_values), f"ε = {eps:g}") if part)
        ax.set_title(title)
        ax.set_xlabel("p (corrupted fraction of S̃2)")
        ax.set_xticks(p_values, [format_value(p) for p in p_values])
        ax.grid(alpha=0.3)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("error")
    spread = spread_handle(table["test_error_count"], colour=test_colour, std_band=True)
    pairs = sorted({int(count) for count in table["pairs"]})
    pairs_text = f"{pairs[0]}" if len(pairs) == 1 else f"{pairs[0]}–{pairs[-1]}"
    handles = [*axes[0, 0].get_legend_handles_labels()[0], spread]
    legend_below(figure, handles)
    figure.suptitle(
        "Generalization bound from the effective depths (Galanti et al. 2023)\n"
        f"probability over n = {pairs_text} seed pairs"
    )
    return figure


def _groups(frame: pd.DataFrame, keys: Sequence[str]) -> list[tuple[tuple[Any, ...], pd.DataFrame]]:
    if not keys:
        return [((), frame)]
    grouped = frame.groupby(list(keys), dropna=False, sort=True)
    return [(key if isinstance(key, tuple) else (key,), group) for key, group in grouped]


def _depth(value: Any) -> int | None:
    return None if pd.isna(value) else int(value)
