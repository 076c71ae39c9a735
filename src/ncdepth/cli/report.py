"""``ncdepth-report``: turn a sweep directory into one tidy table, a table of runs and the figures.

    ncdepth-report multirun/2026-11-22/07-00-00                  # writes .../report/
    ncdepth-report SWEEP_DIR --out results/depth_sweep --format parquet

For a sweep of any app (``ncdepth-train``, ``ncdepth-ufm``, ``ncdepth-kernels``: read from its
``multirun.yaml`` and run files, :mod:`ncdepth.report.collect`), prints the count of jobs per state
and one line per job, with notes (e.g. two different sweeps started into one directory), and writes
``runs.csv`` (one row per job, from its ``multirun.yaml``: app, state, reason, swept values;
:mod:`ncdepth.report.tables`). Then, per app: an ``ncdepth-train`` sweep gets ``report.csv`` and/or
``report.parquet`` (every measured number of every run, the swept values as columns; ``runs.csv``
adds effective depths and final accuracies) and ``figures/*.png|pdf`` (named after the swept keys,
:mod:`ncdepth.report.figures`; one of them alone: :func:`ncdepth.report.draw_figure`); a bound sweep
(``ncdepth/conf/experiment/bound*.yaml``, varying ``data.extra_label_noise``) also ``bound.csv`` and
``figures/generalization_bound.png|pdf`` (:mod:`ncdepth.report.bound`). An ``ncdepth-kernels``
sweep gets the kernel tables and figures (:mod:`ncdepth.report.kernels`), an ``ncdepth-ufm`` sweep
the UFM table, summary (printed) and figure (:mod:`ncdepth.report.ufm`), an ``ncdepth-lm`` sweep the
tidy table, ``runs.csv`` and the token-level table and figure (:mod:`ncdepth.report.tokens`). Jobs that failed, are
running, requeued, were interrupted or never started are listed, never fatal; a figure the sweep
cannot support is skipped with a note. Exits 2 when ``SWEEP_DIR`` does not exist or holds neither a ``multirun.yaml`` that
expands nor a run directory.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import pandas as pd

from ncdepth.cli.errors import one_line_os_error
from ncdepth.report import collect_sweep, runs_table, save_figures, tidy_table, write_tables
from ncdepth.report.bound import (
    BOUND_FIGURE,
    BOUND_FILE,
    RESULT_COLUMNS,
    bound_figure,
    bound_table,
    is_bound_sweep,
)
from ncdepth.report.collect import Sweep
from ncdepth.report.kernels import write_kernel_report
from ncdepth.report.style import NothingToPlot, save_figure
from ncdepth.report.tables import TABLE_FORMATS, parse_formats, write_runs
from ncdepth.report.tokens import write_token_report
from ncdepth.report.ufm import write_ufm_report
from ncdepth.rundir import KERNELS, LM, UFM

DEFAULT_OUT_SUBDIR = "report"
FIGURES_SUBDIR = "figures"


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, with a bad argument told in one ``ncdepth-report: error: ...`` line and exit 2 (the
    error contract of every command), pointing to ``--help`` instead of printing the usage first."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (``--help`` lists them)."""
    parser = OneLineArgumentParser(prog="ncdepth-report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (or a single run directory)")
    parser.add_argument(
        "--out", type=Path, default=None, help=f"output directory (default: SWEEP_DIR/{DEFAULT_OUT_SUBDIR})"
    )
    parser.add_argument(
        "--format",
        type=_formats,
        default=list(TABLE_FORMATS),
        help=f"comma-separated table formats among {', '.join(TABLE_FORMATS)} (default: all)",
    )
    parser.add_argument(
        "--bound-alpha",
        type=_positive,
        default=None,
        help="alpha of the generalization bound (default: the alpha minimising it at each p)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the report; returns the exit status (0, or 2 for a missing or empty sweep directory or
    an output directory that cannot be written, said in one line; argparse exits 2 for a bad
    ``--format``): whatever the jobs' states, the report is written."""
    args = parse_args(argv)
    out = args.out if args.out is not None else args.sweep_dir / DEFAULT_OUT_SUBDIR
    try:
        return _report(args, out)
    except OSError as error:  # --out read-only, under /proc, below a file; a full disk
        print(f"ncdepth-report: error: {one_line_os_error(error)} (choose another --out)", file=sys.stderr)
        return 2


def _report(args: argparse.Namespace, out: Path) -> int:
    """Write the report of ``args.sweep_dir`` into ``out`` (:func:`main`)."""
    try:
        sweep = collect_sweep(args.sweep_dir)
    except (FileNotFoundError, ValueError) as error:
        print(f"ncdepth-report: error: {error}", file=sys.stderr)
        return 2
    runs = runs_table(sweep)
    for note in sweep.notes:
        print(f"note: {note}")
    print(f"app: {sweep.app}")
    print(sweep.counts())
    for run in sweep.runs:
        print(f"  {sweep.describe(run)}")
    if sweep.app == KERNELS:
        written = [*write_kernel_report(sweep, out), write_runs(runs, out)]
    elif sweep.app == UFM:
        written = [*write_ufm_report(sweep, out), write_runs(runs, out)]
        print(written[1].read_text(), end="")  # the UFM summary
    elif sweep.app == LM:
        written = [*write_tables(tidy_table(sweep), runs, out, args.format), *write_token_report(sweep, out)]
    else:
        written = training_report(sweep, runs, out, args.format, args.bound_alpha)
    for path in written:
        print(f"wrote {path}")
    return 0


def training_report(
    sweep: Sweep, runs: pd.DataFrame, out: Path, formats: Sequence[str], alpha: float | None
) -> list[Path]:
    """Write the tables and figures of an ``ncdepth-train`` sweep (module docstring) into ``out``;
    returns the written paths."""
    table = tidy_table(sweep)
    tables = write_tables(table, runs, out, formats)
    print(f"grouping keys (seeds averaged): {sweep.grouping_keys or 'none'}")
    figures, skipped = save_figures(table, runs, sweep.grouping_keys, out / FIGURES_SUBDIR)
    for name, reason in skipped.items():
        print(f"  skipped figure {name}: {reason}")
    if is_bound_sweep(sweep):
        bound_paths = write_bound(sweep, runs, out, alpha)
        tables, figures = [*tables, *bound_paths[:1]], [*figures, *bound_paths[1:]]
    return [*tables, *figures]


def write_bound(sweep: Sweep, runs: pd.DataFrame, out: Path, alpha: float | None) -> list[Path]:
    """Write ``bound.csv`` and the bound figure (PNG, PDF) into ``out``, print the table, and
    return the written paths (none, with a note, when no seed pairs an ``S1`` with an ``S1 ∪ S̃2``
    run)."""
    try:
        table = bound_table(sweep, runs, alpha)
    except NothingToPlot as reason:
        print(f"  skipped the generalization bound: {reason}")
        return []
    written = [out / BOUND_FILE]
    table.to_csv(written[0], index=False)
    written += save_figure(bound_figure(table), out / FIGURES_SUBDIR, BOUND_FIGURE)
    others = [column for column in table.columns if column not in RESULT_COLUMNS]
    shown = ["eps", "p", "pairs", "probability", "bound", "bound_upper", "test_error_mean", "test_error_std"]
    print("generalization bound (ncdepth.theory.bound; delta dropped):")
    print(table[[*others, *shown]].to_string(index=False, float_format="{:.3f}".format))
    return written


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--bound-alpha must be > 0, got {text}")
    return value


def _formats(text: str) -> list[str]:
    try:
        return parse_formats(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


if __name__ == "__main__":
    sys.exit(main())
