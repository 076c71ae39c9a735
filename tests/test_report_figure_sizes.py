"""Every figure ``ncdepth-report`` draws fits a two-column page: at most 7.2 x 9 in (one panel 3.5 in
wide), panels wrapped into a grid, no text below 7 pt, no "0" tick on a log axis (zero sits at a
marked floor), the ``y = L`` line on the effective depth against depth, and the seeds counted in
the legend. Drawn from fabricated sweeps and tables (``test_report.py``'s run directories), saved
as ``ncdepth-report`` saves them, and read back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imread
from matplotlib.text import Text

from ncdepth.report import collect_sweep, runs_table, tidy_table
from ncdepth.report.bound import RESULT_COLUMNS, bound_figure
from ncdepth.report.figures import head_geometry, minority_collapse, training_figures
from ncdepth.report.kernels import kernel_figures
from ncdepth.report.style import (
    DPI,
    FLOOR_COLOUR,
    MAX_COLUMNS,
    MAX_HEIGHT,
    MIN_FONT,
    PAGE_WIDTH,
    PANEL_WIDTH,
    grid_shape,
    save_figure,
)
from ncdepth.report.ufm import distance_figure
from test_report import head_table, minority_table, sweep, write_run  # noqa: F401  (sweep: a fixture)

DEPTH_SWEEP = (2, 4, 6, 8, 12)
"""Five depths, three seeds: the long row of panels that must wrap."""


@pytest.fixture
def depth_sweep(tmp_path: Path) -> Path:
    """A finished sweep over :data:`DEPTH_SWEEP` x 3 seeds, no label noise (its deepest layers reach an
    NCC train error of 0: the floor of the log axes)."""
    sweep_dir = tmp_path / "depth_sweep"
    for job, (depth, seed) in enumerate((depth, seed) for depth in DEPTH_SWEEP for seed in range(3)):
        write_run(sweep_dir / str(job), depth, 0.0, seed, [f"model.depth={depth}", f"seed={seed}"])
    (sweep_dir / "multirun.yaml").write_text("hydra: {}\n")
    return sweep_dir


def drawn(sweep_dir: Path) -> dict[str, Callable[[], Figure]]:
    collected = collect_sweep(sweep_dir)
    return training_figures(tidy_table(collected), runs_table(collected), collected.grouping_keys)


def bound_results() -> pd.DataFrame:
    """A bound table over four ε and three p (one row of four panels before wrapping)."""
    rows = [
        {
            "eps": eps,
            "p": p,
            "alpha": 0.5,
            "m": 100,
            "pairs": 5,
            "events": 2,
            "probability": 0.4,
            "probability_upper": 0.8,
            "slack": 0.1,
            "bound": 0.4 + 2 * p,
            "bound_upper": 0.8 + 2 * p,
            "test_error_mean": 0.2,
            "test_error_std": 0.02,
            "test_error_count": 5,
        }
        for eps in (0.01, 0.05, 0.1, 0.2)
        for p in (0.1, 0.3, 0.5)
    ]
    return pd.DataFrame(rows)[list(RESULT_COLUMNS)]


def kernel_table() -> pd.DataFrame:
    """Kernel NC1 rows of 2 seeds: four balanced (num_classes, n) settings over three d0 (four panels)
    and one class-size sweep."""
    rows = []
    quantities = ("data", "nngp_relu", "ntk_relu", "adaptive", "fcn")
    for num_classes, n in ((2, 32), (2, 64), (4, 32), (4, 64)):
        for d0 in (2, 8, 32):
            for seed in (0, 1):
                run = f"{num_classes}-{n}-{d0}-{seed}"
                for k, quantity in enumerate(quantities):
                    rows.append(
                        (
                            run,
                            n,
                            d0,
                            num_classes,
                            f"{n // 2}/{n // 2}",
                            seed,
                            quantity,
                            "nc1_trace_ratio",
                            0.5 / (k + 1) / d0,
                        )
                    )
    for sizes in ("16/16", "8/24", "4/28"):
        for seed in (0, 1):
            for k, quantity in enumerate(quantities):
                rows.append(
                    (
                        f"{sizes}-{seed}",
                        32,
                        8,
                        2,
                        sizes,
                        seed,
                        quantity,
                        "nc1_trace_ratio",
                        0.3 / (k + 1) + 0.01 * seed,
                    )
                )
    columns = ["run", "n", "d0", "num_classes", "class_sizes", "seed", "quantity", "metric", "value"]
    return pd.DataFrame(rows, columns=columns)


def ufm_inputs() -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Three decays x four depths of UFM runs, one missing f*, every distance reaching 0."""
    table, traces = [], {}
    for i, decay in enumerate((1e-3, 1e-2, 3e-2)):
        for depth in (1, 3, 6, 9):
            run = f"{i}-{depth}"
            missed = (i, depth) == (2, 9)
            table.append(
                {
                    "run": run,
                    "depth": depth,
                    "weight_decay": decay,
                    "feature_decay": decay,
                    "reached_optimum": not missed,
                    "warm_start": depth > 3,
                }
            )
            steps = np.arange(0, 200, 10)
            traces[run] = pd.DataFrame(
                [
                    (step, f"closed_form_{name}", 0.0 if step > 150 and not missed else 1.0 / (1 + step))
                    for step in steps
                    for name in ("WWT", "HTH", "WH")
                ],
                columns=["step", "metric", "value"],
            )
    return pd.DataFrame(table), traces


def every_figure(sweep_dirs: list[Path]) -> dict[str, Figure]:
    """Every figure of the report: the training figures of both sweeps, the bound, both kernel
    figures, the UFM distance figure, the head geometry and minority collapse."""
    figures: dict[str, Figure] = {}
    for sweep_dir in sweep_dirs:
        for name, draw in drawn(sweep_dir).items():
            if name not in ("head_geometry", "minority_collapse"):  # no deep linear head: drawn below
                figures[f"{sweep_dir.name}__{name}"] = draw()
    figures["head_geometry"] = head_geometry(head_table(), ["model.depth_linear"])
    figures["minority_collapse"] = minority_collapse(minority_table(), ["optimizer.weight_decay"])
    figures["generalization_bound"] = bound_figure(bound_results())
    figures.update({name: draw() for name, draw in kernel_figures(kernel_table()).items()})
    figures["ufm_distance"] = distance_figure(*ufm_inputs())
    return figures


def texts(figure: Figure) -> list[Text]:
    return [
        text
        for text in figure.findobj(Text)
        if text.get_visible() and text.get_text().strip() and text.get_figure() is not None
    ]


def outside(figure: Figure) -> list[str]:
    """The figure title, panel titles, axis labels and legend texts of ``figure`` that do not lie
    wholly inside it (cut off at its edge)."""
    FigureCanvasAgg(figure).draw()
    renderer = figure.canvas.get_renderer()
    box = figure.bbox
    candidates = [*(legend.get_texts() for legend in figure.legends)]
    labels = [text for texts in candidates for text in texts]
    suptitle = getattr(figure, "_suptitle", None)
    labels += [suptitle] if suptitle is not None else []
    for ax in figure.axes:
        if ax.get_visible():
            labels += [ax.title, ax.xaxis.label, ax.yaxis.label]
    return [
        text.get_text()
        for text in labels
        if text.get_text()
        and not (
            (extent := text.get_window_extent(renderer)).x0 >= box.x0 - 1
            and extent.x1 <= box.x1 + 1
            and extent.y0 >= box.y0 - 1
            and extent.y1 <= box.y1 + 1
        )
    ]


def log_tick_labels(figure: Figure) -> list[str]:
    """The labels of every tick of every log-scaled axis of ``figure``."""
    labels = []
    for ax in figure.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log":
                for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                    if tick.label1.get_visible():
                        labels.append(tick.label1.get_text())
    return labels


def test_every_report_figure_fits_a_page_with_legible_fonts(
    sweep: tuple[Path, int],  # noqa: F811
    depth_sweep: Path,
    tmp_path: Path,
) -> None:
    figures = every_figure([sweep[0], depth_sweep])
    assert len(figures) == 2 * 5 + 6  # 5 training figures per sweep; head, minority, bound, 2 kernel, UFM
    for name, figure in figures.items():
        save_figure(figure, tmp_path, name)
        width, height = figure.get_size_inches()
        assert width <= PAGE_WIDTH + 1e-9 and height <= MAX_HEIGHT + 1e-9, (name, width, height)
        pixels = imread(tmp_path / f"{name}.png").shape
        assert pixels[1] <= PAGE_WIDTH * DPI + 1 and pixels[0] <= MAX_HEIGHT * DPI + 1, (name, pixels)
        small = [
            (text.get_text(), text.get_fontsize()) for text in texts(figure) if text.get_fontsize() < MIN_FONT
        ]
        assert not small, (name, small)
        assert "0" not in log_tick_labels(figure), name
        assert not outside(figure), (name, outside(figure))
        columns = {
            ax.get_subplotspec().colspan.stop for ax in figure.axes if ax.get_subplotspec() is not None
        }
        assert max(columns) <= MAX_COLUMNS, name
        counted = "per run" if name == "ufm_distance" else "seed"  # UFM jobs: one deterministic run each
        assert any(counted in text.get_text() for legend in figure.legends for text in legend.get_texts()), (
            name
        )


def test_one_panel_is_a_column_wide_and_a_long_row_wraps(depth_sweep: Path) -> None:
    figures = drawn(depth_sweep)
    assert figures["separation_fuzziness"]().get_size_inches()[0] == pytest.approx(PANEL_WIDTH)
    ncc = figures["ncc_train_error_by_depth"]()
    visible = [ax for ax in ncc.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    assert len(visible) == len(DEPTH_SWEEP)
    assert {ax.get_subplotspec().get_geometry()[:2] for ax in visible} == {(2, 3)}  # 5 panels: 3 + 2
    assert [grid_shape(n) for n in (1, 2, 3, 4, 5, 8, 12)] == [
        (1, 1),
        (1, 2),
        (1, 3),
        (2, 2),
        (2, 3),
        (3, 3),
        (4, 3),
    ]
    assert grid_shape(6, columns=2) == (3, 2) and grid_shape(8, columns=4) == (3, 3)


def test_zero_on_a_log_axis_is_a_marked_floor_explained_in_the_legend(
    depth_sweep: Path, tmp_path: Path
) -> None:
    figure = drawn(depth_sweep)["ncc_train_error_by_depth"]()
    save_figure(figure, tmp_path, "ncc")
    ax = figure.axes[0]
    floor = min(min(line.get_ydata()) for line in ax.get_lines() if line.get_marker() == "o")
    assert floor > 0 and ax.yaxis.get_major_formatter()(floor, 0) == ""
    assert any(line.get_color() == FLOOR_COLOUR and line.get_ydata()[0] == floor for line in ax.get_lines())
    legend = [text.get_text() for legend in figure.legends for text in legend.get_texts()]
    assert f"dotted floor: a value of 0 (drawn at {floor:g})" in legend


def test_effective_depth_against_depth_draws_y_equals_l_and_every_seed(depth_sweep: Path) -> None:
    figure = drawn(depth_sweep)["effective_depth_by_depth"]()
    for ax in (ax for ax in figure.axes if ax.get_visible()):
        positions = dict(
            zip(ax.get_xticks(), (float(t.get_text()) for t in ax.get_xticklabels()), strict=True)
        )
        reference = [line for line in ax.get_lines() if line.get_linestyle() == "-."]
        assert len(reference) == 1
        x, y = reference[0].get_data()
        assert [positions[value] for value in x] == list(y) == [float(depth) for depth in DEPTH_SWEEP]
        dots = [line for line in ax.get_lines() if line.get_marker() == "."]
        assert sum(len(line.get_xdata()) for line in dots) == 3 * len(
            DEPTH_SWEEP
        )  # every seed, reached or not
    legend = [text.get_text() for legend in figure.legends for text in legend.get_texts()]
    assert "95 % t-interval of the mean over 3 seeds" in legend and "dots: individual seeds" in legend
    assert "y = L: effective depth = the network's depth" in legend


def test_effective_depth_of_a_sweep_at_one_depth_draws_y_equals_l_across(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "noise_sweep"
    for job, (noise, seed) in enumerate((noise, seed) for noise in (0.0, 0.1, 0.2) for seed in range(2)):
        write_run(sweep_dir / str(job), 6, noise, seed, [f"data.label_noise={noise}", f"seed={seed}"])
    (sweep_dir / "multirun.yaml").write_text("hydra: {}\n")
    figure = drawn(sweep_dir)["effective_depth_by_label_noise"]()
    for ax in (ax for ax in figure.axes if ax.get_visible()):
        (reference,) = [line for line in ax.get_lines() if line.get_linestyle() == "-."]
        assert list(reference.get_ydata()) == [6, 6]
    legend = [text.get_text() for legend in figure.legends for text in legend.get_texts()]
    assert "y = L = 6: effective depth = the network's depth" in legend
