"""The in-memory form every dataset loader returns, and a seeded stratified split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class DatasetSplits:
    """Train and test inputs with integer labels, all held in memory.

    ``transform`` (if not None) maps one stored input to the model input (e.g. uint8 pixels to
    standardised floats); loaders that standardise eagerly leave it None.
    """

    train_inputs: Tensor
    train_labels: Tensor
    test_inputs: Tensor
    test_labels: Tensor
    transform: Callable[[Tensor], Tensor] | None = None


def stratified_split(labels: Tensor, test_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded stratified split of ``range(len(labels))`` into ``(train_idx, test_idx)``.

    Class ``c`` (``N_c`` samples) gives ``round(test_size * N_c / N)`` samples to the test split,
    chosen by a permutation drawn from ``torch.Generator().manual_seed(seed)``; the remainder of
    the test budget goes to the classes with the largest rounding deficit. Both index tensors are
    sorted, disjoint, and together cover every sample.
    """
    generator = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(labels, return_counts=True)
    share = counts.double() * test_size / len(labels)
    per_class = share.floor().long()
    deficit = int(test_size - per_class.sum())
    per_class[torch.argsort(share - per_class, descending=True)[:deficit]] += 1
    test_parts = []
    for cls, n_test in zip(classes.tolist(), per_class.tolist(), strict=True):
        members = torch.nonzero(labels == cls).flatten()
        test_parts.append(members[torch.randperm(len(members), generator=generator)[:n_test]])
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    is_test[torch.cat(test_parts)] = True
    return torch.nonzero(~is_test).flatten(), torch.nonzero(is_test).flatten()
