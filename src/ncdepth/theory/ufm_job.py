"""One ``ncdepth-ufm`` job: optimise the deep-linear unconstrained-features model and compare it with
its closed form (Dang et al. 2023).

:func:`run_job` runs :func:`ncdepth.theory.ufm.optimize` with the settings of a
:class:`ncdepth.theory.ufm_job_config.UFMJob` (``class_sizes``, ``depth``, ``weight_decay``,
``feature_decay``, ``bias``, ``loss``, ``solver`` (its ``method``), ``iterations`` (its ``steps``),
``lr``, ``width``, ``init``, ``log_every`` and ``seed``) and keeps the result of the best of its
starts: the deep-linear UFM has spurious local minima (more classes collapsed than at the optimum)
that a single start from either initialisation can end in, so ``init`` may list several
initialisations and ``restarts`` gives the number of seeds (``seed``, ``seed + 1``, ...) per
initialisation; the start with the lowest final objective is kept and every start's final
objective is listed in ``summary.json`` (``starts``).
:func:`write_outputs` writes into the run directory (read by :mod:`ncdepth.report.ufm`):

* ``ufm.csv``: the tidy trace ``step, metric, value``: ``objective``, the metrics of docs/metrics.md, and
  (MSE with a closed form) ``objective_gap`` and ``closed_form_WWT/HTH/WH``, or (cross-entropy)
  ``etf_WWT/HTH/WH``;
* ``summary.json``: ``final`` (the last logged step), ``fstar`` and ``objective_gap`` (``null``
  without a closed form), ``reference`` (``closed_form``, ``simplex_etf_critical_point`` or
  ``none``), ``predicted`` and ``measured`` (diagonals of ``WWT``, ``HTH``, ``WH``, collapsed
  classes, minority-collapse ratios), ``seconds`` and the ``config``.

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

from ncdepth.rundir import SUMMARY_FILE, UFM_TRACE_COLUMNS, UFM_TRACE_FILE, write_json
from ncdepth.theory.geometry import grams, minority_collapse
from ncdepth.theory.ufm import UFMResult, closed_form, optimize
from ncdepth.theory.ufm_job_config import UFMJob

COLLAPSE_TOL = 1e-3
"""A class is measured collapsed when ``(W Hbar)_kk`` is at most this."""


def run_job(job: UFMJob) -> tuple[UFMResult, dict[str, Any]]:
    """Optimise the UFM of ``job``; return the result and the content of ``summary.json``."""
    started = time.perf_counter()
    starts = []
    for init in job.init:
        for seed in range(job.seed, job.seed + job.restarts):
            run = optimize(
                job.class_sizes,
                job.depth,
                job.weight_decay,
                job.feature_decay,
                width=job.width,
                bias=job.bias,
                loss=job.loss,
                method=job.solver,
                steps=job.iterations,
                lr=job.lr,
                seed=seed,
                log_every=job.log_every,
                init=init,
            )
            starts.append(({"init": init, "seed": seed, "final_objective": run.final_objective}, run))
    result = min(starts, key=lambda start: start[1].final_objective)[1]
    seconds = time.perf_counter() - started
    final = result.history[-1]
    summary: dict[str, Any] = {
        "final": final,
        "final_objective": final["objective"],
        "fstar": None,
        "objective_gap": None,
        "reference": "none",
        "measured": measured_geometry(result, job.class_sizes),
        "predicted": None,
        "starts": [record for record, _ in starts],
        "seconds": seconds,
        "config": asdict(job),
    }
    if job.has_closed_form:
        reference = closed_form(
            job.class_sizes, job.depth, job.weight_decay, job.feature_decay, bias=job.bias
        )
        summary["fstar"] = reference["fstar"]
        summary["objective_gap"] = final["objective_gap"]
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
    """``ufm.csv`` and ``summary.json`` (non-finite numbers as ``null``) in ``run_dir``."""
    trace_table(result).to_csv(run_dir / UFM_TRACE_FILE, index=False)
    write_json(run_dir / SUMMARY_FILE, summary)
