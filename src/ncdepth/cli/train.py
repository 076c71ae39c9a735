"""``ncdepth-train``: train one network and measure neural collapse at every layer (Hydra app).

    ncdepth-train                                   # MLP on the embedded MNIST subset, CPU-friendly
    ncdepth-train model=conv data=digits trainer.max_epochs=100
    ncdepth-train +experiment=mlp_depth_sweep_quick -m   # a sweep defined in ncdepth/conf/experiment/
    ncdepth-train -m model.depth=2,4,8 seed=0,1     # a sweep, one run directory per job
    ncdepth-train hydra.run.dir=DIR                 # DIR holds a run: resume it

The life of a run directory (file names and formats: :mod:`ncdepth.rundir`; the steps are
:mod:`ncdepth.cli.lifecycle`'s, shared with ``ncdepth-ufm`` and ``ncdepth-kernels``):

1. A directory that already holds a run is compared with the resolved config: a difference in any
   key outside :data:`ncdepth.rundir.RESUMABLE_KEYS` exits 2, listing the keys, and changes nothing;
   a finished run asked for no more epochs exits 0 and changes nothing.
2. The config is validated (keys a constructor does not take included) and every object (data,
   model, module, trainer) is built before the directory receives a file; a ``ckpt_path`` must be
   a checkpoint of this model, and the files a resume needs are checked before the trainer is made
   (:func:`check_resume_files`: exit 2 naming a damaged one). A wrong value exits 2 with one line
   naming the key (:mod:`ncdepth.cli.errors`: Hydra's own errors too, and no directory is left behind).
3. The process takes the directory's lock (another live owner: exit 2, naming it), writes ``.hydra/`` and
   ``status.json`` (``running``), and trains, resuming from the newest complete checkpoint of the
   directory (``auto_resume``) or from ``ckpt_path``.
4. ``status.json`` ends ``finished``, or ``failed`` with the reason (the traceback goes to
   ``train.log``; a single run prints one line and exits 1). SIGTERM / SIGUSR1 / SIGUSR2 save a checkpoint first
   (:mod:`ncdepth.training.checkpointing`); under submitit, submitit requeues the task, which then
   resumes in the same directory. Lightning's own Slurm requeue is off: submitit owns the requeue.

In a multirun, a job that cannot be built records ``failed`` and its reason in its own directory
and the sweep goes on; the sweep exits non-zero at the end (:mod:`ncdepth.cli.sweep_callbacks`).
Under DDP, only the global rank zero process owns the directory; the other ranks only train.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ProgressBar
from pytorch_lightning.plugins.environments import SLURMEnvironment

from ncdepth.cli import CONFIG_PATH
from ncdepth.cli.errors import run_hydra_app
from ncdepth.cli.lifecycle import App, RunRefused, Stop, run_job
from ncdepth.cli.slurm_layout import slurm_layout_error
from ncdepth.data import DatasetUnavailableError
from ncdepth.rundir import (
    CHECKPOINT_DIR,
    FAILED,
    METRICS_FILE,
    REQUEUED,
    RUN_LOG,
    STATUS_FILE,
    TRAIN,
    config_fingerprint,
    read_status,
    resumable_keys,
)
from ncdepth.training import NCModule, NeuralCollapseCallback
from ncdepth.training.checkpointing import (
    RunCheckpoint,
    callback_state,
    checked_checkpoint,
    resumable_checkpoint,
)
from ncdepth.training.config import (
    TOP_LEVEL_KEYS,
    AnalysisConfig,
    CheckpointConfig,
    LossConfig,
    OptimizerConfig,
    SchedulerConfig,
)
from ncdepth.training.loggers import continuing_options
from ncdepth.training.random_state import RandomStateCheckpoint
from ncdepth.validation import check_int, check_keys, from_node

log = logging.getLogger(__name__)

TRAINER_KEYS_SET_BY_CLI = (
    "callbacks",
    "logger",
    "default_root_dir",
    "enable_model_summary",
    "enable_checkpointing",
)
BUILD_ERRORS = (ValueError, DatasetUnavailableError, MisconfigurationException)
"""Errors of a config that cannot be built: reported in one line, without a traceback."""
RANK_VARIABLES = ("RANK", "NODE_RANK", "LOCAL_RANK", "SLURM_PROCID")
"""Set (to a non-zero rank) in every process of a multi-process run but the first."""
MID_EPOCH_WARNING = "You're resuming from a checkpoint that ended before the epoch ended"
"""Lightning's warning on a mid-epoch resume; ``NCDataModule`` restores the position itself."""


def build_run(
    cfg: DictConfig, run_dir: Path
) -> tuple[pl.Trainer, NCModule, pl.LightningDataModule, int | None]:
    """Validate ``cfg`` and build the datamodule (set up for ``fit``), the model, the module and
    the trainer writing to ``run_dir``, and with them the attempt recorded by the checkpoint the run
    will resume from (``None``: a fresh start), its files checked (:func:`check_resume_files`) before
    the trainer is made (which prints). Raises one of :data:`BUILD_ERRORS` naming the offending key,
    or :class:`RunRefused` naming a damaged file; writes no file."""
    check_keys("", cfg.keys(), TOP_LEVEL_KEYS)
    check_int("seed", cfg.seed, minimum=0)
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).is_file():
        raise ValueError(f"ckpt_path must be null or an existing checkpoint file, got {cfg.ckpt_path!r}")
    if cfg.auto_resume not in (True, False):
        raise ValueError(f"auto_resume must be true or false, got {cfg.auto_resume!r}")
    loss = from_node(LossConfig, "loss", cfg.loss)
    optimizer = from_node(OptimizerConfig, "optimizer", cfg.optimizer)
    scheduler = from_node(SchedulerConfig, "scheduler", cfg.scheduler)
    analysis = from_node(AnalysisConfig, "nc", cfg.nc)
    checkpointing = from_node(CheckpointConfig, "checkpoint", cfg.checkpoint)
    trainer_options = _trainer_options(cfg.trainer)
    layout_error = slurm_layout_error(trainer_options, os.environ)
    if layout_error is not None:
        raise ValueError(layout_error)
    check_constructor_keys("data", cfg.data)
    check_constructor_keys("model", cfg.model, passed=("input_shape", "num_classes"))
    for name, node in cfg.callbacks.items():
        check_constructor_keys(f"callbacks.{name}", node)
    for name, node in cfg.logger.items():
        check_constructor_keys(f"logger.{name}", node, passed=("save_dir",))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = _instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = _instantiate(cfg.model, input_shape=datamodule.input_shape, num_classes=datamodule.num_classes)
    module = NCModule(model, loss=loss, optimizer=optimizer, scheduler=scheduler)
    resume_from = resume_candidate(cfg, run_dir)
    recorded_attempt = None if resume_from is None else check_resume_files(run_dir, resume_from, module)
    nc_callback = NeuralCollapseCallback(
        analysis, run_dir=run_dir, config=OmegaConf.to_container(cfg, resolve=True)
    )
    extra_callbacks = [_instantiate(node) for node in cfg.callbacks.values()]
    if not trainer_options.get("enable_progress_bar", True):  # trainer.enable_progress_bar=false wins
        extra_callbacks = [callback for callback in extra_callbacks if not isinstance(callback, ProgressBar)]
    fingerprint = config_fingerprint(OmegaConf.to_container(cfg, resolve=True))
    loggers = [  # every attempt continues the run's logger run (ncdepth.training.loggers)
        _instantiate(node, save_dir=str(run_dir), **continuing_options(node, run_dir, fingerprint))
        for node in cfg.logger.values()
    ]
    trainer = pl.Trainer(
        **trainer_options,
        callbacks=[
            nc_callback,
            RandomStateCheckpoint(),
            *extra_callbacks,
            RunCheckpoint(run_dir, every_minutes=checkpointing.every_minutes),
        ],
        logger=loggers,
        default_root_dir=str(run_dir),
        enable_model_summary=False,
        plugins=[SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else None,
    )
    return trainer, module, datamodule, recorded_attempt


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> str | None:
    """``cfg.ckpt_path``; else, with ``auto_resume``, the run directory's newest complete
    checkpoint (a broken ``last.ckpt`` is named in the log and ``previous.ckpt`` used); else
    ``None`` (a fresh start, said in the log when the directory had checkpoints)."""
    if cfg.ckpt_path is not None:
        return str(cfg.ckpt_path)
    if not cfg.auto_resume:
        return None
    found = resumable_checkpoint(run_dir)
    if found is not None:
        log.info("resuming from %s (auto_resume)", found)
        return str(found)
    if any((run_dir / CHECKPOINT_DIR).glob("*.ckpt")):
        log.warning("no complete checkpoint in %s: training starts afresh", run_dir / CHECKPOINT_DIR)
    return None


def is_rank_zero_process() -> bool:
    """Whether this is the first process of the run (every one, outside multi-process runs)."""
    return all(os.environ.get(variable, "0") == "0" for variable in RANK_VARIABLES)


def more_epochs(earlier: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    """Whether ``config`` asks a finished run for more epochs than ``earlier`` trained."""
    return config["trainer"]["max_epochs"] > earlier["trainer"]["max_epochs"]


TRAIN_APP = App(
    name=TRAIN,
    program="ncdepth-train",
    log_file=RUN_LOG,
    work_name="training",
    build_errors=BUILD_ERRORS,
    resumable=resumable_keys,
    more_work=more_epochs,
)
"""``ncdepth-train``'s run lifecycle (:mod:`ncdepth.cli.lifecycle`)."""


def main() -> None:
    """The ``ncdepth-train`` command: :func:`app` under the error contract of
    :func:`ncdepth.cli.errors.run_hydra_app`."""
    run_hydra_app("ncdepth-train", app)


@hydra.main(config_path=CONFIG_PATH, config_name="train", version_base="1.3")
def app(cfg: DictConfig) -> None:
    """Run one job (module docstring). A single run exits 2 on a config it cannot build or a run
    directory it must not touch; a job of a multirun records the failure and returns."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    warnings.filterwarnings("ignore", message=MID_EPOCH_WARNING)
    if not is_rank_zero_process():
        trainer, module, datamodule, _ = build_run(cfg, run_dir)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg, run_dir))
        return

    def fit(built: Built) -> None:
        trainer, module, datamodule, recorded_attempt, status_missing = built
        checkpointing = next(
            callback for callback in trainer.callbacks if isinstance(callback, RunCheckpoint)
        )
        checkpointing.attempt = int(read_status(run_dir)["attempts"])
        if status_missing and recorded_attempt:
            log.warning(
                "%s was missing: attempts continue from the checkpoint's record (this is attempt %d)",
                STATUS_FILE,
                checkpointing.attempt,
            )
        metrics = run_dir / METRICS_FILE
        if recorded_attempt is not None and metrics.exists() and not metrics.read_bytes().endswith(b"\n"):
            log.warning("%s ends mid-line: cut back to the checkpoint's rows, which are all whole", metrics)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg, run_dir))

    def build() -> Built:
        status_missing = read_status(run_dir) is None
        trainer, module, datamodule, recorded_attempt = build_run(cfg, run_dir)
        return trainer, module, datamodule, recorded_attempt, status_missing

    run_job(TRAIN_APP, cfg, build, fit, stopped_by_signal, attempts_recorded=lambda built: built[3] or 0)


Built = tuple[pl.Trainer, NCModule, pl.LightningDataModule, "int | None", bool]
"""What :func:`app` builds before the run directory receives a file: the trainer, module and data,
the attempt the checkpoint it resumes from records (``None``: a fresh start) and whether
``status.json`` was missing."""


def stopped_by_signal(built: Built) -> Stop | None:
    """How a signal stopped training after a checkpoint (submitit's exit or ours), else ``None``:
    ``requeued`` when submitit handed the task back to Slurm, which starts it again; ``failed`` without a
    traceback in a multirun when submitit refused to requeue it (its time-outs are used up); else
    ``failed``, resuming when rerun."""
    checkpointing = next(callback for callback in built[0].callbacks if isinstance(callback, RunCheckpoint))
    if checkpointing.stopped_by is None:
        return None
    signame = signal.Signals(checkpointing.stopped_by).name
    if checkpointing.handed_over:
        return Stop(REQUEUED, f"stopped by {signame} after a checkpoint: requeued")
    if checkpointing.refused is not None:
        return Stop(FAILED, f"out of requeues (rerun to resume): {checkpointing.refused}", quiet=True)
    return Stop(FAILED, f"stopped by {signame} after a checkpoint: resumes when rerun")


def resume_candidate(cfg: DictConfig, run_dir: Path) -> str | Path | None:
    """The checkpoint :func:`resume_checkpoint` will resume from, found without a word in the log."""
    if cfg.ckpt_path is not None:
        return str(cfg.ckpt_path)
    return resumable_checkpoint(run_dir, quiet=True) if cfg.auto_resume else None


def check_resume_files(run_dir: Path, checkpoint_path: str | Path, module: NCModule) -> int:
    """Check, before anything is written, what a resume from ``checkpoint_path`` needs: a
    checkpoint of this config (:func:`checked_checkpoint`) and, when it is this directory's or the
    directory has a ``metrics.csv``, a ``metrics.csv`` at least as long as when the checkpoint was
    written (the rows after it are measured again). Returns the attempt the checkpoint records (0
    for a checkpoint written before attempts were recorded);
    raises :class:`RunRefused` in one line naming the file and what to do."""
    key = (
        "ckpt_path" if not Path(checkpoint_path).resolve().is_relative_to(run_dir.resolve()) else "checkpoint"
    )
    try:
        checkpoint = checked_checkpoint(checkpoint_path, module, key=key)
    except ValueError as error:
        raise RunRefused(str(error)) from None
    metrics = run_dir / METRICS_FILE
    recorded = callback_state(checkpoint, "metrics_bytes")
    size = metrics.stat().st_size if metrics.exists() else 0
    if recorded and (metrics.exists() or key == "checkpoint") and size < recorded:
        raise RunRefused(
            f"{metrics} has {size} bytes, fewer than the {recorded} it had when {checkpoint_path} was "
            f"written: rows measured before that checkpoint are lost. Put the whole file back, or "
            f"start afresh in another hydra.run.dir (or after removing {run_dir / CHECKPOINT_DIR})"
        )
    return int(callback_state(checkpoint, "attempt") or 0)


def check_constructor_keys(section: str, node: DictConfig, passed: tuple[str, ...] = ()) -> None:
    """Refuse, before anything is built, a key of ``node`` that the constructor named by its
    ``_target_`` does not take (``+model.dpth=3``), naming it with its close matches; the keys in
    ``passed`` are given by ``ncdepth-train`` itself. A constructor taking ``**kwargs`` takes all."""
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if not isinstance(target, str):
        raise ValueError(f"{section}._target_ must name a class or function, got {target!r}")
    try:
        constructor = get_object(target)
        parameters = inspect.signature(constructor).parameters.values()
    except (ImportError, AttributeError, ValueError, TypeError) as error:
        raise ValueError(f"{section}._target_={target} cannot be imported: {error}") from None
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    allowed = [parameter.name for parameter in parameters if parameter.kind in named]
    keys = [key for key in node if not (key.startswith("_") and key.endswith("_"))]  # _target_, _convert_
    check_keys(section, keys, [key for key in allowed if key not in passed])


def _trainer_options(node: DictConfig) -> dict[str, Any]:
    """``trainer.*`` as ``pl.Trainer`` keyword arguments; unknown keys and keys the CLI sets itself
    raise ``ValueError``; ``trainer.max_epochs`` must be >= 1."""
    allowed = set(inspect.signature(pl.Trainer).parameters) - set(TRAINER_KEYS_SET_BY_CLI)
    options = OmegaConf.to_container(node, resolve=True)
    assert isinstance(options, dict)
    check_keys("trainer", options, allowed)
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
