"""Every bad input of the four commands, in one table: each row runs the real command in a directory
of its own and checks the error contract (README, "Runs, resume and failures"): the exit status, the
words of the one line on stderr (no traceback), and that nothing was written: the working
directory (where ``outputs/`` would go) and any run directory in it are the same after the command
as before, down to the bytes and modification times of every file and the set of directories.

Rows name their inputs with placeholders filled per row: ``{run}`` a copy of a finished tiny run
(``RUN``), ``{file}`` an ordinary file, ``{garbage}`` 100 random bytes named ``garbage.ckpt``,
``{readonly}`` a read-only directory, ``{empty}`` a sweep directory holding only an empty ``0/``. A row may damage its copy of the run first (``damage``).
The rows run four at a time; those of :data:`SLOW` (a mechanism a faster row already exercises)
only with ``make test-slow``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from ncdepth.rundir import METRICS_FILE

BIN = Path(sys.executable).parent
RUN = [
    "data=digits",
    "data.batch_size=64",
    "model.depth=2",
    "model.width=16",
    "trainer.max_epochs=2",
    "nc.every_n_epochs=1",
    "callbacks=none",
    "trainer.enable_progress_bar=false",
    "scheduler=constant",
]
"""The finished tiny run of ``{run}``: seconds to train."""


def cut_metrics_mid_line(run_dir: Path) -> None:
    """Cut ``metrics.csv`` in half, mid-line: rows measured before the last checkpoint are lost."""
    path = run_dir / METRICS_FILE
    os.truncate(path, path.stat().st_size // 2 + 3)


@dataclass(frozen=True)
class Case:
    """One bad input: ``command`` with ``args`` exits ``exit_code``, its last stderr line is
    ``<command>: error: ...`` and holds every one of ``words``."""

    command: str
    args: tuple[str, ...]
    words: tuple[str, ...]
    exit_code: int = 2
    damage: Callable[[Path], None] | None = None


def train(*args: str, words: tuple[str, ...], damage: Callable[[Path], None] | None = None) -> Case:
    """A row of ``ncdepth-train``; an override of ``args`` replaces an earlier one of its key."""
    keys = [arg.split("=")[0].lstrip("+") for arg in args]
    kept = tuple(arg for index, arg in enumerate(args) if keys[index] not in keys[index + 1 :])
    return Case("ncdepth-train", kept, words, damage=damage)


CASES = {
    # Hydra's composition: unknown keys and group options, with close matches
    "unknown_key": train("model.depht=3", words=("unknown key model.depht", "did you mean model.depth")),
    "unknown_top_level_key": train("foo=1", words=("unknown key foo", "+foo=")),
    "unknown_model": train("model=resnet999", words=("model=resnet999", "did you mean model=resnet", "mlp")),
    "unknown_dataset": train("data=no_such_dataset", words=("data=no_such_dataset", "digits")),
    "unknown_experiment": train(
        "+experiment=mlp_depth_swep", words=("experiment=mlp_depth_swep", "experiment=mlp_depth_sweep")
    ),
    "unresolvable_interpolation": train("data.batch_size=${nope}", words=("data.batch_size", "nope")),
    # keys the constructors or settings do not take, refused before anything is built
    "unknown_constructor_key": train("+model.dpth=3", words=("unknown key model.dpth", "model.depth")),
    "unknown_data_key": train("+data.batchsize=3", words=("unknown key data.batchsize", "data.batch_size")),
    "unknown_added_key": train("+no_such_key=1", words=("unknown key no_such_key",)),
    "unknown_trainer_key": train("+trainer.max_epoch=3", words=("trainer.max_epoch", "trainer.max_epochs")),
    # values
    "depth_0": train("model.depth=0", words=("model.depth", ">= 1")),
    "width_0": train("model.width=0", words=("model.width",)),
    "max_epochs_0": train("trainer.max_epochs=0", words=("trainer.max_epochs", ">= 1")),
    "label_noise_above_1": train("data.label_noise=1.5", words=("data.label_noise",)),
    "imbalance_ratio_below_1": train("data.imbalance_ratio=0.5", words=("data.imbalance_ratio",)),
    "imbalance_ratio_beyond_the_data": train(
        "data=digits",
        "data.imbalance=step",
        "data.imbalance_ratio=1e9",
        words=("data.imbalance_ratio=1e+09", "largest possible ratio is 139"),
    ),
    "negative_lr": train("optimizer.lr=-1", words=("optimizer.lr",)),
    "eps_out_of_range": train("nc.eps=1.5", words=("nc.eps", "[0, 1)")),
    "empty_classes_unknown": train("+nc.empty_classes=skip", words=("nc.empty_classes", "'drop'")),
    "missing_dataset_files": train(
        "data=cifar10", "data.data_dir=/nonexistent/ncdepth-data", words=("/nonexistent/ncdepth-data",)
    ),
    # directories that cannot be written
    "run_dir_under_proc": train("hydra.run.dir=/proc/ncdepth/run", words=("/proc/ncdepth", "hydra.run.dir")),
    "run_dir_below_a_file": train("hydra.run.dir={file}/run", words=("Not a directory", "hydra.run.dir")),
    "run_dir_read_only": train("hydra.run.dir={readonly}/run", words=("readonly", "hydra.run.dir")),
    # checkpoints and run directories
    "ckpt_path_missing": train("ckpt_path=/nonexistent/last.ckpt", words=("ckpt_path",)),
    "ckpt_path_not_a_checkpoint": train("ckpt_path={garbage}", words=("ckpt_path=", "is not a checkpoint")),
    "ckpt_path_of_another_config": train(
        *RUN,
        "model.width=32",
        "ckpt_path={run}/checkpoints/last.ckpt",
        words=("checkpoint of another config", "there and [32, 64] here"),
    ),
    "metrics_csv_cut_mid_line": train(
        *RUN,
        "trainer.max_epochs=4",
        "hydra.run.dir={run}",
        words=("metrics.csv", "fewer than", "Put the whole file back"),
        damage=cut_metrics_mid_line,
    ),
    **{
        f"rerun_with_another_{key}": train(
            *RUN, override, "hydra.run.dir={run}", words=("holds a run with another config", key)
        )
        for key, override in [
            ("depth", "model.depth=3"),
            ("imbalance", "data.imbalance=step"),
            ("lr", "optimizer.lr=0.2"),
            ("_target_", "model=conv"),
        ]
    },
    # the other commands
    "ufm_bad_value": Case("ncdepth-ufm", ("feature_decay=-1",), ("feature_decay",)),
    "ufm_unknown_key": Case("ncdepth-ufm", ("dept=3",), ("unknown key dept", "did you mean depth")),
    "ufm_run_dir_under_proc": Case("ncdepth-ufm", ("hydra.run.dir=/proc/ncdepth/ufm",), ("/proc/ncdepth",)),
    "lm_bad_value": Case("ncdepth-lm", ("width=30",), ("width must be a multiple of heads (4)",)),
    "lm_unknown_key": Case("ncdepth-lm", ("withd=64",), ("unknown key withd", "did you mean width")),
    "lm_unknown_experiment": Case("ncdepth-lm", ("+lm_experiment=repo",), ("lm_experiment=repro",)),
    "kernels_bad_value": Case("ncdepth-kernels", ("class_sizes=[10,20]",), ("class_sizes",)),
    "kernels_unknown_option": Case("ncdepth-kernels", ("model=resnet999",), ("model=resnet999", "fcn2")),
    "kernels_unknown_experiment": Case(
        "ncdepth-kernels", ("+kernels_experiment=balanced_quik",), ("kernels_experiment=balanced_quick",)
    ),
    "report_missing_sweep": Case("ncdepth-report", ("nothing_here",), ("nothing_here", "does not exist")),
    "report_empty_sweep": Case("ncdepth-report", ("{empty}",), ("empty_sweep", "holds no run directory")),
    "report_unknown_format": Case("ncdepth-report", ("{run}", "--format", "csv,xlsx"), ("--format",)),
    "report_out_under_proc": Case(
        "ncdepth-report", ("{run}", "--out", "/proc/ncdepth/report"), ("/proc/ncdepth", "--out")
    ),
    "report_out_read_only": Case("ncdepth-report", ("{run}", "--out", "{readonly}/report"), ("readonly",)),
}


SLOW = {
    "unknown_top_level_key",
    "unknown_dataset",
    "unknown_data_key",
    "unknown_added_key",
    "unknown_trainer_key",
    "width_0",
    "max_epochs_0",
    "label_noise_above_1",
    "imbalance_ratio_below_1",
    "negative_lr",
    "missing_dataset_files",
    "run_dir_below_a_file",
    "ckpt_path_missing",
    "rerun_with_another_imbalance",
    "rerun_with_another_lr",
    "rerun_with_another__target_",
    "ufm_bad_value",
    "ufm_run_dir_under_proc",
    "kernels_unknown_experiment",
    "report_empty_sweep",
    "report_unknown_format",
    "report_out_read_only",
}
"""Rows whose mechanism a faster row already exercises: run by ``make test-slow``."""


def make_read_only(directory: Path) -> bool:
    """Make ``directory`` read-only for this process: a read-only tmpfs where the machine lets us
    mount one, else permissions (which root ignores). Whether it worked."""
    directory.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(directory)], capture_output=True
    )
    if mounted.returncode != 0:
        directory.chmod(0o555)
    return not os.access(directory, os.W_OK)


def fingerprint(directory: Path) -> dict[str, tuple[int, str] | None]:
    """``{relative path: (mtime_ns, sha256)}`` of every file, ``None`` for every directory, under
    ``directory``: equal before and after a command exactly when it wrote nothing there."""
    entries: dict[str, tuple[int, str] | None] = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if path.is_dir():
            entries[relative] = None
        elif path.is_file():
            entries[relative] = (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return entries


@dataclass
class Outcome:
    """What a row's command did."""

    args: list[str]
    returncode: int
    stderr: str
    before: dict
    after: dict


def run_rows(
    root: Path, finished: Path, readonly: Path | None, names: list[str]
) -> dict[str, Outcome | None]:
    """Run the rows ``names`` of :data:`CASES`, four at a time, each in ``root/<name>`` with a copy
    of the ``finished`` run; ``None`` for a row needing ``readonly`` when there is none."""

    def run(name: str) -> Outcome | None:
        case = CASES[name]
        if "{readonly}" in " ".join(case.args) and readonly is None:
            return None
        cwd = root / name
        cwd.mkdir()
        run_dir = cwd / "run"
        shutil.copytree(finished, run_dir)
        if case.damage is not None:
            case.damage(run_dir)
        (cwd / "file").write_text("an ordinary file\n")
        (cwd / "garbage.ckpt").write_bytes(os.urandom(100))
        (cwd / "empty_sweep" / "0").mkdir(parents=True)
        places = {
            "run": run_dir,
            "file": cwd / "file",
            "garbage": cwd / "garbage.ckpt",
            "readonly": readonly,
            "empty": cwd / "empty_sweep",
        }
        args = list(case.args)
        for key, place in places.items():
            args = [arg.replace(f"{{{key}}}", str(place)) for arg in args]
        before = fingerprint(cwd)
        result = subprocess.run(
            [str(BIN / case.command), *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            timeout=300,
        )
        return Outcome(args, result.returncode, result.stderr, before, fingerprint(cwd))

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(names, pool.map(run, names), strict=True))


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path | None]]:
    """The rows' root directory, the finished tiny run and a read-only directory (or ``None``)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    finished = root / "finished_run"
    made = subprocess.run(
        [str(BIN / "ncdepth-train"), *RUN, f"hydra.run.dir={finished}"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    readonly = root / "readonly"
    writable = not make_read_only(readonly)
    yield root, finished, None if writable else readonly
    subprocess.run(["umount", "-l", str(readonly)], capture_output=True, check=False)


@pytest.fixture(scope="module")
def outcomes(places: tuple[Path, Path, Path | None]) -> dict[str, Outcome | None]:
    return run_rows(*places, [name for name in CASES if name not in SLOW])


@pytest.fixture(scope="module")
def slow_outcomes(places: tuple[Path, Path, Path | None]) -> dict[str, Outcome | None]:
    return run_rows(*places, sorted(SLOW))


def check_refused(name: str, outcome: Outcome | None) -> None:
    """Row ``name`` exited as it says, with its words in one ``<command>: error:`` line, the only
    one on stderr, and wrote nothing."""
    case = CASES[name]
    if outcome is None:
        pytest.skip("no read-only directory can be made here (root, and no mount)")
    where = f"{case.command} {' '.join(outcome.args)}:\n{outcome.stderr[-3000:]}"
    assert outcome.returncode == case.exit_code, where
    assert "Traceback" not in outcome.stderr, where
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{case.command}: error: "), where
    for word in case.words:
        assert word in lines[0], (word, where)
    assert outcome.after == outcome.before, where  # no file written or changed, no directory made


@pytest.mark.parametrize("name", [name for name in CASES if name not in SLOW])
def test_a_bad_input_exits_with_one_line_naming_it_and_writes_nothing(
    name: str, outcomes: dict[str, Outcome | None]
) -> None:
    check_refused(name, outcomes[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW))
def test_more_bad_inputs_exit_with_one_line_naming_them_and_write_nothing(
    name: str, slow_outcomes: dict[str, Outcome | None]
) -> None:
    check_refused(name, slow_outcomes[name])
