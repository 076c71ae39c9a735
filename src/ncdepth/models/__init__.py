"""Depth-configurable networks that expose every layer's embedding.

Every model is a ``LayeredNet``: ``model(x) -> (logits, embeddings)`` with ``embeddings`` an
``OrderedDict`` of the measured layers in depth order (``model.layer_names``),
``model.classifier`` the final ``nn.Linear`` and ``model.classifier_layer`` the name of the
embedding that feeds it. See ``ncdepth.models.base`` for the full contract. Configs name a model
by its file in ``ncdepth/conf/model/`` (``model=conv``), whose ``_target_`` is the class built.
"""

from ncdepth.models.base import LayeredNet
from ncdepth.models.convnet import ConvNet
from ncdepth.models.fcn2 import FCN2
from ncdepth.models.mlp import MLP
from ncdepth.models.resnet import ResNet
from ncdepth.models.vgg import VGG

__all__ = ["FCN2", "MLP", "VGG", "ConvNet", "LayeredNet", "ResNet"]
