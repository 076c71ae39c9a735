"""``DATASETS``: every dataset name the data module accepts, with its shape, loader and augmentation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ncdepth.data import embedded
from ncdepth.data.splits import DatasetSplits
from ncdepth.data.torchvision_datasets import load_torchvision, prepare_torchvision

Loader = Callable[[Path, bool, dict[str, Any]], DatasetSplits]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: how to load it and what it looks like.

    ``shape(options)`` returns ``(num_classes, input_shape)`` without loading anything.
    ``crop_padding`` is the zero-padding of the random-crop augmentation (None: not an image, no
    augmentation); ``flip`` adds horizontal flips, used only where a mirror image keeps its class
    and stays in distribution (CIFAR; not digits, house numbers or the left-facing Fashion items).
    ``prepare(data_dir, download)`` (torchvision only) downloads once, before ``load``.
    """

    name: str
    load: Loader
    shape: Callable[[dict[str, Any]], tuple[int, tuple[int, ...]]]
    crop_padding: int | None = None
    flip: bool = False
    defaults: Mapping[str, Any] = field(default_factory=dict)
    check_options: Callable[[dict[str, Any]], None] = lambda options: None
    prepare: Callable[[Path, bool], None] | None = None

    def resolve_options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """``defaults`` updated by ``options``; unknown keys and bad values raise ValueError."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"data.dataset_options has unknown keys {unknown} for dataset '{self.name}'; "
                f"allowed keys: {sorted(self.defaults)}"
            )
        resolved = {**self.defaults, **options}
        self.check_options(resolved)
        return resolved


def _fixed(num_classes: int, input_shape: tuple[int, ...]) -> Callable[[dict[str, Any]], Any]:
    return lambda options: (num_classes, input_shape)


def _torchvision(name: str, num_classes: int, input_shape: tuple[int, ...], flip: bool) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        load=lambda data_dir, download, options: load_torchvision(name, data_dir, download),
        shape=_fixed(num_classes, input_shape),
        crop_padding=input_shape[-1] // 8,
        flip=flip,
        prepare=partial(prepare_torchvision, name),
    )


DATASETS: dict[str, DatasetSpec] = {
    "mnist5k": DatasetSpec(
        name="mnist5k",
        load=embedded.load_mnist5k,
        shape=_fixed(10, (1, 28, 28)),
        crop_padding=3,
        defaults=embedded.MNIST5K_DEFAULTS,
        check_options=lambda options: embedded.check_split_options(options, 5000, "mnist5k"),
    ),
    "digits": DatasetSpec(
        name="digits",
        load=embedded.load_digits,
        shape=_fixed(10, (1, 8, 8)),
        crop_padding=1,
        defaults=embedded.DIGITS_DEFAULTS,
        check_options=lambda options: embedded.check_split_options(options, 1797, "digits"),
    ),
    "mnist1d": DatasetSpec(
        name="mnist1d",
        load=embedded.load_mnist1d,
        shape=_fixed(10, (1, 40)),
        defaults=embedded.MNIST1D_DEFAULTS,
        check_options=embedded.check_mnist1d_options,
    ),
    "gaussian": DatasetSpec(
        name="gaussian",
        load=embedded.load_gaussian,
        shape=lambda options: (options["num_classes"], (options["dim"],)),
        defaults=embedded.GAUSSIAN_DEFAULTS,
        check_options=embedded.check_gaussian_options,
    ),
    "mnist": _torchvision("mnist", 10, (1, 28, 28), flip=False),
    "fashion_mnist": _torchvision("fashion_mnist", 10, (1, 28, 28), flip=False),
    "cifar10": _torchvision("cifar10", 10, (3, 32, 32), flip=True),
    "cifar100": _torchvision("cifar100", 100, (3, 32, 32), flip=True),
    "svhn": _torchvision("svhn", 10, (3, 32, 32), flip=False),
}
