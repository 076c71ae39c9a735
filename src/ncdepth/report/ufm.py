"""Report of an ``ncdepth-ufm`` sweep: measured geometry beside the closed form, and convergence.

The jobs and their states are the sweep's (:func:`ncdepth.report.collect.collect_sweep`, whose
``runs.csv`` lists them all, jobs not started included); those that did not finish are listed with
their reason, never fatal.

``ufm_report.csv``, one row per run directory: ``run, status, reason``, the job's config (``depth``,
``class_sizes``, ``weight_decay``, ``feature_decay``, ``bias``, ``loss``, ``solver``, ``seed``),
then ``final_objective``, ``fstar``, ``objective_gap`` (``(f - f*)/f*``), ``reached_optimum``
(the gap below :data:`ncdepth.theory.ufm_job.OBJECTIVE_GAP_TOL`; empty without a closed form),
``start`` (the start kept, in words) and ``warm_start`` (it came from the continuation family of
:mod:`ncdepth.theory.ufm_starts`), the final relative distances ``closed_form_WWT/HTH/WH``
(``etf_*`` for cross-entropy), ``collapsed_predicted`` and ``collapsed_measured`` (class indices)
and ``diag_WWT_predicted`` / ``diag_WWT_measured``.

``ufm_summary.txt``: how many runs reached the closed-form optimum ``f*`` and, among those only,
in how many the collapsed classes measured = predicted, with the largest final distances; the
runs left out (did not reach ``f*``: a spurious minimum, whose geometry is not the closed form's)
are counted and named.

``figures/ufm_distance.png`` / ``.pdf``: ``||A - A*||_F / ||A*||_F`` for ``A`` = ``W W^T``,
``Hbar^T Hbar``, ``W Hbar`` (columns) against the iterations of the start kept at the target
decays, one row of panels per decay, one colour per depth ``M``, one line per run: a square marks a
warm start (which begins near ``A*``), and each line ends in a filled circle when the run reached
``f*``, a hollow one on a dashed line when it did not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from omegaconf import OmegaConf

from ncdepth.report.collect import Run, Sweep
from ncdepth.report.style import (
    floor_handle,
    format_value,
    grid_figure,
    group_colour,
    legend_below,
    log_axis,
    save_figure,
    zero_floor,
)
from ncdepth.rundir import FINISHED, NOT_STARTED, UFM_TRACE_FILE
from ncdepth.theory.ufm_job import OBJECTIVE_GAP_TOL

REPORT_FILE = "ufm_report.csv"
SUMMARY_TEXT_FILE = "ufm_summary.txt"
FIGURE_STEM = "ufm_distance"
FIGURES_SUBDIR = "figures"
CONFIG_COLUMNS = ("depth", "class_sizes", "weight_decay", "feature_decay", "bias", "loss", "solver", "seed")
DISTANCES = {"WWT": r"$A = WW^\top$", "HTH": r"$A = \bar H^\top \bar H$", "WH": r"$A = W\bar H$"}
"""The Grams compared with the closed form, and their panel titles."""


def write_ufm_report(sweep: Sweep, out_dir: Path) -> list[Path]:
    """Write ``ufm_report.csv``, ``ufm_summary.txt`` and, when some run logged distances to the
    closed form, the ``figures/ufm_distance`` figure (PNG and PDF) into ``out_dir``; return the
    written paths."""
    out_dir = Path(out_dir)
    runs = [run for run in sweep.runs if run.path is not None]
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [run_row(run) for run in runs]
    table = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["run", "status", "reason", *CONFIG_COLUMNS])
    written = [out_dir / REPORT_FILE, out_dir / SUMMARY_TEXT_FILE]
    table.to_csv(written[0], index=False)
    written[1].write_text(agreement_summary(table, len(sweep.runs) - len(runs)))
    traces = {run.name: pd.read_csv(run.path / UFM_TRACE_FILE) for run in runs if run.status == FINISHED}
    figure = distance_figure(table, traces)
    if figure is not None:
        (out_dir / FIGURES_SUBDIR).mkdir(exist_ok=True)
        written += save_figure(figure, out_dir / FIGURES_SUBDIR, FIGURE_STEM)
    return written


def run_row(run: Run) -> dict[str, Any]:
    """One row of ``ufm_report.csv`` (module docstring) for the run directory of ``run``."""
    config = OmegaConf.to_container(run.config, resolve=True)
    row: dict[str, Any] = {"run": run.name, "status": run.status, "reason": run.reason}
    row.update({key: _cell(config.get(key)) for key in CONFIG_COLUMNS})
    if run.status != FINISHED or run.summary is None:
        return row
    summary = run.summary
    final = summary["final"]
    predicted = summary.get("predicted") or {}
    measured = summary["measured"]
    gap = summary["objective_gap"]
    row.update(
        final_objective=summary["final_objective"],
        fstar=summary["fstar"],
        objective_gap=gap,
        # summaries written before reached_optimum existed: the same test on their gap
        reached_optimum=summary.get("reached_optimum", None if gap is None else gap < OBJECTIVE_GAP_TOL),
        **{key: final[key] for key in final if key.startswith(("closed_form_", "etf_"))},
        start=_start_label(summary.get("start")),
        warm_start=None if summary.get("start") is None else summary["start"]["continuation"] > 0,
        collapsed_predicted=_cell(predicted.get("collapsed")),
        collapsed_measured=_cell(measured["collapsed"]),
        diag_WWT_predicted=_cell(predicted.get("diag_WWT")),
        diag_WWT_measured=_cell(measured["diag_WWT"]),
    )
    return row


def agreement_summary(table: pd.DataFrame, not_started: int = 0) -> str:
    """The text of ``ufm_summary.txt`` (module docstring) for the rows of ``ufm_report.csv`` and
    the count of jobs that have no run directory."""
    finished = table[table["status"] == FINISHED]
    outcome = _reached(finished)
    reached, missed = finished[outcome.eq(True)], finished[outcome.eq(False)]
    compared = len(reached) + len(missed)
    lines = [
        f"closed-form optimum f* reached (objective gap (f - f*)/f* < {OBJECTIVE_GAP_TOL:g}): "
        f"{len(reached)} of {compared} finished runs with a closed form"
    ]
    if len(reached):
        agree = (reached["collapsed_predicted"] == reached["collapsed_measured"]).sum()
        largest = ", ".join(f"{name} {reached[f'closed_form_{name}'].max():.2g}" for name in DISTANCES)
        lines += [
            f"collapsed classes measured = predicted: {agree} of those {len(reached)}",
            f"largest final distance to the closed form among them: {largest}",
        ]
    lines.append(f"left out, did not reach f* (a spurious local minimum): {len(missed)}")
    lines += [
        f"  run {row.run}: M = {row.depth}, weight_decay = {format_value(row.weight_decay)}, gap "
        f"{row.objective_gap:.2g}, collapsed predicted {row.collapsed_predicted}, measured "
        f"{row.collapsed_measured}"
        for row in missed.itertuples()
    ]
    unfinished = Counter(table.loc[table["status"] != FINISHED, "status"])
    unfinished[NOT_STARTED] += not_started
    states = ", ".join(f"{count} {state}" for state, count in unfinished.items() if count)
    lines.append(
        f"not compared: {len(finished) - compared} runs without a closed form, "
        f"{sum(unfinished.values())} jobs that did not finish{f' ({states})' if states else ''}"
    )
    return "\n".join(lines) + "\n"


def distance_figure(table: pd.DataFrame, traces: dict[str, pd.DataFrame]) -> Figure | None:
    """Relative distance to the closed form vs iteration (module docstring), or ``None`` when no
    trace has ``closed_form_*`` rows. ``table``: ``ufm_report.csv``'s rows; ``traces``:
    ``{run: its ufm.csv}``."""
    curves = {
        run: trace[trace["metric"].str.startswith("closed_form_")]
        for run, trace in traces.items()
        if trace["metric"].str.startswith("closed_form_").any()
    }
    if not curves:
        return None
    runs = table.set_index("run").loc[list(curves)]
    decays = sorted({(row.weight_decay, row.feature_decay) for row in runs.itertuples()}, key=_decay_order)
    depths = sorted(runs["depth"].unique())
    colour = {depth: group_colour(i, len(depths)) for i, depth in enumerate(depths)}
    figure, axes = grid_figure(len(decays) * len(DISTANCES), columns=len(DISTANCES), sharex=True, sharey=True)
    floor = zero_floor(pd.concat(curves.values())["value"])
    missed, warm = _reached(runs).eq(False), runs.get("warm_start", pd.Series(dtype=object)).eq(True)
    for run, trace in curves.items():
        row = runs.loc[run]
        panels = axes[decays.index((row["weight_decay"], row["feature_decay"]))]
        for ax, name in zip(panels, DISTANCES, strict=True):
            series = trace[trace["metric"] == f"closed_form_{name}"].sort_values("step")
            values = series["value"] if floor is None else series["value"].clip(lower=floor)
            _draw_run(ax, series["step"], values, colour[row["depth"]], missed[run], warm.get(run, False))
    for (weight_decay, feature_decay), panels in zip(decays, axes, strict=True):
        panels[0].set_ylabel(f"{_decay_label(weight_decay, feature_decay)}\nrelative distance")
        for ax in panels:
            log_axis(ax, floor)
            ax.grid(alpha=0.3)
    for ax, title in zip(axes[0], DISTANCES.values(), strict=True):
        ax.set_title(title)
    for ax in axes[-1]:
        ax.set_xlabel("iteration at the target decays")
    figure.suptitle(
        r"Deep-linear UFM: relative distance $\|A - A^*\|_F\,/\,\|A^*\|_F$ to the closed form $A^*$"
        "\nby depth M (colour) and decays (row)"
    )
    handles = _legend_handles(colour, missed.any(), warm.any())
    runs_drawn = Patch(facecolor="none", edgecolor="none", label=f"one line per run ({len(curves)} runs)")
    legend_below(figure, [*handles, runs_drawn, *floor_handle([floor])])
    return figure


def _draw_run(ax: Axes, steps: pd.Series, values: pd.Series, colour: Any, missed: bool, warm: bool) -> None:
    """One run's curve: from a square when its start was warm, ending in a filled circle (reached
    ``f*``) or a hollow one on a dashed line (did not)."""
    ax.plot(steps, values, color=colour, linewidth=1.0, alpha=0.8, linestyle="--" if missed else "-")
    end = {"markerfacecolor": "white" if missed else colour, "markeredgecolor": colour}
    ax.plot(steps.iloc[-1:], values.iloc[-1:], marker="o", markersize=5, linestyle="none", **end)
    if warm:
        ax.plot(steps.iloc[:1], values.iloc[:1], marker="s", markersize=4, color=colour, linestyle="none")


def _reached(table: pd.DataFrame) -> pd.Series:
    """``reached_optimum`` of the rows of ``table`` (True, False, or missing without a closed form)."""
    return table.get("reached_optimum", pd.Series(None, index=table.index, dtype=object))


def _legend_handles(colour: dict[Any, Any], some_missed: bool, some_warm: bool) -> list[Line2D]:
    """One entry per depth, then the markers drawn (a hollow end only when some run missed f*, a
    square start only when some start was warm)."""
    handles = [Line2D([], [], color=value, label=f"depth M = {depth}") for depth, value in colour.items()]
    reached = f"end: reached f*\n(gap (f - f*)/f* < {OBJECTIVE_GAP_TOL:g})"
    handles.append(Line2D([], [], color="0.3", marker="o", label=reached))
    if some_missed:
        missed = {"linestyle": "--", "marker": "o", "markerfacecolor": "white"}
        handles.append(
            Line2D([], [], color="0.3", label="end: did not reach f*\n(spurious minimum)", **missed)
        )
    if some_warm:
        warm = "start: warm, from the\ncontinuation family"
        handles.append(Line2D([], [], color="0.3", marker="s", markersize=4, linestyle="none", label=warm))
    return handles


def _start_label(record: dict[str, Any] | None) -> str | None:
    """The start kept, in words: ``orthogonal seed 0``, ``... continuation``, ``... continuation,
    collapsed [2, 3]`` (``None`` for summaries written before starts were recorded)."""
    if record is None:
        return None
    words = [f"{record['init']} seed {record['seed']}"]
    if record["continuation"]:
        words.append("continuation")
    if record["collapsed"]:
        words.append(f"collapsed {_cell(record['collapsed'])}")
    return ", ".join(words)


def _decay_order(decays: tuple[Any, Any]) -> tuple[tuple[bool, Any], ...]:
    """Rows in increasing decay: numbers by value, per-layer lists (strings) after them."""
    return tuple((isinstance(value, str), value) for value in decays)


def _decay_label(weight_decay: Any, feature_decay: Any) -> str:
    """``lambda_W = lambda_H = 0.01`` (mathtext), or both values when they differ."""
    if weight_decay == feature_decay:
        return rf"$\lambda_W = \lambda_H$ = {format_value(weight_decay)}"
    return rf"$\lambda_W$ = {format_value(weight_decay)}, $\lambda_H$ = {format_value(feature_decay)}"


def _cell(value: Any) -> Any:
    """Lists as their compact string form, so that every value fits one CSV cell."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return (
            "[" + ", ".join(f"{item:.6g}" if isinstance(item, float) else str(item) for item in value) + "]"
        )
    return value
