"""``ResumableShuffle``: a fresh random order every epoch, shared out among the processes of a
data-parallel run, that a checkpoint can resume mid-epoch."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DistributedSampler


class ResumableShuffle(DistributedSampler):
    """Indices ``0..n-1`` in a new order each epoch, process ``rank`` of ``num_replicas`` taking its
    share: epoch ``e``'s order is ``p = torch.randperm(n)`` drawn from ``generator`` in the state it
    had after epoch ``e - 1`` (the same on every process), padded to a multiple of
    ``num_replicas`` by repeating its first indices, and process ``r`` takes ``p[r::num_replicas]``,
    as ``DistributedSampler`` does (``ceil(n / num_replicas)`` indices each).

    :meth:`state_dict` (given how many samples of its share this process trained on in the current
    epoch: the same count on every process) and :meth:`load_state_dict` let a run resumed from any
    batch boundary continue with exactly the indices the uninterrupted run would have used: the
    epoch's order is drawn again from the generator state saved at its start and the consumed
    samples of each share are skipped.

    It is a ``DistributedSampler`` so that Lightning keeps it under DDP; Lightning would otherwise
    wrap it in one that materialises it and indexes it by its full length, which a resumed
    (shortened) epoch does not have. Its ``set_epoch`` is unused: the generator carries the epoch.
    """

    def __init__(self, generator: torch.Generator) -> None:  # no super().__init__: no dataset to size
        self.generator = generator
        self.dataset_size, self.num_replicas, self.rank = 0, 1, 0
        self.epoch = 0
        self._epoch_start = generator.get_state()
        self._resume_skip = 0

    def shard(self, dataset_size: int, num_replicas: int = 1, rank: int = 0) -> ResumableShuffle:
        """Serve ``dataset_size`` samples, this process being ``rank`` of ``num_replicas``."""
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.dataset_size, self.num_replicas, self.rank = dataset_size, num_replicas, rank
        return self

    def __len__(self) -> int:
        """This process's share of a whole epoch, ``ceil(n / num_replicas)``."""
        return math.ceil(self.dataset_size / self.num_replicas)

    def __iter__(self) -> Iterator[int]:
        skip, self._resume_skip = self._resume_skip, 0
        self._epoch_start = self.generator.get_state()
        order = torch.randperm(self.dataset_size, generator=self.generator)
        total = len(self) * self.num_replicas
        if total > self.dataset_size:
            order = order.repeat(math.ceil(total / self.dataset_size))[:total]
        return iter(order[self.rank :: self.num_replicas][skip:].tolist())

    def state_dict(self, consumed: int) -> dict[str, Any]:
        """The state to resume after ``consumed`` samples of this process's share of the current
        epoch (0, or all of them, at an epoch boundary: then the next epoch draws a new order)."""
        if 0 < consumed < len(self):
            return {"generator": self._epoch_start, "skip": consumed}
        return {"generator": self.generator.get_state(), "skip": 0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`: the next ``__iter__`` continues where it was saved."""
        self.generator.set_state(state["generator"])
        self._resume_skip = int(state["skip"])
