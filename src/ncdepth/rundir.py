"""The run directory: one module owns its file names, its formats and the rules for writing it.

Every writer (``ncdepth-train``, ``ncdepth-ufm``, ``ncdepth-kernels``, ``ncdepth-lm``) and every reader
(``ncdepth-report``) imports the names below, so they agree by construction. A run directory holds

==========================  ==========================================================================
``.hydra/config.yaml``      the composed config (``overrides.yaml``, ``hydra.yaml`` beside it); an
                            allowed change on resume keeps the earlier files in ``.hydra/history/N/``
``status.json``             ``state`` (``running`` / ``finished`` / ``failed`` / ``requeued``),
                            ``reason``, ``app``, ``host``, ``pid``, ``started``, ``ended``,
                            ``fingerprint``, ``attempts``, ``config``
``metrics.csv``             tidy rows ``epoch,split,layer,metric,value``, ``\\n`` line endings
``summary.json``            the final results (written once training ends)
``train.log``               the run's log, appended by every attempt
``checkpoints/last.ckpt``   the newest checkpoint; ``previous.ckpt`` the one before it
``figures/``                the run's figures
``.lock``                   the owner of the directory (``host pid``), held while a process runs
``kernels.csv``             (``ncdepth-kernels``) tidy rows of :data:`KERNELS_COLUMNS`
``kernels.log``             (``ncdepth-kernels``) the job's log
``ufm.csv``, ``ufm.log``    (``ncdepth-ufm``) the tidy trace ``step,metric,value`` and the job's log
``lm.log``                  (``ncdepth-lm``) the job's log (its results: ``metrics.csv``, ``summary.json``)
==========================  ==========================================================================

Each app (:data:`APPS`: ``train``, ``ufm``, ``kernels``, ``lm``, named by ``status.json``'s ``app``) has
its :data:`RESULT_FILES`, written once the job's work is done, and its log (:data:`APP_LOGS`).

**Atomic writes.** :func:`atomic_write` writes a temporary file in the same directory, flushes and
fsyncs it, then renames it over the target: a reader (or a crash) sees the old file or the new one,
never a torn one.

**The lock.** :class:`RunLock` takes an exclusive ``flock`` on ``.lock`` and writes ``host pid``
into it. The kernel drops the lock when its process dies (``kill -9`` included), so a lock left by
a dead process is stale by construction and taken over, with a log line naming the old owner.
(Over NFS, ``flock`` is forwarded to the server as a POSIX lock on Linux >= 2.6.12.)

**The job's state.** :func:`classify` says what became of the job of a run directory, for every
reader (the report, the sweep's end, the progress lines of a submitit sweep, each app's report);
:data:`JOB_STATES` lists the states and :func:`classify` the rules.

**The fingerprint.** :func:`config_fingerprint` hashes the resolved config with the keys that may
change on a rerun left out (``ncdepth-train``'s :data:`RESUMABLE_KEYS`; each app names its own,
:mod:`ncdepth.cli.lifecycle`): a rerun in the same directory must have the same fingerprint, and
:func:`config_differences` names the keys that differ when it does not.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import itertools
import json
import logging
import math
import os
import re
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HYDRA_DIR = ".hydra"
CONFIG_FILE = f"{HYDRA_DIR}/config.yaml"
OVERRIDES_FILE = f"{HYDRA_DIR}/overrides.yaml"
HYDRA_CONFIG_FILE = f"{HYDRA_DIR}/hydra.yaml"
CONFIG_HISTORY_DIR = f"{HYDRA_DIR}/history"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.csv"
METRIC_COLUMNS = ("epoch", "split", "layer", "metric", "value")
SUMMARY_FILE = "summary.json"
RUN_LOG = "train.log"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = f"{CHECKPOINT_DIR}/last.ckpt"
PREVIOUS_CHECKPOINT = f"{CHECKPOINT_DIR}/previous.ckpt"
FIGURES_DIR = "figures"
LOCK_FILE = ".lock"
KERNELS_FILE = "kernels.csv"
KERNELS_COLUMNS = ("n", "d0", "num_classes", "class_sizes", "seed", "quantity", "metric", "value")
"""Columns of an ``ncdepth-kernels`` job's ``kernels.csv``; ``class_sizes`` reads like ``"768/1280"``."""
KERNELS_NC1 = "nc1_trace_ratio"
"""The ``metric`` of the NC1 rows of ``kernels.csv``."""
KERNELS_LOG = "kernels.log"
UFM_TRACE_FILE = "ufm.csv"
UFM_TRACE_COLUMNS = ("step", "metric", "value")
UFM_LOG = "ufm.log"
LM_LOG = "lm.log"

TRAIN, UFM, KERNELS, LM = "train", "ufm", "kernels", "lm"
APPS = (TRAIN, UFM, KERNELS, LM)
"""The apps writing run directories: ``ncdepth-train``, ``ncdepth-ufm``, ``ncdepth-kernels``, ``ncdepth-lm``."""
MEASURING_APPS = (TRAIN, LM)
"""The apps whose runs measure a network while it trains into ``metrics.csv`` (the callback's)."""
RESULT_FILES = {
    TRAIN: (METRICS_FILE, SUMMARY_FILE),
    LM: (METRICS_FILE, SUMMARY_FILE),
    UFM: (UFM_TRACE_FILE, SUMMARY_FILE),
    KERNELS: (KERNELS_FILE, SUMMARY_FILE),
}
"""Per app, the files a finished job holds, its main table first."""
APP_LOGS = {TRAIN: RUN_LOG, UFM: UFM_LOG, KERNELS: KERNELS_LOG, LM: LM_LOG}

RUNNING, FINISHED, FAILED, REQUEUED = "running", "finished", "failed", "requeued"
STATES = (RUNNING, FINISHED, FAILED, REQUEUED)
"""What ``status.json`` may say: ``requeued`` is a job stopped after a checkpoint that waits for its
scheduler to start it again."""
INTERRUPTED, NOT_STARTED = "interrupted", "not started"
JOB_STATES = (FINISHED, FAILED, RUNNING, REQUEUED, INTERRUPTED, NOT_STARTED)
"""Every state :func:`classify` gives a job, in the order the counts are printed."""
LOG_PATTERNS = ("*.log", "*.err")

RESUMABLE_KEYS = (
    "trainer.max_epochs",
    "trainer.enable_progress_bar",
    "callbacks",
    "logger",
    "checkpoint.every_minutes",
    "nc.cache_features_mb",
    "ckpt_path",
    "auto_resume",
)
"""Config keys (and every key below them) that may change when a run is resumed, because they do
not change its results: a longer ``trainer.max_epochs`` continues training (except with the
``cosine`` schedule, whose period is ``max_epochs``: see :func:`resumable_keys`), the others change
progress display, extra loggers, checkpoint timing, the feature cache (same numbers) and where to
resume from. Any other difference refuses the rerun."""


# ---------------------------------------------------------------------------------------- writing
def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, fsynced and
    renamed over ``path`` (the directory is fsynced too): ``path`` is never seen half written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from a lab group
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_directory(directory: str | Path) -> None:
    """Make the renames inside ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_json(path: str | Path, content: Mapping[str, Any]) -> None:
    """Atomically write ``content`` as indented JSON; non-finite floats become ``null``."""
    atomic_write(path, json.dumps(finite(content), indent=2) + "\n")


def read_json(path: str | Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; ``None`` when the file is missing, unreadable or no object."""
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (valid JSON), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(key): finite(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [finite(item) for item in value]
    return value


# ---------------------------------------------------------------------------------------- status
def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``status.json``, or ``None`` when it has none (or an unreadable one)."""
    return read_json(Path(run_dir) / STATUS_FILE)


def write_status(run_dir: str | Path, state: str, reason: str = "", **fields: Any) -> dict[str, Any]:
    """Record ``state`` (one of :data:`STATES`) with ``reason``, this host and pid, and the time,
    keeping what the earlier ``status.json`` said unless ``fields`` replaces it. ``started`` is set
    when a run enters ``running``, ``ended`` when it leaves it. Returns the written status."""
    if state not in STATES:
        raise ValueError(f"state must be one of {list(STATES)}, got {state!r}")
    now = _timestamp()
    earlier = read_status(run_dir) or {}
    status = {
        "state": state,
        "reason": reason,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": now if state == RUNNING else earlier.get("started"),
        "ended": None if state == RUNNING else now,
        **{key: value for key, value in earlier.items() if key not in _OWN_FIELDS},
        **fields,
    }
    write_json(Path(run_dir) / STATUS_FILE, status)
    return status


_OWN_FIELDS = ("state", "reason", "host", "pid", "started", "ended")


def _timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ---------------------------------------------------------------------------------------- lock
class RunLocked(RuntimeError):
    """Another live process owns the run directory."""


class RunLock:
    """Exclusive ownership of a run directory while the ``with`` block runs (module docstring).
    Raises :class:`RunLocked`, naming the owner, when another live process holds it."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._descriptor: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(descriptor)
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            owner = self.path.read_text().strip() or "unknown"
            raise RunLocked(
                f"run directory {self.path.parent} is in use by another process (host pid: {owner}); "
                f"wait for it to end, or choose another hydra.run.dir"
            ) from None
        earlier = os.pread(descriptor, 256, 0).decode(errors="replace").strip()
        if earlier:
            log.info("took over the stale lock of %s (that process is gone)", earlier)
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{socket.gethostname()} {os.getpid()}\n".encode(), 0)
        os.fsync(descriptor)
        self._descriptor = descriptor
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._descriptor is None:
            return
        os.ftruncate(self._descriptor, 0)  # an empty lock file: released cleanly
        os.close(self._descriptor)  # closing the last descriptor drops the flock
        self._descriptor = None


def lock_owner(run_dir: str | Path) -> str | None:
    """``"host pid"`` of the live process holding the run directory's lock, else ``None`` (no
    lock file, or one left by a process that is gone). Probes with a shared lock, released at once."""
    path = Path(run_dir) / LOCK_FILE
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return os.pread(descriptor, 256, 0).decode(errors="replace").strip() or "unknown"
    else:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return None
    finally:
        os.close(descriptor)


# ---------------------------------------------------------------------------------------- config
def resumable_keys(config: Mapping[str, Any]) -> tuple[str, ...]:
    """:data:`RESUMABLE_KEYS`, without ``trainer.max_epochs`` when the cosine schedule (whose
    period is ``max_epochs``) is in use."""
    scheduler = config.get("scheduler") or {}
    if isinstance(scheduler, Mapping) and scheduler.get("name") == "cosine":
        return tuple(key for key in RESUMABLE_KEYS if key != "trainer.max_epochs")
    return RESUMABLE_KEYS


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": value}`` of a nested mapping (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _is_resumable(key: str, allowed: Sequence[str]) -> bool:
    return any(key == entry or key.startswith(f"{entry}.") for entry in allowed)


def config_fingerprint(config: Mapping[str, Any], allowed: Sequence[str] | None = None) -> str:
    """sha256 of the resolved ``config`` without the keys ``allowed`` to change on a rerun
    (default: ``ncdepth-train``'s, :func:`resumable_keys`)."""
    allowed = resumable_keys(config) if allowed is None else allowed
    kept = {key: value for key, value in flatten(config).items() if not _is_resumable(key, allowed)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=repr).encode()).hexdigest()


def config_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], allowed: Sequence[str] | None = None
) -> list[str]:
    """``"key: old -> new"`` for every key outside ``allowed`` whose value differs (default:
    ``ncdepth-train``'s :func:`resumable_keys` of both configs)."""
    if allowed is None:
        allowed = set(resumable_keys(old)) & set(resumable_keys(new))
    before, after = flatten(old), flatten(new)
    missing = object()
    return [
        f"{key}: {before.get(key, '<absent>')!r} -> {after.get(key, '<absent>')!r}"
        for key in sorted(set(before) | set(after))
        if not _is_resumable(key, sorted(allowed)) and before.get(key, missing) != after.get(key, missing)
    ]


def set_aside(path: str | Path) -> Path:
    """Rename ``path`` to ``<path>.<n>`` with the first free ``n >= 1`` and return the new path:
    how a file of an earlier attempt is kept rather than overwritten."""
    path = Path(path)
    target = next(
        candidate
        for candidate in (path.with_name(f"{path.name}.{number}") for number in itertools.count(1))
        if not candidate.exists()
    )
    os.replace(path, target)
    return target


# ---------------------------------------------------------------------------------------- state
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)?(Error|Exception|Interrupt|Exit)\b")
_ERROR_RECORD = re.compile(r"\]\[ERROR\]|\bERROR\b\s*[-:]|^slurmstepd: error:")


def run_app(run_dir: str | Path, job_name: str | None = None) -> str:
    """Which app (:data:`APPS`) wrote ``run_dir``: ``status.json``'s ``app``; else (directories
    written before it was recorded) the app whose own files it holds; else ``job_name`` (Hydra's
    ``hydra.job.name``) when it names an app; else ``train``."""
    path = Path(run_dir)
    app = (read_status(path) or {}).get("app")
    if app in APPS:
        return app
    for candidate in (UFM, KERNELS):
        if (path / RESULT_FILES[candidate][0]).is_file() or (path / APP_LOGS[candidate]).is_file():
            return candidate
    if (path / LM_LOG).is_file():  # its result files are named like ncdepth-train's
        return LM
    return job_name if job_name in APPS else TRAIN


def log_error(*directories: str | Path) -> str | None:
    """The last line of the first log (``*.log``, ``*.err``) in ``directories`` that ends in an
    error (``ValueError: ...``, ``KeyboardInterrupt``, a ``[ERROR]`` record, ``slurmstepd:
    error: ...``), prefixed by the log's name; ``None`` when no log ends so."""
    for directory in directories:
        for pattern in LOG_PATTERNS:
            for log_file in sorted(Path(directory).glob(pattern)):
                lines = [line.strip() for line in log_file.read_text(errors="replace").splitlines()]
                lines = [line for line in lines if line]
                if lines and (_EXCEPTION_LINE.match(lines[-1]) or _ERROR_RECORD.search(lines[-1])):
                    return f"{log_file.name}: {lines[-1]}"
    return None


def result_problems(run_dir: str | Path, app: str) -> list[str]:
    """Why the :data:`RESULT_FILES` of ``app`` in ``run_dir`` do not make a finished job: each one
    missing, a ``summary.json`` that is no JSON object, an ``ncdepth-ufm`` or ``ncdepth-kernels``
    table whose header lacks a column (``ncdepth-train``'s ``metrics.csv`` is parsed by the
    report itself); ``[]`` when they are all there."""
    path = Path(run_dir)
    problems = [f"no {name}" for name in RESULT_FILES[app] if not (path / name).is_file()]
    if (path / SUMMARY_FILE).is_file() and read_json(path / SUMMARY_FILE) is None:
        problems.append(f"unreadable {SUMMARY_FILE} (not a JSON object)")
    table, columns = path / RESULT_FILES[app][0], _TABLE_COLUMNS.get(app, ())
    if columns and table.is_file():
        with table.open(errors="replace") as stream:
            header = stream.readline().strip().split(",")
        missing = [column for column in columns if column not in header]
        if missing:
            problems.append(f"unreadable {table.name}: it lacks the columns {missing}")
    return problems


_TABLE_COLUMNS = {UFM: UFM_TRACE_COLUMNS, KERNELS: KERNELS_COLUMNS}


def classify(
    run_dir: str | Path | None,
    app: str | None = None,
    *,
    problems: Sequence[str] = (),
    logs: Sequence[str | Path] = (),
    progress: str = "",
) -> tuple[str, str]:
    """``(state, reason)`` of the job of ``run_dir`` (one of :data:`JOB_STATES`; the reason is empty
    for a finished job). ``app`` defaults to :func:`run_app`; ``problems`` are what the caller found
    wrong in the result files beyond :func:`result_problems` (an unreadable table); ``logs`` are
    further directories whose ``*.log`` / ``*.err`` may say why it failed (submitit's); ``progress``
    (``"last measured epoch: 3"``) is added to the reason of a running or interrupted job.

    - ``not started``: no directory, or one with neither ``status.json`` nor ``.hydra/config.yaml``
      (the job stopped, or is still starting, before writing its config);
    - ``finished``: ``status.json`` says so and the result files are all there and readable (else
      ``failed``, naming what is wrong);
    - ``failed``: ``status.json`` says so, with its ``reason`` (else the error its logs end in);
    - ``running``: ``status.json`` says ``running`` or ``requeued`` and a live process holds the
      directory's ``.lock``;
    - ``requeued``: ``status.json`` says so and no process holds the lock: it waits for its
      scheduler to start it again;
    - ``interrupted``: ``status.json`` says ``running`` and no live process holds the lock (killed:
      ``kill -9``, out of memory, a time limit); the reason says how a rerun continues it.

    A directory without ``status.json`` (written before it existed) is ``failed`` when it lacks its
    app's main table or one of its logs ends in an error, ``running`` or ``interrupted`` (by the
    lock) when it has the table but not the other result files, ``finished`` otherwise."""
    path = None if run_dir is None else Path(run_dir)
    status = None if path is None else read_status(path)
    if path is None or (status is None and not (path / CONFIG_FILE).is_file()):
        if path is None or not path.exists():
            return NOT_STARTED, "no run directory"
        return NOT_STARTED, (
            f"{path.name}/ exists without {CONFIG_FILE}: the job stopped (or is still starting) "
            "before writing its config"
        )
    app = app or run_app(path)
    wrong = [*result_problems(path, app), *problems]
    state = (status or {}).get("state")
    if state == FINISHED:
        return (FAILED, f"{STATUS_FILE} says finished, but: {'; '.join(wrong)}") if wrong else (FINISHED, "")
    if state == FAILED:
        return FAILED, str(status.get("reason") or "") or log_error(path, *logs) or "no reason recorded"
    if state in (RUNNING, REQUEUED):
        return _running_or_interrupted(path, app, str(status.get("reason") or ""), progress, state)
    error = log_error(path, *logs)  # no status.json: a run directory written before it existed
    main_table = [text for text in wrong if RESULT_FILES[app][0] in text]
    if main_table or error is not None:
        return FAILED, "; ".join([*main_table, *([error] if error else [])])
    if wrong:
        return _running_or_interrupted(path, app, "; ".join(wrong), progress, RUNNING)
    return FINISHED, ""


def _running_or_interrupted(path: Path, app: str, detail: str, progress: str, state: str) -> tuple[str, str]:
    """``running`` when a live process holds the lock, else ``requeued`` (``state`` says so) or
    ``interrupted``; the reason adds the owner, or how a rerun continues the job, and ``progress``."""
    owner = lock_owner(path)
    if owner is not None:
        return RUNNING, "; ".join(fact for fact in (detail, f"owned by {owner}", progress) if fact)
    if state == REQUEUED:
        return REQUEUED, "; ".join(
            fact for fact in (detail or "waiting to be started again", progress) if fact
        )
    if app == TRAIN:
        resume = (
            f"resumable from {LAST_CHECKPOINT}" if (path / LAST_CHECKPOINT).is_file() else "no checkpoint"
        )
    else:
        resume = "a rerun computes it again from the start"
    facts = [detail, f"no live process holds {LOCK_FILE} (killed?)", progress, resume]
    return INTERRUPTED, "; ".join(fact for fact in facts if fact)
