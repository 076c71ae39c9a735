"""Checkpoints a run can be resumed from after any interruption.

:class:`RunCheckpoint` writes ``checkpoints/last.ckpt``

- at the end of every training epoch, after the NC analysis of that epoch;
- every ``every_minutes`` of wall clock within an epoch (when > 0), at a batch boundary;
- when training ends, after the final analysis and ``summary.json``;
- at the next batch boundary after SIGTERM, SIGUSR1 or SIGUSR2 (Slurm's preemption and time-limit
  signals), before the process stops.

Each write goes to a temporary file that is fsynced and renamed over ``last.ckpt``; the checkpoint
it replaces becomes ``previous.ckpt`` (a hard link taken before the rename), so at every instant
the directory holds at least one complete checkpoint. :func:`resumable_checkpoint` picks the
newest one that reads back whole.

**Signals.** While training runs, the handler (which replaces Lightning's SIGTERM handler) only
records the signal; the checkpoint is written at the next training batch end, or at the end of
the epoch's analysis, where the training state is consistent. Under data-parallel training the
processes agree at every batch end (one all-reduce of two integers): when any of them received a
signal or is due for an interval checkpoint, all of them save and stop, or save, together. Then the handler that was installed
before training started is called: under submitit that is submitit's own, which requeues the task
and exits, so submitit owns the requeue (Lightning's Slurm requeue is switched off by
``ncdepth-train``): :attr:`RunCheckpoint.handed_over`. When that handler raises instead (submitit
out of requeues after ``max_num_timeout`` time-outs), the error is kept in
:attr:`RunCheckpoint.refused` and the run stops with :class:`RunInterrupted`, as it does when no
earlier handler was installed (exit status ``128 + signal``).

**What a resume guarantees.** From an end-of-epoch checkpoint, the resumed run computes exactly
what the uninterrupted run computes (same device and process count): weights, optimizer,
scheduler, loop counters, the global random generators (:class:`RandomStateCheckpoint`), the
shuffling position (``NCDataModule``) and the NC callback's state are restored, and the rows that
``metrics.csv`` gained after the checkpoint are cut before they are measured again. From a
mid-epoch checkpoint (interval or signal) the same holds with ``NCDataModule``, which restores the
epoch's permutation and skips the batches already trained on, *unless* the train loader draws
random numbers itself (``data.augment=true``, or worker processes that do): those draws for the
batch Lightning had prefetched are not replayed, so the rest of that epoch sees different crops.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import zipfile
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Checkpoint

from ncdepth.rundir import LAST_CHECKPOINT, PREVIOUS_CHECKPOINT, fsync_directory

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class RunInterrupted(SystemExit):
    """Training stopped on a signal after saving a checkpoint, with no earlier handler to take
    over; exits with ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


class RunCheckpoint(Checkpoint):
    """Keep ``run_dir/checkpoints/last.ckpt`` (and ``previous.ckpt``) current (module docstring).

    Lightning runs :class:`~pytorch_lightning.callbacks.Checkpoint` callbacks after all others, so
    each save sees the epoch's analysis already recorded.
    """

    def __init__(self, run_dir: str | Path, every_minutes: float = 0.0) -> None:
        self.last = Path(run_dir) / LAST_CHECKPOINT
        self.previous = Path(run_dir) / PREVIOUS_CHECKPOINT
        self.every_seconds = 60.0 * every_minutes
        self._last_saved = time.monotonic()
        self._signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        self.stopped_by: int | None = None
        """The signal that stopped training after a checkpoint, if one did."""
        self.handed_over = False
        """Whether the earlier handler took the stop over (it exited: submitit requeued the task)."""
        self.refused: str | None = None
        """Why the earlier handler would not take the stop over (it raised: submitit is out of
        requeues), if it would not."""
        self.attempt = 1
        """The attempt at the run that writes the checkpoints (``status.json``'s ``attempts``),
        recorded in them so that a run directory that lost ``status.json`` keeps counting."""

    def state_dict(self) -> dict[str, Any]:
        return {"attempt": self.attempt}

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Note the signal handlers in place before Lightning adds its own (submitit's, say)."""
        if stage == "fit":
            self._previous_handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Take over the stop signals (Lightning's SIGTERM handler included) while training runs;
        only in the main thread, as Python requires."""
        try:
            for signum in STOP_SIGNALS:
                signal.signal(signum, self._record_signal)
        except ValueError:  # not the main thread: signals stay with whoever has them
            pass

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Put the handlers noted in :meth:`setup` back."""
        for signum, handler in self._previous_handlers.items():
            if handler is not None:
                signal.signal(signum, handler)
        self._previous_handlers = {}

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        """Save on a pending signal (then stop), or when ``every_minutes`` have passed."""
        due = self.every_seconds > 0 and time.monotonic() - self._last_saved >= self.every_seconds
        self._signal, due = _agree(self._signal, due)
        if self._signal is not None:
            self._stop(trainer)
        elif due:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save after every epoch but the last, whose checkpoint :meth:`on_train_end` writes once
        the final analysis and the summary are on disk; stop here on a pending signal."""
        if trainer.current_epoch + 1 < (trainer.max_epochs or 0):
            self.save(trainer)
            self._signal, _ = _agree(self._signal, False)
            if self._signal is not None:
                self._stop(trainer, saved=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The final checkpoint: a rerun of a finished run resumes here and trains nothing. A
        signal that arrived during the final analysis needs no stop: the run is complete."""
        self.save(trainer)
        if self._signal is not None:
            log.warning(
                "received %s as training ended: the run is complete", signal.Signals(self._signal).name
            )
            self._signal = None

    # ------------------------------------------------------------------ saving
    def save(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` atomically, keeping the one it replaces as ``previous.ckpt``."""
        temporary = self.last.with_name(f".{self.last.name}.tmp")
        try:
            trainer.save_checkpoint(temporary, weights_only=False)  # every rank takes part; rank zero writes
            if trainer.is_global_zero:
                with temporary.open("rb+") as stream:
                    os.fsync(stream.fileno())
        except BaseException:  # a full disk, say: last.ckpt and previous.ckpt stay as they were
            if trainer.is_global_zero:
                temporary.unlink(missing_ok=True)
            raise
        if trainer.is_global_zero:
            if self.last.exists():
                keep = self.previous.with_name(f".{self.previous.name}.tmp")
                keep.unlink(missing_ok=True)
                os.link(self.last, keep)
                os.replace(keep, self.previous)
            os.replace(temporary, self.last)
            fsync_directory(self.last.parent)
        self._last_saved = time.monotonic()

    # ------------------------------------------------------------------ signals
    def _record_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._signal is None:
            log.warning("received %s: saving a checkpoint at the next batch end", signal.Signals(signum).name)
        self._signal = signum

    def _stop(self, trainer: pl.Trainer, saved: bool = False) -> None:
        signum, self._signal = self._signal, None
        assert signum is not None
        if not saved:
            self.save(trainer)
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        log.warning(
            "checkpoint saved at epoch %d, batch %d after %s; stopping",
            trainer.current_epoch,
            progress.processed,
            signal.Signals(signum).name,
        )
        self.stopped_by = signum
        previous = self._previous_handlers.get(signum)
        if callable(previous):  # e.g. submitit's: requeues the task, then exits
            try:
                previous(signum, None)
            except SystemExit:
                self.handed_over = True
                raise
            except Exception as error:  # submitit: "Job not requeued because: timed-out too many times."
                self.refused = " ".join(str(error).split()) or type(error).__name__
                raise RunInterrupted(signum) from None
        raise RunInterrupted(signum)


def _agree(signum: int | None, due: bool) -> tuple[int | None, bool]:
    """The decisions of every process of a data-parallel run, made one (every process must take
    part in a checkpoint): a signal any of them received (the largest number) and whether an
    interval checkpoint is due on any of them. As they are, in a single process."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return signum, due
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    decisions = torch.tensor([signum or 0, int(due)], device=device)
    dist.all_reduce(decisions, op=dist.ReduceOp.MAX)
    agreed_signum, agreed_due = decisions.tolist()
    return agreed_signum or None, bool(agreed_due)


def is_complete(path: str | Path) -> bool:
    """Whether ``path`` is a whole checkpoint: a zip archive (torch's format) whose members all
    match their CRC-32 (a truncated or corrupted file fails)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError):
        return False


def checked_checkpoint(path: str | Path, module: torch.nn.Module, key: str = "ckpt_path") -> dict[str, Any]:
    """The training checkpoint at ``path`` (memory-mapped, tensors only), once it is known to be
    one and to hold the parameters of ``module``, with their shapes. Otherwise raises
    ``ValueError`` in one line naming ``key``, the file and the first difference."""
    advice = "give the checkpoints/last.ckpt of a run with this config, or ckpt_path=null"
    if not is_complete(path):
        raise ValueError(
            f"{key}={path} is not a checkpoint (not a whole torch archive: truncated, or another "
            f"kind of file); {advice}"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # an archive torch cannot read safely: say why, in one line
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        raise ValueError(f"{key}={path} cannot be read as a checkpoint ({reason}); {advice}") from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{key}={path} is not a training checkpoint (it has no state_dict); {advice}")
    expected = module.state_dict()
    difference = next(
        (
            f"parameter {name} has shape {list(state[name].shape)} there and {list(tensor.shape)} here"
            for name, tensor in expected.items()
            if name in state and tuple(state[name].shape) != tuple(tensor.shape)
        ),
        None,
    )
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    if difference is None and missing:
        difference = f"it lacks the parameter {missing[0]} of this model"
    if difference is None and unexpected:
        difference = f"it has a parameter {unexpected[0]} that this model lacks"
    if difference is not None:
        raise ValueError(f"{key}={path} is a checkpoint of another config: {difference}; {advice}")
    return checkpoint


def callback_state(checkpoint: dict[str, Any], key: str) -> Any:
    """The value of ``key`` in the first callback state of ``checkpoint`` that has it, or ``None``."""
    for state in (checkpoint.get("callbacks") or {}).values():
        if isinstance(state, dict) and key in state:
            return state[key]
    return None


def resumable_checkpoint(run_dir: str | Path, *, quiet: bool = False) -> Path | None:
    """The newest complete checkpoint of ``run_dir`` (``last.ckpt``, else ``previous.ckpt``), or
    ``None``; each one found broken is named in a warning (unless ``quiet``)."""
    for candidate in (Path(run_dir) / LAST_CHECKPOINT, Path(run_dir) / PREVIOUS_CHECKPOINT):
        if not candidate.exists():
            continue
        if is_complete(candidate):
            return candidate
        if not quiet:
            log.warning(
                "checkpoint %s is truncated or corrupt (%d bytes): skipped",
                candidate,
                candidate.stat().st_size,
            )
    return None
