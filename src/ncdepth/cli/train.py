"""``ncdepth-train``: train one network and measure neural collapse at every layer (Hydra app).

    ncdepth-train                                   # MLP on the embedded MNIST subset, CPU-friendly
    ncdepth-train model=conv data=digits trainer.max_epochs=100
    ncdepth-train +experiment=mlp_depth_sweep_quick -m   # a sweep defined in ncdepth/conf/experiment/
    ncdepth-train -m model.depth=2,4,8 seed=0,1     # a sweep, one run directory per job
    ncdepth-train hydra.run.dir=DIR                 # DIR holds a run: resume it

The life of a run directory (file names and formats: :mod:`ncdepth.rundir`):

1. A directory that already holds a run is compared with the resolved config: a difference in any
   key outside :data:`ncdepth.rundir.RESUMABLE_KEYS` exits 2, listing the keys, and changes nothing;
   a finished run asked for no more epochs exits 0 and changes nothing.
2. The config is validated (keys a constructor does not take included) and every object (data,
   model, module, trainer) is built before the directory receives a file; a ``ckpt_path`` must be
   a checkpoint of this model. A wrong value exits 2 with one line naming the key
   (:mod:`ncdepth.cli.errors`: Hydra's own errors too, and no directory is left behind).
3. The process takes the directory's lock (another live owner: exit 2, naming it), checks the files
   a resume needs (:func:`check_resume_files`: exit 2 naming a damaged one), writes ``.hydra/`` and
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
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import get_object, instantiate
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.callbacks import ProgressBar
from pytorch_lightning.plugins.environments import SLURMEnvironment

from ncdepth.cli import CONFIG_PATH
from ncdepth.cli.errors import one_line_config_error, run_hydra_app
from ncdepth.cli.launcher_checks import slurm_layout_error
from ncdepth.cli.run_files import log_to_file, save_run_config
from ncdepth.data import DatasetUnavailableError
from ncdepth.rundir import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    FAILED,
    FINISHED,
    METRICS_FILE,
    RESUMABLE_KEYS,
    RUN_LOG,
    RUNNING,
    STATUS_FILE,
    RunLock,
    RunLocked,
    config_differences,
    config_fingerprint,
    read_status,
    write_status,
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


class RunRefused(Exception):
    """The run directory holds a run this process must not touch."""


def build_run(cfg: DictConfig, run_dir: Path) -> tuple[pl.Trainer, NCModule, pl.LightningDataModule]:
    """Validate ``cfg`` and build the datamodule (set up for ``fit``), the model, the module and
    the trainer writing to ``run_dir``. Raises one of :data:`BUILD_ERRORS` naming the offending
    key; writes no file."""
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
    if cfg.ckpt_path is not None:
        checked_checkpoint(cfg.ckpt_path, module)
    nc_callback = NeuralCollapseCallback(
        analysis, run_dir=run_dir, config=OmegaConf.to_container(cfg, resolve=True)
    )
    extra_callbacks = [_instantiate(node) for node in cfg.callbacks.values()]
    if not trainer_options.get("enable_progress_bar", True):  # trainer.enable_progress_bar=false wins
        extra_callbacks = [callback for callback in extra_callbacks if not isinstance(callback, ProgressBar)]
    loggers = [_instantiate(node, save_dir=str(run_dir)) for node in cfg.logger.values()]
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
    return trainer, module, datamodule


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


def check_run_dir(run_dir: Path, config: dict[str, Any]) -> bool:
    """Whether ``run_dir`` still has work for ``config``: ``False`` for a finished run asked for no
    more epochs. Raises :class:`RunRefused` when the directory holds a run whose config differs in a
    key outside :data:`RESUMABLE_KEYS`."""
    status = read_status(run_dir)
    earlier = status.get("config") if status else _legacy_config(run_dir)
    if earlier is None:
        return True
    differences = config_differences(earlier, config)
    if differences:
        raise RunRefused(
            f"run directory {run_dir} holds a run with another config; rerunning there would mix two "
            f"experiments. Differing keys: {'; '.join(differences)}. Only these keys may change on "
            f"resume: {', '.join(RESUMABLE_KEYS)}. Choose another hydra.run.dir for a new run."
        )
    more_epochs = config["trainer"]["max_epochs"] > earlier["trainer"]["max_epochs"]
    return not (status and status.get("state") == FINISHED and not more_epochs)


def _legacy_config(run_dir: Path) -> dict[str, Any] | None:
    """The resolved ``.hydra/config.yaml`` of a run directory written before ``status.json``."""
    if not (run_dir / CONFIG_FILE).is_file():
        return None
    try:
        return OmegaConf.to_container(OmegaConf.load(run_dir / CONFIG_FILE), resolve=True)
    except Exception:  # an interpolation this process cannot resolve: compare it unresolved
        return OmegaConf.to_container(OmegaConf.load(run_dir / CONFIG_FILE))


def is_rank_zero_process() -> bool:
    """Whether this is the first process of the run (every one, outside multi-process runs)."""
    return all(os.environ.get(variable, "0") == "0" for variable in RANK_VARIABLES)


def main() -> None:
    """The ``ncdepth-train`` command: :func:`app` under the error contract of
    :func:`ncdepth.cli.errors.run_hydra_app`."""
    run_hydra_app("ncdepth-train", app)


@hydra.main(config_path=CONFIG_PATH, config_name="train", version_base="1.3")
def app(cfg: DictConfig) -> None:
    """Run one job (module docstring). A single run exits 2 on a config it cannot build or a run
    directory it must not touch; a job of a multirun records the failure and returns."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    warnings.filterwarnings("ignore", message=MID_EPOCH_WARNING)
    if not is_rank_zero_process():
        trainer, module, datamodule = build_run(cfg, run_dir)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg, run_dir))
        return
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
        if not check_run_dir(run_dir, config):
            print(f"ncdepth-train: {run_dir} holds a finished run with this config: nothing to do")
            return
        trainer, module, datamodule = build_run(cfg, run_dir)
        resume_from = resume_candidate(cfg, run_dir)
        recorded_attempt = None if resume_from is None else check_resume_files(run_dir, resume_from, module)
    except (*BUILD_ERRORS, RunRefused) as error:  # names the key or the files; no traceback
        _refuse(error, cfg, run_dir, multirun, record=not isinstance(error, RunRefused))
        return
    except Exception as error:
        if not multirun:
            raise
        _refuse(error, cfg, run_dir, multirun, record=True, details=traceback.format_exc())
        return
    try:
        with RunLock(run_dir):
            _train(cfg, config, run_dir, trainer, module, datamodule, multirun, recorded_attempt)
    except (RunLocked, RunRefused) as error:
        _refuse(error, cfg, run_dir, multirun, record=False)


def _train(
    cfg: DictConfig,
    config: dict[str, Any],
    run_dir: Path,
    trainer: pl.Trainer,
    module: NCModule,
    datamodule: pl.LightningDataModule,
    multirun: bool,
    recorded_attempt: int | None,
) -> None:
    """Fit under the lock, recording the outcome in ``status.json``; ``recorded_attempt`` is the
    attempt that wrote the checkpoint it resumes from, if any (:func:`check_resume_files`)."""
    if not check_run_dir(run_dir, config):  # the directory may have changed while we built
        print(f"ncdepth-train: {run_dir} holds a finished run with this config: nothing to do")
        return
    status = read_status(run_dir)
    save_run_config(cfg, run_dir)
    attempts = 1 + int(status.get("attempts", 0) if status else recorded_attempt or 0)
    write_status(run_dir, RUNNING, fingerprint=config_fingerprint(config), config=config, attempts=attempts)
    checkpointing = next(callback for callback in trainer.callbacks if isinstance(callback, RunCheckpoint))
    checkpointing.attempt = attempts
    with log_to_file(run_dir / RUN_LOG):
        if status is None and recorded_attempt:
            log.warning(
                "%s was missing: attempts continue from the checkpoint's record (this is attempt %d)",
                STATUS_FILE,
                attempts,
            )
        metrics = run_dir / METRICS_FILE
        if recorded_attempt is not None and metrics.exists() and not metrics.read_bytes().endswith(b"\n"):
            log.warning("%s ends mid-line: cut back to the checkpoint's rows, which are all whole", metrics)
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg, run_dir))
        except BaseException as error:  # the traceback goes to train.log; the reason to status.json
            if checkpointing.stopped_by is not None:  # a preemption: submitit's exit or ours
                signame = signal.Signals(checkpointing.stopped_by).name
                _record_failure(run_dir, f"stopped by {signame} after a checkpoint: resumes when rerun")
                raise
            reason = f"{type(error).__name__}: {error}".strip()
            _append_traceback(run_dir / RUN_LOG)
            log.error("training failed: %s (the traceback is in %s)", reason, run_dir / RUN_LOG)
            _record_failure(run_dir, reason)
            if not isinstance(error, Exception):
                raise
            if multirun:
                return
            print(f"ncdepth-train: error: training failed: {reason}", file=sys.stderr)
            raise SystemExit(1) from None
    write_status(run_dir, FINISHED)


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


def _append_traceback(path: Path) -> None:
    """Append the traceback being handled to ``path`` (nothing when that fails: a full disk)."""
    try:
        with path.open("a") as stream:
            stream.write(traceback.format_exc())
    except OSError:
        pass


def _record_failure(run_dir: Path, reason: str) -> None:
    """``status.json`` failed with ``reason``; when even that cannot be written (the disk is full),
    the run stays ``running`` without an owner, which the report lists as interrupted."""
    try:
        write_status(run_dir, FAILED, reason)
    except OSError:
        log.exception("could not record the failure in %s", run_dir)


def _refuse(
    error: BaseException,
    cfg: DictConfig,
    run_dir: Path,
    multirun: bool,
    *,
    record: bool,
    details: str = "",
) -> None:
    """Report ``error`` in one line. In a multirun, a job directory that holds no earlier run
    records it (``.hydra/``, ``status.json`` failed) and the sweep goes on; a single run exits 2."""
    if isinstance(error, OmegaConfBaseException):  # an interpolation that does not resolve
        message = one_line_config_error(error)
    else:
        message = f"{type(error).__name__}: {error}" if details else str(error)
    print(f"ncdepth-train: error: {message}", file=sys.stderr)
    if not multirun:
        raise SystemExit(2)
    if record and read_status(run_dir) is None and not (run_dir / CONFIG_FILE).exists():
        save_run_config(cfg, run_dir)
        write_status(run_dir, FAILED, message, attempts=1)
        if details:
            (run_dir / RUN_LOG).write_text(details)


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
