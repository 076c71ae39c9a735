"""Files every entry point writes into its Hydra run directory once the config is validated."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

HYDRA_SUBDIR = ".hydra"


def save_run_config(cfg: DictConfig, run_dir: Path) -> None:
    """Write what Hydra itself would have written into ``.hydra/`` (``config.yaml``,
    ``hydra.yaml``, ``overrides.yaml``), once ``cfg`` has been validated."""
    hydra_config = HydraConfig.get()
    out = run_dir / HYDRA_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra_config}), out / "hydra.yaml")
    OmegaConf.save(hydra_config.overrides.task, out / "overrides.yaml")


@contextmanager
def log_to_file(path: Path) -> Iterator[None]:
    """Within the block, the root logger's records also go to ``path``, formatted like Hydra's
    default job log (removed after, so sequential sweep jobs each keep their own log)."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
