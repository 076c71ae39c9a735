"""Per-sample input transforms: pixel standardisation and train-time augmentation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.transforms import v2


class Standardize(nn.Module):
    """``x -> (x / scale - mean[ch]) / std[ch]`` for a ``(channels, ...)`` tensor of any dtype."""

    def __init__(self, scale: float, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.scale = scale
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Standardise one image ``x`` of shape ``(channels, height, width)``."""
        return (x.float() / self.scale - self.mean) / self.std


def augmentation(image_size: int, padding: int, flip: bool) -> nn.Module:
    """Random crop of ``image_size`` after zero-padding by ``padding`` (+ horizontal flip if asked).

    Applied to standardised images, so the padding has the value of the mean pixel.
    """
    steps: list[nn.Module] = [v2.RandomCrop(image_size, padding=padding)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)
