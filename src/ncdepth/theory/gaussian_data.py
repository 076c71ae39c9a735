"""Kothapalli & Tirer's Gaussian classification sets, as regression data for kernel experiments.

Class ``c`` has the scalar target ``t_c`` and inputs ``x ~ N(2 t_c 1, 0.25 I)`` in ``d0`` dimensions
(``1`` the all-ones vector, standard deviation 0.5 per coordinate):

* two classes: targets ``-1, +1``, means ``-2 1`` and ``+2 1`` (the paper's set);
* four classes: targets ``-3, -1, 1, 3``, means ``-6 1, -2 1, 2 1, 6 1`` — our choice, which keeps
  the two-class set's gap of ``4`` per coordinate between neighbouring class means.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

CLASS_TARGETS: dict[int, tuple[float, ...]] = {2: (-1.0, 1.0), 4: (-3.0, -1.0, 1.0, 3.0)}
MEAN_PER_TARGET = 2.0
CLASS_STD = 0.5


def gaussian_classes(
    class_sizes: int | Sequence[int], dim: int, *, seed: int, num_classes: int = 2
) -> tuple[Tensor, Tensor, Tensor]:
    """Sample the Gaussian set of the module docstring.

    ``class_sizes`` is the number of samples per class (an ``int``: balanced) or one count per
    class. Rows are grouped by class, in class order. The same ``seed`` gives the same data on every
    machine (a CPU ``torch.Generator``). Returns ``x`` float64 ``(N, dim)``, ``labels`` int64
    ``(N,)`` in ``0..num_classes-1`` and ``targets`` float64 ``(N,)``.
    """
    if num_classes not in CLASS_TARGETS:
        raise ValueError(f"num_classes must be one of {sorted(CLASS_TARGETS)}, got {num_classes}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
    sizes = [class_sizes] * num_classes if isinstance(class_sizes, int) else list(class_sizes)
    if len(sizes) != num_classes or any(not isinstance(n, int) or n < 1 for n in sizes):
        raise ValueError(
            f"class_sizes must be an integer >= 1 or {num_classes} such integers, got {class_sizes!r}"
        )
    generator = torch.Generator().manual_seed(seed)
    class_targets = torch.tensor(CLASS_TARGETS[num_classes], dtype=torch.float64)
    labels = torch.repeat_interleave(torch.arange(num_classes), torch.tensor(sizes))
    targets = class_targets[labels]
    noise = torch.randn(labels.shape[0], dim, generator=generator, dtype=torch.float64)
    x = MEAN_PER_TARGET * targets[:, None] + CLASS_STD * noise
    return x, labels, targets
