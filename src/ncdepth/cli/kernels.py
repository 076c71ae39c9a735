"""``ncdepth-kernels``: kernels vs. a trained two-layer net on Gaussian data (Kothapalli & Tirer 2024).

    ncdepth-kernels                                           # N=256, d0=8, balanced, seed 0
    ncdepth-kernels n=1024 d0=32 seed=3
    ncdepth-kernels -m +kernels_experiment=balanced_quick     # a sweep, one run directory per job

One job of :mod:`ncdepth.theory.kernels_job` per run directory (``kernels.csv``, ``summary.json``,
``.hydra/`` once the config is valid, and ``kernels.log``), with ``ncdepth-train``'s run lifecycle
(:mod:`ncdepth.cli.lifecycle`): ``status.json``, the lock, the config fingerprint (no key may change
on a rerun), a failed job recorded while a multirun goes on, and a rerun that skips a finished job
and recomputes any other from the start (a job is one computation without checkpoints: a rerun ends
with the result files of an uninterrupted run). A config value that fails validation is one line
naming the key, before anything is computed or written: exit 2 for a single run, the job recorded
``failed`` in a multirun.
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
from ncdepth.models import FCN2
from ncdepth.rundir import KERNELS, KERNELS_LOG
from ncdepth.theory import kernels_job
from ncdepth.theory.kernels_job_config import KernelJobConfig, parse_config

log = logging.getLogger(__name__)

KERNELS_APP = App(name=KERNELS, program="ncdepth-kernels", log_file=KERNELS_LOG)
"""``ncdepth-kernels``' run lifecycle: no key may change on a rerun."""


def main() -> None:
    """The ``ncdepth-kernels`` command: :func:`app` under the error contract of
    :func:`ncdepth.cli.errors.run_hydra_app`."""
    run_hydra_app("ncdepth-kernels", app)


@hydra.main(config_path=CONFIG_PATH, config_name="kernels", version_base="1.3")
def app(cfg: DictConfig) -> None:
    """Run one job of ``ncdepth/conf/kernels.yaml``; outputs in the Hydra run directory."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)

    def build() -> tuple[KernelJobConfig, FCN2, int]:
        config = parse_config(cfg)
        data_seed, network_seed = kernels_job.spawn_seeds(config.data.seed)
        return config, kernels_job.build_network(config, network_seed), data_seed

    def work(built: tuple[KernelJobConfig, FCN2, int]) -> None:
        config, network, data_seed = built
        result = kernels_job.run_job(config, network, data_seed)
        for row in result.measurements:
            log.info("%s %s = %.6g", row.quantity, row.metric, row.value)
        kernels_job.write_outputs(run_dir, OmegaConf.to_container(cfg, resolve=True), config, result)

    run_job(KERNELS_APP, cfg, build, work)


if __name__ == "__main__":
    main()
