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

**The status** of a job is :func:`ncdepth.rundir.classify`'s (``finished``, ``failed``,
``running``, ``requeued``, ``interrupted``, ``not started``), from its ``status.json``, its lock, its
result files, its logs (``*.log`` and ``*.err`` in the run directory and, for a job launched through
submitit, in ``<sweep dir>/.submitit/<hydra.job.id>/``) and, for ``ncdepth-train``, whether its
``metrics.csv`` parses. **The app** of a run directory is :func:`ncdepth.rundir.run_app`'s; the
sweep's is ``multirun.yaml``'s ``hydra.job.name`` (else the apps of its runs): so a sweep in which
every job failed is still reported as the app's.

**Two sweeps in one directory.** A run directory that claims a job number but whose overrides (or
app) are not that job's in ``multirun.yaml`` belongs to another sweep started into the same sweep
directory (``multirun.yaml`` is the last one's): it is listed after the jobs with a note, counted
apart (:attr:`Sweep.foreign`), and the job whose place it takes counts as ``not started``, with
that reason.

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
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ncdepth.private_api import BASIC_SWEEPER, split_sweep
from ncdepth.rundir import (
    APPS,
    CONFIG_FILE,
    HYDRA_CONFIG_FILE,
    JOB_STATES,
    MEASURING_APPS,
    METRIC_COLUMNS,
    METRICS_FILE,
    NOT_STARTED,
    OVERRIDES_FILE,
    SUMMARY_FILE,
    TRAIN,
    classify,
    read_json,
    run_app,
)

MULTIRUN_FILE = "multirun.yaml"
SUBMITIT_DIR = ".submitit"
TABLE_COLUMNS = ("run", "epoch", "split", "layer", "layer_index", "metric", "value")
"""Columns of the report table after the swept keys."""
SEED_KEY = "seed"


@dataclass(frozen=True)
class Run:
    """One job of a sweep.

    ``path`` is its run directory (``None`` for a job not started); ``name`` is that directory
    relative to the sweep directory (``"."`` when the sweep directory is itself a run), or the job
    number for a job not started; ``job`` is its Hydra job number (``None`` when unknown);
    ``reason`` says why a run is not ``finished`` (empty when it is); ``metrics`` holds
    :data:`METRIC_COLUMNS` plus ``layer_index`` (1-based depth order, the order in which layers first
    appear in ``metrics.csv``), or is ``None``; ``summary`` is the parsed ``summary.json`` or
    ``None``; ``config`` is empty for a job not started; ``app`` is the app that wrote it
    (:data:`ncdepth.rundir.APPS`; the sweep's for a job not started).
    """

    path: Path | None
    name: str
    job: int | None
    app: str
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
    ``app`` is the sweep's app (module docstring); ``notes`` say how the jobs were found when not
    from ``multirun.yaml`` alone, and name run directories of another sweep or app.
    """

    directory: Path
    runs: list[Run]
    swept_keys: list[str]
    values: dict[str, dict[str, Any]] = field(repr=False)
    notes: list[str] = field(default_factory=list)
    app: str = TRAIN
    foreign: list[str] = field(default_factory=list)
    """Names of the run directories of another sweep (module docstring), listed last in ``runs``."""

    @property
    def jobs(self) -> list[Run]:
        """:attr:`runs` less the run directories of another sweep."""
        return [run for run in self.runs if run.name not in self.foreign]

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
        """``"N jobs in DIR: a finished, b failed, c running, d requeued, e interrupted, f not
        started"`` (:data:`ncdepth.rundir.JOB_STATES`) of :attr:`jobs`, then how many run
        directories of another sweep there are, if any."""
        counts = Counter(run.status for run in self.jobs)
        line = f"{len(self.jobs)} jobs in {self.directory}: " + ", ".join(
            f"{counts[status]} {status}" for status in JOB_STATES
        )
        return line + (f"; and {len(self.foreign)} run directories of another sweep" if self.foreign else "")

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
    parsed by Hydra's override grammar and expanded by :func:`ncdepth.private_api.split_sweep` (the
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
        batches = split_sweep(overrides, sweeper.get("max_batch_size"))
    except (HydraException, OmegaConfBaseException) as error:
        raise ValueError(str(error)) from error
    return [[list(job) for job in batch] for batch in batches]


def sweep_jobs(sweep_dir: str | Path) -> list[list[str]]:
    """The overrides of every job of the multirun in ``sweep_dir``, indexed by job number
    (:func:`job_batches` of its ``multirun.yaml``). Raises ``ValueError`` saying why when
    ``multirun.yaml`` is missing, unreadable or does not expand."""
    path = Path(sweep_dir) / MULTIRUN_FILE
    try:
        return [job for batch in job_batches(_multirun_config(sweep_dir)) for job in batch]
    except (ValueError, OSError, OmegaConfBaseException) as error:
        raise ValueError(f"cannot expand the jobs of {path}: {error}") from error


def multirun_app(sweep_dir: str | Path) -> str | None:
    """The app (:data:`ncdepth.rundir.APPS`) that ``multirun.yaml``'s ``hydra.job.name`` names;
    ``None`` without a readable ``multirun.yaml`` or when it names none."""
    try:
        name = OmegaConf.select(_multirun_config(sweep_dir), "hydra.job.name", default=None)
    except (ValueError, OSError, OmegaConfBaseException):
        return None
    return name if name in APPS else None


def _multirun_config(sweep_dir: str | Path) -> DictConfig:
    path = Path(sweep_dir) / MULTIRUN_FILE
    if not path.is_file():
        raise ValueError(f"no {MULTIRUN_FILE} in {sweep_dir}")
    config = OmegaConf.load(path)
    if not isinstance(config, DictConfig):
        raise ValueError("it is not a mapping")
    return config


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
    """Read one run directory (its config, job number, app, overrides, metrics, summary) and
    classify it (:func:`ncdepth.rundir.classify`)."""
    path = Path(run_dir)
    name = path.relative_to(sweep_dir).as_posix()
    config = OmegaConf.load(path / CONFIG_FILE)
    if not isinstance(config, DictConfig):
        raise ValueError(f"{path / CONFIG_FILE} must hold a mapping, got a list")
    job = _hydra_job(path)
    app = run_app(path, job.get("name"))
    overrides_file = path / OVERRIDES_FILE
    overrides = parse_overrides(_string_list(overrides_file)) if overrides_file.exists() else {}
    metrics, problem = _try_read_metrics(path / METRICS_FILE) if app in MEASURING_APPS else (None, "")
    summary = read_json(path / SUMMARY_FILE)
    logs = []
    submitit_logs = path.parent / SUBMITIT_DIR / str(job.get("id"))
    if "id" in job and submitit_logs.is_dir():  # Slurm: the array task's <job id>_<task id>
        logs.append(submitit_logs)
    last = int(metrics["epoch"].max()) if metrics is not None and len(metrics) else None
    progress = f"last measured epoch: {last}" if app in MEASURING_APPS else ""
    status, reason = classify(path, app, problems=[problem] if problem else [], logs=logs, progress=progress)
    return Run(path, name, job.get("num"), app, status, reason, overrides, config, metrics, summary)


def collect_sweep(sweep_dir: str | Path) -> Sweep:
    """Every job of ``sweep_dir`` with its swept values (module docstring). Raises
    ``FileNotFoundError`` when ``sweep_dir`` is not a directory and ``ValueError`` when it holds
    neither a ``multirun.yaml`` that expands nor a run directory."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"sweep directory {root} does not exist or is not a directory")
    found = [load_run(run_dir, root) for run_dir in find_run_dirs(root)]
    app = multirun_app(root) or _most_common([run.app for run in found]) or TRAIN
    notes: list[str] = []
    foreign: list[str] = []
    try:
        jobs = sweep_jobs(root)
    except ValueError as error:
        notes.append(f"{error}; the jobs are the run directories found")
        runs = found
    else:
        runs = _account_for(jobs, found, root, app, notes, foreign)
    if not runs:
        raise ValueError(f"sweep directory {root} holds no run directory (a directory with {CONFIG_FILE})")
    others = sorted({run.app for run in found} - {app})
    if others:
        names = ", ".join(run.name for run in found if run.app != app)
        notes.append(
            f"run directories of another app ({', '.join(others)}) than the sweep's ({app}): {names}"
        )
    keys = list(dict.fromkeys(key for run in runs for key in run.overrides))
    reserved = [key for key in keys if key in TABLE_COLUMNS]
    if reserved:
        raise ValueError(f"override keys {reserved} clash with the report columns {list(TABLE_COLUMNS)}")
    values = {run.name: {key: _swept_value(run, key) for key in keys} for run in runs}
    return Sweep(root, runs, keys, values, notes, app, foreign)


def _account_for(
    jobs: list[list[str]], found: list[Run], root: Path, app: str, notes: list[str], foreign_names: list[str]
) -> list[Run]:
    """Every job in order: the run directories claiming its number with its overrides and app (a
    job not started when none does), then the run directories no job claims and those of another
    sweep (noted; their names appended to ``foreign_names``)."""
    claimed: dict[int, list[Run]] = {}
    foreign: dict[int, list[Run]] = {}
    for run in found:
        if run.job is None or not 0 <= run.job < len(jobs):
            continue
        ours = run.app == app and run.overrides == parse_overrides(jobs[run.job])
        (claimed if ours else foreign).setdefault(run.job, []).append(run)
    runs = [
        run
        for number, overrides in enumerate(jobs)
        for run in claimed.get(number) or [_not_started(number, overrides, root, app, foreign.get(number))]
    ]
    strays = [run for run in found if run.job is None or not 0 <= run.job < len(jobs)]
    if strays:
        names = ", ".join(run.name for run in strays)
        notes.append(
            f"run directories that no job of {MULTIRUN_FILE} claims (listed after the jobs): {names}"
        )
    others = [run for number in sorted(foreign) for run in foreign[number]]
    foreign_names += [run.name for run in others]
    if others:
        names = ", ".join(run.name for run in others)
        notes.append(
            f"two different sweeps were started into {root}: run directories {names} hold jobs of "
            f"another sweep than the one {MULTIRUN_FILE} describes (the last one started); listed "
            "after the jobs, and the jobs of this sweep in their place count as not started"
        )
    return runs + strays + others


def _not_started(number: int, overrides: list[str], root: Path, app: str, foreign: list[Run] | None) -> Run:
    """A job without a run directory of its own: :func:`ncdepth.rundir.classify` of a directory
    ``<number>`` or ``<number>_...`` that exists without ``.hydra/config.yaml``, or the run
    directories of another sweep that hold its place."""
    if foreign:
        names = ", ".join(run.name for run in foreign)
        reason = (
            f"its place is taken by {names}, a job of another sweep ({' '.join(_as_overrides(foreign[0]))})"
        )
    else:
        pattern = re.compile(rf"{number}(_.*)?")
        leftover = sorted(path for path in root.glob(f"{number}*") if pattern.fullmatch(path.name))
        _, reason = classify(leftover[0] if leftover else None, app)
    return Run(
        path=None,
        name=f"job {number}" if foreign else str(number),  # the other sweep's run is named str(number)
        job=number,
        app=app,
        status=NOT_STARTED,
        reason=reason,
        overrides=parse_overrides(overrides),
        config=OmegaConf.create(),
        metrics=None,
        summary=None,
    )


def _as_overrides(run: Run) -> list[str]:
    return [f"{key}={value}" for key, value in run.overrides.items()]


def _most_common(values: list[str]) -> str | None:
    return Counter(values).most_common(1)[0][0] if values else None


def _hydra_job(path: Path) -> dict[str, Any]:
    """``num``, ``id`` and ``name`` of ``hydra.job`` in the run's ``.hydra/hydra.yaml``, those it
    sets (a single run has no ``num``; no ``hydra.yaml``, none)."""
    hydra_config = path / HYDRA_CONFIG_FILE
    job = OmegaConf.select(OmegaConf.load(hydra_config), "hydra.job") if hydra_config.is_file() else None
    if not isinstance(job, DictConfig):
        return {}
    keys = ("num", "id", "name")
    return {key: job[key] for key in keys if key in job and not OmegaConf.is_missing(job, key)}


def _swept_value(run: Run, key: str) -> Any:
    if key in run.overrides:
        return run.overrides[key]
    value = OmegaConf.select(run.config, key, default=None, throw_on_resolution_failure=False)
    return None if isinstance(value, DictConfig | ListConfig) else value


def _try_read_metrics(path: Path) -> tuple[pd.DataFrame | None, str]:
    """The run's metrics and ``""``; ``None`` and why when the file exists but does not parse;
    ``None`` and ``""`` when it is missing (:func:`ncdepth.rundir.classify` names that)."""
    if not path.exists():
        return None, ""
    try:
        return read_metrics(path), ""
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        return None, f"unreadable {METRICS_FILE}: {error}"


def _string_list(path: Path) -> list[str]:
    overrides = OmegaConf.load(path)
    if not isinstance(overrides, ListConfig):
        raise ValueError(f"{path} must hold a list of key=value overrides")
    return [str(item) for item in overrides]


def _natural_key(text: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text) if part]
