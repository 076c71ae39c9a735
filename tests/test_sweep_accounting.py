"""Every job of a multirun ends as a row of the report: jobs expanded from ``multirun.yaml`` as
Hydra's BasicSweeper expands them, matched to their run directories by ``hydra.job.num``, each
with a status (finished, failed, running, interrupted, not started); the ``SweepStatus`` callback
exits non-zero when a job did not finish.

The sweeps are real Hydra multiruns: a toy app (milliseconds per job) that records ``status.json``
like ``ncdepth-train``, and one end-to-end ``ncdepth-train -m`` with an invalid job."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from ncdepth.cli.report import main as report_main
from ncdepth.cli.sweep_callbacks import SweepStatus
from ncdepth.report.collect import MULTIRUN_FILE, collect_sweep, sweep_jobs
from ncdepth.rundir import OVERRIDES_FILE, STATUS_FILE, SUMMARY_FILE, RunLock

BIN = Path(sys.executable).parent
TOY_CONFIG = """\
width: 8
depth: 1
hydra:
  sweeper:
    params:
      width: 8,16
  callbacks:
    sweep_status:
      _target_: ncdepth.cli.sweep_callbacks.SweepStatus
"""
TOY_APP = """\
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

from ncdepth.rundir import METRICS_FILE, SUMMARY_FILE, RunLock, write_json, write_status


@hydra.main(config_path=".", config_name="toy", version_base="1.3")
def main(cfg):
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.depth < 1:
        write_status(run_dir, "failed", f"depth must be >= 1, got {cfg.depth}")
        return
    with RunLock(run_dir):
        write_status(run_dir, "running")
        if cfg.width == 16 and cfg.depth == 2:
            os._exit(9)  # killed hard: the launching process dies too, later jobs never start
        (run_dir / METRICS_FILE).write_text("epoch,split,layer,metric,value\\n0,train,layer1,ncc_acc,0.5\\n")
        write_json(run_dir / SUMMARY_FILE, {"accuracy": {"train": 0.5}})
        write_status(run_dir, "finished")


main()
"""
KILLED_EXIT = 9
EXPECTED = [  # job: (width, depth, status); params (width) vary slowest, as Hydra orders them
    (8, -1, "failed"),
    (8, 1, "finished"),
    (8, 2, "finished"),
    (8, 3, "finished"),
    (16, -1, "failed"),
    (16, 1, "finished"),
    (16, 2, "interrupted"),
    (16, 3, "not started"),
]


def toy_multirun(app_dir: Path, sweep_dir: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """Run the toy app as ``-m`` with ``overrides`` into ``sweep_dir``."""
    if not (app_dir / "app.py").exists():
        (app_dir / "toy.yaml").write_text(TOY_CONFIG)
        (app_dir / "app.py").write_text(TOY_APP)
    command = [sys.executable, str(app_dir / "app.py"), "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def killed_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy sweep of :data:`EXPECTED`: width 8,16 (from the config) x depth -1,1,2,3 (command
    line); job 6 is killed hard, which ends the sweep before job 7 starts."""
    root = tmp_path_factory.mktemp("toy")
    result = toy_multirun(root, root / "sweep", "depth=-1,1,2,3")
    assert result.returncode == KILLED_EXIT, result.stdout + result.stderr
    return root / "sweep"


@pytest.fixture
def sweep_copy(killed_sweep: Path, tmp_path: Path) -> Path:
    """A copy of the killed sweep that a test may change."""
    return Path(shutil.copytree(killed_sweep, tmp_path / "sweep"))


def test_jobs_expand_as_hydra_numbered_them(killed_sweep: Path) -> None:
    jobs = sweep_jobs(killed_sweep)
    assert len(jobs) == len(EXPECTED)
    for number, job in enumerate(jobs[:-1]):  # the jobs that started: Hydra's own overrides
        assert job == list(OmegaConf.load(killed_sweep / str(number) / OVERRIDES_FILE))
    assert jobs[-1] == ["width=16", "depth=3"]


def test_every_job_is_a_row_with_its_status(killed_sweep: Path) -> None:
    sweep = collect_sweep(killed_sweep)
    assert sweep.notes == []
    assert [(run.name, run.job) for run in sweep.runs] == [(str(job), job) for job in range(len(EXPECTED))]
    assert [
        (sweep.values[run.name]["width"], sweep.values[run.name]["depth"], run.status) for run in sweep.runs
    ] == (EXPECTED)
    failed, killed, not_started = sweep.runs[4], sweep.runs[6], sweep.runs[7]
    assert failed.reason == "depth must be >= 1, got -1"
    assert "no live process holds .lock (killed?)" in killed.reason and "no checkpoint" in killed.reason
    assert not_started.path is None and not_started.reason == "no run directory"
    assert sweep.counts() == (
        f"8 jobs in {killed_sweep}: 4 finished, 2 failed, 0 running, 0 requeued, 1 interrupted, 1 not started"
    )


def test_a_job_whose_lock_is_held_is_running(sweep_copy: Path) -> None:
    with RunLock(sweep_copy / "6"):
        run = collect_sweep(sweep_copy).runs[6]
    assert run.status == "running" and f"owned by {os.uname().nodename} {os.getpid()}" in run.reason


def test_directories_are_matched_by_job_number_not_name(sweep_copy: Path) -> None:
    (sweep_copy / "1").rename(sweep_copy / "1_4242_1")  # Slurm: <num>_<job id>_<array task>
    (sweep_copy / "7").mkdir()  # job 7 began, and stopped before writing its config
    runs = collect_sweep(sweep_copy).runs
    assert (runs[1].name, runs[1].job, runs[1].status) == ("1_4242_1", 1, "finished")
    assert runs[7].status == "not started"
    assert runs[7].reason.startswith("7/ exists without .hydra/config.yaml")


def test_finished_without_its_results_is_failed(sweep_copy: Path) -> None:
    (sweep_copy / "1" / SUMMARY_FILE).unlink()
    run = collect_sweep(sweep_copy).runs[1]
    assert (run.status, run.reason) == ("failed", f"{STATUS_FILE} says finished, but: no {SUMMARY_FILE}")


@pytest.mark.parametrize(
    ("change", "note"),
    [
        ("remove", f"no {MULTIRUN_FILE} in"),
        ("sweeper", "its sweeper is hydra_plugins.optuna, not hydra._internal"),
        ("glob", "cannot expand the jobs of"),
    ],
)
def test_without_a_usable_multirun_yaml_the_jobs_are_the_directories(
    sweep_copy: Path, change: str, note: str
) -> None:
    multirun = sweep_copy / MULTIRUN_FILE
    config = OmegaConf.load(multirun)
    if change == "remove":
        multirun.unlink()
    elif change == "sweeper":
        config.hydra.sweeper._target_ = "hydra_plugins.optuna"
        OmegaConf.save(config, multirun)
    else:  # a glob sweep needs Hydra's config loader
        config.hydra.overrides.task.append("model=glob(*)")
        OmegaConf.save(config, multirun)
    sweep = collect_sweep(sweep_copy)
    assert len(sweep.notes) == 1 and note in sweep.notes[0]
    assert sweep.notes[0].endswith("the jobs are the run directories found")
    assert [run.name for run in sweep.runs] == [str(job) for job in range(len(EXPECTED) - 1)]


def test_report_lists_every_job(sweep_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report_main([str(sweep_copy), "--format", "csv"]) == 0
    printed = capsys.readouterr().out
    assert "1 interrupted, 1 not started" in printed
    assert "  not started 7  width=16 depth=3: no run directory" in printed
    runs = pd.read_csv(sweep_copy / "report" / "runs.csv")
    assert list(runs["job"]) == list(range(len(EXPECTED)))
    assert list(zip(runs["width"], runs["depth"], runs["status"], strict=True)) == EXPECTED
    assert runs.loc[0, "reason"] == "depth must be >= 1, got -1"


def test_sweep_status_prints_the_unfinished_jobs_and_exits_1(
    killed_sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(killed_sweep)}}})
    with pytest.raises(SystemExit) as exit_info:
        SweepStatus().on_multirun_end(config=config)
    assert exit_info.value.code == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == ["failed", "failed", "interrupted", "not"]
    assert lines[-1].endswith("4 finished, 2 failed, 0 running, 0 requeued, 1 interrupted, 1 not started")


@pytest.mark.parametrize(
    ("depths", "code", "counts"), [("1", 0, "2 finished, 0 failed"), ("-1,1", 1, "2 failed")]
)
def test_a_multirun_exits_non_zero_after_all_jobs_when_one_failed(
    tmp_path: Path, depths: str, code: int, counts: str
) -> None:
    result = toy_multirun(tmp_path, tmp_path / "sweep", f"depth={depths}")
    assert result.returncode == code, result.stdout + result.stderr
    assert counts in result.stdout
    assert len(list((tmp_path / "sweep").glob(f"*/{STATUS_FILE}"))) == 2 * len(depths.split(","))


def test_ncdepth_train_sweep_with_an_invalid_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's sweep: the invalid job fails in its own directory, the others run, the sweep
    exits non-zero after all of them, and the report has one row per job."""
    sweep_dir = tmp_path / "sweep"
    command = [
        str(BIN / "ncdepth-train"),
        "-m",
        "data=digits",
        "model.width=32",
        "model.depth=2,-1,3",
        "trainer.max_epochs=2",
        "nc.every_n_epochs=1",
        "callbacks=none",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "3 jobs in" in result.stdout and "2 finished, 1 failed" in result.stdout
    assert report_main([str(sweep_dir), "--format", "csv"]) == 0
    print(capsys.readouterr().out)  # the report's job table, shown with pytest -s
    runs = pd.read_csv(sweep_dir / "report" / "runs.csv").set_index("job")
    assert list(runs["status"]) == ["finished", "failed", "finished"]
    assert list(runs["model.depth"]) == [2, -1, 3]
    assert "model.depth" in runs.loc[1, "reason"]
    assert (runs.loc[[0, 2], "last_epoch"] == 2).all()
