"""The life of one job's run directory, shared by ``ncdepth-train``, ``ncdepth-ufm`` and ``ncdepth-kernels``.

:func:`run_job` takes one job of an :class:`App` through these steps (file names and formats:
:mod:`ncdepth.rundir`):

1. A directory that already holds a run is compared with the resolved config (:func:`check_run_dir`):
   a difference in a key outside :attr:`App.resumable` is refused, listing the keys, and changes
   nothing; a finished run with no more work (:attr:`App.more_work`) exits 0 and changes nothing.
2. ``build()`` validates the config and builds whatever the job needs before the directory
   receives a file: one of :attr:`App.build_errors` (a wrong value) is one line naming the key.
3. The process takes the directory's :class:`~ncdepth.rundir.RunLock` (another live owner: refused,
   naming it), checks again, writes ``.hydra/`` and ``status.json`` (``running``, with ``app``,
   ``fingerprint``, ``config`` and ``attempts``) and runs ``work(built)`` with the root logger also
   appended to the app's log file.
4. ``status.json`` ends ``finished``, or ``failed`` with the reason (the traceback in the log; a
   single run prints one line and exits 1), or, when ``stopped(built)`` says a signal stopped the
   job after a checkpoint (a :class:`Stop`), its state (``requeued`` or ``failed``) and reason, and
   the exception re-raised (the requeue belongs to whoever sent the signal) unless the stop is quiet
   in a multirun.

A refusal ends a single run with exit status 2, a failure with 1; in a multirun it is printed in one
line, a job directory holding no earlier run records it (``.hydra/``, ``status.json`` failed), and the
sweep goes on to its next job. The sweep's end
(:mod:`ncdepth.cli.sweep_callbacks`) accounts for every job and exits 1 unless all finished.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ncdepth.cli.errors import one_line_config_error
from ncdepth.cli.run_files import log_to_file, save_run_config
from ncdepth.rundir import (
    CONFIG_FILE,
    FAILED,
    FINISHED,
    RUNNING,
    RunLock,
    RunLocked,
    config_differences,
    config_fingerprint,
    read_status,
    write_status,
)

log = logging.getLogger(__name__)

Built = TypeVar("Built")


def _no_more_work(earlier: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    return False


@dataclass(frozen=True)
class App:
    """What differs between the apps: ``name`` (``status.json``'s ``app``, as
    :data:`ncdepth.rundir.APPS` lists them), the ``program`` that prefixes its messages, its
    ``log_file``, what its ``work_name`` is called in a failure's one line, the ``build_errors`` that are a config's fault (one line, no traceback), the keys
    that may change when a run is rerun (``resumable(config)``) and whether a finished run asked for
    a config still has work (``more_work(earlier, config)``, e.g. more epochs)."""

    name: str
    program: str
    log_file: str
    work_name: str = "job"
    build_errors: tuple[type[BaseException], ...] = (ValueError,)
    resumable: Callable[[Mapping[str, Any]], Sequence[str]] = field(default=lambda config: ())
    more_work: Callable[[Mapping[str, Any], Mapping[str, Any]], bool] = _no_more_work


@dataclass(frozen=True)
class Stop:
    """How a signal ended a job after a checkpoint: ``state`` and ``reason`` for ``status.json``
    (``requeued`` when the scheduler starts it again, else ``failed``), and whether the job then ends
    ``quiet``ly in a multirun (nothing will requeue it: the sweep goes on, no traceback) instead of
    re-raising (the requeue belongs to whoever sent the signal)."""

    state: str
    reason: str
    quiet: bool = False


class RunRefused(Exception):
    """The run directory holds a run this process must not touch."""


def run_job(
    app: App,
    cfg: DictConfig,
    build: Callable[[], Built],
    work: Callable[[Built], None],
    stopped: Callable[[Built], Stop | None] = lambda built: None,
    attempts_recorded: Callable[[Built], int] = lambda built: 0,
) -> None:
    """Run one job of ``app`` in the Hydra run directory through the steps of the module docstring.
    ``attempts_recorded(built)``: the attempts made before, by a record other than ``status.json``
    (a checkpoint's), counted on from when ``status.json`` is missing."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
        if not check_run_dir(app, run_dir, config):
            _nothing_to_do(app, run_dir)
            return
        built = build()
    except (*app.build_errors, RunRefused) as error:  # names the key or the files; no traceback
        refuse(app, error, cfg, run_dir, multirun, record=not isinstance(error, RunRefused))
        return
    except Exception as error:
        if not multirun:
            raise
        refuse(app, error, cfg, run_dir, multirun, record=True, details=traceback.format_exc())
        return
    try:
        with RunLock(run_dir):
            _run_owned(
                app,
                cfg,
                config,
                run_dir,
                multirun,
                lambda: work(built),
                lambda: stopped(built),
                lambda: attempts_recorded(built),
            )
    except (RunLocked, RunRefused) as error:
        refuse(app, error, cfg, run_dir, multirun, record=False)


def _run_owned(
    app: App,
    cfg: DictConfig,
    config: dict[str, Any],
    run_dir: Path,
    multirun: bool,
    work: Callable[[], None],
    stopped: Callable[[], Stop | None],
    attempts_recorded: Callable[[], int],
) -> None:
    """Run ``work`` under the lock, recording the outcome in ``status.json``."""
    if not check_run_dir(app, run_dir, config):  # the directory may have changed while we built
        _nothing_to_do(app, run_dir)
        return
    status = read_status(run_dir)
    save_run_config(cfg, run_dir)
    attempts = 1 + int(status.get("attempts", 0) if status else attempts_recorded())
    fingerprint = config_fingerprint(config, app.resumable(config))
    write_status(run_dir, RUNNING, app=app.name, fingerprint=fingerprint, config=config, attempts=attempts)
    with log_to_file(run_dir / app.log_file):
        try:
            work()
        except BaseException as error:  # the traceback goes to the log; the reason to status.json
            interruption = stopped()
            if interruption is not None:  # a preemption: stopped after a checkpoint
                record_failure(run_dir, interruption.reason, interruption.state)
                if interruption.quiet and multirun:
                    return
                raise
            reason = f"{type(error).__name__}: {error}".strip()
            _append_traceback(run_dir / app.log_file)
            log.error("%s failed: %s (the traceback is in %s)", app.work_name, reason, run_dir / app.log_file)
            record_failure(run_dir, reason)
            if not isinstance(error, Exception):
                raise
            if multirun:
                return
            print(f"{app.program}: error: {app.work_name} failed: {reason}", file=sys.stderr)
            raise SystemExit(1) from None
    write_status(run_dir, FINISHED)


def _append_traceback(path: Path) -> None:
    """Append the traceback being handled to ``path`` (nothing when that fails: a full disk)."""
    try:
        with path.open("a") as stream:
            stream.write(traceback.format_exc())
    except OSError:
        pass


def _nothing_to_do(app: App, run_dir: Path) -> None:
    print(f"{app.program}: {run_dir} holds a finished run with this config: nothing to do")


def check_run_dir(app: App, run_dir: Path, config: dict[str, Any]) -> bool:
    """Whether ``run_dir`` still has work for ``config``: ``False`` for a finished run with no
    :attr:`App.more_work`. Raises :class:`RunRefused` when the directory holds a run whose config
    differs in a key outside :attr:`App.resumable`."""
    status = read_status(run_dir)
    earlier = status.get("config") if status else legacy_config(run_dir)
    if earlier is None:
        return True
    allowed = sorted(set(app.resumable(earlier)) & set(app.resumable(config)))
    differences = config_differences(earlier, config, allowed)
    if differences:
        may_change = ", ".join(app.resumable(config)) or "none"
        raise RunRefused(
            f"run directory {run_dir} holds a run with another config; rerunning there would mix two "
            f"experiments. Differing keys: {'; '.join(differences)}. Only these keys may change on "
            f"resume: {may_change}. Choose another hydra.run.dir for a new run."
        )
    finished = bool(status) and status.get("state") == FINISHED
    return not (finished and not app.more_work(earlier, config))


def legacy_config(run_dir: Path) -> dict[str, Any] | None:
    """The resolved ``.hydra/config.yaml`` of a run directory written before ``status.json``."""
    if not (run_dir / CONFIG_FILE).is_file():
        return None
    try:
        return OmegaConf.to_container(OmegaConf.load(run_dir / CONFIG_FILE), resolve=True)
    except Exception:  # an interpolation this process cannot resolve: compare it unresolved
        return OmegaConf.to_container(OmegaConf.load(run_dir / CONFIG_FILE))


def record_failure(run_dir: Path, reason: str, state: str = FAILED) -> None:
    """``status.json`` ``state`` (failed, or requeued) with ``reason``; when even that cannot be written
    (the disk is full), the run stays ``running`` without an owner, which the report lists as interrupted."""
    try:
        write_status(run_dir, state, reason)
    except OSError:
        log.exception("could not record the failure in %s", run_dir)


def refuse(
    app: App,
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
    print(f"{app.program}: error: {message}", file=sys.stderr)
    if not multirun:
        raise SystemExit(2)
    if record and read_status(run_dir) is None and not (run_dir / CONFIG_FILE).exists():
        save_run_config(cfg, run_dir)
        write_status(run_dir, FAILED, message, app=app.name, attempts=1)
        if details:
            (run_dir / app.log_file).write_text(details)
