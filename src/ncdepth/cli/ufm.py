"""``ncdepth-ufm``: optimise the deep-linear unconstrained-features model and compare it with its
closed form (Dang et al. 2023) (Hydra app).

    ncdepth-ufm                                          # ncdepth/conf/ufm.yaml: one job
    ncdepth-ufm depth=6 class_sizes=[200,100,50,50] weight_decay=2e-2 feature_decay=2e-2
    ncdepth-ufm +ufm_experiment=imbalanced_quick -m      # a sweep over depth and decay

One job of :mod:`ncdepth.theory.ufm_job` per run directory, with ``ncdepth-train``'s run lifecycle
(:mod:`ncdepth.cli.lifecycle`): ``status.json``, the lock, the config fingerprint (``threads`` may
change on a rerun, nothing else), a failed job recorded while a multirun goes on, and a rerun that
skips a finished job and recomputes any other from the start (a job is one computation without
checkpoints: a rerun ends with the result files of an uninterrupted run). The run directory gets
``ufm.csv``, ``summary.json``, ``.hydra/`` (once the config is valid) and ``ufm.log``. A job whose
objective gap ``(f - f*)/f*`` is not below ``OBJECTIVE_GAP_TOL`` (it ended in a spurious minimum)
logs a warning naming the gap. A wrong config value is one line naming the key, before any file is
written: exit 2 for a single run, the job recorded ``failed`` in a multirun.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ncdepth.cli import CONFIG_PATH
from ncdepth.cli.errors import run_hydra_app
from ncdepth.cli.lifecycle import App, run_job
from ncdepth.rundir import UFM, UFM_LOG
from ncdepth.theory import ufm_job
from ncdepth.theory.ufm_job_config import UFMJob
from ncdepth.validation import from_node

log = logging.getLogger(__name__)


def _resumable(config: Mapping[str, Any]) -> tuple[str, ...]:
    return ("threads",)


UFM_APP = App(name=UFM, program="ncdepth-ufm", log_file=UFM_LOG, resumable=_resumable)
"""``ncdepth-ufm``'s run lifecycle: only the thread count may change on a rerun."""


def main() -> None:
    """The ``ncdepth-ufm`` command: :func:`app` under the error contract of
    :func:`ncdepth.cli.errors.run_hydra_app`."""
    run_hydra_app("ncdepth-ufm", app)


@hydra.main(config_path=CONFIG_PATH, config_name="ufm", version_base="1.3")
def app(cfg: DictConfig) -> None:
    """Run one UFM job (module docstring); outputs in the Hydra run directory."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    run_job(
        UFM_APP,
        cfg,
        lambda: from_node(UFMJob, "", OmegaConf.to_container(cfg, resolve=True)),
        lambda job: run(job, run_dir),
    )


def run(job: UFMJob, run_dir: Path) -> None:
    """Optimise ``job``, write its results into ``run_dir`` and log the outcome."""
    torch.set_num_threads(job.threads)
    result, summary = ufm_job.run_job(job)
    ufm_job.write_outputs(run_dir, result, summary)
    log.info(
        "depth %d: objective %.10g, closed form %s, collapsed predicted %s, measured %s (%.1fs)",
        job.depth,
        summary["final_objective"],
        summary["fstar"],
        None if summary["predicted"] is None else summary["predicted"]["collapsed"],
        summary["measured"]["collapsed"],
        summary["seconds"],
    )
    if summary["reached_optimum"] is False:
        log.warning(
            "did not reach the closed-form optimum f*: objective gap (f - f*)/f* = %.3g >= %g "
            "(a spurious local minimum, or too few iterations); its measured geometry does not "
            "stand for the closed form's",
            summary["objective_gap"],
            summary["objective_gap_tol"],
        )


if __name__ == "__main__":
    main()
