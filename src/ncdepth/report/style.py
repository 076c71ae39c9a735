"""How every ncdepth figure looks: page size, fonts, names, colours, spreads, log axes with zero,
thresholds, files.

Figures are built with matplotlib's object API (``Figure``, no ``pyplot``): nothing depends on
or changes the interactive backend, and they render headless (Agg for PNG, the PDF backend).

* **Size.** Every figure fits a two-column page at print size: at most :data:`PAGE_WIDTH` (7.2 in)
  wide and :data:`MAX_HEIGHT` (9 in) tall; a single panel is :data:`PANEL_WIDTH` (3.5 in, one
  column) wide. Panels are laid out in a grid of at most :data:`MAX_COLUMNS` columns, never one long
  row (:func:`grid_figure`, the only place a figure size is computed); the legend goes below the
  panels and the figure grows by its rows (:func:`legend_below`).
* **Fonts** are set by role (:data:`FONT_SIZES`) when a figure is saved (:func:`page_fonts`), none
  below :data:`MIN_FONT` (7 pt): at these sizes a figure is printed at 100 %, so points are points.

* **Swept keys** read as words (:data:`KEY_NAMES`: ``data.label_noise`` is "label noise p"); a
  file name follows a key's last component (``ncc_train_error_by_label_noise``).
* **Seeds.** Runs that share every grouping key are replicates (:func:`seed_mean`). Curves over
  epochs or layers show their mean and a band from the lowest to the highest seed (how much seeds
  vary; a range stays meaningful on the log axes these curves use); final values against a swept key show their mean and an error bar of its 95 % Student-t
  interval (how well the mean is known). Neither for a single seed; every legend says which
  (:func:`spread_handle`).
* **Zero on a log axis.** Errors and rates that reach 0 (an NCC train error of 0, NC4) are drawn
  at a *floor*, the power of ten at or below half the smallest positive value drawn (thresholds
  included), just above the axis' bottom edge: a dotted line marks it, its tick is left unlabelled
  (no fake ``0`` on a log scale) and the legend says what it means (:func:`zero_floor`,
  :func:`log_axis`, :func:`floor_handle`).
* **Seeds.** Every legend says over how many seeds a mean is taken; where a mean over seeds is drawn
  as a point with an error bar, each seed is drawn beside it as a small dot (:func:`seed_points`).
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
PAGE_WIDTH = 7.2
"""Inches: the text width of a two-column page, the widest a figure may be."""
MAX_HEIGHT = 9.0
"""Inches: the tallest a figure may be (a page less its caption)."""
PANEL_WIDTH = 3.5
"""Inches: the width of a one-panel figure (one column of a two-column page)."""
PANEL_ASPECT = 0.78
"""Height over width of a panel (the axes with their tick labels)."""
ROW_HEIGHT = (1.75, 2.6)
"""Inches: the least and most height of a row of panels."""
MAX_COLUMNS = 3
"""The most panels side by side; more panels wrap into rows."""
TITLE_HEIGHT = 0.3
"""Inches above the panels for the figure's title (one line)."""
LEGEND_LINE = 0.17
"""Inches per row of a legend below the panels."""
LEGEND_ENTRY_WIDTH = 2.35
"""Inches per legend column: a 7.2 in figure has three, a one-panel figure one."""
MIN_FONT = 7.0
"""Points: no text of a figure is smaller."""
FONT_SIZES = {"suptitle": 9.0, "title": 8.0, "label": 8.0, "tick": 7.0, "legend": 7.0}
"""Points per role of a text (figure title, panel title, axis label, tick label, legend); none below
:data:`MIN_FONT`."""
LAYER_COLOURS = colormaps["viridis"]
GROUP_COLOURS = colormaps["plasma"]
LINE_STYLES = ("-", "--", ":", "-.")
FLOOR_MARGIN = 1.5
"""The bottom of a log axis with a floor is this factor below it, so that points at 0 show."""
SHORT_LOG_AXIS = 3.0
"""Decades below which a log axis labels its minor ticks at 2 and 5 as well."""
THRESHOLD_COLOUR = "0.35"
THRESHOLD_STYLE = (0, (4, 3))
FLOOR_COLOUR = "0.55"
FLOOR_STYLE = ":"
SEED_POINT = {"marker": ".", "markersize": 4, "alpha": 0.55, "linestyle": "none"}
"""How one seed's value is drawn beside the mean over seeds (:func:`seed_points`)."""
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


def layer_colourbar(figure: Figure, axes: Any, count: int, label: str = "layer (1 = first)") -> None:
    """A discrete colourbar of :func:`layer_colours` beside ``axes`` (an ``Axes`` or an array of
    them), as thin for many rows as for one: one block per layer, integer ticks (every layer, or a
    readable subset of a deep network), titled ``label``."""
    norm = BoundaryNorm(np.arange(0.5, count + 1), count)
    rows = np.atleast_2d(axes).shape[0]
    colourbar = figure.colorbar(
        ScalarMappable(norm, ListedColormap(layer_colours(count))),
        ax=axes,
        pad=0.01,
        aspect=20 * rows,
        label=label,
    )
    ticks = MaxNLocator(nbins=10, integer=True).tick_values(1, count)
    colourbar.set_ticks([tick for tick in ticks if 1 <= tick <= count])


def grid_shape(panels: int, columns: int | None = None) -> tuple[int, int]:
    """``(rows, columns)`` of a grid of ``panels`` panels: ``columns`` when given and at most
    :data:`MAX_COLUMNS`, else the fewest rows of at most :data:`MAX_COLUMNS` columns, filled evenly
    (4 panels: 2 x 2; 5: 2 x 3; 8: 3 x 3)."""
    panels = max(int(panels), 1)
    if columns is None or not 1 <= columns <= MAX_COLUMNS:
        rows = -(-panels // MAX_COLUMNS)
        columns = -(-panels // rows)
    return -(-panels // columns), min(columns, panels)


def grid_figure(
    panels: int,
    columns: int | None = None,
    sharex: bool = False,
    sharey: bool = False,
    title: bool = True,
) -> tuple[Figure, Any]:
    """A constrained-layout ``Figure`` of ``panels`` panels in the grid of :func:`grid_shape` and its
    ``rows x columns`` array of axes (the cells past ``panels`` hidden; ``flat_axes`` lists the
    others in reading order). One column is :data:`PANEL_WIDTH` wide, more fill :data:`PAGE_WIDTH`;
    each row is :data:`PANEL_ASPECT` of a panel's width high (within :data:`ROW_HEIGHT`), less when
    the rows would pass :data:`MAX_HEIGHT`, with :data:`TITLE_HEIGHT` above them for a title."""
    rows, columns = grid_shape(panels, columns)
    width = PANEL_WIDTH if columns == 1 else PAGE_WIDTH
    row = min(max(PANEL_ASPECT * width / columns, ROW_HEIGHT[0]), ROW_HEIGHT[1])
    header = TITLE_HEIGHT if title else 0.05
    row = min(row, (MAX_HEIGHT - header - 3 * LEGEND_LINE) / rows)
    figure = Figure(figsize=(width, rows * row + header), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False, sharex=sharex, sharey=sharey)
    for index, ax in enumerate(axes.flat):
        ax.set_visible(index < panels)
    return figure, axes


def flat_axes(axes: Any) -> list[Axes]:
    """The visible axes of a :func:`grid_figure`, in reading order."""
    return [ax for ax in np.asarray(axes).flat if ax.get_visible()]


def legend_below(figure: Figure, handles: Sequence[Artist], columns: int | None = None) -> Any:
    """One legend of ``handles`` below the panels of ``figure``, in as many columns as its width
    holds (:data:`LEGEND_ENTRY_WIDTH`, or ``columns``); the figure grows by the legend's rows, up to
    :data:`MAX_HEIGHT`."""
    width, height = figure.get_size_inches()
    if columns is None:
        columns = max(1, int(width // LEGEND_ENTRY_WIDTH))
    columns = max(1, min(columns, len(handles)))
    lines = sum(
        max(str(handle.get_label()).count("\n") + 1 for handle in handles[start : start + columns])
        for start in range(0, len(handles), columns)
    )
    figure.set_size_inches(width, min(height + lines * LEGEND_LINE + 0.12, MAX_HEIGHT))
    return figure.legend(
        handles=list(handles), loc="outside lower center", ncol=columns, fontsize=FONT_SIZES["legend"]
    )


def page_fonts(figure: Figure) -> Figure:
    """Set every text of ``figure`` to its role's size in :data:`FONT_SIZES` (figure and panel titles,
    axis labels, tick labels of every axes, colourbars and secondary axes included, legends), so that
    none is below :data:`MIN_FONT`; returns ``figure``. :func:`save_figure` calls it."""
    suptitle = getattr(figure, "_suptitle", None)  # matplotlib has no public getter of the Text
    if suptitle is not None:
        suptitle.set_fontsize(FONT_SIZES["suptitle"])
    for ax in [*figure.axes, *(child for parent in figure.axes for child in parent.child_axes)]:
        ax.title.set_fontsize(FONT_SIZES["title"])
        ax.xaxis.label.set_fontsize(FONT_SIZES["label"])
        ax.yaxis.label.set_fontsize(FONT_SIZES["label"])
        ax.tick_params(which="both", labelsize=FONT_SIZES["tick"])
        for text in ax.texts:
            text.set_fontsize(max(text.get_fontsize(), MIN_FONT))
        if ax.get_legend() is not None:
            for text in ax.get_legend().get_texts():
                text.set_fontsize(FONT_SIZES["legend"])
    for legend in figure.legends:
        for text in legend.get_texts():
            text.set_fontsize(FONT_SIZES["legend"])
        if legend.get_title().get_text():
            legend.get_title().set_fontsize(FONT_SIZES["legend"])
    for text in figure.texts:
        text.set_fontsize(max(text.get_fontsize(), MIN_FONT))
    return figure


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
    if counts.empty:
        return Patch(facecolor="none", edgecolor="none", label="no run to average: no point drawn")
    if counts.max() <= 1:
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
    with a ``floor``, the axis starts just below it (:data:`FLOOR_MARGIN`), a dotted line marks it
    and its tick is left unlabelled (a log axis has no 0: :func:`floor_handle` says what the line is)."""
    ax.set_yscale("log")
    if floor is not None:
        ax.set_ylim(bottom=floor / FLOOR_MARGIN)
        ax.axhline(floor, color=FLOOR_COLOUR, linestyle=FLOOR_STYLE, linewidth=0.9, zorder=1)

    def major(y: float, position: int) -> str:
        return "" if floor is not None and np.isclose(y, floor) else f"{y:g}"

    def minor(y: float, position: int) -> str:
        low, high = ax.get_ylim()
        decades = np.log10(high / low)
        labelled = (2, 5) if decades >= 1 else (2, 3, 4, 6, 8)
        mantissa = round(y / 10 ** np.floor(np.log10(y)))
        return f"{y:g}" if decades < SHORT_LOG_AXIS and mantissa in labelled else ""

    ax.yaxis.set_major_formatter(FuncFormatter(major))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def floor_handle(floors: Sequence[float | None] = ()) -> list[Artist]:
    """The legend entry of the zero floor of :func:`log_axis`, as a list: empty when no floor in
    ``floors`` was drawn."""
    drawn = sorted({floor for floor in floors if floor is not None})
    if not drawn:
        return []
    at = f" (drawn at {', '.join(f'{floor:g}' for floor in drawn)})" if len(drawn) == 1 else ""
    return [
        Line2D(
            [],
            [],
            color=FLOOR_COLOUR,
            linestyle=FLOOR_STYLE,
            linewidth=0.9,
            label=f"dotted floor: a value of 0{at}",
        )
    ]


def seed_points(ax: Axes, x: Any, values: Any, color: Any) -> None:
    """Each seed's value (``values`` at ``x``) as a small dot beside a mean over seeds
    (:data:`SEED_POINT`)."""
    ax.plot(x, values, color=color, **SEED_POINT)


def seed_handle() -> Artist:
    """The legend entry of :func:`seed_points`."""
    return Line2D([], [], color="0.3", **SEED_POINT, label="dots: individual seeds")


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
        right.tick_params(which="both", length=0, labelsize=FONT_SIZES["tick"], labelcolor=THRESHOLD_COLOUR)
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


def image_size_inches(path: str | Path) -> tuple[float, float]:
    """Width and height in inches of a PNG that :func:`save_figure` wrote (its pixels at :data:`DPI`)."""
    from PIL import Image  # matplotlib's own dependency

    with Image.open(path) as image:
        width, height = image.size
    return width / DPI, height / DPI


def fits_page(width: float, height: float) -> bool:
    """Whether a figure of ``width x height`` inches fits the page (:data:`PAGE_WIDTH`, :data:`MAX_HEIGHT`;
    a pixel of rounding allowed)."""
    return width <= PAGE_WIDTH + 1 / DPI and height <= MAX_HEIGHT + 1 / DPI


def save_figure(figure: Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Write ``figure`` as ``out_dir/NAME.png`` and ``NAME.pdf`` (each atomically), its texts at
    :func:`page_fonts`; returns the paths."""
    page_fonts(figure)
    paths = []
    for suffix in FIGURE_SUFFIXES:
        image = io.BytesIO()
        figure.savefig(image, format=suffix.removeprefix("."), dpi=DPI)
        paths.append(Path(out_dir) / f"{name}{suffix}")
        atomic_write(paths[-1], image.getvalue())
    return paths
