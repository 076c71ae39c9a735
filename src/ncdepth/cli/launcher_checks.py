"""Checks of a multirun made before anything is submitted, and the Slurm dry run.

:class:`LauncherCheck` is the Hydra callback (``hydra.callbacks`` of ``ncdepth/conf/train.yaml``)
that runs them in the launching process of a multirun (``on_multirun_start``, before the sweeper
makes the sweep directory or the launcher submits anything):

* for any launcher: exit 2 with one ``<program>: error: ...`` line on stderr when the sweep
  directory holds another sweep (:func:`another_sweep_error`);
* for a Slurm launcher: the same when the layout disagrees with the trainer or varies between the
  jobs (:mod:`ncdepth.cli.slurm_layout`), when ``sbatch`` / ``srun`` are not on ``PATH`` (saying
  what to use instead), or when the sweep's data set is missing here (:func:`missing_dataset_error`);
* with ``NCDEPTH_SLURM_DRY_RUN=1``: write the sweep's sbatch script, rendered by submitit's own code,
  to ``<sweep dir>/slurm_dry_run.sbatch`` (and the job of each array index to
  ``slurm_dry_run_jobs.txt``), print its path and exit 0 without submitting;
* for any submitit launcher (Slurm or the local rehearsal): start a
  :class:`~ncdepth.cli.sweep_progress.SweepProgress`, stopped by ``on_multirun_end``.

The launchers themselves are in :mod:`ncdepth.cli.sweep_launcher`; every use of submitit's private
API is in :mod:`ncdepth.private_api`.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ncdepth.cli.slurm_layout import launcher_layout_error, swept_layout_error
from ncdepth.cli.sweep_launcher import submit_only_requested
from ncdepth.cli.sweep_progress import PROGRESS_EVERY_S, SweepProgress
from ncdepth.private_api import SUBMITIT_LAUNCHERS, sbatch_script, submitit_job_folder
from ncdepth.report.collect import MULTIRUN_FILE, job_batches, sweep_jobs

log = logging.getLogger(__name__)

DRY_RUN_ENV = "NCDEPTH_SLURM_DRY_RUN"
"""``1``: a Slurm multirun writes its sbatch script and exits 0, submitting nothing."""
DRY_RUN_SCRIPT = "slurm_dry_run.sbatch"
"""The dry run's sbatch script, in the sweep directory."""
DRY_RUN_JOBS = "slurm_dry_run_jobs.txt"
"""The dry run's job list, in the sweep directory: ``<array index = job num>\\t<overrides>`` a line."""
SLURM_COMMANDS = ("sbatch", "srun")
"""What submitit runs to submit a job (``sbatch``) and to start its tasks (``srun``)."""
SUBMITIT_LAUNCHER_KINDS = {
    "hydra_plugins.ncdepth_sweep_launcher.surviving_launcher.SurvivingSlurmLauncher": "SlurmLauncher",
    "hydra_plugins.ncdepth_sweep_launcher.surviving_launcher.SurvivingLocalLauncher": "LocalLauncher",
    f"{SUBMITIT_LAUNCHERS}SlurmLauncher": "SlurmLauncher",
    f"{SUBMITIT_LAUNCHERS}LocalLauncher": "LocalLauncher",
}
"""The launchers of ``hydra.launcher._target_`` that go through submitit, and their kind."""
_FALSE, _TRUE = ("", "0", "false", "no"), ("1", "true", "yes")


def program_name() -> str:
    """The command's name for error lines (``ncdepth-train``), as argparse names it."""
    return Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "ncdepth"


def exit_with_error(message: str) -> NoReturn:
    """Print ``<program>: error: <message>`` as one line on stderr and exit with status 2."""
    print(f"{program_name()}: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def dry_run_requested(environ: Mapping[str, str]) -> bool:
    """Whether ``NCDEPTH_SLURM_DRY_RUN`` asks for a dry run (``1``, ``true``, ``yes``; unset, empty,
    ``0``, ``false``, ``no``: no). Raises ``ValueError`` naming the variable for any other value."""
    value = environ.get(DRY_RUN_ENV, "").strip().lower()
    if value not in _FALSE + _TRUE:
        raise ValueError(f"{DRY_RUN_ENV} must be 1 (dry run) or 0, got {environ[DRY_RUN_ENV]!r}")
    return value in _TRUE


def slurm_commands_error(
    launcher_choice: str, which: Callable[[str], str | None] = shutil.which
) -> str | None:
    """What is missing to submit to Slurm from this machine (``sbatch`` / ``srun`` not on ``PATH``)
    and what to use instead, or ``None`` when both are there."""
    missing = [command for command in SLURM_COMMANDS if which(command) is None]
    if not missing:
        return None
    return (
        f"hydra/launcher={launcher_choice} submits the sweep to Slurm, but {' and '.join(missing)} "
        f"{'is' if len(missing) == 1 else 'are'} not on PATH (not a Slurm login node?): run it on the "
        "cluster, or use hydra/launcher=slurm_rehearsal to rehearse it here through submitit, "
        f"hydra/launcher=cpu_pool to run it here, or {DRY_RUN_ENV}=1 to write its sbatch script "
        "without submitting"
    )


def launcher_kind(config: DictConfig) -> str | None:
    """``SlurmLauncher`` or ``LocalLauncher`` for hydra-submitit-launcher's launchers (the ``slurm*``
    and ``slurm_rehearsal`` configs), else ``None``."""
    return SUBMITIT_LAUNCHER_KINDS.get(str(OmegaConf.select(config, "hydra.launcher._target_", default="")))


def slurm_launch_error(
    config: DictConfig, environ: Mapping[str, str], which: Callable[[str], str | None] = shutil.which
) -> str | None:
    """Why the Slurm multirun of ``config`` (with its ``hydra`` node) must not be submitted, or
    ``None`` (always for other launchers): a bad ``NCDEPTH_SLURM_DRY_RUN``; when ``config`` has a
    ``trainer``, :func:`swept_layout_error` and :func:`launcher_layout_error`; unless it is a dry
    run, :func:`slurm_commands_error`."""
    if launcher_kind(config) != "SlurmLauncher":
        return None
    choice = str(config.hydra.runtime.choices.get("hydra/launcher", "slurm"))
    try:
        dry_run = dry_run_requested(environ)
        submit_only_requested(environ)
    except ValueError as error:
        return str(error)
    if isinstance(config.get("trainer"), DictConfig):
        sweeper_params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
        error = swept_layout_error(list(config.hydra.overrides.task), sweeper_params)
        if error is not None:
            return error
        launcher, trainer = config.hydra.launcher, config.trainer
        try:
            layout = {key: launcher[key] for key in ("tasks_per_node", "nodes") if key in launcher}
            devices = {key: trainer[key] for key in ("devices", "num_nodes") if key in trainer}
        except OmegaConfBaseException as error:
            return (
                f"{_omegaconf_message(error)}: with hydra/launcher={choice}, trainer.devices and "
                "trainer.num_nodes must be numbers (GPUs per node, nodes)"
            )
        error = launcher_layout_error(layout, devices)
        if error is not None:
            return error
    return None if dry_run else slurm_commands_error(choice, which)


def another_sweep_error(config: DictConfig) -> str | None:
    """Why the multirun of ``config`` must not go into its sweep directory: the directory holds
    another sweep (its ``multirun.yaml`` expands to other jobs), whose jobs would share run
    directories and accounting with this one's. ``None`` for a new sweep directory, the same
    sweep again (a relaunch, which resumes it), or sweeps whose jobs are known only when they run."""
    sweep_dir = Path(str(config.hydra.sweep.dir))
    if not (sweep_dir / MULTIRUN_FILE).is_file():
        return None
    try:
        earlier = sweep_jobs(sweep_dir)
        jobs = [job for batch in job_batches(config) for job in batch]
    except ValueError:
        return None
    if earlier == jobs:
        return None
    first = OmegaConf.select(OmegaConf.load(sweep_dir / MULTIRUN_FILE), "hydra.overrides.task", default=[])
    return (
        f"hydra.sweep.dir={sweep_dir} holds another sweep ({len(earlier)} jobs of "
        f"'{' '.join(map(str, first or [])) or 'no overrides'}'), and this one ({len(jobs)} jobs) would "
        "mix with it: choose another hydra.sweep.dir, or rerun that sweep's own command to resume it"
    )


def missing_dataset_error(config: DictConfig) -> str | None:
    """Before a Slurm sweep is submitted: the files the sweep's data set (``data.dataset`` of the
    base config, a torchvision data set, ``data.download=false``) needs but ``data.data_dir``
    lacks on this machine, or ``None`` (also for embedded data sets and configs without ``data``).
    Jobs find the data where the submitting process does when both see the same file system."""
    from ncdepth.data.torchvision_datasets import SOURCES

    name = OmegaConf.select(config, "data.dataset", default=None)
    if name not in SOURCES or OmegaConf.select(config, "data.download", default=False):
        return None
    data_dir = Path(str(OmegaConf.select(config, "data.data_dir", default="data")))
    missing = [file for file in SOURCES[name].expected_files if not (data_dir / file).exists()]
    if not missing:
        return None
    return (
        f"data.dataset={name}: the data set is not in data.data_dir={data_dir.resolve()} (missing "
        f'{", ".join(missing)}), so every job would fail; put it there (README, "Full scale") or set '
        "data.data_dir (NCDEPTH_DATA) to where it is, then submit"
    )


def _omegaconf_message(error: OmegaConfBaseException) -> str:
    """OmegaConf's message on one line, with the key it is about."""
    key = getattr(error, "full_key", None)
    return f"{str(error).splitlines()[0]}{f' (key {key})' if key else ''}"


def launcher_params(config: DictConfig) -> dict[str, Any]:
    """The params hydra-submitit-launcher's launcher is built with: ``hydra.launcher`` resolved,
    without ``_target_``."""
    params = OmegaConf.to_container(config.hydra.launcher, resolve=True)
    assert isinstance(params, dict)
    params.pop("_target_", None)
    return params


def write_dry_run(config: DictConfig) -> Path:
    """Write the sbatch script of the Slurm multirun of ``config`` (that of its first batch, with
    ``hydra.sweeper.max_batch_size``) and the job of each array index to its sweep directory;
    return the script's path. Submits nothing."""
    from hydra.core.utils import filter_overrides

    try:
        batches: list[list[list[str]]] | None = job_batches(config)
    except ValueError:  # another sweeper: its jobs are known only when it runs
        batches = None
    jobs = batches[0] if batches else [[]]
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    script = sweep_dir / DRY_RUN_SCRIPT
    script.write_text(sbatch_script(launcher_params(config), len(jobs)))
    lines = [f"{index}\t{' '.join(filter_overrides(job))}\n" for index, job in enumerate(jobs)]
    if batches is None:
        lines = ["# the jobs of this sweeper are known only when it runs\n"]
    elif len(batches) > 1:
        lines.append(
            f"# and {len(batches) - 1} more batch(es) of hydra.sweeper.max_batch_size, one array each\n"
        )
    (sweep_dir / DRY_RUN_JOBS).write_text("".join(lines))
    return script


class LauncherCheck(Callback):
    """Hydra callback for multiruns through submitit. ``on_multirun_start`` (launching process, before
    the sweep directory is made): for a Slurm launcher, :func:`slurm_launch_error` -> one
    ``<program>: error: ...`` line on stderr, exit 2; with ``NCDEPTH_SLURM_DRY_RUN=1``,
    :func:`write_dry_run`, print the script's path, exit 0; then, for any submitit launcher, start
    a :class:`SweepProgress`, stopped by ``on_multirun_end``. Other launchers are left alone."""

    def __init__(self) -> None:
        self._progress: SweepProgress | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled with the launcher for every job: without the launching process's thread."""
        return {**self.__dict__, "_progress": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        error = another_sweep_error(config)
        if error is not None:
            exit_with_error(error)
        kind = launcher_kind(config)
        if kind is None:
            return
        error = slurm_launch_error(config, os.environ, shutil.which)
        if error is None and kind == "SlurmLauncher" and not dry_run_requested(os.environ):
            error = missing_dataset_error(config)
        if error is not None:
            exit_with_error(error)
        if kind == "SlurmLauncher" and dry_run_requested(os.environ):
            try:
                script = write_dry_run(config)
            except OmegaConfBaseException as error:
                exit_with_error(f"dry run: {_omegaconf_message(error)}")
            except Exception as error:  # never let a failed dry run go on to submit
                exit_with_error(f"dry run: {type(error).__name__}: {error}")
            print(f"{program_name()}: dry run ({DRY_RUN_ENV}=1), nothing submitted; sbatch script:")
            print(script, flush=True)
            raise SystemExit(0)
        try:
            batches = job_batches(config)
        except ValueError:  # e.g. a glob sweep, which needs the config loader: the total stays unknown
            batches = None
        poll_s, heartbeat_s = PROGRESS_EVERY_S[kind]
        submitit_dir = submitit_job_folder(str(config.hydra.launcher.submitit_folder))
        self._progress = SweepProgress(
            submitit_dir, sum(map(len, batches)) if batches else None, poll_s, heartbeat_s
        )
        self._progress.start()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
