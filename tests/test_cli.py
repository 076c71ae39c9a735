"""``ncdepth-train``: every config composes, real short runs, exact resume, bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException

from ncdepth.cli import CONFIG_DIR
from ncdepth.training.config import (
    TOP_LEVEL_KEYS,
    AnalysisConfig,
    LossConfig,
    OptimizerConfig,
    SchedulerConfig,
)
from ncdepth.validation import check_keys, from_node

NCDEPTH_TRAIN = Path(sys.executable).parent / "ncdepth-train"
EPOCHS = 8
FAST = [
    "data=digits",
    "data.batch_size=32",
    "model.depth=4",
    "model.width=128",
    f"trainer.max_epochs={EPOCHS}",
    "nc.every_n_epochs=4",
    "callbacks=none",
    "trainer.enable_progress_bar=false",
    "scheduler=constant",
]


OTHER_APP_GROUPS = ("kernels_experiment", "ufm_experiment", "lm_experiment")
"""The experiment groups of the other Hydra apps (``kernels.yaml``, ``ufm.yaml``, ``lm.yaml``), tested apart."""


def all_config_choices() -> list[str]:
    """One override per config file of every group under ``ncdepth/conf/`` (experiments appended), except
    the groups of the other apps (:data:`OTHER_APP_GROUPS`)."""
    overrides = []
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        group = path.parent.relative_to(CONFIG_DIR).as_posix()
        if group in (".", "local", *OTHER_APP_GROUPS):
            continue
        prefix = "+" if group == "experiment" else ""
        overrides.append(f"{prefix}{group}={path.stem}")
    return overrides


@pytest.mark.parametrize("override", all_config_choices())
def test_every_config_composes_and_validates(override: str) -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        try:
            cfg = compose(config_name="train", overrides=[override])
        except MissingConfigException as error:
            if override.startswith("hydra/launcher="):  # its launcher plugin is an optional extra
                pytest.skip(f"{override}: launcher plugin not installed: {error}")
            raise
    check_keys("", cfg.keys(), TOP_LEVEL_KEYS)
    from_node(LossConfig, "loss", cfg.loss)
    from_node(OptimizerConfig, "optimizer", cfg.optimizer)
    from_node(SchedulerConfig, "scheduler", cfg.scheduler)
    from_node(AnalysisConfig, "nc", cfg.nc)
    assert "_target_" in cfg.model and "_target_" in cfg.data


def test_several_loggers_compose() -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["logger=[csv,tensorboard]"])
    assert set(cfg.logger) == {"csv", "tensorboard"}


def train(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """Run ``ncdepth-train`` into ``run_dir``; raise with its output if it fails."""
    result = subprocess.run(
        [str(NCDEPTH_TRAIN), f"hydra.run.dir={run_dir}", *FAST, *overrides],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("straight")
    train(run_dir)
    return run_dir


def test_training_writes_every_output(straight_run: Path) -> None:
    for name in (
        "metrics.csv",
        "summary.json",
        "train.log",
        "figures/ncc_train_error.png",
        "figures/ncc_train_error.pdf",
        "checkpoints/last.ckpt",
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
    ):
        assert (straight_run / name).is_file(), name
    summary = json.loads((straight_run / "summary.json").read_text())
    assert summary["epoch"] == EPOCHS
    assert summary["layers"] == ["layer1", "layer2", "layer3", "layer4"]
    assert set(summary["effective_depth"]) == {"0.01", "0.05", "0.1"}
    assert summary["config"]["trainer"]["max_epochs"] == EPOCHS
    assert summary["data"] and summary["timings"]["analyses"] == EPOCHS // 4 + 1
    table = pd.read_csv(straight_run / "metrics.csv")
    assert sorted(table["epoch"].unique()) == [0, 4, 8]
    assert set(table["split"]) == {"train", "test"}


MEMORISED = [
    "data=digits",
    "data.samples_per_class=20",
    "data.label_noise=0.3",
    "data.batch_size=20",
    "model.depth=4",
    "model.width=256",
    "optimizer.name=adam",
    "optimizer.lr=0.001",
    "optimizer.momentum=0",
    "optimizer.weight_decay=0",
    "scheduler=constant",
    "trainer.max_epochs=100",
    "+trainer.check_val_every_n_epoch=100",
    "nc.every_n_epochs=100",
    "callbacks=none",
    "trainer.enable_progress_bar=false",
]
"""200 digits, 30 % of their labels changed, memorised (train accuracy 1 after 100 epochs of Adam)."""
MEMORISED_SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def memorised_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sweep = tmp_path_factory.mktemp("memorised")
    seeds = ",".join(map(str, MEMORISED_SEEDS))
    result = subprocess.run(
        [str(NCDEPTH_TRAIN), "-m", f"seed={seeds}", *MEMORISED, f"hydra.sweep.dir={sweep}"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return sweep


def test_ncc_train_accuracy_rises_with_the_layer(memorised_sweep: Path) -> None:
    """Where the trend is certain: a network that memorised 30 % changed labels. Its last layer
    separates the trained (changed) classes, so its NCC train accuracy is near 1; its first layer,
    one layer from the input, still groups a changed sample with its true class, so its NCC
    accuracy against the trained labels stays near 1 - 0.3. Measured here (seeds 0, 1, 2):
    layer 1 0.685 / 0.695 / 0.715, layer 4 0.995 / 0.98 / 0.99; the gap asserted (0.2) is
    0.075 (15 samples of 200) below the smallest measured one, and the seed-mean accuracy rises
    by at least 0.027 from layer to layer, asserted with 0.01 of slack."""
    means = []
    for seed in MEMORISED_SEEDS:
        summary = json.loads((memorised_sweep / str(seed) / "summary.json").read_text())
        assert summary["accuracy"]["train"] >= 0.99, summary["accuracy"]  # memorised
        table = pd.read_csv(memorised_sweep / str(seed) / "metrics.csv")
        final = table[(table["epoch"] == 100) & (table["split"] == "train") & (table["metric"] == "ncc_acc")]
        accuracy = final.set_index("layer")["value"]
        assert accuracy.iloc[-1] - accuracy.iloc[0] >= 0.2, (seed, accuracy.to_dict())
        means.append(accuracy)
    mean = pd.concat(means, axis=1).mean(axis=1)
    assert (mean.diff().dropna() >= -0.01).all(), mean.to_dict()


def test_a_longer_max_epochs_continues_a_finished_run_to_the_same_end(
    straight_run: Path, tmp_path: Path
) -> None:
    train(tmp_path, "trainer.max_epochs=4")
    # trainer.max_epochs may change on resume: the finished 4-epoch run continues to 8
    train(tmp_path)
    assert "resuming from" in (tmp_path / "train.log").read_text()
    straight = json.loads((straight_run / "summary.json").read_text())
    resumed = json.loads((tmp_path / "summary.json").read_text())
    for key in ("epoch", "final_metrics", "accuracy", "effective_depth", "terminal_phase_epoch"):
        assert resumed[key] == straight[key], key
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "metrics.csv"), pd.read_csv(straight_run / "metrics.csv")
    )


@pytest.mark.parametrize(
    ("override", "expected"), [("nc.eps=0.05", (0.05,)), ("nc.eps=[0.01,0.1]", (0.01, 0.1))]
)
def test_nc_eps_given_as_one_number_is_a_list_of_one(override: str, expected: tuple[float, ...]) -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[override])
    assert from_node(AnalysisConfig, "nc", cfg.nc).eps == expected
