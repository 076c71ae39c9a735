"""Report of an ``ncdepth-ufm`` sweep: measured geometry beside the closed form, and convergence.

A sweep directory is a UFM sweep when it holds ``ufm.csv`` files (:func:`is_ufm_sweep`). Its run
directories are those holding ``.hydra/config.yaml``; a run is ``finished`` when its
``summary.json`` is readable and ``failed`` otherwise (the reason: the last line of ``ufm.log``,
or the missing file). Failed runs are listed, never fatal.

``ufm_report.csv``, one row per run: ``run, status, reason``, the job's config (``depth``,
``class_sizes``, ``weight_decay``, ``feature_decay``, ``bias``, ``loss``, ``solver``, ``seed``),
then ``final_objective``, ``fstar``, ``objective_gap`` (``(f - f*)/f*``), the final relative
distances ``closed_form_WWT/HTH/WH`` (``etf_*`` for cross-entropy), ``collapsed_predicted`` and
``collapsed_measured`` (class indices) and ``diag_WWT_predicted`` / ``diag_WWT_measured``.

``ufm_distance.png`` / ``.pdf``: ``||A - A*||_F / ||A*||_F`` vs iteration for ``A`` = ``WWT``,
``HTH``, ``WH`` (one panel each, log scale), one line per run coloured by the depth ``M``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from omegaconf import OmegaConf

from ncdepth.report.collect import find_run_dirs
from ncdepth.report.figures import FIGURE_SUFFIXES
from ncdepth.rundir import CONFIG_FILE, SUMMARY_FILE, UFM_LOG, UFM_TRACE_FILE

REPORT_FILE = "ufm_report.csv"
FIGURE_STEM = "ufm_distance"
FIGURES_SUBDIR = "figures"
CONFIG_COLUMNS = ("depth", "class_sizes", "weight_decay", "feature_decay", "bias", "loss", "solver", "seed")
DISTANCES = ("WWT", "HTH", "WH")
DEPTH_COLOURS = colormaps["viridis"]


def is_ufm_sweep(sweep_dir: str | Path) -> bool:
    """Whether ``sweep_dir`` holds at least one ``ufm.csv`` (an ``ncdepth-ufm`` run or sweep)."""
    return next(Path(sweep_dir).rglob(UFM_TRACE_FILE), None) is not None


def write_ufm_report(sweep_dir: Path, out_dir: Path) -> list[Path]:
    """Write ``ufm_report.csv`` and, when some run logged distances to the closed form, the
    ``figures/ufm_distance`` figure (PNG and PDF) into ``out_dir``; return the written paths."""
    sweep_dir, out_dir = Path(sweep_dir), Path(out_dir)
    runs = find_run_dirs(sweep_dir)
    if not runs:
        raise FileNotFoundError(f"no run directory (with {CONFIG_FILE}) under {sweep_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [run_row(run, sweep_dir) for run in runs]
    table_path = out_dir / REPORT_FILE
    pd.DataFrame(rows).to_csv(table_path, index=False)
    written = [table_path]
    traces = {
        row["run"]: (row["depth"], pd.read_csv(run / UFM_TRACE_FILE))
        for run, row in zip(runs, rows, strict=True)
        if row["status"] == "finished" and (run / UFM_TRACE_FILE).is_file()
    }
    figure = distance_figure(traces)
    if figure is not None:
        (out_dir / FIGURES_SUBDIR).mkdir(exist_ok=True)
        for suffix in FIGURE_SUFFIXES:
            path = out_dir / FIGURES_SUBDIR / f"{FIGURE_STEM}{suffix}"
            figure.savefig(path, dpi=150)
            written.append(path)
    return written


def run_row(run_dir: Path, sweep_dir: Path) -> dict[str, Any]:
    """One row of ``ufm_report.csv`` (module docstring) for ``run_dir``."""
    config = OmegaConf.to_container(OmegaConf.load(run_dir / CONFIG_FILE), resolve=True)
    row: dict[str, Any] = {
        "run": run_dir.relative_to(sweep_dir).as_posix(),
        "status": "finished",
        "reason": "",
    }
    row.update({key: _cell(config.get(key)) for key in CONFIG_COLUMNS})
    try:
        summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    except (OSError, ValueError) as error:
        row.update(status="failed", reason=_failure_reason(run_dir, error))
        return row
    final = summary["final"]
    predicted = summary.get("predicted") or {}
    measured = summary["measured"]
    row.update(
        final_objective=summary["final_objective"],
        fstar=summary["fstar"],
        objective_gap=summary["objective_gap"],
        **{key: final[key] for key in final if key.startswith(("closed_form_", "etf_"))},
        collapsed_predicted=_cell(predicted.get("collapsed")),
        collapsed_measured=_cell(measured["collapsed"]),
        diag_WWT_predicted=_cell(predicted.get("diag_WWT")),
        diag_WWT_measured=_cell(measured["diag_WWT"]),
    )
    return row


def distance_figure(traces: dict[str, tuple[int, pd.DataFrame]]) -> Figure | None:
    """Relative distance to the closed form vs iteration (module docstring), or ``None`` when no
    trace has ``closed_form_*`` rows. ``traces``: ``{run: (depth, ufm.csv as a DataFrame)}``."""
    metrics = [f"closed_form_{name}" for name in DISTANCES]
    curves = {
        run: (depth, trace[trace["metric"].isin(metrics)])
        for run, (depth, trace) in traces.items()
        if trace["metric"].isin(metrics).any()
    }
    if not curves:
        return None
    depths = sorted({depth for depth, _ in curves.values()})
    colour = {depth: DEPTH_COLOURS(i / max(len(depths) - 1, 1)) for i, depth in enumerate(depths)}
    figure = Figure(figsize=(3.6 * len(DISTANCES), 3.0), layout="constrained")
    axes = figure.subplots(1, len(DISTANCES), sharey=True)
    for ax, name in zip(axes, DISTANCES, strict=True):
        for depth, trace in curves.values():
            series = trace[trace["metric"] == f"closed_form_{name}"].sort_values("step")
            values = series["value"].clip(lower=1e-16)
            ax.plot(series["step"], values, color=colour[depth], alpha=0.7, linewidth=1.0)
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_title(f"{name}: relative distance to closed form", fontsize="small")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(r"$\|A - A^*\|_F / \|A^*\|_F$")
    handles = [Line2D([], [], color=colour[depth], label=f"M = {depth}") for depth in depths]
    axes[-1].legend(handles=handles, fontsize="small")
    return figure


def _failure_reason(run_dir: Path, error: Exception) -> str:
    """The last non-empty line of the run's ``ufm.log``, else why ``summary.json`` is unreadable."""
    log = run_dir / UFM_LOG
    lines = [line for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    return lines[-1].strip() if lines else f"{SUMMARY_FILE}: {type(error).__name__}: {error}"


def _cell(value: Any) -> Any:
    """Lists as their compact string form, so that every value fits one CSV cell."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return (
            "[" + ", ".join(f"{item:.6g}" if isinstance(item, float) else str(item) for item in value) + "]"
        )
    return value
