"""Files every entry point writes into its Hydra run directory once the config is validated."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ncdepth.rundir import CONFIG_FILE, CONFIG_HISTORY_DIR, HYDRA_CONFIG_FILE, OVERRIDES_FILE, atomic_write


def save_run_config(cfg: DictConfig, run_dir: Path) -> None:
    """Write what Hydra itself would have written into ``.hydra/`` (``config.yaml``,
    ``hydra.yaml``, ``overrides.yaml``), once ``cfg`` has been validated. A directory whose
    ``config.yaml`` and ``overrides.yaml`` already say the same is left untouched; when they differ
    (a resume with a longer ``trainer.max_epochs``, say), the earlier files move to
    ``.hydra/history/N/`` first, so nothing an earlier attempt wrote is lost."""
    hydra_config = HydraConfig.get()
    files = {
        CONFIG_FILE: OmegaConf.to_yaml(cfg),
        OVERRIDES_FILE: OmegaConf.to_yaml(OmegaConf.create(list(hydra_config.overrides.task))),
        HYDRA_CONFIG_FILE: OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_config})),
    }
    earlier = {name: run_dir / name for name in files if (run_dir / name).is_file()}
    if earlier.keys() >= {CONFIG_FILE, OVERRIDES_FILE} and all(
        earlier[name].read_text() == files[name] for name in (CONFIG_FILE, OVERRIDES_FILE)
    ):
        return
    if earlier:
        history = run_dir / CONFIG_HISTORY_DIR
        number = 1 + max((int(path.name) for path in history.glob("*") if path.name.isdigit()), default=0)
        (history / str(number)).mkdir(parents=True)
        for name, path in earlier.items():
            os.replace(path, history / str(number) / Path(name).name)
    for name, text in files.items():
        atomic_write(run_dir / name, text)


@contextmanager
def log_to_file(path: Path) -> Iterator[None]:
    """Within the block, the root logger's records are also appended to ``path``, formatted like
    Hydra's default job log (removed after, so sequential sweep jobs each keep their own log)."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
