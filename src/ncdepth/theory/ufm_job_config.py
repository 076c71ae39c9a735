"""Validated settings of one ``ncdepth-ufm`` job (``ncdepth/conf/ufm.yaml`` documents every key).

``from_node(UFMJob, "", config)`` (:func:`ncdepth.validation.from_node`) builds one from the
composed config as plain containers: every key is required, unknown keys are refused, and
:class:`UFMJob` checks the values, raising a ``ValueError`` that names the first wrong key and
what it allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ncdepth.theory.ufm import INITS, LOSSES, METHODS, validate
from ncdepth.validation import check_bool, check_choice, check_int, check_number, from_node, is_list


@dataclass(frozen=True)
class Continuation:
    """``continuation``: ``stages`` decays below the target on the continuation path (0: no
    continuation family of starts) and ``start_factor`` in (0, 1), the first one's ratio to the
    target (:mod:`ncdepth.theory.ufm_starts`). A :class:`Continuation` is kept as it is."""

    stages: int
    start_factor: float

    def __post_init__(self) -> None:
        factor = check_number("continuation.start_factor", self.start_factor, minimum=0.0, inclusive=False)
        if factor >= 1:
            raise ValueError(f"continuation.start_factor must be a number in (0, 1), got {factor!r}")
        object.__setattr__(self, "stages", check_int("continuation.stages", self.stages, minimum=0))
        object.__setattr__(self, "start_factor", factor)


@dataclass(frozen=True)
class UFMJob:
    """One job: the arguments of :func:`ncdepth.theory.ufm.optimize` (``solver`` its ``method``,
    ``iterations`` its ``steps``), ``init`` one initialisation or a list of them, ``restarts`` seeds
    per initialisation, ``continuation`` (:class:`Continuation`), and ``threads`` for torch. Lists
    become tuples."""

    class_sizes: tuple[int, ...]
    depth: int
    weight_decay: float | tuple[float, ...]
    feature_decay: float
    bias: bool
    loss: str
    solver: str
    iterations: int
    lr: float | None
    width: int | None
    init: tuple[str, ...]
    restarts: int
    continuation: Continuation
    log_every: int
    seed: int
    threads: int

    def __post_init__(self) -> None:
        decay = tuple(self.weight_decay) if is_list(self.weight_decay) else self.weight_decay
        sizes = self.class_sizes
        if not is_list(sizes):
            raise ValueError(f"class_sizes must be a list of at least 2 integers >= 1, got {sizes!r}")
        sizes, _ = validate(tuple(sizes), self.depth, decay, self.feature_decay)
        width = None if self.width is None else check_int("width", self.width, minimum=len(sizes))
        checked = {
            "class_sizes": sizes,
            "weight_decay": decay,
            "bias": check_bool("bias", self.bias),
            "loss": check_choice("loss", self.loss, LOSSES),
            "solver": check_choice("solver", self.solver, METHODS),
            "iterations": check_int("iterations", self.iterations, minimum=1),
            "lr": None if self.lr is None else check_number("lr", self.lr, minimum=0.0, inclusive=False),
            "width": width,
            "init": _inits(self.init),
            "restarts": check_int("restarts", self.restarts, minimum=1),
            "continuation": self.continuation
            if isinstance(self.continuation, Continuation)
            else from_node(Continuation, "continuation", self.continuation),
            "log_every": check_int("log_every", self.log_every, minimum=1),
            "seed": check_int("seed", self.seed, minimum=0),
            "threads": check_int("threads", self.threads, minimum=1),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @property
    def has_closed_form(self) -> bool:
        """MSE, and balanced classes when there is a bias."""
        return self.loss == "mse" and not (self.bias and len(set(self.class_sizes)) > 1)


def _inits(value: Any) -> tuple[str, ...]:
    """``init``: one initialisation or a non-empty list of them, each one of ``INITS``."""
    values = list(value) if is_list(value) else [value]
    if not values:
        raise ValueError(f"init must be one of {list(INITS)} or a non-empty list of them, got {value!r}")
    return tuple(check_choice("init", item, INITS) for item in values)
