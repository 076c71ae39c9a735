"""``ncdepth-kernels`` and its report: configs compose, a real tiny sweep end to end, bad values,
the report's table and figures, and what the theory says of the measured numbers."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from ncdepth.cli import CONFIG_DIR
from ncdepth.cli.report import main as report_main
from ncdepth.report.collect import collect_sweep
from ncdepth.report.kernels import collect_kernel_runs, plotted_nc1, write_kernel_report
from ncdepth.rundir import KERNELS_COLUMNS, KERNELS_FILE, KERNELS_NC1
from ncdepth.theory.gaussian_data import gaussian_classes
from ncdepth.theory.kernels import kernel_nc1, nngp
from ncdepth.theory.kernels_job import build_network, hidden_nc1
from ncdepth.theory.kernels_job_config import parse_config

NCDEPTH_KERNELS = Path(sys.executable).parent / "ncdepth-kernels"
EXPERIMENT_GROUP = "kernels_experiment"
EXPERIMENTS = sorted(path.stem for path in (CONFIG_DIR / EXPERIMENT_GROUP).glob("*.yaml"))
TINY = ["n=32", "model.width=32", "train.steps=50", "adaptive.anneal=[10.0]", "adaptive.max_iter=200"]
QUANTITIES = {
    "data": {KERNELS_NC1},
    "nngp_relu": {KERNELS_NC1},
    "ntk_relu": {KERNELS_NC1},
    "nngp_erf": {KERNELS_NC1},
    "ntk_erf": {KERNELS_NC1},
    "adaptive": {KERNELS_NC1, "converged", "iterations", "residual"},
    "fcn_init": {KERNELS_NC1},
    "fcn": {KERNELS_NC1, "train_loss"},
}


def compose_kernels(*overrides: str, hydra: bool = False) -> DictConfig:
    """``ncdepth/conf/kernels.yaml`` with ``overrides``; with ``hydra``, the ``hydra`` node too (sweeps)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="kernels", overrides=list(overrides), return_hydra_config=hydra)


def test_the_kernel_experiments_exist() -> None:
    assert EXPERIMENTS == [
        "balanced",
        "balanced_quick",
        "imbalanced",
        "imbalanced_quick",
        "repro_balanced",
        "repro_imbalanced",
    ]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_swept_value_of_a_kernel_experiment_validates(experiment: str) -> None:
    params = compose_kernels(f"+{EXPERIMENT_GROUP}={experiment}", hydra=True).hydra.sweeper.params
    assert params, f"{experiment} sweeps nothing"
    parser = OverridesParser.create()
    for key, values in params.items():
        (override,) = parser.parse_overrides([f"{key}={values}"])
        for value in override.sweep_string_iterator():
            config = parse_config(compose_kernels(f"+{EXPERIMENT_GROUP}={experiment}", f"{key}={value}"))
            assert sum(config.data.class_sizes) == config.data.n


def test_the_full_experiments_are_the_papers_grids() -> None:
    balanced = compose_kernels(f"+{EXPERIMENT_GROUP}=balanced", hydra=True).hydra.sweeper.params
    assert (balanced.n, balanced.d0, balanced.seed) == ("128,256,512,1024", "1,2,8,32,128", "range(0,10)")
    imbalanced = compose_kernels(f"+{EXPERIMENT_GROUP}=imbalanced", hydra=True)
    assert imbalanced.n == 2048
    assert imbalanced.hydra.sweeper.params.class_sizes == "[1024,1024],[768,1280],[512,1536],[256,1792]"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("n=7", "n must be a multiple of num_classes"),
        ("num_classes=3", "num_classes must be one of [2, 4]"),
        ("class_sizes=[10,20]", "class_sizes must be null or 2 counts"),
        ("kernel.activations=[tanh]", "kernel.activations"),
        ("adaptive.anneal=[10.0,100.0]", "adaptive.anneal must be strictly decreasing"),
        ("adaptive.noise_var=0", "adaptive.noise_var"),
        ("model.width=0", "model.width"),
        ("model=mlp", "model._target_ must be ncdepth.models.FCN2"),
        ("train.momentum=1.0", "train.momentum must lie in [0, 1)"),
        ("+train.weight_decay=0.1", "unknown key train.weight_decay"),
    ],
)
def test_a_bad_value_is_rejected_naming_its_key(override: str, key: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_config(compose_kernels(override))
    assert key in str(error.value)


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four real jobs (two d0, balanced and 1:3 class sizes), plus one run directory whose job died
    before writing ``kernels.csv``."""
    sweep = tmp_path_factory.mktemp("kernels_sweep")
    result = subprocess.run(
        [
            str(NCDEPTH_KERNELS),
            "-m",
            f"hydra.sweep.dir={sweep}",
            *TINY,
            "d0=1,4",
            "class_sizes=[16,16],[8,24]",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shutil.copytree(sweep / "0" / ".hydra", sweep / "killed" / ".hydra")
    return sweep


def test_every_job_writes_every_quantity_finite(tiny_sweep: Path) -> None:
    for job in ("0", "1", "2", "3"):
        table = pd.read_csv(tiny_sweep / job / KERNELS_FILE)
        assert tuple(table.columns) == KERNELS_COLUMNS
        found = table.groupby("quantity")["metric"].agg(set).to_dict()
        assert found == QUANTITIES
        assert table["value"].map(math.isfinite).all(), table
        assert (table.loc[table["metric"] == KERNELS_NC1, "value"] > 0).all()
        summary = json.loads((tiny_sweep / job / "summary.json").read_text())
        assert summary["values"]["adaptive"]["converged"] == 1.0
        assert [step["width"] for step in summary["adaptive_steps"]] == [320.0, 32.0]
        assert summary["class_sizes"] in ([16, 16], [8, 24])


def test_ntk_features_are_never_more_collapsed_than_the_nngp_ones(tiny_sweep: Path) -> None:
    """Kothapalli & Tirer (2024): NC1(NTK) >= NC1(NNGP) on these Gaussian data (equal for relu in
    d0 = 1, where every pair of inputs is parallel or anti-parallel)."""
    table = collect_kernel_runs(collect_sweep(tiny_sweep))
    nc1 = table[table["metric"] == KERNELS_NC1].pivot(index="run", columns="quantity", values="value")
    for activation in ("relu", "erf"):
        assert (nc1[f"ntk_{activation}"] >= nc1[f"nngp_{activation}"] * (1 - 1e-9)).all(), nc1


def test_a_wide_network_at_initialisation_has_the_nngp_nc1() -> None:
    """The hidden features of ``FCN2`` at init are ``width`` i.i.d. draws whose Gram matrix / width
    tends to the NNGP: their NC1 agrees with ``kernel_nc1(nngp)`` to ~1/sqrt(width)."""
    config = parse_config(compose_kernels("model.width=8192"))
    network = build_network(config, seed=0)
    x, labels, _ = gaussian_classes(32, 8, seed=1)
    expected = kernel_nc1(nngp(x, activation="erf", weight_var=config.kernel.weight_var), labels)
    assert hidden_nc1(network, x, labels, 2) == pytest.approx(expected, rel=0.05)
    assert network.hidden_layer.weight.dtype == torch.float64


def test_the_report_gathers_the_table_and_draws_both_figures(tiny_sweep: Path, tmp_path: Path) -> None:
    sweep = collect_sweep(tiny_sweep)
    assert sweep.app == "kernels"
    assert report_main([str(tiny_sweep), "--out", str(tmp_path / "cli")]) == 0  # ncdepth-report
    assert (tmp_path / "cli" / "kernels_table.csv").is_file()
    written = write_kernel_report(sweep, tmp_path)
    names = {path.relative_to(tmp_path).as_posix() for path in written}
    assert {"kernels_table.csv", "kernels_table.parquet"} <= names
    for figure in ("kernels_nc1_vs_d0", "kernels_nc1_ratio_vs_class_sizes"):
        for suffix in (".png", ".pdf"):
            assert f"figures/{figure}{suffix}" in names
            assert (tmp_path / "figures" / f"{figure}{suffix}").stat().st_size > 0
    table = pd.read_csv(tmp_path / "kernels_table.csv", dtype={"run": str, "class_sizes": str})
    assert sorted(table["run"].unique()) == ["0", "1", "2", "3"]
    assert set(table["class_sizes"]) == {"16/16", "8/24"}
    assert len(table) == 4 * sum(len(metrics) for metrics in QUANTITIES.values())
    runs = pd.read_csv(tmp_path / "cli" / "runs.csv", dtype={"run": str}).set_index("run")
    assert list(runs.columns[:4]) == ["job", "app", "status", "reason"] and set(runs["app"]) == {"kernels"}
    assert runs.loc["killed", "status"] == "failed"
    assert runs.loc["killed", "reason"] == f"no {KERNELS_FILE}"
    assert (runs.drop(index="killed")["status"] == "finished").all()


def test_a_sweep_of_other_runs_is_not_a_kernel_sweep(tmp_path: Path) -> None:
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "0" / ".hydra" / "hydra.yaml").write_text("hydra:\n  job:\n    name: train\n")
    assert collect_sweep(tmp_path).app == "train"


def test_an_unconverged_adaptive_kernel_stays_in_the_table_but_not_in_the_figures() -> None:
    rows = [
        (run, quantity, metric, value)
        for run, converged in (("0", 1.0), ("1", 0.0))
        for quantity, metric, value in (
            ("data", KERNELS_NC1, 0.06),
            ("adaptive", KERNELS_NC1, 0.05),
            ("adaptive", "converged", converged),
        )
    ]
    table = pd.DataFrame(rows, columns=["run", "quantity", "metric", "value"])
    plotted = plotted_nc1(table)
    assert sorted(zip(plotted["run"], plotted["quantity"], strict=True)) == [
        ("0", "adaptive"),
        ("0", "data"),
        ("1", "data"),
    ]
