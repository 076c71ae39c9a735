"""Validated settings of one ``ncdepth-kernels`` job (``ncdepth/conf/kernels.yaml``).

:func:`parse_config` turns the composed Hydra config into frozen dataclasses, or raises a
``ValueError`` that names the offending key and what it allows, before any computation starts.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from itertools import pairwise
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ncdepth.models.validation import check_choice, check_int, check_int_list, check_number
from ncdepth.theory.gaussian_data import CLASS_TARGETS
from ncdepth.theory.kernels import ACTIVATIONS

FCN2_TARGET = "ncdepth.models.FCN2"
TOP_LEVEL_KEYS = ("seed", "n", "d0", "num_classes", "class_sizes", "kernel", "adaptive", "model", "train")


@dataclass(frozen=True)
class DataSettings:
    """The Gaussian set: ``class_sizes`` resolved (balanced: ``n / num_classes`` each)."""

    seed: int
    n: int
    d0: int
    num_classes: int
    class_sizes: tuple[int, ...]


@dataclass(frozen=True)
class KernelSettings:
    """NNGP and NTK: one of each per activation."""

    activations: tuple[str, ...]
    weight_var: float
    bias_var: float


@dataclass(frozen=True)
class AdaptiveSettings:
    """Keyword arguments of :func:`ncdepth.theory.adaptive.adaptive_kernel` (its own checks apply)."""

    width: float
    weight_var: float
    readout_var: float
    noise_var: float
    anneal: tuple[float, ...]
    damping: float
    tol: float
    max_iter: int


@dataclass(frozen=True)
class TrainSettings:
    """Full-batch SGD on the mean squared error."""

    lr: float
    steps: int
    momentum: float


@dataclass(frozen=True)
class KernelJobConfig:
    """Everything one job needs; ``model`` holds the keyword arguments of ``FCN2`` (validated by
    its constructor, whose errors name ``model.*``)."""

    data: DataSettings
    kernel: KernelSettings
    adaptive: AdaptiveSettings
    model: dict[str, Any]
    train: TrainSettings


def parse_config(cfg: DictConfig) -> KernelJobConfig:
    """Validate the composed ``ncdepth/conf/kernels.yaml`` and return its settings; raises ``ValueError``
    naming the key (``n``, ``class_sizes``, ``kernel.activations``, ``train.lr``, ...)."""
    _check_keys("the config", list(cfg.keys()), TOP_LEVEL_KEYS, prefix="")
    data = _data(cfg)
    model = _model(cfg)  # before kernel.* and adaptive.*, which interpolate model.* by default
    return KernelJobConfig(
        data=data,
        kernel=_kernel(_section(cfg, "kernel", KernelSettings)),
        adaptive=_adaptive(_section(cfg, "adaptive", AdaptiveSettings)),
        model=model,
        train=_train(_section(cfg, "train", TrainSettings)),
    )


def _data(cfg: DictConfig) -> DataSettings:
    seed = check_int("seed", cfg.seed, minimum=0)
    n = check_int("n", cfg.n, minimum=2)
    d0 = check_int("d0", cfg.d0, minimum=1)
    if cfg.num_classes not in CLASS_TARGETS:
        raise ValueError(f"num_classes must be one of {sorted(CLASS_TARGETS)}, got {cfg.num_classes!r}")
    num_classes = int(cfg.num_classes)
    if cfg.class_sizes is None:
        if n % num_classes:
            raise ValueError(
                f"n must be a multiple of num_classes={num_classes} when class_sizes is null, got {n}"
            )
        sizes = [n // num_classes] * num_classes
    else:
        sizes = check_int_list("class_sizes", cfg.class_sizes, minimum=1)
        if len(sizes) != num_classes or sum(sizes) != n:
            raise ValueError(
                f"class_sizes must be null or {num_classes} counts (num_classes) summing to n={n}, got {sizes}"
            )
    return DataSettings(seed=seed, n=n, d0=d0, num_classes=num_classes, class_sizes=tuple(sizes))


def _kernel(node: dict[str, Any]) -> KernelSettings:
    activations = node["activations"]
    if not isinstance(activations, list) or not activations:
        raise ValueError(
            f"kernel.activations must be a non-empty list of {list(ACTIVATIONS)}, got {activations!r}"
        )
    for activation in activations:
        check_choice("kernel.activations[*]", activation, ACTIVATIONS)
    if len(set(activations)) != len(activations):
        raise ValueError(f"kernel.activations must not repeat an activation, got {activations}")
    return KernelSettings(
        activations=tuple(activations),
        weight_var=check_number("kernel.weight_var", node["weight_var"], minimum=0.0, inclusive=False),
        bias_var=check_number("kernel.bias_var", node["bias_var"], minimum=0.0, inclusive=True),
    )


def _adaptive(node: dict[str, Any]) -> AdaptiveSettings:
    anneal = node["anneal"]
    if not isinstance(anneal, list):
        raise ValueError(
            f"adaptive.anneal must be a list of decreasing multiples > 1 of width, got {anneal!r}"
        )
    for index, factor in enumerate(anneal):
        check_number(f"adaptive.anneal[{index}]", factor, minimum=1.0, inclusive=False)
    if any(a <= b for a, b in pairwise(anneal)):
        raise ValueError(f"adaptive.anneal must be strictly decreasing, got {anneal}")
    damping = check_number("adaptive.damping", node["damping"], minimum=0.0, inclusive=False)
    if damping > 1:
        raise ValueError(f"adaptive.damping must lie in (0, 1], got {damping}")
    positive = {
        key: check_number(f"adaptive.{key}", node[key], minimum=0.0, inclusive=False)
        for key in ("width", "weight_var", "readout_var", "noise_var", "tol")
    }
    return AdaptiveSettings(
        **positive,
        anneal=tuple(float(factor) for factor in anneal),
        damping=damping,
        max_iter=check_int("adaptive.max_iter", node["max_iter"], minimum=1),
    )


def _model(cfg: DictConfig) -> dict[str, Any]:
    node = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(node, dict)
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


def _train(node: dict[str, Any]) -> TrainSettings:
    return TrainSettings(
        lr=check_number("train.lr", node["lr"], minimum=0.0, inclusive=False),
        steps=check_int("train.steps", node["steps"], minimum=0),
        momentum=_momentum(node["momentum"]),
    )


def _momentum(value: object) -> float:
    momentum = check_number("train.momentum", value, minimum=0.0, inclusive=True)
    if momentum >= 1:
        raise ValueError(f"train.momentum must lie in [0, 1), got {momentum}")
    return momentum


def _section(cfg: DictConfig, name: str, settings: type) -> dict[str, Any]:
    """``cfg[name]`` as a plain dict (interpolations resolved) whose keys are exactly the fields of
    the dataclass ``settings``."""
    node = OmegaConf.to_container(cfg[name], resolve=True)
    if not isinstance(node, dict):
        raise ValueError(f"{name} must be a mapping, got {node!r}")
    _check_keys(name, list(node), [field.name for field in fields(settings)], prefix=f"{name}.")
    return node


def _check_keys(where: str, keys: list[str], allowed: tuple[str, ...] | list[str], prefix: str) -> None:
    unknown = [key for key in keys if key not in allowed]
    missing = [key for key in allowed if key not in keys]
    if unknown:
        raise ValueError(f"unknown key {prefix}{unknown[0]}; allowed keys of {where}: {sorted(allowed)}")
    if missing:
        raise ValueError(f"missing key {prefix}{missing[0]} in {where}")
