"""A resumed run continues its logger run: a run killed with ``kill -9`` and rerun in its directory
writes the CSV and TensorBoard logs of both attempts into ``version_0``; a W&B logger gets the same
run id on every attempt of a run (``ncdepth.training.loggers``)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from ncdepth.training.loggers import continuing_options

TESTS = Path(__file__).resolve().parent
NCDEPTH_TRAIN = Path(sys.executable).parent / "ncdepth-train"
PYTHONPATH = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(TESTS)]))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": PYTHONPATH}
RUN = [
    "data=digits",
    "model.depth=2",
    "model.width=32",
    "trainer.max_epochs=4",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "logger=[csv,tensorboard]",
]
KILL = [
    "+callbacks.kill._target_=fault_injection.KillAt",
    "+callbacks.kill.point=epoch_end",
    "+callbacks.kill.epoch=2",
]


def test_a_killed_and_rerun_run_continues_its_csv_and_tensorboard_logs(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [str(NCDEPTH_TRAIN), f"hydra.run.dir={run_dir}", *RUN]
    killed = subprocess.run([*command, *KILL], capture_output=True, text=True, env=ENV, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    rows_before = list(csv.DictReader((run_dir / "lightning_logs" / "version_0" / "metrics.csv").open()))
    rerun = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert sorted(path.name for path in (run_dir / "lightning_logs").iterdir()) == ["version_0"]
    assert sorted(path.name for path in (run_dir / "tensorboard").iterdir()) == ["version_0"]
    assert len(list((run_dir / "tensorboard" / "version_0").glob("events.out.tfevents.*"))) == 2
    rows = list(csv.DictReader((run_dir / "lightning_logs" / "version_0" / "metrics.csv").open()))
    kept = [{key: row.get(key, "") for key in rows_before[0]} for row in rows[: len(rows_before)]]
    assert kept == rows_before  # the first attempt's rows are kept (new columns may join them)
    epochs = {int(float(row["epoch"])) for row in rows if row.get("epoch")}
    assert epochs == {0, 1, 2, 3, 4}  # both attempts (epochs 0-4, as metrics.csv counts them), in one run


def test_a_wandb_logger_keeps_one_run_id_per_run(tmp_path: Path) -> None:
    wandb = {"_target_": "pytorch_lightning.loggers.WandbLogger", "project": "p"}
    first = continuing_options(wandb, tmp_path / "0", "f1")
    assert first["resume"] == "allow" and len(first["id"]) == 16
    assert continuing_options(wandb, tmp_path / "0", "f1") == first  # a requeue or relaunch
    assert continuing_options(wandb, tmp_path / "1", "f1")["id"] != first["id"]  # another job
    assert continuing_options(wandb, tmp_path / "0", "f2")["id"] != first["id"]  # another run there
    assert continuing_options({**wandb, "id": "mine"}, tmp_path / "0", "f1") == {}
    assert continuing_options({"_target_": "pytorch_lightning.loggers.CSVLogger"}, tmp_path, "f1") == {}
