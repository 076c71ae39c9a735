"""Aggregate a sweep of ``ncdepth-kernels`` jobs: one tidy table and Kothapalli & Tirer's figures.

Each job writes ``kernels.csv`` into its run directory with the columns
:data:`ncdepth.rundir.KERNELS_COLUMNS`. The jobs and their states are the sweep's
(:func:`ncdepth.report.collect.collect_sweep`, whose ``runs.csv`` lists them all); the table holds
the finished ones, and the jobs that did not finish are logged, never fatal. The figures, from the ``nc1_trace_ratio`` rows, averaged over seeds (mean and a band from the lowest to the
highest seed, as the legend says; :mod:`ncdepth.report.style`):

* ``kernels_nc1_vs_d0``: ``log10 NC1`` against ``d0`` for balanced class sizes, one panel per
  ``(num_classes, n)``, one curve per quantity (data, NNGP, NTK, adaptive kernel, trained net);
* ``kernels_nc1_ratio_vs_class_sizes``: ``NC1(H) / NC1(X)`` (each quantity over the data's NC1
  of the same run) against the class sizes, balanced first, one panel per ``(num_classes, n, d0)``.

An adaptive kernel whose solve did not converge at the network width (``converged`` 0) stays in
the table but is left out of the figures. A figure the sweep does not vary (one ``d0``; one
class-size configuration) is skipped.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ncdepth.report.collect import Sweep
from ncdepth.report.style import (
    NothingToPlot,
    flat_axes,
    grid_figure,
    legend_below,
    log_axis,
    save_figure,
    seed_handle,
    seed_mean,
    seed_points,
    spread_handle,
)
from ncdepth.rundir import FINISHED, KERNELS_COLUMNS, KERNELS_FILE, KERNELS_NC1

log = logging.getLogger(__name__)

DATA = "data"
ADAPTIVE = "adaptive"
QUANTITY_ORDER = ("data", "nngp_relu", "ntk_relu", "nngp_erf", "ntk_erf", "adaptive", "fcn_init", "fcn")
"""Curve order; quantities not listed here follow in order of appearance."""
TABLE_STEM = "kernels_table"
FIGURES_SUBDIR = "figures"
QUANTITY_COLOURS = colormaps["tab10"]


def collect_kernel_runs(sweep: Sweep) -> pd.DataFrame:
    """Every finished run's ``kernels.csv`` rows with a leading ``run`` column (the run's name in
    ``sweep``); the columns are there even when no run finished."""
    frames = [
        pd.read_csv(run.path / KERNELS_FILE, dtype={"class_sizes": str, "quantity": str, "metric": str})
        .reindex(columns=list(KERNELS_COLUMNS))
        .assign(run=run.name)
        for run in sweep.runs
        if run.status == FINISHED and run.path is not None
    ]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(KERNELS_COLUMNS))
    return table.reindex(columns=["run", *KERNELS_COLUMNS])


def plotted_nc1(table: pd.DataFrame) -> pd.DataFrame:
    """The ``nc1_trace_ratio`` rows of ``table``, less the adaptive kernels that did not converge."""
    record = table[(table["quantity"] == ADAPTIVE) & (table["metric"] == "converged")]
    unconverged = record.loc[record["value"].astype(float) < 1.0, "run"]
    rows = table[table["metric"] == KERNELS_NC1]
    return rows[~((rows["quantity"] == ADAPTIVE) & rows["run"].isin(unconverged))]


def nc1_vs_d0(table: pd.DataFrame) -> Figure:
    """``log10 NC1`` against ``d0`` (log2 axis) for the balanced runs (module docstring)."""
    rows = _finished_nc1(table)
    rows = rows[rows["class_sizes"].map(_is_balanced)]
    rows = rows.assign(log10_nc1=np.log10(rows["value"].astype(float)))
    panels = [
        (key, panel)
        for key, panel in rows.groupby(["num_classes", "n"], sort=True)
        if panel["d0"].nunique() > 1
    ]
    if not panels:
        raise NothingToPlot("no balanced (num_classes, n) with two or more d0 values")
    figure, axes = grid_figure(len(panels))
    counts = []
    for ax, ((num_classes, n), panel) in zip(flat_axes(axes), panels, strict=True):
        stats = seed_mean(panel, ["quantity", "d0"], value="log10_nc1")
        counts.append(stats["count"])
        for quantity in _quantities(stats):
            seeds = panel[panel["quantity"] == quantity]
            _band(ax, stats[stats["quantity"] == quantity], "d0", quantity, seeds["d0"], seeds["log10_nc1"])
        ax.set_xscale("log", base=2)
        d0_values = sorted(panel["d0"].unique())
        ax.set_xticks(d0_values, [str(d0) for d0 in d0_values])
        ax.minorticks_off()
        ax.set(xlabel="d0", ylabel="log10 NC1")
        ax.set_title(f"N={n}, C={num_classes}")
    _legend(figure, axes[0, 0], pd.concat(counts))
    figure.suptitle("NC1 of the kernels and the trained net\nagainst the input dimension d0")
    return figure


def nc1_ratio_vs_class_sizes(table: pd.DataFrame) -> Figure:
    """``NC1(H) / NC1(X)`` against the class sizes, balanced first (module docstring)."""
    rows = _finished_nc1(table)
    data = rows[rows["quantity"] == DATA].set_index("run")["value"].astype(float)
    rows = rows[(rows["quantity"] != DATA) & rows["run"].isin(data.index)]
    rows = rows.assign(ratio=rows["value"].astype(float) / rows["run"].map(data).to_numpy())
    panels = [
        (key, panel)
        for key, panel in rows.groupby(["num_classes", "n", "d0"], sort=True)
        if panel["class_sizes"].nunique() > 1
    ]
    if not panels:
        raise NothingToPlot("no (num_classes, n, d0) with two or more class-size configurations")
    figure, axes = grid_figure(len(panels))
    counts = []
    for ax, ((num_classes, n, d0), panel) in zip(flat_axes(axes), panels, strict=True):
        order = sorted(panel["class_sizes"].unique(), key=_minority_fraction, reverse=True)
        position = {sizes: index for index, sizes in enumerate(order)}
        panel = panel.assign(position=panel["class_sizes"].map(position))
        stats = seed_mean(panel, ["quantity", "position"], "ratio")
        counts.append(stats["count"])
        for quantity in _quantities(stats):
            seeds = panel[panel["quantity"] == quantity]
            _band(
                ax,
                stats[stats["quantity"] == quantity],
                "position",
                quantity,
                seeds["position"],
                seeds["ratio"],
            )
        ax.axhline(1.0, color="0.5", linewidth=0.8, linestyle="--")
        log_axis(ax, None)
        ax.set_xticks(range(len(order)), order, rotation=30)
        ax.set(xlabel="class sizes", ylabel="NC1(H) / NC1(X)")
        ax.set_title(f"N={n}, d0={d0}, C={num_classes}")
    _legend(figure, axes[0, 0], pd.concat(counts))
    figure.suptitle("NC1(H) / NC1(X) against the class sizes\n(the minority shrinks to the right)")
    return figure


def kernel_figures(table: pd.DataFrame) -> dict[str, Callable[[], Figure]]:
    """``{name: draw}`` for both figures of the module docstring, from the kernels table."""
    return {
        "kernels_nc1_vs_d0": lambda: nc1_vs_d0(table),
        "kernels_nc1_ratio_vs_class_sizes": lambda: nc1_ratio_vs_class_sizes(table),
    }


def write_kernel_report(sweep: Sweep, out_dir: Path) -> list[Path]:
    """Write ``kernels_table.csv`` (and ``.parquet`` when pyarrow is installed) and
    ``figures/<name>.png|pdf`` for both figures of the module docstring into ``out_dir``; returns
    the written paths. Jobs that did not finish and skipped figures are logged, never raised."""
    table = collect_kernel_runs(sweep)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / f"{TABLE_STEM}.csv"]
    table.to_csv(written[0], index=False)
    if importlib.util.find_spec("pyarrow") is not None:
        written.append(out / f"{TABLE_STEM}.parquet")
        table.to_parquet(written[-1], engine="pyarrow", index=False)
    else:
        log.warning("pyarrow is not installed: no %s.parquet (pip install 'ncdepth[report]')", TABLE_STEM)
    for run in sweep.runs:
        if run.status != FINISHED:
            log.warning("run %s %s: %s", run.name, run.status, run.reason)
    dropped = (table["metric"] == KERNELS_NC1).sum() - len(plotted_nc1(table))
    if dropped:
        log.warning("%d adaptive kernels did not converge: left out of the figures", dropped)
    for name, draw in kernel_figures(table).items():
        try:
            written += save_figure(draw(), out / FIGURES_SUBDIR, name)
        except NothingToPlot as reason:
            log.info("figure %s skipped: %s", name, reason)
    return written


def _finished_nc1(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`plotted_nc1`; raises :class:`NothingToPlot` when no run finished."""
    rows = plotted_nc1(table)
    if rows.empty:
        raise NothingToPlot("no run finished")
    return rows


def _sizes(class_sizes: str) -> list[int]:
    return [int(size) for size in str(class_sizes).split("/")]


def _is_balanced(class_sizes: str) -> bool:
    return len(set(_sizes(class_sizes))) == 1


def _minority_fraction(class_sizes: str) -> float:
    sizes = _sizes(class_sizes)
    return min(sizes) / sum(sizes)


def _quantities(stats: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(stats["quantity"]))
    return [q for q in QUANTITY_ORDER if q in present] + [q for q in present if q not in QUANTITY_ORDER]


def _band(ax: Axes, curve: pd.DataFrame, x: str, quantity: str, seed_x: pd.Series, seed_y: pd.Series) -> None:
    """Mean line and the seeds' min-max band of ``curve`` (from :func:`seed_mean`) against its column
    ``x``, in the quantity's colour (fixed across figures for :data:`QUANTITY_ORDER`), and each seed
    (``seed_y`` at ``seed_x``) as a dot when there are several."""
    curve = curve.sort_values(x)
    known = quantity in QUANTITY_ORDER
    colour = QUANTITY_COLOURS(QUANTITY_ORDER.index(quantity) if known else QUANTITY_COLOURS.N - 1)
    style = ":" if quantity == "fcn_init" else "-"
    ax.plot(curve[x], curve["mean"], style, marker="o", markersize=3, color=colour, label=quantity)
    ax.fill_between(curve[x], curve["min"], curve["max"], color=colour, alpha=0.15)
    if curve["count"].max() > 1:
        seed_points(ax, seed_x, seed_y, colour)
    ax.grid(alpha=0.3)


def _legend(figure: Figure, ax: Axes, counts: pd.Series) -> None:
    """The quantities of ``ax``, then what the bands are."""
    seeds_drawn = [seed_handle()] if counts.max() > 1 else []
    legend_below(figure, [*ax.get_legend_handles_labels()[0], spread_handle(counts), *seeds_drawn])
