"""``NeuralCollapseCallback``: measure neural collapse at every layer while a model trains."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from rich.console import Console
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from ncdepth.metrics import LayerTap, NeuralCollapse, effective_depth
from ncdepth.report.style import save_figure
from ncdepth.rundir import FIGURES_DIR, METRICS_FILE, SUMMARY_FILE, set_aside, write_json
from ncdepth.training.analysis import Forward, analyse_split
from ncdepth.training.config import AnalysisConfig
from ncdepth.training.head_geometry import head_geometry
from ncdepth.training.layer_weights import linear_inputs
from ncdepth.training.results import (
    NCC_FIGURE,
    SplitResults,
    TidyTable,
    layer_table,
    ncc_train_error_figure,
    separation_laws,
)

log = logging.getLogger(__name__)


Features = Callable[[pl.LightningModule, Tensor], tuple[Tensor, Mapping[str, Tensor]]]
"""``features(pl_module, x) -> (logits (B, C), {layer: (B, ...) features})``: the layers to
measure, in depth order, from one forward pass of the inputs ``x`` (already on the module's device;
called in eval mode, without gradients). Conv maps may stay ``(B, C, H, W)``: ``AnalysisConfig.pool``
flattens or averages them."""

UnpackBatch = Callable[[Any], Sequence[Any]]
"""``unpack_batch(batch) -> (x, y)``: the inputs and the labels of one batch of an analysis loader (``x``
is moved to the module's device as a tensor or any collection of tensors, e.g. a dict for a language
model, and passed as is to ``pl_module(x)`` or ``features(pl_module, x)``)."""


@dataclass(frozen=True)
class _Network:
    """What one analysis measures: ``forward(x) -> (logits, layers)``, the number of classes, the
    classifier's layer and weight (``None``: as ``NeuralCollapse`` decides; no ``nc3``), and the
    ncdepth model when there is one (for the head geometry)."""

    forward: Forward
    num_classes: int
    classifier_layer: str | None
    classifier_weight: Callable[[], Tensor] | None
    model: nn.Module | None


class NeuralCollapseCallback(pl.Callback):
    """Every ``settings.every_n_epochs`` epochs, before the first epoch and after the last, run the
    two-pass analysis of every layer (no grad, eval mode, every submodule's mode restored after).

    What is measured, for any LightningModule:

    * ``layers``: names of modules of ``pl_module`` (``pl_module.named_modules()``, e.g.
      ``"net.layer1"``) whose outputs are the layers, read by :class:`ncdepth.metrics.LayerTap`
      while ``pl_module(x)`` computes the logits; or
      ``features`` (see :data:`Features`), a function giving the logits and the layers of a batch.
      With either, ``num_classes`` is required, ``classifier_layer`` names the layer that feeds the
      classifier (where ``nc3``/``nc4`` are measured; when not given ``NeuralCollapse`` decides,
      see its ``classifier_layer``) and ``classifier_weight(pl_module)``, the ``(C, d)`` weight of
      that classifier, enables ``nc3``. With neither, the module must hold an ncdepth model as
      ``pl_module.model`` (:class:`ncdepth.training.NCModule`): its forward pass gives the logits
      and the layers, ``model.classifier`` and ``model.classifier_layer`` the rest; the three
      arguments are then not accepted.
    * ``train_dataloader`` and, optionally, ``test_dataloader`` yield ``(x, y)`` batches, the
      same samples at each iteration (any order; no random augmentation); with only the train
      loader, only the train split is measured. Batches that are dicts (as Hugging Face datasets
      and many vision libraries yield) are read through ``batch_keys=(input key, label key)``,
      e.g. ``("pixel_values", "label")``, and any other batch through ``unpack_batch(batch) ->
      (x, y)`` (:data:`UnpackBatch`). Without loaders the trainer's datamodule serves both splits:
      ``analysis_dataloader("train" | "test")`` of :class:`ncdepth.data.NCDataModule`, whose
      batches are ``(x, y, y_clean)``.
    * **Pooling** has one setting, ``settings.pool`` (:class:`AnalysisConfig`): ``"flatten"`` keeps
      every coordinate of a ``(B, K, H, W)`` map, ``"avg"`` averages it to ``(B, K)``, for tapped
      layers, feature functions and ncdepth models alike; other pooling (per layer, over tokens)
      goes in a ``features`` function.
    Splits (one ``NeuralCollapse`` each, all layers at once): ``"train"`` with the labels the
    network is trained on, ``"train_clean"`` with the clean labels when the datamodule's
    ``noise_mask`` flags any label (both updated from the same forward passes; datamodule loaders
    only), and ``"test"``, whose ``ncc_acc`` uses the train split's class means. ``nc4`` compares
    the logits with the nearest class mean. With an ncdepth model's deep linear head, the train
    split's head layers also get the UFM geometry of :mod:`ncdepth.training.head_geometry`
    (``geom_*``, ``minority_*``).

    After each analysis at ``epoch`` (completed epochs; 0 = initialisation) it logs
    ``nc/{split}/{layer}/{metric}``, ``nc/{split}/network_acc``, ``nc/effective_depth@{eps}``
    (``effective_depth`` of the train split's NCC errors ``1 - ncc_acc``), and the timings
    ``timing/analysis_s`` and ``timing/train_epoch_s`` to the Lightning loggers and the run log,
    and keeps the results in :attr:`last_results` (``{split: {layer: {metric: value}}}``).
    With a ``run_dir``, rank zero also appends to ``metrics.csv`` and, when training ends, writes
    ``summary.json`` and ``figures/ncc_train_error.png|pdf`` and prints the per-layer table (not with
    ``quiet=True``, which keeps the terminal for the user's own output). The terminal
    phase is the first analysed epoch at which the network fits every trained label (eval mode).

    ``config`` (the resolved run config) is copied into ``summary.json``.
    """

    def __init__(
        self,
        settings: AnalysisConfig | None = None,
        *,
        layers: Sequence[str] | None = None,
        features: Features | None = None,
        num_classes: int | None = None,
        classifier_layer: str | None = None,
        classifier_weight: Callable[[pl.LightningModule], Tensor] | None = None,
        train_dataloader: DataLoader | None = None,
        test_dataloader: DataLoader | None = None,
        batch_keys: tuple[str, str] | None = None,
        unpack_batch: UnpackBatch | None = None,
        quiet: bool = False,
        run_dir: str | Path | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings or AnalysisConfig()
        if layers is not None and features is not None:
            raise ValueError("give layers (tapped) or features (a function), not both")
        if layers is not None:
            features = _tapped(list(layers), self.settings.pool)
        if features is None and (num_classes, classifier_layer, classifier_weight) != (None, None, None):
            raise ValueError(
                "num_classes, classifier_layer and classifier_weight go with layers or features; "
                "without them they are read from pl_module.model"
            )
        if features is not None and num_classes is None:
            raise ValueError("layers or features need num_classes, the number of classes of the labels")
        if train_dataloader is None and test_dataloader is not None:
            raise ValueError(
                "test_dataloader needs train_dataloader: the test split's NCC accuracy uses the train "
                "split's class means (give train_dataloader alone to measure only the train split)"
            )
        if batch_keys is not None and unpack_batch is not None:
            raise ValueError("give batch_keys (for dict batches) or unpack_batch (a function), not both")
        if batch_keys is not None and (
            isinstance(batch_keys, str)
            or len(batch_keys) != 2
            or not all(isinstance(k, str) for k in batch_keys)
        ):
            raise ValueError(
                f"batch_keys must be (input key, label key), e.g. ('pixel_values', 'label'), got {batch_keys!r}"
            )
        self.features = features
        self.num_classes = num_classes
        self.classifier_layer = classifier_layer
        self.classifier_weight = classifier_weight
        self.dataloaders: dict[str, DataLoader] | None = None
        if train_dataloader is not None:
            self.dataloaders = {"train": train_dataloader}
            if test_dataloader is not None:
                self.dataloaders["test"] = test_dataloader
        self.unpack_batch = unpack_batch if unpack_batch is not None else _DefaultUnpack(batch_keys)
        self.quiet = bool(quiet)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.config = dict(config or {})
        self.table = None if self.run_dir is None else TidyTable(self.run_dir / METRICS_FILE)
        self.terminal_phase_epoch: int | None = None
        self.last_analysed_epoch: int | None = None
        self.analysis_seconds: list[float] = []
        self.epoch_seconds: list[float] = []
        self.last_results: SplitResults = {}
        self.last_accuracy: dict[str, float] = {}
        self._restored = False
        self._metrics_bytes_at_checkpoint: int | None = None
        self._epoch_started = 0.0

    # ------------------------------------------------------------------ Lightning hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Fresh run: measure the initialisation (epoch 0), after setting aside a ``metrics.csv``
        left by an earlier attempt that had no usable checkpoint (``metrics.csv.N``). Resumed run:
        cut ``metrics.csv`` back to its length at the checkpoint; the rows after it are measured
        again."""
        if self.table is not None and trainer.is_global_zero:
            if self._restored and self._metrics_bytes_at_checkpoint is not None:
                self.table.cut(self._metrics_bytes_at_checkpoint)
            elif not self._restored and self.table.size() > 0:
                kept = set_aside(self.table.path)
                log.warning(
                    "starting afresh: the earlier attempt's %s is kept as %s", METRICS_FILE, kept.name
                )
        if not self._restored:
            self.analyse(trainer, pl_module, epoch=0)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the clock of this training epoch."""
        self._epoch_started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Record the epoch's time (training and validation); analyse every ``every_n_epochs``."""
        self.epoch_seconds.append(time.perf_counter() - self._epoch_started)
        completed = trainer.current_epoch + 1
        if completed % self.settings.every_n_epochs == 0:
            self.analyse(trainer, pl_module, epoch=completed)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Measure the final network unless its epoch was just measured, then write the summary,
        the figure and the per-layer table."""
        final_epoch = trainer.current_epoch
        if self.last_analysed_epoch != final_epoch or not self.last_results:
            self.analyse(trainer, pl_module, epoch=final_epoch)
        if self.run_dir is None or not trainer.is_global_zero:
            return
        write_json(self.run_dir / SUMMARY_FILE, self.summary(trainer))
        if self.table is not None:
            figure = ncc_train_error_figure(self.table.read(), self.settings.eps, self.config)
            save_figure(figure, self.run_dir / FIGURES_DIR, NCC_FIGURE)
        if not self.quiet:
            Console().print(layer_table(self.last_results, self.effective_depths(), final_epoch))

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to finish the same summary as an uninterrupted one."""
        return {
            "terminal_phase_epoch": self.terminal_phase_epoch,
            "last_analysed_epoch": self.last_analysed_epoch,
            "analysis_seconds": list(self.analysis_seconds),
            "epoch_seconds": list(self.epoch_seconds),
            "metrics_bytes": 0 if self.table is None else self.table.size(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` from a checkpoint; the run is then a resumed one."""
        self.terminal_phase_epoch = state_dict["terminal_phase_epoch"]
        self.last_analysed_epoch = state_dict["last_analysed_epoch"]
        self.analysis_seconds = list(state_dict["analysis_seconds"])
        self.epoch_seconds = list(state_dict["epoch_seconds"])
        self._restored = True
        self._metrics_bytes_at_checkpoint = state_dict.get("metrics_bytes")  # None: older checkpoints

    # ------------------------------------------------------------------ the analysis
    def analyse(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        """Measure every split at ``epoch``, then log and record the results (class docstring)."""
        started = time.perf_counter()
        modes = {module: module.training for module in pl_module.modules()}
        pl_module.eval()
        try:
            results, accuracy = self._measure(trainer, pl_module)
        finally:
            for module, training in modes.items():
                module.training = training
        seconds = time.perf_counter() - started
        self.analysis_seconds.append(seconds)
        self.last_results, self.last_accuracy = results, accuracy
        self.last_analysed_epoch = epoch
        if self.terminal_phase_epoch is None and accuracy["train"] == 1.0:
            self.terminal_phase_epoch = epoch
        self._log(trainer, epoch, seconds)
        if self.table is not None and trainer.is_global_zero:
            self.table.append(epoch, results)

    def _measure(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> tuple[SplitResults, dict[str, float]]:
        device = pl_module.device
        network = self._network(pl_module)
        options = {
            "classifier_layer": network.classifier_layer,
            "classifier_weight": network.classifier_weight,
            "pool": self.settings.pool,
            "full_covariance_max_dim": self.settings.full_covariance_max_dim,
            "measures": self.settings.measures,
            "empty_classes": self.settings.empty_classes,
            "min_class_count": self.settings.min_class_count,
            "layer_weights": {} if network.model is None else linear_inputs(network.model),
        }
        train = NeuralCollapse(network.num_classes, **options).to(device)
        train_metrics: dict[str, tuple[NeuralCollapse, int]] = {"train": (train, 1)}
        datamodule = trainer.datamodule
        if self.dataloaders is None and _has_label_noise(datamodule):
            train_metrics["train_clean"] = (NeuralCollapse(network.num_classes, **options).to(device), 2)
        cache_bytes = int(self.settings.cache_features_mb * 2**20)
        loaders = {
            split: _Unpacked(_shard(loader, trainer), self.unpack_batch)
            for split, loader in self._dataloaders(datamodule).items()
        }
        analysis_options = {
            "device": device,
            "dtype": _parameter_dtype(pl_module),
            "cache_bytes": cache_bytes,
        }
        accuracy = analyse_split(
            network.forward, loaders["train"], train_metrics, **analysis_options
        ).accuracy
        metrics = dict(train_metrics)
        if "test" in loaders:
            test = NeuralCollapse(network.num_classes, ncc_reference=train, **options).to(device)
            metrics["test"] = (test, 1)
            accuracy.update(
                analyse_split(
                    network.forward, loaders["test"], {"test": (test, 1)}, **analysis_options
                ).accuracy
            )
        results = {split: metric.compute() for split, (metric, _) in metrics.items()}
        if network.model is not None:
            for layer, geometry in head_geometry(network.model, train, pl_module).items():
                results["train"][layer].update(geometry)
        return results, accuracy

    def _network(self, pl_module: pl.LightningModule) -> _Network:
        """What to measure in ``pl_module``: the callback's ``features`` and classifier, else its
        ncdepth model's."""
        if self.features is None:
            model = _ncdepth_model(pl_module)
            return _Network(
                forward=model,
                num_classes=model.classifier.out_features,
                classifier_layer=model.classifier_layer,
                classifier_weight=lambda: model.classifier.weight.detach(),
                model=model,
            )
        features, weight = self.features, self.classifier_weight
        return _Network(
            forward=lambda x: features(pl_module, x),
            num_classes=self.num_classes,
            classifier_layer=self.classifier_layer,
            classifier_weight=None if weight is None else lambda: weight(pl_module).detach(),
            model=None,
        )

    def _dataloaders(self, datamodule: pl.LightningDataModule | None) -> dict[str, DataLoader]:
        """The train and test analysis loaders: the callback's own, else the datamodule's."""
        if self.dataloaders is not None:
            return self.dataloaders
        if not hasattr(datamodule, "analysis_dataloader"):
            raise TypeError(
                "NeuralCollapseCallback needs train_dataloader and test_dataloader, or a datamodule "
                "with analysis_dataloader(split) (ncdepth.data.NCDataModule)"
            )
        return {split: datamodule.analysis_dataloader(split) for split in ("train", "test")}

    def effective_depths(self) -> dict[float, int | None]:
        """``{eps: effective depth}`` of the last analysis, from the train split's NCC errors."""
        errors = [1.0 - layer["ncc_acc"] for layer in self.last_results["train"].values()]
        return {eps: effective_depth(errors, eps) for eps in self.settings.eps}

    def timings(self) -> dict[str, float | int]:
        """Mean seconds per analysis and per training epoch, and their ratio."""
        analysis = sum(self.analysis_seconds) / max(len(self.analysis_seconds), 1)
        epoch = sum(self.epoch_seconds) / max(len(self.epoch_seconds), 1)
        return {
            "analyses": len(self.analysis_seconds),
            "analysis_seconds_mean": analysis,
            "train_epochs": len(self.epoch_seconds),
            "train_epoch_seconds_mean": epoch,
            "analysis_over_epoch": analysis / epoch if epoch > 0 else float("nan"),
        }

    def summary(self, trainer: pl.Trainer) -> dict[str, Any]:
        """The content of ``summary.json`` (see the module docstring of ``results``)."""
        datamodule = trainer.datamodule
        return {
            "epoch": self.last_analysed_epoch,
            "layers": list(self.last_results["train"]),
            "effective_depth": {str(eps): d for eps, d in self.effective_depths().items()},
            "separation_law": separation_laws(self.last_results),
            "terminal_phase_epoch": self.terminal_phase_epoch,
            "accuracy": dict(self.last_accuracy),
            "final_metrics": self.last_results,
            "data": datamodule.data_report() if hasattr(datamodule, "data_report") else {},
            "timings": self.timings(),
            "config": self.config,
        }

    def _log(self, trainer: pl.Trainer, epoch: int, seconds: float) -> None:
        flat: dict[str, float] = {"epoch": float(epoch), "timing/analysis_s": seconds}
        for split, layers in self.last_results.items():
            flat[f"nc/{split}/network_acc"] = self.last_accuracy[split]
            for layer, metrics in layers.items():
                for name, value in metrics.items():
                    flat[f"nc/{split}/{layer}/{name}"] = value
        depths = self.effective_depths()
        for eps, depth in depths.items():
            flat[f"nc/effective_depth@{eps:g}"] = float("nan") if depth is None else float(depth)
        if self.epoch_seconds:
            flat["timing/train_epoch_s"] = self.epoch_seconds[-1]
        for logger in trainer.loggers:
            logger.log_metrics(flat, step=trainer.global_step)
        if trainer.is_global_zero:
            epoch_time = f"{self.epoch_seconds[-1]:.2f}s" if self.epoch_seconds else "n/a"
            log.info(
                "epoch %d: NC analysis %.2fs (last training epoch %s); train acc %.4f, "
                "test acc %s; effective depth %s",
                epoch,
                seconds,
                epoch_time,
                self.last_accuracy["train"],
                f"{self.last_accuracy['test']:.4f}" if "test" in self.last_accuracy else "not measured",
                {f"{eps:g}": depth for eps, depth in depths.items()},
            )


def _ncdepth_model(pl_module: pl.LightningModule) -> nn.Module:
    """``pl_module.model`` when it is an ncdepth model (``model(x) -> (logits, layers)``, with
    ``model.classifier`` an ``nn.Linear`` and ``model.classifier_layer``); raises ``TypeError``
    saying what to pass to :class:`NeuralCollapseCallback` otherwise."""
    model = getattr(pl_module, "model", None)
    if isinstance(getattr(model, "classifier", None), nn.Linear) and hasattr(model, "classifier_layer"):
        return model
    raise TypeError(
        f"{type(pl_module).__name__} holds no ncdepth model (pl_module.model with .classifier and "
        ".classifier_layer): pass NeuralCollapseCallback(layers=... or features=..., num_classes=...)"
    )


def _tapped(layers: list[str], pool: str) -> Features:
    """:data:`Features` reading ``layers`` of the LightningModule with a :class:`LayerTap` while
    the module's own forward pass computes the logits."""

    def features(pl_module: pl.LightningModule, x: Tensor) -> tuple[Tensor, Mapping[str, Tensor]]:
        with LayerTap(pl_module, layers, pool=pool) as tap:
            logits = pl_module(x)
        return logits, tap.features

    return features


class _DefaultUnpack:
    """Sequences ``(x, y, ...)`` as they are; dicts through ``batch_keys``, else a ``TypeError`` that
    lists the batch's keys and says what to pass. A class, not a closure: ``ddp_spawn`` pickles the
    callback."""

    def __init__(self, batch_keys: tuple[str, str] | None) -> None:
        self.input_key, self.label_key = batch_keys if batch_keys is not None else (None, None)

    def __call__(self, batch: Any) -> Sequence[Any]:
        if isinstance(batch, Mapping):
            if self.input_key is None:
                raise TypeError(
                    f"the analysis loader yields dict batches (keys {sorted(batch)}): pass "
                    "NeuralCollapseCallback(batch_keys=(input key, label key)) or unpack_batch=..."
                )
            missing = [key for key in (self.input_key, self.label_key) if key not in batch]
            if missing:
                raise KeyError(f"batch_keys {missing} are not keys of the batch {sorted(batch)}")
            return batch[self.input_key], batch[self.label_key]
        if isinstance(batch, (str, bytes)) or not isinstance(batch, Sequence) or len(batch) < 2:
            raise TypeError(
                f"an analysis batch must be (x, y, ...) or a dict, got {type(batch).__name__}: pass "
                "NeuralCollapseCallback(unpack_batch=...) returning (x, y)"
            )
        return batch


class _Unpacked:
    """A loader whose batches go through ``unpack`` (re-iterable, as the two passes need)."""

    def __init__(self, loader: DataLoader, unpack: UnpackBatch) -> None:
        self.loader, self.unpack = loader, unpack

    def __iter__(self):
        return (self.unpack(batch) for batch in self.loader)


def _parameter_dtype(module: nn.Module) -> torch.dtype | None:
    """The dtype of the module's first floating parameter (bf16, fp16 or float64 under Lightning's
    ``*-true`` precisions), which the analysis converts floating inputs to."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), None)


def _has_label_noise(datamodule: pl.LightningDataModule | None) -> bool:
    noise_mask: Tensor | None = getattr(datamodule, "noise_mask", None)
    return noise_mask is not None and bool(torch.as_tensor(noise_mask).any())


def _shard(loader: DataLoader, trainer: pl.Trainer) -> DataLoader:
    """Under several processes, rank ``r`` of ``W`` takes samples ``r, r + W, ...`` (no padding,
    so every sample counts once in the synced metrics); a single process keeps ``loader``."""
    if trainer.world_size == 1:
        return loader
    if len(loader.dataset) < trainer.world_size:  # every rank raises: none waits in a collective
        raise ValueError(
            f"an analysis split of {len(loader.dataset)} samples cannot be shared by "
            f"{trainer.world_size} processes (each needs at least one sample)"
        )
    indices = range(trainer.global_rank, len(loader.dataset), trainer.world_size)
    return DataLoader(
        Subset(loader.dataset, indices),
        batch_size=loader.batch_size,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
    )
