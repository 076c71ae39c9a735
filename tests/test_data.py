"""Tests for ncdepth.data: embedded datasets offline, label noise, imbalance, loaders, configs."""

from __future__ import annotations

import random
from pathlib import Path

import hydra.utils
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ncdepth.cli import CONFIG_DIR
from ncdepth.data import DATASETS, DatasetUnavailableError, NCDataModule
from ncdepth.data.imbalance import imbalanced_counts, select_per_class
from ncdepth.data.noise import apply_label_noise
from ncdepth.data.splits import stratified_split

CONF_DIR = CONFIG_DIR / "data"
EMBEDDED = {  # name -> (num_classes, input_shape, n_train, n_test)
    "mnist5k": (10, (1, 28, 28), 4000, 1000),
    "digits": (10, (1, 8, 8), 1437, 360),
    "mnist1d": (10, (1, 40), 4000, 1000),
    "gaussian": (10, (32,), 2000, 1000),
}
TORCHVISION = ["mnist", "fashion_mnist", "cifar10", "cifar100", "svhn"]
SMALL_GAUSSIAN = {"num_classes": 4, "dim": 6, "samples_per_class": 50, "test_samples_per_class": 20}


def built(dataset: str = "gaussian", **kwargs) -> NCDataModule:
    dm = NCDataModule(dataset, **kwargs)
    dm.setup("fit")
    return dm


def collect(loader) -> list[torch.Tensor]:
    return [torch.cat(parts) for parts in zip(*loader, strict=True)]


def test_registry_lists_every_dataset():
    assert sorted(DATASETS) == sorted([*EMBEDDED, *TORCHVISION])


@pytest.mark.parametrize("name", list(EMBEDDED))
def test_embedded_dataset_builds_offline(name: str):
    num_classes, input_shape, n_train, n_test = EMBEDDED[name]
    dm = built(name)
    assert (dm.num_classes, dm.input_shape) == (num_classes, input_shape)
    assert dm.train_inputs.shape == (n_train, *input_shape)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (128, *input_shape) and x.dtype == torch.float32
    assert y.dtype == torch.long and set(dm.clean_train_labels.tolist()) == set(range(num_classes))
    x_test, y_test, y_again = collect(dm.analysis_dataloader("test"))
    assert x_test.shape == (n_test, *input_shape) and torch.equal(y_test, y_again)
    # standardised inputs; no test input is also a train input
    assert abs(dm.train_inputs.mean().item()) < 0.2 and 0.7 < dm.train_inputs.std().item() < 1.5
    train_rows = {row.numpy().tobytes() for row in dm.train_inputs}
    test_rows = {row.numpy().tobytes() for row in x_test}
    assert not train_rows & test_rows


def test_stratified_split_is_disjoint_complete_and_stratified():
    labels = torch.arange(10).repeat_interleave(torch.arange(10, 110, 10))  # 10, 20, ..., 100
    train, test = stratified_split(labels, test_size=110, seed=3)
    assert len(test) == 110 and len(train) + len(test) == len(labels)
    assert torch.equal(torch.cat([train, test]).sort().values, torch.arange(len(labels)))
    assert torch.bincount(labels[test]).tolist() == list(range(2, 22, 2))  # 20 % of every class
    assert torch.equal(stratified_split(labels, 110, seed=3)[1], test)


def test_mnist5k_split_is_balanced_and_independent_of_run_seed():
    a, b = built("mnist5k", seed=0), built("mnist5k", seed=1)
    assert a.data_report()["train_class_counts"] == [400] * 10
    assert a.data_report()["test_class_counts"] == [100] * 10
    assert torch.equal(a.train_inputs, b.train_inputs)


def test_mnist1d_leaves_global_random_state_alone():
    np.random.seed(123)
    random.seed(123)
    expected = (np.random.rand(), random.random())
    np.random.seed(123)
    random.seed(123)
    built("mnist1d", dataset_options={"num_samples": 200})
    assert (np.random.rand(), random.random()) == expected


def test_gaussian_options_shape_the_data():
    dm = built(dataset_options={**SMALL_GAUSSIAN, "noise_std": 0.0, "separation": 2.0})
    assert (dm.num_classes, dm.input_shape) == (4, (6,))
    assert len(dm.train_labels) == 200 and dm.data_report()["n_test"] == 80
    # without noise every sample sits exactly on its class mean, a point of norm `separation`
    norms = dm.train_inputs.norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 2.0), atol=1e-5)


def test_analysis_loaders_are_fixed_order_unaugmented_with_clean_labels():
    dm = built("digits", augment=True, label_noise=0.3, analysis_batch_size=100)
    first, second = collect(dm.analysis_dataloader("train")), collect(dm.analysis_dataloader("train"))
    x, y_trained, y_clean = first
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert torch.equal(x, dm.train_inputs)  # stored order, no crop
    assert torch.equal(y_trained, dm.train_labels) and torch.equal(y_clean, dm.clean_train_labels)
    assert not torch.equal(y_trained, y_clean)
    assert next(iter(dm.analysis_dataloader("train")))[0].shape[0] == 100


def test_train_loader_augments_shuffles_and_is_seeded():
    dm = built("digits", augment=True, label_noise=0.1)
    x, y = collect(dm.train_dataloader())
    assert x.shape == dm.train_inputs.shape
    assert torch.equal(y.sort().values, dm.train_labels.sort().values)  # a permutation
    assert not torch.equal(y, dm.train_labels)  # shuffled
    stored = {row.numpy().tobytes() for row in dm.train_inputs}
    assert sum(row.numpy().tobytes() not in stored for row in x) > len(x) // 2  # cropped
    again = built("digits", augment=True, label_noise=0.1)
    assert torch.equal(collect(again.train_dataloader())[1], y)


def test_label_noise_changes_exactly_round_pn_labels_to_other_classes():
    labels = torch.arange(7).repeat(1000)
    noisy, mask = apply_label_noise(labels, 0.3, 7, torch.Generator().manual_seed(0))
    assert int(mask.sum()) == round(0.3 * len(labels))
    assert torch.equal(mask, noisy != labels)
    # new label - old label is uniform on {1, ..., C-1}
    shifts = torch.bincount((noisy - labels)[mask] % 7, minlength=7)
    assert shifts[0] == 0 and shifts[1:].min() > 0.8 * mask.sum() / 6
    everything, _ = apply_label_noise(labels, 1.0, 7, torch.Generator().manual_seed(0))
    assert bool((everything != labels).all())


def test_label_noise_in_the_datamodule_is_reported_and_seeded():
    dm = built(label_noise=0.25, dataset_options=SMALL_GAUSSIAN)
    report = dm.data_report()
    assert report["label_noise_requested"] == 0.25
    assert report["label_noise_actual"] == round(0.25 * 200) / 200
    assert report["noisy_label_can_equal_clean"] is False
    assert torch.equal(dm.noise_mask, dm.train_labels != dm.clean_train_labels)
    same = built(label_noise=0.25, dataset_options=SMALL_GAUSSIAN)
    other = built(label_noise=0.25, dataset_options=SMALL_GAUSSIAN, seed=1)
    assert torch.equal(same.train_labels, dm.train_labels)
    assert not torch.equal(other.noise_mask, dm.noise_mask)
    assert torch.equal(other.clean_train_labels, dm.clean_train_labels)


def test_setup_is_idempotent():
    dm = built(label_noise=0.5)
    labels = dm.train_labels
    dm.setup("fit")
    dm.setup("validate")
    assert dm.train_labels is labels


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("step", [200, 200, 200, 200, 200, 20, 20, 20, 20, 20]),
        ("exp", [round(200 * 10 ** (-c / 9)) for c in range(10)]),
    ],
)
def test_imbalance_counts_follow_the_formula(kind: str, expected: list[int]):
    assert imbalanced_counts(kind, 200, 10.0, 10) == expected
    dm = built(imbalance=kind, imbalance_ratio=10.0)
    assert dm.data_report()["train_class_counts"] == expected
    assert dm.data_report()["test_class_counts"] == [100] * 10  # test stays balanced


def test_samples_per_class_then_imbalance_and_explicit_counts():
    dm = built(samples_per_class=40, imbalance="step", imbalance_ratio=4.0)
    assert dm.data_report()["train_class_counts"] == [40] * 5 + [10] * 5
    counts = [50, 1, 7, 20]
    dm = built(class_counts=counts, dataset_options=SMALL_GAUSSIAN)
    assert dm.data_report()["train_class_counts"] == counts


def test_per_class_selection_is_nested_for_a_fixed_seed():
    labels = torch.arange(3).repeat(30)
    small = select_per_class(labels, [5, 2, 9], torch.Generator().manual_seed(4))
    large = select_per_class(labels, [20, 10, 30], torch.Generator().manual_seed(4))
    assert set(small.tolist()) <= set(large.tolist())
    assert torch.bincount(labels[small]).tolist() == [5, 2, 9]


def test_asking_for_more_samples_than_exist_fails():
    with pytest.raises(ValueError, match="class 0 has 200 train samples but 300"):
        built(samples_per_class=300)
    with pytest.raises(ValueError, match="class 1 has 50 train samples but 51"):
        built(class_counts=[1, 51, 1, 1], dataset_options=SMALL_GAUSSIAN)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": "imagenet"}, r"data.dataset must be one of \['mnist5k'"),
        ({"label_noise": 1.5}, r"data.label_noise must be a number in \[0.0, 1.0\]"),
        ({"label_noise": -0.1}, "data.label_noise"),
        ({"imbalance": "linear"}, r"data.imbalance must be one of \[None, 'step', 'exp'\]"),
        ({"imbalance_ratio": 0.5}, "data.imbalance_ratio must be a number in >= 1.0"),
        ({"class_counts": [10, 10]}, "data.class_counts must list 10 counts"),
        ({"class_counts": [0] * 10}, "data.class_counts"),
        ({"class_counts": [5] * 10, "imbalance": "step"}, "exclusive"),
        ({"samples_per_class": 0}, "data.samples_per_class must be an integer >= 1"),
        ({"batch_size": 0}, "data.batch_size must be an integer >= 1"),
        ({"num_workers": -1}, "data.num_workers"),
        ({"download": "yes"}, "data.download must be one of"),
        ({"augment": True}, "data.augment=true needs an image dataset"),
        ({"dataset_options": {"colour": 1}}, r"unknown keys \['colour'\].*allowed keys"),
        ({"dataset_options": {"num_classes": 1}}, "data.dataset_options.num_classes"),
        ({"dataset": "mnist5k", "dataset_options": {"test_size": 5000}}, "test_size must be < 5000"),
    ],
)
def test_bad_config_values_fail_at_construction(kwargs: dict, message: str):
    kwargs = {"dataset": "gaussian", **kwargs}
    with pytest.raises(ValueError, match=message):
        NCDataModule(kwargs.pop("dataset"), **kwargs)


def test_analysis_split_name_is_checked():
    with pytest.raises(ValueError, match=r"split must be one of \['train', 'test'\]"):
        built().analysis_dataloader("val")


@pytest.mark.parametrize("name", TORCHVISION)
def test_missing_torchvision_data_names_directory_files_and_flag(name: str, tmp_path: Path):
    dm = NCDataModule(name, data_dir=tmp_path, download=False)
    assert dm.num_classes == (100 if name == "cifar100" else 10)
    for step in (dm.prepare_data, dm.setup):
        with pytest.raises(DatasetUnavailableError) as error:
            step()
        message = str(error.value)
        assert str(tmp_path) in message and "data.download=true" in message
        assert any(part in message for part in ("MNIST/raw", "cifar-10", "cifar-100", "32x32.mat"))
    assert isinstance(error.value, RuntimeError) and not any(tmp_path.iterdir())


@pytest.mark.parametrize("path", sorted(CONF_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_data_config_instantiates(path: Path):
    config = OmegaConf.create({"seed": 0, "data": OmegaConf.load(path)})  # data.seed is ${seed}
    dm = hydra.utils.instantiate(config.data)
    assert isinstance(dm, NCDataModule) and dm.spec.name == path.stem
    assert dm.download is False and dm.batch_size == 128


def test_every_dataset_has_a_config():
    assert sorted(p.stem for p in CONF_DIR.glob("*.yaml")) == sorted(DATASETS)
