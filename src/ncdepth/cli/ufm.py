"""``ncdepth-ufm``: optimise the deep-linear unconstrained-features model and compare it with its
closed form (Dang et al. 2023) (Hydra app).

    ncdepth-ufm                                          # ncdepth/conf/ufm.yaml: one job
    ncdepth-ufm depth=6 class_sizes=[200,100,50,50] weight_decay=2e-2 feature_decay=2e-2
    ncdepth-ufm +experiment=ufm_imbalanced_quick -m      # a sweep over depth and decay

One job runs :func:`ncdepth.theory.ufm.optimize` with the config's ``class_sizes``, ``depth``,
``weight_decay``, ``feature_decay``, ``bias``, ``loss``, ``solver`` (its ``method``),
``iterations`` (its ``steps``), ``lr``, ``width``, ``init``, ``log_every`` and ``seed``, and writes
into the Hydra run directory the result of the best of its starts: the deep-linear UFM has spurious
local minima (more classes collapsed than at the optimum) that a single start from either
initialisation can end in, so ``init`` may list several initialisations and ``restarts`` gives the
number of seeds (``seed``, ``seed + 1``, ...) per initialisation; the start with the lowest final
objective is kept and every start's final objective is listed in ``summary.json`` (``starts``).

* ``ufm.csv``: the tidy trace ``step, metric, value``: ``objective``, the metrics of docs/metrics.md, and
  (MSE with a closed form) ``objective_gap`` and ``closed_form_WWT/HTH/WH``, or (cross-entropy)
  ``etf_WWT/HTH/WH``;
* ``summary.json``: ``final`` (the last logged step), ``fstar`` and ``objective_gap`` (``null``
  without a closed form), ``reference`` (``closed_form``, ``simplex_etf_critical_point`` or
  ``none``), ``predicted`` and ``measured`` (diagonals of ``WWT``, ``HTH``, ``WH``, collapsed
  classes, minority-collapse ratios), ``seconds`` and the ``config``;
* ``.hydra/`` (once the config is valid) and ``ufm.log``.

A class counts as *measured collapsed* when the share of its target that the model fits,
``(W Hbar)_kk``, is at most ``COLLAPSE_TOL`` (scale-free: ``x_k^M / (1 + x_k^M)`` at the closed
form, 0 for a collapsed class and at least ``(M - 1)/2M`` for a surviving one when ``M >= 2``). A wrong config value exits with status 2 and a
message naming the key, before any file is written.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ncdepth.cli import CONFIG_PATH
from ncdepth.cli.run_files import log_to_file, save_run_config
from ncdepth.models.validation import check_bool, check_choice, check_int, check_number
from ncdepth.rundir import SUMMARY_FILE, write_json
from ncdepth.theory.geometry import grams, minority_collapse
from ncdepth.theory.ufm import INITS, LOSSES, METHODS, UFMResult, closed_form, optimize, validate

log = logging.getLogger(__name__)

TRACE_FILE = "ufm.csv"
RUN_LOG = "ufm.log"
TRACE_COLUMNS = ("step", "metric", "value")
COLLAPSE_TOL = 1e-3
"""A class is measured collapsed when ``(W Hbar)_kk`` is at most this."""


@dataclass(frozen=True)
class UFMJob:
    """The validated config of one ``ncdepth-ufm`` job (``ncdepth/conf/ufm.yaml`` documents every key)."""

    class_sizes: tuple[int, ...]
    depth: int
    weight_decay: float | tuple[float, ...]
    feature_decay: float
    bias: bool
    loss: str
    solver: str
    iterations: int
    lr: float | None
    width: int | None
    init: tuple[str, ...]
    restarts: int
    log_every: int
    seed: int
    threads: int

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> UFMJob:
        """Check every key of ``cfg``; a ``ValueError`` names the first wrong key and what is
        allowed."""
        allowed = [name for name in cls.__dataclass_fields__]
        unknown = sorted(set(cfg) - set(allowed))
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}; allowed keys: {allowed}")
        missing = sorted(set(allowed) - set(cfg))
        if missing:
            raise ValueError(f"missing key {missing[0]!r}")
        decay = cfg["weight_decay"]
        decay = tuple(decay) if isinstance(decay, list | tuple) else decay
        sizes = cfg["class_sizes"]
        if not isinstance(sizes, list | tuple):
            raise ValueError(f"class_sizes must be a list of at least 2 integers >= 1, got {sizes!r}")
        sizes, _ = validate(tuple(sizes), cfg["depth"], decay, cfg["feature_decay"])
        width = cfg["width"]
        width = None if width is None else check_int("width", width, minimum=len(sizes))
        return cls(
            class_sizes=sizes,
            depth=cfg["depth"],
            weight_decay=decay,
            feature_decay=cfg["feature_decay"],
            bias=check_bool("bias", cfg["bias"]),
            loss=check_choice("loss", cfg["loss"], LOSSES),
            solver=check_choice("solver", cfg["solver"], METHODS),
            iterations=check_int("iterations", cfg["iterations"], minimum=1),
            lr=None if cfg["lr"] is None else check_number("lr", cfg["lr"], minimum=0.0, inclusive=False),
            width=width,
            init=_inits(cfg["init"]),
            restarts=check_int("restarts", cfg["restarts"], minimum=1),
            log_every=check_int("log_every", cfg["log_every"], minimum=1),
            seed=check_int("seed", cfg["seed"], minimum=0),
            threads=check_int("threads", cfg["threads"], minimum=1),
        )

    @property
    def has_closed_form(self) -> bool:
        """MSE, and balanced classes when there is a bias."""
        return self.loss == "mse" and not (self.bias and len(set(self.class_sizes)) > 1)


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


def _inits(value: Any) -> tuple[str, ...]:
    """``init``: one initialisation or a non-empty list of them, each one of ``INITS``."""
    values = list(value) if isinstance(value, list | tuple) else [value]
    if not values:
        raise ValueError(f"init must be one of {list(INITS)} or a non-empty list of them, got {value!r}")
    return tuple(check_choice("init", item, INITS) for item in values)


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
    return pd.DataFrame(rows, columns=list(TRACE_COLUMNS))


def write_outputs(run_dir: Path, result: UFMResult, summary: Mapping[str, Any]) -> None:
    """``ufm.csv`` and ``summary.json`` (non-finite numbers as ``null``) in ``run_dir``."""
    trace_table(result).to_csv(run_dir / TRACE_FILE, index=False)
    write_json(run_dir / SUMMARY_FILE, summary)


@hydra.main(config_path=CONFIG_PATH, config_name="ufm", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Run one UFM job (module docstring); outputs in the Hydra run directory."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        job = UFMJob.from_config(OmegaConf.to_container(cfg, resolve=True))
    except ValueError as error:  # names the key; no traceback
        print(f"ncdepth-ufm: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    save_run_config(cfg, run_dir)
    torch.set_num_threads(job.threads)
    with log_to_file(run_dir / RUN_LOG):
        try:
            result, summary = run_job(job)
        except BaseException:  # recorded in ufm.log so that the report lists the job as failed
            log.exception("ufm job failed")
            raise
        write_outputs(run_dir, result, summary)
        log.info(
            "depth %d: objective %.10g, closed form %s, collapsed predicted %s, measured %s (%.1fs)",
            job.depth,
            summary["final_objective"],
            summary["fstar"],
            None if summary["predicted"] is None else summary["predicted"]["collapsed"],
            summary["measured"]["collapsed"],
            summary["seconds"],
        )


if __name__ == "__main__":
    main()
