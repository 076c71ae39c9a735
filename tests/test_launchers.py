"""The launcher configs under ``ncdepth/conf/hydra/launcher/`` and the cluster profile of
``ncdepth/conf/local/README.md``: composed by Hydra, turned into sbatch scripts by submitit's own code
(no cluster: fake ``srun`` and ``sbatch`` on ``PATH`` that are never called), run for real through
submitit's local executor; and the checks of :mod:`ncdepth.cli.launcher_checks` around them (no
Slurm: one line and exit 2; the dry run; the DDP layout rule; progress reports)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ValidationError
from submitit.slurm.slurm import _make_sbatch_string

from ncdepth.cli import CONFIG_DIR
from ncdepth.cli.launcher_checks import (
    DRY_RUN_ENV,
    DRY_RUN_JOBS,
    DRY_RUN_SCRIPT,
    LauncherCheck,
    launcher_params,
)
from ncdepth.cli.slurm_layout import launcher_layout_error, slurm_layout_error, swept_layout_error
from ncdepth.private_api import BASIC_SWEEPER, make_executor, sbatch_script

PROFILE_README = CONFIG_DIR / "local" / "README.md"
LAUNCH_CHECK = "ncdepth.cli.launcher_checks.LauncherCheck"
SLURM_LAUNCHER = "hydra_plugins.ncdepth_sweep_launcher.surviving_launcher.SurvivingSlurmLauncher"
LOCAL_LAUNCHER = "hydra_plugins.ncdepth_sweep_launcher.surviving_launcher.SurvivingLocalLauncher"


def compose_with_launcher(
    config_dir: Path, *overrides: str, sets_subdir: bool = False, body: str = "", checked: bool = False
) -> DictConfig:
    """A primary config that sets ``hydra.sweep.dir`` (and ``hydra.sweep.subdir`` when
    ``sets_subdir``, which then wins over any launcher config) and finds ncdepth's ``ncdepth/conf/``
    (launchers, profiles) through ``hydra.searchpath``; ``body`` is more top-level yaml (e.g. a
    ``trainer``), ``checked`` registers ncdepth-train's launch callback."""
    (config_dir / "primary.yaml").write_text(primary_yaml(config_dir, sets_subdir, body, checked))
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose("primary", overrides=list(overrides), return_hydra_config=True)


def primary_yaml(config_dir: Path, sets_subdir: bool = False, body: str = "", checked: bool = False) -> str:
    """The primary config of :func:`compose_with_launcher`."""
    subdir = "\n    subdir: ${hydra.job.num}" if sets_subdir else ""
    callbacks = f"\n  callbacks:\n    launcher_check:\n      _target_: {LAUNCH_CHECK}" if checked else ""
    return (
        f"defaults:\n  - _self_\nx: 1\n{body}hydra:\n  searchpath:\n    - file://{CONFIG_DIR}\n"
        f"  sweep:\n    dir: {config_dir}/multirun{subdir}{callbacks}\n"
    )


def class_name(obj: object) -> str:
    """``module.Class`` of ``obj`` or of the class ``obj``: Hydra's plugin discovery imports
    launcher modules afresh, so ``isinstance`` against an imported class does not hold."""
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def submitted_script(launcher: Any, num_jobs: int) -> str:
    """The sbatch script the launcher's executor (built as ``SurvivingLaunch.launch`` builds it)
    submits for ``num_jobs`` jobs (its array path: the executor's parameters plus ``map_count``),
    without submitting it."""
    executor = make_executor(launcher.params, "slurm")
    map_count = {"map_count": num_jobs} if num_jobs > 1 else {}
    return _make_sbatch_string(
        command=executor._submitit_command_str, folder=executor.folder, **executor.parameters, **map_count
    )


def sbatch_options(script: str) -> dict[str, str]:
    """``{option: value}`` of the ``#SBATCH --option=value`` lines of an sbatch script."""
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", script, flags=re.MULTILINE))


def resolved_subdir(cfg: DictConfig, job_num: int, job_id: str) -> str:
    """``hydra.sweep.subdir`` as a job with this number and id resolves it."""
    job_cfg = cfg.copy()
    with open_dict(job_cfg):
        job_cfg.hydra.job.num = job_num
        job_cfg.hydra.job.id = job_id
    return str(job_cfg.hydra.sweep.subdir)


def write_commands(bin_dir: Path, *names: str) -> Path:
    """Executables ``names`` in ``bin_dir`` that fail loudly if they are ever run."""
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        command = bin_dir / name
        command.write_text(f"#!/bin/sh\necho '{name} must not be called by these tests' >&2\nexit 1\n")
        command.chmod(0o755)
    return bin_dir


@pytest.fixture
def fake_srun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """submitit's Slurm executor refuses to start where ``srun`` is not on ``PATH``, and the launch
    check wants ``sbatch`` too: both on ``PATH``, never called."""
    bin_dir = write_commands(tmp_path / "bin", "srun", "sbatch")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture
def no_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``PATH`` without ``srun`` and ``sbatch``, whatever the machine has."""
    empty = tmp_path / "no-slurm-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_slurm_launcher_writes_the_expected_sbatch_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_srun: None
) -> None:
    monkeypatch.setenv("NCDEPTH_SLURM_PARTITION", "gpu-test")
    monkeypatch.setenv("NCDEPTH_SLURM_CPUS_PER_TASK", "6")
    monkeypatch.setenv("NCDEPTH_SLURM_MAX_NUM_TIMEOUT", "2")
    cfg = compose_with_launcher(
        tmp_path, "hydra/launcher=slurm", "+hydra.launcher.additional_parameters.mail-type=FAIL"
    )
    launcher = instantiate(cfg.hydra.launcher)
    assert class_name(launcher) == SLURM_LAUNCHER
    assert make_executor(launcher.params, "slurm").max_num_timeout == 2
    script = submitted_script(launcher, 6)
    options = sbatch_options(script)
    expected = {
        "partition": "gpu-test",
        "cpus-per-task": "6",
        "gpus-per-task": "1",
        "mem": "32GB",
        "time": "240",
        "signal": "USR2@120",
        "array": "0-5%6",
        "mail-type": "FAIL",
        "nodes": "1",
        "ntasks-per-node": "1",
    }
    assert {key: options.get(key) for key in expected} == expected
    assert "account" not in options and "qos" not in options
    assert "\nexport OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK\n" in script


def test_slurm_array_respects_array_parallelism(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_srun: None
) -> None:
    monkeypatch.setenv("NCDEPTH_SLURM_ARRAY_PARALLELISM", "4")
    launcher = instantiate(compose_with_launcher(tmp_path, "hydra/launcher=slurm").hydra.launcher)
    assert sbatch_options(submitted_script(launcher, 100))["array"] == "0-99%4"


def test_a_bad_environment_value_fails_before_anything_is_submitted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NCDEPTH_SLURM_MEM_GB", "lots")
    cfg = compose_with_launcher(tmp_path, "hydra/launcher=slurm")
    with pytest.raises(ValidationError, match=r"'lots'(.|\n)*full_key: hydra\.launcher\.mem_gb"):
        instantiate(cfg.hydra.launcher)


def test_slurm_run_dirs_are_the_job_number_whatever_the_slurm_job_id(tmp_path: Path) -> None:
    for choice in ("slurm", "slurm_rehearsal"):
        cfg = compose_with_launcher(tmp_path, f"hydra/launcher={choice}")
        assert resolved_subdir(cfg, 7, "1000_7") == "7"
        assert resolved_subdir(cfg, 7, "2000_3") == "7"  # relaunched into another array: same directory


def cluster_profile_from_readme() -> str:
    """The ``ncdepth/conf/local/cluster.yaml`` example of ``ncdepth/conf/local/README.md``."""
    blocks = re.findall(r"```yaml\n(.*?)```", PROFILE_README.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1, "ncdepth/conf/local/README.md should hold exactly one yaml example"
    return blocks[0]


def readme_profile(tmp_path: Path) -> tuple[Path, Path]:
    """A search-path directory holding the README's profile as ``local/cluster.yaml``, and an empty
    directory for the primary config."""
    profiles = tmp_path / "profiles"
    (profiles / "local").mkdir(parents=True)
    (profiles / "local" / "cluster.yaml").write_text(cluster_profile_from_readme())
    config_dir = tmp_path / "app"
    config_dir.mkdir()
    return profiles, config_dir


@pytest.mark.parametrize("user", ["alice", None])
def test_readme_cluster_profile_selects_slurm_and_wins_over_the_primary_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user: str | None
) -> None:
    if user is None:  # every interpolation of the profile has a default
        monkeypatch.delenv("USER", raising=False)
    else:
        monkeypatch.setenv("USER", user)
    profiles, config_dir = readme_profile(tmp_path)
    cfg = compose_with_launcher(
        config_dir,
        f"hydra.searchpath=[file://{CONFIG_DIR},file://{profiles}]",
        "+local=cluster",
        sets_subdir=True,
    )
    launcher: dict[str, Any] = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == SLURM_LAUNCHER
    assert launcher["partition"] == "gpu" and launcher["account"] == "my-lab"
    assert launcher["setup"] == ["export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK"]  # no cuda module
    assert launcher["gpus_per_task"] == 1 and launcher["gres"] is None
    assert cfg.hydra.sweep.dir.startswith(f"/scratch/{user or 'unknown'}/ncdepth/multirun/")
    assert resolved_subdir(cfg, 3, "1000_3") == "3"  # the launcher's: stable across relaunches
    assert "local" not in cfg  # the profile only touches hydra.*


def test_readme_profile_and_the_ddp_override_combine(tmp_path: Path, fake_srun: None) -> None:
    """``+local=cluster hydra/launcher=slurm_ddp``: the command line's launcher wins over the
    profile's, and the profile's cluster values stay."""
    profiles, config_dir = readme_profile(tmp_path)
    cfg = compose_with_launcher(
        config_dir,
        f"hydra.searchpath=[file://{CONFIG_DIR},file://{profiles}]",
        "+local=cluster",
        "hydra/launcher=slurm_ddp",
        "trainer.devices=4",
        body="trainer:\n  devices: 1\n",
    )
    options = sbatch_options(submitted_script(instantiate(cfg.hydra.launcher), 2))
    assert options["partition"] == "gpu" and options["ntasks-per-node"] == "4"


APP = """\
import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(config_path=".", config_name="primary", version_base="1.3")
def main(cfg):
    out = Path(HydraConfig.get().runtime.output_dir)
    (out / "x.txt").write_text(str(cfg.x))
    if cfg.x == 2:
        raise RuntimeError("x=2 fails on purpose")
    if cfg.x >= 3:  # as ncdepth-train: the run's outcome in status.json, and the job returns
        status = {"state": "finished"} if cfg.x == 4 else {"state": "failed", "reason": "diverged"}
        (out / "status.json").write_text(json.dumps(status))
    if cfg.x == 4:  # and the result files of a finished run
        (out / "metrics.csv").write_text("epoch,split,layer,metric,value\\n")
        (out / "summary.json").write_text("{}")


main()
"""


def run_app(
    config_dir: Path, *args: str, env: dict[str, str] | None = None, body: str = ""
) -> subprocess.CompletedProcess[str]:
    """A Hydra app (:data:`APP`: job ``x=2`` raises, ``x=3`` records a failed run, ``x=4`` a
    finished one) with the primary config of
    :func:`compose_with_launcher` and ncdepth-train's launch callback, run as a command."""
    (config_dir / "primary.yaml").write_text(primary_yaml(config_dir, body=body, checked=True))
    (config_dir / "app.py").write_text(APP)
    return subprocess.run(
        [sys.executable, str(config_dir / "app.py"), "-m", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_slurm_rehearsal_names_run_dirs_as_slurm_and_reports_progress(tmp_path: Path) -> None:
    cfg = compose_with_launcher(tmp_path, "hydra/launcher=slurm_rehearsal")
    assert class_name(instantiate(cfg.hydra.launcher)) == LOCAL_LAUNCHER
    result = run_app(tmp_path, "hydra/launcher=slurm_rehearsal", "x=1,2,3,4")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]  # x=2 raised
    sweep = tmp_path / "multirun"
    job_ids = {path.name for path in (sweep / ".submitit").iterdir() if "%" not in path.name}  # not %j
    run_dirs = {path.name: path for path in sweep.iterdir() if path.is_dir() and path.name != ".submitit"}
    assert sorted(run_dirs) == ["0", "1", "2", "3"]  # <job num>, as under Slurm
    assert len(job_ids) == 4
    assert {path.name: (path / "x.txt").read_text() for path in run_dirs.values()} == {
        "0": "1",
        "1": "2",
        "2": "3",
        "3": "4",
    }
    assert "job #0 (x=1) done (" in output and "job #3 (x=4) finished (" in output
    assert re.search(
        r"job #1 \(x=2\) FAILED: RuntimeError: x=2 fails on purpose; run \S+/multirun/1\b", output
    )
    assert re.search(r"job #2 \(x=3\) FAILED: diverged; run \S+/multirun/2\b", output)
    assert "4/4 jobs ended, 2 failed" in output


def test_slurm_without_slurm_exits_2_with_one_line(tmp_path: Path, no_slurm: None) -> None:
    result = run_app(tmp_path, "hydra/launcher=slurm", "x=1,3")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("app.py: error: hydra/launcher=slurm submits"), lines
    assert "sbatch and srun are not on PATH" in lines[0]
    assert all(alt in lines[0] for alt in ("hydra/launcher=slurm_rehearsal", f"{DRY_RUN_ENV}=1"))
    assert not (tmp_path / "multirun").exists()  # refused before the sweep directory is made


def test_dry_run_writes_the_sbatch_script_and_submits_nothing(tmp_path: Path, no_slurm: None) -> None:
    result = run_app(
        tmp_path,
        "hydra/launcher=slurm_ddp",
        "trainer.devices=2",
        "x=1,2,3",
        env={DRY_RUN_ENV: "1", "NCDEPTH_SLURM_PARTITION": "gpu-test"},
        body="trainer:\n  devices: 1\n",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "multirun"
    script = Path(result.stdout.splitlines()[-1])
    assert script == sweep / DRY_RUN_SCRIPT and script.is_file()
    options = sbatch_options(script.read_text())
    assert options["array"] == "0-2%3" and options["partition"] == "gpu-test"
    assert (options["ntasks-per-node"], options["gpus-per-node"], options["nodes"]) == ("2", "2", "1")
    jobs = (sweep / DRY_RUN_JOBS).read_text().splitlines()
    assert jobs == [f"{num}\ttrainer.devices=2 x={num + 1}" for num in range(3)]
    assert sorted(path.name for path in sweep.iterdir()) == [DRY_RUN_SCRIPT, DRY_RUN_JOBS]  # no .submitit


@pytest.mark.parametrize("launcher_choice", ["slurm", "slurm_ddp"])
@pytest.mark.parametrize("num_jobs", [1, 7])
def test_dry_run_script_is_the_one_submitit_submits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_srun: None, launcher_choice: str, num_jobs: int
) -> None:
    monkeypatch.setenv("NCDEPTH_SLURM_ACCOUNT", "lab")
    cfg = compose_with_launcher(
        tmp_path,
        f"hydra/launcher={launcher_choice}",
        "+hydra.launcher.additional_parameters.mail-type=FAIL",
        body="trainer:\n  devices: 1\n",
    )
    launcher = instantiate(cfg.hydra.launcher)
    assert launcher_params(cfg) == launcher.params
    assert sbatch_script(launcher_params(cfg), num_jobs) == submitted_script(launcher, num_jobs)


@pytest.mark.parametrize(("devices", "num_nodes"), [(4, 2), (2, None), (1, None)])
def test_slurm_ddp_takes_its_layout_from_the_trainer(
    tmp_path: Path, fake_srun: None, devices: int, num_nodes: int | None
) -> None:
    """``hydra/launcher=slurm_ddp trainer.devices=N ++trainer.num_nodes=M`` (the documented
    override): N tasks and N GPUs on each of M nodes, one Lightning process per task."""
    nodes = [] if num_nodes is None else [f"++trainer.num_nodes={num_nodes}"]
    cfg = compose_with_launcher(
        tmp_path,
        "hydra/launcher=slurm_ddp",
        f"trainer.devices={devices}",
        *nodes,
        body="trainer:\n  devices: 1\n  strategy: ddp\n",
    )
    launcher = instantiate(cfg.hydra.launcher)
    options = sbatch_options(submitted_script(launcher, 3))
    expected_nodes = str(num_nodes or 1)
    assert (options["ntasks-per-node"], options["gpus-per-node"], options["nodes"]) == (
        str(devices),
        str(devices),
        expected_nodes,
    )
    assert "gpus-per-task" not in options  # every task sees the GPUs of its node, as Lightning wants
    trainer = OmegaConf.to_container(cfg.trainer)
    assert launcher_layout_error(launcher.params, trainer) is None
    environ = {
        "SLURM_JOB_ID": "7",
        "SLURM_NTASKS": str(devices * (num_nodes or 1)),
        "SLURM_NTASKS_PER_NODE": options["ntasks-per-node"],
        "SLURM_NNODES": options["nodes"],
    }
    assert slurm_layout_error(trainer, environ) is None  # what the job will see agrees too


@pytest.mark.parametrize(
    ("overrides", "devices", "expected"),
    [
        (["hydra/launcher=slurm"], "2", "trainer.devices=2 but hydra.launcher.tasks_per_node=1"),
        (
            [
                "hydra/launcher=slurm_ddp",
                "++trainer.num_nodes=3",
                "hydra.launcher.tasks_per_node=2",  # set by hand instead of taken from the trainer
                "hydra.launcher.nodes=1",
            ],
            "4",
            "trainer.devices=4 but hydra.launcher.tasks_per_node=2; "
            "trainer.num_nodes=3 but hydra.launcher.nodes=1",
        ),
        (["hydra/launcher=slurm_ddp"], "auto", "'auto' of type 'str' could not be converted to Integer"),
    ],
)
def test_launch_check_refuses_a_layout_that_disagrees(
    tmp_path: Path,
    fake_srun: None,
    capsys: pytest.CaptureFixture[str],
    overrides: list[str],
    devices: str,
    expected: str,
) -> None:
    cfg = compose_with_launcher(tmp_path, *overrides, body=f"trainer:\n  devices: {devices}\n")
    with pytest.raises(SystemExit) as exit_info:
        LauncherCheck().on_multirun_start(cfg)
    assert exit_info.value.code == 2
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and line.startswith(f"{Path(sys.argv[0]).name}: error: ")
    assert expected in line and ("slurm_ddp" in line or "trainer.devices" in line)
    assert not (tmp_path / "multirun").exists()


def test_launch_check_lets_a_consistent_slurm_sweep_through(tmp_path: Path, fake_srun: None) -> None:
    cfg = compose_with_launcher(tmp_path, "hydra/launcher=slurm", body="trainer:\n  devices: 1\n")
    check = LauncherCheck()
    check.on_multirun_start(cfg)  # sbatch and srun found, layout agrees: no exit
    check.on_multirun_end(cfg)
    assert not (tmp_path / "multirun").exists()


@pytest.mark.parametrize(
    ("overrides", "params", "refused"),
    [
        (["trainer.devices=1,2"], {}, "trainer.devices=1,2"),
        (["++trainer.num_nodes=range(1,3)"], {}, "++trainer.num_nodes=range(1,3)"),
        ([], {"trainer.devices": "4"}, "hydra.sweeper.params['trainer.devices']"),
        (["trainer.devices=4", "model.depth=2,4"], {"seed": "0,1"}, None),
    ],
)
def test_layout_keys_must_not_vary_between_the_jobs_of_a_slurm_sweep(
    overrides: list[str], params: dict[str, str], refused: str | None
) -> None:
    error = swept_layout_error(overrides, params)
    if refused is None:
        assert error is None
    else:
        assert error is not None and error.startswith(refused) and "base config" in error


SLURM_JOB = {"SLURM_JOB_ID": "123", "SLURM_JOB_NAME": "train"}


@pytest.mark.parametrize(
    ("trainer", "environ", "names"),
    [
        (
            {"devices": 4, "num_nodes": 2},
            {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_NNODES": "2"},
            None,
        ),
        (
            {"devices": 4},
            {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_NNODES": "2"},
            ["trainer.num_nodes=1", "SLURM_NNODES=2"],
        ),
        (
            {"devices": 2},
            {"SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "1"},
            ["trainer.devices=2", "SLURM_NTASKS_PER_NODE=1"],
        ),
        ({"devices": "0,1", "num_nodes": 2}, {"SLURM_NTASKS": "4", "SLURM_NNODES": "2"}, None),
        (
            {"devices": 1, "num_nodes": 2},
            {"SLURM_NTASKS": "4", "SLURM_NNODES": "2"},
            ["trainer.devices=1", "SLURM_NTASKS/SLURM_NNODES=2"],
        ),
        (
            {"devices": 2},
            {"SLURM_NTASKS": "6", "SLURM_TASKS_PER_NODE": "3(x2)", "SLURM_JOB_NUM_NODES": "2"},
            ["trainer.devices=2", "SLURM_TASKS_PER_NODE=3", "trainer.num_nodes=1", "SLURM_JOB_NUM_NODES=2"],
        ),
        ({"devices": "auto"}, {"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "4", "SLURM_NNODES": "1"}, None),
    ],
)
def test_slurm_layout_error_names_both_keys_and_values(
    trainer: dict[str, Any], environ: dict[str, str], names: list[str] | None
) -> None:
    error = slurm_layout_error(trainer, {**SLURM_JOB, **environ})
    if names is None:
        assert error is None
    else:
        assert error is not None and all(name in error for name in names), error


def test_slurm_layout_error_outside_a_slurm_job_is_none() -> None:
    mismatch = {"SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "1"}
    assert slurm_layout_error({"devices": 4}, mismatch) is None  # no SLURM_JOB_ID
    assert slurm_layout_error({"devices": 4}, {**SLURM_JOB, **mismatch, "SLURM_JOB_NAME": "bash"}) is None
    assert slurm_layout_error({"devices": 4}, {"SLURM_JOB_ID": "5"}) is None  # salloc: no tasks


def test_ncdepth_train_registers_the_launch_check() -> None:
    callbacks = OmegaConf.load(CONFIG_DIR / "train.yaml").hydra.callbacks
    assert LAUNCH_CHECK in [node._target_ for node in callbacks.values()]


def test_cpu_pool_composes_with_the_joblib_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    joblib_launcher = pytest.importorskip("hydra_plugins.hydra_joblib_launcher.joblib_launcher")
    monkeypatch.setenv("NCDEPTH_CPU_POOL_JOBS", "3")
    launcher = instantiate(compose_with_launcher(tmp_path, "hydra/launcher=cpu_pool").hydra.launcher)
    assert class_name(launcher) == class_name(joblib_launcher.JoblibLauncher)
    assert launcher.joblib["n_jobs"] == 3 and launcher.joblib["prefer"] == "processes"


def test_no_wckey_unless_the_profile_sets_one(tmp_path: Path, fake_srun: None) -> None:
    """submitit's default renders ``--wckey=submitit`` (rejected where wckeys are enforced): the
    launcher sends none, and ``additional_parameters.wckey`` sets one."""
    cfg = compose_with_launcher(tmp_path, "hydra/launcher=slurm")
    assert "wckey" not in sbatch_options(sbatch_script(launcher_params(cfg), 3))
    assert "wckey" not in sbatch_options(submitted_script(instantiate(cfg.hydra.launcher), 3))
    cfg = compose_with_launcher(
        tmp_path, "hydra/launcher=slurm", "+hydra.launcher.additional_parameters.wckey=lab"
    )
    assert sbatch_options(sbatch_script(launcher_params(cfg), 3))["wckey"] == "lab"


def test_gres_replaces_gpus_per_task_where_the_cluster_lacks_cons_tres(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_srun: None
) -> None:
    monkeypatch.setenv("NCDEPTH_SLURM_GPUS_PER_TASK", "null")
    monkeypatch.setenv("NCDEPTH_SLURM_GRES", "gpu:1")
    options = sbatch_options(
        sbatch_script(launcher_params(compose_with_launcher(tmp_path, "hydra/launcher=slurm")), 2)
    )
    assert options["gres"] == "gpu:1" and "gpus-per-task" not in options


def test_a_missing_data_set_stops_the_sweep_before_submitting(tmp_path: Path, fake_srun: None) -> None:
    """A CIFAR-10 sweep whose files are not in ``data.data_dir``: one line, exit 2, nothing made
    (the fake ``sbatch`` fails loudly if called)."""
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ncdepth-train"),
            "-m",
            "hydra/launcher=slurm",
            "data=cifar10",
            f"data.data_dir={tmp_path / 'empty'}",
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "ncdepth-train: error: data.dataset=cifar10: the data set is not"
    )
    assert str(tmp_path / "empty") in lines[0] and "cifar-10-batches-py" in lines[0]
    assert not sweep.exists()


def test_a_second_different_sweep_into_a_sweep_dir_is_refused(tmp_path: Path) -> None:
    """The same sweep again is a relaunch (allowed); another one exits 2 naming the first and
    changes nothing."""
    first = run_app(tmp_path, "x=1,4")
    assert first.returncode == 0, first.stderr[-3000:]
    sweep = tmp_path / "multirun"
    before = (sweep / "multirun.yaml").read_bytes()
    second = run_app(tmp_path, "x=3,4,5")
    assert second.returncode == 2, second.stderr[-3000:]
    line = second.stderr.strip().splitlines()
    assert len(line) == 1 and f"hydra.sweep.dir={sweep} holds another sweep (2 jobs of 'x=1,4')" in line[0]
    assert (sweep / "multirun.yaml").read_bytes() == before
    assert run_app(tmp_path, "x=1,4").returncode == 0  # the same sweep: a relaunch


def test_sweeps_larger_than_max_array_size_go_as_several_arrays() -> None:
    from ncdepth.cli.sweep_launcher import chunks, max_array_size

    assert chunks(list(range(9)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    assert chunks(list(range(3)), None) == [[0, 1, 2]] and chunks([], 4) == []
    shown = "Configuration data as of ...\nMaxArraySize            = 1001\nMaxJobCount = 10000\n"

    def fake_scontrol(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, 0, stdout=shown)

    if max_array_size(fake_scontrol) is not None:  # scontrol on PATH
        assert max_array_size(fake_scontrol) == 1001


def test_the_basic_sweeper_is_named_as_hydra_names_it() -> None:
    """``multirun.yaml`` names the sweeper by its class path; the report compares it with this one."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    assert f"{BasicSweeper.__module__}.{BasicSweeper.__name__}" == BASIC_SWEEPER
