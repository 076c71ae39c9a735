"""Every use of Hydra's, submitit's and hydra-submitit-launcher's private API in ncdepth, in one place.

Each function names the private name it uses and why no public one does the job, so that an
upgrade of any of the three has one module to check (``constraints.txt`` pins them).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

SUBMITIT_INIT_KEYS = ("submitit_folder", "max_num_timeout")
"""Launcher params that hydra-submitit-launcher passes to the executor's constructor."""
SUBMITIT_LAUNCHERS = "hydra_plugins.hydra_submitit_launcher.submitit_launcher."
"""The module of hydra-submitit-launcher's launchers (``SlurmLauncher``, ``LocalLauncher``)."""


def make_executor(params: Mapping[str, Any], cluster: str, *, script_only: bool = False) -> Any:
    """The submitit executor that hydra-submitit-launcher's launcher of ``cluster`` (``slurm`` or
    ``local``) builds from its ``params`` (``hydra.launcher`` resolved, without ``_target_``), with
    one change: no ``--wckey`` unless ``additional_parameters`` sets one.

    Private API, and why: the launcher builds its executor inside ``launch`` with no hook, so the
    construction is repeated here from ``AutoExecutor``'s typed parameters
    (``AutoExecutor._typed_parameters``, ``_convert_parameters``: the only place that maps the
    generic names ``mem_gb``, ``timeout_min``... to Slurm's). submitit renders ``wckey`` from a
    keyword default (``"submitit"``) that no parameter can unset (``update_parameters`` drops
    ``None``, an empty string renders ``--wckey=''``), so it is set to ``None`` in the executor's
    ``parameters`` dict, which its renderer skips. ``script_only`` builds a Slurm executor that
    needs no ``srun`` (its ``affinity`` classmethod runs ``srun`` otherwise), for the dry run."""
    from submitit import AutoExecutor
    from submitit.local.local import LocalExecutor
    from submitit.slurm.slurm import SlurmExecutor

    class ScriptOnlySlurmExecutor(SlurmExecutor):
        """submitit's Slurm executor, only ever asked for its script: no ``srun`` needed."""

        @classmethod
        def affinity(cls) -> int:
            return 1

    queue = {key: value for key, value in params.items() if key not in SUBMITIT_INIT_KEYS}
    queue = {key: value for key, value in queue.items() if value is not None}  # AutoExecutor: None = unset
    init = {key: params[key] for key in ("max_num_timeout",) if key in params}  # submitit_local has none
    if cluster == "local":
        executor: Any = LocalExecutor(params["submitit_folder"], **init)
    else:
        base = ScriptOnlySlurmExecutor if script_only else SlurmExecutor
        executor = base(params["submitit_folder"], **init)
    generic = AutoExecutor._typed_parameters()
    parameters = executor._convert_parameters({key: value for key, value in queue.items() if key in generic})
    parameters.update({key: value for key, value in queue.items() if key not in generic})
    executor.update_parameters(**parameters)
    if cluster != "local" and "wckey" not in (queue.get("additional_parameters") or {}):
        executor.parameters["wckey"] = None
    return executor


def sbatch_script(params: Mapping[str, Any], num_jobs: int) -> str:
    """The sbatch script that the Slurm launcher built with ``params`` submits for ``num_jobs``
    jobs (one job array when ``num_jobs > 1``). Needs neither ``srun`` nor ``sbatch``; writes
    nothing. Private API: ``_make_submission_file_text`` and ``_submitit_command_str`` are how
    submitit renders the script it submits; there is no public dry run."""
    executor = make_executor(params, "slurm", script_only=True)
    if num_jobs > 1:
        executor.parameters["map_count"] = num_jobs
    return executor._make_submission_file_text(executor._submitit_command_str, "dry-run")


def submitit_job_folder(submitit_folder: str) -> Path:
    """The folder under which submitit writes every job's files (``%j`` cut off the configured
    ``submitit_folder``). Private API: ``JobPaths.get_first_id_independent_folder`` is the rule
    submitit itself uses; it has no public name."""
    from submitit.core.utils import JobPaths

    return Path(JobPaths.get_first_id_independent_folder(submitit_folder))


def read_result(path: Path) -> tuple[str, Any]:
    """``(outcome, value)`` of a submitit result pickle (``success`` and the task's return value,
    or ``error`` and the traceback as text). ``submitit.core.utils.pickle_load`` is public in all
    but name (it is what ``Job.results`` uses)."""
    from submitit.core.utils import pickle_load

    outcome, value = pickle_load(path)
    return str(outcome), value


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
"""``hydra.sweeper._target_`` of Hydra's basic sweeper (a private module's class)."""


def split_sweep(overrides: list[Any], max_batch_size: int | None) -> list[list[list[str]]]:
    """The jobs of a sweep over the parsed ``overrides`` (Hydra ``Override`` objects), batch by
    batch, exactly as Hydra's basic sweeper launches them: the cartesian product of the swept
    values, first key slowest, in batches of ``max_batch_size`` (``None``: one batch).

    Private API, and why: ``BasicSweeper`` lives in ``hydra._internal.core_plugins``; its
    ``split_arguments`` is the only definition of that order, and a copy of it could drift from
    the sweeper that numbered the jobs."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper.split_arguments(overrides, max_batch_size)
