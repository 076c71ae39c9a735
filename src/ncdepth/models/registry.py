"""The model registry: config name -> class, and ``build_model`` by name."""

from __future__ import annotations

from typing import Any

from ncdepth.models.base import LayeredNet
from ncdepth.models.convnet import ConvNet
from ncdepth.models.fcn2 import FCN2
from ncdepth.models.mlp import MLP
from ncdepth.models.resnet import ResNet
from ncdepth.models.vgg import VGG

MODELS: dict[str, type[LayeredNet]] = {
    "conv": ConvNet,
    "fcn2": FCN2,
    "mlp": MLP,
    "resnet": ResNet,
    "vgg": VGG,
}


def build_model(name: str, **kwargs: Any) -> LayeredNet:
    """``MODELS[name](**kwargs)``; ``kwargs`` are the constructor's keywords (``input_shape``,
    ``num_classes``, then the model's knobs). Raises a ValueError listing the names for an unknown
    ``name``."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](**kwargs)
