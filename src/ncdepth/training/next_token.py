"""Next-token training of a :class:`~ncdepth.models.causal_lm.CausalLM`, and how the neural-collapse
callback reads it at token level.

Batches are windows ``(B, T + 1)`` of token ids: position ``t`` of ``windows[:, :-1]`` predicts
``windows[:, t + 1]``. For :class:`~ncdepth.training.NeuralCollapseCallback` every position is a sample
whose class is its next token: :func:`next_tokens` unpacks a batch into the inputs and the ``B * T``
labels, :func:`token_features` gives the ``(B * T, vocabulary)`` logits and every measured layer's
``(B * T, width)`` states (``LayerTap(..., tokens=True)``), and :func:`tied_head` the classifier's weight.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from ncdepth.metrics import LayerTap
from ncdepth.models.causal_lm import CausalLM


class NextTokenModule(pl.LightningModule):
    """Train ``model`` on batches ``(windows,)`` with the mean cross-entropy of every position's next
    token, by AdamW (``lr``, ``betas`` (0.9, 0.95)) with decoupled ``weight_decay`` on the matrices
    and embeddings (biases and layer norms undecayed), at a constant learning rate. Logs
    ``train/loss`` per epoch."""

    def __init__(self, model: CausalLM, *, lr: float, weight_decay: float) -> None:
        super().__init__()
        self.model, self.lr, self.weight_decay = model, lr, weight_decay

    def forward(self, ids: Tensor) -> Tensor:
        return self.model(ids)

    def training_step(self, batch: tuple[Tensor], batch_idx: int) -> Tensor:
        (windows,) = batch
        logits = self.model(windows[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten())
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=windows[:, 1:].numel())
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        decayed = [p for p in self.model.parameters() if p.dim() >= 2]
        undecayed = [p for p in self.model.parameters() if p.dim() < 2]
        groups = [
            {"params": decayed, "weight_decay": self.weight_decay},
            {"params": undecayed, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=self.lr, betas=(0.9, 0.95))


def next_tokens(batch: tuple[Tensor]) -> tuple[Tensor, Tensor]:
    """``(windows,) -> (inputs (B, T), next tokens (B * T,))``, row-major like the token features."""
    (windows,) = batch
    return windows[:, :-1], windows[:, 1:].flatten()


def token_features(pl_module: NextTokenModule, ids: Tensor) -> tuple[Tensor, Mapping[str, Tensor]]:
    """``(logits (B * T, vocabulary), {layer: (B * T, width)})`` of ``pl_module.model``'s measured
    layers, every position a sample."""
    model = pl_module.model
    with LayerTap(model, model.layer_names, tokens=True) as tap:
        logits = model(ids)
    return logits.flatten(0, 1), tap.features


def tied_head(pl_module: NextTokenModule) -> Tensor:
    """The ``(vocabulary, width)`` weight of the classifier (the tied token embedding)."""
    return pl_module.model.classifier.weight
