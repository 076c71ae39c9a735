"""Data for neural-collapse runs: one LightningDataModule over embedded and torchvision datasets.

``NCDataModule`` builds the train split (per-class subsampling, step/exponential imbalance or
explicit class counts, symmetric label noise that always changes the label) and serves shuffled
training batches plus fixed-order analysis batches with clean labels. ``DATASETS`` maps every
accepted dataset name to its ``DatasetSpec``.
"""

from ncdepth.data.datamodule import NCDataModule
from ncdepth.data.registry import DATASETS, DatasetSpec
from ncdepth.data.torchvision_datasets import DatasetUnavailableError

__all__ = ["DATASETS", "DatasetSpec", "DatasetUnavailableError", "NCDataModule"]
