"""The body of each section of the gallery: its tables, verdicts and figures, from a sweep's report.

Every writer takes ``(claim, sweep, gallery)`` and returns markdown; the section's heading, claim,
criterion, commands and job counts come from the claim's data (:mod:`.page`). A writer reads the
sweep's tables, keeps the runs that meet the claim's precondition (:func:`judged` counts the rest) and
formats the verdict of its criterion (:mod:`.criteria`, :mod:`.collapse_criteria`); it decides nothing
itself. Spreads: mean and a
95 % Student-t interval over seeds clipped to the quantity's range (``mean [low, high]``,
:func:`~ncdepth.report.reproductions.verdicts.interval_text`); one seed gives no interval.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ncdepth.models.causal_lm import CLASSIFIER_LAYER
from ncdepth.report.bound import BOUND_FILE
from ncdepth.report.kernels import TABLE_STEM
from ncdepth.report.reproductions.collapse_criteria import (
    DEPTH_LINEAR,
    FRAME_REACHED,
    GEOMETRY,
    LAST_LAYER_METRICS,
    TOKEN_VARIABILITY,
    adaptive_below_nngp,
    frame_reached,
    ntk_not_below_nngp,
    orderings_under_imbalance,
    terminal_collapse,
    token_collapse_grows,
    ufm_matches_closed_form,
)
from ncdepth.report.reproductions.criteria import (
    DEPTH,
    bound_holds,
    depth_plateau,
    eps_columns,
    layerwise_buildup,
    monotone_in,
)
from ncdepth.report.reproductions.sweeps import SweepReport
from ncdepth.report.reproductions.verdicts import (
    PRECONDITION_NOT_MET,
    Verdict,
    interval_text,
    meets_precondition,
)
from ncdepth.report.style import MAX_HEIGHT, PAGE_WIDTH, fits_page, image_size_inches, readable
from ncdepth.report.tables import REPORT_STEM
from ncdepth.report.tokens import FIGURE_STEM as TOKEN_FIGURE
from ncdepth.report.tokens import REPORT_FILE as TOKEN_FILE
from ncdepth.report.ufm import REPORT_FILE as UFM_FILE

if TYPE_CHECKING:
    from ncdepth.report.reproductions.claims import Claim

FIGURES = "reproductions"
"""The folder of the page's figures, beside the page."""
NOISE, EXTRA_NOISE = "data.label_noise", "data.extra_label_noise"
TRAIN_ERROR, NCC_ERROR, TRAIN_LOSS = "train error", "last-layer NCC train error", "train loss"


# -- formatting -------------------------------------------------------------------------------------


def markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a GitHub markdown table, every cell as its string."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def seeds_per_value(runs: pd.DataFrame, key: str) -> str:
    """``n = 5 seeds per depth L`` (``n = 2–3 …`` when they differ): the runs of each value of ``key``."""
    counts = runs.groupby(key).size()
    if counts.empty:
        return "no finished run"
    low, high = int(counts.min()), int(counts.max())
    return f"n = {low if low == high else f'{low}–{high}'} seed{'s' if high > 1 else ''} per {readable(key)}"


def value_label(key: str, value: object) -> str:
    if key == EXTRA_NOISE and (value is None or value != value):
        return "S1 only"
    return f"{value:g}" if isinstance(value, float) else str(value)


class Gallery:
    """Copies report figures into ``DOCS/reproductions/`` and links them from the page."""

    def __init__(self, docs: Path) -> None:
        self.directory = docs / FIGURES
        if self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)

    def figure(self, sweep: SweepReport, name: str, caption: str) -> str:
        """Copy ``name``'s PNG and PDF from the sweep's report and return the markdown that shows it."""
        if not (sweep.figures / f"{name}.png").exists():
            return f"*(figure `{name}` missing from {sweep.figures}: its report skipped it)*"
        for suffix in (".png", ".pdf"):
            shutil.copyfile(
                sweep.figures / f"{name}{suffix}", self.directory / f"{sweep.name}__{name}{suffix}"
            )
        stem = f"{FIGURES}/{sweep.name}__{name}"
        width, height = image_size_inches(sweep.figures / f"{name}.png")
        size = f"{width:.1f} × {height:.1f} in"
        if not fits_page(width, height):
            size += f", **larger than a page ({PAGE_WIDTH:g} × {MAX_HEIGHT:g} in): redraw it with `ncdepth-report`**"
        return f"![{caption}]({stem}.png)\n\n*{caption}* ([PDF]({stem}.pdf), {size})"


# -- the precondition -------------------------------------------------------------------------------


def kept_runs(claim: Claim, runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that meet ``claim.precondition`` (:func:`~ncdepth.report.reproductions.verdicts.meets_precondition`)."""
    return runs[meets_precondition(runs, claim.precondition)]


def judged(claim: Claim, runs: pd.DataFrame, criterion: Verdict | None) -> Verdict:
    """``criterion`` (the verdict on the runs that meet ``claim.precondition``) with the count of the
    runs that miss it; :data:`PRECONDITION_NOT_MET` when none meets it."""
    missed = int((~meets_precondition(runs, claim.precondition)).sum())
    if criterion is None:
        limits = ", ".join(f"{column} ≤ {limit:g}" for column, limit in claim.precondition.items())
        return Verdict(PRECONDITION_NOT_MET, f"no run has {limits}", missed, len(runs))
    return replace(criterion, excluded=missed, runs=len(runs))


def final_ncc_errors(sweep: SweepReport, runs: pd.DataFrame) -> pd.DataFrame:
    """``run, layer_index, value``: each layer's NCC train error ``1 - ncc_acc`` at its run's last epoch."""
    table = sweep.table(f"{REPORT_STEM}.csv")
    table = table[
        (table["split"] == "train") & (table["metric"] == "ncc_acc") & table["run"].isin(runs["run"])
    ]
    last = table[table["epoch"] == table.groupby("run")["epoch"].transform("max")]
    return last.assign(value=1 - last["value"])[["run", "layer_index", "value"]]


def training_runs(sweep: SweepReport) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The finished runs with their depth (from each run's config when it is not swept) and the
    precondition's columns, and :func:`final_ncc_errors` (:func:`with_precondition_columns`)."""
    runs = sweep.finished().copy()
    if DEPTH not in runs.columns:
        runs[DEPTH] = [sweep.config(run, DEPTH) for run in runs["run"]]
    return with_precondition_columns(sweep, runs)


def with_precondition_columns(sweep: SweepReport, runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``runs`` (finished ``ncdepth-train`` runs) with the columns a precondition may limit (``train
    error`` on the labels given, ``last-layer NCC train error``, ``train loss``; NaN where the report
    or the Lightning log has none), and :func:`final_ncc_errors`."""
    runs = runs.copy()
    errors = final_ncc_errors(sweep, runs)
    last = errors[errors["layer_index"] == errors.groupby("run")["layer_index"].transform("max")]
    runs[TRAIN_ERROR] = 1 - runs["final_acc_train"]
    runs[NCC_ERROR] = runs["run"].map(last.set_index("run")["value"])
    runs[TRAIN_LOSS] = [final_train_loss(sweep.path / str(run)) for run in runs["run"]]
    return runs, errors


def final_train_loss(run_dir: Path) -> float:
    """The run's train loss over its last epoch (:func:`network_history`); NaN without a Lightning log."""
    if not any(run_dir.glob("lightning_logs/version_*/metrics.csv")):
        return float("nan")
    return float(network_history(run_dir)[TRAIN_LOSS].dropna().iloc[-1])


def precondition_table(claim: Claim, runs: pd.DataFrame) -> str:
    """Per run, the precondition's measurements and whether it meets them."""
    meets = meets_precondition(runs, claim.precondition)
    shown = runs[["run", *claim.precondition]].copy()
    for column in claim.precondition:
        shown[column] = shown[column].map("{:.3f}".format)
    shown["meets the precondition"] = meets.map({True: "yes", False: "**no**"})
    return markdown_table(shown)


# -- Galanti, Galanti & Ben-Shaul (2023) -------------------------------------------------------------


def effective_depth_table(runs: pd.DataFrame, key: str) -> pd.DataFrame:
    """One row per value of ``key``: seeds, final accuracies and, per ε, the effective depth's mean
    [interval within 1 and L + 1] over the seeds that reach ε and how many do."""
    rows = []
    for value, group in runs.groupby(key, sort=True):
        row = {readable(key): value_label(key, value), "seeds": len(group)}
        row["train acc"] = interval_text(group["final_acc_train"], 3, 0, 1)
        row["test acc"] = interval_text(group["final_acc_test"], 3, 0, 1)
        for column in eps_columns(runs):
            reached = group[column].dropna()
            bounds = (1, float(group[DEPTH].max()) + 1)
            row[f"d_eff ε={column.split('@')[1]}"] = (
                f"{interval_text(reached, 2, *bounds)} ({len(reached)}/{len(group)})"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def galanti_training(claim: Claim, sweep: SweepReport, key: str) -> list[str]:
    """The parts every Galanti training section shares: the precondition per run, the effective depth
    per value of ``key``, a verdict per ε (on the runs that meet the precondition) and the layer-wise
    build-up of NCC separability."""
    runs, errors = training_runs(sweep)
    kept = kept_runs(claim, runs)
    lines = []
    for column in eps_columns(runs):
        criterion = None
        if not kept.empty:
            criterion = depth_plateau(kept, column) if key == DEPTH else monotone_in(kept, key, column)
        lines.append(f"- ε = {column.split('@')[1]}: {judged(claim, runs, criterion).markdown()}")
    buildup = judged(
        claim, runs, layerwise_buildup(errors[errors["run"].isin(kept["run"])]) if len(kept) else None
    )
    return [
        "Precondition per run:",
        precondition_table(claim, runs),
        markdown_table(effective_depth_table(runs, key)),
        "\n".join(lines),
        f"Layer-wise build-up of NCC separability at the last epoch: {buildup.markdown()}",
    ]


def galanti_depth(claim: Claim, sweep: SweepReport, gallery: Gallery) -> str:
    runs = sweep.finished()
    return "\n\n".join(
        [
            *galanti_training(claim, sweep, DEPTH),
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


def galanti_noise(claim: Claim, sweep: SweepReport, gallery: Gallery) -> str:
    runs = sweep.finished()
    return "\n\n".join(
        [
            *galanti_training(claim, sweep, NOISE),
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


def galanti_bound(claim: Claim, sweep: SweepReport, gallery: Gallery) -> str:
    bound = sweep.table(BOUND_FILE)
    shown = bound[
        ["eps", "p", "pairs", "probability", "bound", "bound_upper", "test_error_mean", "test_error_std"]
    ].copy()
    for column in ("probability", "bound", "bound_upper", "test_error_mean", "test_error_std"):
        shown[column] = shown[column].map("{:.3f}".format)
    return "\n\n".join(
        [
            markdown_table(shown),
            f"{bound_holds(bound).markdown()}. The probability is a frequency over "
            f"{int(bound['pairs'].max())} seed pairs (`bound_upper` uses its Clopper–Pearson 95 % upper limit).",
            gallery.figure(
                sweep, "generalization_bound", "The bound against p beside the S1 networks' test error"
            ),
        ]
    )


# -- Papyan, Han & Donoho (2020) --------------------------------------------------------------------


def network_history(run_dir: Path) -> pd.DataFrame:
    """Per analysis epoch ``e`` (after ``e`` epochs of training), the network's train error at the NC
    analysis and its mean train loss over epoch ``e`` (Lightning's 0-based epoch ``e - 1``), from the
    run's Lightning CSV log."""
    frames = [pd.read_csv(path) for path in sorted(run_dir.glob("lightning_logs/version_*/metrics.csv"))]
    log = pd.concat(frames, ignore_index=True)
    accuracy = log.dropna(subset=["nc/train/network_acc"]).groupby("epoch")["nc/train/network_acc"].last()
    loss = log.dropna(subset=["train/loss"]).groupby("epoch")["train/loss"].last()
    loss.index = loss.index + 1
    return pd.DataFrame({TRAIN_ERROR: 1 - accuracy, TRAIN_LOSS: loss})


def papyan(claim: Claim, sweep: SweepReport, gallery: Gallery) -> str:
    """The last layer's NC metrics (means over the runs that meet the precondition) at a few epochs, and
    :func:`~ncdepth.report.reproductions.collapse_criteria.terminal_collapse` on them."""
    runs, _ = with_precondition_columns(sweep, sweep.finished())
    kept = kept_runs(claim, runs)
    parts = ["Precondition per run:", precondition_table(claim, runs)]
    if kept.empty:
        parts.append(judged(claim, runs, None).markdown())
    else:
        table = sweep.table(f"{REPORT_STEM}.csv")
        table = table[(table["split"] == "train") & table["run"].isin(kept["run"])]
        last = table[table["layer_index"] == table["layer_index"].max()]
        values = last[last["metric"].isin(LAST_LAYER_METRICS)].pivot_table(
            index="epoch", columns="metric", values="value", aggfunc="mean"
        )
        history = (
            pd.concat([network_history(sweep.path / str(run)) for run in kept["run"]]).groupby(level=0).mean()
        )
        values = values.join(history, how="left")
        start = int(kept["terminal_phase_epoch"].max())
        end = int(values.index.max())
        epochs = sorted({0, 10, 50, 100, 150, start, end} & set(values.index))
        shown = values.loc[epochs, [TRAIN_ERROR, TRAIN_LOSS, *LAST_LAYER_METRICS]].reset_index()
        for column in shown.columns[1:]:
            shown[column] = shown[column].map(lambda value: "–" if pd.isna(value) else f"{value:.2e}")
        parts += [
            f"Terminal phase from epoch {start} (the latest seed's first epoch of zero train error) to epoch {end}.",
            markdown_table(shown),
            judged(claim, runs, terminal_collapse(values, start, end, len(kept))).markdown(),
        ]
    parts.append(
        gallery.figure(
            sweep,
            "last_layer_collapse",
            f"NC1–NC4 of the last layer over training (log scale, mean over n = {len(runs)} seeds)",
        )
    )
    return "\n\n".join(parts)


# -- Kothapalli & Tirer (2024) ----------------------------------------------------------------------


KERNEL_QUANTITIES = ("data", "nngp_relu", "ntk_relu", "nngp_erf", "ntk_erf", "adaptive", "fcn")


def kernel_nc1(sweep: SweepReport) -> pd.DataFrame:
    table = sweep.table(f"{TABLE_STEM}.csv")
    return table[(table["metric"] == "nc1_trace_ratio") & table["quantity"].isin(KERNEL_QUANTITIES)]


def kothapalli_balanced(claim: Claim, sweep: SweepReport, gallery: Gallery) -> str:
    nc1 = kernel_nc1(sweep)
    rows = []
    for d0, group in nc1.groupby("d0"):
        row = {"d0": d0}
        for quantity in KERNEL_QUANTITIES:
            row[quantity] = interval_text(group.loc[group["quantity"] == quantity, "value"], 3, low=0)
        rows.append(row)
    return "\n\n".join(
        [
            "NC1 = Tr Σ_W / Tr Σ_B, mean [95 % interval] over seeds:",
            markdown_table(pd.DataFrame(rows)),
            f"- (1) {ntk_not_below_nngp(nc1).markdown()}\n- (2) {adaptive_below_nngp(nc1).markdown()}",
            gallery.figure(sweep, "kernels_nc1_vs_d0", "log10 NC1 against d0 per kernel and the trained net"),
        ]
    )


def nc1_ratios(nc1: pd.DataFrame) -> pd.DataFrame:
    """The rows of every quantity but the data's, with ``ratio``: its NC1 over the data's NC1 of the same
    class sizes and seed, NC1(H) / NC1(X)."""
    data = nc1.loc[nc1["quantity"] == "data", ["class_sizes", "seed", "value"]].rename(
        columns={"value": "data"}
    )
    ratios = nc1[nc1["quantity"] != "data"].merge(data, on=["class_sizes", "seed"])
    return ratios.assign(ratio=ratios["value"] / ratios["data"])


def minority_share(class_sizes: str) -> float:
    """The smallest class's share of the samples: ``"128/896"`` -> 0.125."""
    sizes = [int(size) for size in class_sizes.split("/")]
    return min(sizes) / sum(sizes)


def kothapalli_imbalanced(claim: Claim, sweep: SweepReport, gallery: Gallery) -> str:
    ratios = nc1_ratios(kernel_nc1(sweep))
    order = sorted(ratios["class_sizes"].unique(), key=minority_share, reverse=True)
    rows = []
    for sizes in order:
        group = ratios[ratios["class_sizes"] == sizes]
        row = {"class sizes": sizes}
        for quantity in KERNEL_QUANTITIES[1:]:
            row[quantity] = interval_text(group.loc[group["quantity"] == quantity, "ratio"], 3, low=0)
        rows.append(row)
    return "\n\n".join(
        [
            markdown_table(pd.DataFrame(rows)),
            orderings_under_imbalance(ratios).markdown(),
            gallery.figure(
                sweep, "kernels_nc1_ratio_vs_class_sizes", "NC1(H) / NC1(X) against the class sizes"
            ),
        ]
    )


# -- Dang et al. (2023): the unconstrained-features model ---------------------------------------------


def dang_ufm(claim: Claim, sweep: SweepReport, gallery: Gallery, imbalanced: bool) -> str:
    table = sweep.table(UFM_FILE)
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
    return "\n\n".join(
        [
            markdown_table(shown),
            ufm_matches_closed_form(table, imbalanced).markdown(),
            gallery.figure(
                sweep,
                "ufm_distance",
                "Relative distance of each Gram to the closed form over the "
                "iterations, one colour per depth M, one row per decay",
            ),
        ]
    )


# -- Dang et al. (2023): the deep linear head of a real network ------------------------------------------


COLLAPSED_WH = 0.9
"""A head whose final W H̄ distance is at least this is reported as near the all-collapsed critical point."""
RATIOS = (("minority_w_ratio", "minority_w_ratio_pred"), ("minority_h_ratio", "minority_h_ratio_pred"))


def head_table(sweep: SweepReport, runs: pd.DataFrame) -> pd.DataFrame:
    """Train-split head rows of ``runs``, with ``M``: the number of maps after the layer."""
    table = sweep.table(f"{REPORT_STEM}.csv")
    table = table[(table["split"] == "train") & table["run"].isin(runs["run"])]
    head = table[table["metric"].isin([*GEOMETRY, *(name for pair in RATIOS for name in pair)])].copy()
    linear = head["layer"].str.extract(r"^linear(\d+)$")[0].astype("Float64").fillna(0).astype(int)
    head["M"] = head[DEPTH_LINEAR] - linear + 1
    return head


SETTLED = 0.01
"""Training has settled when no seed-mean distance to the frame moved by more than this over its second half."""


def head_convergence(head: pd.DataFrame, last: int) -> str:
    """Which of the three distances end at the predicted frame (seed means at most
    :data:`~ncdepth.report.reproductions.collapse_criteria.FRAME_REACHED`), in how many head layers, and
    how far the seed means still moved over the second half of training (from the analysed epoch nearest
    ``last / 2`` to ``last``): a measured answer to whether longer training would reach the frame."""
    head = head[head["metric"].isin(GEOMETRY)]
    epochs = sorted(head["epoch"].unique())
    middle = min(epochs, key=lambda epoch: abs(epoch - last / 2))
    means = head.groupby([DEPTH_LINEAR, "M", "metric", "epoch"])["value"].mean().unstack("epoch")
    final = means[last].unstack("metric")
    reached = ", ".join(
        f"{metric} in {int((final[metric] <= FRAME_REACHED).sum())} of {len(final)}"
        for metric in GEOMETRY
        if metric in final
    )
    moved = (means[last] - means[middle]).abs()
    worst = moved.idxmax()
    conclusion = (
        "training had settled: a distance that ends above the frame's tolerance was not still falling towards it"
        if moved.max() <= SETTLED
        else "training had not settled: longer training may bring the distances closer"
    )
    return (
        f"Head layers whose distance ends within {FRAME_REACHED:g} of the frame: {reached}. Over the second "
        f"half of training (epoch {middle} → {last}) the largest change of a seed-mean distance is "
        f"{moved.max():.3f} ({worst[2]} at L = {worst[0]}, M = {worst[1]}); {conclusion}."
    )


def dang_network(claim: Claim, sweep: SweepReport, gallery: Gallery, imbalanced: bool) -> str:
    """Per head layer, its three distances to the predicted frame (first → last epoch, over the runs that
    meet the precondition), :func:`~ncdepth.report.reproductions.collapse_criteria.frame_reached` on them,
    and a note on the head depths whose W H̄ ends near the all-collapsed critical point (every finished
    run)."""
    runs, _ = with_precondition_columns(sweep, sweep.finished())
    kept = kept_runs(claim, runs)
    every = head_table(sweep, runs)
    head = every[every["run"].isin(kept["run"])]
    first, last = every["epoch"].min(), every["epoch"].max()
    rows = []
    for (depth_linear, m), group in head.groupby([DEPTH_LINEAR, "M"]):
        row = {"head depth L": depth_linear, "layer (maps after it)": f"M = {m}"}
        for metric in GEOMETRY:
            values = group[group["metric"] == metric]
            start = values.loc[values["epoch"] == first, "value"].mean()
            end = values.loc[values["epoch"] == last, "value"]
            row[f"{metric} (epoch {first} → {last})"] = f"{start:.3f} → {interval_text(end, 3, 0, 2)}"
        if imbalanced:
            for measured, predicted in RATIOS:
                end = group[group["epoch"] == last]
                row[measured] = (
                    f"{interval_text(end.loc[end['metric'] == measured, 'value'], 2, low=0)} "
                    f"(pred. {end.loc[end['metric'] == predicted, 'value'].mean():.2f})"
                )
        rows.append(row)
    parts = [] if not claim.precondition else ["Precondition per run:", precondition_table(claim, runs)]
    if kept.empty:
        parts.append(judged(claim, runs, None).markdown())
    else:
        parts += [
            markdown_table(pd.DataFrame(rows)),
            judged(claim, runs, frame_reached(head[head["epoch"] == last])).markdown(),
        ]
    if not kept.empty:
        parts.append(head_convergence(head, last))
    final_wh = every[(every["epoch"] == last) & (every["metric"] == "geom_wh")]
    far = sorted(final_wh.groupby(DEPTH_LINEAR)["value"].mean().loc[lambda wh: wh >= COLLAPSED_WH].index)
    if far:
        parts.append(
            f"At head depth L = {', '.join(map(str, far))}, W H̄ ends about 1 from its frame (the distance of a "
            "vanishing product): the head has fallen towards the all-collapsed critical point, the spurious "
            "minimum that direct UFM optimisation also reaches from plain starts at large M (the UFM sections "
            "above needed continuation in the decays to avoid it); training has no such continuation."
        )
    parts.append(
        gallery.figure(
            sweep,
            "head_geometry",
            "Each head layer's distance to the predicted frame over training (log scale; mean and min–max over "
            "the seeds)",
        )
    )
    if imbalanced:
        parts.append(
            gallery.figure(
                sweep,
                "minority_collapse",
                "Minority collapse: classifier and class-mean norms per class against the closed form's prediction"
                + (
                    f" (every finished run, the {len(runs) - len(kept)} that miss the precondition included)"
                    if len(kept) < len(runs)
                    else ""
                ),
            )
        )
    return "\n\n".join(parts)


# -- Wu & Papyan (2024) -----------------------------------------------------------------------------


def wu_papyan(claim: Claim, sweep: SweepReport, gallery: Gallery) -> str:
    """Per width: the classifier layer's CDNV at the first analysis after initialisation and at the last
    epoch, every block's final CDNV, the network's final train and test accuracy, the final NC4, NCC accuracy
    and number of next-token classes measured (intervals over seeds), then
    :func:`~ncdepth.report.reproductions.collapse_criteria.token_collapse_grows`."""
    table = sweep.table(TOKEN_FILE)
    if table.empty:
        return "*(no finished run)*"
    table = table.astype({"run": str})
    runs = sweep.finished().astype({"run": str})
    start = int(table.loc[table["epoch"] > 0, "epoch"].min())
    top = table[table["layer"] == CLASSIFIER_LAYER]
    last = top.groupby("run")["epoch"].transform("max")
    finals = (
        top[top["epoch"] == start][["run", "width", TOKEN_VARIABILITY]]
        .rename(columns={TOKEN_VARIABILITY: "start"})
        .merge(
            top[top["epoch"] == last][["run", TOKEN_VARIABILITY]].rename(columns={TOKEN_VARIABILITY: "end"})
        )
    )
    final_rows = table[table["epoch"] == table.groupby("run")["epoch"].transform("max")]
    layers = list(dict.fromkeys(final_rows["layer"]))
    rows = []
    for width, group in finals.groupby("width"):
        finished = final_rows[final_rows["width"] == width]
        row = {
            "width d": width,
            "seeds": len(group),
            f"CDNV ln_f, epoch {start}": interval_text(group["start"], 3, low=0),
        }
        row[f"CDNV ln_f, epoch {int(finished['epoch'].max())}"] = interval_text(group["end"], 3, low=0)
        for layer in layers:
            if layer != CLASSIFIER_LAYER:
                row[f"final CDNV {layer}"] = interval_text(
                    finished.loc[finished["layer"] == layer, "cdnv"], 3, low=0
                )
        at_top = finished[finished["layer"] == CLASSIFIER_LAYER]
        accuracy = runs[runs["run"].isin(group["run"])]
        row["network accuracy, train"] = interval_text(accuracy["final_acc_train"], 3, low=0, high=1)
        row["network accuracy, test"] = interval_text(accuracy["final_acc_test"], 3, low=0, high=1)
        row["final NC4"] = interval_text(at_top["nc4"], 3, low=0, high=1)
        row["final NCC accuracy"] = interval_text(at_top["ncc_acc"], 3, low=0, high=1)
        row["classes measured"] = f"{int(at_top['num_classes_present'].median()):,}"
        rows.append(row)
    widths = sorted(table["width"].unique())
    depth, min_count = (
        ", ".join(map(str, sorted(table[key].unique()))) for key in ("depth", "min_class_count")
    )
    return "\n\n".join(
        [
            "Train split, every position a sample labelled by its next token; a token is a class of the split "
            f"when it is a next token at least `min_class_count` = {min_count} times (the others are dropped, "
            '`empty_classes="drop"`). The paper\'s scale (TinyStories, models up to hundreds of millions of '
            f"parameters, on GPUs) is not reached here: these are {depth}-block models of width {widths[0]} to "
            f"{widths[-1]}.",
            markdown_table(pd.DataFrame(rows)),
            token_collapse_grows(finals).markdown(),
            gallery.figure(
                sweep,
                TOKEN_FIGURE,
                "Token-level collapse over training and across blocks (CDNV on a log scale; NC4 the share of "
                "tokens where the network's prediction differs from the nearest class mean's)",
            ),
        ]
    )
