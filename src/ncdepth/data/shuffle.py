"""``ResumableShuffle``: a fresh random order every epoch that a checkpoint can resume mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler


class ResumableShuffle(Sampler[int]):
    """Indices ``0..n-1`` in a new order each epoch: epoch ``e`` is ``torch.randperm(n)`` drawn from
    ``generator`` in the state it had after epoch ``e - 1``.

    :meth:`state_dict` (given how many samples of the current epoch were trained on) and
    :meth:`load_state_dict` let a run resumed from any batch boundary continue with exactly the
    indices the uninterrupted run would have used: the epoch's permutation is drawn again from the
    generator state saved at its start and the consumed samples are skipped.
    """

    def __init__(self, num_samples: int, generator: torch.Generator) -> None:
        self.num_samples = num_samples
        self.generator = generator
        self._epoch_start = generator.get_state()
        self._resume_skip = 0

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        skip, self._resume_skip = self._resume_skip, 0
        self._epoch_start = self.generator.get_state()
        order = torch.randperm(self.num_samples, generator=self.generator)
        return iter(order[skip:].tolist())

    def state_dict(self, consumed: int) -> dict[str, Any]:
        """The state to resume after ``consumed`` samples of the current epoch (0, or all of
        them, at an epoch boundary: then the next epoch draws a new permutation)."""
        if 0 < consumed < self.num_samples:
            return {"generator": self._epoch_start, "skip": consumed}
        return {"generator": self.generator.get_state(), "skip": 0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`: the next ``__iter__`` continues where it was saved."""
        self.generator.set_state(state["generator"])
        self._resume_skip = int(state["skip"])
