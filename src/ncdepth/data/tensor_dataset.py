"""A map-style dataset over in-memory inputs with one or more label tensors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor
from torch.utils.data import Dataset


class LabelledTensorDataset(Dataset):
    """Item ``i`` is ``(transform(inputs[i]), *(t[i] for t in targets))``.

    ``targets`` is e.g. ``(labels,)`` for training or ``(trained_labels, clean_labels)`` for the
    analysis passes; ``transform=None`` returns the stored input unchanged.
    """

    def __init__(
        self,
        inputs: Tensor,
        targets: Sequence[Tensor],
        transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if any(len(t) != len(inputs) for t in targets):
            raise ValueError(f"every target needs {len(inputs)} entries, got {[len(t) for t in targets]}")
        self.inputs = inputs
        self.targets = tuple(targets)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        x = self.inputs[index]
        if self.transform is not None:
            x = self.transform(x)
        return (x, *(t[index] for t in self.targets))
