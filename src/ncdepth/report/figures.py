"""The standard figures of a sweep of ``ncdepth-train`` runs, drawn from the report tables.

``BY`` below names the sweep's grouping keys (the swept keys that vary, ``seed`` excepted) by their
last component, e.g. ``_by_depth``, ``_by_label_noise``, ``_by_depth_and_label_noise``
(:func:`ncdepth.report.style.by_keys`); ``X`` names its numeric grouping keys the same way.

* ``ncc_train_errorBY``: NCC train error of every layer vs epoch, log axis, ``ε`` lines
  (Galanti et al. 2023, Fig. 1), one panel per swept value;
* ``final_ncc_error_and_cdnv_per_layer``: NCC train and test error and CDNV vs layer at the last
  epoch, one curve per swept value;
* ``effective_depthX``: effective depth vs each numeric swept key, one panel per ``ε``, seeds as
  dots beside their mean, and the line ``y = L`` against ``model.depth``;
* ``last_layer_collapse``: NC1, NC2 (``nc2_etf``), NC3, NC4 at the classifier's input vs epoch;
* ``separation_fuzziness``: He & Su's separation fuzziness ``D_l`` (train split) vs layer at the last
  epoch on a log axis, whose straight line is their law of data separation; the legend gives the mean
  slope of ``log D_l`` and ``R^2`` of the finished runs (``summary.json``'s ``separation_law``);
* ``head_geometry``: the distances of a deep linear head's ``W W^T``, ``H^T H`` and ``W H`` to the frame
  the deep-linear UFM predicts (``geom_wwt``, ``geom_hth``, ``geom_wh``) vs epoch, every head layer, one row
  of panels per swept value (runs with a deep linear head, :mod:`ncdepth.training.head_geometry`);
* ``minority_collapse``: every class's classifier-row and class-mean norm over the majority's
  beside the UFM prediction, one colour per swept value (imbalanced runs with a deep linear head).

Conventions (seed means and bands, zero on log axes, names, files): :mod:`ncdepth.report.style`. A
figure whose input the sweep lacks raises :class:`NothingToPlot`, whose message says what is
missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ncdepth.metrics.registry import BY_NAME
from ncdepth.report.style import (
    NothingToPlot,
    band,
    by_keys,
    curve_styles,
    flat_axes,
    floor_handle,
    grid_figure,
    key_values_label,
    layer_colourbar,
    layer_colours,
    legend_below,
    log_axis,
    readable,
    save_figure,
    seed_handle,
    seed_mean,
    seed_points,
    spread_handle,
    threshold_handle,
    threshold_lines,
    value_axis,
    zero_floor,
)

DEPTH_KEY = "model.depth"
EFFECTIVE_DEPTH_PREFIX = "effective_depth@"
COLLAPSE_METRICS = {name: BY_NAME[name].label for name in ("nc1", "nc2_etf", "nc3", "nc4")}
"""NC1-NC4 as drawn for the classifier layer, with their panel titles (``ncdepth.metrics.registry``)."""
CLASS_NORMS = {"w": "classifier rows ‖w_k‖", "h": "class means ‖h̄_k‖"}
"""The per-class norms of :func:`minority_collapse`: ``{norm}_norm_ratio@k`` and ``…_pred@k``."""
HEAD_GEOMETRY = {"geom_wwt": "W Wᵀ", "geom_hth": "H̄ᵀ H̄", "geom_wh": "W H̄"}
"""The head's distances to the predicted frame (``ncdepth.training.head_geometry``), with their panel titles."""
PREDICTION_STYLE = {"linestyle": "--", "marker": "D", "markersize": 4, "markerfacecolor": "none"}
DEPTH_LINE = {"color": "0.25", "linestyle": "-.", "linewidth": 0.9, "zorder": 1}
"""The ``y = L`` reference of the effective-depth figure: every layer of the network needed."""

Panels = dict[tuple[Any, ...], pd.DataFrame]


def training_figures(
    table: pd.DataFrame, runs: pd.DataFrame, grouping: Sequence[str]
) -> dict[str, Callable[[], Figure]]:
    """``{name: draw}`` for every standard figure (module docstring) of a sweep with the report
    table ``table``, the runs table ``runs`` and the grouping keys ``grouping``: curves over
    epochs from every run with metrics (finished, running, interrupted), final values from finished
    runs only (failed runs are left out)."""
    usable = table[table["run"].isin(runs.loc[runs["status"] != "failed", "run"])]
    finished = table[table["run"].isin(runs.loc[runs["status"] == "finished", "run"])]
    eps = thresholds(runs)
    x_keys = numeric_keys(runs[runs["status"] == "finished"], grouping)
    deepest = int(finished["layer_index"].max()) if not finished.empty else 1
    return {
        f"ncc_train_error{by_keys(grouping)}": lambda: ncc_train_error_by_layer(usable, grouping, eps),
        "final_ncc_error_and_cdnv_per_layer": lambda: final_ncc_error_and_cdnv_per_layer(
            finished, grouping, eps
        ),
        f"effective_depth{by_keys(x_keys)}": lambda: effective_depth(runs, grouping, x_keys, deepest),
        "last_layer_collapse": lambda: last_layer_collapse(usable, grouping),
        "separation_fuzziness": lambda: separation_fuzziness(finished, runs, grouping),
        "head_geometry": lambda: head_geometry(usable, grouping),
        "minority_collapse": lambda: minority_collapse(finished, grouping),
    }


def save_figures(
    table: pd.DataFrame, runs: pd.DataFrame, grouping: Sequence[str], out_dir: str | Path
) -> tuple[list[Path], dict[str, str]]:
    """Draw every figure of :func:`training_figures` into ``out_dir`` as ``NAME.png`` and
    ``NAME.pdf``. Returns the written paths and ``{name: why it was skipped}``."""
    written: list[Path] = []
    skipped: dict[str, str] = {}
    for name, draw in training_figures(table, runs, grouping).items():
        try:
            written += save_figure(draw(), out_dir, name)
        except NothingToPlot as reason:
            skipped[name] = str(reason)
    return written, skipped


def thresholds(runs: pd.DataFrame) -> list[float]:
    """The thresholds ``ε`` of the runs' effective depths (their ``effective_depth@EPS`` columns)."""
    return sorted(
        float(column.removeprefix(EFFECTIVE_DEPTH_PREFIX))
        for column in runs.columns
        if column.startswith(EFFECTIVE_DEPTH_PREFIX)
    )


def numeric_keys(runs: pd.DataFrame, grouping: Sequence[str]) -> list[str]:
    """The grouping keys with a number in every run of ``runs`` (an x axis)."""
    return [
        key
        for key in grouping
        if not runs.empty
        and pd.api.types.is_numeric_dtype(runs[key])
        and not pd.api.types.is_bool_dtype(runs[key])
        and runs[key].notna().all()
    ]


def ncc_train_error_by_layer(table: pd.DataFrame, grouping: Sequence[str], eps: Sequence[float]) -> Figure:
    """NCC train error ``1 - ncc_acc`` of every layer vs epoch on a log axis with the thresholds
    ``eps`` (Galanti et al. 2023, Fig. 1): one panel per ``model.depth`` (when swept; else per value
    of the first grouping key) and combination of the other grouping keys, in that order, in the
    grid of :func:`ncdepth.report.style.grid_figure` (one row per combination of the other keys when
    at most three depths), lines coloured by layer index (1 = first layer, the same colour in every
    panel)."""
    rows = table[(table["split"] == "train") & (table["metric"] == "ncc_acc")]
    if rows.empty:
        raise NothingToPlot("no run measured the NCC train accuracy (split=train, metric=ncc_acc)")
    column_keys = [DEPTH_KEY] if DEPTH_KEY in grouping else list(grouping[:1])
    row_keys = [key for key in grouping if key not in column_keys]
    stats = seed_mean(rows.assign(value=1.0 - rows["value"]), [*grouping, "epoch", "layer_index"])
    floor = zero_floor([*stats["mean"], *eps])
    grid, row_values, column_values = _grid(stats, row_keys, column_keys)
    cells = sorted(grid)  # in reading order: the panels of one row of the keys' grid together
    figure, axes = grid_figure(len(cells), columns=len(column_values), sharex=True, sharey=True)
    colours = layer_colours(int(stats["layer_index"].max()))
    for ax, (i, j) in zip(flat_axes(axes), cells, strict=True):
        for layer_index, curve in grid[i, j].groupby("layer_index"):
            band(ax, curve, "epoch", color=colours[int(layer_index) - 1], floor=floor)
        ax.set_title(key_values_label([*row_keys, *column_keys], (*row_values[i], *column_values[j])))
    for ax in flat_axes(axes):  # the axes share y: the same scale, a floor line in each
        log_axis(ax, floor)
    axes[0, 0].set_ylim(top=1.5)
    for ax in flat_axes(axes):
        threshold_lines(ax, eps, labelled=ax.get_subplotspec().is_last_col())
        ax.tick_params(labelbottom=True)
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("NCC train error")
    layer_colourbar(figure, axes, len(colours))
    thresholds_drawn = [threshold_handle()] if eps else []
    legend_below(figure, [*thresholds_drawn, spread_handle(stats["count"]), *floor_handle([floor])])
    figure.suptitle("NCC train error of every layer during training")
    return figure


def final_ncc_error_and_cdnv_per_layer(
    table: pd.DataFrame, grouping: Sequence[str], eps: Sequence[float]
) -> Figure:
    """At each run's last measured epoch: NCC train and test error (with the thresholds ``eps`` on
    the train error) and CDNV (train, test) vs layer index, log axes, one curve per combination of
    the grouping keys. ``table`` should hold finished runs only."""
    last_epoch = table.groupby("run")["epoch"].transform("max")
    final = table[table["epoch"] == last_epoch]
    quantities = [("train", "ncc_acc"), ("test", "ncc_acc"), ("train", "cdnv"), ("test", "cdnv")]
    present = [(s, m) for s, m in quantities if ((final["split"] == s) & (final["metric"] == m)).any()]
    if not present:
        raise NothingToPlot("no finished run measured ncc_acc or cdnv")
    figure, axes = grid_figure(len(present))
    counts, floors = [], []
    for ax, (split, metric) in zip(flat_axes(axes), present, strict=True):
        selected = final[(final["split"] == split) & (final["metric"] == metric)]
        if metric == "ncc_acc":
            selected = selected.assign(value=1.0 - selected["value"])
        stats = seed_mean(selected, [*grouping, "layer_index"])
        counts.append(stats["count"])
        floor = zero_floor([*stats["mean"], *selected["value"], *(eps if metric == "ncc_acc" else [])])
        floors.append(floor)
        curves = _panels(stats, grouping)
        seeds = _panels(selected, grouping)
        for style, (curve_value, curve) in zip(curve_styles(list(curves)), curves.items(), strict=True):
            label = key_values_label(grouping, curve_value)
            band(ax, curve, "layer_index", **style, label=label, floor=floor)
            if curve_value in seeds and curve["count"].max() > 1:
                runs = seeds[curve_value]
                values = runs["value"] if floor is None else runs["value"].clip(lower=floor)
                seed_points(ax, runs["layer_index"], values, style["color"])
        log_axis(ax, floor)
        if (split, metric) == ("train", "ncc_acc"):
            threshold_lines(ax, eps)
        quantity = f"NCC {split} error" if metric == "ncc_acc" else f"CDNV ({split})"
        ax.set(xlabel="layer", ylabel=quantity)
    thresholds_drawn = [threshold_handle()] if eps and ("train", "ncc_acc") in present else []
    counts = pd.concat(counts)
    seeds_drawn = [seed_handle()] if counts.max() > 1 else []
    handles = [*_curve_handles(axes[0, 0]), spread_handle(counts), *seeds_drawn, *thresholds_drawn]
    legend_below(figure, [*handles, *floor_handle(floors)])
    figure.suptitle("Per layer at the last epoch (finished runs)")
    return figure


def effective_depth(
    runs: pd.DataFrame, grouping: Sequence[str], x_keys: Sequence[str], deepest: int
) -> Figure:
    """Effective depth (``effective_depth@EPS`` of finished runs' summaries: the first layer whose
    NCC train error is at most EPS) vs each of ``x_keys``, one panel per (key, threshold EPS) in the
    grid of :func:`ncdepth.report.style.grid_figure` (a row per key when at most three thresholds),
    one curve per combination of the other grouping keys: the mean and its 95 % t-interval, each
    seed a dot beside it; the dash-dotted line ``y = L`` (:data:`DEPTH_LINE`) marks a network that
    needs every layer (against ``model.depth``; a horizontal line at ``deepest`` when the sweep has
    one depth). The y axis shows the depths there can be,
    ``1..deepest`` (the most layers of a run), with integer ticks; an interval beyond them runs off
    the axis. Runs that never reach EPS (``null``) are left out of the mean; each panel's title says
    how many."""
    if not x_keys:
        raise NothingToPlot("the sweep varies no numeric key (besides the seed)")
    finished = runs[runs["status"] == "finished"]
    depth_columns = [column for column in runs.columns if column.startswith(EFFECTIVE_DEPTH_PREFIX)]
    if finished.empty or not depth_columns:
        raise NothingToPlot("no finished run has an effective depth in its summary.json")
    depth_columns.sort(key=lambda column: float(column.removeprefix(EFFECTIVE_DEPTH_PREFIX)))
    cells = [(x_key, column) for x_key in x_keys for column in depth_columns]
    figure, axes = grid_figure(len(cells), columns=len(depth_columns), sharey=True)
    counts, first_of_key, depth_line = [], {}, False
    for ax, (x_key, column) in zip(flat_axes(axes), cells, strict=True):
        first_of_key.setdefault(x_key, ax)
        values = finished.assign(value=pd.to_numeric(finished[column], errors="coerce").astype(float))
        stats = seed_mean(values, list(grouping))
        counts.append(stats["count"])
        positions = _error_bars(
            ax, stats, x_key, [key for key in grouping if key != x_key], finished[x_key], seeds=values
        )
        if x_key == DEPTH_KEY:  # y = L: the effective depth of a network that needs every layer
            ax.plot(list(positions.values()), list(positions), **DEPTH_LINE)
            depth_line = True
        elif DEPTH_KEY not in grouping:  # one depth in the sweep: y = L is a horizontal line
            ax.axhline(deepest, **DEPTH_LINE)
            depth_line = True
        never = int(values["value"].isna().sum())
        title = f"ε = {column.removeprefix(EFFECTIVE_DEPTH_PREFIX)}"
        if never:
            title += f"\n{never} of {len(values)} runs never reach ε (left out)"
        ax.set_title(title)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("effective depth")
    axes[0, 0].set_ylim(0.5, deepest + 0.5)
    axes[0, 0].yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    counts = pd.concat(counts)
    handles = [handle for ax in first_of_key.values() for handle in _curve_handles(ax)]
    handles.append(spread_handle(counts, error_bar=True))
    if counts.max() > 1:
        handles.append(seed_handle())
    if depth_line:
        at = "" if DEPTH_KEY in grouping else f" = {deepest}"
        handles.append(
            Line2D([], [], **DEPTH_LINE, label=f"y = L{at}: effective depth = the network's depth")
        )
    legend_below(figure, handles)
    figure.suptitle("Effective depth: the first layer whose NCC train error ≤ ε (finished runs)")
    return figure


def last_layer_collapse(table: pd.DataFrame, grouping: Sequence[str]) -> Figure:
    """NC1, NC2 (``nc2_etf``), NC3 and NC4 on the train split vs epoch at each run's last layer
    in depth order (the classifier's input), log axes, one curve per combination of the grouping
    keys."""
    last_layer = table.groupby("run")["layer_index"].transform("max")
    rows = table[(table["layer_index"] == last_layer) & (table["split"] == "train")]
    rows = rows[rows["metric"].isin(list(COLLAPSE_METRICS))].dropna(subset=["value"])
    metrics = [metric for metric in COLLAPSE_METRICS if (rows["metric"] == metric).any()]
    if not metrics:
        raise NothingToPlot(f"no run measured {', '.join(COLLAPSE_METRICS)} at its last layer")
    stats = seed_mean(rows, [*grouping, "metric", "epoch"])
    figure, axes = grid_figure(len(metrics), sharex=True)
    floors = []
    for ax, metric in zip(flat_axes(axes), metrics, strict=True):
        selected = stats[stats["metric"] == metric]
        floor = zero_floor([*selected["mean"], *selected["min"]])
        floors.append(floor)
        curves = _panels(selected, list(grouping))
        for style, (curve_value, curve) in zip(curve_styles(list(curves)), curves.items(), strict=True):
            label = key_values_label(grouping, curve_value)
            band(ax, curve, "epoch", **style, label=label, floor=floor)
        log_axis(ax, floor)
        ax.set_title(COLLAPSE_METRICS[metric])
        ax.set(xlabel="epoch", ylabel=metric.upper().split("_")[0])
        ax.tick_params(labelbottom=True)
    handles = [*_curve_handles(axes[0, 0]), spread_handle(stats["count"]), *floor_handle(floors)]
    legend_below(figure, handles)
    figure.suptitle("Neural collapse at the classifier's input (train split)")
    return figure


def separation_fuzziness(table: pd.DataFrame, runs: pd.DataFrame, grouping: Sequence[str]) -> Figure:
    """He & Su's law of data separation: the train split's ``fuzziness`` ``D_l`` vs layer index at each
    finished run's last epoch, log axis, one curve per combination of the grouping keys (seed means and
    bands); each curve's label adds the mean slope of ``log D_l`` per layer and the mean ``R^2`` of the
    runs' fits (``runs.csv``'s ``separation_slope``, ``separation_r2``)."""
    rows = table[(table["split"] == "train") & (table["metric"] == "fuzziness")].dropna(subset=["value"])
    if rows.empty:
        raise NothingToPlot("no finished run measured fuzziness (nc.measures)")
    rows = rows[rows["epoch"] == rows.groupby("run")["epoch"].transform("max")]
    stats = seed_mean(rows, [*grouping, "layer_index"])
    fits = runs[runs["status"] == "finished"]
    figure, axes = grid_figure(1)
    ax = axes[0, 0]
    floor = zero_floor([*stats["mean"], *rows["value"]])
    seeds = _panels(rows, list(grouping))
    curves = _panels(stats, list(grouping))
    for style, (curve_value, curve) in zip(curve_styles(list(curves)), curves.items(), strict=True):
        mask = pd.Series(True, index=fits.index)
        for key, value in zip(grouping, curve_value, strict=True):
            mask &= fits[key] == value
        slope = pd.to_numeric(fits.loc[mask, "separation_slope"], errors="coerce").mean()
        r2 = pd.to_numeric(fits.loc[mask, "separation_r2"], errors="coerce").mean()
        label = ", ".join(
            part
            for part in (key_values_label(grouping, curve_value), f"slope {slope:.3g}, R² {r2:.3f}")
            if part
        )
        band(ax, curve, "layer_index", **style, label=label, floor=floor)
        if curve_value in seeds and curve["count"].max() > 1:
            values = seeds[curve_value]["value"]
            seed_points(ax, seeds[curve_value]["layer_index"], values.clip(lower=floor or 0), style["color"])
    log_axis(ax, floor)
    ax.set(xlabel="layer", ylabel="fuzziness D = Tr(Σ_W Σ_B⁺)")
    seeds_drawn = [seed_handle()] if stats["count"].max() > 1 else []
    handles = [*_curve_handles(ax), spread_handle(stats["count"]), *seeds_drawn, *floor_handle([floor])]
    legend_below(figure, handles)
    figure.suptitle("Law of data separation: fuzziness per layer\n(last epoch, train split)")
    return figure


def head_geometry(table: pd.DataFrame, grouping: Sequence[str]) -> Figure:
    """The distance of each head layer's ``W W^T``, ``H̄^T H̄`` and ``W H̄`` to the frame the deep-linear UFM
    predicts for it (0: the frame; 2: as far as possible) vs epoch on the train split, log axes: one
    column per distance, one row per combination of the grouping keys, lines coloured by the layer's
    place in the head (1 = its first layer, the backbone's output)."""
    rows = table[(table["split"] == "train") & table["metric"].isin(list(HEAD_GEOMETRY))]
    rows = rows.dropna(subset=["value"])
    if rows.empty:
        raise NothingToPlot(
            f"no run logged {', '.join(HEAD_GEOMETRY)} (a deep linear head: model.depth_linear > 0)"
        )
    first = rows.groupby("run")["layer_index"].transform("min")
    rows = rows.assign(head_index=rows["layer_index"] - first + 1)
    stats = seed_mean(rows, [*grouping, "metric", "epoch", "head_index"])
    floor = zero_floor(stats["mean"])
    combinations = list(_panels(stats, list(grouping)))
    metrics = [metric for metric in HEAD_GEOMETRY if (stats["metric"] == metric).any()]
    figure, axes = grid_figure(
        len(combinations) * len(metrics), columns=len(metrics), sharex=True, sharey=True
    )
    colours = layer_colours(int(stats["head_index"].max()))
    cells = iter(flat_axes(axes))
    for combination, panel in _panels(stats, list(grouping)).items():
        for metric in metrics:
            ax = next(cells)
            for head_index, curve in panel[panel["metric"] == metric].groupby("head_index"):
                band(ax, curve, "epoch", color=colours[int(head_index) - 1], floor=floor)
            title = key_values_label(grouping, combination)
            ax.set_title(f"{HEAD_GEOMETRY[metric]}{', ' + title if title else ''}")
    for ax in flat_axes(axes):
        log_axis(ax, floor)
        ax.tick_params(labelbottom=True)
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("distance to the frame")
    layer_colourbar(figure, axes, len(colours), label="head layer (1 = the backbone's output)")
    legend_below(figure, [spread_handle(stats["count"]), *floor_handle([floor])])
    figure.suptitle("Deep linear head: distance to the predicted frame (train split)")
    return figure


def minority_collapse(table: pd.DataFrame, grouping: Sequence[str]) -> Figure:
    """Minority collapse (Fang et al. 2021; Dang et al. 2023) at the classifier's input of a deep
    linear head, at each finished run's last epoch: the norm of every class's classifier row
    (left) and class mean (right) over the majority classes' mean (``w_norm_ratio@k``,
    ``h_norm_ratio@k`` of :mod:`ncdepth.training.head_geometry`), measured (mean and 95 %
    t-interval over seeds) beside the UFM optimum's (``*_pred@k``, open diamonds; 1 for the
    majority, 0 where it predicts collapse), one colour (and line style) per combination of the
    grouping keys. The y axis shows the means; a wide interval runs off it."""
    rows = table[(table["split"] == "train") & table["metric"].str.contains("_norm_ratio", regex=False)]
    if rows.empty:
        raise NothingToPlot(
            "no run logged per-class norms (w_norm_ratio@k: imbalanced classes and a deep linear head, "
            "model.depth_linear > 0)"
        )
    rows = rows[rows["epoch"] == rows.groupby("run")["epoch"].transform("max")]
    parts = rows["metric"].str.extract(r"^(?P<norm>[wh])_norm_ratio(?P<predicted>_pred)?@(?P<k>\d+)$")
    rows = rows.assign(norm=parts["norm"], predicted=parts["predicted"].notna(), k=parts["k"].astype(int))
    figure, axes = grid_figure(len(CLASS_NORMS), sharey=True)
    counts, means = [], [1.0]
    for ax, (norm, title) in zip(flat_axes(axes), CLASS_NORMS.items(), strict=True):
        selected = rows[rows["norm"] == norm]
        measured = seed_mean(selected[~selected["predicted"]], [*grouping, "k"])
        predicted = seed_mean(selected[selected["predicted"]], [*grouping, "k"])
        counts.append(measured["count"])
        means += [*measured["mean"], *predicted["mean"]]
        _error_bars(
            ax, measured, "k", grouping, selected["k"], predicted, seeds=selected[~selected["predicted"]]
        )
        ax.axhline(1.0, color="0.6", linewidth=0.8)
        ax.set(title=title, xlabel="class k")
    axes[0, 0].set_ylim(0.0, 1.25 * max(means))  # an interval of few seeds may run off the top
    axes[0, 0].set_ylabel("norm / majority classes' mean norm")
    counts = pd.concat(counts)
    measured_handle = Line2D([], [], color="0.3", marker="o", linestyle="none", label="measured (mean)")
    prediction = Line2D([], [], **PREDICTION_STYLE, color="0.3", label="UFM optimum (closed_form)")
    seeds_drawn = [seed_handle()] if counts.max() > 1 else []
    handles = [*_curve_handles(axes[0, 0]), measured_handle, spread_handle(counts, error_bar=True)]
    legend_below(figure, [*handles, *seeds_drawn, prediction])
    figure.suptitle("Minority collapse at the classifier's input, per class (last epoch)")
    return figure


def _error_bars(
    ax: Axes,
    stats: pd.DataFrame,
    x_key: str,
    curve_keys: Sequence[str],
    x_values: pd.Series,
    predicted: pd.DataFrame | None = None,
    seeds: pd.DataFrame | None = None,
) -> dict[Any, float]:
    """Means and 95 % t-interval error bars of ``stats`` vs ``x_key`` (:func:`value_axis` of
    ``x_values``), one style per combination of ``curve_keys`` (:func:`curve_styles`), nudged apart
    so that bars at the same x do not hide each other; the means of ``predicted`` (same columns)
    beside them in :data:`PREDICTION_STYLE`; each seed's value (the ``value`` rows of ``seeds``) as a
    dot just right of its mean (:func:`seed_points`) where a mean is over more than one seed.
    Returns the x positions, ``{value: position}``."""
    positions = value_axis(ax, x_values)
    curves = _panels(stats, curve_keys)
    prediction_curves = {} if predicted is None else _panels(predicted, curve_keys)
    step = min((b - a for a, b in pairwise(positions.values())), default=1.0)
    styles = curve_styles(list(curves))
    seed_curves = {} if seeds is None else _panels(seeds, curve_keys)
    for k, (curve_value, curve) in enumerate(curves.items()):
        curve = curve.sort_values(x_key)
        nudge = 0.06 * step * (k - (len(curves) - 1) / 2)
        if curve_value in seed_curves and curve["count"].max() > 1:
            runs = seed_curves[curve_value]
            seed_points(
                ax, runs[x_key].map(positions) + nudge + 0.04 * step, runs["value"], styles[k]["color"]
            )
        ax.errorbar(
            curve[x_key].map(positions) + nudge,
            curve["mean"],
            yerr=curve["ci95"].fillna(0.0),
            marker="o",
            capsize=3,
            **styles[k],
            label=key_values_label(curve_keys, curve_value) or None,
        )
        if predicted is not None and curve_value in prediction_curves:
            prediction = prediction_curves[curve_value].sort_values(x_key)
            x = prediction[x_key].map(positions) + nudge
            ax.plot(x, prediction["mean"], **PREDICTION_STYLE, color=styles[k]["color"])
    ax.set_xlabel(readable(x_key))
    ax.grid(alpha=0.3)
    return positions


def _curve_handles(ax: Axes) -> list[Any]:
    """The labelled curves of ``ax`` (one legend entry per curve of a panel)."""
    return list(ax.get_legend_handles_labels()[0])


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
