"""``FCN2``: the two-layer fully connected net of NNGP / NTK theory, in standard or NTK
parameterization, with the exact initial scaling of the kernel limits."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ncdepth.models.base import LayeredNet
from ncdepth.validation import check_choice, check_int, check_number

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "erf": torch.erf,
    "relu": torch.relu,
    "tanh": torch.tanh,
}
PARAMETERIZATIONS = ("ntk", "standard")


class Scale(nn.Module):
    """Parametrization ``raw -> factor * raw``: the trained tensor is ``raw``, the layer uses
    ``factor * raw``."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, raw: Tensor) -> Tensor:
        """``factor * raw``."""
        return self.factor * raw

    def extra_repr(self) -> str:
        return f"factor={self.factor:.6g}"


class FCN2(LayeredNet):
    """``f(x) = W2 phi(h(x)) + b2``, ``h(x) = W1 x + b1``, one hidden layer of ``width`` units,
    ``x`` the flattened input of dimension ``d0``, ``phi`` in {relu, erf, tanh}.

    With ``sigma_w^2 = weight_var``, ``sigma_b^2 = bias_var`` and ``fan_in`` the layer's input
    dimension (``d0`` for ``W1``, ``width`` for ``W2``):

    - ``parameterization="standard"``: ``W ~ N(0, sigma_w^2 / fan_in)``, ``b ~ N(0, sigma_b^2)``,
      used as they are;
    - ``parameterization="ntk"``: the trained ``W, b ~ N(0, 1)`` and the forward pass uses
      ``sqrt(sigma_w^2 / fan_in) W`` and ``sigma_b b`` (Jacot et al. 2018; Lee et al. 2019), via a
      ``torch.nn.utils.parametrize`` ``Scale``: ``layer.weight`` is the effective weight, the
      trained tensor is ``layer.parametrizations.weight.original``.

    Both give the same function distribution at initialisation: given ``x``, the hidden
    pre-activations are i.i.d. ``N(0, sigma_w^2 ||x||^2 / d0 + sigma_b^2)`` (the first-layer NNGP
    kernel ``K(x, x') = sigma_w^2 <x, x'> / d0 + sigma_b^2``) and, given ``h``, the logits are
    i.i.d. ``N(0, sigma_w^2 ||phi(h)||^2 / width + sigma_b^2)``. They differ in training dynamics:
    under NTK parameterization gradient descent with an O(1) learning rate has the NTK limit as
    ``width -> infinity``. The deep linear head (``depth_linear``) and the classifier get the same
    parameterization (a linear layer is the ``phi = identity`` case); the classifier bias, if any,
    is scaled by ``sigma_b``.

    Measured layer: ``hidden``, ``phi(h)`` (``embedding="post"``) or ``h`` (``"pre"``, then
    ``features = phi(h)`` is added as the classifier's input), then the head's ``linear*``.
    """

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        num_classes: int,
        width: int = 1024,
        activation: str = "relu",
        parameterization: str = "standard",
        weight_var: float = 1.0,
        bias_var: float = 0.0,
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
        width = check_int("model.width", width, minimum=1)
        self.activation = check_choice("model.activation", activation, ACTIVATIONS)
        self.parameterization = check_choice("model.parameterization", parameterization, PARAMETERIZATIONS)
        self.weight_var = check_number("model.weight_var", weight_var, minimum=0.0, inclusive=False)
        self.bias_var = check_number("model.bias_var", bias_var, minimum=0.0, inclusive=True)
        self.hidden_layer = nn.Linear(self.input_dim, width)
        self._build_head(self._with_head_input(["hidden"]), width)
        for layer in [self.hidden_layer, *self.linear_head, self.classifier]:
            self._parameterize(layer)

    def _parameterize(self, layer: nn.Linear) -> None:
        """Initialise ``layer`` (and scale it, in NTK parameterization) as the class docstring says."""
        weight_std = math.sqrt(self.weight_var / layer.in_features)
        bias_std = math.sqrt(self.bias_var)
        ntk = self.parameterization == "ntk"
        with torch.no_grad():
            nn.init.normal_(layer.weight, std=1.0 if ntk else weight_std)
            if layer.bias is not None:
                nn.init.normal_(layer.bias, std=1.0 if ntk else bias_std)
        if ntk:
            parametrize.register_parametrization(layer, "weight", Scale(weight_std))
            if layer.bias is not None:
                parametrize.register_parametrization(layer, "bias", Scale(bias_std))

    def backbone(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """``hidden`` (``phi(h)`` or ``h``), and ``features = phi(h)`` in ``pre`` mode."""
        pre = self.hidden_layer(x.flatten(1))
        post = ACTIVATIONS[self.activation](pre)
        embeddings: OrderedDict[str, Tensor] = OrderedDict(hidden=self._measured(pre, post))
        self._add_head_input(embeddings, post)
        return embeddings
