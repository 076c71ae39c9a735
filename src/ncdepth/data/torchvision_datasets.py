"""torchvision datasets (MNIST, Fashion-MNIST, CIFAR-10/100, SVHN), held in memory as uint8.

Pixels stay uint8 ``(N, C, H, W)`` in memory and are standardised per sample with the dataset's
standard per-channel mean and std (``Standardize(255, mean, std)``). Nothing is downloaded unless
``data.download=true``; without it, missing files raise ``DatasetUnavailableError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision import datasets

from ncdepth.data.splits import DatasetSplits
from ncdepth.data.transforms import Standardize


class DatasetUnavailableError(RuntimeError):
    """A torchvision dataset's files are missing and could not (or may not) be downloaded."""


@dataclass(frozen=True)
class TorchvisionSource:
    """Where a torchvision dataset lives under ``data_dir`` and how to standardise it."""

    name: str
    expected_files: tuple[str, ...]  # relative to data_dir
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _mnist_files(folder: str) -> tuple[str, ...]:
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    stems += ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return tuple(f"{folder}/raw/{stem}" for stem in stems)


SOURCES: dict[str, TorchvisionSource] = {
    "mnist": TorchvisionSource("mnist", _mnist_files("MNIST"), (0.1307,), (0.3081,)),
    "fashion_mnist": TorchvisionSource("fashion_mnist", _mnist_files("FashionMNIST"), (0.2860,), (0.3530,)),
    "cifar10": TorchvisionSource(
        "cifar10", ("cifar-10-batches-py",), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    ),
    "cifar100": TorchvisionSource(
        "cifar100", ("cifar-100-python",), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    ),
    "svhn": TorchvisionSource(
        "svhn", ("train_32x32.mat", "test_32x32.mat"), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
    ),
}


def _open(name: str, root: Path, train: bool, download: bool) -> Any:
    """The torchvision dataset object for one split."""
    if name == "svhn":
        return datasets.SVHN(root, split="train" if train else "test", download=download)
    cls = {
        "mnist": datasets.MNIST,
        "fashion_mnist": datasets.FashionMNIST,
        "cifar10": datasets.CIFAR10,
        "cifar100": datasets.CIFAR100,
    }[name]
    return cls(root, train=train, download=download)


def _as_tensors(dataset: Any) -> tuple[Tensor, Tensor]:
    """``(pixels uint8 (N, C, H, W), labels int64 (N,))`` from a torchvision dataset object."""
    if isinstance(dataset, datasets.MNIST):  # FashionMNIST subclasses MNIST: (N, H, W) tensor
        return dataset.data.unsqueeze(1), dataset.targets.long()
    if isinstance(dataset, datasets.SVHN):  # (N, C, H, W) array, labels already in 0..9
        return torch.from_numpy(dataset.data), torch.from_numpy(dataset.labels.astype(np.int64))
    return torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(dataset.targets)


def _open_checked(name: str, data_dir: Path, train: bool, download: bool) -> Any:
    """``_open`` that raises ``DatasetUnavailableError`` (directory, expected files, flag) on failure."""
    source = SOURCES[name]
    missing = [f for f in source.expected_files if not (data_dir / f).exists()]
    if not download and missing:
        raise DatasetUnavailableError(
            f"dataset '{name}' is not in data directory '{data_dir.resolve()}': expected "
            f"{list(source.expected_files)} there, missing {missing}. Set data.download=true to "
            "download it (needs network access), or point data.data_dir at a copy."
        )
    try:
        return _open(name, data_dir, train, download)
    except Exception as error:  # network errors come in many types; report them all the same way
        raise DatasetUnavailableError(
            f"could not {'download' if download else 'open'} dataset '{name}' into "
            f"'{data_dir.resolve()}' (expected {list(source.expected_files)}): {error}"
        ) from error


def prepare_torchvision(name: str, data_dir: Path, download: bool) -> None:
    """Make sure both splits of ``name`` are in ``data_dir``, downloading them if ``download``.

    Raises ``DatasetUnavailableError`` naming the directory, the expected files and the
    ``data.download`` flag when files are missing and may not, or could not, be downloaded.
    """
    for train in (True, False):
        _open_checked(name, data_dir, train, download)


def load_torchvision(name: str, data_dir: Path, download: bool) -> DatasetSplits:
    """Both splits of torchvision dataset ``name`` as uint8 tensors with a per-sample standardiser."""
    train_inputs, train_labels = _as_tensors(_open_checked(name, data_dir, True, download))
    test_inputs, test_labels = _as_tensors(_open_checked(name, data_dir, False, download))
    source = SOURCES[name]
    standardize = Standardize(255.0, source.mean, source.std)
    return DatasetSplits(train_inputs, train_labels, test_inputs, test_labels, standardize)
