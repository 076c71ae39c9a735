"""A run's result files: the tidy ``metrics.csv``, the NCC train error figure, the layer table.

``metrics.csv`` (:data:`ncdepth.rundir.METRIC_COLUMNS`, ``\n`` line endings) has one row per
measured number; ``epoch`` counts completed training epochs (0 = at initialisation). Rows are
appended, flushed and fsynced after every analysis, so a crash keeps everything measured before it;
a resumed run cuts the file back to its length at the checkpoint it resumes from, dropping only
the rows it is about to measure again.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from rich.table import Table

from ncdepth.metrics.generalized import separation_law
from ncdepth.report.style import (
    FONT_SIZES,
    band,
    floor_handle,
    layer_colourbar,
    layer_colours,
    log_axis,
    threshold_lines,
    zero_floor,
)
from ncdepth.rundir import METRIC_COLUMNS

NCC_FIGURE = "ncc_train_error"
"""The run's figure, ``figures/ncc_train_error.png`` and ``.pdf``."""
MODEL_TITLE_KEYS = {"depth": "depth", "width": "width", "depth_linear": "linear head"}

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


def ncc_train_error_figure(table: pd.DataFrame, eps: Sequence[float], config: Mapping[str, Any]) -> Figure:
    """The run's figure (:data:`NCC_FIGURE`) from its ``metrics.csv`` ``table``: the NCC train
    error ``1 - ncc_acc`` of every layer vs epoch on a log axis (an error of 0 drawn at a dotted
    floor just above the bottom edge, which a legend explains: :func:`ncdepth.report.style.zero_floor`),
    dashed lines at the effective-depth thresholds ``eps``, layers coloured by index, titled with
    the run's :func:`run_title` of its resolved ``config``."""
    rows = table[(table["split"] == "train") & (table["metric"] == "ncc_acc")]
    layers = list(dict.fromkeys(rows["layer"]))
    error = 1.0 - rows["value"]
    errors = rows.assign(mean=error, min=error, max=error)  # one run: the band is the line
    floor = zero_floor([*errors["mean"], *eps])
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")  # matplotlib's object API: no pyplot state
    axes = figure.subplots()
    for colour, layer in zip(layer_colours(len(layers)), layers, strict=True):
        band(axes, errors[errors["layer"] == layer], "epoch", color=colour, floor=floor)
    log_axis(axes, floor)
    axes.set_ylim(top=1.5)
    threshold_lines(axes, eps)
    axes.set(xlabel="epoch", ylabel="NCC train error")
    if floor is not None:
        axes.legend(handles=floor_handle([floor]), loc="lower left", fontsize=FONT_SIZES["legend"])
    layer_colourbar(figure, axes, len(layers))
    figure.suptitle(
        "\n".join(line for line in ("NCC train error per layer", run_title(config)) if line), fontsize=10
    )
    return figure


def separation_laws(results: SplitResults) -> dict[str, dict[str, float]]:
    """``{split: He & Su's fit of log fuzziness over the layers}`` (:func:`ncdepth.metrics.generalized.
    separation_law`: ``slope``, ``intercept``, ``r2``, ``ratio``, ``layers``) for every split whose layers
    report ``fuzziness``, layers in measured order; ``summary.json`` holds it as ``separation_law``."""
    return {
        split: separation_law([metrics["fuzziness"] for metrics in layers.values()])
        for split, layers in results.items()
        if layers and all("fuzziness" in metrics for metrics in layers.values())
    }


def run_title(config: Mapping[str, Any]) -> str:
    """What names a run in a title, from what its resolved config holds:
    ``"MLP, depth 6, width 256, digits, label noise 0.25, seed 1"``."""
    model, data = config.get("model") or {}, config.get("data") or {}
    parts = [str(model.get("_target_", "")).rsplit(".", 1)[-1]]
    parts += [f"{name} {model[key]}" for key, name in MODEL_TITLE_KEYS.items() if model.get(key)]
    parts.append(str(data.get("dataset") or ""))
    if data.get("label_noise"):
        parts.append(f"label noise {data['label_noise']:g}")
    if data.get("class_counts"):
        parts.append(f"class sizes {min(data['class_counts'])}–{max(data['class_counts'])}")
    elif data.get("imbalance"):
        parts.append(f"{data['imbalance']} imbalance {data['imbalance_ratio']:g}")
    if "seed" in config:
        parts.append(f"seed {config['seed']}")
    return ", ".join(part for part in parts if part)


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
