"""``ncdepth-train``: train one network and measure neural collapse at every layer (Hydra app).

    ncdepth-train                                   # MLP on the embedded MNIST subset, CPU-friendly
    ncdepth-train model=conv data=digits trainer.max_epochs=100
    ncdepth-train +experiment=mlp_depth_sweep_quick -m   # a sweep defined in conf/experiment/
    ncdepth-train -m model.depth=2,4,8 seed=0,1     # a sweep, one run directory per job
    ncdepth-train hydra.run.dir=DIR                 # DIR has checkpoints/last.ckpt: resume it

A run whose directory already holds ``checkpoints/last.ckpt`` resumes from it (``auto_resume``),
which is how a preempted or timed-out Slurm task requeued by submitit continues where it stopped;
under Slurm, Lightning's own requeue handler is switched off so that submitit owns the requeue.

The whole config is validated and every object (data, model, module, trainer) is built before the
run directory receives a file, so a wrong value exits non-zero with a message naming the key and
leaves earlier runs untouched. The run directory then holds ``.hydra/`` (config, hydra config,
overrides), ``train.log``, ``metrics.csv``, ``summary.json``, ``figures/``, ``checkpoints/last.ckpt``
and the Lightning loggers' files.
"""

from __future__ import annotations

import inspect
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar
from pytorch_lightning.plugins.environments import SLURMEnvironment

from ncdepth.cli import CONFIG_DIR
from ncdepth.cli.run_files import log_to_file, save_run_config
from ncdepth.data import DatasetUnavailableError
from ncdepth.models.validation import check_int
from ncdepth.training import NCModule, NeuralCollapseCallback
from ncdepth.training.config import (
    AnalysisConfig,
    LossConfig,
    OptimizerConfig,
    SchedulerConfig,
    check_top_level_keys,
    from_node,
)
from ncdepth.training.random_state import RandomStateCheckpoint

log = logging.getLogger(__name__)


RUN_LOG = "train.log"
CHECKPOINT_SUBDIR = "checkpoints"
TRAINER_KEYS_SET_BY_CLI = ("callbacks", "logger", "default_root_dir", "enable_model_summary")


def build_run(cfg: DictConfig, run_dir: Path) -> tuple[pl.Trainer, NCModule, pl.LightningDataModule]:
    """Validate ``cfg`` and build the datamodule (set up for ``fit``), the model, the module and
    the trainer writing to ``run_dir``. Raises ``ValueError`` naming the offending key; writes no
    file."""
    check_top_level_keys(list(cfg.keys()))
    check_int("seed", cfg.seed, minimum=0)
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).is_file():
        raise ValueError(f"ckpt_path must be null or an existing checkpoint file, got {cfg.ckpt_path!r}")
    if cfg.auto_resume not in (True, False):
        raise ValueError(f"auto_resume must be true or false, got {cfg.auto_resume!r}")
    loss = from_node(LossConfig, "loss", cfg.loss)
    optimizer = from_node(OptimizerConfig, "optimizer", cfg.optimizer)
    scheduler = from_node(SchedulerConfig, "scheduler", cfg.scheduler)
    analysis = from_node(AnalysisConfig, "nc", cfg.nc)
    trainer_options = _trainer_options(cfg.trainer)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = _instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = _instantiate(cfg.model, input_shape=datamodule.input_shape, num_classes=datamodule.num_classes)
    module = NCModule(model, loss=loss, optimizer=optimizer, scheduler=scheduler)
    nc_callback = NeuralCollapseCallback(
        analysis, run_dir=run_dir, config=OmegaConf.to_container(cfg, resolve=True)
    )
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / CHECKPOINT_SUBDIR,
        save_last=True,
        save_top_k=0,
        every_n_epochs=1,
        save_on_train_epoch_end=True,
    )
    extra_callbacks = [_instantiate(node) for node in cfg.callbacks.values()]
    if not trainer_options.get("enable_progress_bar", True):  # trainer.enable_progress_bar=false wins
        extra_callbacks = [callback for callback in extra_callbacks if not isinstance(callback, ProgressBar)]
    loggers = [_instantiate(node, save_dir=str(run_dir)) for node in cfg.logger.values()]
    trainer = pl.Trainer(
        **trainer_options,
        callbacks=[nc_callback, RandomStateCheckpoint(), *extra_callbacks, checkpoint],
        logger=loggers,
        default_root_dir=str(run_dir),
        enable_model_summary=False,
        plugins=[SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else None,
    )
    return trainer, module, datamodule


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> str | None:
    """``cfg.ckpt_path``, else (with ``auto_resume``) the run directory's ``last.ckpt`` if any."""
    if cfg.ckpt_path is not None:
        return str(cfg.ckpt_path)
    last = run_dir / CHECKPOINT_SUBDIR / "last.ckpt"
    if cfg.auto_resume and last.is_file():
        log.info("resuming from %s (auto_resume)", last)
        return str(last)
    return None


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Train ``cfg.model`` on ``cfg.data`` with the NC callback; outputs in the Hydra run dir.
    A config value that fails validation exits with status 2 and a one-line message."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        trainer, module, datamodule = build_run(cfg, run_dir)
    except (ValueError, DatasetUnavailableError) as error:  # names the key or the files; no traceback
        print(f"ncdepth-train: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    save_run_config(cfg, run_dir)
    with log_to_file(run_dir / RUN_LOG):
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg, run_dir))
        except BaseException:  # recorded in train.log so that ncdepth-report lists the run as failed
            log.exception("training failed")
            raise


def _trainer_options(node: DictConfig) -> dict[str, Any]:
    """``trainer.*`` as ``pl.Trainer`` keyword arguments; unknown keys and keys the CLI sets itself
    raise ``ValueError``; ``trainer.max_epochs`` must be >= 1."""
    allowed = sorted(set(inspect.signature(pl.Trainer).parameters) - set(TRAINER_KEYS_SET_BY_CLI))
    options = OmegaConf.to_container(node, resolve=True)
    assert isinstance(options, dict)
    for key in options:
        if key not in allowed:
            raise ValueError(f"unknown key trainer.{key}; allowed keys of trainer: {allowed}")
    check_int("trainer.max_epochs", options.get("max_epochs"), minimum=1)
    return options


def _instantiate(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with plain ``dict``/``list`` arguments (so that objects keeping
    them, e.g. in hyper-parameters, stay loadable from ``weights_only`` checkpoints), re-raising a
    failed constructor's own error (whose message names the config key) rather than Hydra's."""
    try:
        return instantiate(node, **kwargs, _convert_="all")  # plain containers: picklable safely
    except InstantiationException as error:
        if isinstance(error.__cause__, ValueError | TypeError):
            raise error.__cause__ from None
        raise


if __name__ == "__main__":
    main()
