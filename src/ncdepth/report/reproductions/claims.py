"""The claims of the gallery, as data: each paper's claim, the criterion it is judged by (stated here
before any data are read, and kept in code in :mod:`.criteria` for Galanti et al.'s claims and in
:mod:`.collapse_criteria` for the neural-collapse ones), its sweep and commands, and its precondition.
:data:`CLAIMS` is the page's order."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

from ncdepth.report.reproductions import sections
from ncdepth.report.reproductions.collapse_criteria import (
    FRAME_REACHED,
    TOKEN_VARIABILITY,
    UFM_DISTANCE_REACHED,
)
from ncdepth.report.reproductions.criteria import BUILDUP_TOLERANCE, MONOTONE_STEP, PLATEAU_SPREAD
from ncdepth.report.reproductions.sweeps import sweep_name
from ncdepth.report.reproductions.verdicts import MIN_SEEDS

APPS = {
    "experiment": "ncdepth-train",
    "kernels_experiment": "ncdepth-kernels",
    "ufm_experiment": "ncdepth-ufm",
    "lm_experiment": "ncdepth-lm",
}
"""The command of each config group of experiments."""

GALANTI = "Galanti, Galanti & Ben-Shaul (2023): intermediate NCC separability and effective depth"
PAPYAN = "Papyan, Han & Donoho (2020): neural collapse in the terminal phase"
KOTHAPALLI = "Kothapalli & Tirer (2024): kernel vs kernel NC1 in two-layer networks"
DANG = "Dang et al. (2023): neural collapse in deep linear networks"
WU = "Wu & Papyan (2024): linguistic collapse in causal language models"

TERMINAL_PHASE = {sections.TRAIN_ERROR: 0.0, sections.NCC_ERROR: 0.01, sections.TRAIN_LOSS: 0.05}
"""Galanti's precondition, the terminal phase: the run fits the labels it was given (train error 0),
its last layer separates them by NCC (NCC train error at most 0.01) and its train loss has fallen to
at most 0.05."""
ZERO_TRAIN_ERROR = {sections.TRAIN_ERROR: 0.0}
"""The precondition of the collapse claims on a trained network (Papyan's terminal phase, Dang et al.'s
deep linear head): the run ends fitting its train set (train error 0), so that it is in the terminal
phase of training the claim speaks of."""
BUILDUP = (
    f" In every run, no layer's final NCC train error may exceed an earlier layer's by more than "
    f"{BUILDUP_TOLERANCE:g} (the layer-wise build-up of separability); exceptions are listed."
)


@dataclass(frozen=True)
class Claim:
    """One section of the page: a ``paper``'s claim (``title``, ``statement``), the ``criterion`` it is
    judged by, the sweep of ``+GROUP=EXPERIMENT`` that tests it at CPU scale and the ``full_scale``
    command (``None``: the CPU sweep is the paper's scale), the ``precondition`` a run must meet to
    count (column: most value, :func:`~ncdepth.report.reproductions.verdicts.meets_precondition`) and
    the ``section`` writer of its tables, verdicts and figures (:mod:`.sections`)."""

    paper: str
    title: str
    statement: str
    criterion: str
    group: str
    experiment: str
    full_scale: str | None
    section: Callable[..., str]
    precondition: Mapping[str, float] = field(default_factory=dict)

    @property
    def sweep(self) -> str:
        """The sweep's directory under the gallery's output directory (:func:`sweep_name`)."""
        return sweep_name(self.group, self.experiment)

    @property
    def commands(self) -> str:
        """The CPU-scale command, and the full-scale one when there is one."""
        command = f"{APPS[self.group]} +{self.group}={self.experiment} -m"
        return command + (f"\n# full scale: {self.full_scale}" if self.full_scale else "")


CLAIMS = (
    Claim(
        GALANTI,
        "Effective depth against network depth",
        "Intermediate layers of a trained network become NCC-separable layer by layer, and the effective "
        "depth (the first layer whose NCC train error is at most ε) stops growing once the network is deep "
        "enough: extra layers beyond it add nothing to the separability of the train set.",
        f"over the deeper half of the swept depths, every run reaches ε and the mean effective depth varies "
        f"by at most {PLATEAU_SPREAD:g} layer, at least {MIN_SEEDS} seeds per depth; an effective depth of 1 "
        "at every L is not informative." + BUILDUP,
        "experiment",
        "repro_depth",
        "ncdepth-train +experiment=conv_depth_sweep -m hydra/launcher=slurm",
        sections.galanti_depth,
        TERMINAL_PHASE,
    ),
    Claim(
        GALANTI,
        "Effective depth against label noise",
        "The more train labels are random, the deeper the effective depth of a network that fits them: noisy "
        "labels are fitted by the top layers, so NCC separability of the (noisy) train set arrives later in "
        "depth.",
        "Spearman's ρ between p and the effective depth over the runs (a run that never reaches ε ranks as "
        f"L + 1) is positive with p-value < 0.05, the mean of that rank never falls by more than "
        f"{MONOTONE_STEP:g} layer from one p to the next, at least {MIN_SEEDS} seeds per p; the same rank in "
        "every run is not informative." + BUILDUP,
        "experiment",
        "repro_label_noise",
        "ncdepth-train +experiment=label_noise_sweep -m hydra/launcher=slurm",
        sections.galanti_noise,
        TERMINAL_PHASE,
    ),
    Claim(
        GALANTI,
        "The comparative generalization bound",
        "The test error of a network trained on S1 is bounded by the probability that its effective depth is "
        "at least that of a network fitting S1 plus m freshly drawn samples with a fraction p of random labels, "
        "plus (1 + α)p and a concentration term.",
        "the estimated bound is at least the measured mean test error in every (ε, p) row where it is below 1; "
        "a bound ≥ 1 in every row is vacuous.",
        "experiment",
        "repro_bound",
        "ncdepth-train +experiment=bound -m hydra/launcher=slurm",
        sections.galanti_bound,
    ),
    Claim(
        PAPYAN,
        "Last-layer collapse after zero train error",
        "After the train error reaches zero, continued training drives the last layer towards collapse: "
        "within-class variability (NC1), the distance of the class means from an equinorm, equiangular frame "
        "(NC2), the classifier–means mismatch (NC3) and the gap between the network and the nearest class "
        "centre (NC4) keep falling.",
        "every one of NC1, NC2 (equinorm and equiangle), NC3 and NC4 of the last layer, averaged over seeds, is "
        "lower at the last epoch than at the first epoch by which every seed has zero train error (NC4, a mismatch "
        f"rate, may instead stay at its floor of 0), at least {MIN_SEEDS} seeds; a terminal phase without an "
        "epoch after its start is not informative.",
        "experiment",
        "repro_terminal_phase",
        None,
        sections.papyan,
        ZERO_TRAIN_ERROR,
    ),
    Claim(
        KOTHAPALLI,
        "Balanced classes: NC1 of the kernels and of the trained network over d0 (N = 1024)",
        "(1) The NTK's features are never more collapsed than the NNGP's (NC1 of the NTK ≥ NC1 of the NNGP, "
        "for relu and erf). (2) The data-aware adaptive kernel is more collapsed than the NNGP (erf), moving "
        "towards what a trained network does.",
        "(1) the mean NC1 of the NTK is at least the NNGP's at every d0, both activations; (2) the mean NC1 of "
        "the adaptive kernel is below the NNGP's (erf) at every d0.",
        "kernels_experiment",
        "repro_balanced",
        "ncdepth-kernels +kernels_experiment=balanced -m",
        sections.kothapalli_balanced,
    ),
    Claim(
        KOTHAPALLI,
        "Imbalanced classes: NC1(H) / NC1(X) against the class sizes (N = 1024, d0 = 8)",
        "The orderings the paper states (abstract) persist as the minority class shrinks: the NTK does not "
        "represent more collapsed features than the NNGP, and erf gives lower NC1 than relu. The table shows how "
        "much each kernel (and the trained network) collapses the data relative to the data's own NC1.",
        "at every class-size setting, the mean NC1(H) / NC1(X) of the NTK is at least the NNGP's for both "
        "activations, and the NNGP's with erf is below its own with relu (the trained network is shown, not "
        f"judged), at least {MIN_SEEDS} seeds per mean.",
        "kernels_experiment",
        "repro_imbalanced",
        "ncdepth-kernels +kernels_experiment=imbalanced -m",
        sections.kothapalli_imbalanced,
    ),
    *(
        Claim(
            DANG,
            f"The deep-linear UFM, {balance} classes: closed form vs direct optimisation",
            f"Every global minimiser of the deep-linear UFM with MSE has W W^T, H̄^T H̄ and W H̄ in the {frame}, "
            "at every depth M; the closed form gives it, with its objective f*.",
            "every job's direct optimisation reaches f* (relative gap below the documented tolerance of "
            f"`ncdepth.theory.ufm_job`), and its Grams are then within {UFM_DISTANCE_REACHED:g} of the "
            "closed form's" + (" with the same collapsed classes." if balance == "imbalanced" else "."),
            "ufm_experiment",
            f"{balance}_quick",
            f"ncdepth-ufm +ufm_experiment={balance} -m",
            partial(sections.dang_ufm, imbalanced=balance == "imbalanced"),
        )
        for balance, frame in (
            ("balanced", "orthogonal frame"),
            (
                "imbalanced",
                "general orthogonal frame, with the minority classes that fall below a threshold collapsed "
                "to zero",
            ),
        )
    ),
    *(
        Claim(
            DANG,
            f"A network's deep linear head, {balance} classes",
            "Trained with MSE and weight and feature decay, the head's classifier products W, the class means H̄ "
            f"and W H̄ take the {frame} predicted for each layer by the deep-linear UFM with M maps after it"
            + (
                ", including which classes' norms shrink (minority collapse)."
                if balance == "imbalanced"
                else "."
            ),
            f"every head layer ends with all three distances, averaged over seeds, at most {FRAME_REACHED:g} "
            f"(0 = the predicted frame, 2 = as far as possible), at least {MIN_SEEDS} seeds per head depth.",
            "experiment",
            f"repro_{full_scale}",
            f"ncdepth-train +experiment={full_scale} -m hydra/launcher=slurm",
            partial(sections.dang_network, imbalanced=balance == "imbalanced"),
            ZERO_TRAIN_ERROR,
        )
        for balance, full_scale, frame in (
            ("balanced", "deep_linear", "orthogonal frame"),
            ("imbalanced", "deep_linear_imbalanced", "general orthogonal frame of the closed form"),
        )
    ),
    Claim(
        WU,
        "Token-level collapse grows with training and with width",
        "Trained as a causal language model, with each position's next token as its class (most of the "
        "vocabulary rare), the top layer's token states collapse further the longer the model trains and the "
        "larger it is: the within-class variability relative to the distance between class means falls.",
        f"at every width, the mean {TOKEN_VARIABILITY.upper()} of the classifier's layer (ln_f) over seeds is "
        "lower at the last epoch than at the first analysis after initialisation, and its final mean falls "
        f"strictly from each width to the next wider one, at least {MIN_SEEDS} seeds per width; one width "
        "alone is not informative.",
        "lm_experiment",
        "repro",
        None,
        sections.wu_papyan,
    ),
)
