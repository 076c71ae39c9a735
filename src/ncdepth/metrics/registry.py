"""Every metric name ``ncdepth.metrics`` reports, in one place: its formula, where ``docs/metrics.md`` defines
it, which way collapse moves it, and what it needs.

The docs table (``tests/test_metric_registry.py`` checks each row against :data:`METRICS`), the order of a
layer's results (hence of the rows of ``metrics.csv``), the report's labels and the choice of what
``ncdepth-train`` measures by default all read this module. Adding a metric: one :class:`MetricSpec` here,
its computation, its row in ``docs/metrics.md`` and its formula in ``tests/reference_nc.py``
(``CONTRIBUTING.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

NEEDS = {
    "means": "the class means (pass 1)",
    "variances": "the within-class variances (pass 2)",
    "scatter": "Sigma_W along the eigenvectors of Sigma_B, or in full (pass 2)",
    "ncc": "the nearest-class-centre predictions (pass 2)",
    "logits": "the network's logits (pass 2, classifier layer)",
    "weight": "the classifier weight (classifier layer)",
    "layer_weight": "the weight of a linear map that reads the layer",
    "ood": "the global mean of out-of-distribution data at the layer",
    "moment": "the k x k second moment of the probe inputs (pass 1) and the probe's predictions (pass 2)",
}
"""What a metric can need, besides the layer's features and labels."""


@dataclass(frozen=True)
class MetricSpec:
    """One metric.

    ``formula``: the formula as the docs table writes it (notation of ``docs/metrics.md``); ``anchor``: the
    section of ``docs/metrics.md`` that defines it; ``collapse``: its value under perfect neural collapse
    (``None`` when it has no such value: it describes, it does not test collapse); ``needs``: keys of
    :data:`NEEDS`; ``default``: measured by ``ncdepth-train`` unless ``nc.measures`` says otherwise;
    ``core``: one of the metrics every analysis computes (the others are asked for by name).
    """

    name: str
    label: str
    formula: str
    anchor: str
    collapse: float | None
    needs: tuple[str, ...]
    core: bool = True
    default: bool = True


def _core(name: str, label: str, formula: str, collapse: float, *needs: str) -> MetricSpec:
    return MetricSpec(name, label, formula, "the-metrics", collapse, ("means", *needs))


METRICS: tuple[MetricSpec, ...] = (
    _core("nc1", "NC1", "`Tr(Σ_W Σ_B⁺) / C`", 0.0, "scatter"),
    _core(
        "nc1_rank_normalized",
        "NC1 per direction",
        "`Tr(Σ_W Σ_B⁺) / r`, `r = rank(Σ_B)` (the eigenvalues kept)",
        0.0,
        "scatter",
    ),
    _core("nc1_trace_ratio", "NC1 (trace ratio)", "`Tr(Σ_W) / Tr(Σ_B)`", 0.0, "variances"),
    _core(
        "cdnv",
        "CDNV",
        "mean over the `C(C−1)/2` pairs `c < c'` of `(var_c + var_{c'}) / (2 ‖μ_c − μ_{c'}‖²)`",
        0.0,
        "variances",
    ),
    _core("ncc_acc", "NCC accuracy", "`(1/N) #{i : argmin_c ‖h_i − ν_c‖ = y_i}`", 1.0, "ncc"),
    _core("nc2_equinorm", "NC2 (equinorm)", "`std_c(‖μ_c − μ_G‖) / mean_c(‖μ_c − μ_G‖)`", 0.0),
    _core(
        "nc2_equiangle",
        "NC2 (equiangle)",
        "`std` (ddof = 1) over the `C(C−1)` **ordered** pairs `c ≠ c'` of `cos(μ_c − μ_G, μ_{c'} − μ_G)`",
        0.0,
    ),
    _core(
        "nc2_maxangle",
        "NC2 (max-angle)",
        "mean over `c ≠ c'` of `|cos(μ_c − μ_G, μ_{c'} − μ_G) + 1/(C − 1)|`",
        0.0,
    ),
    _core(
        "nc2_etf",
        "NC2 (distance to the ETF)",
        "`‖ G/‖G‖_F − (I − 11ᵀ/C)/‖I − 11ᵀ/C‖_F ‖_F`, `G = M̃ᵀM̃` (`C × C`)",
        0.0,
    ),
    _core("nc3", "NC3", "`‖ Wᵀ/‖W‖_F − M̃/‖M̃‖_F ‖_F²` (squared)", 0.0, "weight"),
    _core(
        "nc4",
        "NC4",
        "`(1/N) #{i : argmax_c (W h_i + b)_c ≠ argmin_c ‖h_i − ν_c‖}`",
        0.0,
        "ncc",
        "logits",
    ),
    MetricSpec(
        "fuzziness",
        "separation fuzziness",
        "`D = Tr(Σ_W Σ_B⁺) = C · nc1`",
        "separation-fuzziness-and-the-law-of-data-separation",
        0.0,
        ("means", "scatter"),
        core=False,
    ),
    MetricSpec(
        "nc2g_dist",
        "NC2 (distance-kernel uniformity)",
        "`Var_{c<c'} ‖u_c − u_{c'}‖`, `u_c = (μ_c − μ_G)/‖μ_c − μ_G‖`",
        "generalized-measures",
        0.0,
        ("means",),
        core=False,
    ),
    MetricSpec(
        "nc2g_log",
        "NC2 (log-kernel uniformity)",
        "`Var_{c<c'} log(1/‖u_c − u_{c'}‖)`",
        "generalized-measures",
        0.0,
        ("means",),
        core=False,
    ),
    MetricSpec(
        "erank_means",
        "effective rank of the class means",
        "`exp(−Σ_k p_k log p_k)`, `p_k = s_k / Σ_j s_j`, `s_k` the singular values of `M̃`",
        "generalized-measures",
        None,
        ("means",),
        core=False,
    ),
    MetricSpec(
        "nc3u_uni_dual",
        "NC3 (uniform duality)",
        "`Var_c (w_c · (μ_c − μ_G))` (ddof = 1)",
        "generalized-measures",
        0.0,
        ("means", "weight"),
        core=False,
    ),
    MetricSpec(
        "w_align",
        "weight–class-mean alignment",
        "`⟨AᵀA, M̃M̃ᵀ⟩_F / (‖AᵀA‖_F ‖M̃M̃ᵀ‖_F)`, `A` the weight of the linear map reading the layer",
        "generalized-measures",
        None,
        ("means", "layer_weight"),
        core=False,
    ),
    MetricSpec(
        "nc5_ood_dev",
        "NC5 (OoD orthogonality)",
        "`mean_c |cos(μ_c, μ_G^ood)|`",
        "generalized-measures",
        0.0,
        ("means", "ood"),
        core=False,
        default=False,
    ),
    MetricSpec(
        "probe_acc",
        "linear-probe accuracy",
        "`(1/N) #{i : argmax_c ((x_i − x̄) · V_c + N_c/N) = y_i}`, `V = (T + λI)⁻¹ Y`",
        "linear-probe",
        1.0,
        ("means", "moment"),
        core=False,
        default=False,
    ),
)

BY_NAME = {spec.name: spec for spec in METRICS}
CORE_NAMES = tuple(spec.name for spec in METRICS if spec.core)
"""The metrics every analysis computes, in report order."""
EXTRA_NAMES = tuple(spec.name for spec in METRICS if not spec.core)
"""The metrics computed when asked for by name (``NeuralCollapse(measures=...)``)."""
DEFAULT_EXTRA = tuple(spec.name for spec in METRICS if not spec.core and spec.default)
"""The extra metrics ``ncdepth-train`` measures by default (``nc.measures``)."""


def check_measures(measures: tuple[str, ...] | list[str], key: str = "measures") -> tuple[str, ...]:
    """``measures`` as a tuple of known extra metric names, in registry order; one line naming the
    ``key``, the unknown name and the allowed values otherwise (``ValueError``)."""
    if isinstance(measures, str):
        raise ValueError(f"{key} must be a list of metric names, got {measures!r}")
    for name in measures:
        if name not in EXTRA_NAMES:
            raise ValueError(f"{key}: unknown metric {name!r}; allowed: {', '.join(EXTRA_NAMES)}")
    return tuple(name for name in EXTRA_NAMES if name in measures)
