"""Read a Hydra sweep: every job, its run directory, swept values, status and tidy metrics.

**The jobs.** Hydra writes ``<sweep dir>/multirun.yaml`` when a multirun starts. Its
``hydra.sweeper.params`` and ``hydra.overrides.task`` expand, exactly as Hydra's ``BasicSweeper``
expands them, into the overrides of every job; a job's number (``hydra.job.num``) is its index in
that expansion (:func:`sweep_jobs`). A *run directory* is any directory holding
``.hydra/config.yaml``; its ``.hydra/hydra.yaml`` names its job number, whatever the directory is
called (``<num>``, or ``<num>_<Slurm job id>``). A job that no run directory claims is
``not started``. Without a usable ``multirun.yaml`` (a single run, another sweeper, a sweep such as
``glob(...)`` that needs Hydra's config loader), the sweep is the run directories found, with a note
saying why (:attr:`Sweep.notes`); a run directory no job claims is listed too, with a note.

**The status** of a run directory comes from its ``status.json`` (:mod:`ncdepth.rundir`):

- ``finished``: state ``finished``, with a readable ``metrics.csv`` and ``summary.json`` (else
  ``failed``, naming what is missing);
- ``failed``: state ``failed``, with its ``reason`` (else the error its logs end in);
- ``running``: state ``running``, and a live process holds the directory's ``.lock``;
- ``interrupted``: state ``running`` and no live process holds the lock (killed: ``kill -9``, out
  of memory, a time limit); the reason says whether ``checkpoints/last.ckpt`` lets it resume.

A run directory without ``status.json`` (older runs, ``ncdepth-ufm``, ``ncdepth-kernels``) is
classified from its files: ``failed`` when it has no readable ``metrics.csv`` or one of its logs ends
in an error (a Python exception line, a ``[ERROR]`` record, a ``slurmstepd: error:`` line such as an
OOM kill or a cancellation at the time limit; its logs are ``*.log`` and ``*.err`` in the run
directory and, for a job launched through submitit, in ``<sweep dir>/.submitit/<hydra.job.id>/``);
``running`` or ``interrupted`` (by the lock, as above) when it has metrics but no readable
``summary.json``; ``finished`` otherwise.

The swept values of a run are the keys of its ``.hydra/overrides.yaml`` (a job not started: of its
overrides in the expansion), ``+``/``++``/``~`` stripped, parsed by Hydra's own override grammar
(``model.depth=4`` gives the int ``4``). A key that some run does not override is read from that
run's ``.hydra/config.yaml``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ncdepth.rundir import (
    CONFIG_FILE,
    FAILED,
    FINISHED,
    HYDRA_CONFIG_FILE,
    LAST_CHECKPOINT,
    LOCK_FILE,
    METRIC_COLUMNS,
    METRICS_FILE,
    OVERRIDES_FILE,
    REQUEUED,
    RUNNING,
    STATUS_FILE,
    SUMMARY_FILE,
    lock_owner,
    read_json,
    read_status,
)

INTERRUPTED = "interrupted"
NOT_STARTED = "not started"
STATUSES = (FINISHED, FAILED, RUNNING, REQUEUED, INTERRUPTED, NOT_STARTED)
"""Every status a job can have (module docstring), in the order the counts are printed."""
MULTIRUN_FILE = "multirun.yaml"
BASIC_SWEEPER = f"{BasicSweeper.__module__}.{BasicSweeper.__name__}"
SUBMITIT_DIR = ".submitit"
LOG_PATTERNS = ("*.log", "*.err")
TABLE_COLUMNS = ("run", "epoch", "split", "layer", "layer_index", "metric", "value")
"""Columns of the report table after the swept keys."""
SEED_KEY = "seed"

_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)?(Error|Exception|Interrupt|Exit)\b")
_ERROR_RECORD = re.compile(r"\]\[ERROR\]|\bERROR\b\s*[-:]|^slurmstepd: error:")


@dataclass(frozen=True)
class Run:
    """One job of a sweep.

    ``path`` is its run directory (``None`` for a job not started); ``name`` is that directory
    relative to the sweep directory (``"."`` when the sweep directory is itself a run), or the job
    number for a job not started; ``job`` is its Hydra job number (``None`` when unknown);
    ``reason`` says why a run is not ``finished`` (empty when it is); ``metrics`` holds
    :data:`METRIC_COLUMNS` plus ``layer_index`` (1-based depth order, the order in which layers first
    appear in ``metrics.csv``), or is ``None``; ``summary`` is the parsed ``summary.json`` or
    ``None``; ``config`` is empty for a job not started.
    """

    path: Path | None
    name: str
    job: int | None
    status: str
    reason: str
    overrides: dict[str, Any]
    config: DictConfig
    metrics: pd.DataFrame | None
    summary: dict[str, Any] | None


@dataclass(frozen=True)
class Sweep:
    """Every job of a sweep directory: in job order when its ``multirun.yaml`` expands (run
    directories no job claims after them), else the run directories in natural order of their paths.

    ``swept_keys`` are the override keys of all runs in first-seen order; ``values`` maps each run
    name to its value of every swept key (from its overrides, else its config, else ``None``);
    ``notes`` say how the jobs were found when not from ``multirun.yaml`` alone.
    """

    directory: Path
    runs: list[Run]
    swept_keys: list[str]
    values: dict[str, dict[str, Any]] = field(repr=False)
    notes: list[str] = field(default_factory=list)

    @property
    def varying_keys(self) -> list[str]:
        """Swept keys taking more than one distinct value across runs."""
        return [
            key for key in self.swept_keys if len({repr(self.values[run.name][key]) for run in self.runs}) > 1
        ]

    @property
    def grouping_keys(self) -> list[str]:
        """:attr:`varying_keys` except ``seed``: runs that differ only in seed are replicates."""
        return [key for key in self.varying_keys if key != SEED_KEY]

    def counts(self) -> str:
        """``"N jobs in DIR: a finished, b failed, c running, d interrupted, e not started"``, with
        ``r requeued`` after ``running`` when a job waits for its requeue."""
        counts = Counter(run.status for run in self.runs)
        return f"{len(self.runs)} jobs in {self.directory}: " + ", ".join(
            f"{counts[status]} {status}" for status in STATUSES if status != REQUEUED or counts[status]
        )

    def describe(self, run: Run) -> str:
        """One line for ``run``: its status, name, values of the varying keys (of every swept key
        when none varies) and, when it has one, the reason."""
        width = max(len(other.name) for other in self.runs)
        keys = self.varying_keys or self.swept_keys
        values = " ".join(f"{key}={self.values[run.name][key]}" for key in keys)
        reason = f": {run.reason}" if run.reason else ""
        return f"{run.status:<11} {run.name:<{width}}  {values}{reason}"


def find_run_dirs(sweep_dir: str | Path) -> list[Path]:
    """Every directory at or below ``sweep_dir`` holding ``.hydra/config.yaml``, in natural order
    of their paths (job ``10`` after job ``9``)."""
    root = Path(sweep_dir)
    found = [path.parent.parent for path in root.rglob(CONFIG_FILE)]
    return sorted(found, key=lambda path: _natural_key(path.relative_to(root).as_posix()))


def job_batches(config: DictConfig) -> list[list[list[str]]]:
    """The overrides of every job of the multirun configured by ``config`` (a composed config with
    its ``hydra`` node, or a sweep's ``multirun.yaml``), batch by batch as Hydra's ``BasicSweeper``
    launches them: ``hydra.sweeper.params`` (each ``key=value``) then ``hydra.overrides.task``,
    parsed by Hydra's override grammar and expanded by ``BasicSweeper.split_arguments`` (the
    cartesian product, first key slowest) in batches of ``hydra.sweeper.max_batch_size``; job
    numbers run on across batches. Raises ``ValueError`` saying why for another sweeper, a config
    without these keys, or a sweep such as ``glob(...)`` that needs Hydra's config loader."""
    try:
        sweeper = OmegaConf.select(config, "hydra.sweeper", default=None)
        task = OmegaConf.select(config, "hydra.overrides.task", default=None)
        if not isinstance(sweeper, DictConfig) or not isinstance(task, ListConfig):
            raise ValueError("it lacks hydra.sweeper or hydra.overrides.task")
        if sweeper.get("_target_") != BASIC_SWEEPER:
            raise ValueError(f"its sweeper is {sweeper.get('_target_')}, not {BASIC_SWEEPER}")
        params = OmegaConf.to_container(sweeper.get("params") or OmegaConf.create(), resolve=True)
        arguments = [f"{key}={value}" for key, value in params.items()]
        arguments += [str(item) for item in OmegaConf.to_container(task)]
        overrides = OverridesParser.create().parse_overrides(arguments)
        batches = BasicSweeper.split_arguments(overrides, sweeper.get("max_batch_size"))
    except (HydraException, OmegaConfBaseException) as error:
        raise ValueError(str(error)) from error
    return [[list(job) for job in batch] for batch in batches]


def sweep_jobs(sweep_dir: str | Path) -> list[list[str]]:
    """The overrides of every job of the multirun in ``sweep_dir``, indexed by job number
    (:func:`job_batches` of its ``multirun.yaml``). Raises ``ValueError`` saying why when
    ``multirun.yaml`` is missing, unreadable or does not expand."""
    path = Path(sweep_dir) / MULTIRUN_FILE
    if not path.is_file():
        raise ValueError(f"no {MULTIRUN_FILE} in {sweep_dir}")
    try:
        config = OmegaConf.load(path)
        if not isinstance(config, DictConfig):
            raise ValueError("it is not a mapping")
        return [job for batch in job_batches(config) for job in batch]
    except (ValueError, OSError, OmegaConfBaseException) as error:
        raise ValueError(f"cannot expand the jobs of {path}: {error}") from error


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """``{key: value}`` of Hydra command-line overrides, values typed by Hydra's grammar
    (``"model.depth=4"`` gives ``{"model.depth": 4}``; a deletion ``~key`` gives ``None``); lists
    and dicts become their string form so that every value fits one table cell."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    values: dict[str, Any] = {}
    for override in parsed:
        value = None if override.is_delete() else override.value()
        if isinstance(value, list | dict):
            value = override.get_value_element_as_str()
        values[override.key_or_group] = value
    return values


def log_error(*directories: str | Path) -> str | None:
    """The last line of the first log (``*.log``, ``*.err``) in ``directories`` that ends in an
    error (``ValueError: ...``, ``KeyboardInterrupt``, a ``[ERROR]`` record, ``slurmstepd:
    error: ...``), prefixed by the log's name; ``None`` when no log ends so."""
    for directory in directories:
        for pattern in LOG_PATTERNS:
            for log in sorted(Path(directory).glob(pattern)):
                lines = [line.strip() for line in log.read_text(errors="replace").splitlines()]
                lines = [line for line in lines if line]
                if lines and (_EXCEPTION_LINE.match(lines[-1]) or _ERROR_RECORD.search(lines[-1])):
                    return f"{log.name}: {lines[-1]}"
    return None


def read_metrics(path: str | Path) -> pd.DataFrame:
    """A run's ``metrics.csv`` with ``layer_index`` added (1-based, order of first appearance);
    rows cut short by a crash (non-numeric epoch or value) are dropped. Raises ``ValueError`` when
    a column of :data:`METRIC_COLUMNS` is missing."""
    table = pd.read_csv(path, on_bad_lines="skip")
    missing = [column for column in METRIC_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}; expected {list(METRIC_COLUMNS)}")
    table = table[list(METRIC_COLUMNS)].copy()
    table["epoch"] = pd.to_numeric(table["epoch"], errors="coerce")
    table["value"] = pd.to_numeric(table["value"], errors="coerce")
    table = table.dropna(subset=["epoch", "split", "layer", "metric"])
    table["epoch"] = table["epoch"].astype(int)
    table["layer_index"] = pd.factorize(table["layer"])[0] + 1
    return table.reset_index(drop=True)


def load_run(run_dir: str | Path, sweep_dir: str | Path) -> Run:
    """Read one run directory (its config, job number, overrides, metrics, summary) and classify
    it (module docstring)."""
    path = Path(run_dir)
    name = path.relative_to(sweep_dir).as_posix()
    config = OmegaConf.load(path / CONFIG_FILE)
    if not isinstance(config, DictConfig):
        raise ValueError(f"{path / CONFIG_FILE} must hold a mapping, got a list")
    job = _hydra_job(path)
    overrides_file = path / OVERRIDES_FILE
    overrides = parse_overrides(_string_list(overrides_file)) if overrides_file.exists() else {}
    metrics, metrics_problem = _try_read_metrics(path / METRICS_FILE)
    summary, summary_problem = _try_read_summary(path / SUMMARY_FILE)
    logs = [path]
    submitit_logs = path.parent / SUBMITIT_DIR / str(job.get("id"))
    if "id" in job and submitit_logs.is_dir():  # Slurm: the array task's <job id>_<task id>
        logs.append(submitit_logs)
    status, reason = _classify(path, logs, metrics, metrics_problem, summary_problem)
    return Run(path, name, job.get("num"), status, reason, overrides, config, metrics, summary)


def collect_sweep(sweep_dir: str | Path) -> Sweep:
    """Every job of ``sweep_dir`` with its swept values (module docstring). Raises
    ``FileNotFoundError`` when ``sweep_dir`` is not a directory and ``ValueError`` when it holds
    neither a ``multirun.yaml`` that expands nor a run directory."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"sweep directory {root} does not exist or is not a directory")
    found = [load_run(run_dir, root) for run_dir in find_run_dirs(root)]
    notes: list[str] = []
    try:
        jobs = sweep_jobs(root)
    except ValueError as error:
        notes.append(f"{error}; the jobs are the run directories found")
        runs = found
    else:
        runs = _account_for(jobs, found, root, notes)
    if not runs:
        raise ValueError(f"sweep directory {root} holds no run directory (a directory with {CONFIG_FILE})")
    keys = list(dict.fromkeys(key for run in runs for key in run.overrides))
    reserved = [key for key in keys if key in TABLE_COLUMNS]
    if reserved:
        raise ValueError(f"override keys {reserved} clash with the report columns {list(TABLE_COLUMNS)}")
    values = {run.name: {key: _swept_value(run, key) for key in keys} for run in runs}
    return Sweep(root, runs, keys, values, notes)


def _account_for(jobs: list[list[str]], found: list[Run], root: Path, notes: list[str]) -> list[Run]:
    """Every job in order: the run directories claiming its number (a job not started when none
    does), then the run directories no job claims (noted)."""
    claimed: dict[int, list[Run]] = {}
    for run in found:
        if run.job is not None:
            claimed.setdefault(run.job, []).append(run)
    runs = [
        run
        for number, overrides in enumerate(jobs)
        for run in claimed.get(number) or [_not_started(number, overrides, root)]
    ]
    strays = [run for run in found if run.job is None or not 0 <= run.job < len(jobs)]
    if strays:
        names = ", ".join(run.name for run in strays)
        notes.append(
            f"run directories that no job of {MULTIRUN_FILE} claims (listed after the jobs): {names}"
        )
    return runs + strays


def _not_started(number: int, overrides: list[str], root: Path) -> Run:
    """A job without a run directory; the reason names a directory ``<number>`` or
    ``<number>_...`` that exists without ``.hydra/config.yaml`` (the job stopped, or is still
    starting, before writing its config)."""
    pattern = re.compile(rf"{number}(_.*)?")
    leftover = sorted(path.name for path in root.glob(f"{number}*") if pattern.fullmatch(path.name))
    reason = (
        f"{leftover[0]}/ exists without {CONFIG_FILE}: the job stopped (or is still starting) before "
        "writing its config"
        if leftover
        else "no run directory"
    )
    return Run(
        path=None,
        name=str(number),
        job=number,
        status=NOT_STARTED,
        reason=reason,
        overrides=parse_overrides(overrides),
        config=OmegaConf.create(),
        metrics=None,
        summary=None,
    )


def _classify(
    path: Path, logs: list[Path], metrics: pd.DataFrame | None, metrics_problem: str, summary_problem: str
) -> tuple[str, str]:
    """``(status, reason)`` of a run directory (module docstring); ``*_problem`` say why
    ``metrics.csv`` or ``summary.json`` is missing or unreadable (empty when it is fine)."""
    status = read_status(path) or {}
    state = status.get("state")
    if state == FINISHED:
        problems = "; ".join(problem for problem in (metrics_problem, summary_problem) if problem)
        return (FAILED, f"{STATUS_FILE} says finished, but: {problems}") if problems else (FINISHED, "")
    if state == FAILED:
        return FAILED, str(status.get("reason") or "") or log_error(*logs) or "no reason recorded"
    if state == RUNNING:
        return _running_or_interrupted(path, metrics, "")
    if state == REQUEUED:  # waiting in the queue for Slurm to start it again
        return REQUEUED, str(status.get("reason") or "")
    error = log_error(*logs)  # no status.json: older runs, ncdepth-ufm, ncdepth-kernels
    if metrics is None or error is not None:
        return FAILED, "; ".join(text for text in (metrics_problem, error) if text)
    if summary_problem:
        return _running_or_interrupted(path, metrics, summary_problem)
    return FINISHED, ""


def _running_or_interrupted(path: Path, metrics: pd.DataFrame | None, detail: str) -> tuple[str, str]:
    """``running`` when a live process holds the run's lock, else ``interrupted``; the reason
    adds the owner or whether a checkpoint lets the run resume, and the last measured epoch."""
    last = int(metrics["epoch"].max()) if metrics is not None and len(metrics) else None
    owner = lock_owner(path)
    if owner is not None:
        facts = [detail, f"owned by {owner}", f"last measured epoch: {last}"]
        return RUNNING, "; ".join(fact for fact in facts if fact)
    resume = f"resumable from {LAST_CHECKPOINT}" if (path / LAST_CHECKPOINT).is_file() else "no checkpoint"
    facts = [detail, f"no live process holds {LOCK_FILE} (killed?)", f"last measured epoch: {last}", resume]
    return INTERRUPTED, "; ".join(fact for fact in facts if fact)


def _hydra_job(path: Path) -> dict[str, Any]:
    """``num`` and ``id`` of ``hydra.job`` in the run's ``.hydra/hydra.yaml``, those it sets (a
    single run has no ``num``; no ``hydra.yaml``, neither)."""
    hydra_config = path / HYDRA_CONFIG_FILE
    job = OmegaConf.select(OmegaConf.load(hydra_config), "hydra.job") if hydra_config.is_file() else None
    if not isinstance(job, DictConfig):
        return {}
    return {key: job[key] for key in ("num", "id") if key in job and not OmegaConf.is_missing(job, key)}


def _swept_value(run: Run, key: str) -> Any:
    if key in run.overrides:
        return run.overrides[key]
    value = OmegaConf.select(run.config, key, default=None, throw_on_resolution_failure=False)
    return None if isinstance(value, DictConfig | ListConfig) else value


def _try_read_metrics(path: Path) -> tuple[pd.DataFrame | None, str]:
    if not path.exists():
        return None, f"no {METRICS_FILE}"
    try:
        return read_metrics(path), ""
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        return None, f"unreadable {METRICS_FILE}: {error}"


def _try_read_summary(path: Path) -> tuple[dict[str, Any] | None, str]:
    if not path.exists():
        return None, f"no {SUMMARY_FILE}"
    summary = read_json(path)
    return (summary, "") if summary is not None else (None, f"unreadable {SUMMARY_FILE} (not a JSON object)")


def _string_list(path: Path) -> list[str]:
    overrides = OmegaConf.load(path)
    if not isinstance(overrides, ListConfig):
        raise ValueError(f"{path} must hold a list of key=value overrides")
    return [str(item) for item in overrides]


def _natural_key(text: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text) if part]
