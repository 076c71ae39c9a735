"""Fresh virtualenvs holding ncdepth's built wheel, for the install tests and the footprint benchmark.

Nothing is downloaded: the wheel is built without build isolation or dependencies, installed with
``--no-deps --no-index``, and the third-party packages a virtualenv needs are those of the development
virtualenv, made visible through a ``.pth`` file in the new virtualenv's ``site-packages``. Paths in a
``.pth`` file go *after* the virtualenv's own ``site-packages``, so ``ncdepth`` comes from the wheel,
and the ``.pth`` files inside those paths (the development virtualenv's editable install) are not read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import Distribution, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
DEV_SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])
"""The ``site-packages`` of the interpreter running this module (the development virtualenv)."""
PACKAGES_PTH = "zz_packages.pth"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a subprocess in a fresh virtualenv: no ``PYTHONPATH``, no user site, one thread."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": "1", **extra}


def build_wheel(work_dir: Path) -> Path:
    """Build ncdepth's wheel from a copy of the checkout's ``pyproject.toml``, ``README.md`` and
    ``src/`` under ``work_dir`` (so the build writes nothing into the checkout); return its path."""
    source = work_dir / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = work_dir / "wheel"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w"]
    subprocess.run([*command, str(out), str(source)], check=True, capture_output=True, env=clean_env())
    (wheel,) = out.glob("ncdepth-*.whl")
    return wheel


def make_venv(path: Path, wheel: Path, package_dirs: Sequence[Path]) -> Path:
    """A new virtualenv at ``path`` with ``wheel`` installed (no dependencies) and ``package_dirs`` on
    ``sys.path`` after its own ``site-packages``; returns the virtualenv's ``bin`` directory."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, env=clean_env())
    python = path / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index"]
    subprocess.run([*install, "-q", str(wheel)], check=True, capture_output=True, env=clean_env())
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        env=clean_env(),
    ).stdout.strip()
    (Path(site) / PACKAGES_PTH).write_text("".join(f"{directory}\n" for directory in package_dirs))
    return path / "bin"


def dependency_closure(requirements: Iterable[str]) -> dict[str, Distribution]:
    """The installed distributions that ``requirements`` need, themselves included, recursively
    (extras followed, markers evaluated for this interpreter), by canonical name. Raises
    ``PackageNotFoundError`` naming a required distribution that is not installed."""
    found: dict[str, tuple[Distribution, set[str]]] = {}
    pending = [Requirement(text) for text in requirements]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        known, extras = found.get(name, (None, set()))
        if known is not None and set(requirement.extras) <= extras:
            continue
        extras = extras | set(requirement.extras)
        dist = known or distribution(name)
        found[name] = (dist, extras)
        for text in dist.requires or []:
            needed = Requirement(text)
            environments = [{"extra": extra} for extra in extras or {""}]
            if needed.marker is None or any(needed.marker.evaluate(env) for env in environments):
                pending.append(needed)
    return {name: dist for name, (dist, _) in found.items()}


def link_distributions(distributions: Mapping[str, Distribution], directory: Path) -> Path:
    """``directory`` filled with symbolic links to the top-level modules, packages and ``.dist-info``
    folders of ``distributions``: a ``site-packages`` where only they are installed."""
    directory.mkdir(parents=True)
    for dist in distributions.values():
        for top in {file.parts[0] for file in dist.files or []} - {"..", "__pycache__"}:
            link = directory / top
            if not link.exists():
                link.symlink_to(dist.locate_file(top))
    return directory


def installed_bytes(dist: Distribution) -> int:
    """Bytes on disk of the files ``dist`` installed (its ``RECORD``; files since removed are skipped)."""
    paths = (Path(dist.locate_file(file)) for file in dist.files or [])
    return sum(path.stat().st_size for path in paths if path.is_file())
