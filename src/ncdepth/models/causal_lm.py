"""``CausalLM``: a small GPT-style language model whose every block's token states can be measured.

Token and position embeddings, ``depth`` pre-norm blocks, a final layer norm ``ln_f`` and a linear head
tied to the token embedding (GPT-2's layout)::

    x_0 = E[ids] + P[positions]
    x_l = y_l + MLP(LN(y_l)),  y_l = x_{l-1} + Attention(LN(x_{l-1}))   (causal, ``heads`` heads)
    logits = LN_f(x_depth) E^T

The measured layers are the outputs of ``blocks.0 .. blocks.{depth-1}`` and ``ln_f`` (the classifier's
input), each ``(B, T, width)``: read them with ``LayerTap(model, model.layer_names, tokens=True)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncdepth.validation import check_int

CLASSIFIER_LAYER = "ln_f"
"""The measured layer that feeds the head: the final layer norm."""


class CausalBlock(nn.Module):
    """One pre-norm block: causal multi-head self-attention, then a GELU MLP of ``4 * width``, each
    added to the residual stream."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, width) -> (B, T, width)``."""
        batch, length, width = x.shape
        q, k, v = (
            part.view(batch, length, self.heads, width // self.heads).transpose(1, 2)
            for part in self.qkv(self.ln_1(x)).chunk(3, dim=-1)
        )
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(attended.transpose(1, 2).reshape(batch, length, width))
        return x + self.mlp(self.ln_2(x))


class CausalLM(nn.Module):
    """The language model of the module docstring: ``model(ids (B, T)) -> logits (B, T, vocabulary)``
    for ``T <= context``; ``classifier`` is the tied head (weight ``(vocabulary, width)``)."""

    def __init__(self, vocabulary: int, width: int, depth: int, heads: int, context: int) -> None:
        super().__init__()
        check_int("model.vocabulary", vocabulary, minimum=2)
        check_int("model.depth", depth, minimum=1)
        check_int("model.heads", heads, minimum=1)
        check_int("model.context", context, minimum=1)
        if check_int("model.width", width, minimum=1) % heads:
            raise ValueError(f"model.width must be a multiple of model.heads ({heads}), got {width}")
        self.context = context
        self.token_embedding = nn.Embedding(vocabulary, width)
        self.position_embedding = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(CausalBlock(width, heads) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width)  # CLASSIFIER_LAYER
        self.classifier = nn.Linear(width, vocabulary, bias=False)
        self.classifier.weight = self.token_embedding.weight
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    @property
    def layer_names(self) -> list[str]:
        """The measured layers in depth order: every block's output, then ``ln_f``."""
        return [f"blocks.{i}" for i in range(len(self.blocks))] + [CLASSIFIER_LAYER]

    @property
    def classifier_layer(self) -> str:
        return CLASSIFIER_LAYER

    def forward(self, ids: Tensor) -> Tensor:
        if ids.shape[1] > self.context:
            raise ValueError(f"sequences of {ids.shape[1]} tokens exceed the context of {self.context}")
        x = self.token_embedding(ids) + self.position_embedding(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.classifier(self.ln_f(x))
