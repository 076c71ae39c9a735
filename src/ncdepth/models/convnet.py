"""``ConvNet``: CONV-L-W of Galanti et al. (2023), two stride-2 stems then ``depth`` 3x3 blocks."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from ncdepth.models.base import LayeredNet, block_layer_names
from ncdepth.models.blocks import ConvBNReLU
from ncdepth.validation import check_bool, check_int

STEM_COUNT = 2


class ConvNet(LayeredNet):
    """CONV-L-W: ``2 x [2x2 conv, stride 2, BN, ReLU]`` (stems, ``width`` channels; 32 -> 16 -> 8,
    28 -> 14 -> 7), then ``depth x [3x3 conv (padding 1), BN, ReLU]`` at ``width`` channels,
    flatten, linear classifier. CONV-L-400 on CIFAR-10 is the paper's model (``width=400``).

    Measured layers: the ``depth`` 3x3 blocks ``layer1 .. layer{depth}`` as ``(B, width, H/4, W/4)``
    maps, as Galanti et al. measure them; the two stems are not measured. In ``pre`` mode the
    head's input is added as ``features``. The classifier reads the flattened last block, so
    ``d = width * floor(H/4) * floor(W/4)`` (25,600 for CONV-L-400 on 32x32).
    """

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        num_classes: int,
        depth: int = 6,
        width: int = 64,
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
        depth = check_int("model.depth", depth, minimum=1)
        width = check_int("model.width", width, minimum=1)
        batch_norm = check_bool("model.batch_norm", batch_norm)
        channels, height, image_width = self._image_shape()
        downsampling = 2**STEM_COUNT
        if height < downsampling or image_width < downsampling:
            raise ValueError(
                f"ConvNet needs images of at least {downsampling}x{downsampling} pixels "
                f"(two stride-2 stems), got input_shape {self.input_shape}"
            )
        self.stems = nn.ModuleList(
            ConvBNReLU(
                channels if index == 0 else width,
                width,
                kernel_size=2,
                stride=2,
                padding=0,
                batch_norm=batch_norm,
            )
            for index in range(STEM_COUNT)
        )
        self.blocks = nn.ModuleList(
            ConvBNReLU(width, width, kernel_size=3, stride=1, padding=1, batch_norm=batch_norm)
            for _ in range(depth)
        )
        feature_dim = width * (height // downsampling) * (image_width // downsampling)
        self._build_head(self._with_head_input(block_layer_names(depth)), feature_dim)

    def backbone(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """The 3x3 blocks' maps after the (unmeasured) stems; ``features`` in ``pre`` mode."""
        hidden = x
        for stem in self.stems:
            _, hidden = stem(hidden)
        embeddings: OrderedDict[str, Tensor] = OrderedDict()
        for index, block in enumerate(self.blocks, start=1):
            pre, hidden = block(hidden)
            embeddings[f"layer{index}"] = self._measured(pre, hidden)
        self._add_head_input(embeddings, hidden)
        return embeddings
