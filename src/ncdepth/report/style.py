"""How every ncdepth figure looks: names, colours, spreads, log axes with zero, thresholds, files.

Figures are built with matplotlib's object API (``Figure``, no ``pyplot``): nothing depends on
or changes the interactive backend, and they render headless (Agg for PNG, the PDF backend).

* **Swept keys** read as words (:data:`KEY_NAMES`: ``data.label_noise`` is "label noise p"); a
  file name follows a key's last component (``ncc_train_error_by_label_noise``).
* **Seeds.** Runs that share every grouping key are replicates (:func:`seed_mean`). Curves over
  epochs or layers show their mean and a band from the lowest to the highest seed (how much seeds
  vary; a range stays meaningful on the log axes these curves use); final values against a swept key show their mean and an error bar of its 95 % Student-t
  interval (how well the mean is known). Neither for a single seed; every legend says which
  (:func:`spread_handle`).
* **Zero on a log axis.** Errors and rates that reach 0 (an NCC train error of 0, NC4) are drawn
  at a *floor*, the power of ten at or below half the smallest positive value drawn (thresholds
  included), just above the axis' bottom edge, its tick labelled ``0`` (:func:`zero_floor`,
  :func:`log_axis`).
* **Thresholds** ``ε`` of the effective depth are dashed grey lines labelled on the right edge.
* **Layers** are coloured by their index (1 = first) along viridis, with a discrete colourbar of
  integer ticks; **groups** of runs take well-separated colours of plasma, and line styles for a
  second swept key (:func:`curve_styles`).
* Each figure is written as ``NAME.png`` and ``NAME.pdf``, atomically (:func:`save_figure`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter
from scipy.stats import t as student_t

from ncdepth.rundir import atomic_write

FIGURE_SUFFIXES = (".png", ".pdf")
DPI = 150
PANEL_SIZE = (3.6, 2.9)
LAYER_COLOURS = colormaps["viridis"]
GROUP_COLOURS = colormaps["plasma"]
LINE_STYLES = ("-", "--", ":", "-.")
FLOOR_MARGIN = 1.5
"""The bottom of a log axis with a floor is this factor below it, so that points at 0 show."""
SHORT_LOG_AXIS = 2.0
"""Decades below which a log axis labels its minor ticks at 2 and 5 as well."""
THRESHOLD_COLOUR = "0.35"
THRESHOLD_STYLE = (0, (4, 3))
KEY_NAMES = {
    "model.depth": "depth L",
    "model.width": "width",
    "model.depth_linear": "linear head depth",
    "data.label_noise": "label noise p",
    "data.extra_label_noise": "S̃2 label noise p",
    "data.imbalance_ratio": "imbalance ratio",
    "data.samples_per_class": "samples per class",
    "optimizer.weight_decay": "weight decay",
    "optimizer.lr": "learning rate",
    "loss.feature_decay": "feature decay",
}
"""Readable names of the swept keys; any other key reads as itself."""


class NothingToPlot(Exception):
    """The sweep does not hold (or vary) what a figure needs; the message says what."""


def seed_mean(frame: pd.DataFrame, by: Sequence[str], value: str = "value") -> pd.DataFrame:
    """``mean``, ``std`` (ddof=1), ``min``, ``max``, ``count`` and ``ci95`` (the half-width of the mean's
    95 % Student-t interval, ``t(0.975, count - 1) std / sqrt(count)``) of ``frame[value]`` over the rows
    sharing the columns ``by`` (NaN keys kept as a group of their own; NaN values skipped; ``std``
    and ``ci95`` NaN for one replicate)."""
    if by:
        stats = (
            frame.groupby(list(by), dropna=False, sort=True)[value]
            .agg(["mean", "std", "min", "max", "count"])
            .reset_index()
        )
    else:
        stats = pd.DataFrame([frame[value].agg(["mean", "std", "min", "max", "count"]).to_dict()])
    quantile = student_t.ppf(0.975, stats["count"].to_numpy(dtype=float) - 1)
    return stats.assign(ci95=quantile * stats["std"] / np.sqrt(stats["count"]))


def readable(key: str) -> str:
    """The name of a swept key in a label: ``"data.label_noise"`` -> ``"label noise p"``."""
    return KEY_NAMES.get(key, key)


def format_value(value: Any) -> str:
    """A swept value in a label: ``0.25``, ``0.0005``, ``1e-05``, ``none``."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "none"
    return f"{value:g}" if isinstance(value, (int, float, np.number)) else str(value)


def key_values_label(keys: Sequence[str], values: Sequence[Any]) -> str:
    """``"depth L = 4, label noise p = 0.25"`` (empty without keys): the name of a group of runs."""
    return ", ".join(
        f"{readable(key)} = {format_value(value)}" for key, value in zip(keys, values, strict=True)
    )


def by_keys(keys: Sequence[str]) -> str:
    """The file-name suffix naming swept keys: ``"_by_depth_and_label_noise"``; ``""`` without keys."""
    return "_by_" + "_and_".join(key.rsplit(".", 1)[-1] for key in keys) if keys else ""


def group_colour(index: int, count: int) -> Any:
    """The ``index``-th of ``count`` well-separated colours (the pale end of plasma left out)."""
    return GROUP_COLOURS(0.85 * index / max(count - 1, 1))


def curve_styles(curves: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """``color`` and ``linestyle`` of each curve, named by its values of the grouping keys: the
    last key's value picks the colour (:func:`group_colour`), the other keys' values the line
    style, so that the curves of a sweep over two keys differ in something a reader can see."""
    colours = list(dict.fromkeys(curve[-1:] for curve in curves))
    styles = list(dict.fromkeys(curve[:-1] for curve in curves))
    return [
        {
            "color": group_colour(colours.index(curve[-1:]), len(colours)),
            "linestyle": LINE_STYLES[styles.index(curve[:-1]) % len(LINE_STYLES)],
        }
        for curve in curves
    ]


def layer_colours(count: int) -> list[Any]:
    """The colours of layers ``1..count`` (the pale end of viridis left out)."""
    return [LAYER_COLOURS(0.9 * index / max(count - 1, 1)) for index in range(count)]


def layer_colourbar(figure: Figure, axes: Any, count: int) -> None:
    """A discrete colourbar of :func:`layer_colours` beside ``axes`` (an ``Axes`` or an array of
    them), as thin for many rows as for one: one block per layer, integer ticks (every layer, or a
    readable subset of a deep network)."""
    norm = BoundaryNorm(np.arange(0.5, count + 1), count)
    rows = np.atleast_2d(axes).shape[0]
    colourbar = figure.colorbar(
        ScalarMappable(norm, ListedColormap(layer_colours(count))),
        ax=axes,
        pad=0.01,
        aspect=20 * rows,
        label="layer (1 = first)",
    )
    ticks = MaxNLocator(nbins=10, integer=True).tick_values(1, count)
    colourbar.set_ticks([tick for tick in ticks if 1 <= tick <= count])


def subplots(rows: int, columns: int, sharey: bool = False) -> tuple[Figure, Any]:
    """A constrained-layout ``Figure`` with a ``rows x columns`` array of axes of :data:`PANEL_SIZE`."""
    figure = Figure(figsize=(PANEL_SIZE[0] * columns + 1.0, PANEL_SIZE[1] * rows + 0.9), layout="constrained")
    return figure, figure.subplots(rows, columns, squeeze=False, sharey=sharey)


def band(
    ax: Axes,
    curve: pd.DataFrame,
    x: str,
    color: Any,
    linestyle: str = "-",
    label: str | None = None,
    floor: float | None = None,
) -> None:
    """Mean line and min-max band over the seeds of ``curve`` (from :func:`seed_mean`) against its
    integer column ``x`` in ``color`` and ``linestyle`` (matplotlib's names, as :func:`curve_styles`
    gives them), raised to ``floor`` when given (:func:`zero_floor`). The band is the seeds' range,
    not mean ± std: these curves are drawn on log axes, where a lower edge below zero would be
    clipped to the floor and read as a measurement."""
    curve = curve.sort_values(x)
    mean, low, high = curve["mean"], curve["min"], curve["max"]
    if floor is not None:
        mean, low, high = mean.clip(lower=floor), low.clip(lower=floor), high.clip(lower=floor)
    ax.plot(curve[x], mean, marker="o", markersize=2.5, color=color, linestyle=linestyle, label=label or None)
    ax.fill_between(curve[x], low, high, color=color, alpha=0.15, linewidth=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    ax.grid(alpha=0.3)


def spread_handle(
    counts: pd.Series, error_bar: bool = False, colour: Any = "0.5", std_band: bool = False
) -> Artist:
    """A legend entry saying what the bands (the seeds' range, or one std with ``std_band``) or error
    bars (95 % t-interval of the mean) are, over how many seeds (``counts``: the replicates of each
    point)."""
    counts = counts[counts > 0]
    if counts.empty or counts.max() <= 1:
        return Patch(facecolor="none", edgecolor="none", label="one seed per point: no spread")
    low, high = int(counts.min()), int(counts.max())
    seeds = f"{high} seeds" if low == high else f"{low}–{high} seeds"
    if error_bar:
        return Line2D(
            [],
            [],
            color="0.3",
            marker="|",
            markersize=10,
            linestyle="none",
            label=f"95 % t-interval of the mean over {seeds}",
        )
    spread = "mean ± 1 std" if std_band else "min–max"
    return Patch(facecolor=colour, alpha=0.3, label=f"line: mean, band: {spread} over {seeds}")


def zero_floor(values: Any) -> float | None:
    """Where a log axis draws 0: the power of ten at or below half the smallest positive value
    (``1e-3`` when none is positive); ``None`` when every value is positive (NaN skipped)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if (values > 0).all():
        return None
    positive = values[values > 0]
    smallest = positive.min() if positive.size else 2e-3
    return float(10.0 ** np.floor(np.log10(smallest / 2)))


def log_axis(ax: Axes, floor: float | None) -> None:
    """Log scale on the y axis of ``ax``, ticks in plain numbers (``0.01``; ``0.2`` and ``0.5``
    too when the axis spans less than :data:`SHORT_LOG_AXIS` decades, 2, 3, 4, 6, 8 below one);
    with a ``floor``, the axis starts just below it (:data:`FLOOR_MARGIN`) and labels it ``0``."""
    ax.set_yscale("log")
    if floor is not None:
        ax.set_ylim(bottom=floor / FLOOR_MARGIN)

    def major(y: float, position: int) -> str:
        return "0" if floor is not None and np.isclose(y, floor) else f"{y:g}"

    def minor(y: float, position: int) -> str:
        low, high = ax.get_ylim()
        decades = np.log10(high / low)
        labelled = (2, 5) if decades >= 1 else (2, 3, 4, 6, 8)
        mantissa = round(y / 10 ** np.floor(np.log10(y)))
        return f"{y:g}" if decades < SHORT_LOG_AXIS and mantissa in labelled else ""

    ax.yaxis.set_major_formatter(FuncFormatter(major))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def threshold_lines(ax: Axes, eps: Sequence[float], labelled: bool = True) -> None:
    """Dashed lines at the thresholds ``eps`` on the y axis of ``ax``, labelled ``ε = …`` on its
    right edge (when ``labelled``); the y limits grow to show every line."""
    if not eps:
        return
    for threshold in eps:
        ax.axhline(threshold, color=THRESHOLD_COLOUR, linestyle=THRESHOLD_STYLE, linewidth=0.8, zorder=1)
    low, high = ax.get_ylim()
    ax.set_ylim(min(low, min(eps) / 2), max(high, max(eps) * 2))
    if labelled:
        right = ax.secondary_yaxis("right")
        right.set_yticks(list(eps), [f"ε = {threshold:g}" for threshold in eps])
        right.tick_params(which="both", length=0, labelsize=7, labelcolor=THRESHOLD_COLOUR)
        right.yaxis.set_minor_formatter(NullFormatter())


def threshold_handle() -> Artist:
    """The legend entry of :func:`threshold_lines`."""
    return Line2D(
        [],
        [],
        color=THRESHOLD_COLOUR,
        linestyle=THRESHOLD_STYLE,
        linewidth=0.8,
        label="ε: effective-depth thresholds",
    )


def value_axis(ax: Axes, values: Sequence[Any]) -> dict[Any, float]:
    """Put the sorted distinct ``values`` of a swept key on the x axis of ``ax``, one tick each:
    at their own positions when evenly spaced, else evenly spaced (``0, 1, 2, ...``) and labelled
    with their values. Returns ``{value: position}``."""
    ordered = sorted(set(values))
    steps = np.diff(np.asarray(ordered, dtype=float))
    even = len(steps) < 2 or np.allclose(steps, steps[0])
    positions = [float(value) for value in ordered] if even else [float(i) for i in range(len(ordered))]
    ax.set_xticks(positions, [format_value(value) for value in ordered])
    margin = 0.12 * ((positions[-1] - positions[0]) or 1.0)
    ax.set_xlim(positions[0] - margin, positions[-1] + margin)
    return dict(zip(ordered, positions, strict=True))


def save_figure(figure: Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Write ``figure`` as ``out_dir/NAME.png`` and ``NAME.pdf`` (each atomically); returns the paths."""
    paths = []
    for suffix in FIGURE_SUFFIXES:
        image = io.BytesIO()
        figure.savefig(image, format=suffix.removeprefix("."), dpi=DPI)
        paths.append(Path(out_dir) / f"{name}{suffix}")
        atomic_write(paths[-1], image.getvalue())
    return paths
