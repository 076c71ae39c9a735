"""Validated settings of one ``ncdepth-kernels`` job (``ncdepth/conf/kernels.yaml``).

:func:`parse_config` turns the composed config into frozen dataclasses, or raises a ``ValueError``
that names the offending key and what it allows, before any computation starts. Each section
(``kernel``, ``adaptive``, ``train``) is built by :func:`ncdepth.validation.from_node` and checked
by its dataclass's ``__post_init__``; every key is required.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from itertools import pairwise
from typing import Any

from ncdepth.theory.gaussian_data import CLASS_TARGETS
from ncdepth.theory.kernels import ACTIVATIONS
from ncdepth.validation import (
    check_choice,
    check_int,
    check_int_list,
    check_keys,
    check_number,
    from_node,
    is_list,
)

FCN2_TARGET = "ncdepth.models.FCN2"


@dataclass(frozen=True)
class DataSettings:
    """The Gaussian set, from the config's top-level keys. ``class_sizes`` may be given as ``None``
    (balanced: ``n / num_classes`` each) or a list; it is resolved to a tuple of counts."""

    seed: int
    n: int
    d0: int
    num_classes: int
    class_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed", check_int("seed", self.seed, minimum=0))
        n = check_int("n", self.n, minimum=2)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "d0", check_int("d0", self.d0, minimum=1))
        if self.num_classes not in CLASS_TARGETS:
            raise ValueError(f"num_classes must be one of {sorted(CLASS_TARGETS)}, got {self.num_classes!r}")
        num_classes = int(self.num_classes)
        if self.class_sizes is None:
            if n % num_classes:
                raise ValueError(
                    f"n must be a multiple of num_classes={num_classes} when class_sizes is null, got {n}"
                )
            sizes = [n // num_classes] * num_classes
        else:
            sizes = check_int_list("class_sizes", self.class_sizes, minimum=1)
            if len(sizes) != num_classes or sum(sizes) != n:
                raise ValueError(
                    f"class_sizes must be null or {num_classes} counts (num_classes) summing to n={n}, "
                    f"got {sizes}"
                )
        object.__setattr__(self, "num_classes", num_classes)
        object.__setattr__(self, "class_sizes", tuple(sizes))


@dataclass(frozen=True)
class KernelSettings:
    """``kernel.*``: NNGP and NTK, one of each per activation."""

    activations: tuple[str, ...]
    weight_var: float
    bias_var: float

    def __post_init__(self) -> None:
        activations = self.activations
        if not is_list(activations) or not activations:
            raise ValueError(
                f"kernel.activations must be a non-empty list of {list(ACTIVATIONS)}, got {activations!r}"
            )
        for activation in activations:
            check_choice("kernel.activations[*]", activation, ACTIVATIONS)
        if len(set(activations)) != len(activations):
            raise ValueError(f"kernel.activations must not repeat an activation, got {list(activations)}")
        object.__setattr__(self, "activations", tuple(activations))
        weight_var = check_number("kernel.weight_var", self.weight_var, minimum=0.0, inclusive=False)
        object.__setattr__(self, "weight_var", weight_var)
        bias_var = check_number("kernel.bias_var", self.bias_var, minimum=0.0, inclusive=True)
        object.__setattr__(self, "bias_var", bias_var)


@dataclass(frozen=True)
class AdaptiveSettings:
    """``adaptive.*``: keyword arguments of :func:`ncdepth.theory.adaptive.adaptive_kernel` (its own
    checks apply too)."""

    width: float
    weight_var: float
    readout_var: float
    noise_var: float
    anneal: tuple[float, ...]
    damping: float
    tol: float
    max_iter: int

    def __post_init__(self) -> None:
        anneal = self.anneal
        if not is_list(anneal):
            raise ValueError(
                f"adaptive.anneal must be a list of decreasing multiples > 1 of width, got {anneal!r}"
            )
        for index, factor in enumerate(anneal):
            check_number(f"adaptive.anneal[{index}]", factor, minimum=1.0, inclusive=False)
        if any(a <= b for a, b in pairwise(anneal)):
            raise ValueError(f"adaptive.anneal must be strictly decreasing, got {list(anneal)}")
        damping = check_number("adaptive.damping", self.damping, minimum=0.0, inclusive=False)
        if damping > 1:
            raise ValueError(f"adaptive.damping must lie in (0, 1], got {damping}")
        for key in ("width", "weight_var", "readout_var", "noise_var", "tol"):
            value = check_number(f"adaptive.{key}", getattr(self, key), minimum=0.0, inclusive=False)
            object.__setattr__(self, key, value)
        object.__setattr__(self, "anneal", tuple(float(factor) for factor in anneal))
        object.__setattr__(self, "damping", damping)
        object.__setattr__(self, "max_iter", check_int("adaptive.max_iter", self.max_iter, minimum=1))


@dataclass(frozen=True)
class TrainSettings:
    """``train.*``: full-batch SGD on the mean squared error."""

    lr: float
    steps: int
    momentum: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", check_number("train.lr", self.lr, minimum=0.0, inclusive=False))
        object.__setattr__(self, "steps", check_int("train.steps", self.steps, minimum=0))
        momentum = check_number("train.momentum", self.momentum, minimum=0.0, inclusive=True)
        if momentum >= 1:
            raise ValueError(f"train.momentum must lie in [0, 1), got {momentum}")
        object.__setattr__(self, "momentum", momentum)


@dataclass(frozen=True)
class KernelJobConfig:
    """Everything one job needs; ``model`` holds the keyword arguments of ``FCN2`` (validated by
    its constructor, whose errors name ``model.*``)."""

    data: DataSettings
    kernel: KernelSettings
    adaptive: AdaptiveSettings
    model: dict[str, Any]
    train: TrainSettings


DATA_KEYS = tuple(field.name for field in fields(DataSettings))
TOP_LEVEL_KEYS = (*DATA_KEYS, "kernel", "adaptive", "model", "train")


def parse_config(cfg: Mapping[str, Any]) -> KernelJobConfig:
    """Validate the composed ``ncdepth/conf/kernels.yaml`` (a ``DictConfig``, whose interpolations
    resolve as each section is read, or plain containers) and return its settings; raises
    ``ValueError`` naming the key (``n``, ``class_sizes``, ``kernel.activations``, ``train.lr``, ...).
    ``model.*`` is checked before ``kernel.*`` and ``adaptive.*``, which take ``model.*`` by default,
    so a wrong model is named as such."""
    check_keys("", cfg, TOP_LEVEL_KEYS, required=TOP_LEVEL_KEYS)
    data = DataSettings(**{key: cfg[key] for key in DATA_KEYS})
    model = _model(cfg["model"])
    return KernelJobConfig(
        data=data,
        kernel=from_node(KernelSettings, "kernel", cfg["kernel"]),
        adaptive=from_node(AdaptiveSettings, "adaptive", cfg["adaptive"]),
        model=model,
        train=from_node(TrainSettings, "train", cfg["train"]),
    )


def _model(node: Mapping[str, Any]) -> dict[str, Any]:
    """``model.*`` without ``_target_``, which must be :data:`FCN2_TARGET`, as ``FCN2`` keywords."""
    node = dict(node)
    target = node.pop("_target_", None)
    if target != FCN2_TARGET:
        raise ValueError(f"model._target_ must be {FCN2_TARGET} (model=fcn2), got {target!r}")
    if node.get("depth_linear", 0) != 0:
        raise ValueError(
            f"model.depth_linear must be 0 (the kernels are those of a two-layer net), got {node['depth_linear']!r}"
        )
    if node.get("embedding", "post") != "post":
        raise ValueError(
            f"model.embedding must be 'post' (the kernels are of the post-activations), got {node['embedding']!r}"
        )
    check_int("model.width", node.get("width"), minimum=1)
    check_number("model.weight_var", node.get("weight_var"), minimum=0.0, inclusive=False)
    check_number("model.bias_var", node.get("bias_var"), minimum=0.0, inclusive=True)
    return node
