"""The gallery's sweeps: the directory each experiment is swept into, and a sweep's report.

``scripts/reproduce.sh`` sweeps each experiment into ``OUT_DIR/<sweep_name(group, experiment)>`` and
writes its report there with ``ncdepth-report``; the page reads it back from the same name.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from ncdepth.cli.report import DEFAULT_OUT_SUBDIR, FIGURES_SUBDIR
from ncdepth.report.tables import RUNS_FILE


def sweep_name(group: str, experiment: str) -> str:
    """The directory of the sweep of ``+GROUP=EXPERIMENT``: the experiment, prefixed by the app's part of
    its config group (``experiment``/``repro_depth``: ``repro_depth``; ``kernels_experiment``/
    ``repro_balanced``: ``kernels_repro_balanced``; ``ufm_experiment``/``balanced_quick``:
    ``ufm_balanced_quick``)."""
    return f"{group.removesuffix('experiment')}{experiment}"


@dataclass(frozen=True)
class SweepReport:
    """The report directory of one swept experiment and the job list in it (``runs.csv``)."""

    name: str
    path: Path

    @property
    def report(self) -> Path:
        """Where ``ncdepth-report SWEEP`` writes by default (``scripts/reproduce.sh`` keeps it)."""
        return self.path / DEFAULT_OUT_SUBDIR

    @property
    def figures(self) -> Path:
        return self.report / FIGURES_SUBDIR

    def exists(self) -> bool:
        return self.report.is_dir()

    def table(self, name: str) -> pd.DataFrame:
        return pd.read_csv(self.report / name)

    def runs(self) -> pd.DataFrame:
        """One row per job with ``run, status, reason`` and the swept keys (the report's ``runs.csv``)."""
        return self.table(RUNS_FILE)

    def finished(self) -> pd.DataFrame:
        runs = self.runs()
        return runs[runs["status"] == "finished"]

    def config(self, run: str, key: str) -> object:
        """The value of the dotted ``key`` in the config of ``run`` (its ``.hydra/config.yaml``)."""
        return OmegaConf.select(OmegaConf.load(self.path / str(run) / ".hydra" / "config.yaml"), key)

    def status_line(self) -> str:
        """``N jobs: n finished, …`` and the reason of every job that did not finish."""
        runs = self.runs()
        counts = runs["status"].value_counts()
        line = f"{len(runs)} jobs: " + ", ".join(f"{count} {status}" for status, count in counts.items())
        unfinished = runs[runs["status"] != "finished"]
        if not unfinished.empty:
            line += (
                " (not in the numbers: "
                + "; ".join(f"{r.run}: {r.reason}" for r in unfinished.itertuples())
                + ")"
            )
        return line


if (
    __name__ == "__main__"
):  # scripts/reproduce.sh: python -m ncdepth.report.reproductions.sweeps GROUP EXPERIMENT
    print(sweep_name(*sys.argv[1:3]))
