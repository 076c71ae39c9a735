"""Invariances of the neural-collapse metrics, and the streaming ``NeuralCollapse`` against one batch."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

import ncdepth.metrics.stats as stats_module
from ncdepth.metrics import NeuralCollapse
from ncdepth.metrics import functional as F

NUM_CLASSES = 5
SCALE_FREE = (
    "nc1",
    "nc1_trace_ratio",
    "cdnv",
    "ncc_acc",
    "nc2_equinorm",
    "nc2_equiangle",
    "nc2_maxangle",
    "nc2_etf",
    "nc3",
)


def clustered(
    num_samples: int, dim: int, *, num_classes: int = NUM_CLASSES, spread: float = 3.0, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """float64 Gaussian clusters around random class means, imbalanced class frequencies, every class
    present."""
    generator = torch.Generator().manual_seed(seed)
    frequencies = torch.linspace(1.0, 3.0, num_classes)
    labels = torch.multinomial(frequencies, num_samples, replacement=True, generator=generator)
    labels[:num_classes] = torch.arange(num_classes)
    means = 3.0 * torch.randn(num_classes, dim, generator=generator, dtype=torch.float64)
    noise = spread * torch.randn(num_samples, dim, generator=generator, dtype=torch.float64)
    return means[labels] + noise, labels


def classifier(dim: int, *, seed: int = 1) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(NUM_CLASSES, dim, generator=generator, dtype=torch.float64)
    return weight, torch.randn(NUM_CLASSES, generator=generator, dtype=torch.float64)


def run_two_passes(
    metric: NeuralCollapse,
    batches: Sequence[tuple[dict[str, Tensor] | Tensor, Tensor]],
    *,
    second_order: Sequence[int] | None = None,
    logits: Sequence[Tensor] | None = None,
) -> dict[str, dict[str, float]]:
    """Pass 1 over ``batches``, ``next_phase``, pass 2 over them in ``second_order``, ``compute``."""
    for features, labels in batches:
        metric.update(features, labels)
    metric.next_phase()
    for index in second_order if second_order is not None else range(len(batches)):
        features, labels = batches[index]
        metric.update(features, labels, logits=None if logits is None else logits[index])
    return metric.compute()


def assert_same_metrics(got: dict[str, float], expected: dict[str, float], rel: float) -> None:
    assert list(got) == list(expected)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=rel, abs=1e-15), name


# --------------------------------------------------------------------------- invariances
def test_relabelling_classes_changes_nothing() -> None:
    features, labels = clustered(400, 12)
    weight, bias = classifier(12)
    permutation = torch.tensor([3, 0, 4, 1, 2])  # class c is renamed permutation[c]
    inverse = torch.argsort(permutation)
    expected = F.neural_collapse(features, labels, NUM_CLASSES, weight=weight, bias=bias)
    renamed = F.neural_collapse(
        features, permutation[labels], NUM_CLASSES, weight=weight[inverse], bias=bias[inverse]
    )
    assert_same_metrics(renamed, expected, rel=1e-12)


def test_common_shift_changes_nothing() -> None:
    features, labels = clustered(400, 12)
    weight, bias = classifier(12)
    shift = torch.linspace(-20.0, 35.0, 12, dtype=torch.float64)
    expected = F.neural_collapse(features, labels, NUM_CLASSES, weight=weight, bias=bias)
    shifted = F.neural_collapse(
        features + shift, labels, NUM_CLASSES, weight=weight, bias=bias - weight @ shift
    )
    assert_same_metrics(shifted, expected, rel=1e-10)


@pytest.mark.parametrize("scale", [1e-3, 7.5, 1e4])
def test_scaling_leaves_scale_free_metrics_unchanged(scale: float) -> None:
    features, labels = clustered(400, 12)
    weight, _ = classifier(12)
    expected = F.neural_collapse(features, labels, NUM_CLASSES, weight=weight)
    scaled = F.neural_collapse(scale * features, labels, NUM_CLASSES, weight=weight)
    for name in SCALE_FREE:
        assert scaled[name] == pytest.approx(expected[name], rel=1e-12), name


# --------------------------------------------------------------------------- streaming == one batch
@pytest.mark.parametrize("dim", [24, 3], ids=["projected scatter", "full scatter"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_batching_and_order_equals_one_batch(dim: int, seed: int) -> None:
    features, labels = clustered(600, dim, seed=seed)
    weight, bias = classifier(dim)
    generator = torch.Generator().manual_seed(100 + seed)
    first_order = torch.randperm(len(labels), generator=generator)
    cuts = torch.sort(torch.randperm(len(labels) - 1, generator=generator)[:9] + 1).values
    chunks = torch.tensor_split(first_order, cuts)
    batches = [(features[c], labels[c]) for c in chunks]
    logits = [features[c] @ weight.T + bias for c in chunks]
    second_order = torch.randperm(len(batches), generator=generator).tolist()

    streamed = run_two_passes(
        NeuralCollapse(NUM_CLASSES, classifier_weight=weight),
        batches,
        second_order=second_order,
        logits=logits,
    )["features"]
    one_batch = run_two_passes(
        NeuralCollapse(NUM_CLASSES, classifier_weight=weight),
        [(features, labels)],
        logits=[features @ weight.T + bias],
    )["features"]
    assert_same_metrics(streamed, one_batch, rel=1e-12)
    functional = F.neural_collapse(features, labels, NUM_CLASSES, weight=weight, bias=bias)
    assert_same_metrics(streamed, functional, rel=1e-12)


@pytest.mark.parametrize("dim", [24, 3], ids=["projected scatter", "full scatter"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_blocks_of_rows_change_nothing(dim: int, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both passes go over a batch in blocks of rows (``stats.BLOCK_ELEMENTS``): blocks of one row in pass 1
    and of ``K`` rows in pass 2, the last one ragged, give the result of one block."""
    features, labels = clustered(601, dim)
    features = features.to(dtype)
    weight, bias = classifier(dim)
    whole = F.neural_collapse(features, labels, NUM_CLASSES, weight=weight, bias=bias)
    monkeypatch.setattr(stats_module, "BLOCK_ELEMENTS", 1)
    blocked = F.neural_collapse(features, labels, NUM_CLASSES, weight=weight, bias=bias)
    assert_same_metrics(blocked, whole, rel=1e-12 if dtype == torch.float64 else 1e-6)


def test_layers_together_equal_each_layer_alone() -> None:
    features, labels = clustered(300, 8)
    generator = torch.Generator().manual_seed(9)
    layers = {
        "block1": features,
        "block2": torch.tanh(features @ torch.randn(8, 30, generator=generator, dtype=torch.float64)),
        "head": features[:, :3] ** 2,
    }
    weight = torch.randn(NUM_CLASSES, 3, generator=generator, dtype=torch.float64)
    batches = [
        ({name: h[i : i + 70] for name, h in layers.items()}, labels[i : i + 70]) for i in range(0, 300, 70)
    ]
    together = run_two_passes(NeuralCollapse(NUM_CLASSES, classifier_weight=weight), batches)
    assert list(together) == list(layers)
    for name, h in layers.items():
        alone_batches = [(h[i : i + 70], labels[i : i + 70]) for i in range(0, 300, 70)]
        alone = NeuralCollapse(NUM_CLASSES, classifier_weight=weight if name == "head" else None)
        assert_same_metrics(together[name], run_two_passes(alone, alone_batches)["features"], rel=1e-14)
    assert "nc3" in together["head"] and "nc3" not in together["block1"]


def test_conv_maps_are_flattened() -> None:
    maps, labels = clustered(200, 4 * 3 * 3)
    maps = maps.reshape(200, 4, 3, 3)
    conv = run_two_passes(NeuralCollapse(NUM_CLASSES), [(maps, labels)])
    flat = run_two_passes(NeuralCollapse(NUM_CLASSES), [(maps.flatten(1), labels)])
    assert_same_metrics(conv["features"], flat["features"], rel=1e-14)


def test_average_pooling_averages_over_space() -> None:
    maps, labels = clustered(200, 6 * 4 * 5)
    maps = maps.reshape(200, 6, 4, 5)
    pooled = run_two_passes(NeuralCollapse(NUM_CLASSES, pool="avg"), [(maps, labels)])
    by_hand = run_two_passes(NeuralCollapse(NUM_CLASSES), [(maps.mean(dim=(2, 3)), labels)])
    assert_same_metrics(pooled["features"], by_hand["features"], rel=1e-12)


def test_ncc_reference_uses_train_means_for_the_test_split() -> None:
    features, labels = clustered(500, 10, spread=5.0)
    train, train_labels, test, test_labels = features[:300], labels[:300], features[300:], labels[300:]
    train_metric = NeuralCollapse(NUM_CLASSES)
    run_two_passes(train_metric, [(train, train_labels)])
    test_metric = NeuralCollapse(NUM_CLASSES, ncc_reference=train_metric)
    result = run_two_passes(test_metric, [(test[:120], test_labels[:120]), (test[120:], test_labels[120:])])

    train_means = torch.stack([train[train_labels == c].mean(0) for c in range(NUM_CLASSES)])
    test_means = torch.stack([test[test_labels == c].mean(0) for c in range(NUM_CLASSES)])
    by_train = torch.cdist(test, train_means).argmin(1)
    by_test = torch.cdist(test, test_means).argmin(1)
    assert not torch.equal(by_train, by_test)  # the choice of centres matters on this data
    expected = float((by_train == test_labels).double().mean())
    assert result["features"]["ncc_acc"] == pytest.approx(expected, abs=1e-15)
    assert F.ncc_acc(test, test_labels, NUM_CLASSES, means=train_means) == pytest.approx(expected, abs=1e-15)
    torch.testing.assert_close(test_metric.class_means()["features"], test_means, rtol=1e-13, atol=0)


# --------------------------------------------------------------------------- numerics
def test_collapsed_float32_features_keep_their_tiny_variances() -> None:
    """Class means of norm ~1e3, within-class std 1e-2, fed as float32: the variances survive to 1e-6,
    while the naive float32 ``E||h||^2 - ||mu||^2`` is wrong by more than 1e-2."""
    num_samples, dim, num_classes = 2000, 64, 5
    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(num_classes, dim, generator=generator, dtype=torch.float64)
    means = 1e3 * directions / directions.norm(dim=1, keepdim=True)
    labels = torch.randint(0, num_classes, (num_samples,), generator=generator)
    noise = 1e-2 * torch.randn(num_samples, dim, generator=generator, dtype=torch.float64)
    features32 = (means[labels] + noise).float()
    exact = features32.double()

    expected_variances = torch.stack(
        [((exact[labels == c] - exact[labels == c].mean(0)) ** 2).sum(1).mean() for c in range(num_classes)]
    )
    torch.testing.assert_close(
        F.class_variances(features32, labels, num_classes), expected_variances, rtol=1e-6, atol=0
    )
    for name in ("cdnv", "nc1"):
        metric = getattr(F, name)
        assert metric(features32, labels, num_classes) == pytest.approx(
            metric(exact, labels, num_classes), rel=1e-6
        ), name
    streamed = run_two_passes(
        NeuralCollapse(num_classes), list(zip(features32.split(128), labels.split(128), strict=True))
    )["features"]
    functional64 = F.neural_collapse(exact, labels, num_classes)
    for name in ("cdnv", "nc1", "nc1_trace_ratio"):
        assert streamed[name] == pytest.approx(functional64[name], rel=1e-6), name

    naive = torch.stack(
        [
            (features32[labels == c] ** 2).sum(1).mean() - (features32[labels == c].mean(0) ** 2).sum()
            for c in range(num_classes)
        ]
    ).double()
    assert ((naive - expected_variances).abs() / expected_variances).min() > 1e-2


def test_layers_of_mixed_precision_share_the_buffers_without_effect() -> None:
    """float32 and float64 layers, wide (projected) and narrow (full scatter), in one metric: each gives
    exactly what it gives alone, though the blocks of every layer pass through the same reused buffers."""
    features, labels = clustered(300, 8)
    layers = {"wide32": features.float(), "narrow64": features[:, :3], "wide64": features * 2.0}
    batches = [
        ({name: h[i : i + 70] for name, h in layers.items()}, labels[i : i + 70]) for i in range(0, 300, 70)
    ]
    together = run_two_passes(NeuralCollapse(NUM_CLASSES), batches)
    for name, h in layers.items():
        alone = [(h[i : i + 70], labels[i : i + 70]) for i in range(0, 300, 70)]
        assert_same_metrics(
            together[name], run_two_passes(NeuralCollapse(NUM_CLASSES), alone)["features"], rel=0.0
        )


def test_pass_two_holds_no_class_sums_and_no_class_by_class_matrix() -> None:
    """After next_phase the C x d class sums are freed (the means are kept once); a layer with d >= C keeps
    C second moments along the eigenvectors of Sigma_B, one with d < C the d x d scatter."""
    features, labels = clustered(300, 8)
    metric = NeuralCollapse(NUM_CLASSES)
    metric.update({"wide": features, "narrow": features[:, :3]}, labels)
    assert metric._state("wide", "sums").shape == (NUM_CLASSES, 8)
    metric.next_phase()
    assert metric._state("wide", "sums").numel() == metric._state("narrow", "sums").numel() == 1
    assert metric._state("wide", "scatter").shape == (NUM_CLASSES,)
    assert metric._state("narrow", "scatter").shape == (3, 3)


def test_reset_forgets_everything() -> None:
    first, first_labels = clustered(200, 6, seed=4)
    second, second_labels = clustered(300, 6, seed=5)
    metric = NeuralCollapse(NUM_CLASSES)
    run_two_passes(metric, [(first, first_labels)])
    metric.reset()
    assert metric.phase == 1
    reused = run_two_passes(metric, [(second, second_labels)])
    fresh = run_two_passes(NeuralCollapse(NUM_CLASSES), [(second, second_labels)])
    assert_same_metrics(reused["features"], fresh["features"], rel=0.0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_features_are_computed_in_float32(dtype: torch.dtype) -> None:
    features, labels = clustered(300, 10)
    half = features.to(dtype)
    assert_same_metrics(
        F.neural_collapse(half, labels, NUM_CLASSES),
        F.neural_collapse(half.float(), labels, NUM_CLASSES),
        rel=0.0,
    )


def test_second_pass_over_fewer_samples_than_the_first_raises() -> None:
    """Pass 2 must see the same samples as pass 1: here it sees a third of them, which would otherwise
    silently give wrong metrics (the variances and the NCC accuracy are divided by the pass-1 counts)."""
    features, labels = clustered(300, 6)
    metric = NeuralCollapse(NUM_CLASSES)
    metric.update(features, labels)
    metric.next_phase()
    metric.update(features[:100], labels[:100])
    with pytest.raises(ValueError, match="pass"):
        metric.compute()
