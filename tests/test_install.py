"""Installable anywhere: the built wheel, in fresh virtualenvs outside the checkout (``tests/installs.py``).

* The wheel ships the Hydra configs (``ncdepth/conf``), and ``ncdepth`` is imported from it.
* ``ncdepth-train trainer.max_epochs=1`` runs from an empty directory.
* The README's worked example: a user's config directory (their own model and experiment, a sweep)
  is picked up through ``hydra.searchpath``.
* With only torch and torchmetrics (and their own dependencies) installed, ``import ncdepth.metrics``
  works, the training stack is absent, and ``ncdepth-train`` says which extra to install.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import zipfile
from pathlib import Path

import pytest

from installs import (
    DEV_SITE_PACKAGES,
    REPO,
    build_wheel,
    clean_env,
    dependency_closure,
    link_distributions,
    make_venv,
)
from ncdepth.cli import CONFIG_DIR
from ncdepth.rundir import METRICS_FILE, STATUS_FILE, SUMMARY_FILE

README_EXAMPLE = re.compile(r"```(?:python|yaml)\n# (?P<path>\S+\.(?:py|yaml))\n(?P<body>.*?)```", re.DOTALL)
"""A file of the README's worked example: a code block whose first line names its path."""


def run(command: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=clean_env(), timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def train_bin(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bin/`` of a fresh virtualenv: the wheel, and the development virtualenv's packages."""
    return make_venv(tmp_path_factory.mktemp("train") / "venv", wheel, [DEV_SITE_PACKAGES])


@pytest.fixture(scope="module")
def metrics_bin(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bin/`` of a fresh virtualenv: the wheel, torch, torchmetrics and their dependencies only."""
    root = tmp_path_factory.mktemp("metrics")
    packages = link_distributions(dependency_closure(["torch", "torchmetrics"]), root / "packages")
    return make_venv(root / "venv", wheel, [packages])


def test_the_wheel_ships_the_configs_and_is_what_the_virtualenv_imports(
    wheel: Path, train_bin: Path, tmp_path: Path
) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {
        f"ncdepth/conf/{path.relative_to(CONFIG_DIR).as_posix()}" for path in CONFIG_DIR.rglob("*.yaml")
    }
    assert configs <= names and "ncdepth/conf/train.yaml" in configs
    assert "ncdepth/conf/local/README.md" in names
    result = run([str(train_bin / "python"), "-c", "import ncdepth; print(ncdepth.__file__)"], tmp_path)
    assert Path(result.stdout.strip()).is_relative_to(train_bin.parent), result.stderr
    assert not Path(result.stdout.strip()).is_relative_to(REPO)


def test_ncdepth_train_runs_from_an_empty_directory(train_bin: Path, tmp_path: Path) -> None:
    result = run([str(train_bin / "ncdepth-train"), "trainer.max_epochs=1"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = tmp_path.glob("outputs/*/*")
    assert json.loads((run_dir / STATUS_FILE).read_text())["state"] == "finished"
    assert json.loads((run_dir / SUMMARY_FILE).read_text())["epoch"] == 1


def test_a_user_config_directory_adds_a_model_and_an_experiment(train_bin: Path, tmp_path: Path) -> None:
    """The README's "Your own configs" files, written to a project directory, run as it says (one
    epoch instead of five): the sweep over the user's own model runs every job."""
    section = (REPO / "README.md").read_text().split("### Your own configs")[1].split("\n## ")[0]
    files = {match["path"]: match["body"] for match in README_EXAMPLE.finditer(section)}
    assert set(files) == {
        "my_models.py",
        "my_conf/model/tanh_mlp.yaml",
        "my_conf/experiment/my_experiment.yaml",
    }
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    command = [
        str(train_bin / "ncdepth-train"),
        f"hydra.searchpath=[file://{tmp_path}/my_conf]",
        "+experiment=my_experiment",
        "hydra.sweep.dir=multirun/mine",
        "trainer.max_epochs=1",
        "-m",
    ]
    result = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=clean_env(PYTHONPATH=str(tmp_path)),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    layers = {}
    for job in sorted((tmp_path / "multirun" / "mine").glob("[0-9]*")):
        config = json.loads((job / STATUS_FILE).read_text())["config"]
        assert config["model"]["_target_"] == "my_models.TanhMLP"
        rows = (job / METRICS_FILE).read_text().splitlines()[1:]
        layers[config["model"]["depth"]] = sorted({row.split(",")[2] for row in rows})
    assert layers == {1: ["layer1"], 3: ["layer1", "layer2", "layer3"]}


def test_metrics_need_only_torch_and_torchmetrics(metrics_bin: Path, tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import importlib.util

        import torch
        from ncdepth.metrics import NeuralCollapse

        absent = ("pytorch_lightning", "hydra", "omegaconf", "pandas", "matplotlib", "sklearn", "torchvision")
        assert all(importlib.util.find_spec(name) is None for name in absent)
        features, labels = torch.randn(30, 4), torch.arange(30) % 3
        metric = NeuralCollapse(3)
        metric.update({"h": features}, labels)
        metric.next_phase()
        metric.update({"h": features}, labels)
        print(sorted(metric.compute()["h"]))
        """
    )
    result = run([str(metrics_bin / "python"), "-c", script], tmp_path)
    assert result.returncode == 0 and "nc1" in result.stdout, result.stderr[-3000:]
    train = run([str(metrics_bin / "ncdepth-train")], tmp_path)
    assert train.returncode != 0 and "pip install 'ncdepth[train]'" in train.stderr
    assert not list(tmp_path.iterdir())
