"""Many classes (``C > d``: no ``C x C`` object, pair metrics in blocks) against the float64 reference, and
``nc1`` on float32 features whatever the conditioning of ``Sigma_B``."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import ncdepth.metrics.functional as functional_module
import ncdepth.metrics.stats as stats_module
from ncdepth.metrics import NeuralCollapse
from ncdepth.metrics import functional as F
from reference_nc import reference_neural_collapse

NUM_CLASSES, DIM = 300, 16


def many_classes(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """float64 features of 300 classes in 16 dimensions, 2 to 14 samples a class, and a classifier."""
    generator = torch.Generator().manual_seed(seed)
    sizes = torch.randint(2, 15, (NUM_CLASSES,), generator=generator)
    labels = torch.repeat_interleave(torch.arange(NUM_CLASSES), sizes)
    labels = labels[torch.randperm(len(labels), generator=generator)]
    means = 3.0 * torch.randn(NUM_CLASSES, DIM, generator=generator, dtype=torch.float64)
    features = means[labels] + 2.0 * torch.randn(len(labels), DIM, generator=generator, dtype=torch.float64)
    weight = torch.randn(NUM_CLASSES, DIM, generator=generator, dtype=torch.float64)
    bias = torch.randn(NUM_CLASSES, generator=generator, dtype=torch.float64)
    return features, labels, weight, bias


@pytest.fixture(scope="module")
def data_and_reference() -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], dict[str, float]]:
    features, labels, weight, bias = data = many_classes()
    return data, reference_neural_collapse(features, labels, NUM_CLASSES, weight=weight, bias=bias)


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 64 classes for the pairs and 3,500 NCC scores: several blocks, a ragged last one."""
    monkeypatch.setattr(functional_module, "PAIR_BLOCK", 64)
    monkeypatch.setattr(stats_module, "NCC_BLOCK_ELEMENTS", 3_500)


def assert_close(got: dict[str, float], expected: dict[str, float], rel: float) -> None:
    assert list(got) == list(expected)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=rel, abs=1e-14), name


@pytest.mark.usefixtures("small_blocks")
def test_many_classes_functional_and_streaming_match_reference(data_and_reference) -> None:
    (features, labels, weight, bias), expected = data_and_reference
    assert 0.0 < expected["ncc_acc"] < 1.0 and 0.0 < expected["nc4"] < 1.0
    result = F.neural_collapse(features, labels, NUM_CLASSES, weight=weight, bias=bias)
    assert_close(result, {**expected, "nc2_etf": result["nc2_etf"]}, rel=1e-9)
    assert result["nc2_etf"] == pytest.approx(expected["nc2_etf"], abs=1e-8)  # the d x d identity

    metric = NeuralCollapse(NUM_CLASSES, classifier_weight=weight)
    for h, y in zip(features.split(100), labels.split(100), strict=True):
        metric.update(h, y)
    metric.next_phase()
    for h, y in zip(features.split(100), labels.split(100), strict=True):
        metric.update(h, y, logits=h @ weight.T + bias)
    assert_close(metric.compute()["features"], result, rel=1e-12)
    assert metric._state("features", "scatter").shape == (DIM, DIM)  # nothing C x C is kept


def test_blocks_do_not_change_the_result(data_and_reference, monkeypatch: pytest.MonkeyPatch) -> None:
    features, labels, _, _ = data_and_reference[0]
    whole = F.neural_collapse(features, labels, NUM_CLASSES)
    monkeypatch.setattr(functional_module, "PAIR_BLOCK", 7)
    monkeypatch.setattr(stats_module, "NCC_BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(stats_module, "BLOCK_ELEMENTS", 1)  # rows in blocks of C = 300, the last ragged
    assert_close(F.neural_collapse(features, labels, NUM_CLASSES), whole, rel=1e-12)


def test_many_classes_test_split_uses_the_train_means(small_blocks) -> None:
    train, train_labels, _, _ = many_classes(seed=1)
    test, test_labels, _, _ = many_classes(seed=2)
    train_means = F.class_means(train, train_labels, NUM_CLASSES)
    expected = float((torch.cdist(test, train_means).argmin(1) == test_labels).double().mean())
    assert F.ncc_acc(test, test_labels, NUM_CLASSES, means=train_means) == pytest.approx(expected, abs=1e-15)


@pytest.mark.usefixtures("small_blocks")
def test_min_class_count_drops_rare_classes_from_every_metric(data_and_reference) -> None:
    """One rule: a class with fewer than min_class_count samples is not measured; with "drop" every metric
    is the reference's on the other classes' samples alone (labels renumbered, classifier rows restricted),
    functional and streaming alike; "error" raises one short line; "nan" makes the class-mean metrics NaN."""
    (features, labels, weight, bias), _ = data_and_reference
    counts = torch.bincount(labels, minlength=NUM_CLASSES)
    kept = (counts >= 8).nonzero().flatten()
    assert DIM < len(kept) < NUM_CLASSES  # still C > d: the blocked paths
    rows = torch.isin(labels, kept)
    renumbered = torch.searchsorted(kept, labels[rows])
    expected = reference_neural_collapse(
        features[rows], renumbered, len(kept), weight=weight[kept], bias=bias[kept]
    )
    expected["num_classes_present"] = float(len(kept))
    result = F.neural_collapse(
        features, labels, NUM_CLASSES, weight=weight, bias=bias, empty_classes="drop", min_class_count=8
    )
    assert_close(result, {**expected, "nc2_etf": result["nc2_etf"]}, rel=1e-9)
    assert result["nc2_etf"] == pytest.approx(expected["nc2_etf"], abs=1e-7)
    metric = NeuralCollapse(NUM_CLASSES, classifier_weight=weight, empty_classes="drop", min_class_count=8)
    for h, y in zip(features.split(100), labels.split(100), strict=True):
        metric.update(h, y)
    metric.next_phase()
    for h, y in zip(features.split(100), labels.split(100), strict=True):
        metric.update(h, y, logits=h @ weight.T + bias)
    assert_close(metric.compute()["features"], result, rel=1e-10)
    with pytest.raises(
        ValueError, match=r"^\d+ of 300 classes have fewer than min_class_count = 8 samples"
    ) as error:
        F.neural_collapse(features, labels, NUM_CLASSES, min_class_count=8)
    assert len(str(error.value)) < 250 and "..." in str(error.value)
    with_nan = F.neural_collapse(features, labels, NUM_CLASSES, empty_classes="nan", min_class_count=8)
    assert (
        math.isnan(with_nan["nc1"]) and math.isnan(with_nan["cdnv"]) and not math.isnan(with_nan["ncc_acc"])
    )
    with pytest.raises(ValueError, match="min_class_count"):
        NeuralCollapse(NUM_CLASSES, min_class_count=0)


def test_a_full_covariance_that_cannot_fit_is_refused_before_allocation() -> None:
    dim = 400_000  # 8 d^2 = 1.28e12 bytes
    metric = NeuralCollapse(2, full_covariance_max_dim=dim)
    with pytest.raises(MemoryError, match=r"3,200,000,000,000 bytes"):
        metric.update(torch.zeros(2, dim), torch.tensor([0, 1]))


# --------------------------------------------------------------------------- conditioning
def ill_conditioned(num_classes: int, dim: int, kappa: float, seed: int) -> tuple[Tensor, Tensor]:
    """float32 features around a common mean of 1e3: centred class means with singular values spread so
    that ``kappa(Sigma_B) ~ kappa``, within-class noise 1e-3, 200 samples a class."""
    generator = torch.Generator().manual_seed(seed)
    rank = min(dim, num_classes - 1)
    left, _ = torch.linalg.qr(torch.randn(dim, rank, generator=generator, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(num_classes, rank, generator=generator, dtype=torch.float64))
    spread = torch.logspace(0.0, -0.5 * math.log10(kappa), rank, dtype=torch.float64)
    means = ((right - right.mean(0)) * spread) @ left.T
    labels = torch.arange(num_classes).repeat(200)
    noise = 1e-3 * torch.randn(len(labels), dim, generator=generator, dtype=torch.float64)
    return (1e3 + means[labels] + noise).float(), labels


def condition_number(features: Tensor, labels: Tensor, num_classes: int) -> float:
    centred = F.class_statistics(features.double(), labels, num_classes).centred_means
    eigenvalues = torch.linalg.eigvalsh(centred.T @ centred)
    eigenvalues = eigenvalues[eigenvalues > 1e-12 * eigenvalues.max()]
    return float(eigenvalues.max() / eigenvalues.min())


def streamed_nc1(features: Tensor, labels: Tensor, num_classes: int) -> float:
    metric = NeuralCollapse(num_classes)
    for _ in range(2):
        for h, y in zip(features.split(128), labels.split(128), strict=True):
            metric.update(h, y)
        if metric.phase == 1:
            metric.next_phase()
    return metric.compute()["features"]["nc1"]


@pytest.mark.parametrize("kappa", [1e2, 1e4, 1e6])
@pytest.mark.parametrize("dim", [3, 9, 12])
def test_nc1_on_float32_features_is_exact_at_any_conditioning(dim: int, kappa: float) -> None:
    num_classes = 10  # d = 3, 9 and 12 around C - 1 = 9
    features, labels = ill_conditioned(num_classes, dim, kappa, seed=dim)
    assert condition_number(features, labels, num_classes) > kappa / 10
    exact = F.nc1(features.double(), labels, num_classes)
    assert F.nc1(features, labels, num_classes) == pytest.approx(exact, rel=1e-6)
    assert streamed_nc1(features, labels, num_classes) == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("dim", [9, 24])
def test_nc1_on_a_trained_layer_is_exact_in_float32(dim: int) -> None:
    """A small MLP trained on 10 Gaussian classes; its hidden layer (width 48) projected to ``d`` columns
    and shifted by a common 1e3: float32 equals float64 on the same values to 1e-6."""
    torch.manual_seed(0)
    num_classes = 10
    centres = 2.0 * torch.randn(num_classes, 20)
    labels = torch.arange(num_classes).repeat(100)
    inputs = centres[labels] + torch.randn(len(labels), 20)
    body = nn.Sequential(nn.Linear(20, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU())
    model = nn.Sequential(body, nn.Linear(48, num_classes))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(inputs), labels).backward()
        optimiser.step()
    with torch.no_grad():
        projection = torch.linalg.qr(torch.randn(48, dim, dtype=torch.float64)).Q
        features = (body(inputs).double() @ projection + 1e3).float()
    exact = F.nc1(features.double(), labels, num_classes)
    assert F.nc1(features, labels, num_classes) == pytest.approx(exact, rel=1e-6)
    assert streamed_nc1(features, labels, num_classes) == pytest.approx(exact, rel=1e-6)
