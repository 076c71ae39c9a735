"""Command-line entry points.

* ``ncdepth-train`` (:mod:`ncdepth.cli.train`): train one network with per-layer NC analysis;
* ``ncdepth-report`` (:mod:`ncdepth.cli.report`): aggregate a sweep into tables and figures;
* ``ncdepth-kernels`` (:mod:`ncdepth.cli.kernels`): kernel vs trained two-layer net NC1, one job;
* ``ncdepth-ufm`` (:mod:`ncdepth.cli.ufm`): the deep-linear unconstrained-features model, one job.
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_DIR_ENV = "NCDEPTH_CONFIG_DIR"
CONFIG_DIR = Path(os.environ.get(CONFIG_DIR_ENV, Path(__file__).resolve().parents[3] / "conf")).resolve()
"""The ``conf/`` directory of the repository this package is installed (editable) from, or
``$NCDEPTH_CONFIG_DIR``: the Hydra config root of every entry point."""
