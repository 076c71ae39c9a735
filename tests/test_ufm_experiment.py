"""``ncdepth-ufm`` and its report: every ufm_experiment/ config composes and validates, a tiny job
through the console script meets the closed form, bad input exits 2 naming the key, and the
report lists finished and failed runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ncdepth.cli import CONFIG_DIR
from ncdepth.cli.report import main as report_main
from ncdepth.report.ufm import is_ufm_sweep, write_ufm_report
from ncdepth.theory.ufm_job import run_job
from ncdepth.theory.ufm_job_config import UFMJob
from ncdepth.validation import from_node

NCDEPTH_UFM = Path(sys.executable).parent / "ncdepth-ufm"
EXPERIMENT_GROUP = "ufm_experiment"
UFM_EXPERIMENTS = sorted(path.stem for path in (CONFIG_DIR / EXPERIMENT_GROUP).glob("*.yaml"))
TINY = ["class_sizes=[20,10,5,5]", "depth=2", "weight_decay=3e-2", "feature_decay=3e-2", "init=gaussian"]
TINY += ["iterations=150"]


def compose_ufm(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="ufm", overrides=list(overrides), return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    sweep = {} if params is None else OmegaConf.to_container(params)
    job = {key: cfg[key] for key in cfg if key != "hydra"}
    return {"job": OmegaConf.to_container(OmegaConf.create(job), resolve=True), "sweep": sweep}


def ufm_job(*overrides: str) -> UFMJob:
    """The job of ``compose_ufm(*overrides)``, as ``ncdepth-ufm`` validates it."""
    return from_node(UFMJob, "", compose_ufm(*overrides)["job"])


@pytest.mark.parametrize("experiment", UFM_EXPERIMENTS)
def test_every_ufm_experiment_composes_and_each_sweep_job_validates(experiment: str) -> None:
    composed = compose_ufm(f"+{EXPERIMENT_GROUP}={experiment}")
    assert set(composed["sweep"]) >= {"depth", "weight_decay"}
    depths = [int(value) for value in composed["sweep"]["depth"].split(",")]
    assert depths == [1, 3, 6, 9]
    decays = composed["sweep"]["weight_decay"].split(",")
    for depth in depths:
        for decay in (decays[0], decays[-1]):
            job = ufm_job(f"+{EXPERIMENT_GROUP}={experiment}", f"depth={depth}", f"weight_decay={decay}")
            assert job.feature_decay == job.weight_decay == float(decay)


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ncdepth-ufm`` run as a one-job multirun (its report input), then a failed job beside it."""
    sweep = tmp_path_factory.mktemp("ufm_sweep")
    result = subprocess.run(
        [str(NCDEPTH_UFM), *TINY, f"hydra.sweep.dir={sweep}", "-m"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    failed = sweep / "1"
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "config.yaml").write_text((sweep / "0" / ".hydra" / "config.yaml").read_text())
    (failed / "ufm.log").write_text("FloatingPointError: the objective diverged at step 40; lower lr=0.5\n")
    return sweep


def test_tiny_job_meets_the_closed_form_and_predicts_the_minority_collapse(tiny_sweep: Path) -> None:
    run = tiny_sweep / "0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["reference"] == "closed_form"
    assert abs(summary["final_objective"] - summary["fstar"]) <= 1e-6 * summary["fstar"]
    assert summary["predicted"]["collapsed"] == summary["measured"]["collapsed"] == [2, 3]
    assert max(summary["final"][f"closed_form_{name}"] for name in ("WWT", "HTH", "WH")) < 1e-3
    trace = pd.read_csv(run / "ufm.csv")
    assert list(trace.columns) == ["step", "metric", "value"]
    objective = trace[trace["metric"] == "objective"].sort_values("step")
    assert objective["step"].tolist() == list(range(0, 151, 10))
    assert objective["value"].iloc[-1] == pytest.approx(summary["final_objective"], rel=1e-12)
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "ufm.log").is_file()


def test_report_lists_finished_and_failed_runs(tiny_sweep: Path, tmp_path: Path) -> None:
    assert is_ufm_sweep(tiny_sweep)
    written = write_ufm_report(tiny_sweep, tmp_path)
    assert [path.name for path in written] == ["ufm_report.csv", "ufm_distance.png", "ufm_distance.pdf"]
    table = pd.read_csv(written[0], dtype={"run": str}).set_index("run")
    assert table.loc["0", "status"] == "finished" and table.loc["0", "objective_gap"] < 1e-6
    assert table.loc["0", "collapsed_predicted"] == table.loc["0", "collapsed_measured"] == "[2, 3]"
    assert table.loc["1", "status"] == "failed" and "diverged" in table.loc["1", "reason"]
    assert table.loc["1", "depth"] == 2


def test_ncdepth_report_dispatches_a_ufm_sweep(tiny_sweep: Path, tmp_path: Path) -> None:
    assert report_main([str(tiny_sweep), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "ufm_report.csv").is_file() and (tmp_path / "figures" / "ufm_distance.png").is_file()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("solver=adam", "solver"),
        ("weight_decay=[1e-3]", "weight_decay"),
        ("class_sizes=5", "class_sizes"),
        ("width=2", "width"),
        ("init=zeros", "init"),
        ("iterations=0", "iterations"),
        ("+colour=red", "colour"),
    ],
)
def test_bad_config_values_raise_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        ufm_job(override)


def test_bad_input_exits_2_naming_the_key_and_writes_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "bad"
    result = subprocess.run(
        [str(NCDEPTH_UFM), "feature_decay=-1", f"hydra.run.dir={run_dir}"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "ncdepth-ufm: error: feature_decay" in result.stderr
    assert not run_dir.exists() or not any(run_dir.iterdir())


def test_restarts_keep_the_start_with_the_lowest_objective() -> None:
    """Imbalanced, M = 3, past the minority-collapse threshold: the orthogonal start ends in a
    spurious minimum (every class collapsed), a Gaussian start reaches the closed form."""
    overrides = ["class_sizes=[200,100,50,50]", "depth=3", "weight_decay=2e-2", "feature_decay=2e-2"]
    job = ufm_job(*overrides, "init=[orthogonal,gaussian]", "restarts=2", "iterations=300")
    result, summary = run_job(job)
    starts = summary["starts"]
    assert [(start["init"], start["seed"]) for start in starts] == [
        ("orthogonal", 0),
        ("orthogonal", 1),
        ("gaussian", 0),
        ("gaussian", 1),
    ]
    assert result.final_objective == min(start["final_objective"] for start in starts)
    assert summary["objective_gap"] < 1e-9 and summary["measured"]["collapsed"] == [2, 3]


def test_init_must_name_known_initialisations() -> None:
    with pytest.raises(ValueError, match="init"):
        ufm_job("init=[]")
