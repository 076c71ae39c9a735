"""``ncdepth-report``: a fabricated 2x2 sweep (depth x label noise, 2 seeds) with two failed runs and
one interrupted run becomes one tidy table, a runs table and the standard figures. Its run
directories are older runs (no ``status.json``, no usable ``multirun.yaml``), classified from their
files and logs; sweeps that record ``status.json`` are in ``test_sweep_accounting.py``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from ncdepth.cli.report import main
from ncdepth.report import collect_sweep, draw_figure, parse_overrides, runs_table, tidy_table
from ncdepth.report.figures import head_geometry, minority_collapse, training_figures
from ncdepth.report.style import (
    FLOOR_MARGIN,
    THRESHOLD_COLOUR,
    NothingToPlot,
    seed_mean,
    value_axis,
    zero_floor,
)
from ncdepth.rundir import log_error
from ncdepth.training.results import ncc_train_error_figure

DEPTHS = (2, 4)
NOISES = (0.0, 0.2)
SEEDS = (0, 1)
EPOCHS = (0, 5, 10)
SPLITS = ("train", "test")
EPS = (0.01, 0.05, 0.1)
INTERRUPTED_JOB = "8"
KILLED_JOB = "9"
FAILED_JOB = "10"
OOM_KILL = "slurmstepd: error: Detected 1 oom_kill event in StepId=1000_9.0."
FIGURES = (
    "ncc_train_error_by_depth_and_label_noise",
    "final_ncc_error_and_cdnv_per_layer",
    "effective_depth_by_depth_and_label_noise",
    "last_layer_collapse",
    "separation_fuzziness",
)
HEAD_FIGURES = ("head_geometry", "minority_collapse")  # skipped: no deep linear head


def ncc_accuracy(layer: int, depth: int, epoch: int, noise: float, seed: int) -> float:
    """A plausible NCC accuracy: rises with depth in the network and with training, lower with
    label noise, a little seed jitter."""
    progress = (layer / depth) * (epoch / EPOCHS[-1])
    return float(np.clip(0.2 + 0.8 * progress - 0.3 * noise * progress + 0.01 * seed, 0.0, 1.0))


def layer_metrics(layer: int, depth: int, epoch: int, noise: float, seed: int) -> dict[str, float]:
    """Every metric of one layer; ``nc3``/``nc4`` only at the last layer (NaN elsewhere)."""
    acc = ncc_accuracy(layer, depth, epoch, noise, seed)
    collapse = 1.0 - acc + 0.05
    last = layer == depth
    return {
        "nc1": 10 * collapse,
        "nc1_trace_ratio": collapse,
        "cdnv": collapse / 2,
        "ncc_acc": acc,
        "nc2_equinorm": collapse / 3,
        "nc2_equiangle": collapse / 4,
        "nc2_maxangle": collapse / 5,
        "nc2_etf": collapse,
        "nc3": collapse if last else float("nan"),
        "nc4": collapse / 10 if last else float("nan"),
        "fuzziness": 20 * collapse,
    }


def write_run(
    run_dir: Path,
    depth: int,
    noise: float,
    seed: int,
    overrides: list[str],
    epochs: tuple[int, ...] = EPOCHS,
    summary: bool = True,
    metrics: bool = True,
) -> int:
    """A run directory as ``ncdepth-train`` leaves it; returns the number of metric rows."""
    (run_dir / ".hydra").mkdir(parents=True)
    config = {
        "model": {"depth": depth, "width": 64},
        "data": {"label_noise": noise},
        "optimizer": {"weight_decay": 5e-4},
        "seed": seed,
    }
    OmegaConf.save(OmegaConf.create(config), run_dir / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), run_dir / ".hydra" / "overrides.yaml")
    (run_dir / "checkpoints").mkdir()
    (run_dir / "train.log").write_text("[2026-11-22 07:00:00,000][ncdepth][INFO] - epoch 0\n")
    if not metrics:
        return 0
    rows = [
        (epoch, split, f"layer{layer}", metric, value)
        for epoch in epochs
        for split in SPLITS
        for layer in range(1, depth + 1)
        for metric, value in layer_metrics(layer, depth, epoch, noise, seed).items()
    ]
    pd.DataFrame(rows, columns=["epoch", "split", "layer", "metric", "value"]).to_csv(
        run_dir / "metrics.csv", index=False
    )
    if summary:
        errors = [1 - ncc_accuracy(layer, depth, epochs[-1], noise, seed) for layer in range(1, depth + 1)]
        effective = {str(eps): next((i + 1 for i, e in enumerate(errors) if e <= eps), None) for eps in EPS}
        content = {
            "effective_depth": effective,
            "accuracy": {"train": 1.0 - noise, "test": 0.9},
            "separation_law": {"train": {"slope": -0.1 * depth, "r2": 0.9 + noise / 10}},
        }
        (run_dir / "summary.json").write_text(json.dumps(content))
    return len(rows)


@pytest.fixture
def sweep(tmp_path: Path) -> tuple[Path, int]:
    """A multirun directory: jobs 0-7 the finished 2x2x2 grid, job 8 interrupted (no
    summary.json, no live owner), job 9 killed by Slurm (metrics, but its submitit log ends in an OOM kill),
    job 10 failed (no metrics.csv, a log ending in a traceback). Returns the directory and the
    number of metric rows over all runs."""
    sweep_dir = tmp_path / "multirun" / "2026-11-22" / "07-00-00"
    grid = [(depth, noise, seed) for depth in DEPTHS for noise in NOISES for seed in SEEDS]
    total = 0
    for job, (depth, noise, seed) in enumerate(grid):
        overrides = [f"model.depth={depth}", f"data.label_noise={noise}", f"seed={seed}"]
        total += write_run(sweep_dir / str(job), depth, noise, seed, overrides)
    total += write_run(
        sweep_dir / INTERRUPTED_JOB,
        4,
        0.2,
        2,
        ["model.depth=4", "data.label_noise=0.2", "seed=2"],
        epochs=(0, 5),
        summary=False,
    )
    killed = sweep_dir / KILLED_JOB
    total += write_run(killed, 2, 0.0, 4, ["model.depth=2", "seed=4"], epochs=(0,), summary=False)
    OmegaConf.save(OmegaConf.create({"hydra": {"job": {"id": "1000_9"}}}), killed / ".hydra" / "hydra.yaml")
    submitit_logs = sweep_dir / ".submitit" / "1000_9"
    submitit_logs.mkdir(parents=True)
    (submitit_logs / "1000_9_0_log.err").write_text(f"submitit INFO - Starting\n{OOM_KILL}\n")
    failed = sweep_dir / FAILED_JOB
    write_run(failed, 4, 0.0, 3, ["model.depth=4", "seed=3"], metrics=False)
    (failed / "train.log").write_text(
        "[2026-11-22 07:00:00,000][ncdepth][INFO] - starting\n"
        "Traceback (most recent call last):\n"
        '  File "train.py", line 1, in <module>\n'
        "torch.OutOfMemoryError: CUDA out of memory.\n"
    )
    (sweep_dir / "multirun.yaml").write_text("hydra: {}\n")
    return sweep_dir, total


def test_report_table_has_swept_columns_and_every_row(sweep: tuple[Path, int]) -> None:
    sweep_dir, total_rows = sweep
    collected = collect_sweep(sweep_dir)
    table = tidy_table(collected)
    assert list(table.columns) == [
        "model.depth",
        "data.label_noise",
        "seed",
        "run",
        "epoch",
        "split",
        "layer",
        "layer_index",
        "metric",
        "value",
    ]
    assert len(table) == total_rows
    assert collected.grouping_keys == ["model.depth", "data.label_noise"]
    one = table[(table["run"] == "5") & (table["layer"] == "layer3")]
    assert set(one["model.depth"]) == {4} and set(one["data.label_noise"]) == {0.0}
    assert set(one["seed"]) == {1} and set(one["layer_index"]) == {3}
    value = one[(one["epoch"] == 5) & (one["split"] == "train") & (one["metric"] == "ncc_acc")]["value"]
    assert value.item() == pytest.approx(ncc_accuracy(3, 4, 5, 0.0, 1))


def test_runs_table_lists_failed_and_interrupted_runs_in_natural_order(sweep: tuple[Path, int]) -> None:
    sweep_dir, _ = sweep
    runs = runs_table(collect_sweep(sweep_dir)).set_index("run")
    assert list(runs.index) == [*map(str, range(10)), FAILED_JOB]
    assert runs.loc[FAILED_JOB, "status"] == "failed"
    assert runs.loc[FAILED_JOB, "reason"] == (
        "no metrics.csv; train.log: torch.OutOfMemoryError: CUDA out of memory."
    )
    assert runs.loc[FAILED_JOB, "data.label_noise"] == 0.0  # not overridden: read from its config
    assert runs.loc[KILLED_JOB, "status"] == "failed"
    assert runs.loc[KILLED_JOB, "reason"] == f"1000_9_0_log.err: {OOM_KILL}"
    assert runs.loc[INTERRUPTED_JOB, "status"] == "interrupted"
    assert runs.loc[INTERRUPTED_JOB, "reason"] == (
        "no summary.json; no live process holds .lock (killed?); last measured epoch: 5; no checkpoint"
    )
    assert runs["job"].isna().all()  # no hydra.yaml names their job numbers
    assert (runs.drop(index=[FAILED_JOB, KILLED_JOB, INTERRUPTED_JOB])["status"] == "finished").all()
    # depth 2, no noise, seed 0: NCC train error at the final epoch is 0.6 at layer 1, 0 at layer 2.
    assert runs.loc["0", "effective_depth@0.01"] == 2
    assert runs.loc["0", "final_acc_train"] == 1.0
    assert runs.loc["6", "final_acc_train"] == pytest.approx(0.8)
    assert runs.loc["0", "separation_slope"] == pytest.approx(-0.1 * DEPTHS[0])


def test_cli_writes_tables_and_every_figure(sweep: tuple[Path, int], tmp_path: Path, capsys) -> None:
    sweep_dir, total_rows = sweep
    out = tmp_path / "report"
    assert main([str(sweep_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "note: cannot expand the jobs of" in printed  # multirun.yaml lacks what Hydra writes
    assert (
        "11 jobs in" in printed
        and "8 finished, 2 failed, 0 running, 0 requeued, 1 interrupted, 0 not started" in printed
    )
    assert f"  failed      {FAILED_JOB}  " in printed and "CUDA out of memory" in printed
    assert (
        f"  interrupted {INTERRUPTED_JOB}   model.depth=4 data.label_noise=0.2 seed=2: no summary.json"
        in (printed)
    )
    csv = pd.read_csv(out / "report.csv", dtype={"run": str})
    parquet = pd.read_parquet(out / "report.parquet")
    assert len(csv) == len(parquet) == total_rows
    pd.testing.assert_frame_equal(csv, parquet, check_dtype=False)
    runs = pd.read_csv(out / "runs.csv")
    not_finished = {FAILED_JOB, KILLED_JOB, INTERRUPTED_JOB}
    assert set(runs.loc[runs["status"] != "finished", "run"].astype(str)) == not_finished
    for name in FIGURES:
        for suffix in (".png", ".pdf"):
            assert (out / "figures" / f"{name}{suffix}").stat().st_size > 1000
    assert "skipped figure head_geometry: no run logged geom_wwt" in printed
    assert "skipped figure minority_collapse: no run logged per-class norms" in printed


def test_figures_needing_a_swept_key_are_skipped_with_a_note(tmp_path: Path, capsys) -> None:
    write_run(tmp_path / "sweep" / "0", 3, 0.0, 0, ["seed=0"])
    write_run(tmp_path / "sweep" / "1", 3, 0.0, 1, ["seed=1"])
    assert main([str(tmp_path / "sweep"), "--format", "csv"]) == 0
    printed = capsys.readouterr().out
    assert "skipped figure effective_depth: the sweep varies no numeric key (besides the seed)" in printed
    out = tmp_path / "sweep" / "report"
    assert (out / "report.csv").exists() and not (out / "report.parquet").exists()
    assert (out / "figures" / "last_layer_collapse.pdf").exists()


def test_seed_mean_is_mean_sample_std_and_t_interval_over_replicates() -> None:
    frame = pd.DataFrame({"depth": [2, 2, 2, 4], "value": [1.0, 2.0, 6.0, 5.0]})
    stats = seed_mean(frame, ["depth"]).set_index("depth")
    std = np.std([1, 2, 6], ddof=1)
    assert stats.loc[2, "mean"] == 3.0 and stats.loc[2, "std"] == pytest.approx(std)
    assert stats.loc[2, "ci95"] == pytest.approx(4.302653 * std / np.sqrt(3))  # t(0.975, 2 dof)
    assert stats.loc[4, "count"] == 1 and np.isnan(stats.loc[4, "std"]) and np.isnan(stats.loc[4, "ci95"])


def test_overrides_are_typed_by_hydras_grammar() -> None:
    parsed = parse_overrides(["model.depth=4", "data.label_noise=0.2", "+experiment=x", "nc.eps=[0.1,0.2]"])
    assert parsed == {"model.depth": 4, "data.label_noise": 0.2, "experiment": "x", "nc.eps": "[0.1,0.2]"}


def test_log_error_reads_only_a_log_that_ends_in_an_error(tmp_path: Path) -> None:
    (tmp_path / "train.log").write_text("Traceback (most recent call last):\nValueError: x\nretrying\n")
    assert log_error(tmp_path) is None
    (tmp_path / "train.log").write_text("[2026-11-22 07:00:00,000][__main__][ERROR] - diverged\n")
    assert log_error(tmp_path) == "train.log: [2026-11-22 07:00:00,000][__main__][ERROR] - diverged"


# -- the figures, read through their matplotlib objects ------------------------------------------


@pytest.fixture
def figures(sweep: tuple[Path, int]) -> dict[str, Callable[[], Figure]]:
    collected = collect_sweep(sweep[0])
    return training_figures(tidy_table(collected), runs_table(collected), collected.grouping_keys)


def panels(figure: Figure) -> list[Axes]:
    """The visible data panels of ``figure`` (no colourbar)."""
    return [ax for ax in figure.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def thresholds(ax: Axes) -> list[float]:
    return sorted(line.get_ydata()[0] for line in ax.get_lines() if line.get_color() == THRESHOLD_COLOUR)


def legend_texts(figure: Figure) -> list[str]:
    return [text.get_text() for legend in figure.legends for text in legend.get_texts()]


def integer_ticks(ticks: np.ndarray) -> bool:
    return all(float(tick).is_integer() for tick in ticks)


def test_figure_names_follow_the_swept_keys(figures: dict[str, Callable[[], Figure]]) -> None:
    assert list(figures) == [*FIGURES, *HEAD_FIGURES]
    with pytest.raises(NothingToPlot, match="no run logged geom_wwt"):
        figures["head_geometry"]()
    with pytest.raises(NothingToPlot, match="no run logged per-class norms"):
        figures["minority_collapse"]()


def test_separation_fuzziness_is_on_a_log_axis_with_the_fits(
    figures: dict[str, Callable[[], Figure]],
) -> None:
    """He & Su's figure: fuzziness vs layer on a log axis, each curve labelled with the mean slope and R^2
    of its runs' ``separation_law`` (here slope -0.1 depth, R^2 0.9 + noise/10)."""
    figure = figures["separation_fuzziness"]()
    (ax,) = panels(figure)
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "layer"
    labels = legend_texts(figure)
    for depth in DEPTHS:
        for noise in NOISES:
            assert any(f"slope {-0.1 * depth:.3g}, R² {0.9 + noise / 10:.3f}" in label for label in labels)


def test_ncc_train_error_is_on_a_log_axis_with_the_thresholds(
    figures: dict[str, Callable[[], Figure]],
) -> None:
    figure = figures["ncc_train_error_by_depth_and_label_noise"]()
    titles = [ax.get_title() for ax in panels(figure)]
    assert titles == [f"label noise p = {noise:g}, depth L = {depth}" for noise in NOISES for depth in DEPTHS]
    for ax in panels(figure):
        assert ax.get_yscale() == "log" and thresholds(ax) == list(EPS)
        assert integer_ticks(ax.get_xticks())
    ax = panels(figure)[0]  # depth 2 without noise: layer 2 reaches an error of 0, drawn at the floor
    floor = ax.get_ylim()[0] * FLOOR_MARGIN
    assert (
        np.log10(floor).is_integer() and floor < min(EPS) and ax.yaxis.get_major_formatter()(floor, 0) == ""
    )  # no fake "0" tick on a log axis: a dotted line marks the floor, the legend says what it is
    assert min(min(line.get_ydata()) for line in ax.get_lines()) == pytest.approx(floor)
    colourbar = next(ax for ax in figure.axes if ax.get_label() == "<colorbar>")
    assert list(colourbar.get_yticks()) == [1, 2, 3, 4]
    assert legend_texts(figure) == [
        "ε: effective-depth thresholds",
        "line: mean, band: min–max over 2–3 seeds",
        "dotted floor: a value of 0 (drawn at 0.001)",
    ]
    assert figure.get_suptitle()


def test_effective_depth_has_integer_ticks_a_labelled_interval_and_notes_in_titles(
    figures: dict[str, Callable[[], Figure]],
) -> None:
    figure = figures["effective_depth_by_depth_and_label_noise"]()
    axes = panels(figure)
    assert len(axes) == 2 * len(EPS)  # one row per swept key, one column per ε
    for ax in axes:
        assert integer_ticks(ax.get_yticks()) and not ax.texts  # no note inside the axes
    assert [ax.get_xlabel() for ax in axes[:: len(EPS)]] == ["depth L", "label noise p"]
    assert [tick.get_text() for tick in axes[0].get_xticklabels()] == ["2", "4"]
    assert [tick.get_text() for tick in axes[-1].get_xticklabels()] == ["0", "0.2"]
    # eps = 0.01: every run with label noise 0.2 never reaches it (a train error of at least 0.06)
    assert axes[0].get_title() == "ε = 0.01\n4 of 8 runs never reach ε (left out)"
    assert legend_texts(figure) == [
        "label noise p = 0",
        "label noise p = 0.2",
        "depth L = 2",
        "depth L = 4",
        "95 % t-interval of the mean over 2 seeds",
        "dots: individual seeds",
        "y = L: effective depth = the network's depth",
    ]


def test_last_layer_collapse_is_logarithmic_with_one_entry_per_swept_value(
    figures: dict[str, Callable[[], Figure]],
) -> None:
    figure = figures["last_layer_collapse"]()
    assert [ax.get_title() for ax in panels(figure)] == ["NC1", "NC2 (distance to the ETF)", "NC3", "NC4"]
    assert all(ax.get_yscale() == "log" for ax in panels(figure))
    assert legend_texts(figure) == [
        *(f"depth L = {depth}, label noise p = {noise:g}" for depth in DEPTHS for noise in NOISES),
        "line: mean, band: min–max over 2–3 seeds",
    ]


def minority_table() -> pd.DataFrame:
    """Two finished imbalanced runs per weight decay (seeds 0, 1) with three classes, the last a
    minority: per-class norm ratios at the classifier's input, measured and predicted."""
    rows = []
    for decay in (1e-4, 1e-3):
        for seed in (0, 1):
            for k, (measured, predicted) in enumerate(((1.0, 1.0), (1.0, 1.0), (0.5 + 0.1 * seed, 0.25))):
                for norm in ("w", "h"):
                    for metric, value in (
                        (f"{norm}_norm_ratio@{k}", measured),
                        (f"{norm}_norm_ratio_pred@{k}", predicted),
                    ):
                        rows.append((decay, f"{decay}-{seed}", 10, "train", "linear2", 2, metric, value))
    columns = ["optimizer.weight_decay", "run", "epoch", "split", "layer", "layer_index", "metric", "value"]
    return pd.DataFrame(rows, columns=columns)


def head_table() -> pd.DataFrame:
    """Two runs per head depth (1 and 3 maps; seeds 0, 1), each head layer's three distances to the
    predicted frame at epochs 0 and 10 on the train split, the backbone's output first."""
    rows = []
    for depth_linear in (1, 3):
        for seed in (0, 1):
            for place in range(depth_linear + 1):
                for metric in ("geom_wwt", "geom_hth", "geom_wh"):
                    for epoch, value in ((0, 1.0), (10, 0.01 * (place + 1) + 0.001 * seed)):
                        layer = "layer2" if place == 0 else f"linear{place}"
                        run = f"{depth_linear}-{seed}"
                        rows.append((depth_linear, run, epoch, "train", layer, 2 + place, metric, value))
    columns = ["model.depth_linear", "run", "epoch", "split", "layer", "layer_index", "metric", "value"]
    return pd.DataFrame(rows, columns=columns)


def test_head_geometry_draws_each_distance_of_each_head_layer_per_head_depth() -> None:
    figure = head_geometry(head_table(), ["model.depth_linear"])
    axes = panels(figure)
    assert [ax.get_title() for ax in axes] == [
        f"{name}, linear head depth = {depth}" for depth in (1, 3) for name in ("W Wᵀ", "H̄ᵀ H̄", "W H̄")
    ]
    assert [len(ax.get_lines()) for ax in axes] == [2, 2, 2, 4, 4, 4]  # one line per head layer
    deepest = axes[3].get_lines()[-1]  # head depth 3, its last layer: the seed mean at epoch 10
    assert list(deepest.get_xdata()) == [0, 10]
    assert list(deepest.get_ydata()) == pytest.approx([1.0, 0.0405])
    assert all(ax.get_yscale() == "log" for ax in axes)
    with pytest.raises(NothingToPlot, match="no run logged geom_wwt"):
        head_geometry(head_table().assign(metric="nc1"), ["model.depth_linear"])


def test_minority_collapse_sets_every_class_beside_the_prediction() -> None:
    figure = minority_collapse(minority_table(), ["optimizer.weight_decay"])
    classifier, means = panels(figure)
    assert [classifier.get_title(), means.get_title()] == ["classifier rows ‖w_k‖", "class means ‖h̄_k‖"]
    assert [tick.get_text() for tick in classifier.get_xticklabels()] == ["0", "1", "2"]
    measured = [line for line in classifier.get_lines() if line.get_marker() == "o"]
    predicted = [line for line in classifier.get_lines() if line.get_marker() == "D"]
    assert len(measured) == len(predicted) == 2  # one of each per weight decay
    assert list(measured[0].get_ydata()) == pytest.approx([1.0, 1.0, 0.55])  # the mean over seeds
    assert list(predicted[0].get_ydata()) == [1.0, 1.0, 0.25] and predicted[0].get_linestyle() == "--"
    assert legend_texts(figure) == [
        "weight decay = 0.0001",
        "weight decay = 0.001",
        "measured (mean)",
        "95 % t-interval of the mean over 2 seeds",
        "dots: individual seeds",
        "UFM optimum (closed_form)",
    ]
    balanced = minority_table().assign(metric="nc1")
    with pytest.raises(NothingToPlot, match="no run logged per-class norms"):
        minority_collapse(balanced, ["optimizer.weight_decay"])


def test_zero_floor_is_a_power_of_ten_below_every_positive_value() -> None:
    assert zero_floor([0.0, 0.004, 0.1]) == 1e-3
    assert zero_floor([0.0, 0.0011]) == 1e-4
    assert zero_floor([0.5, np.nan]) is None


def test_value_axis_spaces_uneven_values_evenly() -> None:
    ax = Figure().subplots()
    assert value_axis(ax, [0.0, 5e-3, 5e-4, 0.0]) == {0.0: 0.0, 5e-4: 1.0, 5e-3: 2.0}
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["0", "0.0005", "0.005"]
    assert value_axis(ax, [2, 6, 4]) == {2: 2.0, 4: 4.0, 6: 6.0}


def test_draw_figure_writes_one_named_figure(sweep: tuple[Path, int], tmp_path: Path) -> None:
    paths = draw_figure(sweep[0], "last_layer_collapse", tmp_path / "gallery")
    assert paths == [
        tmp_path / "gallery" / "last_layer_collapse.png",
        tmp_path / "gallery" / "last_layer_collapse.pdf",
    ]
    assert all(path.stat().st_size > 1000 for path in paths)
    with pytest.raises(KeyError, match="its figures: ncc_train_error_by_depth_and_label_noise, "):
        draw_figure(sweep[0], "ncc_train_accuracy_by_depth", tmp_path / "gallery")


def test_run_figure_names_the_run_and_draws_the_thresholds(tmp_path: Path) -> None:
    write_run(tmp_path / "run", 3, 0.2, 1, [])
    config = {
        "model": {"_target_": "ncdepth.models.MLP", "depth": 3, "width": 64, "depth_linear": 0},
        "data": {"dataset": "digits", "label_noise": 0.2},
        "seed": 1,
    }
    figure = ncc_train_error_figure(pd.read_csv(tmp_path / "run" / "metrics.csv"), EPS, config)
    (ax,) = panels(figure)
    assert (
        figure.get_suptitle()
        == "NCC train error per layer\nMLP, depth 3, width 64, digits, label noise 0.2, seed 1"
    )
    assert ax.get_yscale() == "log" and thresholds(ax) == list(EPS) and integer_ticks(ax.get_xticks())
    assert len(ax.get_lines()) == 3 + len(EPS)  # one line per layer
