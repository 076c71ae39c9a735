"""The two-pass neural-collapse analysis of one split: forward passes feeding ``NeuralCollapse``.

A split's loader yields ``(x, *label_columns)``, e.g. ``(x, y_trained, y_clean)`` (``x`` a tensor or any
collection of tensors, moved to the device as Lightning moves a batch); each
``NeuralCollapse`` reads one label column, and every metric is updated from the *same* forward
pass. Pass 1 accumulates class sums, pass 2 everything else (see ``ncdepth.metrics``).

Feature cache: the model computes every layer in one forward pass, so skipping part of pass 2's
forward is only possible when *all* layers are kept. With a budget of ``cache_bytes`` > 0, pass 1
keeps every batch's embeddings and logits while their running total fits; the first batch that
overflows the budget drops the cache and pass 2 recomputes the forward pass. When it fits, pass 2
replays the cache and runs no forward pass at all.

No host synchronisation per batch: inputs and labels go to the device with ``non_blocking`` copies
(from pinned memory when the loader pins it), the running accuracy stays on the device, and
``NeuralCollapse.update`` never waits for the device; the host waits once per pass, in ``next_phase``
and at the end. Under Lightning's ``*-true`` precisions the model's parameters are ``bf16``,
``float16`` or ``float64``: floating inputs are converted to ``dtype``, the model's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from lightning_utilities.core.apply_func import apply_to_collection
from pytorch_lightning.utilities import move_data_to_device
from torch import Tensor

from ncdepth.metrics import NeuralCollapse

Forward = Callable[[Tensor], tuple[Tensor, Mapping[str, Tensor]]]
"""``forward(x) -> (logits (B, C), {layer: (B, ...) embedding})``, e.g. an ncdepth model."""


@dataclass(frozen=True)
class SplitAnalysis:
    """What one analysis of a split measured besides the NC metrics.

    ``accuracy``: for each metric's name, the network's accuracy (argmax of the logits) against
    that metric's labels. ``cached``: whether pass 2 replayed the feature cache.
    """

    accuracy: dict[str, float]
    cached: bool


def analyse_split(
    forward: Forward,
    batches: Iterable[tuple[Tensor, ...]],
    metrics: Mapping[str, tuple[NeuralCollapse, int]],
    *,
    device: torch.device,
    dtype: torch.dtype | None = None,
    cache_bytes: int = 0,
) -> SplitAnalysis:
    """Run both passes of every metric in ``metrics`` (``name -> (metric, label column)``, column
    ``i`` being ``batch[i]``) over ``batches`` with gradients off; the caller sets eval mode.
    ``forward(x)`` (``x`` on ``device``, floating inputs converted to ``dtype`` when given) returns
    ``(logits, {layer: embedding})``: an ncdepth model, or any function of that contract.

    The metrics are reset first and left after ``next_phase`` and pass 2, ready for ``compute()``.
    ``batches`` must be re-iterable, yielding the same samples each time (in any order).
    """
    for metric, _ in metrics.values():
        metric.reset()
    correct = {name: torch.zeros((), dtype=torch.float64, device=device) for name in metrics}
    total = torch.zeros((), dtype=torch.float64, device=device)
    cache: list[tuple[Tensor, Mapping[str, Tensor], list[Tensor]]] | None = [] if cache_bytes > 0 else None
    cached_bytes = 0
    with torch.no_grad():
        for batch in batches:
            x, labels = _to_device(batch, device, dtype)
            logits, embeddings = forward(x)
            predictions = logits.argmax(dim=1)
            total += predictions.shape[0]
            for name, (metric, column) in metrics.items():
                metric.update(embeddings, labels[column - 1])
                correct[name] += (predictions == labels[column - 1]).sum()
            if cache is not None:
                cached_bytes += _nbytes(logits) + sum(_nbytes(h) for h in embeddings.values())
                if cached_bytes <= cache_bytes:
                    cache.append((logits, embeddings, labels))
                else:
                    cache = None
        for metric, _ in metrics.values():
            metric.next_phase()
        replay = cache if cache is not None else _forward(forward, batches, device, dtype)
        for logits, embeddings, labels in replay:
            for metric, column in metrics.values():
                metric.update(embeddings, labels[column - 1], logits=logits)
    total = _sum_over_processes(total)
    accuracy = {name: float(_sum_over_processes(c) / total) for name, c in correct.items()}
    return SplitAnalysis(accuracy=accuracy, cached=cache is not None)


def _forward(
    forward: Forward, batches: Iterable[tuple[Tensor, ...]], device: torch.device, dtype: torch.dtype | None
) -> Iterable[tuple[Tensor, Mapping[str, Tensor], list[Tensor]]]:
    for batch in batches:
        x, labels = _to_device(batch, device, dtype)
        logits, embeddings = forward(x)
        yield logits, embeddings, labels


def _to_device(
    batch: Sequence[Any], device: torch.device, dtype: torch.dtype | None
) -> tuple[Any, list[Tensor]]:
    """``(x, [labels...])`` on ``device``: Lightning's ``move_data_to_device`` copies without waiting where
    the device allows (asynchronous from pinned memory), ``x`` a tensor or a collection of them; floating
    tensors of ``x`` converted to ``dtype`` (on the device, after the copy)."""
    x, *labels = (move_data_to_device(item, device) for item in batch)
    if dtype is not None:
        x = apply_to_collection(x, Tensor, lambda t: t.to(dtype) if t.is_floating_point() else t)
    return x, labels


def _nbytes(tensor: Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _sum_over_processes(value: Tensor) -> Tensor:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        value = value.clone()
        torch.distributed.all_reduce(value)
    return value
