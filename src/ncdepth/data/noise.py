"""Symmetric label noise that always changes the label."""

from __future__ import annotations

import torch
from torch import Tensor


def apply_label_noise(
    labels: Tensor, fraction: float, num_classes: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Relabel exactly ``k = round(fraction * n)`` of the ``n`` labels; return ``(noisy, mask)``.

    The ``k`` samples are a uniform random subset; each gets ``(y + U) mod C`` with ``U`` uniform
    on ``{1, ..., C-1}``, i.e. a label uniform over the *other* ``C - 1`` classes, so a new label
    never equals the old one: ``mask == (noisy != labels)`` and the fraction of wrong labels is
    exactly ``k / n``. ``labels`` is not modified.
    """
    n = len(labels)
    k = round(fraction * n)
    chosen = torch.randperm(n, generator=generator)[:k]
    offsets = torch.randint(1, num_classes, (k,), generator=generator)
    noisy = labels.clone()
    noisy[chosen] = (labels[chosen] + offsets) % num_classes
    mask = torch.zeros(n, dtype=torch.bool)
    mask[chosen] = True
    return noisy, mask
