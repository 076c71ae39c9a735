"""The README's install lines work as written where ncdepth is on no package index: ``make wheel`` builds
the wheel the README names into ``dist/``, a ``git+`` URL installs, and no line claims a release."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VERSION = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.MULTILINE).group(1)
WHEEL = f"ncdepth-{VERSION}-py3-none-any.whl"


def install_block() -> str:
    section = (REPO / "README.md").read_text().split("## Install\n")[1].split("\n## ")[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    return block


def test_no_line_installs_from_an_index_and_the_wheel_is_the_one_make_builds() -> None:
    lines = [line.split("#")[0].strip() for line in install_block().splitlines()]
    installs = [line for line in lines if line.startswith("pip install")]
    assert installs
    for line in installs:  # each names a path, the checkout or a git URL: never a bare distribution name
        target = line.removeprefix("pip install").strip()
        assert target.startswith(("-e .", "-e '.", "dist/", '"ncdepth @ git+', '"ncdepth[train] @ git+')), (
            line
        )
    assert f"dist/{WHEEL}" in install_block()


def checkout_copy(tmp_path: Path) -> Path:
    """What a clone holds that a build reads (so the build writes nothing into this checkout)."""
    copy = tmp_path / "ncdepth"
    copy.mkdir()
    for name in ("pyproject.toml", "README.md", "Makefile"):
        shutil.copy2(REPO / name, copy / name)
    shutil.copytree(REPO / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return copy


def test_make_wheel_builds_the_wheel_into_dist(tmp_path: Path) -> None:
    copy = checkout_copy(tmp_path)
    # --no-build-isolation: offline, with the setuptools of the running environment
    command = ["make", "wheel", f"PYTHON={sys.executable}", "ARGS=--no-build-isolation -q"]
    subprocess.run(command, cwd=copy, check=True, capture_output=True, timeout=600)
    wheel = copy / "dist" / WHEEL
    assert wheel.is_file()
    names = zipfile.ZipFile(wheel).namelist()
    assert "ncdepth/metrics/functional.py" in names and "ncdepth/conf/kernels.yaml" in names


@pytest.mark.slow
def test_the_git_url_form_installs(tmp_path: Path) -> None:
    copy = checkout_copy(tmp_path)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], cwd=copy, check=True)
    subprocess.run([*git, "add", "-A"], cwd=copy, check=True)
    subprocess.run([*git, "commit", "-qm", "snapshot"], cwd=copy, check=True)
    target = tmp_path / "installed"
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q", "--target"]
    subprocess.run([*pip, str(target), f"ncdepth @ git+file://{copy}"], check=True, capture_output=True)
    assert (target / "ncdepth" / "metrics" / "functional.py").is_file()
    assert (target / f"ncdepth-{VERSION}.dist-info").is_dir()
