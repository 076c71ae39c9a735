"""``ncdepth-ufm``: optimise the deep-linear unconstrained-features model and compare it with its
closed form (Dang et al. 2023) (Hydra app).

    ncdepth-ufm                                          # ncdepth/conf/ufm.yaml: one job
    ncdepth-ufm depth=6 class_sizes=[200,100,50,50] weight_decay=2e-2 feature_decay=2e-2
    ncdepth-ufm +ufm_experiment=imbalanced_quick -m      # a sweep over depth and decay

One job of :mod:`ncdepth.theory.ufm_job` per run directory: ``ufm.csv``, ``summary.json``,
``.hydra/`` (once the config is valid) and ``ufm.log``. A job whose objective gap ``(f - f*)/f*``
is not below ``OBJECTIVE_GAP_TOL`` (it ended in a spurious minimum) logs a warning naming the gap.
A wrong config value exits with status 2 and a message naming the key, before any file is written.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ncdepth.cli import CONFIG_PATH
from ncdepth.cli.errors import run_hydra_app
from ncdepth.cli.run_files import log_to_file, save_run_config
from ncdepth.rundir import UFM_LOG
from ncdepth.theory.ufm_job import run_job, write_outputs
from ncdepth.theory.ufm_job_config import UFMJob
from ncdepth.validation import from_node

log = logging.getLogger(__name__)


def main() -> None:
    """The ``ncdepth-ufm`` command: :func:`app` under the error contract of
    :func:`ncdepth.cli.errors.run_hydra_app`."""
    run_hydra_app("ncdepth-ufm", app)


@hydra.main(config_path=CONFIG_PATH, config_name="ufm", version_base="1.3")
def app(cfg: DictConfig) -> None:
    """Run one UFM job (module docstring); outputs in the Hydra run directory."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        job = from_node(UFMJob, "", OmegaConf.to_container(cfg, resolve=True))
    except ValueError as error:  # names the key; no traceback
        print(f"ncdepth-ufm: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    save_run_config(cfg, run_dir)
    torch.set_num_threads(job.threads)
    with log_to_file(run_dir / UFM_LOG):
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
