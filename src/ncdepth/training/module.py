"""``NCModule``: the LightningModule that trains any ncdepth model with CE or MSE loss."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncdepth.training.config import LossConfig, OptimizerConfig, SchedulerConfig


class NCModule(pl.LightningModule):
    """Train ``model`` (a ``LayeredNet``: ``forward(x) -> (logits, embeddings)``, attributes
    ``classifier`` and ``classifier_layer``) on ``(x, y)`` batches.

    Objective per batch (see :class:`LossConfig`)::

        loss = criterion(logits, y) + (feature_decay / 2) * mean_i ||h_i||^2,
        h = embeddings[model.classifier_layer].flatten(1)   # the classifier's input

    Weight decay is applied by the optimizer in two parameter groups: the classifier's parameters
    (``classifier_weight_decay``) and all others (``weight_decay``). Logs ``train/loss``,
    ``train/acc``, ``val/loss``, ``val/acc`` once per epoch (sample-weighted, synced under DDP).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        loss: LossConfig | None = None,
        optimizer: OptimizerConfig | None = None,
        scheduler: SchedulerConfig | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss_config = loss or LossConfig()
        self.optimizer_config = optimizer or OptimizerConfig()
        self.scheduler_config = scheduler or SchedulerConfig()
        self._totals: dict[str, Tensor] = {}  # stage -> (loss sum, correct) of the epoch, on the device
        self._samples: dict[str, int] = {}  # stage -> samples of the epoch

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``model(x)``: ``(logits, {layer: embedding})``."""
        return self.model(x)

    def objective(self, logits: Tensor, features: Tensor, targets: Tensor) -> Tensor:
        """The training loss of one batch: criterion plus the feature penalty (class docstring)."""
        config = self.loss_config
        if config.name == "ce":
            loss = F.cross_entropy(logits, targets)
        else:
            one_hot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
            loss = F.mse_loss(logits, config.mse_scale * one_hot)
        if config.feature_decay > 0.0:
            squared_norms = features.flatten(1).pow(2).sum(dim=1)
            loss = loss + 0.5 * config.feature_decay * squared_norms.mean()
        return loss

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits, embeddings = self.model(x)
        loss = self.objective(logits, embeddings[self.model.classifier_layer], y)
        batch_totals = torch.stack([loss.detach().double() * y.shape[0], (logits.argmax(dim=1) == y).sum()])
        self._totals[stage] = self._totals.get(stage, 0.0) + batch_totals
        self._samples[stage] = self._samples.get(stage, 0) + y.shape[0]
        return loss

    def _log_epoch(self, stage: str) -> None:
        """Log ``{stage}/loss`` and ``{stage}/acc`` of the epoch, sample-weighted over every process,
        from the totals accumulated on the device (one reduction per epoch, none per step)."""
        totals, samples = self._totals.pop(stage, None), self._samples.pop(stage, 0)
        if totals is None:
            return
        totals = torch.cat([totals, totals.new_tensor([samples])])
        loss_sum, correct, count = self.trainer.strategy.reduce(totals, reduce_op="sum")
        self.log_dict({f"{stage}/loss": loss_sum / count, f"{stage}/acc": correct / count}, prog_bar=True)

    def _reset(self, stage: str) -> None:
        self._totals.pop(stage, None)
        self._samples.pop(stage, None)

    def on_train_epoch_start(self) -> None:
        self._reset("train")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_start(self) -> None:
        self._reset("val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """One optimisation step's loss on ``batch = (x, y)``."""
        return self._shared_step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Accumulates the validation loss and accuracy of ``batch = (x, y)``."""
        self._shared_step(batch, "val")

    def parameter_groups(self) -> list[dict[str, object]]:
        """Two optimizer groups: every non-classifier parameter with ``weight_decay``, and the
        classifier's weight and bias with ``classifier_weight_decay``."""
        classifier_ids = {id(p) for p in self.model.classifier.parameters()}
        body = [p for p in self.model.parameters() if id(p) not in classifier_ids]
        config = self.optimizer_config
        return [
            {"params": body, "weight_decay": float(config.weight_decay), "name": "body"},
            {
                "params": list(self.model.classifier.parameters()),
                "weight_decay": config.effective_classifier_weight_decay,
                "name": "classifier",
            },
        ]

    def configure_optimizers(self) -> dict[str, object]:
        """The optimizer over :meth:`parameter_groups` and its per-epoch learning-rate schedule."""
        config = self.optimizer_config
        groups = self.parameter_groups()
        if config.name == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(
                groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov
            )
        elif config.name == "adam":
            optimizer = torch.optim.Adam(groups, lr=config.lr, betas=config.betas)
        else:
            optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)
        schedule = self.scheduler_config
        if schedule.name == "multistep":
            scheduler: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.MultiStepLR(
                optimizer, milestones=list(schedule.milestones), gamma=schedule.gamma
            )
        elif schedule.name == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.trainer.max_epochs)
        else:
            scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
