"""Validated settings of a training run: loss, optimizer, scheduler, NC analysis, top-level keys.

Each dataclass checks its fields in ``__post_init__`` and raises a ``ValueError`` that names the
config key (``optimizer.lr``, ``nc.every_n_epochs``, ...) and the allowed values, so a wrong
value fails at start-up, before anything is written. :func:`ncdepth.validation.from_node` builds
one from its Hydra node (``from_node(LossConfig, "loss", cfg.loss)``) and rejects keys the
dataclass does not know; keys left out take the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real

from ncdepth.metrics.functional import EMPTY_CLASS_POLICIES
from ncdepth.metrics.registry import DEFAULT_EXTRA, check_measures
from ncdepth.validation import check_bool, check_choice, check_int, check_number, is_list

LOSSES = ("ce", "mse")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("multistep", "cosine", "constant")
POOLS = ("flatten", "avg")
TOP_LEVEL_KEYS = (
    "model",
    "data",
    "optimizer",
    "scheduler",
    "trainer",
    "callbacks",
    "logger",
    "loss",
    "nc",
    "seed",
    "ckpt_path",
    "auto_resume",
    "checkpoint",
)


@dataclass(frozen=True)
class LossConfig:
    """``loss.*``: the training objective.

    ``name="ce"``: cross-entropy of the logits. ``name="mse"``: mean squared error between the
    logits and ``mse_scale`` times the one-hot label, ``mean_{i,c} (z_ic - mse_scale [y_i = c])^2``.
    ``feature_decay`` ``lambda_H`` adds ``(lambda_H / 2) mean_i ||h_i||^2`` of the classifier's input
    ``h`` (the feature penalty of the unconstrained-features model).
    """

    name: str = "ce"
    mse_scale: float = 1.0
    feature_decay: float = 0.0

    def __post_init__(self) -> None:
        check_choice("loss.name", self.name, LOSSES)
        check_number("loss.mse_scale", self.mse_scale, minimum=0.0, inclusive=False)
        check_number("loss.feature_decay", self.feature_decay, minimum=0.0, inclusive=True)


@dataclass(frozen=True)
class OptimizerConfig:
    """``optimizer.*``: SGD (``momentum``, ``nesterov``), Adam or AdamW (``betas``).

    ``weight_decay`` applies to every parameter except the classifier's, which gets
    ``classifier_weight_decay`` (``None``: the same as ``weight_decay``).
    """

    name: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 5e-4
    classifier_weight_decay: float | None = None

    def __post_init__(self) -> None:
        check_choice("optimizer.name", self.name, OPTIMIZERS)
        check_number("optimizer.lr", self.lr, minimum=0.0, inclusive=False)
        momentum = check_number("optimizer.momentum", self.momentum, minimum=0.0, inclusive=True)
        if momentum >= 1.0:
            raise ValueError(f"optimizer.momentum must be a number in [0, 1), got {momentum!r}")
        check_bool("optimizer.nesterov", self.nesterov)
        if self.nesterov and momentum == 0.0:
            raise ValueError("optimizer.nesterov=true needs optimizer.momentum > 0, got 0")
        betas = list(self.betas)
        if len(betas) != 2 or not all(_in_unit_interval(beta) for beta in betas):
            raise ValueError(f"optimizer.betas must be two numbers in [0, 1), got {betas!r}")
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        check_number("optimizer.weight_decay", self.weight_decay, minimum=0.0, inclusive=True)
        if self.classifier_weight_decay is not None:
            check_number(
                "optimizer.classifier_weight_decay",
                self.classifier_weight_decay,
                minimum=0.0,
                inclusive=True,
            )

    @property
    def effective_classifier_weight_decay(self) -> float:
        """``classifier_weight_decay``, or ``weight_decay`` when it is unset."""
        if self.classifier_weight_decay is None:
            return float(self.weight_decay)
        return float(self.classifier_weight_decay)


@dataclass(frozen=True)
class SchedulerConfig:
    """``scheduler.*``: the learning-rate schedule, stepped once per epoch.

    ``multistep``: ``lr * gamma^k`` after the ``k``-th epoch of ``milestones``; ``cosine``:
    ``lr * (1 + cos(pi t / T)) / 2`` with ``T = trainer.max_epochs``; ``constant``: ``lr``.
    """

    name: str = "constant"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1

    def __post_init__(self) -> None:
        check_choice("scheduler.name", self.name, SCHEDULERS)
        milestones = [check_int("scheduler.milestones[]", m, minimum=1) for m in self.milestones]
        if milestones != sorted(set(milestones)):
            raise ValueError(f"scheduler.milestones must be strictly increasing epochs, got {milestones!r}")
        object.__setattr__(self, "milestones", tuple(milestones))
        gamma = check_number("scheduler.gamma", self.gamma, minimum=0.0, inclusive=False)
        if gamma > 1.0:
            raise ValueError(f"scheduler.gamma must be a number in (0, 1], got {gamma!r}")


@dataclass(frozen=True)
class AnalysisConfig:
    """``nc.*``: when and how the neural-collapse callback measures.

    Every ``every_n_epochs`` epochs (and before the first and after the last), every layer is
    measured on the train and test splits; effective depth is reported for each of ``eps`` (one
    number is a list of one).
    ``cache_features_mb`` > 0 keeps pass-1 embeddings in memory when all of them fit, so pass 2
    skips the forward pass. ``pool`` (``"flatten"`` or ``"avg"``) is the callback's one pooling
    setting: it pools tapped layers (``LayerTap``) and the layers of feature functions and ncdepth
    models (``NeuralCollapse``) alike. ``full_covariance_max_dim`` and ``measures`` (the extra metrics of
    ``ncdepth.metrics.registry``, by name) go to ``NeuralCollapse``, and so do ``empty_classes``
    (``"error"``, ``"nan"`` or ``"drop"``) and ``min_class_count``, for label sets of which a split
    holds only a part (token level: ``"drop"``; not in ``train.yaml``, ``+nc.empty_classes=drop``).
    """

    every_n_epochs: int = 5
    eps: tuple[float, ...] = (0.01, 0.05, 0.1)
    cache_features_mb: float = 0.0
    pool: str = "flatten"
    full_covariance_max_dim: int = 0
    measures: tuple[str, ...] = DEFAULT_EXTRA
    empty_classes: str = "error"
    min_class_count: int = 1

    def __post_init__(self) -> None:
        check_int("nc.every_n_epochs", self.every_n_epochs, minimum=1)
        eps = list(self.eps) if is_list(self.eps) else [self.eps]  # nc.eps=0.05: a list of one
        if not eps or not all(
            isinstance(e, Real) and not isinstance(e, bool) and 0.0 <= e < 1.0 for e in eps
        ):
            raise ValueError(
                f"nc.eps must be a number or a non-empty list of numbers in [0, 1), got {self.eps!r}"
            )
        object.__setattr__(self, "eps", tuple(float(e) for e in eps))
        check_number("nc.cache_features_mb", self.cache_features_mb, minimum=0.0, inclusive=True)
        check_choice("nc.pool", self.pool, POOLS)
        check_int("nc.full_covariance_max_dim", self.full_covariance_max_dim, minimum=0)
        object.__setattr__(self, "measures", check_measures(list(self.measures), "nc.measures"))
        check_choice("nc.empty_classes", self.empty_classes, EMPTY_CLASS_POLICIES)
        check_int("nc.min_class_count", self.min_class_count, minimum=1)


@dataclass(frozen=True)
class CheckpointConfig:
    """``checkpoint.*``: besides the checkpoint after every epoch, one every ``every_minutes`` of
    wall clock within an epoch (0: none), for epochs that outlive a cluster's time slot."""

    every_minutes: float = 0.0

    def __post_init__(self) -> None:
        check_number("checkpoint.every_minutes", self.every_minutes, minimum=0.0, inclusive=True)


def _in_unit_interval(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and 0.0 <= value < 1.0


__all__ = [
    "AnalysisConfig",
    "CheckpointConfig",
    "LossConfig",
    "OptimizerConfig",
    "SchedulerConfig",
]
