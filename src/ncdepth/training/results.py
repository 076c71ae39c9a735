"""A run's result files: the tidy ``metrics.csv``, the NCC figure, the layer table.

``metrics.csv`` (:data:`ncdepth.rundir.METRIC_COLUMNS`, ``\n`` line endings) has one row per
measured number; ``epoch`` counts completed training epochs (0 = at initialisation). Rows are
appended, flushed and fsynced after every analysis, so a crash keeps everything measured before it;
a resumed run cuts the file back to its length at the checkpoint it resumes from, dropping only
the rows it is about to measure again.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from rich.table import Table

from ncdepth.rundir import METRIC_COLUMNS, atomic_write

SplitResults = Mapping[str, Mapping[str, Mapping[str, float]]]
"""``{split: {layer: {metric: value}}}``: one analysis."""


class TidyTable:
    """The append-only ``metrics.csv`` of a run (columns :data:`METRIC_COLUMNS`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def size(self) -> int:
        """The file's length in bytes (0 when there is no file yet)."""
        return self.path.stat().st_size if self.path.exists() else 0

    def cut(self, size: int) -> None:
        """Cut the file back to its first ``size`` bytes: the rows a resumed run appended after
        the checkpoint it resumes from, which it measures again."""
        if self.size() > size:
            os.truncate(self.path, size)

    def append(self, epoch: int, results: SplitResults) -> None:
        """Append the rows of one analysis at ``epoch``, flushed and fsynced."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_header = self.size() == 0
        with self.path.open("a", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            if write_header:
                writer.writerow(METRIC_COLUMNS)
            for split, layers in results.items():
                for layer, metrics in layers.items():
                    for metric, value in metrics.items():
                        writer.writerow((epoch, split, layer, metric, repr(float(value))))
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> pd.DataFrame:
        """The table as a DataFrame (empty, with :data:`METRIC_COLUMNS`, when there is no file yet)."""
        if not self.path.exists():
            return pd.DataFrame(columns=list(METRIC_COLUMNS))
        return pd.read_csv(self.path)


def plot_ncc_train_accuracy(table: pd.DataFrame, path: str | Path) -> None:
    """NCC accuracy on the train split vs epoch, one line per layer (Galanti et al. 2023, Fig. 1)."""
    rows = table[(table["split"] == "train") & (table["metric"] == "ncc_acc")]
    layers = list(dict.fromkeys(rows["layer"]))
    figure = Figure(figsize=(6.0, 4.0), layout="tight")  # matplotlib's object API: no pyplot state
    axes = figure.subplots()
    colours = colormaps["viridis"]
    for index, layer in enumerate(layers):
        series = rows[rows["layer"] == layer].sort_values("epoch")
        colour = colours(index / max(len(layers) - 1, 1))
        axes.plot(series["epoch"], series["value"], marker="o", markersize=3, color=colour, label=layer)
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("NCC train accuracy")
    axes.set_ylim(0.0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", ncol=2 if len(layers) > 8 else 1)
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=120)
    atomic_write(path, image.getvalue())


def layer_table(results: SplitResults, effective_depth: Mapping[float, int | None], epoch: int) -> Table:
    """Per-layer NCC train and test accuracy, CDNV and NC1 at ``epoch``, effective depth below."""
    train, test = results["train"], results.get("test", {})
    table = Table(title=f"Neural collapse per layer, epoch {epoch}")
    for column in ("layer", "NCC train acc", "NCC test acc", "CDNV", "NC1"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for layer, metrics in train.items():
        test_acc = test.get(layer, {}).get("ncc_acc", math.nan)
        table.add_row(
            layer,
            f"{metrics['ncc_acc']:.4f}",
            f"{test_acc:.4f}",
            f"{metrics['cdnv']:.4g}",
            f"{metrics['nc1']:.4g}",
        )
    depths = ", ".join(
        f"eps={eps:g}: {'none' if depth is None else depth}" for eps, depth in effective_depth.items()
    )
    table.caption = f"effective depth (of {len(train)} layers): {depths}"
    return table
