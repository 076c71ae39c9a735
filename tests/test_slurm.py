"""Sweeps on a real Slurm cluster (``make slurm``; ``scripts/slurm/``): real ``sbatch`` job arrays of
``ncdepth-train -m hydra/launcher=slurm``, interrupted the ways a cluster interrupts jobs, each run
ending with ``metrics.csv`` byte for byte equal to an uninterrupted run of the same job.

Skipped, saying why, when no cluster answers; with ``CI=true`` a missing cluster fails instead.
The short tests run in ``make test``; the ``slow`` ones (a time limit reached, time-outs
exhausted, partition preemption) in ``make test-slow``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slurm

TINY = [
    "data=digits",
    "model.depth=2",
    "model.width=32",
    "trainer.max_epochs=10",
    "trainer.enable_progress_bar=false",
]
"""A run of 1 to 15 s, by CPU: the tests that interrupt it hold it at a gate (:func:`gated`) or slow it
(:func:`paused`), so that their signals reach a running job on any machine."""
ON_THE_TEST_CLUSTER = [
    "hydra/launcher=slurm",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.gpus_per_task=null",
    "hydra.launcher.timeout_min=60",  # >= 50: submitit counts a USR2 as a preemption, not a time-out
]


_RUN = f"{os.getpid()}"
T_REQUEUE, T_CANCEL, T_SUBMIT = f"t_requeue_{_RUN}", f"t_cancel_{_RUN}", f"t_submit_{_RUN}"
T_TIMELIMIT, T_EXHAUSTED, T_PREEMPT = f"t_timelimit_{_RUN}", f"t_exhausted_{_RUN}", f"t_preempt_{_RUN}"
"""Job names, unique to this test session: Slurm's accounting keeps the jobs of earlier sessions."""


def cluster_problem() -> str | None:
    """Why no Slurm cluster with accounting answers here, or ``None`` when one does."""
    for command in ("sbatch", "sinfo", "sacct", "scontrol"):
        if shutil.which(command) is None:
            return f"{command} is not on PATH"
    for command in (["sinfo", "-h", "-o", "%T"], ["sacct", "-n", "-X", "-S", "now"]):
        try:
            subprocess.run(command, capture_output=True, text=True, timeout=20, check=True)
        except (OSError, subprocess.SubprocessError) as error:
            return f"`{' '.join(command)}` failed: {error}"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    problem = cluster_problem()
    if problem is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI={os.environ['CI']}, but no Slurm cluster answers: {problem} (.ci/run starts one)")
    pytest.skip(f"no Slurm cluster answers ({problem}); start one with `make slurm` (root, Debian)")


TESTS = Path(__file__).parent


def env() -> dict[str, str]:
    """One thread; ``tests/`` importable (the ``fault_injection`` callbacks), in the jobs too (sbatch
    exports the submitting environment)."""
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def gated(gate: Path) -> list[str]:
    """Overrides adding ``fault_injection.WaitFor``: after epoch 2 the run waits until ``gate``
    exists, so that a job the test signals is still running on any CPU (its rows do not change)."""
    return [
        "+callbacks.wait._target_=fault_injection.WaitFor",
        f"+callbacks.wait.path={gate}",
        "+callbacks.wait.epoch=2",
    ]


def received(run_dir: Path, signal_name: str) -> Callable[[], bool]:
    """Whether the run in ``run_dir`` logged that ``signal_name`` reached it."""
    log = run_dir / "train.log"
    return lambda: log.is_file() and f"received {signal_name}" in log.read_text()


def paused(seconds: float) -> list[str]:
    """Overrides adding ``fault_injection.Pause``: the run sleeps ``seconds`` after every epoch, so that
    it outlasts a signal sent at a given time on any CPU (its rows do not change)."""
    return ["+callbacks.pause._target_=fault_injection.Pause", f"+callbacks.pause.seconds={seconds}"]


def train_command(sweep_dir: Path, name: str, *overrides: str) -> list[str]:
    """``ncdepth-train -m`` on the test cluster, its jobs named ``name`` (to find them in squeue)."""
    return [
        str(BIN / "ncdepth-train"),
        "-m",
        *ON_THE_TEST_CLUSTER,
        f"hydra.launcher.name={name}",
        *TINY,
        *overrides,
        f"hydra.sweep.dir={sweep_dir}",
    ]


def start(command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())


def finish(process: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str]:
    """Wait for ``process``; its exit status and output."""
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s; squeue: {squeue()}")
        time.sleep(0.5)


def squeue() -> dict[str, str]:
    """``{job id: state}`` of every job in the queue."""
    shown = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, timeout=30).stdout
    return dict(line.split() for line in shown.splitlines() if line.strip())


def job_ids(name: str) -> list[str]:
    """Ids of the jobs named ``name`` in Slurm's accounting (array tasks as ``A_i``), in order."""
    shown = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID", "--name", name, "-S", "now-1hour"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    found = {line.strip() for line in shown.splitlines() if line.strip() and "[" not in line}  # not 7_[2-3]
    return sorted(found, key=_task_key)


def _task_key(job_id: str) -> tuple[int, int]:
    array, _, task = job_id.partition("_")
    return int(array), int(task or 0)


def sacct_states(job_id: str) -> list[str]:
    """Every state Slurm's accounting recorded for ``job_id``, requeues included (``-D``)."""
    shown = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-D", "-o", "State", "-j", job_id],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return [line.split()[0] for line in shown.splitlines() if line.strip()]


def checkpointed(run_dir: Path) -> Callable[[], bool]:
    return lambda: (run_dir / "checkpoints" / "last.ckpt").is_file()


def run_dirs(sweep_dir: Path) -> list[str]:
    return sorted(
        path.name for path in sweep_dir.iterdir() if path.is_dir() and not path.name.startswith(".")
    )


LONG = ["trainer.max_epochs=600", "seed=0"]
"""The time-limit tests' run: about two minutes of training, more than one 2-minute attempt."""


@pytest.fixture(scope="session")
def long_reference(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """``metrics.csv`` of the uninterrupted ``LONG`` run."""
    run_dir = tmp_path_factory.mktemp("uninterrupted_long")
    command = [str(BIN / "ncdepth-train"), *TINY, *LONG, f"hydra.run.dir={run_dir}"]
    subprocess.run(command, check=True, capture_output=True, env=env(), timeout=900)
    return (run_dir / "metrics.csv").read_bytes()


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], bytes]:
    """``metrics.csv`` of the uninterrupted run of seed ``s`` (``TINY``, this machine, one thread),
    computed once per seed."""
    root = tmp_path_factory.mktemp("uninterrupted")
    done: dict[int, bytes] = {}

    def metrics(seed: int) -> bytes:
        if seed not in done:
            run_dir = root / str(seed)
            command = [str(BIN / "ncdepth-train"), *TINY, f"seed={seed}", f"hydra.run.dir={run_dir}"]
            subprocess.run(command, check=True, capture_output=True, env=env(), timeout=600)
            done[seed] = (run_dir / "metrics.csv").read_bytes()
        return done[seed]

    return metrics


def assert_resumed_identically(run_dir: Path, expected: bytes, signal_name: str | None) -> str:
    """The run in ``run_dir`` finished after at least two attempts, saved a checkpoint on
    ``signal_name`` (when given) and resumed from it, with ``metrics.csv`` equal to ``expected``.
    Returns its log."""
    log = (run_dir / "train.log").read_text()
    status = (run_dir / "status.json").read_text()
    assert '"state": "finished"' in status, status
    assert re.search(r'"attempts": [2-9]', status), status
    if signal_name is not None:
        assert re.search(rf"checkpoint saved at epoch \d+, batch \d+ after {signal_name}; stopping", log), log
    assert "resuming from" in log and "last.ckpt" in log, log
    assert (run_dir / "metrics.csv").read_bytes() == expected
    return log


def test_signal_and_scontrol_requeue_resume_identically(
    slurm_cluster: None, tmp_path: Path, reference: Callable[[int], bytes]
) -> None:
    """Task 0 gets ``scancel --signal=USR2`` (a preemption notice: submitit requeues it), task 1
    ``scontrol requeue`` (Slurm kills and requeues it): both resume in their own directories."""
    sweep, gate = tmp_path / "sweep", tmp_path / "gate"
    process = start(train_command(sweep, T_REQUEUE, "seed=0,1", *gated(gate)))
    wait_for(lambda: len(job_ids(T_REQUEUE)) == 2, "the array's 2 tasks submitted")
    first, second = job_ids(T_REQUEUE)
    wait_for(checkpointed(sweep / "0"), "task 0's first checkpoint")
    subprocess.run(["scancel", "--signal=USR2", first], check=True, timeout=30)
    wait_for(checkpointed(sweep / "1"), "task 1's first checkpoint")
    subprocess.run(["scontrol", "requeue", second], check=True, timeout=30)
    wait_for(received(sweep / "0", "SIGUSR2"), "task 0 told of its USR2")
    wait_for(received(sweep / "1", "SIGTERM"), "task 1 told of its requeue")
    gate.touch()
    status, output = finish(process)
    assert status == 0, output[-4000:]
    assert run_dirs(sweep) == ["0", "1"]
    assert_resumed_identically(sweep / "0", reference(0), "SIGUSR2")
    assert_resumed_identically(sweep / "1", reference(1), "SIGTERM")
    assert "REQUEUED" in sacct_states(first) and "REQUEUED" in sacct_states(second)
    assert "2 jobs in" in output and "2 finished, 0 failed" in output


def test_a_cancelled_job_is_reported_and_the_relaunch_resumes_only_it(
    slurm_cluster: None, tmp_path: Path, reference: Callable[[int], bytes]
) -> None:
    """``scancel`` of task 0 (as an OOM kill or a lost node ends a job): the launcher waits for
    task 1, names task 0's Slurm state and exits 1. The same command again submits task 0 alone,
    which resumes in its own directory."""
    sweep, gate = tmp_path / "sweep", tmp_path / "gate"
    command = train_command(sweep, T_CANCEL, "seed=0,1", *gated(gate))
    process = start(command)
    wait_for(lambda: len(job_ids(T_CANCEL)) == 2, "the array's 2 tasks submitted")
    first, _ = job_ids(T_CANCEL)
    wait_for(checkpointed(sweep / "0"), "task 0's first checkpoint")
    subprocess.run(["scancel", first], check=True, timeout=30)
    wait_for(received(sweep / "0", "SIGTERM"), "task 0 told of its cancellation")
    gate.touch()
    status, output = finish(process)
    assert status == 1, output[-4000:]
    assert re.search(
        rf"job #0 \(.*seed=0 .*\) {first} CANCELLED( by \d+)?, no result; its run: failed: stopped by SIGTERM",
        output,
    ), output[-4000:]
    assert re.search(r"job #1 \(.*seed=1 .*\) \S+ COMPLETED; its run: finished", output), output[-4000:]
    assert "Traceback" not in output and "UncompletedJobError" not in output
    assert "2 jobs in" in output and "1 finished, 1 failed" in output
    before = run_dirs(sweep)

    process = start(command)  # the relaunch
    status, output = finish(process)
    assert status == 0, output[-4000:]
    assert "#1 : " in output and "(finished: not submitted again)" in output
    assert re.search(r"submitted 1 job\(s\) in 1 array\(s\): \d+\n", output), output[-4000:]
    assert before == run_dirs(sweep) == ["0", "1"]
    assert_resumed_identically(sweep / "0", reference(0), signal_name=None)
    assert (sweep / "1" / "metrics.csv").read_bytes() == reference(1)
    assert len(job_ids(T_CANCEL)) == 3  # 2 tasks, then task 0 alone


@pytest.mark.slow
def test_submit_only_returns_at_once_and_arrays_respect_max_array_size(
    slurm_cluster: None, tmp_path: Path
) -> None:
    """``NCDEPTH_SLURM_SUBMIT_ONLY=1``: a 5-job sweep on a cluster whose ``MaxArraySize`` is 4 goes
    as two arrays (4 + 1 tasks), the command exits 0 once they are submitted, and
    ``ncdepth-report`` accounts for the jobs once they end."""
    shown = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    max_size = int(re.search(r"MaxArraySize\s*=\s*(\d+)", shown).group(1))
    if max_size >= 5:
        pytest.skip(f"this cluster's MaxArraySize is {max_size}: scripts/slurm/start.sh sets 4")
    sweep = tmp_path / "sweep"
    command = train_command(sweep, T_SUBMIT, "trainer.max_epochs=1", "seed=0,1,2,3,4")
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**env(), "NCDEPTH_SLURM_SUBMIT_ONLY": "1"}
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (
        f"5 job(s) submitted (NCDEPTH_SLURM_SUBMIT_ONLY=1), not waited for; follow them with: ncdepth-report {sweep}"
        in result.stdout
    )
    submitted = re.search(r"submitted 5 job\(s\) in 2 array\(s\): (.*)", result.stdout + result.stderr)
    assert submitted is not None, result.stdout + result.stderr
    arrays = {job.partition("_")[0] for job in submitted.group(1).split(", ")}
    assert len(arrays) == 2  # 4 tasks, then 1
    wait_for(
        lambda: not any(job.split("_")[0] in arrays for job in squeue()), "the 5 jobs ended", timeout=400
    )
    assert len(job_ids(T_SUBMIT)) == 5
    report = subprocess.run(
        [str(BIN / "ncdepth-report"), str(sweep)], capture_output=True, text=True, timeout=300, env=env()
    )
    assert f"5 jobs in {sweep}: 5 finished, 0 failed" in report.stdout + report.stderr, (
        report.stdout + report.stderr
    )
    assert {"0", "1", "2", "3", "4"} <= set(run_dirs(sweep))


@pytest.mark.slow
def test_a_time_limit_reached_requeues_and_resumes_identically(
    slurm_cluster: None, tmp_path: Path, long_reference: bytes
) -> None:
    """A task whose time limit (2 min) comes before its end (``LONG``: about two minutes of training): Slurm's USR2 ``signal_delay_s``
    before the limit, a checkpoint, submitit's requeue (a time-out, ``max_num_timeout=3``), as
    often as needed, then the run ends as the uninterrupted one."""
    sweep = tmp_path / "sweep"
    command = train_command(
        sweep,
        T_TIMELIMIT,
        "hydra.launcher.timeout_min=2",
        "hydra.launcher.signal_delay_s=60",
        "hydra.launcher.max_num_timeout=6",
        *LONG,
        *paused(0.2),  # >= 120 s on any CPU: past the USR2 at 60 s, at most about 5 attempts
    )
    status, output = finish(start(command), timeout=900)
    assert status == 0, output[-4000:]
    assert_resumed_identically(sweep / "0", long_reference, "SIGUSR2")


@pytest.mark.slow
def test_exhausted_time_outs_fail_without_a_traceback_and_a_relaunch_resumes(
    slurm_cluster: None, tmp_path: Path, long_reference: bytes
) -> None:
    """``max_num_timeout=0``: the first time limit ends the job: ``failed: out of requeues (rerun
    to resume)``, no traceback, the sweep's summary, exit 1. The same sweep relaunched with a
    longer time limit (a launcher key: the same sweep) resumes it to the uninterrupted result."""
    sweep = tmp_path / "sweep"
    overrides = ["hydra.launcher.signal_delay_s=60", *LONG, *paused(0.2)]  # >= 120 s: past the 60 s signal
    limited = ["hydra.launcher.timeout_min=2", "hydra.launcher.max_num_timeout=0"]
    status, output = finish(start(train_command(sweep, T_EXHAUSTED, *limited, *overrides)), timeout=600)
    assert status == 1, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    assert '"state": "failed"' in (sweep / "0" / "status.json").read_text()
    assert "out of requeues (rerun to resume)" in (sweep / "0" / "status.json").read_text()
    assert "failed: out of requeues (rerun to resume)" in output
    assert "1 jobs in" in output and "0 finished, 1 failed" in output
    status, output = finish(start(train_command(sweep, T_EXHAUSTED, *overrides)), timeout=600)
    assert status == 0, output[-4000:]
    assert run_dirs(sweep) == ["0"]
    assert_resumed_identically(sweep / "0", long_reference, "SIGUSR2")


@pytest.mark.slow
def test_partition_preemption_requeues_and_resumes_identically(
    slurm_cluster: None, tmp_path: Path, reference: Callable[[int], bytes]
) -> None:
    """A job of partition ``high`` (PriorityTier 10) preempts the sweep's task on ``debug``, which
    takes every CPU: ``PreemptMode=REQUEUE`` with ``preempt_send_user_signal`` sends it USR2 first;
    it checkpoints, submitit requeues it, and it resumes once the high-priority job is done."""
    sweep = tmp_path / "sweep"
    cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.split()[0]
    command = train_command(
        sweep,
        T_PREEMPT,
        "hydra.launcher.partition=debug",
        f"hydra.launcher.cpus_per_task={cpus}",
        "seed=0",
        *paused(3.0),  # 10 epochs: at least 30 s, for the preemptor to be scheduled
    )
    process = start(command)
    wait_for(lambda: len(job_ids(T_PREEMPT)) == 1, "the task submitted")
    (task,) = job_ids(T_PREEMPT)
    wait_for(checkpointed(sweep / "0"), "the task's first checkpoint")
    subprocess.run(
        [
            "sbatch",
            "-p",
            "high",
            "-c",
            cpus,
            "--mem=100M",
            "-J",
            "t_preemptor",
            "-o",
            "/dev/null",
            "--wrap",
            "sleep 5",
        ],
        check=True,
        timeout=30,
    )
    status, output = finish(process)
    assert status == 0, output[-4000:]
    assert_resumed_identically(sweep / "0", reference(0), "SIGUSR2")
    assert {"PREEMPTED", "REQUEUED"} & set(sacct_states(task)), sacct_states(task)
