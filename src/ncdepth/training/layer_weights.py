"""The linear maps that read an ncdepth model's measured layers, for ``w_align`` (``docs/metrics.md``,
*Generalized measures*).

``LayeredNet`` builds its deep linear head and classifier so that ``linear{j}`` reads the layer listed just
before it and the classifier reads ``model.classifier_layer`` (``ncdepth.models.base``): those maps, and only
those, are exact by construction. The backbones' own linear layers are not listed (what a block's
``nn.Linear`` reads depends on ``model.embedding``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn


def linear_inputs(model: nn.Module) -> dict[str, Callable[[], Tensor]]:
    """``{layer: weight}`` (zero-argument callables reading the current weight) of the linear maps that read
    ``layer``: the classifier at ``model.classifier_layer`` and each ``linear{j}`` of the head at the layer
    before it."""
    names = list(model.layer_names)
    maps = {model.classifier_layer: model.classifier}
    for index, linear in enumerate(model.linear_head, start=1):
        position = names.index(f"linear{index}")
        if position > 0:
            maps[names[position - 1]] = linear
    return {layer: (lambda module=module: module.weight.detach()) for layer, module in maps.items()}
