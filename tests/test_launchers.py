"""The launcher configs under ``conf/hydra/launcher/`` and the cluster profile of
``conf/local/README.md``: composed by Hydra, turned into sbatch scripts by submitit's own code
(no cluster: a fake ``srun`` on ``PATH`` that is never called), run for real through submitit's
local executor."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ValidationError
from submitit.slurm.slurm import _make_sbatch_string

REPO_CONF = Path(__file__).resolve().parents[1] / "conf"
PROFILE_README = REPO_CONF / "local" / "README.md"
SUBMITIT_INIT_KEYS = ("submitit_folder", "max_num_timeout")
"""Launcher params that ``BaseSubmititLauncher.launch`` passes to the executor's constructor."""
SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
LOCAL_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"


def compose_with_launcher(config_dir: Path, *overrides: str, sets_subdir: bool = False) -> DictConfig:
    """A primary config that sets ``hydra.sweep.dir`` (and ``hydra.sweep.subdir`` when
    ``sets_subdir``, which then wins over any launcher config) and finds the repository's ``conf/``
    (launchers, profiles) through ``hydra.searchpath``."""
    subdir = "\n    subdir: ${hydra.job.num}" if sets_subdir else ""
    (config_dir / "primary.yaml").write_text(
        f"defaults:\n  - _self_\nx: 1\nhydra:\n  searchpath:\n    - file://{REPO_CONF}\n"
        f"  sweep:\n    dir: {config_dir}/multirun{subdir}\n"
    )
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose("primary", overrides=list(overrides), return_hydra_config=True)


def class_name(obj: object) -> str:
    """``module.Class`` of ``obj`` or of the class ``obj``: Hydra's plugin discovery imports
    launcher modules afresh, so ``isinstance`` against an imported class does not hold."""
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def slurm_executor(launcher: Any, folder: Path) -> submitit.AutoExecutor:
    """The executor ``BaseSubmititLauncher.launch`` builds from the launcher's params, without
    submitting anything."""
    params = dict(launcher.params)
    executor = submitit.AutoExecutor(
        folder=folder, cluster="slurm", slurm_max_num_timeout=params["max_num_timeout"]
    )
    queue_keys = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{
            key if key in queue_keys else f"slurm_{key}": value
            for key, value in params.items()
            if key not in SUBMITIT_INIT_KEYS
        }
    )
    return executor


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


@pytest.fixture
def fake_srun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """submitit's Slurm executor refuses to start where ``srun`` is not on ``PATH``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text("#!/bin/sh\necho 'srun must not be called by these tests' >&2\nexit 1\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


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
    executor = slurm_executor(launcher, tmp_path / ".submitit")
    assert executor._executor.max_num_timeout == 2
    script = _make_sbatch_string(
        command="python -u -m submitit.core._submit",
        folder=tmp_path / ".submitit",
        map_count=6,
        **executor._executor.parameters,
    )
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
    parameters = slurm_executor(launcher, tmp_path / ".submitit")._executor.parameters
    script = _make_sbatch_string(command="true", folder=tmp_path, map_count=100, **parameters)
    assert sbatch_options(script)["array"] == "0-99%4"


def test_a_bad_environment_value_fails_before_anything_is_submitted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NCDEPTH_SLURM_MEM_GB", "lots")
    cfg = compose_with_launcher(tmp_path, "hydra/launcher=slurm")
    with pytest.raises(ValidationError, match=r"'lots'(.|\n)*full_key: hydra\.launcher\.mem_gb"):
        instantiate(cfg.hydra.launcher)


def test_slurm_run_dirs_are_unique_per_task_and_stable_on_requeue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose_with_launcher(tmp_path, "hydra/launcher=slurm")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "1007")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "1000")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    job_id = submitit.JobEnvironment().job_id  # what the launcher sets as hydra.job.id
    assert resolved_subdir(cfg, 7, job_id) == "7_1000_7"
    subdirs = {resolved_subdir(cfg, num, f"{array}_{num}") for array in ("1000", "2000") for num in range(8)}
    assert len(subdirs) == 16  # two sweeps started in the same second do not collide
    assert resolved_subdir(cfg, 7, job_id) == resolved_subdir(cfg, 7, "1000_7")  # requeued task


def cluster_profile_from_readme() -> str:
    """The ``conf/local/cluster.yaml`` example of ``conf/local/README.md``."""
    blocks = re.findall(r"```yaml\n(.*?)```", PROFILE_README.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1, "conf/local/README.md should hold exactly one yaml example"
    return blocks[0]


def test_readme_cluster_profile_selects_slurm_and_wins_over_the_primary_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USER", "alice")
    profiles = tmp_path / "profiles"
    (profiles / "local").mkdir(parents=True)
    (profiles / "local" / "cluster.yaml").write_text(cluster_profile_from_readme())
    config_dir = tmp_path / "app"
    config_dir.mkdir()
    cfg = compose_with_launcher(
        config_dir,
        f"hydra.searchpath=[file://{REPO_CONF},file://{profiles}]",
        "+local=cluster",
        sets_subdir=True,
    )
    launcher: dict[str, Any] = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["partition"] == "gpu" and launcher["account"] == "my-lab"
    assert launcher["setup"][0] == "module load cuda/12.4"
    assert cfg.hydra.sweep.dir.startswith("/scratch/alice/ncdepth/multirun/")
    assert resolved_subdir(cfg, 3, "1000_3") == "3_1000_3"
    assert "local" not in cfg  # the profile only touches hydra.*


def test_slurm_rehearsal_runs_a_sweep_through_submitit(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(
            """\
            from pathlib import Path

            import hydra
            from hydra.core.hydra_config import HydraConfig


            @hydra.main(config_path=".", config_name="primary", version_base="1.3")
            def main(cfg):
                out = Path(HydraConfig.get().runtime.output_dir)
                (out / "x.txt").write_text(str(cfg.x))


            main()
            """
        )
    )
    cfg = compose_with_launcher(tmp_path, "hydra/launcher=slurm_rehearsal")
    assert class_name(instantiate(cfg.hydra.launcher)) == LOCAL_LAUNCHER
    result = subprocess.run(
        [sys.executable, str(app), "-m", "hydra/launcher=slurm_rehearsal", "x=1,2,3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "multirun"
    assert [(sweep / str(num) / "x.txt").read_text() for num in range(3)] == ["1", "2", "3"]
    assert (sweep / ".submitit").is_dir()


def test_cpu_pool_composes_with_the_joblib_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    joblib_launcher = pytest.importorskip("hydra_plugins.hydra_joblib_launcher.joblib_launcher")
    monkeypatch.setenv("NCDEPTH_CPU_POOL_JOBS", "3")
    launcher = instantiate(compose_with_launcher(tmp_path, "hydra/launcher=cpu_pool").hydra.launcher)
    assert class_name(launcher) == class_name(joblib_launcher.JoblibLauncher)
    assert launcher.joblib["n_jobs"] == 3 and launcher.joblib["prefer"] == "processes"
