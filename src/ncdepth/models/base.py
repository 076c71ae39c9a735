"""``LayeredNet``: the contract every ncdepth model follows, and the head they all share.

A ``LayeredNet`` maps ``x`` of shape ``(B, *input_shape)`` to ``(logits, embeddings)``:

- ``logits``: ``(B, num_classes)``, produced by ``model.classifier`` (an ``nn.Linear`` whose
  ``weight`` is ``(num_classes, d)``);
- ``embeddings``: an ``OrderedDict[str, Tensor]`` of the measured layers in depth order, named as
  in ``model.layer_names``. Convolutional maps keep their ``(B, C, H, W)`` shape (the metrics
  flatten them). ``embeddings[model.classifier_layer].flatten(1)`` is exactly the input of
  ``model.classifier``: ``logits == model.classifier(embeddings[model.classifier_layer].flatten(1))``.

Which tensor "layer l" is, is set by ``embedding``:

- ``"post"`` (default): the block's output after its nonlinearity, i.e. what the next block reads;
- ``"pre"``: the block's pre-activation (before its BatchNorm and nonlinearity). The input of the
  head is then no longer among the measured blocks, so models whose head reads the last block
  directly append it as one more measured layer named ``"features"``.

The shared head (Dang et al., ICML 2023, deep linear head): ``depth_linear`` bias-free linear
layers of width ``linear_width`` (default: the backbone feature dimension ``d``), with no
nonlinearity in between, each a measured layer ``"linear1" ... "linear{depth_linear}"``, then the
classifier ``W h + b`` (``b`` only when ``classifier_bias``). The head layers keep PyTorch's
default ``nn.Linear`` initialisation unless a model says otherwise.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from itertools import pairwise

from torch import Tensor, nn

from ncdepth.validation import check_bool, check_choice, check_int, check_int_list

EMBEDDINGS = ("post", "pre")
HEAD_INPUT_LAYER = "features"


def block_layer_names(num_blocks: int) -> list[str]:
    """``["layer1", ..., f"layer{num_blocks}"]``."""
    return [f"layer{index}" for index in range(1, num_blocks + 1)]


class LayeredNet(nn.Module, ABC):
    """Base class: validates the shared knobs, owns the deep linear head and the classifier.

    Subclasses build their backbone in ``__init__``, then call ``self._build_head(...)`` once, and
    implement ``backbone(x)``.
    """

    classifier: nn.Linear
    classifier_layer: str
    layer_names: list[str]

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        num_classes: int,
        embedding: str,
        depth_linear: int,
        linear_width: int | None,
        classifier_bias: bool,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(check_int_list("input_shape", input_shape, minimum=1))
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        self.embedding = check_choice("model.embedding", embedding, EMBEDDINGS)
        self.depth_linear = check_int("model.depth_linear", depth_linear, minimum=0)
        self.linear_width = (
            None if linear_width is None else check_int("model.linear_width", linear_width, minimum=1)
        )
        self.classifier_bias = check_bool("model.classifier_bias", classifier_bias)

    @property
    def input_dim(self) -> int:
        """``d0 = prod(input_shape)``, the flattened input dimension."""
        return math.prod(self.input_shape)

    def _image_shape(self) -> tuple[int, int, int]:
        """``input_shape`` as ``(channels, height, width)``; raises for non-image inputs."""
        if len(self.input_shape) != 3:
            raise ValueError(
                f"{type(self).__name__} needs an image input_shape (channels, height, width), got {self.input_shape}"
            )
        channels, height, width = self.input_shape
        return channels, height, width

    def _build_head(self, backbone_layers: Sequence[str], feature_dim: int) -> None:
        """Create the deep linear head and the classifier on top of ``feature_dim`` features.

        ``backbone_layers`` are the names ``backbone`` returns, in order; the last one, flattened,
        has ``feature_dim`` entries and feeds the head.
        """
        width = feature_dim if self.linear_width is None else self.linear_width
        dims = [feature_dim] + [width] * self.depth_linear
        self.linear_head = nn.ModuleList(
            nn.Linear(fan_in, fan_out, bias=False) for fan_in, fan_out in pairwise(dims)
        )
        self.classifier = nn.Linear(dims[-1], self.num_classes, bias=self.classifier_bias)
        linear_names = [f"linear{index}" for index in range(1, self.depth_linear + 1)]
        self.layer_names = [*backbone_layers, *linear_names]
        self.classifier_layer = self.layer_names[-1]

    def _measured(self, pre: Tensor, post: Tensor) -> Tensor:
        """The tensor that stands for a block: ``pre`` or ``post`` as ``embedding`` says."""
        return pre if self.embedding == "pre" else post

    def _with_head_input(self, block_layers: Sequence[str]) -> list[str]:
        """``block_layers``, plus ``"features"`` in ``pre`` mode: for backbones whose head reads
        the last block's output, which ``pre`` mode does not measure otherwise."""
        extra = [HEAD_INPUT_LAYER] if self.embedding == "pre" else []
        return [*block_layers, *extra]

    def _add_head_input(self, embeddings: OrderedDict[str, Tensor], head_input: Tensor) -> None:
        """In ``pre`` mode, measure the last block's output (the head's input) as ``"features"``;
        the counterpart of ``_with_head_input``."""
        if self.embedding == "pre":
            embeddings[HEAD_INPUT_LAYER] = head_input

    @abstractmethod
    def backbone(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """The measured backbone embeddings of ``x`` in depth order, named as the
        ``backbone_layers`` given to ``_build_head``; the last one, flattened, feeds the head."""

    def forward(self, x: Tensor) -> tuple[Tensor, OrderedDict[str, Tensor]]:
        """``(logits (B, num_classes), embeddings)``; see the module docstring for the contract."""
        if tuple(x.shape[1:]) != self.input_shape:
            expected = ("B", *self.input_shape)
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape {expected}, got {tuple(x.shape)}"
            )
        embeddings = self.backbone(x)
        hidden = next(reversed(embeddings.values())).flatten(1)
        for index, layer in enumerate(self.linear_head, start=1):
            hidden = layer(hidden)
            embeddings[f"linear{index}"] = hidden
        return self.classifier(hidden), embeddings
