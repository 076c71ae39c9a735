"""The one job classifier (:func:`ncdepth.rundir.classify`) over every state, for every app: run
directories built by hand with ``write_status``, the real lock (held by this process or by one
that is gone), result files present, missing or unreadable, and directories written before
``status.json`` existed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ncdepth.rundir import (
    APPS,
    FAILED,
    FINISHED,
    INTERRUPTED,
    JOB_STATES,
    KERNELS,
    KERNELS_COLUMNS,
    LAST_CHECKPOINT,
    LM,
    NOT_STARTED,
    REQUEUED,
    RESULT_FILES,
    RUNNING,
    TRAIN,
    UFM,
    UFM_TRACE_COLUMNS,
    RunLock,
    classify,
    run_app,
    write_status,
)

HEADERS = {
    TRAIN: "epoch,split,layer,metric,value\n0,train,layer1,nc1,0.5\n",
    UFM: ",".join(UFM_TRACE_COLUMNS) + "\n0,objective,1.0\n",
    KERNELS: ",".join(KERNELS_COLUMNS) + "\n",
    LM: "epoch,split,layer,metric,value\n0,train,ln_f,cdnv,0.5\n",
}


def run_dir(tmp_path: Path, app: str, state: str | None, *, results: bool = True) -> Path:
    """A run directory of ``app`` with its config, ``status.json`` saying ``state`` (none when
    ``None``) and, with ``results``, every result file of the app."""
    path = tmp_path / app
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text("seed: 0\n")
    if results:
        table, summary = RESULT_FILES[app]
        (path / table).write_text(HEADERS[app])
        (path / summary).write_text("{}\n")
    if state is not None:
        write_status(path, state, "" if state != FAILED else "ValueError: diverged", app=app)
    return path


def test_every_state_is_listed_once() -> None:
    assert JOB_STATES == (FINISHED, FAILED, RUNNING, REQUEUED, INTERRUPTED, NOT_STARTED)


def test_no_directory_or_one_without_a_config_is_not_started(tmp_path: Path) -> None:
    assert classify(None) == (NOT_STARTED, "no run directory")
    assert classify(tmp_path / "3") == (NOT_STARTED, "no run directory")
    (tmp_path / "3_1000").mkdir()
    state, reason = classify(tmp_path / "3_1000")
    assert state == NOT_STARTED and reason.startswith("3_1000/ exists without .hydra/config.yaml")


@pytest.mark.parametrize("app", APPS)
def test_finished_needs_every_result_file_of_its_app(tmp_path: Path, app: str) -> None:
    path = run_dir(tmp_path, app, FINISHED)
    assert classify(path) == (FINISHED, "")
    table = path / RESULT_FILES[app][0]
    table.unlink()
    assert classify(path) == (FAILED, f"status.json says finished, but: no {table.name}")
    (path / "summary.json").write_text("[1, 2")
    state, reason = classify(path)
    assert state == FAILED and "unreadable summary.json" in reason


@pytest.mark.parametrize("app", [UFM, KERNELS])
def test_a_table_without_its_columns_is_not_finished(tmp_path: Path, app: str) -> None:
    path = run_dir(tmp_path, app, FINISHED)
    (path / RESULT_FILES[app][0]).write_text("step,metric\n")
    state, reason = classify(path)
    assert state == FAILED and "lacks the columns" in reason and "value" in reason


def test_failed_gives_the_recorded_reason_else_the_log_else_says_none(tmp_path: Path) -> None:
    path = run_dir(tmp_path, UFM, FAILED, results=False)
    assert classify(path) == (FAILED, "ValueError: diverged")
    write_status(path, FAILED, "")
    (path / "ufm.log").write_text("[2026-12-07 04:00:00,000][ncdepth][ERROR] - ufm job failed\n")
    assert classify(path) == (FAILED, "ufm.log: [2026-12-07 04:00:00,000][ncdepth][ERROR] - ufm job failed")
    (path / "ufm.log").unlink()
    assert classify(path) == (FAILED, "no reason recorded")


@pytest.mark.parametrize("state", [RUNNING, REQUEUED])
def test_a_live_owner_makes_it_running(tmp_path: Path, state: str) -> None:
    path = run_dir(tmp_path, KERNELS, state, results=False)
    with RunLock(path):
        found, reason = classify(path, progress="step 3")
    assert found == RUNNING and f"owned by {os.uname().nodename} {os.getpid()}" in reason
    assert reason.endswith("step 3")


def test_requeued_without_an_owner_waits_for_its_scheduler(tmp_path: Path) -> None:
    path = run_dir(tmp_path, TRAIN, REQUEUED, results=False)
    assert classify(path) == (REQUEUED, "waiting to be started again")
    write_status(path, REQUEUED, "stopped by SIGUSR2 after a checkpoint")
    assert classify(path) == (REQUEUED, "stopped by SIGUSR2 after a checkpoint")


def test_running_whose_owner_was_killed_is_interrupted_and_says_how_it_continues(tmp_path: Path) -> None:
    """The owner is a real process killed with SIGKILL while it holds the lock: the kernel drops
    the flock, the lock file still names it."""
    paths = {app: run_dir(tmp_path, app, RUNNING, results=False) for app in (TRAIN, UFM)}
    (paths[TRAIN] / LAST_CHECKPOINT).parent.mkdir()
    (paths[TRAIN] / LAST_CHECKPOINT).write_bytes(b"ckpt")
    for path in paths.values():
        owner = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, time\nfrom ncdepth.rundir import RunLock\n"
                "with RunLock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(600)",
                str(path),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert owner.stdout.readline() == "locked\n"
        assert classify(path)[0] == RUNNING
        owner.kill()
        owner.wait()
        assert (path / ".lock").read_text().split() == [os.uname().nodename, str(owner.pid)]
    state, reason = classify(paths[TRAIN], progress="last measured epoch: 4")
    assert state == INTERRUPTED
    assert reason == (
        "no live process holds .lock (killed?); last measured epoch: 4; resumable from checkpoints/last.ckpt"
    )
    state, reason = classify(paths[UFM])
    assert (state, reason) == (
        INTERRUPTED,
        "no live process holds .lock (killed?); a rerun computes it again from the start",
    )


def test_directories_written_before_status_json_are_classified_from_their_files(tmp_path: Path) -> None:
    finished = run_dir(tmp_path / "a", KERNELS, None)
    assert classify(finished) == (FINISHED, "")
    interrupted = run_dir(tmp_path / "b", UFM, None)
    (interrupted / "summary.json").unlink()
    state, reason = classify(interrupted)
    assert state == INTERRUPTED and reason.startswith("no summary.json; no live process holds .lock")
    failed = run_dir(tmp_path / "c", UFM, None, results=False)
    (failed / "ufm.log").write_text("FloatingPointError: the objective diverged\n")
    assert classify(failed) == (FAILED, "no ufm.csv; ufm.log: FloatingPointError: the objective diverged")
    logged = run_dir(tmp_path / "d", TRAIN, None)
    submitit = tmp_path / "submitit"
    submitit.mkdir()
    (submitit / "1_0_log.err").write_text("slurmstepd: error: Detected 1 oom_kill event\n")
    assert classify(logged, logs=[submitit]) == (
        FAILED,
        "1_0_log.err: slurmstepd: error: Detected 1 oom_kill event",
    )


def test_the_app_comes_from_status_json_then_the_files_then_the_job_name(tmp_path: Path) -> None:
    recorded = run_dir(tmp_path / "a", KERNELS, FAILED, results=False)
    assert run_app(recorded, "train") == KERNELS
    legacy = run_dir(tmp_path / "b", UFM, None)
    assert run_app(legacy) == UFM
    bare = run_dir(tmp_path / "c", TRAIN, None, results=False)
    assert run_app(bare) == TRAIN and run_app(bare, "kernels") == KERNELS and run_app(bare, "other") == TRAIN
    language = run_dir(tmp_path / "d", LM, None)  # metrics.csv as ncdepth-train's: the log tells them apart
    assert run_app(language) == TRAIN
    (language / "lm.log").write_text("")
    assert run_app(language) == LM
    assert json.loads((recorded / "status.json").read_text())["app"] == KERNELS
