"""Runs that survive kills, signals, broken checkpoints, full disks and a second process.

Every scenario runs the real ``ncdepth-train`` in its own process. A run is interrupted for real
(``SIGKILL`` or ``SIGTERM`` sent to the running process, from inside at an exact point through
:mod:`fault_injection`, or from the test at a random moment), then the same command runs again in
the same directory; its ``metrics.csv`` must equal an uninterrupted run's byte for byte, and its
``summary.json`` too, timings aside. The scenarios of one phase run concurrently to keep the suite
short on two cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import directory_fingerprint
from ncdepth.rundir import (
    LAST_CHECKPOINT,
    METRICS_FILE,
    PREVIOUS_CHECKPOINT,
    RUN_LOG,
    STATUS_FILE,
    SUMMARY_FILE,
    read_status,
)

TESTS = Path(__file__).resolve().parent
NCDEPTH_TRAIN = Path(sys.executable).parent / "ncdepth-train"
BASE = [
    "data=digits",
    "data.batch_size=32",
    "model.depth=4",
    "model.width=64",
    "trainer.max_epochs=6",
    "nc.every_n_epochs=2",
    "callbacks=none",
    "trainer.enable_progress_bar=false",
    "scheduler=constant",
]
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
}


def command(run_dir: Path, *overrides: str) -> list[str]:
    return [str(NCDEPTH_TRAIN), f"hydra.run.dir={run_dir}", *BASE, *overrides]


def kill_at(
    point: str, epoch: int = 0, batch: int = 0, signal_name: str = "SIGKILL", group: bool = False
) -> list[str]:
    """Overrides adding :class:`fault_injection.KillAt` to a run (``group``: the signal goes to the
    run's process group, every process of a DDP run)."""
    return [
        "+callbacks.kill._target_=fault_injection.KillAt",
        f"+callbacks.kill.point={point}",
        f"+callbacks.kill.epoch={epoch}",
        f"+callbacks.kill.batch={batch}",
        f"+callbacks.kill.signal={signal_name}",
        f"+callbacks.kill.group={str(group).lower()}",
    ]


def start(cmd: Sequence[str]) -> subprocess.Popen[str]:
    """``cmd`` in a session of its own: its process group holds every process of a DDP run."""
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True
    )


def finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def summary_without_timings(run_dir: Path) -> dict:
    """``summary.json`` without its timings and the test-only extra callbacks of its config."""
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    summary.pop("timings")
    summary["config"].pop("callbacks")
    return summary


def assert_ends_like(run_dir: Path, straight: Path) -> None:
    assert (run_dir / METRICS_FILE).read_bytes() == (straight / METRICS_FILE).read_bytes()
    assert summary_without_timings(run_dir) == summary_without_timings(straight)
    assert read_status(run_dir)["state"] == "finished"


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("straight")
    result = finish(start(command(run_dir)))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@dataclass
class Interruption:
    """One way of interrupting a run: how, what it must exit with, what happens before the rerun."""

    overrides: list[str]
    exit_code: int = -signal.SIGKILL
    damage: tuple[str, ...] = ()  # checkpoints to truncate before the rerun
    lose: tuple[str, ...] = ()  # files to delete before the rerun
    first: subprocess.CompletedProcess[str] | None = field(default=None, repr=False)
    rerun: subprocess.CompletedProcess[str] | None = field(default=None, repr=False)


INTERRUPTIONS = {
    "mid_epoch_after_an_interval_checkpoint": Interruption(
        [*kill_at("batch", epoch=3, batch=30), "checkpoint.every_minutes=0.0002"]
    ),
    "during_an_analysis": Interruption(kill_at("analysis", epoch=4)),
    "during_a_checkpoint_write": Interruption(kill_at("checkpoint_write", epoch=3)),
    "sigterm_mid_epoch": Interruption(kill_at("batch", epoch=2, batch=7, signal_name="SIGTERM"), 128 + 15),
    "truncated_last_checkpoint": Interruption(kill_at("epoch_end", epoch=4), damage=(LAST_CHECKPOINT,)),
    "status_json_lost": Interruption(kill_at("epoch_end", epoch=3), lose=(STATUS_FILE,)),
}
"""Interruptions run by ``make test``; ``external_kill`` (a ``kill -9`` from the test) runs with them."""

SLOW_INTERRUPTIONS = {
    "mid_epoch": Interruption(kill_at("batch", epoch=3, batch=5)),
    "during_the_initial_analysis": Interruption(kill_at("analysis", epoch=0)),
    "between_analysis_and_checkpoint": Interruption(kill_at("epoch_end", epoch=4)),
    "after_the_summary": Interruption(kill_at("train_end")),
    "no_complete_checkpoint": Interruption(
        kill_at("epoch_end", epoch=4), damage=(LAST_CHECKPOINT, PREVIOUS_CHECKPOINT)
    ),
}
"""More kill points, run by ``make test-slow``."""


def interrupt_and_rerun(
    root: Path, cases: dict[str, Interruption], external_kill: bool
) -> dict[str, tuple[Path, Interruption]]:
    """Run every case, interrupted; damage its checkpoints as it says; run it again. With
    ``external_kill``, also ``external_kill``: a ``kill -9`` from outside once epoch 2 is measured."""
    runs = {name: (root / name, case) for name, case in cases.items()}
    processes = {name: start(command(run_dir, *case.overrides)) for name, (run_dir, case) in runs.items()}
    if external_kill:
        external = root / "external_kill"
        victim = start(command(external, *pause(0.3)))
        deadline = time.monotonic() + 240
        while (
            b"\n2," not in _read(external / METRICS_FILE)
            and victim.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        runs["external_kill"] = (external, Interruption([], first=finish(victim)))
    for name, process in processes.items():
        runs[name][1].first = finish(process)
    for run_dir, case in runs.values():
        for checkpoint in case.damage:
            path = run_dir / checkpoint
            os.truncate(path, path.stat().st_size // 2)
        for name in case.lose:
            (run_dir / name).unlink()
    reruns = {name: start(command(run_dir)) for name, (run_dir, _) in runs.items()}
    for name, process in reruns.items():
        runs[name][1].rerun = finish(process)
    return runs


def gated(gate: Path, epoch: int = 2) -> list[str]:
    """Overrides adding :class:`fault_injection.WaitFor`: after epoch ``epoch`` (its analysis
    recorded, its checkpoint not yet written) the run waits until ``gate`` exists."""
    return [
        "+callbacks.wait._target_=fault_injection.WaitFor",
        f"+callbacks.wait.path={gate}",
        f"+callbacks.wait.epoch={epoch}",
    ]


def wait_for_rows(run_dir: Path, epoch: int, process: subprocess.Popen[str]) -> None:
    """Wait until ``metrics.csv`` in ``run_dir`` holds the rows of ``epoch``."""
    deadline = time.monotonic() + 240
    while f"\n{epoch},".encode() not in _read(run_dir / METRICS_FILE):
        assert process.poll() is None and time.monotonic() < deadline, finish(process).stderr[-3000:]
        time.sleep(0.05)


def pause(seconds: float) -> list[str]:
    """Overrides adding :class:`fault_injection.Pause`: the run sleeps after every epoch."""
    return ["+callbacks.pause._target_=fault_injection.Pause", f"+callbacks.pause.seconds={seconds}"]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Interruption]]:
    return interrupt_and_rerun(tmp_path_factory.mktemp("interrupted"), INTERRUPTIONS, external_kill=True)


@pytest.fixture(scope="module")
def interrupted_slow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Interruption]]:
    return interrupt_and_rerun(
        tmp_path_factory.mktemp("interrupted_slow"), SLOW_INTERRUPTIONS, external_kill=False
    )


def _read(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


def check_resumed(run_dir: Path, case: Interruption, straight: Path) -> None:
    assert case.first.returncode == case.exit_code, case.first.stderr[-3000:]
    assert case.rerun.returncode == 0, case.rerun.stderr[-3000:]
    assert_ends_like(run_dir, straight)
    assert read_status(run_dir)["attempts"] == 2


@pytest.mark.parametrize("name", [*INTERRUPTIONS, "external_kill"])
def test_an_interrupted_run_resumes_to_identical_results(
    name: str, interrupted: dict[str, tuple[Path, Interruption]], straight: Path
) -> None:
    check_resumed(*interrupted[name], straight)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_INTERRUPTIONS)
def test_more_interrupted_runs_resume_to_identical_results(
    name: str, interrupted_slow: dict[str, tuple[Path, Interruption]], straight: Path
) -> None:
    check_resumed(*interrupted_slow[name], straight)


def test_a_signal_saves_a_checkpoint_and_records_why_the_run_stopped(
    interrupted: dict[str, tuple[Path, Interruption]],
) -> None:
    run_dir, case = interrupted["sigterm_mid_epoch"]
    assert "checkpoint saved at epoch 2, batch 7 after SIGTERM" in case.first.stdout
    log = (run_dir / RUN_LOG).read_text()
    assert "resuming from" in log and "checkpoints/last.ckpt" in log


def test_a_broken_checkpoint_is_named_and_the_previous_one_used(
    interrupted: dict[str, tuple[Path, Interruption]],
) -> None:
    run_dir, _ = interrupted["truncated_last_checkpoint"]
    log = (run_dir / RUN_LOG).read_text()
    assert f"checkpoint {run_dir / LAST_CHECKPOINT} is truncated or corrupt" in log
    assert f"resuming from {run_dir / PREVIOUS_CHECKPOINT}" in log


@pytest.mark.slow
def test_without_a_complete_checkpoint_the_run_starts_afresh_and_keeps_the_old_rows(
    interrupted_slow: dict[str, tuple[Path, Interruption]],
) -> None:
    run_dir, _ = interrupted_slow["no_complete_checkpoint"]
    log = (run_dir / RUN_LOG).read_text()
    assert "no complete checkpoint" in log and "starts afresh" in log
    kept = (run_dir / f"{METRICS_FILE}.1").read_text()
    assert kept.startswith("epoch,split,layer,metric,value\n") and "\n4,train," in kept


def test_a_lost_status_json_is_written_again_counting_attempts_from_the_checkpoint(
    interrupted: dict[str, tuple[Path, Interruption]],
) -> None:
    run_dir, _ = interrupted["status_json_lost"]  # attempts == 2 is checked with the other resumes
    assert (
        "status.json was missing: attempts continue from the checkpoint's record"
        in (run_dir / RUN_LOG).read_text()
    )


def test_a_metrics_csv_cut_mid_line_after_the_checkpoint_is_repaired_and_said(
    interrupted: dict[str, tuple[Path, Interruption]],
) -> None:
    run_dir, _ = interrupted["during_an_analysis"]  # killed with half of the analysis's rows written
    assert "metrics.csv ends mid-line: cut back to the checkpoint's rows" in (run_dir / RUN_LOG).read_text()


def test_metrics_csv_has_unix_line_endings(straight: Path) -> None:
    assert b"\r" not in (straight / METRICS_FILE).read_bytes()


def test_a_second_process_in_the_directory_exits_2_and_the_first_completes(
    tmp_path: Path, straight: Path
) -> None:
    run_dir, gate = tmp_path / "run", tmp_path / "gate"
    first = start(command(run_dir, *gated(gate)))
    wait_for_rows(run_dir, 2, first)  # the first run now waits at the gate, holding the lock
    second = finish(start(command(run_dir)))
    gate.touch()
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"is in use by another process (host pid: {os.uname().nodename} {first.pid})" in second.stderr
    assert finish(first).returncode == 0
    assert_ends_like(run_dir, straight)


def test_a_finished_run_asked_again_changes_nothing(straight: Path) -> None:
    before = directory_fingerprint(straight)
    result = finish(start(command(straight)))
    assert result.returncode == 0 and "nothing to do" in result.stdout
    assert directory_fingerprint(straight) == before


def _mount_tmpfs(directory: Path, size_kb: int) -> bool:
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(directory)], capture_output=True
    )
    return mounted.returncode == 0


def test_a_full_disk_fails_the_run_keeps_what_it_had_and_a_rerun_resumes(
    tmp_path: Path, straight: Path
) -> None:
    """On a real full file system (a 2 MB tmpfs, filled once the run has measured epoch 2, before
    that epoch's checkpoint) where the machine allows mounting one, else with the checkpoint write
    of epoch 3 failing as ENOSPC does."""
    disk = tmp_path / "disk"
    run_dir = disk / "run"
    on_tmpfs = _mount_tmpfs(disk, 2048)
    try:
        if on_tmpfs:
            gate = tmp_path / "gate"
            process = start(command(run_dir, *gated(gate)))
            wait_for_rows(run_dir, 2, process)  # the run waits at the gate, before its epoch-2 checkpoint
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            (disk / "ballast").write_bytes(b"\0" * max(free - 48 * 1024, 0))  # rows fit, a checkpoint not
            gate.touch()
            first = finish(process)
        else:
            first = finish(
                start(
                    command(
                        run_dir,
                        "+callbacks.full._target_=fault_injection.DiskFullAt",
                        "+callbacks.full.epoch=3",
                    )
                )
            )
        assert first.returncode == 1
        errors = [line for line in first.stderr.splitlines() if "error:" in line]
        assert errors == [f"ncdepth-train: error: training failed: {read_status(run_dir)['reason']}"], (
            first.stderr
        )
        assert "Traceback" not in first.stderr
        status = read_status(run_dir)
        assert status["state"] == "failed" and "No space left on device" in status["reason"], status
        table = (run_dir / METRICS_FILE).read_text()
        assert "\n2,train," in table and (run_dir / LAST_CHECKPOINT).exists()
        if on_tmpfs:
            (disk / "ballast").unlink()
        rerun = finish(start(command(run_dir)))
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert_ends_like(run_dir, straight)
    finally:
        if on_tmpfs:
            subprocess.run(["umount", "-l", str(disk)], check=False)


def test_preemption_under_submitit_checkpoints_requeues_and_ends_identically(
    tmp_path: Path, straight: Path
) -> None:
    """Slurm's preemption signal (USR2, as submitit asks Slurm to send it) reaches a job of a real
    multirun through submitit's local executor: the run saves a checkpoint, submitit's own handler
    requeues the task, and the requeued task resumes in the same directory."""
    sweep, gate = tmp_path / "sweep", tmp_path / "gate"
    launcher = start(
        [
            str(NCDEPTH_TRAIN),
            "-m",
            "hydra/launcher=slurm_rehearsal",
            f"hydra.sweep.dir={sweep}",
            *BASE,
            *gated(gate),
        ]
    )
    deadline = time.monotonic() + 240
    while not list(sweep.glob(f"0/{METRICS_FILE}")):
        assert time.monotonic() < deadline and launcher.poll() is None, finish(launcher).stderr[-3000:]
        time.sleep(0.05)
    run_dir = next(sweep.glob(f"0/{METRICS_FILE}")).parent
    wait_for_rows(run_dir, 2, launcher)  # the task waits at the gate after epoch 2
    task = read_status(run_dir)["pid"]
    os.kill(task, signal.SIGUSR2)
    gate.touch()
    result = finish(launcher)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    status = read_status(run_dir)
    assert status["attempts"] == 2 and status["pid"] != task
    log = (run_dir / RUN_LOG).read_text()
    assert "after SIGUSR2; stopping" in log and "resuming from" in log
    assert_ends_like(run_dir, straight)


# ---------------------------------------------------------------------------------------------- DDP
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=4"]
"""Two CPU processes (gloo); ``data.batch_size=32`` per process, 23 batches per process and epoch."""

DDP_INTERRUPTIONS = {
    "mid_epoch_after_an_interval_checkpoint": Interruption(
        [*kill_at("batch", epoch=2, batch=10, group=True), "checkpoint.every_minutes=0.0002"]
    ),
}
"""Kills of the whole process group from inside, run by ``make test`` with an external ``kill -9``
of the process group once epoch 2 is measured (``external_kill``)."""

SLOW_DDP_INTERRUPTIONS = {
    "during_a_checkpoint_write": Interruption(kill_at("checkpoint_write", epoch=2, group=True)),
    "during_an_analysis": Interruption(kill_at("analysis", epoch=2, group=True)),
    "between_analysis_and_checkpoint": Interruption(kill_at("epoch_end", epoch=2, group=True)),
    "mid_epoch_without_an_interval_checkpoint": Interruption(kill_at("batch", epoch=3, batch=4, group=True)),
}
"""More kill points, with ``extended`` (a finished 2-epoch run continued to 4 epochs), run by
``make test-slow``."""


def ddp_command(run_dir: Path, *overrides: str) -> list[str]:
    return command(run_dir, *DDP, *overrides)


def interrupt_ddp_and_rerun(root: Path, cases: dict[str, Interruption], fast: bool) -> dict[str, Path]:
    """The straight DDP run, each case killed then run again; with ``fast``, also
    ``external_kill`` (``kill -9`` of the process group from the test after epoch 2's analysis),
    else ``extended`` (a finished 2-epoch run continued to 4 epochs)."""
    runs = {name: root / name for name in ["straight", *cases]}
    processes = {"straight": start(ddp_command(runs["straight"]))}
    processes |= {name: start(ddp_command(runs[name], *case.overrides)) for name, case in cases.items()}
    if fast:
        runs["external_kill"] = victim_dir = root / "external_kill"
        processes["external_kill"] = victim = start(ddp_command(victim_dir, *pause(0.5)))
        wait_for_rows(victim_dir, 2, victim)
        os.killpg(victim.pid, signal.SIGKILL)
        cases = {**cases, "external_kill": Interruption([])}
    else:
        runs["extended"] = root / "extended"
        processes["extended"] = start(ddp_command(runs["extended"], "trainer.max_epochs=2"))
        cases = {**cases, "extended": Interruption([], exit_code=0)}
    for name, process in processes.items():
        result = finish(process)
        expected = 0 if name == "straight" else cases[name].exit_code
        assert result.returncode == expected, (name, result.stderr[-3000:])
        if name != "straight":
            cases[name].first = result
    reruns = {name: start(ddp_command(runs[name])) for name in cases}
    for name, process in reruns.items():
        cases[name].rerun = result = finish(process)
        assert result.returncode == 0, (name, result.stderr[-3000:])
        assert "resuming from" in (runs[name] / RUN_LOG).read_text(), name
    return runs


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return interrupt_ddp_and_rerun(tmp_path_factory.mktemp("ddp"), DDP_INTERRUPTIONS, fast=True)


@pytest.mark.parametrize("name", [*DDP_INTERRUPTIONS, "external_kill"])
def test_a_killed_ddp_run_ends_like_an_uninterrupted_one(name: str, ddp_runs: dict[str, Path]) -> None:
    """Two CPU processes (gloo), the whole process group killed: the rerun's ``metrics.csv``
    equals the uninterrupted DDP run's byte for byte, its ``summary.json`` too (timings aside)."""
    assert_ends_like(ddp_runs[name], ddp_runs["straight"])


@pytest.mark.slow
def test_more_killed_or_extended_ddp_runs_end_like_an_uninterrupted_one(tmp_path: Path) -> None:
    runs = interrupt_ddp_and_rerun(tmp_path, SLOW_DDP_INTERRUPTIONS, fast=False)
    for name in [*SLOW_DDP_INTERRUPTIONS, "extended"]:
        assert_ends_like(runs[name], runs["straight"])
