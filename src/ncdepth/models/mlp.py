"""``MLP``: MLP-L-W, ``depth`` hidden layers of ``width`` units with ReLU (optionally BatchNorm)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from itertools import pairwise

from torch import Tensor, nn

from ncdepth.models.base import LayeredNet, block_layer_names
from ncdepth.validation import check_bool, check_int


class DenseBlock(nn.Module):
    """``post = relu(bn(W x + b))`` (``bn`` only with ``batch_norm``, and then no ``b``);
    ``forward`` returns ``(pre, post)`` with ``pre = W x (+ b)``."""

    def __init__(self, in_features: int, out_features: int, *, batch_norm: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=not batch_norm)
        self.norm = nn.BatchNorm1d(out_features) if batch_norm else nn.Identity()
        self.activation = nn.ReLU()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(pre, post)``, both ``(B, out_features)``."""
        pre = self.linear(x)
        return pre, self.activation(self.norm(pre))


class MLP(LayeredNet):
    """MLP-L-W on the flattened input (``d0 = prod(input_shape)``).

    Measured layers: ``layer1 .. layer{depth}`` (each hidden layer, see ``LayeredNet`` for
    ``embedding``), ``features`` in ``pre`` mode, then the head's ``linear*``. The classifier reads
    the last hidden layer's post-activation (or the last ``linear*`` layer).
    """

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        num_classes: int,
        depth: int = 4,
        width: int = 256,
        batch_norm: bool = False,
        embedding: str = "post",
        depth_linear: int = 0,
        linear_width: int | None = None,
        classifier_bias: bool = True,
    ) -> None:
        super().__init__(
            input_shape=input_shape,
            num_classes=num_classes,
            embedding=embedding,
            depth_linear=depth_linear,
            linear_width=linear_width,
            classifier_bias=classifier_bias,
        )
        depth = check_int("model.depth", depth, minimum=1)
        width = check_int("model.width", width, minimum=1)
        batch_norm = check_bool("model.batch_norm", batch_norm)
        dims = [self.input_dim] + [width] * depth
        self.blocks = nn.ModuleList(
            DenseBlock(fan_in, fan_out, batch_norm=batch_norm) for fan_in, fan_out in pairwise(dims)
        )
        self._build_head(self._with_head_input(block_layer_names(depth)), width)

    def backbone(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """Hidden layers of the flattened ``x``; ``features`` (the last post-activation) in
        ``pre`` mode."""
        hidden = x.flatten(1)
        embeddings: OrderedDict[str, Tensor] = OrderedDict()
        for index, block in enumerate(self.blocks, start=1):
            pre, hidden = block(hidden)
            embeddings[f"layer{index}"] = self._measured(pre, hidden)
        self._add_head_input(embeddings, hidden)
        return embeddings
