"""``VGG``: VGG-style stacks of 3x3 convolutions and 2x2 max pools, from a channel list or preset."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from ncdepth.models.base import LayeredNet, block_layer_names
from ncdepth.models.blocks import ConvBNReLU
from ncdepth.validation import check_bool, check_choice

POOL = "M"
VGG_PRESETS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (
        64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
    ),
}  # fmt: skip


class VGG(LayeredNet):
    """VGG: ``channels`` lists, in order, a ``3x3 conv (padding 1) + BN + ReLU`` block per integer
    (its output channels) and a 2x2 max pool per ``"M"``; then a global average pool and the
    classifier. The layout is ``preset`` (``vgg11``, ``vgg16``: the CIFAR VGGs) or an explicit
    ``channels`` with ``preset=None``; giving both is an error. ``batch_norm=False`` drops the BNs.

    A pool that would shrink the map below 1x1 is skipped, so the presets work on 32x32 (five
    pools, 1x1 at the end) and on 28x28 (28 -> 14 -> 7 -> 3 -> 1, the fifth pool skipped); the
    final average pool is then a plain flatten.

    Measured layers: one per conv, ``layer1 .. layer{convs}`` (the ReLU output before any following
    pool; in ``pre`` mode the conv output before BN), then ``pool`` ``(B, channels[-1])``, the
    globally average-pooled final map, which feeds the head.
    """

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        num_classes: int,
        preset: str | None = "vgg11",
        channels: Sequence[int | str] | None = None,
        batch_norm: bool = True,
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
        layout = _vgg_layout(preset, channels)
        batch_norm = check_bool("model.batch_norm", batch_norm)
        in_channels, height, width = self._image_shape()
        self.blocks = nn.ModuleList()
        self.pools = nn.ModuleList()  # pools[i]: the max pools after block i (maybe none)
        for entry in layout:
            if entry == POOL:
                if height >= 2 and width >= 2:
                    self.pools[-1].append(nn.MaxPool2d(2))
                    height, width = height // 2, width // 2
                continue
            self.blocks.append(
                ConvBNReLU(in_channels, entry, kernel_size=3, stride=1, padding=1, batch_norm=batch_norm)
            )
            self.pools.append(nn.Sequential())
            in_channels = entry
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        layer_names = [*block_layer_names(len(self.blocks)), "pool"]
        self._build_head(layer_names, in_channels)

    def backbone(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """One embedding per conv block, then the pooled features ``pool`` ``(B, channels)``."""
        hidden = x
        embeddings: OrderedDict[str, Tensor] = OrderedDict()
        for index, (block, pools) in enumerate(zip(self.blocks, self.pools, strict=True), start=1):
            pre, post = block(hidden)
            embeddings[f"layer{index}"] = self._measured(pre, post)
            hidden = pools(post)
        embeddings["pool"] = self.global_pool(hidden).flatten(1)
        return embeddings


def _vgg_layout(preset: str | None, channels: Sequence[int | str] | None) -> list[int | str]:
    """The channel list from exactly one of ``preset`` and ``channels``, validated."""
    if preset is not None and channels is not None:
        raise ValueError(
            f"model.preset ({preset!r}) and model.channels ({list(channels)}) are mutually "
            "exclusive: set model.preset=null to use model.channels"
        )
    if channels is None:
        if preset is None:
            raise ValueError(f"set model.preset (one of {sorted(VGG_PRESETS)}) or model.channels")
        return list(VGG_PRESETS[check_choice("model.preset", preset, VGG_PRESETS)])
    layout = list(channels) if isinstance(channels, Sequence) and not isinstance(channels, str) else []
    if (
        not layout
        or not _is_channel_count(layout[0])
        or not all(entry == POOL or _is_channel_count(entry) for entry in layout)
    ):
        shown = layout or channels
        raise ValueError(
            "model.channels must be a list of channel counts (integers >= 1) and 'M' (max pool), "
            f"starting with a channel count, got {shown!r}"
        )
    return layout


def _is_channel_count(entry: object) -> bool:
    """Whether a ``channels`` entry is a conv's output channel count (an integer >= 1)."""
    return isinstance(entry, int) and not isinstance(entry, bool) and entry >= 1
