"""Per-class train counts (step / exponential imbalance) and seeded per-class subsampling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

IMBALANCE_KINDS = (None, "step", "exp")


def imbalanced_counts(kind: str, n_max: int, ratio: float, num_classes: int) -> list[int]:
    """Per-class counts with ``n_max / n_min = ratio`` (rounded to the nearest integer, >= 1).

    ``"step"``: classes ``0 .. C//2 - 1`` (the majority) keep ``n_max``, the others get
    ``n_max / ratio``. ``"exp"``: ``n_c = n_max * ratio ** (-c / (C - 1))``. A ratio above
    ``n_max`` (less than one sample in the rarest class) raises ``ValueError`` naming ``n_max``,
    the largest ratio the data allows.
    """
    if ratio > n_max:
        raise ValueError(
            f"data.imbalance_ratio={ratio:g} is more than the data allows: the largest class keeps "
            f"{n_max} samples, so the largest possible ratio is {n_max} (1 sample in the rarest class)"
        )
    if kind == "step":
        raw = [n_max if c < num_classes // 2 else n_max / ratio for c in range(num_classes)]
    elif kind == "exp":
        raw = [n_max * ratio ** (-c / (num_classes - 1)) for c in range(num_classes)]
    else:
        raise ValueError(f"data.imbalance must be one of ['step', 'exp'] here, got {kind!r}")
    return [max(1, round(value)) for value in raw]


def select_per_class(labels: Tensor, counts: Sequence[int], generator: torch.Generator) -> Tensor:
    """Sorted indices holding ``counts[c]`` samples of each class ``c``, chosen at random.

    Class ``c`` takes the first ``counts[c]`` entries of one random permutation of its members
    (permutations drawn in class order from ``generator``), so for a fixed seed smaller counts
    select subsets of larger ones. Raises ValueError if a class has fewer samples than asked.
    """
    chosen = []
    for cls, count in enumerate(counts):
        members = torch.nonzero(labels == cls).flatten()
        if count > len(members):
            raise ValueError(
                f"class {cls} has {len(members)} train samples but {count} were asked for "
                "(check data.samples_per_class, data.class_counts, data.imbalance_ratio)"
            )
        chosen.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return torch.cat(chosen).sort().values
