"""The standard figures of a sweep, drawn from the report tables.

Figures are built with matplotlib's object API (``Figure``, no ``pyplot``): nothing depends on
or changes the interactive backend, and they render headless (Agg for PNG, the PDF backend).

Every figure averages over seeds: runs that share every *grouping key* (a swept key that varies
across the sweep, ``seed`` excepted) are replicates; curves show their mean and a band or error bar
of one standard deviation (ddof=1; none for a single seed). A figure whose input the sweep lacks
raises :class:`NothingToPlot`, whose message says what is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DEPTH_KEY = "model.depth"
NOISE_KEY = "data.label_noise"
EFFECTIVE_DEPTH_PREFIX = "effective_depth@"
COLLAPSE_METRICS = ("nc1", "nc2_etf", "nc3", "nc4")
"""NC1-NC4 as drawn for the classifier layer (``docs/metrics.md``)."""
FIGURE_SUFFIXES = (".png", ".pdf")
PANEL_SIZE = (3.6, 2.9)
LAYER_COLOURS = colormaps["viridis"]
GROUP_COLOURS = colormaps["plasma"]

Panels = dict[tuple[Any, ...], pd.DataFrame]


class NothingToPlot(Exception):
    """The sweep does not hold (or vary) what a figure needs; the message says what."""


def ncc_train_accuracy_by_depth(table: pd.DataFrame, grouping: Sequence[str]) -> Figure:
    """NCC train accuracy of every layer vs epoch (Galanti et al. 2023, Fig. 1): one column of
    panels per ``model.depth`` (when swept), one row per combination of the other grouping keys,
    lines coloured by layer index (1 = first layer)."""
    rows = table[(table["split"] == "train") & (table["metric"] == "ncc_acc")]
    if rows.empty:
        raise NothingToPlot("no run measured the NCC train accuracy (split=train, metric=ncc_acc)")
    column_keys = [key for key in grouping if key == DEPTH_KEY]
    row_keys = [key for key in grouping if key != DEPTH_KEY]
    mean = seed_mean(rows, [*grouping, "epoch", "layer_index"])
    grid, row_values, column_values = _grid(mean, row_keys, column_keys)
    figure, axes = subplots(len(row_values), len(column_values), sharey=True)
    for (i, j), panel in grid.items():
        ax = axes[i, j]
        layers = Normalize(1, max(int(panel["layer_index"].max()), 2))
        for layer_index, curve in panel.groupby("layer_index"):
            _band(ax, curve, "epoch", colour=LAYER_COLOURS(layers(layer_index)))
        colourbar = figure.colorbar(ScalarMappable(layers, LAYER_COLOURS), ax=ax, label="layer")
        colourbar.locator = MaxNLocator(integer=True)
        colourbar.update_ticks()
        ax.set_title(
            key_values_label([*row_keys, *column_keys], (*row_values[i], *column_values[j])), fontsize=9
        )
        ax.set_xlabel("epoch")
        ax.set_ylim(0.0, 1.02)
    for ax in axes[:, 0]:
        ax.set_ylabel("NCC train accuracy")
    _hide_empty(axes, grid)
    return figure


def final_accuracy_and_cdnv_per_layer(table: pd.DataFrame, grouping: Sequence[str]) -> Figure:
    """At each run's last measured epoch: NCC train and test accuracy and CDNV (train, test; log
    scale) vs layer index, one curve per ``model.depth``, one row of panels per combination of the
    other grouping keys. ``table`` should hold finished runs only."""
    last_epoch = table.groupby("run")["epoch"].transform("max")
    final = table[table["epoch"] == last_epoch]
    quantities = [("train", "ncc_acc"), ("test", "ncc_acc"), ("train", "cdnv"), ("test", "cdnv")]
    present = [(s, m) for s, m in quantities if ((final["split"] == s) & (final["metric"] == m)).any()]
    if not present:
        raise NothingToPlot("no finished run measured ncc_acc or cdnv")
    curve_keys = [key for key in grouping if key == DEPTH_KEY]
    row_keys = [key for key in grouping if key != DEPTH_KEY]
    rows = _panels(final, row_keys)
    figure, axes = subplots(len(rows), len(present))
    for i, (row_value, row) in enumerate(rows.items()):
        for j, (split, metric) in enumerate(present):
            ax = axes[i, j]
            selected = row[(row["split"] == split) & (row["metric"] == metric)]
            mean = seed_mean(selected, [*grouping, "layer_index"])
            curves = _panels(mean, curve_keys)
            for k, (curve_value, curve) in enumerate(curves.items()):
                colour = group_colour(k, len(curves))
                _band(
                    ax, curve, "layer_index", colour=colour, label=key_values_label(curve_keys, curve_value)
                )
            if metric == "cdnv" and (mean["mean"] > 0).all():
                ax.set_yscale("log")
            title = f"{'NCC accuracy' if metric == 'ncc_acc' else 'CDNV'} ({split})"
            ax.set_title(_join(key_values_label(row_keys, row_value), title), fontsize=9)
            ax.set_xlabel("layer")
        if curve_keys:
            axes[i, -1].legend(fontsize="small")
    return figure


def effective_depth_vs_noise_and_depth(runs: pd.DataFrame, grouping: Sequence[str]) -> Figure:
    """Effective depth (``effective_depth@EPS`` of finished runs' summaries) vs
    ``data.label_noise`` (top row) and vs ``model.depth`` (bottom row), whichever the sweep varies,
    one column per threshold EPS, one curve per combination of the other grouping keys. Runs whose
    NCC train error never reaches EPS (``null``) are left out of the mean; each panel says how
    many."""
    x_keys = [key for key in (NOISE_KEY, DEPTH_KEY) if key in grouping]
    if not x_keys:
        raise NothingToPlot(f"the sweep varies neither {NOISE_KEY} nor {DEPTH_KEY}")
    finished = runs[runs["status"] == "finished"]
    depth_columns = [column for column in runs.columns if column.startswith(EFFECTIVE_DEPTH_PREFIX)]
    if finished.empty or not depth_columns:
        raise NothingToPlot("no finished run has an effective depth in its summary.json")
    depth_columns.sort(key=lambda column: float(column.removeprefix(EFFECTIVE_DEPTH_PREFIX)))
    figure, axes = subplots(len(x_keys), len(depth_columns))
    for i, x_key in enumerate(x_keys):
        curve_keys = [key for key in grouping if key != x_key]
        for j, column in enumerate(depth_columns):
            ax = axes[i, j]
            values = finished.assign(value=pd.to_numeric(finished[column], errors="coerce").astype(float))
            mean = seed_mean(values, list(grouping))
            curves = _panels(mean, curve_keys)
            for k, (curve_value, curve) in enumerate(curves.items()):
                curve = curve.sort_values(x_key)
                ax.errorbar(
                    curve[x_key],
                    curve["mean"],
                    yerr=curve["std"].fillna(0.0),
                    marker="o",
                    capsize=3,
                    color=group_colour(k, len(curves)),
                    label=key_values_label(curve_keys, curve_value) or None,
                )
            eps = column.removeprefix(EFFECTIVE_DEPTH_PREFIX)
            never = int(values["value"].isna().sum())
            if never:
                note = f"{never} of {len(values)} runs never reach eps={eps} (left out)"
                ax.text(0.02, 0.02, note, transform=ax.transAxes, fontsize=7, va="bottom")
            ax.set_title(f"eps = {eps}", fontsize=9)
            ax.set_xlabel(x_key)
            ax.set_ylabel("effective depth")
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            x_values = sorted(finished[x_key].dropna().unique())
            margin = 0.1 * ((x_values[-1] - x_values[0]) or 1.0)
            ax.set_xticks(x_values)
            ax.set_xlim(x_values[0] - margin, x_values[-1] + margin)
            if never == len(values):
                ax.set_yticks([])
            if curve_keys and never < len(values):
                ax.legend(fontsize="small")
    return figure


def last_layer_collapse(table: pd.DataFrame, grouping: Sequence[str]) -> Figure:
    """NC1, NC2 (``nc2_etf``), NC3 and NC4 on the train split vs epoch at each run's last layer
    in depth order (the classifier's input), one curve per combination of the grouping keys."""
    last_layer = table.groupby("run")["layer_index"].transform("max")
    rows = table[(table["layer_index"] == last_layer) & (table["split"] == "train")]
    rows = rows[rows["metric"].isin(COLLAPSE_METRICS)].dropna(subset=["value"])
    metrics = [metric for metric in COLLAPSE_METRICS if (rows["metric"] == metric).any()]
    if not metrics:
        raise NothingToPlot(f"no run measured {', '.join(COLLAPSE_METRICS)} at its last layer")
    mean = seed_mean(rows, [*grouping, "metric", "epoch"])
    figure, axes = subplots(1, len(metrics))
    for j, metric in enumerate(metrics):
        ax = axes[0, j]
        curves = _panels(mean[mean["metric"] == metric], list(grouping))
        for k, (curve_value, curve) in enumerate(curves.items()):
            _band(
                ax,
                curve,
                "epoch",
                colour=group_colour(k, len(curves)),
                label=key_values_label(grouping, curve_value),
            )
        if metric != "nc4" and (mean.loc[mean["metric"] == metric, "mean"] > 0).all():
            ax.set_yscale("log")
        ax.set_title(f"{metric} (train, last layer)", fontsize=9)
        ax.set_xlabel("epoch")
    if grouping:
        figure.legend(*axes[0, -1].get_legend_handles_labels(), fontsize="small", loc="outside right upper")
    return figure


def save_figures(
    table: pd.DataFrame, runs: pd.DataFrame, grouping: Sequence[str], out_dir: str | Path
) -> tuple[list[Path], dict[str, str]]:
    """Draw the four standard figures into ``out_dir`` as ``NAME.png`` and ``NAME.pdf``: curves
    over epochs from every run with metrics (finished, running, interrupted), final values from
    finished runs only (failed runs are left out). Returns the written paths and
    ``{name: why it was skipped}``."""
    usable = table[table["run"].isin(runs.loc[runs["status"] != "failed", "run"])]
    finished = table[table["run"].isin(runs.loc[runs["status"] == "finished", "run"])]
    figures: dict[str, Callable[[], Figure]] = {
        "ncc_train_accuracy_by_depth": lambda: ncc_train_accuracy_by_depth(usable, grouping),
        "final_accuracy_and_cdnv_per_layer": lambda: final_accuracy_and_cdnv_per_layer(finished, grouping),
        "effective_depth": lambda: effective_depth_vs_noise_and_depth(runs, grouping),
        "last_layer_collapse": lambda: last_layer_collapse(usable, grouping),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    skipped: dict[str, str] = {}
    for name, draw in figures.items():
        try:
            figure = draw()
        except NothingToPlot as reason:
            skipped[name] = str(reason)
            continue
        for suffix in FIGURE_SUFFIXES:
            path = out / f"{name}{suffix}"
            figure.savefig(path, dpi=120)
            written.append(path)
    return written, skipped


def seed_mean(frame: pd.DataFrame, by: Sequence[str], value: str = "value") -> pd.DataFrame:
    """``mean``, ``std`` (ddof=1, NaN for one replicate) and ``count`` of ``frame[value]`` over the
    rows sharing the columns ``by`` (NaN keys kept as a group of their own; NaN values skipped)."""
    if not by:
        stats = frame[value].agg(["mean", "std", "count"])
        return pd.DataFrame([stats.to_dict()])
    grouped = frame.groupby(list(by), dropna=False, sort=True)[value]
    return grouped.agg(["mean", "std", "count"]).reset_index()


def _panels(frame: pd.DataFrame, keys: Sequence[str]) -> Panels:
    if not keys:
        return {(): frame}
    groups = frame.groupby(list(keys), dropna=False, sort=True)
    return {key if isinstance(key, tuple) else (key,): group for key, group in groups}


def _grid(
    frame: pd.DataFrame, row_keys: Sequence[str], column_keys: Sequence[str]
) -> tuple[dict[tuple[int, int], pd.DataFrame], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    panels = _panels(frame, [*row_keys, *column_keys])
    row_values = list(dict.fromkeys(key[: len(row_keys)] for key in panels))
    column_values = list(dict.fromkeys(key[len(row_keys) :] for key in panels))
    grid = {
        (row_values.index(key[: len(row_keys)]), column_values.index(key[len(row_keys) :])): panel
        for key, panel in panels.items()
    }
    return grid, row_values, column_values


def subplots(rows: int, columns: int, sharey: bool = False) -> tuple[Figure, Any]:
    """A constrained-layout ``Figure`` with a ``rows x columns`` array of axes of :data:`PANEL_SIZE`."""
    figure = Figure(figsize=(PANEL_SIZE[0] * columns + 0.6, PANEL_SIZE[1] * rows + 0.4), layout="constrained")
    return figure, figure.subplots(rows, columns, squeeze=False, sharey=sharey)


def _band(ax: Axes, curve: pd.DataFrame, x: str, colour: Any, label: str | None = None) -> None:
    """Mean line and a one-std band of ``curve`` against its integer column ``x``."""
    curve = curve.sort_values(x)
    spread = curve["std"].fillna(0.0)
    ax.plot(curve[x], curve["mean"], marker="o", markersize=2.5, color=colour, label=label or None)
    ax.fill_between(curve[x], curve["mean"] - spread, curve["mean"] + spread, color=colour, alpha=0.15)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _hide_empty(axes: Any, grid: dict[tuple[int, int], pd.DataFrame]) -> None:
    rows, columns = axes.shape
    for i in range(rows):
        for j in range(columns):
            axes[i, j].set_visible((i, j) in grid)


def group_colour(index: int, count: int) -> Any:
    """The ``index``-th of ``count`` well-separated colours (the pale end of plasma left out)."""
    return GROUP_COLOURS(0.85 * index / max(count - 1, 1))


def key_values_label(keys: Sequence[str], values: Sequence[Any]) -> str:
    """``"k1=v1, k2=v2"`` (empty without keys): the title of a group of runs."""
    return ", ".join(f"{key}={value}" for key, value in zip(keys, values, strict=True))


def _join(*parts: str) -> str:
    return "\n".join(part for part in parts if part)
