"""A Lightning callback that kills its own training process at one chosen point, for resume tests.

Added to a real ``ncdepth-train`` run through the config (``+callbacks.kill._target_=
fault_injection.KillAt``, with ``tests/`` on ``PYTHONPATH``), it sends ``SIGKILL`` (or another
signal) to the process itself, so the run dies exactly where a hard kill at that moment would
leave it. ``callbacks`` may change on resume, so the rerun drops it and must end like an
uninterrupted run.

Points (``epoch`` counts completed epochs, as ``metrics.csv`` does):

- ``batch``: after training batch ``batch`` of epoch ``epoch + 1`` (mid-epoch);
- ``analysis``: while the analysis at ``epoch`` appends to ``metrics.csv`` (half its rows written);
- ``epoch_end``: after the analysis at ``epoch`` is recorded, before its checkpoint is written;
- ``checkpoint_write``: while the checkpoint of ``epoch`` is written (temporary file half written);
- ``train_end``: after ``summary.json`` is written, before the final checkpoint.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from ncdepth.training import NeuralCollapseCallback

POINTS = ("batch", "analysis", "epoch_end", "checkpoint_write", "train_end")


def die(signal_name: str = "SIGKILL", group: bool = False) -> None:
    """Send ``signal_name`` to this process, or with ``group`` to its whole process group (every
    process of a DDP run started in its own session); ``SIGKILL`` never returns."""
    if group:
        os.killpg(os.getpgrp(), signal.Signals[signal_name])
    os.kill(os.getpid(), signal.Signals[signal_name])


class KillAt(pl.Callback):
    """Send ``signal`` to this process (with ``group``, to its process group: a DDP run's every
    process, whichever reaches the point first) at ``point`` of ``epoch`` (module docstring)."""

    def __init__(
        self, point: str, epoch: int, batch: int = 0, signal: str = "SIGKILL", group: bool = False
    ) -> None:
        if point not in POINTS:
            raise ValueError(f"point must be one of {POINTS}, got {point!r}")
        self.point, self.epoch, self.batch, self.signal, self.group = point, epoch, batch, signal, group

    def die(self) -> None:
        die(self.signal, self.group)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.point == "analysis":
            nc = next(cb for cb in trainer.callbacks if isinstance(cb, NeuralCollapseCallback))
            append = nc.table.append

            def half_append(epoch: int, results: Any) -> None:
                if epoch != self.epoch:
                    return append(epoch, results)
                before = nc.table.size()
                append(epoch, results)
                os.truncate(nc.table.path, before + (nc.table.size() - before) // 2)
                self.die()

            nc.table.append = half_append
        if self.point == "checkpoint_write":
            io = trainer.strategy.checkpoint_io
            save = io.save_checkpoint

            def half_save(checkpoint: dict, path: Any, *args: Any, **kwargs: Any) -> None:
                save(checkpoint, path, *args, **kwargs)
                if trainer.current_epoch + 1 == self.epoch:
                    os.truncate(path, Path(path).stat().st_size // 2)
                    self.die()

            io.save_checkpoint = half_save

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        if self.point == "batch" and trainer.current_epoch == self.epoch and progress.processed == self.batch:
            self.die()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.point == "epoch_end" and trainer.current_epoch + 1 == self.epoch:
            self.die()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.point == "train_end":
            self.die()


class Pause(pl.Callback):
    """Sleep ``seconds`` after every training epoch: keeps a short run alive while a test acts."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        time.sleep(self.seconds)


class WaitFor(pl.Callback):
    """After training epoch ``epoch``, wait (up to ``timeout`` seconds) until ``path`` exists: holds
    a run at a known point until the test lets it go on."""

    def __init__(self, path: str, epoch: int = 1, timeout: float = 300.0) -> None:
        self.path, self.epoch, self.timeout = Path(path), epoch, timeout

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch + 1 != self.epoch:
            return
        deadline = time.monotonic() + self.timeout
        while not self.path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)


class DiskFullAt(pl.Callback):
    """Make the checkpoint written at ``epoch`` fail as a full disk does (``OSError`` ENOSPC),
    for machines where a small tmpfs cannot be mounted."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        io = trainer.strategy.checkpoint_io
        save = io.save_checkpoint

        def full_disk_save(checkpoint: dict, path: Any, *args: Any, **kwargs: Any) -> None:
            if trainer.current_epoch + 1 == self.epoch:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            save(checkpoint, path, *args, **kwargs)

        io.save_checkpoint = full_disk_save
