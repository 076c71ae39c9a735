"""Hydra callbacks of multiruns (registered in ``ncdepth/conf/train.yaml``, ``ufm.yaml``, ``kernels.yaml``).

:class:`SweepStatus` accounts for every job once a multirun ends: each job ends as ``finished``,
``failed`` (its own ``status.json`` says why), ``running``, ``requeued``, ``interrupted`` or ``not
started`` (:func:`ncdepth.rundir.classify`, through :mod:`ncdepth.report.collect`), and the sweep
exits non-zero unless every job finished.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ncdepth.report.collect import collect_sweep
from ncdepth.rundir import FINISHED


class SweepStatus(Callback):
    """After all jobs of a multirun ran, in the launching process: print one line per job that did
    not finish (status, run, swept values, reason) and the count of jobs per status, then exit
    with status 1 (``SystemExit``, which Hydra lets through) when any job did not finish: failed,
    never started, or left ``running``/``interrupted``. A sweep directory that cannot be read
    exits 1 too, saying why."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Account for the jobs of ``config.hydra.sweep.dir`` (class docstring)."""
        sweep_dir = config.hydra.sweep.dir
        try:
            sweep = collect_sweep(sweep_dir)
        except (OSError, ValueError) as error:
            program = Path(sys.argv[0]).name or "ncdepth"
            print(f"{program}: cannot account for the jobs of {sweep_dir}: {error}", file=sys.stderr)
            raise SystemExit(1) from None
        unfinished = [run for run in sweep.jobs if run.status != FINISHED]
        for note in sweep.notes:
            print(f"note: {note}")
        for run in unfinished:
            print(f"  {sweep.describe(run)}")
        print(sweep.counts())
        if unfinished:
            raise SystemExit(1)
