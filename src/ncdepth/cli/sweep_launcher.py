"""The launchers of ``hydra/launcher=slurm`` (``slurm_ddp``) and ``slurm_rehearsal``:
hydra-submitit-launcher's, changed so that a sweep survives whatever its jobs go through. The
classes Hydra instantiates are in ``hydra_plugins.ncdepth_sweep_launcher`` (Hydra's rule), made of
:class:`SurvivingLaunch` and hydra-submitit-launcher's ``SlurmLauncher`` / ``LocalLauncher``.

hydra-submitit-launcher's ``launch`` ends with ``[j.results()[0] for j in jobs]``: the first job
that ends without a result (cancelled, killed for memory, its node lost, out of time) raises
``UncompletedJobError`` and ends the sweep while other jobs still run. :meth:`SurvivingLaunch.launch`
instead

1. skips every job whose run directory (``<sweep dir>/<hydra.sweep.subdir>``, the job number in
   ncdepth's launcher configs, so stable across submissions) holds a finished run: running the
   same sweep command again into the same sweep dir submits only the unfinished jobs, which
   resume from their own checkpoints;
2. submits the others as job arrays of at most the cluster's ``MaxArraySize`` tasks
   (``scontrol show config``), one after another;
3. with ``NCDEPTH_SLURM_SUBMIT_ONLY=1``, prints the submitted job ids and how to follow the sweep
   (``ncdepth-report <sweep dir>``) and exits 0 without waiting;
4. otherwise waits for every job to end, however it ends, and logs one line per job: its number,
   overrides, Slurm's final state (``COMPLETED``, ``CANCELLED``, ``OUT_OF_MEMORY``, ``NODE_FAIL``,
   ``TIMEOUT``, ``PREEMPTED``...) and what its run directory says (:func:`ncdepth.rundir.classify`).
   The sweep's accounting (and exit status) is then :class:`ncdepth.cli.sweep_callbacks.SweepStatus`'s.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf, open_dict

from ncdepth.private_api import make_executor
from ncdepth.rundir import FINISHED, classify, read_status

log = logging.getLogger(__name__)

TRANSIENT_STATES = ("RUNNING", "COMPLETING", "PENDING", "REQUEUED", "UNKNOWN")
"""Slurm states that a job which has ended still reads for a moment."""
SUBMIT_ONLY_ENV = "NCDEPTH_SLURM_SUBMIT_ONLY"
"""``1``: submit the sweep's jobs, print their ids and exit 0 without waiting for them."""
_FALSE, _TRUE = ("", "0", "false", "no"), ("1", "true", "yes")


def submit_only_requested(environ: Any = os.environ) -> bool:
    """Whether ``NCDEPTH_SLURM_SUBMIT_ONLY`` asks to submit and return (``1``, ``true``, ``yes``).
    Raises ``ValueError`` naming the variable for a value other than those and ``0``/``false``/``no``."""
    value = environ.get(SUBMIT_ONLY_ENV, "").strip().lower()
    if value not in _FALSE + _TRUE:
        raise ValueError(
            f"{SUBMIT_ONLY_ENV} must be 1 (submit and return) or 0, got {environ[SUBMIT_ONLY_ENV]!r}"
        )
    return value in _TRUE


def max_array_size(run: Any = subprocess.run) -> int | None:
    """The cluster's ``MaxArraySize`` (an array holds indices ``0 .. MaxArraySize - 1``), read from
    ``scontrol show config``; ``None`` when ``scontrol`` is missing or does not say."""
    if shutil.which("scontrol") is None:
        return None
    try:
        shown = run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in shown.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return int(value.strip())
    return None


def chunks(items: Sequence[Any], size: int | None) -> list[Sequence[Any]]:
    """``items`` cut into consecutive pieces of at most ``size`` (one piece when ``size`` is
    ``None``); no piece is empty."""
    if not items:
        return []
    if size is None or size < 1:
        return [items]
    return [items[start : start + size] for start in range(0, len(items), size)]


class SurvivingLaunch:
    """``launch`` for hydra-submitit-launcher's launchers (module docstring); mixed in before
    ``SlurmLauncher`` / ``LocalLauncher``, whose ``__call__`` (the job) and ``checkpoint`` (the
    requeue) it keeps."""

    _EXECUTOR: str
    params: dict[str, Any]
    config: Any
    hydra_context: Any

    def run_dir(self, overrides: Sequence[str], job_num: int) -> Path | None:
        """The run directory of job ``job_num``: the sweep dir and ``hydra.sweep.subdir`` of the job's
        config, as the job itself computes them; ``None`` when the subdir needs what only the job
        knows (``hydra.job.id``)."""
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config.hydra.job):
            sweep_config.hydra.job.num = job_num
        try:
            subdir = OmegaConf.select(sweep_config, "hydra.sweep.subdir", throw_on_missing=True)
            return Path(str(sweep_config.hydra.sweep.dir)) / str(subdir)
        except Exception:  # e.g. ${hydra.job.id}: known only inside the job
            return None

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info("Submitit '%s' sweep output dir : %s", self._EXECUTOR, sweep_dir)
        returns: dict[int, JobReturn] = {}
        pending: list[tuple[int, list[str], Path | None]] = []
        for offset, overrides in enumerate(job_overrides):
            num, overrides = initial_job_idx + offset, list(overrides)
            run_dir = self.run_dir(overrides, num)
            finished = run_dir is not None and (read_status(run_dir) or {}).get("state") == FINISHED
            label = " ".join(filter_overrides(overrides))
            log.info("\t#%d : %s%s", num, label, " (finished: not submitted again)" if finished else "")
            if finished:
                returns[num] = JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=None)
            else:
                pending.append((num, overrides, run_dir))
        executor = make_executor(self.params, self._EXECUTOR)
        size = max_array_size() if self._EXECUTOR == "slurm" else None
        submitted: list[tuple[int, list[str], Path | None, Any]] = []
        for piece in chunks(pending, size):
            arguments = [
                (overrides, "hydra.sweep.dir", num, f"job_id_for_{num}", Singleton.get_state())
                for num, overrides, _ in piece
            ]
            jobs = executor.map_array(self, *zip(*arguments, strict=True))
            submitted += [(*entry, job) for entry, job in zip(piece, jobs, strict=True)]
        if submitted:
            ids = ", ".join(str(job.job_id) for *_, job in submitted)
            log.info(
                "submitted %d job(s) in %d array(s): %s", len(submitted), len(chunks(pending, size)), ids
            )
        if self._EXECUTOR == "slurm" and submit_only_requested():  # local jobs die with this process
            print(
                f"{len(submitted)} job(s) submitted ({SUBMIT_ONLY_ENV}=1), not waited for; "
                f"follow them with: ncdepth-report {sweep_dir}",
                flush=True,
            )
            raise SystemExit(0)
        ended = [(num, overrides, run_dir, job, *_wait(job)) for num, overrides, run_dir, job in submitted]
        states = _final_states([job for *_, job, _, _ in ended])
        for num, overrides, run_dir, job, result, problem in ended:
            _log_outcome(num, overrides, run_dir, job.job_id, states.get(job.job_id, "UNKNOWN"), problem)
            if result is not None:  # a job without one is accounted for by its run directory
                returns[num] = result
        return [returns[num] for num in sorted(returns)]


def _wait(job: Any) -> tuple[JobReturn | None, str]:
    """Wait for the submitit ``job`` to end, however it ends: its ``JobReturn`` and ``""``, or
    ``None`` and why it has none: ``no result`` (the job was cancelled or killed before writing
    one), or the last line of the traceback of a job process that failed."""
    from submitit.core.utils import UncompletedJobError

    try:
        return job.results()[0], ""
    except UncompletedJobError:  # cancelled, killed, out of memory, node lost
        return None, "no result"
    except Exception as error:  # the job process itself failed: submitit's FailedJobError
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        return None, f"job process failed: {lines[-1] if lines else type(error).__name__}"


def _final_states(jobs: Sequence[Any], wait_s: float = 30.0) -> dict[str, str]:
    """Slurm's state of each of ``jobs`` (ended), by job id, asked again (one ``sacct`` for all)
    until none reads ``RUNNING`` / ``COMPLETING`` (a job that has just written its result) or
    ``wait_s`` have passed."""
    deadline = time.monotonic() + wait_s
    while True:
        if jobs:
            jobs[0].get_info(mode="force")  # one sacct for every job of the sweep (submitit's watcher)
        states = {str(job.job_id): str(job.state) for job in jobs}
        if not any(state in TRANSIENT_STATES for state in states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(2.0)


def _log_outcome(
    num: int, overrides: list[str], run_dir: Path | None, job_id: str, state: str, problem: str
) -> None:
    """One line for the job: number, overrides, Slurm job id and state, and what its run
    directory says (and why submitit got no result, when it got none)."""
    label = " ".join(filter_overrides(overrides)) or "no overrides"
    found = "run directory unknown"
    if run_dir is not None:
        run_state, reason = classify(run_dir)
        found = f"{run_state}: {reason}" if reason else run_state
    where = f"; run {run_dir}" if run_dir is not None else ""
    if problem:
        log.warning(
            "job #%d (%s) %s %s, %s; its run: %s%s",
            num,
            label,
            job_id,
            state,
            problem,
            found,
            where,
        )
    else:
        log.info("job #%d (%s) %s %s; its run: %s%s", num, label, job_id, state, found, where)
