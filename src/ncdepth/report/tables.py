"""The report's tables: one tidy table of every measured number, one row per run; and writing them.

``report.csv`` / ``report.parquet``: the swept keys, then ``run, epoch, split, layer, layer_index,
metric, value``. ``runs.csv``, for a sweep of any app: one row per job of the sweep
(:mod:`ncdepth.report.collect`; jobs not started included), ``run, job, app, status, reason``, the
swept keys, then for ``ncdepth-train`` sweeps ``last_epoch``, ``effective_depth@EPS``,
``final_acc_SPLIT``, ``terminal_phase_epoch``, ``separation_slope``, ``separation_r2`` (He & Su's fit of
the train split's log fuzziness over the layers, ``summary.json``'s ``separation_law``); the other apps'
results have tables of their own.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ncdepth.report.collect import TABLE_COLUMNS, Run, Sweep
from ncdepth.rundir import MEASURING_APPS

TABLE_FORMATS = ("csv", "parquet")
REPORT_STEM = "report"
RUNS_FILE = "runs.csv"


def tidy_table(sweep: Sweep) -> pd.DataFrame:
    """One row per measured number of every run with metrics: the swept keys, then
    :data:`TABLE_COLUMNS` (``run`` is the run's relative path)."""
    columns = [*sweep.swept_keys, *TABLE_COLUMNS]
    frames = []
    for run in sweep.runs:
        if run.metrics is None or run.metrics.empty:
            continue
        frame = run.metrics.assign(run=run.name, **sweep.values[run.name])
        frames.append(frame[columns])
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)


def runs_table(sweep: Sweep) -> pd.DataFrame:
    """One row per job: ``run, job`` (the Hydra job number, empty when unknown), ``app, status,
    reason`` (:data:`ncdepth.rundir.APPS`, :data:`ncdepth.rundir.JOB_STATES`), the swept keys; for
    an ``ncdepth-train`` or ``ncdepth-lm`` sweep then ``last_epoch`` (last measured epoch), ``effective_depth@EPS``
    for every threshold in any ``summary.json``, ``final_acc_SPLIT`` (the network's final accuracy
    per split) and ``terminal_phase_epoch``."""
    rows = []
    for run in sweep.runs:
        row: dict[str, Any] = {
            "run": run.name,
            "job": run.job,
            "app": run.app,
            "status": run.status,
            "reason": run.reason,
        }
        row.update(sweep.values[run.name])
        if sweep.app in MEASURING_APPS:
            row.update(_training_results(run))
        rows.append(row)
    head = ["run", "job", "app", "status", "reason", *sweep.swept_keys]
    table = pd.DataFrame(rows, columns=head) if sweep.app not in MEASURING_APPS else pd.DataFrame(rows)
    if sweep.app not in MEASURING_APPS:
        return table.astype({"job": "Int64"})
    depths = sorted(
        (column for column in table.columns if column.startswith("effective_depth@")),
        key=lambda column: float(column.removeprefix("effective_depth@")),
    )
    accuracies = [column for column in table.columns if column.startswith("final_acc_")]
    table = table[[*head, "last_epoch", *depths, *accuracies, "terminal_phase_epoch", *SEPARATION_COLUMNS]]
    integers = ["job", "last_epoch", *depths, "terminal_phase_epoch"]
    return table.astype({column: "Int64" for column in integers})


SEPARATION_COLUMNS = ("separation_slope", "separation_r2")


def _training_results(run: Run) -> dict[str, Any]:
    """``last_epoch``, ``effective_depth@EPS``, ``final_acc_SPLIT``, ``terminal_phase_epoch`` and the
    train split's :data:`SEPARATION_COLUMNS` of an ``ncdepth-train`` run (``None`` where it has none)."""
    summary = run.summary or {}
    has_rows = run.metrics is not None and not run.metrics.empty
    row: dict[str, Any] = {"last_epoch": int(run.metrics["epoch"].max()) if has_rows else None}
    for eps, depth in (summary.get("effective_depth") or {}).items():
        row[f"effective_depth@{eps}"] = depth
    for split, accuracy in (summary.get("accuracy") or {}).items():
        row[f"final_acc_{split}"] = accuracy
    row["terminal_phase_epoch"] = summary.get("terminal_phase_epoch")
    law = (summary.get("separation_law") or {}).get("train") or {}
    row["separation_slope"], row["separation_r2"] = law.get("slope"), law.get("r2")
    return row


def parse_formats(text: str) -> list[str]:
    """``"csv,parquet"`` -> ``["csv", "parquet"]``; raises ``ValueError`` unless the list is a
    non-empty subset of :data:`TABLE_FORMATS`, or when it asks for parquet without pyarrow."""
    formats = [fmt.strip() for fmt in text.split(",") if fmt.strip()]
    unknown = [fmt for fmt in formats if fmt not in TABLE_FORMATS]
    if unknown or not formats:
        raise ValueError(f"--format must be a comma-separated subset of {list(TABLE_FORMATS)}, got {text!r}")
    if "parquet" in formats and importlib.util.find_spec("pyarrow") is None:
        raise ValueError(
            "--format parquet needs pyarrow (pip install 'ncdepth[report]'); or use --format csv"
        )
    return formats


def write_tables(
    table: pd.DataFrame, runs: pd.DataFrame, out_dir: str | Path, formats: Sequence[str] = TABLE_FORMATS
) -> list[Path]:
    """Write ``table`` as ``report.FORMAT`` for each of ``formats`` (a subset of
    :data:`TABLE_FORMATS`; parquet through pyarrow) and ``runs`` as ``runs.csv`` into ``out_dir``.
    Returns the written paths. Raises ``ValueError`` for an unknown format."""
    parse_formats(",".join(formats))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = out / f"{REPORT_STEM}.{fmt}"
        if fmt == "csv":
            table.to_csv(path, index=False)
        else:
            _arrow_compatible(table).to_parquet(path, engine="pyarrow", index=False)
        written.append(path)
    return [*written, write_runs(runs, out)]


def write_runs(runs: pd.DataFrame, out_dir: str | Path) -> Path:
    """Write :func:`runs_table`'s ``runs`` as ``runs.csv`` into ``out_dir``; returns its path."""
    path = Path(out_dir) / RUNS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    runs.to_csv(path, index=False)
    return path


def _arrow_compatible(table: pd.DataFrame) -> pd.DataFrame:
    """Object columns that mix Python types (e.g. an int in one run, a string in another) as
    strings, so that Arrow sees one type per column; ``None`` stays null."""
    converted = table.copy()
    for column in converted.select_dtypes(include="object").columns:
        kinds = {type(value) for value in converted[column] if value is not None}
        if len(kinds) > 1:
            converted[column] = converted[column].map(lambda value: None if value is None else str(value))
    return converted
