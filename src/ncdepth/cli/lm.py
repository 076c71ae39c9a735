"""``ncdepth-lm``: token-level neural collapse in every block of a small causal language model while it
trains on the topic help that ships with Python (Hydra app).

    ncdepth-lm                                    # ncdepth/conf/lm.yaml: one job
    ncdepth-lm width=128 epochs=20 seed=3
    ncdepth-lm +lm_experiment=repro -m            # a sweep over width and seed

One job of :mod:`ncdepth.training.lm_job` per run directory, with ``ncdepth-train``'s run lifecycle
(:mod:`ncdepth.cli.lifecycle`): ``status.json``, the lock, the config fingerprint (``threads`` may
change on a rerun, nothing else), a failed job recorded while a multirun goes on, and a rerun that
skips a finished job and trains any other again from the start (a job takes minutes and keeps no
checkpoint: a rerun ends with the result files of an uninterrupted run). The run directory gets
``metrics.csv``, ``summary.json``, ``figures/``, ``.hydra/`` (once the config is valid) and ``lm.log``.
A wrong config value is one line naming the key, before any file is written: exit 2 for a single run,
the job recorded ``failed`` in a multirun.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ncdepth.cli import CONFIG_PATH
from ncdepth.cli.errors import run_hydra_app
from ncdepth.cli.lifecycle import App, run_job
from ncdepth.rundir import LM, LM_LOG
from ncdepth.training import lm_job
from ncdepth.training.lm_job import LMJob
from ncdepth.validation import from_node

log = logging.getLogger(__name__)

LM_APP = App(name=LM, program="ncdepth-lm", log_file=LM_LOG, resumable=lambda config: ("threads",))
"""``ncdepth-lm``'s run lifecycle: only the thread count may change on a rerun."""


def main() -> None:
    """The ``ncdepth-lm`` command: :func:`app` under the error contract of
    :func:`ncdepth.cli.errors.run_hydra_app`."""
    run_hydra_app("ncdepth-lm", app)


@hydra.main(config_path=CONFIG_PATH, config_name="lm", version_base="1.3")
def app(cfg: DictConfig) -> None:
    """Run one job of ``ncdepth/conf/lm.yaml``; outputs in the Hydra run directory."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    config = OmegaConf.to_container(cfg, resolve=True)

    def work(job: LMJob) -> None:
        summary = lm_job.run_job(job, run_dir, config)
        final = summary["final_metrics"]["train"]["ln_f"]
        log.info(
            "width %d, depth %d: train loss %.3f, ln_f cdnv %.4g, NCC accuracy %.3f over %d tokens",
            job.width,
            job.depth,
            summary["train_loss"],
            final["cdnv"],
            final["ncc_acc"],
            final["num_classes_present"],
        )

    run_job(LM_APP, cfg, lambda: from_node(LMJob, "", config), work)


if __name__ == "__main__":
    main()
