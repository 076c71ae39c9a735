"""One ``ncdepth-ufm`` job: optimise the deep-linear unconstrained-features model and compare it with
its closed form (Dang et al. 2023).

:func:`run_job` optimises the UFM of a :class:`ncdepth.theory.ufm_job_config.UFMJob` from every
start of :func:`ncdepth.theory.ufm_starts.starts` (plain starts, and the continuation family that
reaches the optimum past the spurious minima of deep heads) with
:func:`ncdepth.theory.ufm.optimize`, and keeps the start with the lowest final objective.

A job *reached the optimum* when its relative objective gap ``(f - f*)/f*`` (``f* > 0``) is below
``OBJECTIVE_GAP_TOL``; only then do its measured frame and collapsed classes stand for the closed
form's (``ncdepth-ufm`` logs a warning otherwise, and the report leaves it out of its summary).

:func:`write_outputs` writes into the run directory (read by :mod:`ncdepth.report.ufm`):

* ``ufm.csv``: the tidy trace ``step, metric, value``: ``objective``, the metrics of docs/metrics.md, and
  (MSE with a closed form) ``objective_gap`` and ``closed_form_WWT/HTH/WH``, or (cross-entropy)
  ``etf_WWT/HTH/WH``;
* ``summary.json``: ``final`` (the last logged step), ``final_objective``, ``fstar``,
  ``objective_gap``, ``objective_gap_tol`` and ``reached_optimum`` (the last four ``null``
  without a closed form), ``reference`` (``closed_form``, ``simplex_etf_critical_point`` or
  ``none``), ``predicted`` and ``measured`` (diagonals of ``WWT``, ``HTH``, ``WH``, collapsed
  classes, minority-collapse ratios), ``start`` (the record of the start kept) and ``starts``,
  ``seconds`` and the ``config``.

``ncdepth-ufm`` appends the job's log to ``ufm.log`` beside them (file names: :mod:`ncdepth.rundir`).

A class counts as *measured collapsed* when the share of its target that the model fits,
``(W Hbar)_kk``, is at most ``COLLAPSE_TOL`` (scale-free: ``x_k^M / (1 + x_k^M)`` at the closed
form, 0 for a collapsed class and at least ``(M - 1)/2M`` for a surviving one when ``M >= 2``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from ncdepth.rundir import SUMMARY_FILE, UFM_TRACE_COLUMNS, UFM_TRACE_FILE, atomic_write, write_json
from ncdepth.theory.geometry import grams, minority_collapse
from ncdepth.theory.ufm import UFMResult, closed_form
from ncdepth.theory.ufm_job_config import UFMJob
from ncdepth.theory.ufm_starts import starts

COLLAPSE_TOL = 1e-3
"""A class is measured collapsed when ``(W Hbar)_kk`` is at most this."""
OBJECTIVE_GAP_TOL = 1e-6
"""A job reached the optimum when ``(f - f*)/f*`` is below this. In the ufm_experiment sweeps the
runs that converged end at gaps of 1e-16 to 1e-11 (up to 1e-7 when stopped after 300 steps at the
smallest decay, 1e-4), the spurious minima at 4e-3 and above; near the optimum the Gram distances
``closed_form_*`` grow like the square root of the gap, so a gap of 1e-6 keeps them near 1e-3."""


def run_job(job: UFMJob) -> tuple[UFMResult, dict[str, Any]]:
    """Optimise the UFM of ``job``; return the result and the content of ``summary.json``."""
    started = time.perf_counter()
    runs = list(starts(job))
    kept, result = min(runs, key=lambda run: run[1].final_objective)
    seconds = time.perf_counter() - started
    final = result.history[-1]
    summary: dict[str, Any] = {
        "final": final,
        "final_objective": final["objective"],
        "fstar": None,
        "objective_gap": None,
        "objective_gap_tol": None,
        "reached_optimum": None,
        "reference": "none",
        "measured": measured_geometry(result, job.class_sizes),
        "predicted": None,
        "start": kept,
        "starts": [record for record, _ in runs],
        "seconds": seconds,
        "config": asdict(job),
    }
    if job.has_closed_form:
        reference = closed_form(
            job.class_sizes, job.depth, job.weight_decay, job.feature_decay, bias=job.bias
        )
        summary["fstar"] = reference["fstar"]
        summary["objective_gap"] = final["objective_gap"]
        summary["objective_gap_tol"] = OBJECTIVE_GAP_TOL
        summary["reached_optimum"] = final["objective_gap"] < OBJECTIVE_GAP_TOL
        summary["reference"] = "closed_form"
        summary["predicted"] = {
            "x": reference["x"].tolist(),
            **{f"diag_{name}": reference[name].diagonal().tolist() for name in ("WWT", "HTH", "WH")},
            "collapsed": [int(k) for k in reference["collapsed"].nonzero().flatten()],
        }
    elif job.loss == "ce":
        summary["reference"] = "simplex_etf_critical_point"
    return result, summary


def measured_geometry(result: UFMResult, class_sizes: tuple[int, ...]) -> dict[str, Any]:
    """Diagonals of ``WWT``, ``HTH``, ``WH`` at the end point, the classes measured collapsed
    (module docstring) and, for imbalanced classes, the minority-collapse norm ratios."""
    matrices = grams(result.product, result.class_means)
    collapsed = (matrices["WH"].diagonal() <= COLLAPSE_TOL).nonzero().flatten()
    measured: dict[str, Any] = {
        **{f"diag_{name}": matrix.diagonal().tolist() for name, matrix in matrices.items()},
        "collapsed": [int(k) for k in collapsed],
    }
    if len(set(class_sizes)) > 1:
        ratios = minority_collapse(result.product, result.class_means, class_sizes)
        measured.update({name: values.tolist() for name, values in ratios.items()})
    return measured


def trace_table(result: UFMResult) -> pd.DataFrame:
    """The tidy trace of ``result.history``: one row per logged ``(step, metric, value)``."""
    rows = [
        (int(entry["step"]), metric, float(value))
        for entry in result.history
        for metric, value in entry.items()
        if metric != "step"
    ]
    return pd.DataFrame(rows, columns=list(UFM_TRACE_COLUMNS))


def write_outputs(run_dir: Path, result: UFMResult, summary: Mapping[str, Any]) -> None:
    """``ufm.csv`` and ``summary.json`` (non-finite numbers as ``null``) in ``run_dir``, each
    written atomically (:func:`ncdepth.rundir.atomic_write`)."""
    atomic_write(run_dir / UFM_TRACE_FILE, trace_table(result).to_csv(index=False, lineterminator="\n"))
    write_json(run_dir / SUMMARY_FILE, summary)
