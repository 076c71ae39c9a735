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
    what to measure by ``how`` (``layers`` or ``features``, and any other argument); plain loaders
    of ``(x, y)`` batches unless ``how`` gives its own, no datamodule."""
    pl.seed_everything(0)
    module = TwoLayerNet()
    module.frozen.eval()
    loaders = {
        "train_dataloader": DataLoader(TRAIN, batch_size=32),
        "test_dataloader": DataLoader(TEST, batch_size=32),
    }
    callback = NeuralCollapseCallback(
        AnalysisConfig(every_n_epochs=1),
        **{**loaders, **how},
        num_classes=NUM_CLASSES,
        classifier_layer="penultimate",
        classifier_weight=lambda m: m.fc.weight,
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
        (
            {"features": features, "num_classes": 3, "test_dataloader": []},
            "test_dataloader needs train_dataloader",
        ),
        ({"batch_keys": ("x", "y"), "unpack_batch": tuple}, "not both"),
        ({"batch_keys": "x"}, r"batch_keys must be \(input key, label key\)"),
    ],
)
def test_arguments_that_do_not_go_together(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NeuralCollapseCallback(**arguments)


class DictBatches(torch.utils.data.Dataset):
    """``{"features": x, "label": y, "id": "sample-i"}`` items, as a Hugging Face dataset yields them
    (a string field included: moving it to a device is what failed)."""

    def __init__(self, data: TensorDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, Any]:
        x, y = self.data[index]
        return {"features": x, "label": y, "id": f"sample-{index}"}


def test_dict_batches_through_batch_keys_or_unpack_batch_measure_the_same(tmp_path: Path) -> None:
    tuples, _ = fit(tmp_path / "tuples", layers=LAYERS)
    dict_loaders = {
        "train_dataloader": DataLoader(DictBatches(TRAIN), batch_size=32),
        "test_dataloader": DataLoader(DictBatches(TEST), batch_size=32),
    }
    keyed, _ = fit(tmp_path / "keys", layers=LAYERS, batch_keys=("features", "label"), **dict_loaders)
    unpacked, _ = fit(
        tmp_path / "hook",
        layers=LAYERS,
        unpack_batch=lambda batch: (batch["features"], batch["label"]),
        **dict_loaders,
    )
    assert keyed.last_results == tuples.last_results == unpacked.last_results
    assert keyed.last_accuracy == tuples.last_accuracy
    with pytest.raises(
        TypeError, match=r"dict batches \(keys \['features', 'id', 'label'\]\): pass .*batch_keys="
    ):
        fit(tmp_path / "unsaid", layers=LAYERS, **dict_loaders)


def test_train_only_analysis_measures_the_train_split(tmp_path: Path) -> None:
    train_only, module = fit(tmp_path / "train", features=features, test_dataloader=None)
    assert set(train_only.last_results) == {"train"} and set(train_only.last_accuracy) == {"train"}
    module.eval()
    with torch.no_grad():
        _, layers = features(module, TRAIN.tensors[0])
    for layer in LAYERS:
        expected = neural_collapse(layers[layer], TRAIN.tensors[1], NUM_CLASSES)
        assert train_only.last_results["train"][layer]["nc1"] == pytest.approx(expected["nc1"], rel=1e-6)
    rows = (tmp_path / "train" / METRICS_FILE).read_text().splitlines()[1:]
    assert rows and {row.split(",")[1] for row in rows} == {"train"}
    summary = json.loads((tmp_path / "train" / SUMMARY_FILE).read_text())
    assert set(summary["final_metrics"]) == {"train"} and summary["effective_depth"]


def test_quiet_keeps_the_table_off_the_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fit(tmp_path / "loud", features=features)
    assert "NCC train acc" in capsys.readouterr().out
    fit(tmp_path / "quiet", features=features, quiet=True)
    assert "NCC train acc" not in capsys.readouterr().out
    assert (tmp_path / "quiet" / SUMMARY_FILE).exists()


def test_one_pooling_setting_for_tapped_layers_and_feature_functions(tmp_path: Path) -> None:
    """``AnalysisConfig.pool`` pools a tapped ``(B, K, L)`` map and a feature function's alike; there is no
    second pooling argument."""

    def conv_features(module: TwoLayerNet, x: Tensor) -> tuple[Tensor, Mapping[str, Tensor]]:
        logits = module(x)
        hidden = module.hidden(module.frozen(x))
        return logits, {"hidden": hidden.view(len(x), 4, 4), "penultimate": module.penultimate(hidden)}

    class Maps(nn.Module):  # the tapped module outputs (B, 4, 4): 4 channels of length 4
        def forward(self, h: Tensor) -> Tensor:
            return h.view(len(h), 4, 4)

    results = {}
    for kind in ("tapped", "function"):
        pl.seed_everything(0)
        module = TwoLayerNet()
        module.hidden.append(Maps())
        module.penultimate[0] = nn.Sequential(nn.Flatten(), module.penultimate[0])
        how = {"layers": LAYERS} if kind == "tapped" else {"features": conv_features}
        callback = NeuralCollapseCallback(
            AnalysisConfig(every_n_epochs=1, pool="avg"),
            **how,
            num_classes=NUM_CLASSES,
            classifier_layer="penultimate",
            train_dataloader=DataLoader(TRAIN, batch_size=32),
            quiet=True,
        )
        trainer = pl.Trainer(
            max_epochs=1,
            callbacks=[callback],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(module, DataLoader(TRAIN, batch_size=16))
        results[kind] = callback.last_results["train"]
    assert results["tapped"] == results["function"]
    module.eval()
    with torch.no_grad():
        pooled = module.hidden(module.frozen(TRAIN.tensors[0])).mean(-1)  # (B, 4): averaged over length
    expected = neural_collapse(pooled, TRAIN.tensors[1], NUM_CLASSES)
    assert results["tapped"]["hidden"]["nc1"] == pytest.approx(expected["nc1"], rel=1e-6)
    with pytest.raises(TypeError, match="layer_pool"):
        NeuralCollapseCallback(layers=LAYERS, layer_pool="avg", num_classes=NUM_CLASSES)
