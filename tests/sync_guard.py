"""A CPU-side guard against host synchronisations: counts the tensor operations that make the host wait for a
device (reading a value, or an output whose shape depends on the values).

On a GPU ``torch.cuda.set_sync_debug_mode("error")`` catches them; without one, this mode sees every torch
call on any device and counts those that would synchronise there: ``item``, ``tolist``, ``bool``/``int``/
``float`` of a tensor, ``nonzero``, ``equal``, ``masked_select`` and indexing with a boolean tensor.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

SYNCHRONISING = {
    "item",
    "tolist",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
    "nonzero",
    "argwhere",
    "equal",
    "masked_select",
    "unique",
    "numpy",
}


class CountSyncs(TorchFunctionMode):
    """``with CountSyncs() as syncs: ...`` then ``syncs.total`` and ``syncs.calls`` (``Counter`` by name)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in SYNCHRONISING or (name == "__getitem__" and _boolean_index(args[1:])):
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def _boolean_index(index: tuple) -> bool:
    items = index[0] if len(index) == 1 and isinstance(index[0], tuple) else index
    return any(isinstance(item, torch.Tensor) and item.dtype == torch.bool for item in items)
