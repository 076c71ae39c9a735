"""``ResNet``: CIFAR-style ResNet (3x3 stem, BasicBlocks) with a configurable number of blocks."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from ncdepth.models.base import LayeredNet, block_layer_names
from ncdepth.validation import check_choice, check_int, check_int_list

RESNET_PRESETS: dict[str, tuple[int, ...]] = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
}


class BasicBlock(nn.Module):
    """``post = relu(pre)``, ``pre = bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)``: the residual
    sum before the block's final ReLU. ``shortcut`` is the identity, or a strided 1x1 conv + BN
    when the block changes the resolution or the channel count."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.activation = nn.ReLU()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(pre, post)``, both ``(B, out_channels, H', W')``."""
        pre = self.residual(x) + self.shortcut(x)
        return pre, self.activation(pre)


class ResNet(LayeredNet):
    """CIFAR ResNet: stem ``3x3 conv (width) + BN + ReLU`` (not measured), then stage ``s``
    (0-based) of ``blocks_per_stage[s]`` BasicBlocks at ``width * 2**s`` channels, the first block
    of every stage but the first with stride 2; global average pool; classifier.

    The layout is ``preset`` (``resnet18``: ``[2, 2, 2, 2]``, ``resnet34``: ``[3, 4, 6, 3]``) or an
    explicit ``blocks_per_stage`` with ``preset=None``; giving both is an error.
    ``width=64`` is the usual CIFAR ResNet; the default is smaller for CPU.

    Measured layers: one per block, ``layer1 .. layer{sum(blocks_per_stage)}`` (the block output
    after the residual add + ReLU; in ``pre`` mode the residual sum before that ReLU), then
    ``pool``, the globally average-pooled last block ``(B, width * 2**(stages - 1))``, which feeds
    the head. ResNet-18 therefore has 9 measured layers (8 blocks + pool).
    """

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        num_classes: int,
        preset: str | None = "resnet18",
        blocks_per_stage: Sequence[int] | None = None,
        width: int = 16,
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
        layout = _resnet_layout(preset, blocks_per_stage)
        width = check_int("model.width", width, minimum=1)
        channels, _, _ = self._image_shape()
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        blocks: list[BasicBlock] = []
        in_channels = width
        for stage, num_blocks in enumerate(layout):
            out_channels = width * 2**stage
            for index in range(num_blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(in_channels, out_channels, stride=stride))
                in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        layer_names = [*block_layer_names(len(blocks)), "pool"]
        self._build_head(layer_names, in_channels)

    def backbone(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """One embedding per block, then the pooled features ``pool`` ``(B, channels)``."""
        hidden = self.stem(x)
        embeddings: OrderedDict[str, Tensor] = OrderedDict()
        for index, block in enumerate(self.blocks, start=1):
            pre, hidden = block(hidden)
            embeddings[f"layer{index}"] = self._measured(pre, hidden)
        embeddings["pool"] = self.global_pool(hidden).flatten(1)
        return embeddings


def _resnet_layout(preset: str | None, blocks_per_stage: Sequence[int] | None) -> list[int]:
    """Blocks per stage from exactly one of ``preset`` and ``blocks_per_stage``."""
    if preset is not None and blocks_per_stage is not None:
        raise ValueError(
            f"model.preset ({preset!r}) and model.blocks_per_stage ({list(blocks_per_stage)}) "
            "are mutually exclusive: set model.preset=null to use model.blocks_per_stage"
        )
    if blocks_per_stage is not None:
        return check_int_list("model.blocks_per_stage", blocks_per_stage, minimum=1)
    if preset is None:
        raise ValueError(f"set model.preset (one of {sorted(RESNET_PRESETS)}) or model.blocks_per_stage")
    return list(RESNET_PRESETS[check_choice("model.preset", preset, RESNET_PRESETS)])
