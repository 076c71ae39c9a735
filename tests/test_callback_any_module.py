"""``NeuralCollapseCallback`` with a LightningModule defined here and plain ``DataLoader``s (no ``NCModule``,
no datamodule), told what to measure by a feature function or by module names (``LayerTap``): the numbers
agree with the functional metrics on the trained network, and the user's frozen submodule stays frozen.
The README's example runs in ``tests/test_readme.py``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from ncdepth.metrics.functional import class_means, ncc_acc, neural_collapse
from ncdepth.rundir import METRICS_FILE, SUMMARY_FILE
from ncdepth.training import AnalysisConfig, NeuralCollapseCallback

README = Path(__file__).resolve().parents[1] / "README.md"
NUM_CLASSES = 3
LAYERS = ["hidden", "penultimate"]
COMPARED = ("nc1", "nc1_trace_ratio", "cdnv", "ncc_acc", "nc2_equinorm", "nc2_etf", "nc3")


class TwoLayerNet(pl.LightningModule):
    """A user's module: two hidden layers and a linear classifier, trained on ``(x, y)`` batches.
    ``frozen`` (a BatchNorm kept in eval mode by the user) must stay in eval mode while it trains."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = nn.BatchNorm1d(6)
        self.hidden = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.penultimate = nn.Sequential(nn.Linear(16, 8), nn.Tanh())
        self.fc = nn.Linear(8, NUM_CLASSES)
        self.frozen_modes: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.penultimate(self.hidden(self.frozen(x))))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        self.frozen_modes.append(self.frozen.training)
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def features(module: TwoLayerNet, x: Tensor) -> tuple[Tensor, Mapping[str, Tensor]]:
    """The callback's feature function: logits and both hidden layers from one forward pass."""
    hidden = module.hidden(module.frozen(x))
    penultimate = module.penultimate(hidden)
    return module.fc(penultimate), {"hidden": hidden, "penultimate": penultimate}


def blobs(n: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % NUM_CLASSES
    centres = torch.randn(NUM_CLASSES, 6, generator=torch.Generator().manual_seed(0)) * 3
    return TensorDataset(centres[labels] + torch.randn(n, 6, generator=generator), labels)


TRAIN, TEST = blobs(90, seed=1), blobs(45, seed=2)


def fit(tmp_path: Path, **how: Any) -> tuple[NeuralCollapseCallback, TwoLayerNet]:
    """Train a fresh ``TwoLayerNet`` for two epochs with the callback measuring every epoch, told
    what to measure by ``how`` (``layers`` or ``features``); plain loaders, no datamodule."""
    pl.seed_everything(0)
    module = TwoLayerNet()
    module.frozen.eval()
    callback = NeuralCollapseCallback(
        AnalysisConfig(every_n_epochs=1),
        **how,
        num_classes=NUM_CLASSES,
        classifier_layer="penultimate",
        classifier_weight=lambda m: m.fc.weight,
        train_dataloader=DataLoader(TRAIN, batch_size=32),
        test_dataloader=DataLoader(TEST, batch_size=32),
        run_dir=tmp_path,
    )
    trainer = pl.Trainer(
        max_epochs=2,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(TRAIN, batch_size=16, shuffle=True))
    return callback, module


def test_callback_measures_a_users_module_on_plain_dataloaders(tmp_path: Path) -> None:
    callback, module = fit(tmp_path, features=features)
    assert module.frozen_modes and not any(module.frozen_modes)  # the analysis restored each mode
    assert module.training and module.hidden.training and not module.frozen.training
    results = callback.last_results
    assert set(results) == {"train", "test"} and list(results["train"]) == LAYERS
    module.eval()
    with torch.no_grad():
        (x_train, y_train), (x_test, y_test) = TRAIN.tensors, TEST.tensors
        logits, train_layers = features(module, x_train)
        _, test_layers = features(module, x_test)
    for layer in LAYERS:
        weight = module.fc.weight if layer == "penultimate" else None
        bias = module.fc.bias if layer == "penultimate" else None
        expected = neural_collapse(train_layers[layer], y_train, NUM_CLASSES, weight=weight, bias=bias)
        for name in COMPARED if weight is not None else COMPARED[:-1]:
            assert results["train"][layer][name] == pytest.approx(expected[name], rel=1e-6, abs=1e-9), name
        means = class_means(train_layers[layer], y_train, NUM_CLASSES)
        test_ncc = ncc_acc(test_layers[layer], y_test, NUM_CLASSES, means=means)
        assert results["test"][layer]["ncc_acc"] == pytest.approx(test_ncc)
    assert "nc3" not in results["train"]["hidden"]
    network_acc = (logits.argmax(dim=1) == y_train).double().mean().item()
    assert callback.last_accuracy["train"] == pytest.approx(network_acc)

    rows = (tmp_path / METRICS_FILE).read_text().splitlines()
    assert {row.split(",")[0] for row in rows[1:]} == {"0", "1", "2"}  # initialisation and each epoch
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert summary["layers"] == LAYERS and summary["epoch"] == 2 and summary["data"] == {}


def test_tapped_layers_measure_what_the_feature_function_does(tmp_path: Path) -> None:
    """``layers`` read by ``LayerTap`` from the module's own forward pass: the same numbers."""
    tapped, _ = fit(tmp_path / "tapped", layers=LAYERS)
    by_function, _ = fit(tmp_path / "function", features=features)
    assert tapped.last_results == by_function.last_results
    assert tapped.last_accuracy == by_function.last_accuracy


def test_without_features_the_module_must_hold_an_ncdepth_model() -> None:
    loader = DataLoader(blobs(9, seed=1), batch_size=9)
    callback = NeuralCollapseCallback(train_dataloader=loader, test_dataloader=loader)
    trainer = pl.Trainer(max_epochs=1, callbacks=[callback], logger=False, enable_checkpointing=False)
    with pytest.raises(TypeError, match=r"TwoLayerNet holds no ncdepth model.*layers=\.\.\. or features="):
        trainer.fit(TwoLayerNet(), loader)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"num_classes": 3}, "go with layers or features"),
        ({"features": features}, "need num_classes"),
        ({"features": features, "layers": LAYERS, "num_classes": 3}, "not both"),
        ({"features": features, "num_classes": 3, "train_dataloader": []}, "both train_dataloader and"),
    ],
)
def test_arguments_that_do_not_go_together(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NeuralCollapseCallback(**arguments)
