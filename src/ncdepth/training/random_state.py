"""``RandomStateCheckpoint``: save the global random generators in checkpoints, for exact resumes.

Lightning restores weights, optimizer, scheduler and loop counters from a checkpoint, but not the
global generators of ``random``, NumPy and torch (CPU and CUDA). They drive dropout and the
shuffling of a ``DataLoader`` without a generator of its own, so without them a resumed run trains
differently from the uninterrupted one. (A ``DataLoader`` given its own ``generator`` must have its
state saved by its datamodule's ``state_dict``/``load_state_dict``, which Lightning calls before
the loader is built.)
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch


class RandomStateCheckpoint(pl.Callback):
    """Stores the global random states at checkpoint time and restores them on resume (before any
    data is loaded), so that a run resumed from the end of epoch ``k`` draws the same random numbers
    from epoch ``k + 1`` on as the uninterrupted run (same device, same number of processes)."""

    def state_dict(self) -> dict[str, Any]:
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

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Set the global generators to the states of :meth:`state_dict`."""
        random.setstate(state_dict["python"])
        numpy_state = state_dict["numpy"]
        np.random.set_state(
            (
                "MT19937",
                numpy_state["keys"].numpy().astype(np.uint32),
                numpy_state["position"],
                numpy_state["has_gauss"],
                numpy_state["cached_gaussian"],
            )
        )
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
