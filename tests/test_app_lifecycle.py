"""``ncdepth-ufm``, ``ncdepth-kernels`` and ``ncdepth-lm`` under ``ncdepth-train``'s run lifecycle
(:mod:`ncdepth.cli.lifecycle`), through their console scripts: a multirun with invalid jobs runs
every job, records the bad ones and exits 1; ``ncdepth-report`` accounts for every job, also when
every job failed; a rerun skips finished jobs without touching a file; a rerun with another config
is refused; a job killed with SIGKILL while running is reported interrupted and its rerun ends with
the result files of an uninterrupted run; two different sweeps in one directory are reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from conftest import directory_fingerprint
from ncdepth.cli.report import main as report_main
from ncdepth.rundir import (
    INTERRUPTED,
    KERNELS_FILE,
    METRICS_FILE,
    RUNNING,
    SUMMARY_FILE,
    UFM_TRACE_FILE,
    classify,
    read_status,
)

BIN = Path(sys.executable).parent
UFM_TINY = ["class_sizes=[6,3]", "depth=2", "iterations=20", "continuation.stages=0", "init=gaussian"]
KERNELS_TINY = [
    "n=32",
    "d0=2",
    "model.width=16",
    "train.steps=20",
    "adaptive.anneal=[10.0]",
    "adaptive.max_iter=100",
]
LM_TINY = ["train_windows=8", "epochs=1", "width=16", "heads=2", "every_n_epochs=1"]
BAD = {
    "ufm": ("weight_decay", ["3e-2", "-1", "1e-2", "-2"], "weight_decay must be a number > 0"),
    "lm": ("lr", ["1e-3", "-1", "2e-3", "0"], "lr must be a number > 0"),
    "kernels": ("adaptive.noise_var", ["0.01", "-1", "0.02", "0"], "adaptive.noise_var must be a number > 0"),
}
TINY = {"ufm": UFM_TINY, "kernels": KERNELS_TINY, "lm": LM_TINY}
LONG = {  # a few seconds of work, long enough to be killed while running
    "ufm": [
        "class_sizes=[40,20,10,10]",
        "depth=3",
        "iterations=500",
        "weight_decay=2e-2",
        "feature_decay=2e-2",
    ],
    "kernels": ["n=256", "d0=8", "train.steps=3000"],
    "lm": ["train_windows=256", "epochs=3", "width=32"],
}
RESULTS = {"ufm": UFM_TRACE_FILE, "kernels": KERNELS_FILE, "lm": METRICS_FILE}
TIMINGS = ("seconds", "timings")
"""Keys of ``summary.json`` holding wall-clock times, the only thing a rerun may change."""


def run(app: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(BIN / f"ncdepth-{app}"), *args], capture_output=True, text=True, env=env, timeout=600
    )


def job_dirs(sweep: Path) -> dict[str, tuple[int, str]]:
    """The fingerprint of the job directories (Hydra rewrites ``multirun.yaml`` at each launch)."""
    return {name: value for name, value in directory_fingerprint(sweep).items() if "/" in name}


@pytest.fixture(scope="module", params=["ufm", "kernels", "lm"])
def bad_sweep(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, Any]:
    """A 4-job multirun of ``app`` whose jobs 1 and 3 have invalid values, and its result."""
    app = request.param
    key, values, _ = BAD[app]
    sweep = tmp_path_factory.mktemp(f"{app}_bad_sweep")
    result = run(app, *TINY[app], f"{key}={','.join(values)}", f"hydra.sweep.dir={sweep}", "-m")
    return app, sweep, result


def test_invalid_jobs_are_recorded_and_the_sweep_goes_on(bad_sweep: tuple[str, Path, Any]) -> None:
    app, sweep, result = bad_sweep
    _, _, message = BAD[app]
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.count(f"ncdepth-{app}: error: {message}") == 2
    assert "4 jobs in" in result.stdout and "2 finished, 2 failed, 0 running" in result.stdout
    for job, state in (("0", "finished"), ("1", "failed"), ("2", "finished"), ("3", "failed")):
        status = read_status(sweep / job)
        assert status["state"] == state and status["app"] == app
        assert (sweep / job / ".hydra" / "config.yaml").is_file()
        assert (sweep / job / RESULTS[app]).is_file() == (state == "finished")
        if state == "failed":
            assert status["reason"].startswith(message)


def test_the_report_accounts_for_every_job(
    bad_sweep: tuple[str, Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app, sweep, _ = bad_sweep
    key, values, message = BAD[app]
    assert report_main([str(sweep), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert f"app: {app}" in printed
    assert (
        f"4 jobs in {sweep}: 2 finished, 2 failed, 0 running, 0 requeued, 0 interrupted, 0 not started"
        in printed
    )
    runs = pd.read_csv(tmp_path / "runs.csv", dtype={"run": str})
    assert list(runs.columns[:5]) == ["run", "job", "app", "status", "reason"] and key in runs.columns
    assert runs["run"].tolist() == ["0", "1", "2", "3"] and (runs["app"] == app).all()
    assert runs["status"].tolist() == ["finished", "failed", "finished", "failed"]
    assert runs["reason"].iloc[1].startswith(message)
    assert [str(value) for value in runs[key]] == [str(float(value)) for value in values]


def test_a_rerun_skips_the_finished_jobs_and_changes_nothing(bad_sweep: tuple[str, Path, Any]) -> None:
    app, sweep, _ = bad_sweep
    key, values, _ = BAD[app]
    before = job_dirs(sweep)
    result = run(app, *TINY[app], f"{key}={','.join(values)}", f"hydra.sweep.dir={sweep}", "-m")
    assert result.returncode == 1  # the two invalid jobs are still invalid
    assert result.stdout.count("holds a finished run with this config: nothing to do") == 2
    assert job_dirs(sweep) == before


@pytest.mark.parametrize("app", ["ufm", "kernels", "lm"])
def test_a_sweep_in_which_every_job_failed_is_reported_as_the_apps(
    app: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, values, _ = BAD[app]
    sweep = tmp_path / "sweep"
    result = run(app, *TINY[app], f"{key}={values[1]},{values[3]}", f"hydra.sweep.dir={sweep}", "-m")
    assert result.returncode == 1 and "0 finished, 2 failed" in result.stdout
    assert report_main([str(sweep), "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    assert f"app: {app}" in printed and "2 jobs in" in printed and "0 finished, 2 failed" in printed
    runs = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert runs["status"].tolist() == ["failed", "failed"] and (runs["app"] == app).all()
    if app == "ufm":
        assert "2 jobs that did not finish (2 failed)" in printed
    else:
        table = "kernels_table.csv" if app == "kernels" else "token_collapse.csv"
        assert pd.read_csv(tmp_path / "report" / table).empty


def without_timings(summary: Any) -> Any:
    if isinstance(summary, dict):
        return {key: without_timings(value) for key, value in summary.items() if key not in TIMINGS}
    if isinstance(summary, list):
        return [without_timings(value) for value in summary]
    return summary


def kill_while_running(process: subprocess.Popen[str], run_dir: Path) -> None:
    """SIGKILL ``process`` once its ``status.json`` says running; fail when it ended before."""
    deadline = time.monotonic() + 300
    while (read_status(run_dir) or {}).get("state") != RUNNING:
        assert process.poll() is None, f"ended before it ran: {process.communicate()}"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert read_status(run_dir)["state"] == RUNNING, "the job finished before it was killed"


@pytest.mark.slow  # two full jobs and a killed one per app: about 2 minutes each on 2 cores
@pytest.mark.parametrize("app", ["ufm", "kernels", "lm"])
def test_a_job_killed_while_running_is_interrupted_and_its_rerun_ends_identical(
    app: str, tmp_path: Path
) -> None:
    """Also: a finished single run asked again exits 0 and changes nothing; one asked with another
    config exits 2 naming the key and changes nothing."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [str(BIN / f"ncdepth-{app}"), *LONG[app]]
    reference = subprocess.Popen([*command, f"hydra.run.dir={straight}"], env=env, text=True)
    victim = subprocess.Popen(
        [*command, f"hydra.run.dir={killed}"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    kill_while_running(victim, killed)
    assert reference.wait(timeout=600) == 0
    state, reason = classify(killed)
    assert state == INTERRUPTED and "a rerun computes it again from the start" in reason

    rerun = run(app, *LONG[app], f"hydra.run.dir={killed}")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    status = read_status(killed)
    assert status["state"] == "finished" and status["attempts"] == 2
    assert status["fingerprint"] == read_status(straight)["fingerprint"]
    assert (killed / RESULTS[app]).read_bytes() == (straight / RESULTS[app]).read_bytes()
    summaries = [json.loads((path / SUMMARY_FILE).read_text()) for path in (killed, straight)]
    assert without_timings(summaries[0]) == without_timings(summaries[1])

    before = directory_fingerprint(straight)
    again = run(app, *LONG[app], f"hydra.run.dir={straight}")
    assert again.returncode == 0 and "nothing to do" in again.stdout
    other = run(app, *LONG[app], "seed=7", f"hydra.run.dir={straight}")
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert f"ncdepth-{app}: error: run directory {straight} holds a run with another config" in other.stderr
    assert "Differing keys: seed: 0 -> 7" in other.stderr
    assert directory_fingerprint(straight) == before


def test_two_different_sweeps_in_one_directory_are_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second sweep (another ``n``) started into the first one's directory: its jobs find the
    first sweep's runs in their directories and are refused; the sweep's end and the report say
    that two sweeps share the directory, and count this sweep's jobs as not started."""
    sweep = tmp_path / "sweep"
    first = run("kernels", *KERNELS_TINY, "seed=0,1", f"hydra.sweep.dir={sweep}", "-m")
    assert first.returncode == 0, first.stderr[-3000:]
    other = [override for override in KERNELS_TINY if not override.startswith("n=")]
    second = run("kernels", *other, "n=40", "seed=0,1", f"hydra.sweep.dir={sweep}", "-m")
    assert second.returncode == 1
    assert second.stderr.count("holds a run with another config") == 2
    assert "two different sweeps were started into" in second.stdout
    assert (
        f"2 jobs in {sweep}: 0 finished, 0 failed, 0 running, 0 requeued, 0 interrupted, 2 not started; "
        "and 2 run directories of another sweep" in second.stdout
    )
    assert report_main([str(sweep), "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    assert f"note: two different sweeps were started into {sweep}: run directories 0, 1 hold jobs" in printed
    runs = pd.read_csv(tmp_path / "report" / "runs.csv", dtype={"run": str}).set_index("run")
    assert runs.index.tolist() == ["job 0", "job 1", "0", "1"]
    assert runs["status"].tolist() == ["not started", "not started", "finished", "finished"]
    assert runs.loc["job 0", "reason"].startswith("its place is taken by 0, a job of another sweep (n=32 ")
    assert runs.loc["job 0", "n"] == 40 and runs.loc["0", "n"] == 32
