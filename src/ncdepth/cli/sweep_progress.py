"""Progress of a submitit multirun, in the launching process: each job that ends (number,
overrides, outcome, the log of a failure) and, while jobs run, how many have ended."""

from __future__ import annotations

import atexit
import logging
import threading
import time
from pathlib import Path

from ncdepth.private_api import read_result
from ncdepth.rundir import FINISHED, classify, read_status

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = {"SlurmLauncher": (15.0, 300.0), "LocalLauncher": (1.0, 15.0)}
"""Per submitit launcher: seconds between two looks for ended jobs, and between two progress lines
while no job ends."""
UNREADABLE_AFTER = 3
"""Looks after which a result that cannot be read is reported as such (counted as failed)."""


class SweepProgress:
    """Reports, in the launching process, the jobs of a submitit multirun that end: for each, its
    number, overrides and outcome (a failure with its reason and where to look: :func:`_ended_job`)
    and how many have ended and failed; every ``heartbeat_s`` seconds without news, the counts
    again. It reads what submitit writes under ``submitit_dir`` (``<job id>/<job id>_0_result.pkl``,
    written atomically once the job's first task has ended) every ``poll_s`` seconds, in a daemon
    thread (:meth:`start`, :meth:`stop`) or by hand (:meth:`poll`)."""

    def __init__(self, submitit_dir: Path, total: int | None, poll_s: float, heartbeat_s: float) -> None:
        self.submitit_dir = submitit_dir
        self.total = total
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self.ended: dict[Path, bool] = {}  # result pickle -> failed
        self._unreadable: dict[Path, int] = {}  # result pickle -> failed reads
        self._start = self._last_news = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        """Report every job that has ended since the last call, or a heartbeat when due."""
        for result in sorted(self.submitit_dir.glob("*/*_0_result.pkl")):
            if result in self.ended:
                continue
            try:
                label, outcome, failed = _ended_job(result)
            except Exception as error:  # look again next time, then say so
                self._unreadable[result] = self._unreadable.get(result, 0) + 1
                if self._unreadable[result] < UNREADABLE_AFTER:
                    continue
                label, failed = f"(submitit result {result})", True
                outcome = f"ended, but its result cannot be read: {type(error).__name__}: {error}"
            self.ended[result] = failed
            self._last_news = time.monotonic()
            log.info("job %s %s (%s, %.0f s)", label, outcome, self._count(), self._last_news - self._start)
        if time.monotonic() - self._last_news >= self.heartbeat_s:
            self._last_news = time.monotonic()
            waiting = "" if self.total is None else f", {self.total - len(self.ended)} running or queued"
            log.info("%s%s, %.0f s since launch", self._count(), waiting, self._last_news - self._start)

    def _count(self) -> str:
        total = "" if self.total is None else f"/{self.total}"
        return f"{len(self.ended)}{total} jobs ended, {sum(self.ended.values())} failed"

    def start(self) -> None:
        """Poll in a daemon thread until :meth:`stop`, which also runs at exit (a multirun that
        raises, on a failed job, never reaches ``on_multirun_end``)."""
        self._thread = threading.Thread(target=self._run, name="ncdepth-sweep-progress", daemon=True)
        self._thread.start()
        atexit.register(self.stop)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll()

    def stop(self) -> None:
        """Stop the thread and report the jobs that ended since its last look."""
        atexit.unregister(self.stop)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()


def _ended_job(result: Path) -> tuple[str, str, bool]:
    """``(label, outcome, failed)`` of the job whose first task wrote the submitit result ``result``:
    label ``#<job num> (<overrides>)``; outcome ``finished`` / ``done`` (a run directory with no
    ``status.json``), or why it failed and where to look: the traceback's last line and submitit's
    log when the job process failed, the exception and run directory when the task raised, the
    state and reason :func:`ncdepth.rundir.classify` gives the run directory otherwise."""
    from hydra.core.utils import JobStatus, filter_overrides

    job_id = result.name.removesuffix("_0_result.pkl")
    log_file = result.with_name(f"{job_id}_0_log.err")
    outcome, value = read_result(result)
    if outcome != "success":  # submitit's own failure: the traceback as text
        last_line = next((line for line in reversed(str(value).splitlines()) if line.strip()), "?")
        return f"(submitit job {job_id})", f"FAILED: {last_line.strip()}; log {log_file}", True
    overrides = " ".join(filter_overrides(value.overrides or []))
    label = f"#{value.hydra_cfg.hydra.job.num} ({overrides or 'no overrides'})"
    run_dir = value.hydra_cfg.hydra.runtime.output_dir
    if value.status != JobStatus.COMPLETED:
        error = value._return_value
        return label, f"FAILED: {type(error).__name__}: {error}; run {run_dir}", True
    if read_status(run_dir) is None:  # an app that keeps no status.json: its task returned
        return label, "done", False
    state, reason = classify(run_dir)
    if state == FINISHED:
        return label, FINISHED, False
    return label, f"{state.upper()}: {reason}; run {run_dir}", True
