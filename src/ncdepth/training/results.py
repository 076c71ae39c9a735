"""A run's result files: the tidy ``metrics.csv``, ``summary.json``, the NCC figure, the layer table.

``metrics.csv`` has one row per measured number, columns ``epoch, split, layer, metric, value``;
``epoch`` counts completed training epochs (0 = at initialisation). Rows are appended and the file
closed after every analysis, so a crash keeps everything measured before it.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot loads)
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from rich.table import Table  # noqa: E402

COLUMNS = ("epoch", "split", "layer", "metric", "value")

SplitResults = Mapping[str, Mapping[str, Mapping[str, float]]]
"""``{split: {layer: {metric: value}}}``: one analysis."""


class TidyTable:
    """The append-only ``metrics.csv`` of a run (columns :data:`COLUMNS`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def truncate(self, from_epoch: int) -> None:
        """Drop every row with ``epoch >= from_epoch`` (all rows for ``from_epoch <= 0``), so a
        resumed run that re-measures those epochs never duplicates a row."""
        if not self.path.exists():
            return
        table = self.read()
        table[table["epoch"] < from_epoch].to_csv(self.path, index=False)

    def append(self, epoch: int, results: SplitResults) -> None:
        """Append the rows of one analysis at ``epoch`` and close the file (flushing it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_header = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if write_header:
                writer.writerow(COLUMNS)
            for split, layers in results.items():
                for layer, metrics in layers.items():
                    for metric, value in metrics.items():
                        writer.writerow((epoch, split, layer, metric, repr(float(value))))

    def read(self) -> pd.DataFrame:
        """The table as a DataFrame (empty, with :data:`COLUMNS`, when there is no file yet)."""
        if not self.path.exists():
            return pd.DataFrame(columns=list(COLUMNS))
        return pd.read_csv(self.path)


def write_summary(path: str | Path, summary: Mapping[str, Any]) -> None:
    """Write ``summary`` as indented JSON; non-finite floats become ``null`` (valid JSON)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(summary), indent=2) + "\n")


def plot_ncc_train_accuracy(table: pd.DataFrame, path: str | Path) -> None:
    """NCC accuracy on the train split vs epoch, one line per layer (Galanti et al. 2023, Fig. 1)."""
    rows = table[(table["split"] == "train") & (table["metric"] == "ncc_acc")]
    layers = list(dict.fromkeys(rows["layer"]))
    figure, axes = plt.subplots(figsize=(6.0, 4.0))
    colours = plt.get_cmap("viridis")
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
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


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


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(key): _finite(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_finite(item) for item in value]
    return value
