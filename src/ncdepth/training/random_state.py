"""``RandomStateCheckpoint``: save the global random generators in checkpoints, for exact resumes.

Lightning restores weights, optimizer, scheduler and loop counters from a checkpoint, but not the
global generators of ``random``, NumPy and torch (CPU and CUDA). They drive dropout and the
shuffling of a ``DataLoader`` without a generator of its own, so without them a resumed run trains
differently from the uninterrupted one. (A ``DataLoader`` given its own ``generator`` must have its
state saved by its datamodule's ``state_dict``/``load_state_dict``, which Lightning calls before
the loader is built.)

Under data-parallel training every process has its own generators; the checkpoint (written by rank
zero) holds the states of all of them, gathered when it is written, and each process of the resumed
run takes back its own.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist


class RandomStateCheckpoint(pl.Callback):
    """Stores the global random states at checkpoint time and restores them on resume (before any
    data is loaded), so that a run resumed from the end of epoch ``k`` draws the same random numbers
    from epoch ``k + 1`` on as the uninterrupted run (same device, same number of processes)."""

    def __init__(self) -> None:
        self._rank = 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Note this process's rank, whose states :meth:`load_state_dict` takes back."""
        self._rank = trainer.global_rank

    def state_dict(self) -> dict[str, Any]:
        """``{"ranks": [state of process 0, state of process 1, ...]}`` (:func:`random_states`),
        gathered from every process (Lightning calls this on every process)."""
        state = random_states()
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return {"ranks": [state]}
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, state)
        return {"ranks": gathered}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Set the global generators to this process's states of :meth:`state_dict` (a checkpoint
        of one process, or of fewer processes than this rank, gives its rank zero's)."""
        ranks = state_dict.get("ranks", [state_dict])  # checkpoints written before per-rank states
        set_random_states(ranks[self._rank] if self._rank < len(ranks) else ranks[0])


def random_states() -> dict[str, Any]:
    """The states of ``random``, ``numpy.random``, torch's CPU and (if any) CUDA generators."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {  # plain types and tensors: loadable with weights_only=True
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_states(state: dict[str, Any]) -> None:
    """Set the global generators to the states of :func:`random_states`."""
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
