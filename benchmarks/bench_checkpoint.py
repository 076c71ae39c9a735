"""What the per-epoch checkpoint costs: the default run (MLP-4-256, embedded MNIST subset, batch 128).

The run is built by ``ncdepth-train``'s own ``build_run`` from the composed default config and
trained for a few epochs; every ``last.ckpt`` write (``RunCheckpoint.save``: serialise, fsync,
keep ``previous.ckpt``, rename) is timed beside the epoch it follows (training + validation, as
the NC callback clocks it). Prints the median of each and their ratio (target: under 5 %).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir

from ncdepth.cli import CONFIG_DIR
from ncdepth.cli.train import build_run
from ncdepth.rundir import LAST_CHECKPOINT
from ncdepth.training import NeuralCollapseCallback
from ncdepth.training.checkpointing import RunCheckpoint

TARGET = 0.05


def main(quick: bool = False, device: str = "cpu") -> None:
    epochs = 3 if quick else 8
    overrides = [
        f"trainer.max_epochs={epochs}",
        f"nc.every_n_epochs={epochs}",  # analyses at 0 and at the end only: epochs are clean
        "callbacks=none",
        "trainer.enable_progress_bar=false",
        f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer, module, datamodule, _ = build_run(cfg, Path(run_dir))
        checkpoint = next(cb for cb in trainer.callbacks if isinstance(cb, RunCheckpoint))
        save_seconds: list[float] = []
        save = checkpoint.save

        def timed_save(*args: Any) -> None:
            started = time.perf_counter()
            save(*args)
            save_seconds.append(time.perf_counter() - started)

        checkpoint.save = timed_save
        trainer.fit(module, datamodule=datamodule)
        nc = next(cb for cb in trainer.callbacks if isinstance(cb, NeuralCollapseCallback))
        size_mb = (Path(run_dir) / LAST_CHECKPOINT).stat().st_size / 2**20
    epoch = statistics.median(nc.epoch_seconds)
    saved = statistics.median(save_seconds)
    ratio = saved / epoch
    model = f"MLP-{cfg.model.depth}-{cfg.model.width}, {cfg.data.dataset}"
    print(f"{model}: {len(nc.epoch_seconds)} epochs, {len(save_seconds)} checkpoints of {size_mb:.1f} MB")
    print(f"  epoch (train + val), median   {epoch * 1e3:9.1f} ms")
    print(f"  checkpoint write, median      {saved * 1e3:9.1f} ms")
    verdict = "PASS" if ratio < TARGET else "MISS"
    print(f"  checkpoint / epoch            {ratio:9.3f}   target < {TARGET:.2f}  {verdict}")
