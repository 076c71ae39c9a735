"""``ncdepth-report``: turn a sweep directory into one tidy table, a table of runs and the figures.

    ncdepth-report multirun/2026-11-22/07-00-00                  # writes .../report/
    ncdepth-report SWEEP_DIR --out results/depth_sweep --format parquet

Writes ``report.csv`` and/or ``report.parquet`` (every measured number of every run, the swept
values as columns), ``runs.csv`` (one row per run: status, swept values, effective depths, final
accuracies) and ``figures/*.png|pdf``. Failed and unfinished runs are listed, never fatal; a
figure the sweep cannot support is skipped with a note. Exits 2 when ``SWEEP_DIR`` does not exist
or holds no run directory.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ncdepth.report import collect_sweep, runs_table, save_figures, tidy_table, write_tables
from ncdepth.report.collect import STATUSES
from ncdepth.report.tables import TABLE_FORMATS, parse_formats

DEFAULT_OUT_SUBDIR = "report"
FIGURES_SUBDIR = "figures"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (``--help`` lists them)."""
    parser = argparse.ArgumentParser(prog="ncdepth-report", description=__doc__.splitlines()[0])
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
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the report; returns the exit status (0, or 2 for a missing or empty sweep directory;
    argparse exits 2 for a bad ``--format``)."""
    args = parse_args(argv)
    try:
        sweep = collect_sweep(args.sweep_dir)
    except (FileNotFoundError, ValueError) as error:
        print(f"ncdepth-report: error: {error}", file=sys.stderr)
        return 2
    out = args.out if args.out is not None else args.sweep_dir / DEFAULT_OUT_SUBDIR
    table, runs = tidy_table(sweep), runs_table(sweep)
    tables = write_tables(table, runs, out, args.format)
    counts = runs["status"].value_counts()
    print(
        f"{len(runs)} runs in {sweep.directory}: "
        + ", ".join(f"{counts.get(status, 0)} {status}" for status in STATUSES)
    )
    for run in sweep.runs:
        if run.status != "finished":
            print(f"  {run.status:<10} {run.name}: {run.reason}")
    print(f"grouping keys (seeds averaged): {sweep.grouping_keys or 'none'}")
    figures, skipped = save_figures(table, runs, sweep.grouping_keys, out / FIGURES_SUBDIR)
    for name, reason in skipped.items():
        print(f"  skipped figure {name}: {reason}")
    for path in [*tables, *figures]:
        print(f"wrote {path}")
    return 0


def _formats(text: str) -> list[str]:
    try:
        return parse_formats(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


if __name__ == "__main__":
    sys.exit(main())
