"""Multiruns through submitit (``hydra/launcher=slurm``, ``slurm_ddp``, ``slurm_rehearsal``): checks
made before anything is submitted, the Slurm dry run, progress while the jobs run, and the rule that
ties a Lightning DDP run to its Slurm layout.

Under Slurm, Lightning runs one process per Slurm task: ``trainer.devices`` must equal the tasks per
node and ``trainer.num_nodes`` (default 1) the number of nodes. ``hydra/launcher=slurm_ddp`` derives
the launcher's ``tasks_per_node``, ``gpus_per_node`` and ``nodes`` from those two keys, so they
cannot disagree; :func:`launcher_layout_error` (before submitting) and :func:`slurm_layout_error`
(inside the job, from its Slurm environment) refuse a layout that disagrees anyway.

:class:`LauncherCheck` is the Hydra callback (``hydra.callbacks`` of ``ncdepth/conf/train.yaml``) that runs all
of it in the launching process of a multirun (``on_multirun_start``, before the sweeper makes the
sweep directory or the launcher submits anything):

* for a Slurm launcher: exit 2 with one ``<program>: error: ...`` line on stderr when the layout
  disagrees with the trainer, when ``trainer.devices`` / ``trainer.num_nodes`` vary between the
  jobs, or when ``sbatch`` / ``srun`` are not on ``PATH`` (saying what to use instead);
* with ``NCDEPTH_SLURM_DRY_RUN=1``: write the sweep's sbatch script, rendered by submitit's own code,
  to ``<sweep dir>/slurm_dry_run.sbatch`` (and the job of each array index to
  ``slurm_dry_run_jobs.txt``), print its path and exit 0 without submitting;
* for any submitit launcher (Slurm or the local rehearsal): report each job that ends (number,
  overrides, outcome, log of a failure) and, while jobs run, how many have ended.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ncdepth.report.collect import job_batches
from ncdepth.rundir import FINISHED, classify, read_status

log = logging.getLogger(__name__)

DRY_RUN_ENV = "NCDEPTH_SLURM_DRY_RUN"
"""``1``: a Slurm multirun writes its sbatch script and exits 0, submitting nothing."""
DRY_RUN_SCRIPT = "slurm_dry_run.sbatch"
"""The dry run's sbatch script, in the sweep directory."""
DRY_RUN_JOBS = "slurm_dry_run_jobs.txt"
"""The dry run's job list, in the sweep directory: ``<array index = job num>\\t<overrides>`` a line."""
SLURM_COMMANDS = ("sbatch", "srun")
"""What submitit runs to submit a job (``sbatch``) and to start its tasks (``srun``)."""
LAYOUT_KEYS = ("trainer.devices", "trainer.num_nodes")
"""The trainer keys that fix a run's Slurm layout (tasks per node, nodes)."""
SUBMITIT_INIT_KEYS = ("submitit_folder", "max_num_timeout")
"""Launcher params that hydra-submitit-launcher passes to the executor's constructor."""
SUBMITIT_LAUNCHERS = "hydra_plugins.hydra_submitit_launcher.submitit_launcher."
"""The module of hydra-submitit-launcher's launchers (``SlurmLauncher``, ``LocalLauncher``)."""
PROGRESS_EVERY_S = {"SlurmLauncher": (15.0, 300.0), "LocalLauncher": (1.0, 15.0)}
"""Per submitit launcher: seconds between two looks for ended jobs, and between two progress lines
while no job ends."""
UNREADABLE_AFTER = 3
"""Looks after which a result that cannot be read is reported as such (counted as failed)."""
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


def device_count(devices: Any) -> int | None:
    """How many devices per node Lightning's ``devices`` asks for: an int ``n >= 0``, a string of
    digits, a list of device indices or a comma-separated string of them; ``None`` for ``auto`` and
    ``-1`` (every visible device: not known before the run) and for anything else."""
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return devices if devices >= 0 else None
    if isinstance(devices, str):
        text = devices.strip()
        if "," in text:
            return len([part for part in text.split(",") if part.strip()])
        return int(text) if text.isdigit() else None
    if isinstance(devices, Sequence):
        return len(devices)
    return None


def _layout_error(
    trainer_cfg: Mapping[str, Any],
    tasks_per_node: int | None,
    nodes: int | None,
    tasks_key: str,
    nodes_key: str,
) -> str | None:
    """How ``trainer.devices`` / ``trainer.num_nodes`` disagree with a Slurm layout of
    ``tasks_per_node`` tasks on each of ``nodes`` nodes (named ``tasks_key``, ``nodes_key``), or
    ``None`` (also for a value that is not known: ``None``, ``devices: auto``)."""
    problems = []
    devices = trainer_cfg.get("devices", 1)
    count = device_count(devices)
    if count is not None and tasks_per_node is not None and count != tasks_per_node:
        problems.append(f"trainer.devices={devices} but {tasks_key}={tasks_per_node}")
    num_nodes = trainer_cfg.get("num_nodes", 1)
    if nodes is not None and num_nodes != nodes:
        problems.append(f"trainer.num_nodes={num_nodes} but {nodes_key}={nodes}")
    if not problems:
        return None
    return (
        f"{'; '.join(problems)}: under Slurm, Lightning runs one process per Slurm task, so "
        "trainer.devices must equal the tasks per node and trainer.num_nodes (default 1) the number "
        "of nodes; use hydra/launcher=slurm_ddp, which takes both from the trainer"
    )


def _slurm_int(environ: Mapping[str, str], name: str) -> int | None:
    """``environ[name]`` as an int; ``None`` when unset or not a plain integer."""
    value = environ.get(name, "").strip()
    return int(value) if value.isdigit() else None


def _slurm_tasks_per_node(environ: Mapping[str, str]) -> tuple[int | None, str]:
    """Tasks per node of the Slurm job and where that comes from: ``SLURM_NTASKS_PER_NODE``; else a
    uniform ``SLURM_TASKS_PER_NODE`` (``4`` or ``4(x2)``); else ``SLURM_NTASKS / SLURM_NNODES``."""
    per_node = _slurm_int(environ, "SLURM_NTASKS_PER_NODE")
    if per_node is not None:
        return per_node, "SLURM_NTASKS_PER_NODE"
    listed = environ.get("SLURM_TASKS_PER_NODE", "")
    if "," not in listed and listed.split("(x")[0].isdigit():
        return int(listed.split("(x")[0]), "SLURM_TASKS_PER_NODE"
    ntasks, nnodes = _slurm_int(environ, "SLURM_NTASKS"), _slurm_int(environ, "SLURM_NNODES")
    if ntasks is not None and nnodes and ntasks % nnodes == 0:
        return ntasks // nnodes, "SLURM_NTASKS/SLURM_NNODES"
    return None, ""


def slurm_layout_error(trainer_cfg: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    """Inside a Slurm job whose tasks Lightning takes as its processes (``SLURM_JOB_ID`` and
    ``SLURM_NTASKS`` set, job name not ``bash`` / ``interactive``: Lightning's own test), a message
    naming ``trainer.devices`` / ``trainer.num_nodes`` (default 1) and the Slurm variable each
    disagrees with (tasks per node: ``SLURM_NTASKS_PER_NODE``, else derived from
    ``SLURM_TASKS_PER_NODE`` or ``SLURM_NTASKS / SLURM_NNODES``; nodes: ``SLURM_NNODES``, else
    ``SLURM_JOB_NUM_NODES``). ``None`` when they agree, outside such a job, or for a value not known
    before the run (``devices: auto`` or ``-1``). Pure: reads only its arguments."""
    if "SLURM_JOB_ID" not in environ or "SLURM_NTASKS" not in environ:
        return None
    if environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    tasks_per_node, source = _slurm_tasks_per_node(environ)
    nodes_source = "SLURM_NNODES" if "SLURM_NNODES" in environ else "SLURM_JOB_NUM_NODES"
    return _layout_error(
        trainer_cfg,
        tasks_per_node,
        _slurm_int(environ, nodes_source),
        tasks_key=f"this Slurm job's {source}",
        nodes_key=f"this Slurm job's {nodes_source}",
    )


def launcher_layout_error(launcher_cfg: Mapping[str, Any], trainer_cfg: Mapping[str, Any]) -> str | None:
    """A message naming the keys when a Slurm launcher's ``tasks_per_node`` / ``nodes`` (default 1)
    disagree with ``trainer.devices`` / ``trainer.num_nodes`` (default 1), else ``None``."""
    return _layout_error(
        trainer_cfg,
        launcher_cfg.get("tasks_per_node", 1),
        launcher_cfg.get("nodes", 1),
        tasks_key="hydra.launcher.tasks_per_node",
        nodes_key="hydra.launcher.nodes",
    )


def swept_layout_error(task_overrides: Sequence[str], sweeper_params: Mapping[str, Any]) -> str | None:
    """A message when the jobs of a Slurm multirun would not share ``trainer.devices`` /
    ``trainer.num_nodes``: a sweep of either among the command-line overrides, or either in
    ``hydra.sweeper.params`` (applied to each job, never to the base config). submitit reads the
    launcher's layout once, from the base config, for every job of the sweep."""
    parser = OverridesParser.create()
    varying = [
        override.input_line
        for override in parser.parse_overrides(list(task_overrides))
        if override.key_or_group in LAYOUT_KEYS and override.is_sweep_override()
    ]
    varying += [
        f"hydra.sweeper.params['{key}']" for key in sweeper_params if str(key).lstrip("+~") in LAYOUT_KEYS
    ]
    if not varying:
        return None
    return (
        f"{', '.join(varying)}: the Slurm launcher takes the tasks per node and the nodes of every "
        f"job from the sweep's base config, so {' and '.join(LAYOUT_KEYS)} must not vary between jobs; "
        "set them once on the command line (one sweep per layout)"
    )


def launcher_kind(config: DictConfig) -> str | None:
    """``SlurmLauncher`` or ``LocalLauncher`` for hydra-submitit-launcher's launchers (the ``slurm*``
    and ``slurm_rehearsal`` configs), else ``None``."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
    kind = target.removeprefix(SUBMITIT_LAUNCHERS)
    return kind if target.startswith(SUBMITIT_LAUNCHERS) and kind in PROGRESS_EVERY_S else None


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


def sbatch_script(params: Mapping[str, Any], num_jobs: int) -> str:
    """The sbatch script that hydra-submitit-launcher's Slurm launcher, built with ``params``,
    submits for ``num_jobs`` jobs (one job array when ``num_jobs > 1``), rendered by submitit's own
    ``SlurmExecutor`` from the parameters that ``AutoExecutor`` would give it. Needs neither
    ``srun`` nor ``sbatch``; writes nothing."""
    from submitit import AutoExecutor
    from submitit.slurm.slurm import SlurmExecutor

    class ScriptOnlySlurmExecutor(SlurmExecutor):
        """submitit's Slurm executor, only ever asked for its script: no ``srun`` needed."""

        @classmethod
        def affinity(cls) -> int:
            return 1

    executor = ScriptOnlySlurmExecutor(params["submitit_folder"], max_num_timeout=params["max_num_timeout"])
    queue = {key: value for key, value in params.items() if key not in SUBMITIT_INIT_KEYS}
    queue = {key: value for key, value in queue.items() if value is not None}  # AutoExecutor: None = unset
    generic = AutoExecutor._typed_parameters()
    parameters = executor._convert_parameters({key: value for key, value in queue.items() if key in generic})
    parameters.update({key: value for key, value in queue.items() if key not in generic})
    executor.update_parameters(**parameters)
    if num_jobs > 1:
        executor.parameters["map_count"] = num_jobs
    return executor._make_submission_file_text(executor._submitit_command_str, "dry-run")


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
    ``status.json``), or why it failed and where to look:
    the traceback's last line and submitit's log when the job process failed, the exception and run
    directory when the task raised, the state and reason :func:`ncdepth.rundir.classify` gives the
    run directory otherwise."""
    from hydra.core.utils import JobStatus, filter_overrides
    from submitit.core.utils import pickle_load

    job_id = result.name.removesuffix("_0_result.pkl")
    log_file = result.with_name(f"{job_id}_0_log.err")
    outcome, value = pickle_load(result)
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
        kind = launcher_kind(config)
        if kind is None:
            return
        error = slurm_launch_error(config, os.environ, shutil.which)
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
        from submitit.core.utils import JobPaths

        try:
            batches = job_batches(config)
        except ValueError:  # e.g. a glob sweep, which needs the config loader: the total stays unknown
            batches = None
        poll_s, heartbeat_s = PROGRESS_EVERY_S[kind]
        submitit_dir = JobPaths.get_first_id_independent_folder(str(config.hydra.launcher.submitit_folder))
        self._progress = SweepProgress(
            submitit_dir, sum(map(len, batches)) if batches else None, poll_s, heartbeat_s
        )
        self._progress.start()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
