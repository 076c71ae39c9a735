"""Write ``docs/reproductions.md`` and its figures from the sweeps of ``scripts/reproduce.sh``.

    python scripts/write_reproductions.py [OUT_DIR] [--docs DOCS_DIR]   # defaults: multirun/repro, docs

Every number on the page is computed here from the sweeps' report directories (``OUT_DIR/<sweep>/report``,
written by ``ncdepth-report``) and run directories; every figure is a copy of a report figure (PNG and PDF)
into ``DOCS_DIR/reproductions/``, its size in inches given beside it and checked against the page
(``ncdepth.report.style``: at most 7.2 x 9 in). Nothing is typed by hand but the claims and the commands: each section
states a paper's claim, applies a criterion fixed in this file before looking at the data, and says
"reproduced" or "not reproduced at this scale" with the numbers either way. A sweep that is missing or has
jobs that did not finish is said so on the page.

Spreads: mean and a 95 % Student-t interval over seeds (``mean [low, high]``); one seed gives no interval.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ncdepth.report.style import MAX_HEIGHT, PAGE_WIDTH, fits_page, image_size_inches

REPO = Path(__file__).resolve().parents[1]
PAGE = "reproductions.md"
FIGURES = "reproductions"
NOISE, DEPTH, EXTRA_NOISE = "data.label_noise", "model.depth", "data.extra_label_noise"
CONFIDENCE = 0.95
COLUMN_NAMES = {NOISE: "label noise p", DEPTH: "depth L"}
RUN_LISTS = ("runs.csv", "kernels_runs.csv", "ufm_report.csv")
"""The job lists of ``ncdepth-report``: training, kernels and UFM sweeps."""


@dataclass(frozen=True)
class Sweep:
    """One sweep of the gallery: its directory, its report directory and its runs table."""

    name: str
    path: Path

    @property
    def report(self) -> Path:
        return self.path / "report"

    def exists(self) -> bool:
        return self.report.is_dir()

    def table(self, name: str) -> pd.DataFrame:
        return pd.read_csv(self.report / name)

    def runs(self) -> pd.DataFrame:
        """One row per job with ``run, status, reason``: the training, kernels or UFM report's list."""
        for name in RUN_LISTS:
            if (self.report / name).exists():
                return self.table(name)
        raise FileNotFoundError(f"{self.report} holds none of {', '.join(RUN_LISTS)}")

    def finished(self) -> pd.DataFrame:
        runs = self.runs()
        return runs[runs["status"] == "finished"]

    def status_line(self) -> str:
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


# -- formatting -------------------------------------------------------------------------------------


def interval(values: Iterable[float], digits: int = 2) -> str:
    """``mean [low, high]``: the mean and its 95 % Student-t interval (``mean`` alone for one value)."""
    array = np.asarray([value for value in values if value == value], dtype=float)
    if array.size == 0:
        return "–"
    mean = array.mean()
    if array.size == 1:
        return f"{mean:.{digits}f}"
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, array.size - 1) * array.std(ddof=1) / math.sqrt(array.size)
    return f"{mean:.{digits}f} [{mean - half:.{digits}f}, {mean + half:.{digits}f}]"


def markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a GitHub markdown table, every cell as its string."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def seeds_per_value(runs: pd.DataFrame, key: str) -> str:
    """``n = 5 seeds per value`` (``n = 2–3 …`` when they differ): the finished runs of each value of ``key``."""
    counts = runs.groupby(key).size()
    if counts.empty:
        return "no finished run"
    low, high = int(counts.min()), int(counts.max())
    return f"n = {low if low == high else f'{low}–{high}'} seed{'s' if high > 1 else ''} per {COLUMN_NAMES.get(key, key)}"


def verdict(holds: bool) -> str:
    return "**reproduced**" if holds else "**not reproduced at this scale**"


def value_label(key: str, value: object) -> str:
    if key == EXTRA_NOISE and (value is None or value != value):
        return "S1 only"
    return f"{value:g}" if isinstance(value, float) else str(value)


# -- figures ----------------------------------------------------------------------------------------


class Gallery:
    """Copies report figures into ``docs/reproductions/`` and links them from the page."""

    def __init__(self, docs: Path) -> None:
        self.docs = docs
        self.directory = docs / FIGURES
        if self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)

    def figure(self, sweep: Sweep, name: str, caption: str) -> str:
        """Copy ``name``'s PNG and PDF from the sweep's report and return the markdown that shows it."""
        source = sweep.report / "figures"
        if not (source / f"{name}.png").exists():
            return f"*(figure `{name}` missing from {sweep.report}/figures: its report skipped it)*"
        for suffix in (".png", ".pdf"):
            shutil.copyfile(source / f"{name}{suffix}", self.directory / f"{sweep.name}__{name}{suffix}")
        stem = f"{FIGURES}/{sweep.name}__{name}"
        width, height = image_size_inches(source / f"{name}.png")
        size = f"{width:.1f} × {height:.1f} in"
        if not fits_page(width, height):
            size += f", **larger than a page ({PAGE_WIDTH:g} × {MAX_HEIGHT:g} in): redraw it with `ncdepth-report`**"
        return f"![{caption}]({stem}.png)\n\n*{caption}* ([PDF]({stem}.pdf), {size})"


# -- Galanti, Galanti & Ben-Shaul (2023) -------------------------------------------------------------


def depth_rank(values: pd.Series, depth: pd.Series) -> pd.Series:
    """Effective depths with "never reached" ranked as ``L + 1``: deeper than any layer of the net."""
    return values.astype("Float64").fillna(depth.astype(float) + 1).astype(float)


def eps_columns(runs: pd.DataFrame) -> list[str]:
    return [column for column in runs.columns if column.startswith("effective_depth@")]


def effective_depth_table(
    runs: pd.DataFrame, key: str, depth: Callable[[pd.DataFrame], pd.Series]
) -> pd.DataFrame:
    """One row per value of ``key``: finished seeds, final accuracies and, per ε, the effective
    depth's mean [95 % CI] over the seeds that reach ε and how many do."""
    rows = []
    for value, group in runs.groupby(key, sort=True):
        row = {COLUMN_NAMES.get(key, key): value_label(key, value), "seeds": len(group)}
        row["train acc"] = interval(group["final_acc_train"], 3)
        row["test acc"] = interval(group["final_acc_test"], 3)
        for column in eps_columns(runs):
            reached = group[column].dropna()
            row[f"d_eff ε={column.split('@')[1]}"] = f"{interval(reached)} ({len(reached)}/{len(group)})"
        rows.append(row)
    return pd.DataFrame(rows)


def monotone_in(runs: pd.DataFrame, key: str, column: str, depths: pd.Series) -> tuple[bool, str]:
    """Galanti et al.'s monotonicity as a rank statistic over runs: Spearman's ρ between ``key`` and
    the effective depth (never reached = L + 1) positive with p < 0.05, and the per-value means of
    that rank never decreasing by more than 0.5 layer."""
    ranked = depth_rank(runs[column], depths)
    rho, p_value = stats.spearmanr(runs[key].astype(float), ranked)
    means = ranked.groupby(runs[key]).mean().sort_index()
    steps_ok = bool((means.diff().dropna() >= -0.5).all())
    holds = bool(rho > 0 and p_value < 0.05 and steps_ok)
    means_text = ", ".join(f"{value_label(key, k)}: {v:.2f}" for k, v in means.items())
    return holds, f"Spearman ρ = {rho:.2f} (p = {p_value:.2g}); mean rank-depth per value: {means_text}"


def galanti_depth(sweep: Sweep, gallery: Gallery) -> str:
    runs = sweep.finished()
    table = effective_depth_table(runs, DEPTH, lambda frame: frame[DEPTH])
    deepest = sorted(runs[DEPTH].unique())[len(runs[DEPTH].unique()) // 2 :]
    lines = []
    for column in eps_columns(runs):
        deep = runs[runs[DEPTH].isin(deepest)]
        means = deep.groupby(DEPTH)[column].mean()  # over the runs that reach ε
        spread = means.max() - means.min()
        reached = bool(deep[column].notna().all())
        lines.append(
            f"- ε = {column.split('@')[1]}: mean effective depth at L = {', '.join(map(str, deepest))}: "
            f"{', '.join('–' if m != m else f'{m:.2f}' for m in means)} (spread {spread:.2f} layers; every run reaches ε: "
            f"{'yes' if reached else 'no'}) — {verdict(reached and spread <= 1.0)}"
        )
    return "\n\n".join(
        [
            "### Effective depth against network depth",
            "**Claim.** Intermediate layers of a trained network become NCC-separable layer by layer, and the "
            "effective depth (the first layer whose NCC train error is at most ε) stops growing once the network "
            "is deep enough: extra layers beyond it add nothing to the separability of the train set.",
            "**Criterion** (fixed in advance): over the deeper half of the swept depths, the mean effective "
            "depth varies by at most one layer and every run reaches ε.",
            "```bash\nncdepth-train +experiment=repro_depth -m\n"
            "# full scale: ncdepth-train +experiment=conv_depth_sweep -m hydra/launcher=slurm\n```",
            f"Jobs: {sweep.status_line()}.",
            markdown_table(table),
            "\n".join(lines),
            gallery.figure(
                sweep,
                "ncc_train_error_by_depth",
                "NCC train error of every layer over training, "
                f"one panel per depth L ({seeds_per_value(runs, DEPTH)}), with the ε thresholds",
            ),
            gallery.figure(
                sweep,
                "effective_depth_by_depth",
                "Effective depth against depth L per ε (mean and 95 % interval over "
                f"{seeds_per_value(runs, DEPTH)}, each seed a dot; the dash-dotted line is y = L)",
            ),
        ]
    )


def galanti_noise(sweep: Sweep, gallery: Gallery) -> str:
    runs = sweep.finished()
    table = effective_depth_table(runs, NOISE, lambda frame: frame[DEPTH])
    depths = pd.Series(8, index=runs.index)  # repro_label_noise: MLP-8
    lines = []
    for column in eps_columns(runs):
        holds, text = monotone_in(runs, NOISE, column, depths)
        lines.append(f"- ε = {column.split('@')[1]}: {text} — {verdict(holds)}")
    return "\n\n".join(
        [
            "### Effective depth against label noise",
            "**Claim.** The more train labels are random, the deeper the effective depth of a network that fits "
            "them: noisy labels are fitted by the top layers, so NCC separability of the (noisy) train set "
            "arrives later in depth.",
            "**Criterion** (fixed in advance): Spearman's ρ between p and the effective depth over all runs "
            "(a run that never reaches ε ranks as L + 1) is positive with p-value < 0.05, and the mean of that "
            "rank never falls by more than half a layer from one p to the next.",
            "```bash\nncdepth-train +experiment=repro_label_noise -m\n"
            "# full scale: ncdepth-train +experiment=label_noise_sweep -m hydra/launcher=slurm\n```",
            f"Jobs: {sweep.status_line()}.",
            markdown_table(table),
            "\n".join(lines),
            gallery.figure(
                sweep,
                "effective_depth_by_label_noise",
                "Effective depth against label noise p per ε (mean and 95 % interval over the seeds "
                f"that reach ε, of {seeds_per_value(runs, NOISE)}; each seed a dot)",
            ),
            gallery.figure(
                sweep,
                "ncc_train_error_by_label_noise",
                "NCC train error of every layer over training, one panel per p "
                f"({seeds_per_value(runs, NOISE)}), with the ε thresholds",
            ),
        ]
    )


def galanti_bound(sweep: Sweep, gallery: Gallery) -> str:
    bound = sweep.table("bound.csv")
    shown = bound[
        ["eps", "p", "pairs", "probability", "bound", "bound_upper", "test_error_mean", "test_error_std"]
    ]
    holds = bool((bound["bound"] >= bound["test_error_mean"]).all())
    informative = bound[bound["bound"] < 1.0]
    formatted = shown.copy()
    for column in ("probability", "bound", "bound_upper", "test_error_mean", "test_error_std"):
        formatted[column] = formatted[column].map("{:.3f}".format)
    return "\n\n".join(
        [
            "### The comparative generalization bound",
            "**Claim.** The test error of a network trained on S1 is bounded by the probability that its "
            "effective depth is at least that of a network fitting S1 plus m freshly drawn samples with a "
            "fraction p of random labels, plus (1 + α)p and a concentration term.",
            "**Criterion**: the estimated bound is at least the measured mean test error at every (ε, p) "
            f"(it is below 1, i.e. not vacuous, in {len(informative)} of {len(bound)} rows).",
            "```bash\nncdepth-train +experiment=repro_bound -m\n"
            "# full scale: ncdepth-train +experiment=bound -m hydra/launcher=slurm\n```",
            f"Jobs: {sweep.status_line()}.",
            markdown_table(formatted),
            f"The bound holds in every row: {verdict(holds)}. The probability is a frequency over "
            f"{int(bound['pairs'].max())} seed pairs (`bound_upper` uses its Clopper–Pearson 95 % upper limit).",
            gallery.figure(
                sweep, "generalization_bound", "The bound against p beside the S1 networks' test error"
            ),
        ]
    )


# -- Papyan, Han & Donoho (2020) --------------------------------------------------------------------


LAST_LAYER_METRICS = ("nc1", "nc2_equinorm", "nc2_equiangle", "nc3", "nc4")


def network_history(run_dir: Path) -> pd.DataFrame:
    """Per analysis epoch ``e`` (after ``e`` epochs of training), the network's train error at the NC
    analysis and its mean train loss over epoch ``e`` (Lightning's 0-based epoch ``e - 1``), from the
    run's Lightning CSV log."""
    frames = [pd.read_csv(path) for path in sorted(run_dir.glob("lightning_logs/version_*/metrics.csv"))]
    log = pd.concat(frames, ignore_index=True)
    accuracy = log.dropna(subset=["nc/train/network_acc"]).groupby("epoch")["nc/train/network_acc"].last()
    loss = log.dropna(subset=["train/loss"]).groupby("epoch")["train/loss"].last()
    loss.index = loss.index + 1
    return pd.DataFrame({"train error": 1 - accuracy, "train loss": loss})


def change(start: float, end: float) -> str:
    """``×factor`` from ``start`` to ``end``; ``0 → 0`` for a rate already at its floor."""
    return "0 → 0" if start == end == 0 else f"×{end / start:.2f}"


def papyan(sweep: Sweep, gallery: Gallery) -> str:
    runs = sweep.finished()
    table = pd.read_csv(sweep.report / "report.csv")
    table = table[(table["split"] == "train") & table["run"].isin(runs["run"])]
    last = table[table["layer_index"] == table["layer_index"].max()]
    values = last[last["metric"].isin(LAST_LAYER_METRICS)].pivot_table(
        index="epoch", columns="metric", values="value", aggfunc="mean"
    )
    history = (
        pd.concat([network_history(sweep.path / str(run)) for run in runs["run"]]).groupby(level=0).mean()
    )
    values = values.join(history, how="left")
    start = int(runs["terminal_phase_epoch"].max())
    end = int(values.index.max())
    epochs = sorted({0, 10, 50, 100, 150, start, end} & set(values.index))
    shown = values.loc[epochs, ["train error", "train loss", *LAST_LAYER_METRICS]].reset_index()
    formatted = shown.copy()
    for column in shown.columns[1:]:
        formatted[column] = shown[column].map(lambda value: "–" if pd.isna(value) else f"{value:.2e}")
    falls = {
        m: values.loc[end, m] < values.loc[start, m] or values.loc[end, m] == 0 for m in LAST_LAYER_METRICS
    }
    factors = ", ".join(
        f"{m}: {change(values.loc[start, m], values.loc[end, m])}" for m in LAST_LAYER_METRICS
    )
    return "\n\n".join(
        [
            "## Papyan, Han & Donoho (2020): neural collapse in the terminal phase",
            "**Claim.** After the train error reaches zero, continued training drives the last layer towards "
            "collapse: within-class variability (NC1), the distance of the class means from an equinorm, "
            "equiangular frame (NC2), the classifier–means mismatch (NC3) and the gap between the network and "
            "the nearest class centre (NC4) keep falling.",
            "**Criterion**: every one of NC1, NC2 (equinorm and equiangle), NC3 and NC4 of the last layer, "
            "averaged over seeds, is lower at the last epoch than at the first epoch of zero train error in "
            "every seed (NC4, a mismatch rate, may instead stay at its floor of 0).",
            "```bash\nncdepth-train +experiment=repro_terminal_phase -m\n```",
            f"Jobs: {sweep.status_line()}. Terminal phase from epoch {start} (the latest seed's first epoch "
            f"of zero train error) to epoch {end}.",
            markdown_table(formatted),
            f"Factor from epoch {start} to {end}: {factors} — {verdict(all(falls.values()))}.",
            gallery.figure(
                sweep,
                "last_layer_collapse",
                f"NC1–NC4 of the last layer over training (log scale, mean over n = {len(runs)} seeds)",
            ),
        ]
    )


# -- Kothapalli & Tirer (2024) ----------------------------------------------------------------------


KERNEL_QUANTITIES = ("data", "nngp_relu", "ntk_relu", "nngp_erf", "ntk_erf", "adaptive", "fcn")


def kernel_nc1(sweep: Sweep) -> pd.DataFrame:
    table = sweep.table("kernels_table.csv")
    return table[(table["metric"] == "nc1_trace_ratio") & table["quantity"].isin(KERNEL_QUANTITIES)]


def kothapalli_balanced(sweep: Sweep, gallery: Gallery) -> str:
    nc1 = kernel_nc1(sweep)
    rows = []
    for d0, group in nc1.groupby("d0"):
        row = {"d0": d0}
        for quantity in KERNEL_QUANTITIES:
            row[quantity] = interval(group.loc[group["quantity"] == quantity, "value"], 3)
        rows.append(row)
    means = nc1.groupby(["d0", "quantity"])["value"].mean().unstack()
    ntk_not_lower = all((means[f"ntk_{a}"] >= means[f"nngp_{a}"] * (1 - 1e-9)).all() for a in ("relu", "erf"))
    adaptive_lower = bool((means["adaptive"] < means["nngp_erf"]).all())
    return "\n\n".join(
        [
            "### Balanced classes: NC1 of the kernels and of the trained network over d0 (N = 1024)",
            "**Claims.** (1) The NTK's features are never more collapsed than the NNGP's (NC1 of the NTK ≥ "
            "NC1 of the NNGP, for relu and erf). (2) The data-aware adaptive kernel is more collapsed than the "
            "NNGP (erf), moving towards what a trained network does.",
            "```bash\nncdepth-kernels +kernels_experiment=repro_balanced -m\n"
            "# the paper's grid: ncdepth-kernels +kernels_experiment=balanced -m\n```",
            f"Jobs: {sweep.status_line()}.",
            "NC1 = Tr Σ_W / Tr Σ_B, mean [95 % interval] over seeds:",
            markdown_table(pd.DataFrame(rows)),
            f"- (1) NTK ≥ NNGP at every d0, both activations: {verdict(ntk_not_lower)}\n"
            f"- (2) adaptive < NNGP (erf) at every d0: {verdict(adaptive_lower)}",
            gallery.figure(sweep, "kernels_nc1_vs_d0", "log10 NC1 against d0 per kernel and the trained net"),
        ]
    )


def kothapalli_imbalanced(sweep: Sweep, gallery: Gallery) -> str:
    nc1 = kernel_nc1(sweep)
    data = nc1.loc[nc1["quantity"] == "data", ["class_sizes", "seed", "value"]].rename(
        columns={"value": "data"}
    )
    ratios = nc1[nc1["quantity"] != "data"].merge(data, on=["class_sizes", "seed"])
    ratios["ratio"] = ratios["value"] / ratios["data"]
    order = sorted(ratios["class_sizes"].unique(), key=lambda sizes: -min(map(int, sizes.split("/"))))
    rows = []
    for sizes in order:
        group = ratios[ratios["class_sizes"] == sizes]
        row = {"class sizes": sizes}
        for quantity in KERNEL_QUANTITIES[1:]:
            row[quantity] = interval(group.loc[group["quantity"] == quantity, "ratio"], 3)
        rows.append(row)
    return "\n\n".join(
        [
            "### Imbalanced classes: NC1(H) / NC1(X) against the class sizes (N = 1024, d0 = 8)",
            "How much each kernel (and the trained network) collapses the data relative to the data's own NC1, "
            "as the minority class shrinks. The paper reports this dependence qualitatively; the table is the "
            "measurement, without a pass/fail criterion.",
            "```bash\nncdepth-kernels +kernels_experiment=repro_imbalanced -m\n"
            "# the paper's grid: ncdepth-kernels +kernels_experiment=imbalanced -m\n```",
            f"Jobs: {sweep.status_line()}.",
            markdown_table(pd.DataFrame(rows)),
            gallery.figure(
                sweep, "kernels_nc1_ratio_vs_class_sizes", "NC1(H) / NC1(X) against the class sizes"
            ),
        ]
    )


# -- Dang et al. (2023): the unconstrained-features model ---------------------------------------------


UFM_DISTANCE_REACHED = 1e-2
"""Direct optimisation has found the closed form's geometry when every relative Gram distance is at most this."""


def dang_ufm(sweep: Sweep, gallery: Gallery, imbalanced: bool) -> str:
    table = sweep.table("ufm_report.csv")
    finished = table[table["status"] == "finished"]
    distances = [column for column in finished.columns if column.startswith("closed_form_")]
    shown = pd.DataFrame(
        {
            "M": finished["depth"],
            "λ_W = λ_H": finished["weight_decay"],
            "f*": finished["fstar"].map("{:.6g}".format),
            "f (optimised)": finished["final_objective"].map("{:.6g}".format),
            "gap (f − f*)/f*": finished["objective_gap"].map("{:.1e}".format),
            "reached f*": finished["reached_optimum"].map({True: "yes", False: "**no**"}),
            "start kept": finished["start"],
            "max Gram distance": finished[distances].max(axis=1).map("{:.1e}".format),
        }
    )
    if imbalanced:
        shown["collapsed: predicted / measured"] = [
            f"{predicted} / {measured}"
            for predicted, measured in zip(
                finished["collapsed_predicted"], finished["collapsed_measured"], strict=True
            )
        ]
    reached = finished["reached_optimum"].astype(bool)
    agrees = finished[distances].max(axis=1) <= UFM_DISTANCE_REACHED
    if imbalanced:
        agrees &= finished["collapsed_predicted"].astype(str) == finished["collapsed_measured"].astype(str)
    holds = bool(len(finished) == len(table) and reached.all() and agrees.all())
    frame = (
        "general orthogonal frame, with the minority classes that fall below a threshold collapsed to zero"
        if imbalanced
        else "orthogonal frame"
    )
    experiment = "imbalanced_quick" if imbalanced else "balanced_quick"
    return "\n\n".join(
        [
            f"### The deep-linear UFM, {'imbalanced' if imbalanced else 'balanced'} classes: closed form vs "
            "direct optimisation",
            f"**Claim.** Every global minimiser of the deep-linear UFM with MSE has W W^T, H̄^T H̄ and W H̄ in the "
            f"{frame}, at every depth M; the closed form gives it, with its objective f*.",
            "**Criterion**: every job's direct optimisation reaches f* (relative gap below the documented "
            "tolerance of `ncdepth.theory.ufm_job`), and its Grams are then within "
            f"{UFM_DISTANCE_REACHED:g} of the closed form's"
            + (" with the same collapsed classes." if imbalanced else "."),
            f"```bash\nncdepth-ufm +ufm_experiment={experiment} -m\n"
            f"# longer runs: ncdepth-ufm +ufm_experiment={experiment.removesuffix('_quick')} -m\n```",
            f"Jobs: {sweep.status_line()}.",
            markdown_table(shown),
            f"{int(reached.sum())} of {len(finished)} reach f*; {int((reached & agrees).sum())} of them match "
            f"the closed form — {verdict(holds)}.",
            gallery.figure(
                sweep,
                "ufm_distance",
                "Relative distance of each Gram to the closed form over the "
                "iterations, one colour per depth M, one row per decay",
            ),
        ]
    )


# -- Dang et al. (2023): the deep linear head of a real network ------------------------------------------


GEOMETRY = ("geom_wwt", "geom_hth", "geom_wh")
FRAME_REACHED = 0.1
"""A head layer has reached the predicted frame when all three distances (in [0, 2]) are at most this."""
COLLAPSED_WH = 0.9
"""A head whose final W H̄ distance is at least this is reported as near the all-collapsed critical point."""
RATIOS = (("minority_w_ratio", "minority_w_ratio_pred"), ("minority_h_ratio", "minority_h_ratio_pred"))


def head_table(sweep: Sweep) -> pd.DataFrame:
    """Train-split head rows of the finished runs, with ``M``: the number of maps after the layer."""
    runs = sweep.finished()
    table = pd.read_csv(sweep.report / "report.csv")
    table = table[(table["split"] == "train") & table["run"].isin(runs["run"])]
    head = table[table["metric"].isin([*GEOMETRY, *(name for pair in RATIOS for name in pair)])].copy()
    linear = head["layer"].str.extract(r"^linear(\d+)$")[0].astype("Float64").fillna(0).astype(int)
    head["M"] = head["model.depth_linear"] - linear + 1
    return head


def dang_network(sweep: Sweep, gallery: Gallery, imbalanced: bool) -> str:
    head = head_table(sweep)
    first, last = head["epoch"].min(), head["epoch"].max()
    rows, reached = [], []
    for (depth_linear, m), group in head.groupby(["model.depth_linear", "M"]):
        row = {"head depth L": depth_linear, "layer (maps after it)": f"M = {m}"}
        for metric in GEOMETRY:
            values = group[group["metric"] == metric]
            start = values.loc[values["epoch"] == first, "value"].mean()
            end = values.loc[values["epoch"] == last, "value"]
            row[f"{metric} (epoch {first} → {last})"] = f"{start:.3f} → {interval(end, 3)}"
        if imbalanced:
            for measured, predicted in RATIOS:
                end = group[group["epoch"] == last]
                row[measured] = (
                    f"{interval(end.loc[end['metric'] == measured, 'value'], 2)} "
                    f"(pred. {end.loc[end['metric'] == predicted, 'value'].mean():.2f})"
                )
        final = group[(group["epoch"] == last) & group["metric"].isin(GEOMETRY)]
        reached.append(bool((final.groupby("metric")["value"].mean() <= FRAME_REACHED).all()))
        rows.append(row)
    frame = "general orthogonal frame of the closed form" if imbalanced else "orthogonal frame"
    name = "repro_deep_linear_imbalanced" if imbalanced else "repro_deep_linear"
    parts = [
        f"### A network's deep linear head, {'imbalanced' if imbalanced else 'balanced'} classes",
        f"**Claim.** Trained with MSE and weight and feature decay, the head's classifier products W, the class "
        f"means H̄ and W H̄ take the {frame} predicted for each layer by the deep-linear UFM with M maps after it"
        + (", including which classes' norms shrink (minority collapse)." if imbalanced else "."),
        f"**Criterion**: every head layer ends with all three distances at most {FRAME_REACHED} (0 = the "
        "predicted frame, 2 = as far as possible).",
        f"```bash\nncdepth-train +experiment={name} -m\n```",
        f"Jobs: {sweep.status_line()}.",
        markdown_table(pd.DataFrame(rows)),
        f"Layers at the predicted frame: {sum(reached)} of {len(reached)} — {verdict(all(reached))}.",
    ]
    final_wh = head[(head["epoch"] == last) & (head["metric"] == "geom_wh")]
    far = sorted(
        final_wh.groupby("model.depth_linear")["value"].mean().loc[lambda wh: wh >= COLLAPSED_WH].index
    )
    if far:
        parts.append(
            f"At head depth L = {', '.join(map(str, far))}, W H̄ ends about 1 from its frame (the distance of a "
            "vanishing product): the head has fallen towards the all-collapsed critical point, the spurious "
            "minimum that direct UFM optimisation also reaches from plain starts at large M (the UFM sections "
            "above needed continuation in the decays to avoid it); training has no such continuation."
        )
    if imbalanced:
        parts.append(
            gallery.figure(
                sweep,
                "minority_collapse",
                "Minority collapse: classifier and class-mean "
                "norms per class against the closed form's prediction",
            )
        )
    return "\n\n".join(parts)


# -- the page ---------------------------------------------------------------------------------------


GALANTI = "Galanti, Galanti & Ben-Shaul (2023): intermediate NCC separability and effective depth"
KOTHAPALLI = "Kothapalli & Tirer (2024): kernel vs kernel NC1 in two-layer networks"
DANG = "Dang et al. (2023): neural collapse in deep linear networks"
SECTIONS: Sequence[tuple[str, str, Callable[[Sweep, Gallery], str]]] = (
    (GALANTI, "repro_depth", galanti_depth),
    (GALANTI, "repro_label_noise", galanti_noise),
    (GALANTI, "repro_bound", galanti_bound),
    ("", "repro_terminal_phase", papyan),  # its section carries its own heading
    (KOTHAPALLI, "kernels_repro_balanced", kothapalli_balanced),
    (KOTHAPALLI, "kernels_repro_imbalanced", kothapalli_imbalanced),
    (DANG, "ufm_balanced_quick", partial(dang_ufm, imbalanced=False)),
    (DANG, "ufm_imbalanced_quick", partial(dang_ufm, imbalanced=True)),
    (DANG, "repro_deep_linear", partial(dang_network, imbalanced=False)),
    (DANG, "repro_deep_linear_imbalanced", partial(dang_network, imbalanced=True)),
)
"""(page heading, sweep directory under OUT_DIR, section writer), in page order."""

INTRO = """# Reproductions

Each seed paper's headline claim, re-measured at CPU scale on the embedded data sets by one script:

```bash
scripts/reproduce.sh                     # every sweep below (about 2 hours on 2 cores), then this page
python scripts/write_reproductions.py    # this page again from the finished sweeps
```

Everything below — tables, verdicts, figures — is generated by `scripts/write_reproductions.py` from the
sweeps' report directories; a claim that does not reproduce at this scale says so and shows its numbers.
Intervals are 95 % Student-t intervals over seeds, `mean [low, high]`. Each section gives the CPU-scale
command and the full-scale one (CIFAR-10 on a GPU, on Slurm with `hydra/launcher=slurm`).
"""


def write_page(out: Path, docs: Path) -> Path:
    gallery = Gallery(docs)
    parts, heading = [INTRO], None
    for title, name, section in SECTIONS:
        if title and title != heading:
            parts.append(f"## {title}")
            heading = title
        sweep = Sweep(name, out / name)
        if not sweep.exists():
            parts.append(f"*(`{name}` has not been run: no {sweep.report})*")
            continue
        parts.append(section(sweep, gallery))
    page = docs / PAGE
    page.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return page


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=REPO / "multirun" / "repro")
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    args = parser.parse_args(argv)
    print(f"wrote {write_page(args.out, args.docs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
