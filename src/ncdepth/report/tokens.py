"""Report of an ``ncdepth-lm`` sweep: token-level collapse per block over training, by model width.

``token_collapse.csv``, one row per finished run, analysed epoch and measured layer of the train split:
``run, width, depth, min_class_count, seed, epoch, layer`` and ``cdnv`` (the mean class-distance normalised variance of
the next-token classes present; the variability measure to read when the classes outnumber the
dimensions, docs/metrics.md), ``nc2_equinorm``, ``ncc_acc``, ``num_classes_present``, and, at the
classifier's layer ``ln_f``, ``nc3`` and ``nc4``.

``figures/token_collapse.png`` / ``.pdf`` (one grid at most 7.2 in wide): ``cdnv`` of ``ln_f`` against
epoch (log scale), the final ``cdnv`` of every block against depth, and ``nc4`` of ``ln_f`` against epoch; one
colour per model (width and depth), lines the means over seeds, dots the seeds.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ncdepth.models.causal_lm import CLASSIFIER_LAYER
from ncdepth.report.collect import Sweep
from ncdepth.report.style import (
    NothingToPlot,
    flat_axes,
    grid_figure,
    group_colour,
    legend_below,
    log_axis,
    save_figure,
    seed_handle,
    seed_mean,
    seed_points,
)
from ncdepth.rundir import FINISHED

REPORT_FILE = "token_collapse.csv"
FIGURE_STEM = "token_collapse"
FIGURES_SUBDIR = "figures"
METRICS = ("cdnv", "nc2_equinorm", "ncc_acc", "num_classes_present", "nc3", "nc4")
KEYS = ("width", "depth", "min_class_count", "seed")
MODEL = ("width", "depth")
"""The keys that tell one model from another: one colour each in the figure."""


def token_table(sweep: Sweep) -> pd.DataFrame:
    """The rows of ``token_collapse.csv`` (module docstring) of the finished runs."""
    frames = []
    for run in sweep.runs:
        if run.status != FINISHED or run.metrics is None:
            continue
        train = run.metrics[(run.metrics["split"] == "train") & run.metrics["metric"].isin(METRICS)]
        wide = train.pivot_table(index=["epoch", "layer"], columns="metric", values="value").reset_index()
        frames.append(wide.assign(run=run.name, **{key: run.config[key] for key in KEYS}))
    columns = ["run", *KEYS, "epoch", "layer", *METRICS]
    if not frames:
        return pd.DataFrame(columns=columns)
    table = pd.concat(frames, ignore_index=True).reindex(columns=columns)
    depth_order = table["layer"].map(_layers(table).index).rename("depth_order")
    ordered = table.assign(depth_order=depth_order).sort_values([*MODEL, "seed", "epoch", "depth_order"])
    return ordered.drop(columns="depth_order").reset_index(drop=True)


def _layers(table: pd.DataFrame) -> list[str]:
    """The measured layers in depth order: ``blocks.0, blocks.1, ..., ln_f``."""
    blocks = [layer for layer in table["layer"].unique() if layer != CLASSIFIER_LAYER]
    blocks.sort(key=lambda name: int(name.split(".")[1]))
    return [*blocks, CLASSIFIER_LAYER]


def token_figure(table: pd.DataFrame) -> Figure:
    """The figure of the module docstring; raises :class:`NothingToPlot` without finished runs."""
    if table.empty:
        raise NothingToPlot("no finished run")
    layers = _layers(table)
    final = table[table["epoch"] == table.groupby("run")["epoch"].transform("max")]
    top = table[table["layer"] == CLASSIFIER_LAYER]
    models = table.groupby(list(MODEL))["seed"].nunique()  # seeds per (width, depth)
    figure, axes = grid_figure(3, columns=3)
    over_epochs, over_depth, agreement = flat_axes(axes)
    handles = []
    for index, ((width, depth), seeds) in enumerate(models.items()):
        colour = group_colour(index, len(models))
        for ax, metric in ((over_epochs, "cdnv"), (agreement, "nc4")):
            rows = top[(top["width"] == width) & (top["depth"] == depth)]
            means = seed_mean(rows, ["epoch"], metric)
            ax.plot(means["epoch"], means["mean"], color=colour, marker="o", markersize=3)
            seed_points(ax, rows["epoch"], rows[metric], colour)
        rows = final[(final["width"] == width) & (final["depth"] == depth)]
        rows = rows.assign(position=rows["layer"].map(layers.index))
        means = seed_mean(rows, ["position"], "cdnv")
        over_depth.plot(means["position"], means["mean"], color=colour, marker="o", markersize=3)
        seed_points(over_depth, rows["position"], rows["cdnv"], colour)
        label = f"width {width}, {depth} blocks (mean of {seeds} seeds)"
        handles.append(Line2D([], [], color=colour, marker="o", markersize=3, label=label))
    over_epochs.set(title="ln_f: CDNV over training", xlabel="epoch", ylabel="CDNV (train tokens)")
    agreement.set(title="ln_f: NC4 over training", xlabel="epoch", ylabel="NC4: network ≠ NCC")
    over_depth.set(title="CDNV per block, last epoch", xlabel="layer", ylabel="CDNV (train tokens)")
    over_depth.set_xticks(range(len(layers)), [layer.replace("blocks.", "block ") for layer in layers])
    log_axis(over_epochs, None)  # initialisation is far above the rest; the last epoch's blocks are close
    figure.suptitle("Token-level collapse of a causal LM on Python's topic help (classes: next tokens)")
    legend_below(figure, [*handles, seed_handle()])
    return figure


def write_token_report(sweep: Sweep, out: Path) -> list[Path]:
    """Write ``token_collapse.csv`` and the figure (when there is a finished run) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    table = token_table(sweep)
    written = [out / REPORT_FILE]
    table.to_csv(written[0], index=False)
    try:
        figure = token_figure(table)
    except NothingToPlot as reason:
        print(f"  skipped figure {FIGURE_STEM}: {reason}")
        return written
    return [*written, *save_figure(figure, out / FIGURES_SUBDIR, FIGURE_STEM)]
