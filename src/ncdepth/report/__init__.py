"""Aggregate a Hydra sweep of ``ncdepth-train`` runs into one tidy table and the standard figures.

sweep = collect_sweep("multirun/2026-11-22/07-00-00")
table, runs = tidy_table(sweep), runs_table(sweep)
write_tables(table, runs, "report")
save_figures(table, runs, sweep.grouping_keys, "report/figures")
draw_figure("multirun/2026-11-22/07-00-00", "effective_depth_by_depth", "gallery")  # one figure
"""

from ncdepth.report.collect import Run, Sweep, collect_sweep, find_run_dirs, load_run, parse_overrides
from ncdepth.report.draw import draw_figure, figure_names
from ncdepth.report.figures import save_figures
from ncdepth.report.style import NothingToPlot
from ncdepth.report.tables import runs_table, tidy_table, write_tables

__all__ = [
    "NothingToPlot",
    "Run",
    "Sweep",
    "collect_sweep",
    "draw_figure",
    "figure_names",
    "find_run_dirs",
    "load_run",
    "parse_overrides",
    "runs_table",
    "save_figures",
    "tidy_table",
    "write_tables",
]
