"""Lightning loggers whose run continues when a run resumes (a Slurm requeue, a relaunched sweep,
a rerun in the same directory).

Every attempt of a run writes to the logger run of its first attempt: ``version: 0`` of the CSV and
TensorBoard loggers (``ncdepth/conf/logger/``), so ``lightning_logs/version_0`` and
``tensorboard/version_0`` hold the whole run. Lightning's ``CSVLogger`` deletes the ``metrics.csv``
of a version directory it opens again; :class:`ContinuingCSVLogger` appends to it. A W&B logger gets
one run id per run directory and ``resume="allow"`` (:func:`continuing_options`), so W&B continues
the same run rather than opening a new one (Lightning issue #13524).

What is logged between the last checkpoint and the interruption is logged again after the resume,
at the same steps: a reader keeps the last row (point) of each step, as TensorBoard does.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV experiment writer, appending to the ``metrics.csv`` it finds."""

    def _check_log_dir_exists(self) -> None:
        """Keep the earlier attempts' rows (Lightning's deletes them) and their header."""
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])


class ContinuingCSVLogger(CSVLogger):
    """``CSVLogger`` that continues the ``metrics.csv`` of its version directory (module docstring)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def continuing_options(node: Mapping[str, Any], run_dir: Path, fingerprint: str) -> dict[str, Any]:
    """Keyword arguments that make the logger of config ``node`` continue the run's logger run:
    for a ``WandbLogger`` whose config sets no ``id``, ``id`` = the first 16 hex digits of
    ``sha256(<run directory>\\n<config fingerprint>)`` (the same for every attempt of the run, and
    a new one for another run) and ``resume="allow"`` unless set; nothing for other loggers."""
    if str(node.get("_target_", "")).rsplit(".", 1)[-1] != "WandbLogger" or node.get("id") is not None:
        return {}
    digest = hashlib.sha256(f"{Path(run_dir).resolve()}\n{fingerprint}".encode()).hexdigest()[:16]
    return {"id": digest, "resume": node.get("resume") or "allow"}
