"""Read a Hydra sweep: every run directory, its swept values, status and tidy metrics.

A *run directory* is any directory holding ``.hydra/config.yaml`` (one Hydra job, DESIGN §3); a
multirun directory holds numbered job directories. A run is

- ``failed`` when it has no readable ``metrics.csv`` or one of its logs ends in an error (a Python
  exception line, a ``[ERROR]`` record, a ``slurmstepd: error:`` line such as an OOM kill or a
  cancellation at the time limit). Its logs are ``*.log`` and ``*.err`` in the run directory and,
  for a job launched through submitit, in ``<sweep dir>/.submitit/<hydra.job.id>/``;
- ``unfinished`` when it has metrics but no readable ``summary.json`` (still running, killed,
  timed out);
- ``finished`` otherwise.

The swept values of a run are the keys of its ``.hydra/overrides.yaml`` (``+``/``++``/``~``
stripped), parsed by Hydra's own override grammar (``model.depth=4`` gives the int ``4``). A key
that some run does not override is read from that run's ``.hydra/config.yaml``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

RUN_CONFIG = Path(".hydra") / "config.yaml"
RUN_OVERRIDES = Path(".hydra") / "overrides.yaml"
RUN_HYDRA_CONFIG = Path(".hydra") / "hydra.yaml"
SUBMITIT_DIR = ".submitit"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
LOG_PATTERNS = ("*.log", "*.err")
METRIC_COLUMNS = ("epoch", "split", "layer", "metric", "value")
TABLE_COLUMNS = ("run", "epoch", "split", "layer", "layer_index", "metric", "value")
"""Columns of the report table after the swept keys."""
SEED_KEY = "seed"
STATUSES = ("finished", "unfinished", "failed")

_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)?(Error|Exception|Interrupt|Exit)\b")
_ERROR_RECORD = re.compile(r"\]\[ERROR\]|\bERROR\b\s*[-:]|^slurmstepd: error:")


@dataclass(frozen=True)
class Run:
    """One run directory of a sweep.

    ``name`` is the path relative to the sweep directory (``"."`` when the sweep directory is
    itself a run); ``reason`` says why a run is not ``finished`` (empty when it is);
    ``metrics`` holds :data:`METRIC_COLUMNS` plus ``layer_index`` (1-based depth order, the order
    in which layers first appear in ``metrics.csv``), or is ``None``; ``summary`` is the parsed
    ``summary.json`` or ``None``.
    """

    path: Path
    name: str
    status: str
    reason: str
    overrides: dict[str, Any]
    config: DictConfig
    metrics: pd.DataFrame | None
    summary: dict[str, Any] | None


@dataclass(frozen=True)
class Sweep:
    """Every run of a sweep directory, in natural order of their relative paths.

    ``swept_keys`` are the override keys of all runs in first-seen order; ``values`` maps each run
    name to its value of every swept key (from its overrides, else its config, else ``None``).
    """

    directory: Path
    runs: list[Run]
    swept_keys: list[str]
    values: dict[str, dict[str, Any]] = field(repr=False)

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


def find_run_dirs(sweep_dir: str | Path) -> list[Path]:
    """Every directory at or below ``sweep_dir`` holding ``.hydra/config.yaml``, in natural order
    of their paths (job ``10`` after job ``9``)."""
    root = Path(sweep_dir)
    found = [path.parent.parent for path in root.rglob(RUN_CONFIG.name) if path.parent.name == ".hydra"]
    return sorted(found, key=lambda path: _natural_key(path.relative_to(root).as_posix()))


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


def log_dirs(run_dir: str | Path) -> list[Path]:
    """Where a run's logs are: ``run_dir`` and, when its ``.hydra/hydra.yaml`` names a job id
    whose submitit folder ``<run_dir>/../.submitit/<hydra.job.id>/`` exists (Slurm: the array
    task's ``<job id>_<task id>``), that folder."""
    path = Path(run_dir)
    hydra_config = path / RUN_HYDRA_CONFIG
    if not hydra_config.exists():
        return [path]
    job_id = OmegaConf.select(OmegaConf.load(hydra_config), "hydra.job.id", default=None)
    submitit_logs = path.parent / SUBMITIT_DIR / str(job_id)
    return [path, submitit_logs] if job_id is not None and submitit_logs.is_dir() else [path]


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
    """Read one run directory (its config, overrides, metrics, summary) and classify it (module
    docstring)."""
    path = Path(run_dir)
    name = path.relative_to(sweep_dir).as_posix()
    config = OmegaConf.load(path / RUN_CONFIG)
    if not isinstance(config, DictConfig):
        raise ValueError(f"{path / RUN_CONFIG} must hold a mapping, got a list")
    overrides_file = path / RUN_OVERRIDES
    overrides = parse_overrides(_string_list(overrides_file)) if overrides_file.exists() else {}
    metrics, metrics_problem = _try_read_metrics(path / METRICS_FILE)
    summary, summary_problem = _try_read_summary(path / SUMMARY_FILE)
    error = log_error(*log_dirs(path))
    if metrics is None or error is not None:
        status, reason = "failed", "; ".join(text for text in (metrics_problem, error) if text)
    elif summary is None:
        last = int(metrics["epoch"].max()) if len(metrics) else None
        status, reason = "unfinished", f"{summary_problem} (last measured epoch: {last})"
    else:
        status, reason = "finished", ""
    return Run(path, name, status, reason, overrides, config, metrics, summary)


def collect_sweep(sweep_dir: str | Path) -> Sweep:
    """Every run under ``sweep_dir`` with its swept values. Raises ``FileNotFoundError`` when
    ``sweep_dir`` is not a directory and ``ValueError`` when it holds no run directory."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"sweep directory {root} does not exist or is not a directory")
    runs = [load_run(run_dir, root) for run_dir in find_run_dirs(root)]
    if not runs:
        raise ValueError(
            f"sweep directory {root} holds no run directory (a directory with {RUN_CONFIG.as_posix()})"
        )
    keys = list(dict.fromkeys(key for run in runs for key in run.overrides))
    reserved = [key for key in keys if key in TABLE_COLUMNS]
    if reserved:
        raise ValueError(f"override keys {reserved} clash with the report columns {list(TABLE_COLUMNS)}")
    values = {run.name: {key: _swept_value(run, key) for key in keys} for run in runs}
    return Sweep(root, runs, keys, values)


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
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        return None, f"unreadable {SUMMARY_FILE}: {error}"
    if not isinstance(summary, dict):
        return None, f"{SUMMARY_FILE} is not a JSON object"
    return summary, ""


def _string_list(path: Path) -> list[str]:
    overrides = OmegaConf.load(path)
    if not isinstance(overrides, ListConfig):
        raise ValueError(f"{path} must hold a list of key=value overrides")
    return [str(item) for item in overrides]


def _natural_key(text: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text) if part]
