"""``ncdepth/conf/experiment``: the sweeps compose to the right grids; a real quick sweep gets its report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from ncdepth.cli import CONFIG_DIR
from ncdepth.report.bound import RESULT_COLUMNS

EMBEDDED = ("mnist5k", "digits", "mnist1d", "gaussian")
GRIDS: dict[str, dict[str, list[Any]]] = {
    "conv_depth_sweep": {"model.depth": [3, 5, 8, 12, 16, 20], "seed": [0, 1, 2]},
    "conv_depth_sweep_quick": {"model.depth": [2, 4, 6], "seed": [0, 1]},
    "mlp_depth_sweep": {"model.depth": [2, 4, 6, 8, 10, 12], "seed": [0, 1, 2]},
    "mlp_depth_sweep_quick": {"model.depth": [2, 4, 8], "seed": [0, 1]},
    "label_noise_sweep": {"data.label_noise": [0.0, 0.1, 0.25, 0.5, 0.75], "seed": [0, 1, 2]},
    "label_noise_sweep_quick": {"data.label_noise": [0.0, 0.25, 0.5, 0.75], "seed": [0, 1]},
    "width_sweep": {"model.width": [20, 40, 80, 160, 320], "seed": [0, 1, 2]},
    "width_sweep_quick": {"model.width": [8, 32, 128], "seed": [0, 1]},
    "weight_decay_sweep": {"optimizer.weight_decay": [0.0, 1e-4, 5e-4, 1e-3, 5e-3], "seed": [0, 1, 2]},
    "weight_decay_sweep_quick": {"optimizer.weight_decay": [0.0, 5e-4, 5e-3], "seed": [0, 1]},
    "imbalance_sweep": {"data.imbalance_ratio": [1, 10, 100], "seed": [0, 1, 2]},
    "imbalance_sweep_quick": {"data.imbalance_ratio": [1, 10], "seed": [0, 1]},
    "bound": {"data.extra_label_noise": [None, 0.05, 0.1, 0.2, 0.3, 0.5], "seed": [0, 1, 2, 3, 4]},
    "bound_quick": {"data.extra_label_noise": [None, 0.1, 0.3, 0.5], "seed": [0, 1, 2]},
}
REPRODUCTION_GRIDS: dict[str, dict[str, list[Any]]] = {  # scripts/reproduce.sh, docs/reproductions.md
    "repro_label_noise": {"data.label_noise": [0.0, 0.1, 0.2, 0.3, 0.5], "seed": [0, 1, 2, 3, 4]},
    "repro_depth": {"model.depth": [2, 4, 8, 12], "seed": [0, 1, 2, 3, 4]},
    "repro_terminal_phase": {"seed": [0, 1, 2, 3, 4]},
    "repro_bound": {"data.extra_label_noise": [None, 0.1, 0.3, 0.5], "seed": list(range(10))},
}
PAPER_CONV = {  # Galanti et al. (2023): CONV-L-400 on CIFAR-10
    "data.dataset": "cifar10",
    "data.batch_size": 128,
    "optimizer.name": "sgd",
    "optimizer.lr": 0.1,
    "optimizer.momentum": 0.9,
    "optimizer.weight_decay": 5e-4,
    "scheduler.name": "multistep",
    "scheduler.milestones": [60, 120, 160],
    "scheduler.gamma": 0.1,
    "trainer.max_epochs": 500,
}


def composed(name: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=[f"+experiment={name}"], return_hydra_config=True)


def sweep_grid(cfg: DictConfig) -> dict[str, list[Any]]:
    """``hydra.sweeper.params`` expanded by Hydra's own override grammar."""
    parser = OverridesParser.create()
    grid = {}
    for key, text in cfg.hydra.sweeper.params.items():
        override = parser.parse_override(f"{key}={text}")
        grid[key] = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
    return grid


def select(cfg: DictConfig, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def test_every_sweep_experiment_has_a_quick_variant_and_a_known_grid() -> None:
    names = {path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml")}
    assert set(GRIDS) <= names
    assert all(f"{name}_quick" in GRIDS for name in GRIDS if not name.endswith("_quick"))


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_experiment_composes_to_its_grid(name: str) -> None:
    cfg = composed(name)
    grid = sweep_grid(cfg)
    assert grid == GRIDS[name]
    if name.endswith("_quick"):
        assert cfg.data.dataset in EMBEDDED and cfg.trainer.accelerator == "cpu"
        assert cfg.trainer.max_epochs <= 100
        full_keys = set(GRIDS[name.removesuffix("_quick")])
        assert set(grid) == full_keys  # the quick variant sweeps what the full one sweeps
    elif cfg.model._target_ == "ncdepth.models.ConvNet":
        assert {key: select(cfg, key) for key in PAPER_CONV} == PAPER_CONV
        assert cfg.model.width == 400 or "model.width" in grid


@pytest.mark.parametrize("name", sorted(REPRODUCTION_GRIDS))
def test_reproduction_sweeps_are_cpu_sized_on_embedded_data(name: str) -> None:
    cfg = composed(name)
    assert sweep_grid(cfg) == REPRODUCTION_GRIDS[name]
    assert cfg.data.dataset in EMBEDDED and cfg.trainer.accelerator == "cpu"


def test_reproduce_script_runs_every_reproduction_sweep() -> None:
    script = (Path(__file__).parents[1] / "scripts" / "reproduce.sh").read_text()
    names = {path.stem for path in (CONFIG_DIR / "experiment").glob("repro_*.yaml")}
    assert names >= set(REPRODUCTION_GRIDS)
    assert all(f"experiment {name}\n" in script for name in names)


def test_conv_depth_sweep_is_conv_l_400() -> None:
    cfg = composed("conv_depth_sweep")
    assert cfg.model._target_ == "ncdepth.models.ConvNet" and cfg.model.width == 400


def test_bound_experiments_build_s1_and_s1_union_s2_from_one_pool() -> None:
    for name in ("bound", "bound_quick"):
        cfg = composed(name)
        assert cfg.data.label_noise == 0.0 and cfg.data.samples_per_class >= 1
        assert cfg.data.extra_samples_per_class >= 1


def test_quick_bound_sweep_trains_and_reports(tiny_bound_sweep: tuple[Path, str]) -> None:
    sweep, output = tiny_bound_sweep
    report = sweep / "report"
    assert "4 jobs" in output and "4 finished" in output
    runs = pd.read_csv(report / "runs.csv")
    assert sorted(runs["seed"]) == [0, 0, 1, 1] and (runs["status"] == "finished").all()
    table = pd.read_csv(report / "report.csv")
    assert {"data.extra_label_noise", "seed", "layer_index", "metric", "value"} <= set(table.columns)
    assert set(table["layer_index"]) == {1, 2, 3} and set(table["epoch"]) == {0, 1, 2}
    bound = pd.read_csv(report / "bound.csv")
    assert list(bound.columns) == list(RESULT_COLUMNS)
    assert sorted(bound["eps"]) == [0.01, 0.05, 0.1] and (bound["p"] == 0.5).all()
    assert (bound["pairs"] == 2).all() and (bound["m"] == 100).all()
    assert ((bound["test_error_mean"] >= 0) & (bound["test_error_mean"] <= 1)).all()
    assert (bound["bound"] >= bound["probability"] + 0.5).all()
    for name in ("generalization_bound", "ncc_train_error_by_extra_label_noise", "last_layer_collapse"):
        for suffix in (".png", ".pdf"):
            assert (report / "figures" / f"{name}{suffix}").stat().st_size > 0
