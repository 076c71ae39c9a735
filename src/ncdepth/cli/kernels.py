"""``ncdepth-kernels``: kernels vs. a trained two-layer net on Gaussian data (Kothapalli & Tirer 2024).

    ncdepth-kernels                                           # N=256, d0=8, balanced, seed 0
    ncdepth-kernels n=1024 d0=32 seed=3
    ncdepth-kernels -m +kernels_experiment=balanced_quick     # a sweep, one run directory per job

One job of :mod:`ncdepth.theory.kernels_job` per run directory (``kernels.csv``, ``summary.json``,
``kernels.log`` and ``.hydra/``, written once the config is valid). A config value that fails
validation exits with status 2 and a one-line message naming the key, before anything is computed
or written.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ncdepth.cli import CONFIG_PATH
from ncdepth.cli.errors import run_hydra_app
from ncdepth.cli.run_files import log_to_file, save_run_config
from ncdepth.theory.kernels_job import build_network, run_job, spawn_seeds, write_outputs
from ncdepth.theory.kernels_job_config import parse_config

log = logging.getLogger(__name__)


def main() -> None:
    """The ``ncdepth-kernels`` command: :func:`app` under the error contract of
    :func:`ncdepth.cli.errors.run_hydra_app`."""
    run_hydra_app("ncdepth-kernels", app)


@hydra.main(config_path=CONFIG_PATH, config_name="kernels", version_base="1.3")
def app(cfg: DictConfig) -> None:
    """Run one job of ``ncdepth/conf/kernels.yaml``; outputs in the Hydra run directory."""
    try:
        config = parse_config(cfg)
        data_seed, network_seed = spawn_seeds(config.data.seed)
        network = build_network(config, network_seed)
    except ValueError as error:  # names the key; no traceback
        print(f"ncdepth-kernels: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    save_run_config(cfg, run_dir)
    with log_to_file(run_dir / f"{HydraConfig.get().job.name}.log"):
        try:
            result = run_job(config, network, data_seed)
        except BaseException:  # recorded in the log so that the report lists the job as failed
            log.exception("kernels job failed")
            raise
        for row in result.measurements:
            log.info("%s %s = %.6g", row.quantity, row.metric, row.value)
        write_outputs(run_dir, OmegaConf.to_container(cfg, resolve=True), config, result)


if __name__ == "__main__":
    main()
