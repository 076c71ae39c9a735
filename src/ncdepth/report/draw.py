"""Draw one named figure of a sweep directory (e.g. for a gallery built from several sweeps).

    from ncdepth.report.draw import draw_figure, figure_names
    figure_names("multirun/noise")       # ['ncc_train_error_by_label_noise', ...]
    draw_figure("multirun/noise", "effective_depth_by_label_noise", "docs/figures")
    # -> [docs/figures/effective_depth_by_label_noise.png, .../effective_depth_by_label_noise.pdf]

A sweep of ``ncdepth-train`` runs has the figures of :mod:`ncdepth.report.figures` (their names
follow the swept keys) and, when it is a bound sweep, ``generalization_bound``
(:mod:`ncdepth.report.bound`); a sweep of ``ncdepth-kernels`` runs has those of
:mod:`ncdepth.report.kernels`. (``ncdepth-ufm`` sweeps: ``ncdepth-report`` writes their figure.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from matplotlib.figure import Figure

from ncdepth.report.bound import BOUND_FIGURE, bound_figure, bound_table, is_bound_sweep
from ncdepth.report.collect import collect_sweep
from ncdepth.report.figures import training_figures
from ncdepth.report.kernels import collect_kernel_runs, kernel_figures
from ncdepth.report.style import save_figure
from ncdepth.report.tables import runs_table, tidy_table
from ncdepth.rundir import KERNELS


def sweep_figures(sweep_dir: str | Path) -> dict[str, Callable[[], Figure]]:
    """``{name: draw}`` for every figure a sweep directory can have (module docstring); ``draw()``
    raises :class:`ncdepth.report.style.NothingToPlot` when the sweep cannot support it."""
    sweep = collect_sweep(sweep_dir)
    if sweep.app == KERNELS:
        return kernel_figures(collect_kernel_runs(sweep))
    runs = runs_table(sweep)
    figures = training_figures(tidy_table(sweep), runs, sweep.grouping_keys)
    if is_bound_sweep(sweep):
        figures[BOUND_FIGURE] = lambda: bound_figure(bound_table(sweep, runs))
    return figures


def figure_names(sweep_dir: str | Path) -> list[str]:
    """The names :func:`draw_figure` accepts for ``sweep_dir``."""
    return list(sweep_figures(sweep_dir))


def draw_figure(sweep_dir: str | Path, name: str, out_dir: str | Path) -> list[Path]:
    """Draw the figure ``name`` of ``sweep_dir`` into ``out_dir`` as ``NAME.png`` and ``NAME.pdf``;
    returns the two paths. Raises ``KeyError`` (listing the names there are) for a name the sweep
    has not, :class:`ncdepth.report.style.NothingToPlot` when it lacks the figure's input."""
    figures = sweep_figures(sweep_dir)
    if name not in figures:
        raise KeyError(f"{sweep_dir} has no figure {name!r}; its figures: {', '.join(figures)}")
    return save_figure(figures[name](), out_dir, name)
