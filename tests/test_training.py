"""NCModule (losses, optimizers, parameter groups, feature decay), the NC callback and its files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ncdepth.metrics import METRIC_NAMES, NeuralCollapse, effective_depth
from ncdepth.metrics import functional as NCF
from ncdepth.metrics.generalized import separation_law
from ncdepth.metrics.registry import DEFAULT_EXTRA
from ncdepth.models import MLP
from ncdepth.training import (
    AnalysisConfig,
    LossConfig,
    NCModule,
    NeuralCollapseCallback,
    OptimizerConfig,
    SchedulerConfig,
)
from ncdepth.training.analysis import analyse_split
from ncdepth.training.random_state import RandomStateCheckpoint
from ncdepth.training.results import TidyTable
from ncdepth.validation import from_node

NUM_CLASSES = 3
DIM = 8


class BlobData(pl.LightningDataModule):
    """Three Gaussian blobs in 8-d, 10% of the training labels flipped; the analysis protocol of
    ``ncdepth.data.NCDataModule`` (``analysis_dataloader`` yields ``(x, y_trained, y_clean)``)."""

    def __init__(self, n_train: int = 150, n_test: int = 90, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        centres = 2.0 * torch.randn(NUM_CLASSES, DIM, generator=generator)

        def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            y = torch.arange(n) % NUM_CLASSES
            return centres[y] + torch.randn(n, DIM, generator=generator), y

        self.x_train, self.clean_train_labels = sample(n_train)
        self.x_test, self.y_test = sample(n_test)
        self.noise_mask = torch.rand(n_train, generator=generator) < 0.1
        shift = torch.randint(1, NUM_CLASSES, (n_train,), generator=generator)
        flipped = (self.clean_train_labels + shift) % NUM_CLASSES
        self.train_labels = torch.where(self.noise_mask, flipped, self.clean_train_labels)
        self.num_classes, self.input_shape = NUM_CLASSES, (DIM,)
        self.shuffle_generator = torch.Generator().manual_seed(seed)

    def train_dataloader(self) -> DataLoader:
        data = TensorDataset(self.x_train, self.train_labels)
        return DataLoader(data, batch_size=32, shuffle=True, generator=self.shuffle_generator)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The shuffling generator's state, saved in checkpoints so that resumes are exact."""
        return {"shuffle_generator": self.shuffle_generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.shuffle_generator.set_state(state_dict["shuffle_generator"])

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x_test, self.y_test), batch_size=64)

    def analysis_dataloader(self, split: str) -> DataLoader:
        if split == "train":
            data = TensorDataset(self.x_train, self.train_labels, self.clean_train_labels)
        else:
            data = TensorDataset(self.x_test, self.y_test, self.y_test)
        return DataLoader(data, batch_size=40)

    def data_report(self) -> dict[str, float]:
        return {"label_noise_actual": float(self.noise_mask.float().mean())}


def tiny_model(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(input_shape=(DIM,), num_classes=NUM_CLASSES, depth=3, width=16)


def fit(
    tmp_path: Path, epochs: int = 4, ckpt_path: Path | None = None, **settings: object
) -> tuple[NeuralCollapseCallback, BlobData, NCModule]:
    """Train ``tiny_model`` on ``BlobData`` for ``epochs`` with the callback writing ``tmp_path``
    and ``last.ckpt`` saved every epoch; resume from ``ckpt_path`` when given."""
    pl.seed_everything(0)
    data = BlobData()
    module = NCModule(tiny_model(), optimizer=OptimizerConfig(lr=0.05))
    callback = NeuralCollapseCallback(
        AnalysisConfig(every_n_epochs=2, **settings), run_dir=tmp_path, config={"seed": 0}
    )
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "checkpoints",
        save_last=True,
        save_top_k=0,
        save_on_train_epoch_end=True,
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        callbacks=[callback, RandomStateCheckpoint(), checkpoint],
        logger=pl.loggers.CSVLogger(tmp_path, name="logs"),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return callback, data, module


# ---------------------------------------------------------------------------------- NCModule
def test_cross_entropy_objective_with_feature_decay() -> None:
    module = NCModule(tiny_model(), loss=LossConfig(name="ce", feature_decay=0.3))
    logits, h, y = torch.randn(5, 3), torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    expected = F.cross_entropy(logits, y) + 0.15 * (h**2).sum(1).mean()
    torch.testing.assert_close(module.objective(logits, h, y), expected)


def test_mse_objective_uses_scaled_one_hot_targets() -> None:
    module = NCModule(tiny_model(), loss=LossConfig(name="mse", mse_scale=5.0))
    logits, y = torch.randn(4, 3), torch.tensor([2, 0, 1, 2])
    target = torch.zeros(4, 3)
    target[torch.arange(4), y] = 5.0
    expected = ((logits - target) ** 2).mean()
    torch.testing.assert_close(module.objective(logits, torch.randn(4, 2), y), expected)


def test_feature_decay_reads_the_classifier_input() -> None:
    model = tiny_model()
    module = NCModule(model, loss=LossConfig(feature_decay=1.0))
    x, y = torch.randn(6, DIM), torch.tensor([0, 1, 2, 0, 1, 2])
    logits, embeddings = model(x)
    h = embeddings[model.classifier_layer]
    without = NCModule(model).objective(logits, h, y)
    torch.testing.assert_close(module.objective(logits, h, y) - without, 0.5 * (h**2).sum(1).mean())


def test_parameter_groups_split_classifier_weight_decay() -> None:
    model = tiny_model()
    config = OptimizerConfig(weight_decay=1e-3, classifier_weight_decay=0.5)
    body, head = NCModule(model, optimizer=config).parameter_groups()
    assert head["weight_decay"] == 0.5 and body["weight_decay"] == 1e-3
    assert {id(p) for p in head["params"]} == {id(p) for p in model.classifier.parameters()}
    grouped = [id(p) for p in body["params"] + head["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    default_body, default_head = NCModule(model).parameter_groups()
    assert default_head["weight_decay"] == default_body["weight_decay"] == 5e-4


@pytest.mark.parametrize(
    ("config", "optimizer_type"),
    [
        (OptimizerConfig(name="sgd", lr=0.1, momentum=0.5), torch.optim.SGD),
        (OptimizerConfig(name="adam", lr=1e-3), torch.optim.Adam),
        (OptimizerConfig(name="adamw", lr=1e-3, weight_decay=0.01), torch.optim.AdamW),
    ],
)
def test_configure_optimizers(config: OptimizerConfig, optimizer_type: type) -> None:
    module = NCModule(tiny_model(), optimizer=config)
    optimizer = module.configure_optimizers()["optimizer"]
    assert type(optimizer) is optimizer_type
    assert all(group["lr"] == config.lr for group in optimizer.param_groups)
    if config.name == "sgd":
        assert optimizer.param_groups[0]["momentum"] == 0.5


def test_multistep_and_cosine_schedules() -> None:
    multistep = SchedulerConfig(name="multistep", milestones=(2, 4), gamma=0.5)
    module = NCModule(tiny_model(), optimizer=OptimizerConfig(lr=1.0), scheduler=multistep)
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(5):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates == [1.0, 1.0, 0.5, 0.5, 0.25]
    module = NCModule(tiny_model(), scheduler=SchedulerConfig(name="cosine"))
    module.trainer = pl.Trainer(max_epochs=7, logger=False, enable_progress_bar=False)
    cosine = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert isinstance(cosine, torch.optim.lr_scheduler.CosineAnnealingLR) and cosine.T_max == 7


@pytest.mark.parametrize(
    ("settings_type", "key", "node", "message"),
    [
        (LossConfig, "loss", {"name": "hinge"}, "loss.name must be one of ['ce', 'mse']"),
        (OptimizerConfig, "optimizer", {"lr": 0.0}, "optimizer.lr must be a number > 0"),
        (OptimizerConfig, "optimizer", {"name": "rmsprop"}, "optimizer.name must be one of"),
        (SchedulerConfig, "scheduler", {"milestones": [5, 3]}, "scheduler.milestones"),
        (AnalysisConfig, "nc", {"every_n_epochs": 0}, "nc.every_n_epochs must be an integer >= 1"),
        (AnalysisConfig, "nc", {"eps": [1.5]}, "nc.eps"),
        (AnalysisConfig, "nc", {"every_n": 3}, "unknown key nc.every_n"),
    ],
)
def test_bad_settings_name_the_key(settings_type: type, key: str, node: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        from_node(settings_type, key, node)


# ---------------------------------------------------------------------------------- the callback
def test_callback_writes_consistent_per_layer_metrics(tmp_path: Path) -> None:
    callback, data, _ = fit(tmp_path)
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert list(table.columns) == ["epoch", "split", "layer", "metric", "value"]
    assert sorted(table["epoch"].unique()) == [0, 2, 4]
    assert set(table["split"]) == {"train", "train_clean", "test"}
    assert set(table["layer"]) == {"layer1", "layer2", "layer3"}
    measured = set(METRIC_NAMES) | set(DEFAULT_EXTRA)  # nc.measures: the registry's defaults
    assert set(table["metric"]) == measured
    assert not table.duplicated(["epoch", "split", "layer", "metric"]).any()
    per_layer = table.groupby(["epoch", "split", "layer"])["metric"].apply(set)
    classifier_only = {"nc3", "nc4", "nc3u_uni_dual", "w_align"}  # the classifier is the only linear map
    for (_, _, layer), names in per_layer.items():  # nc3 and nc4 only at the classifier's input
        expected = measured - (classifier_only if layer != "layer3" else set())
        assert names == expected
    ncc = table[table["metric"] == "ncc_acc"]["value"]
    assert ((ncc >= 0) & (ncc <= 1)).all()

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["epoch"] == 4 and summary["layers"] == ["layer1", "layer2", "layer3"]
    final_train = table[(table["epoch"] == 4) & (table["split"] == "train")]
    errors = [
        1
        - final_train[(final_train["layer"] == layer) & (final_train["metric"] == "ncc_acc")]["value"].item()
        for layer in summary["layers"]
    ]
    for eps, depth in summary["effective_depth"].items():
        assert depth == effective_depth(errors, float(eps))
    for split, law in summary["separation_law"].items():  # He & Su's fit of log fuzziness over the layers
        rows = table[(table["epoch"] == 4) & (table["split"] == split) & (table["metric"] == "fuzziness")]
        assert law == separation_law(
            [rows[rows["layer"] == layer]["value"].item() for layer in summary["layers"]]
        )
    assert set(summary["separation_law"]) == {"train", "train_clean", "test"}
    assert summary["data"] == data.data_report()
    assert summary["accuracy"] == callback.last_accuracy
    assert summary["timings"]["analyses"] == 3 and summary["timings"]["train_epochs"] == 4
    assert summary["config"] == {"seed": 0}
    assert (tmp_path / "figures" / "ncc_train_error.png").stat().st_size > 0
    logged = pd.read_csv(next((tmp_path / "logs").rglob("metrics.csv")))
    assert "nc/train/layer3/nc1" in logged.columns and "timing/analysis_s" in logged.columns
    # the module's epoch totals: the last validation saw the final weights, as the last analysis did
    val_acc = logged["val/acc"].dropna()
    assert len(val_acc) == 4 and val_acc.iloc[-1] == pytest.approx(callback.last_accuracy["test"], abs=1e-6)
    assert logged["train/loss"].dropna().is_monotonic_decreasing


def test_callback_equals_metrics_computed_by_hand(tmp_path: Path) -> None:
    callback, data, module = fit(tmp_path, epochs=2)
    model = module.model.eval()
    with torch.no_grad():
        train_logits, train_feats = model(data.x_train)
        test_logits, test_feats = model(data.x_test)
    weight = model.classifier.weight
    for split, labels in (("train", data.train_labels), ("train_clean", data.clean_train_labels)):
        for layer, h in train_feats.items():
            extra = {"weight": weight, "bias": model.classifier.bias} if layer == "layer3" else {}
            expected = NCF.neural_collapse(h, labels, NUM_CLASSES, **extra)
            measured = callback.last_results[split][layer]
            for name, value in expected.items():
                assert measured[name] == pytest.approx(value, rel=1e-5, abs=1e-9), (split, layer, name)
    for layer, h in test_feats.items():
        means = NCF.class_means(train_feats[layer], data.train_labels, NUM_CLASSES)
        expected_acc = NCF.ncc_acc(h, data.y_test, NUM_CLASSES, means=means)
        assert callback.last_results["test"][layer]["ncc_acc"] == pytest.approx(expected_acc)
        assert callback.last_results["test"][layer]["nc1"] == pytest.approx(
            NCF.nc1(h, data.y_test, NUM_CLASSES), rel=1e-5
        )
    expected_train_acc = (train_logits.argmax(1) == data.train_labels).double().mean().item()
    assert callback.last_accuracy["train"] == pytest.approx(expected_train_acc)
    assert callback.last_accuracy["test"] == pytest.approx(
        (test_logits.argmax(1) == data.y_test).double().mean().item()
    )


@pytest.mark.parametrize("budget_mb", [100.0, 1e-3])
def test_feature_cache_gives_the_same_numbers(budget_mb: float) -> None:
    data, model = BlobData(), tiny_model().eval()

    def measure(cache_bytes: int) -> tuple[dict, bool]:
        layer = model.classifier_layer
        weight = model.classifier.weight.detach()
        train = NeuralCollapse(NUM_CLASSES, classifier_weight=weight, classifier_layer=layer)
        clean = NeuralCollapse(NUM_CLASSES, classifier_layer=layer)
        run = analyse_split(
            model,
            data.analysis_dataloader("train"),
            {"train": (train, 1), "train_clean": (clean, 2)},
            device=torch.device("cpu"),
            cache_bytes=cache_bytes,
        )
        return {"train": train.compute(), "train_clean": clean.compute(), **run.accuracy}, run.cached

    reference, reference_cached = measure(0)
    cached, was_cached = measure(int(budget_mb * 2**20))
    assert not reference_cached and was_cached == (budget_mb == 100.0)
    assert cached == reference


def test_tidy_table_cuts_back_to_a_checkpoints_length(tmp_path: Path) -> None:
    table = TidyTable(tmp_path / "metrics.csv")
    for epoch in (0, 2):
        table.append(epoch, {"train": {"layer1": {"nc1": float(epoch), "cdnv": math.nan}}})
    at_checkpoint = table.size()
    table.append(4, {"train": {"layer1": {"nc1": 4.0, "cdnv": 1.0}}})
    table.cut(at_checkpoint)
    assert table.read()["epoch"].tolist() == [0, 0, 2, 2]
    table.append(4, {"train": {"layer1": {"nc1": 4.0}}})
    assert table.read()["epoch"].tolist() == [0, 0, 2, 2, 4]
    assert b"\r" not in table.path.read_bytes()


def test_resumed_training_ends_like_an_uninterrupted_one(tmp_path: Path) -> None:
    straight, _, straight_module = fit(tmp_path / "straight", epochs=4)
    fit(tmp_path / "resumed", epochs=2)
    resumed, _, resumed_module = fit(
        tmp_path / "resumed", epochs=4, ckpt_path=tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    )
    for a, b in zip(straight_module.parameters(), resumed_module.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed.last_results == straight.last_results
    straight_table = pd.read_csv(tmp_path / "straight" / "metrics.csv")
    resumed_table = pd.read_csv(tmp_path / "resumed" / "metrics.csv")
    pd.testing.assert_frame_equal(straight_table, resumed_table)
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert summary["timings"]["train_epochs"] == 4 and summary["timings"]["analyses"] == 3
