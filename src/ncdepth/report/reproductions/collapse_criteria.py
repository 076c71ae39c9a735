"""The criteria of the neural-collapse claims — Papyan, Han & Donoho (2020), Kothapalli & Tirer (2024),
Dang et al. (2023) and Wu & Papyan (2024): functions of a sweep's tables returning a
:class:`~ncdepth.report.reproductions.verdicts.Verdict` with the numbers it rests on. (Galanti, Galanti
& Ben-Shaul's effective-depth criteria are in :mod:`.criteria`.)

The section writers (:mod:`.sections`) read the tables, keep the runs that meet the claim's precondition
and call these; they only format.
"""

from __future__ import annotations

import pandas as pd

from ncdepth.report.reproductions.verdicts import NOT_INFORMATIVE, Verdict, holds, on_seeds

# -- Papyan, Han & Donoho (2020) --------------------------------------------------------------------

LAST_LAYER_METRICS = ("nc1", "nc2_equinorm", "nc2_equiangle", "nc3", "nc4")
"""The last layer's collapse metrics that must keep falling in the terminal phase."""
RATE_METRICS = ("nc4",)
"""The metrics that are mismatch rates: they may stay at their floor of 0 instead of falling."""


def change(start: float, end: float) -> str:
    """``×factor`` from ``start`` to ``end``; ``0 → 0`` for a rate already at its floor."""
    return "0 → 0" if start == end == 0 else f"×{end / start:.2f}"


def terminal_collapse(values: pd.DataFrame, start: int, end: int, seeds: int) -> Verdict:
    """Collapse continues through the terminal phase: every metric of :data:`LAST_LAYER_METRICS`
    (``values``: one row per analysis epoch, one column per metric, each the mean over ``seeds`` seeds)
    is lower at epoch ``end`` (the last) than at epoch ``start`` (the latest seed's first epoch of zero
    train error); a metric of :data:`RATE_METRICS` may instead be 0 at both. Not informative when the
    terminal phase has no epoch after ``start``; at least
    :data:`~ncdepth.report.reproductions.verdicts.MIN_SEEDS` seeds."""
    if end <= start:
        return Verdict(
            NOT_INFORMATIVE,
            f"the terminal phase starts at epoch {start}, the last analysed epoch is {end}: no training "
            "after zero train error to judge",
        )
    at_start, at_end = values.loc[start], values.loc[end]
    falls = all(
        at_end[m] < at_start[m] or (m in RATE_METRICS and at_start[m] == at_end[m] == 0)
        for m in LAST_LAYER_METRICS
    )
    factors = ", ".join(f"{m}: {change(at_start[m], at_end[m])}" for m in LAST_LAYER_METRICS)
    return on_seeds(pd.Series([seeds]), holds(falls, f"factor from epoch {start} to {end}: {factors}"))


# -- Kothapalli & Tirer (2024) ----------------------------------------------------------------------

NTK_ROUND_OFF = 1e-9
"""Relative: how far the NTK's mean NC1 may fall below the NNGP's and still count as not lower."""
KERNELS = ("nngp_relu", "ntk_relu", "nngp_erf", "ntk_erf", "adaptive")
"""The kernels the criteria judge (the trained network, ``fcn``, is shown beside them, not judged)."""


def kernel_seeds(nc1: pd.DataFrame, key: str) -> pd.Series:
    """The number of seeds behind each mean: rows per (``key``, ``quantity``)."""
    return nc1.groupby([key, "quantity"]).size()


def ntk_not_below_nngp(nc1: pd.DataFrame) -> Verdict:
    """The NTK's features are never more collapsed than the NNGP's: at every ``d0`` and for both
    activations (relu, erf) the mean NC1 of ``ntk_ACT`` is at least that of ``nngp_ACT`` (up to a
    relative :data:`NTK_ROUND_OFF`); ``nc1``: ``d0, quantity, value`` (one row per seed). At least
    :data:`~ncdepth.report.reproductions.verdicts.MIN_SEEDS` seeds per mean."""
    means = nc1.groupby(["d0", "quantity"])["value"].mean().unstack()
    not_lower = all(
        (means[f"ntk_{act}"] >= means[f"nngp_{act}"] * (1 - NTK_ROUND_OFF)).all() for act in ("relu", "erf")
    )
    return on_seeds(kernel_seeds(nc1, "d0"), holds(not_lower, "NTK ≥ NNGP at every d0, both activations"))


def adaptive_below_nngp(nc1: pd.DataFrame) -> Verdict:
    """The data-aware adaptive kernel is more collapsed than the NNGP: at every ``d0`` the mean NC1 of
    ``adaptive`` is below that of ``nngp_erf``; ``nc1`` as in :func:`ntk_not_below_nngp`. At least
    :data:`~ncdepth.report.reproductions.verdicts.MIN_SEEDS` seeds per mean."""
    means = nc1.groupby(["d0", "quantity"])["value"].mean().unstack()
    lower = bool((means["adaptive"] < means["nngp_erf"]).all())
    return on_seeds(kernel_seeds(nc1, "d0"), holds(lower, "adaptive < NNGP (erf) at every d0"))


def orderings_under_imbalance(ratios: pd.DataFrame) -> Verdict:
    """The paper's two orderings hold at every class-size setting: the NTK is never more collapsed than
    the NNGP (mean NC1(H) / NC1(X) of ``ntk_ACT`` at least that of ``nngp_ACT``, up to a relative
    :data:`NTK_ROUND_OFF`, for relu and erf), and erf gives lower NC1 than relu (``nngp_erf`` below
    ``nngp_relu``). ``ratios``: ``class_sizes, quantity, ratio`` per seed; a ratio shares its denominator
    NC1(X) with every kernel of the same class sizes and seed, so it orders the kernels as NC1 does. Not
    informative without a class-size setting; at least
    :data:`~ncdepth.report.reproductions.verdicts.MIN_SEEDS` seeds per mean."""
    kernels = ratios[ratios["quantity"].isin(KERNELS)]
    if kernels.empty:
        return Verdict(NOT_INFORMATIVE, "no kernel was measured")
    means = kernels.groupby(["class_sizes", "quantity"])["ratio"].mean().unstack()
    ntk_ok = pd.concat(
        [means[f"ntk_{act}"] >= means[f"nngp_{act}"] * (1 - NTK_ROUND_OFF) for act in ("relu", "erf")], axis=1
    ).all(axis=1)
    erf_ok = means["nngp_erf"] < means["nngp_relu"]
    evidence = (
        f"NTK ≥ NNGP (both activations) at {int(ntk_ok.sum())} of {len(means)} class-size settings; "
        f"NNGP erf < relu at {int(erf_ok.sum())} of {len(means)}"
    )
    return on_seeds(
        kernel_seeds(kernels, "class_sizes"), holds(bool(ntk_ok.all() and erf_ok.all()), evidence)
    )


# -- Dang et al. (2023) -----------------------------------------------------------------------------

UFM_DISTANCE_REACHED = 1e-2
"""Direct optimisation has found the closed form's geometry when every relative Gram distance is at most this."""
FRAME_REACHED = 0.1
"""A head layer has reached the predicted frame when all three distances (in [0, 2]) are at most this."""
GEOMETRY = ("geom_wwt", "geom_hth", "geom_wh")
"""The distances of a head layer's W W^T, H̄^T H̄ and W H̄ to the predicted frame (0 = at it, 2 = farthest)."""
DEPTH_LINEAR = "model.depth_linear"


def ufm_matches_closed_form(jobs: pd.DataFrame, imbalanced: bool) -> Verdict:
    """The closed form is the global minimiser: every job (``jobs``: the UFM report, one row per job with
    ``status``, ``reached_optimum`` and the ``closed_form_*`` Gram distances, and when ``imbalanced`` the
    ``collapsed_predicted`` and ``collapsed_measured`` classes) finished, its direct optimisation reached
    f* and every Gram distance is at most :data:`UFM_DISTANCE_REACHED` (and, imbalanced, the collapsed
    classes are the predicted ones)."""
    finished = jobs[jobs["status"] == "finished"]
    distances = [column for column in finished.columns if column.startswith("closed_form_")]
    reached = finished["reached_optimum"].astype(bool)
    agrees = finished[distances].max(axis=1) <= UFM_DISTANCE_REACHED
    if imbalanced:
        agrees &= finished["collapsed_predicted"].astype(str) == finished["collapsed_measured"].astype(str)
    evidence = (
        f"{int(reached.sum())} of {len(finished)} reach f*; {int((reached & agrees).sum())} of them match "
        "the closed form"
    )
    if len(finished) < len(jobs):
        evidence += f"; {len(jobs) - len(finished)} of {len(jobs)} jobs did not finish"
    return holds(bool(len(finished) == len(jobs) and reached.all() and agrees.all()), evidence)


def frame_reached(final: pd.DataFrame) -> Verdict:
    """The head takes the predicted frame: every head layer (``final``: ``model.depth_linear, M, run,
    metric, value`` at the last epoch, M the number of maps after the layer) has each of the three
    :data:`GEOMETRY` distances, averaged over seeds, at most :data:`FRAME_REACHED`. At least
    :data:`~ncdepth.report.reproductions.verdicts.MIN_SEEDS` seeds per head depth."""
    geometry = final[final["metric"].isin(GEOMETRY)]
    means = geometry.groupby([DEPTH_LINEAR, "M", "metric"])["value"].mean().unstack()
    if means.empty:
        return Verdict(NOT_INFORMATIVE, "no head layer measured at the last epoch")
    means = means.reindex(columns=list(GEOMETRY))
    reached = (means <= FRAME_REACHED).all(axis=1)
    verdict = holds(
        bool(reached.all()), f"layers at the predicted frame: {int(reached.sum())} of {len(reached)}"
    )
    return on_seeds(final.groupby(DEPTH_LINEAR)["run"].nunique(), verdict)


# -- Wu & Papyan (2024) -----------------------------------------------------------------------------

TOKEN_VARIABILITY = "cdnv"
"""The variability measure of token-level collapse: the mean CDNV over the next-token classes present
(with more classes than dimensions, NC1's trace ratio shrinks by about d / C whatever the geometry)."""


def token_collapse_grows(finals: pd.DataFrame) -> Verdict:
    """Token-level collapse grows with training and with scale: ``finals`` has one row per run with
    ``width``, ``start`` (the classifier layer's CDNV at the first analysis after initialisation) and
    ``end`` (at the last epoch). Reproduced when, at every width, the mean ``end`` is below the mean
    ``start`` (training), and the mean ``end`` falls strictly from each width to the next wider one
    (scale). Not informative with a single width; at least
    :data:`~ncdepth.report.reproductions.verdicts.MIN_SEEDS` seeds per width."""
    means = finals.groupby("width")[["start", "end"]].mean().sort_index()
    if len(means) < 2:
        return Verdict(NOT_INFORMATIVE, "one width only: the effect of scale cannot be judged")
    with_training = bool((means["end"] < means["start"]).all())
    with_scale = bool((means["end"].diff().dropna() < 0).all())
    evidence = "; ".join(f"width {width}: {row.start:.3f} → {row.end:.3f}" for width, row in means.iterrows())
    evidence += (
        f" (falls with training at every width: {'yes' if with_training else 'no'}; "
        f"final value falls with width: {'yes' if with_scale else 'no'})"
    )
    return on_seeds(finals.groupby("width").size(), holds(with_training and with_scale, evidence))
