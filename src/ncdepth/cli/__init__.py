"""Command-line entry points.

* ``ncdepth-train`` (:mod:`ncdepth.cli.train`): train one network with per-layer NC analysis;
* ``ncdepth-report`` (:mod:`ncdepth.cli.report`): aggregate a sweep into tables and figures;
* ``ncdepth-kernels`` (:mod:`ncdepth.cli.kernels`): kernel vs trained two-layer net NC1, one job;
* ``ncdepth-ufm`` (:mod:`ncdepth.cli.ufm`): the deep-linear unconstrained-features model, one job.

They need the ``train`` extra (``pip install 'ncdepth[train]'``); importing this package without it
raises ``ModuleNotFoundError`` naming the missing distributions and that command.

Importing this package applies the thread defaults of :mod:`ncdepth.threads` (``OMP_WAIT_POLICY=PASSIVE``
after a short spin, intra-op threads from the CPUs available to the process) unless the user set their own: every entry
point's module imports this package before torch, which is what lets the wait policy take effect.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import re
from pathlib import Path

from ncdepth import threads

CONFIG_PACKAGE = "ncdepth.conf"
CONFIG_PATH = f"pkg://{CONFIG_PACKAGE}"
"""The Hydra config root of every entry point, found through the package (so an installed
command works from any directory). ``hydra.searchpath=[file://DIR]`` (or ``--config-dir DIR``)
adds a directory of the user's own configs; ``--config-path DIR`` replaces this root."""
CONFIG_DIR = Path(str(importlib.resources.files(CONFIG_PACKAGE)))
"""The same config root on the file system: ``ncdepth/conf`` of the installed package."""
TRAIN_EXTRA = "train"


def missing_requirements(extra: str) -> list[str]:
    """The distributions that ``ncdepth[extra]`` adds and that are not installed, by their
    requirement names in ncdepth's metadata; ``[]`` when ncdepth itself is not installed."""
    try:
        requirements = importlib.metadata.requires("ncdepth") or []
    except importlib.metadata.PackageNotFoundError:
        return []
    marker = re.compile(rf"extra\s*==\s*['\"]{re.escape(extra)}['\"]")
    missing = []
    for requirement in requirements:
        if not marker.search(requirement):
            continue
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group()
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


_missing = missing_requirements(TRAIN_EXTRA)
if _missing:
    raise ModuleNotFoundError(
        f"ncdepth's command-line tools need the '{TRAIN_EXTRA}' extra; not installed: "
        f"{', '.join(_missing)}. Install it with: pip install 'ncdepth[{TRAIN_EXTRA}]'"
    )

threads.configure()
