"""``ncdepth.metrics`` fails early and says what happened: the classifier layer, logits, pass-2 mismatches,
constant features, and the functional API measuring a test split against the train means."""

from __future__ import annotations

import inspect
import math
import warnings

import pytest
import torch
from torch import Tensor

from ncdepth.metrics import ConstantFeaturesWarning, NeuralCollapse, SingleSampleClassesWarning
from ncdepth.metrics import functional as F
from reference_nc import CLASS_MEAN_METRICS

C = 4


def blobs(
    num_samples: int = 120, dim: int = 6, *, seed: int = 0, spread: float = 1.0
) -> tuple[Tensor, Tensor]:
    """float64 Gaussian blobs, labels cycling through the ``C`` classes."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_samples) % C
    means = 3.0 * torch.randn(C, dim, generator=generator, dtype=torch.float64)
    return means[labels] + spread * torch.randn(
        num_samples, dim, generator=generator, dtype=torch.float64
    ), labels


def layers_of(h: Tensor) -> dict[str, Tensor]:
    """Three layers: ``block`` (d = 6), ``wide`` (d = 12), ``head`` (d = 3)."""
    return {"block": h, "wide": torch.cat([h, h.tanh()], 1), "head": h[:, :3]}


def two_passes(
    metric: NeuralCollapse,
    features: dict[str, Tensor] | Tensor,
    labels: Tensor,
    *,
    logits: Tensor | None = None,
    second: tuple[dict[str, Tensor] | Tensor, Tensor] | None = None,
) -> None:
    metric.update(features, labels)
    metric.next_phase()
    features2, labels2 = second if second is not None else (features, labels)
    metric.update(features2, labels2, logits=logits)


# --------------------------------------------------------------------------- the classifier layer
def test_classifier_layer_typo_fails_at_the_first_update_naming_the_layers() -> None:
    h, labels = blobs()
    metric = NeuralCollapse(C, classifier_layer="haed")
    with pytest.raises(
        ValueError, match=r"'haed' is not one of the layers \['block', 'wide', 'head'\]"
    ) as info:
        metric.update(layers_of(h), labels)
    assert "did you mean 'head'" in str(info.value)


def test_classifier_layer_is_inferred_from_the_weight_whatever_the_order_of_the_layers() -> None:
    h, labels = blobs()
    weight = torch.randn(C, 3, dtype=torch.float64)
    logits = h[:, :3] @ weight.T
    results = []
    for order in (["block", "wide", "head"], ["head", "wide", "block"]):
        layers = {name: layers_of(h)[name] for name in order}
        metric = NeuralCollapse(C, classifier_weight=weight)
        two_passes(metric, layers, labels, logits=logits)
        assert metric.classifier_layer == "head"
        results.append(metric.compute())
    for result in results:
        assert {"nc3", "nc4"} <= set(result["head"]) and "nc4" not in result["block"]
        assert result["head"]["nc4"] == results[0]["head"]["nc4"]


def test_classifier_layer_is_required_when_the_weight_fits_several_layers() -> None:
    h, labels = blobs()
    layers = {"block": h, "block_copy": h * 2.0, "head": h[:, :3]}
    metric = NeuralCollapse(C, classifier_weight=lambda: torch.randn(C, 6))
    with pytest.raises(ValueError, match=r"classifier_layer is required.*\['block', 'block_copy'\]"):
        metric.update(layers, labels)
    chosen = NeuralCollapse(C, classifier_weight=torch.randn(C, 6), classifier_layer="block_copy")
    chosen.update(layers, labels)
    assert chosen.classifier_layer == "block_copy"


def test_a_weight_that_fits_no_layer_or_not_the_given_one_raises() -> None:
    h, labels = blobs()
    with pytest.raises(ValueError, match=r"reads d = 5, but no layer has that width.*'wide': 12"):
        NeuralCollapse(C, classifier_weight=torch.randn(C, 5)).update(layers_of(h), labels)
    with pytest.raises(ValueError, match=r"classifier_layer 'wide' has d = 12"):
        NeuralCollapse(C, classifier_weight=torch.randn(C, 3), classifier_layer="wide").update(
            layers_of(h), labels
        )
    with pytest.raises(ValueError, match=r"must have shape \(C, d\) = \(4, d\), got \(5, 3\)"):
        NeuralCollapse(C, classifier_weight=torch.randn(5, 3)).update(layers_of(h), labels)


def test_logits_need_a_classifier_layer_when_there_are_several_layers() -> None:
    h, labels = blobs()
    logits = torch.randn(len(labels), C, dtype=torch.float64)
    metric = NeuralCollapse(C)
    metric.update(layers_of(h), labels)  # no logits in pass 1: fine
    metric.next_phase()
    with pytest.raises(ValueError, match=r"classifier_layer is not set and there are 3 layers"):
        metric.update(layers_of(h), labels, logits=logits)
    single = NeuralCollapse(C)
    two_passes(single, h, labels, logits=logits)
    assert single.classifier_layer == "features" and "nc4" in single.compute()["features"]


# --------------------------------------------------------------------------- logits
@pytest.mark.parametrize(
    "shape, message",
    [
        ((120, C + 3), "the network has 7 outputs but num_classes is 4"),
        ((100, C), r"\(B, C\) = \(120, 4\), got \(100, 4\)"),
        ((12, 10, C), "token-level logits"),
    ],
)
def test_logits_shape_is_checked(shape: tuple[int, ...], message: str) -> None:
    h, labels = blobs()
    logits = torch.randn(*shape)
    metric = NeuralCollapse(C, classifier_layer="head")
    with pytest.raises(ValueError, match=message):
        metric.update(layers_of(h), labels, logits=logits)  # checked in pass 1 already
    with pytest.raises(ValueError, match=message):
        F.nc4(h, labels, C, logits=logits)
    with pytest.raises(ValueError, match=message):
        F.neural_collapse(h, labels, C, logits=logits)


def test_non_tensor_layers_get_a_clear_error() -> None:
    h, labels = blobs()
    with pytest.raises(TypeError, match=r"layer 'attn' is a tuple of 2 elements, not a Tensor.*select"):
        NeuralCollapse(C).update({"attn": (h, h)}, labels)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_integer_features_are_refused_by_name(dtype: torch.dtype) -> None:
    h, labels = blobs()
    values = (h > 0) if dtype == torch.bool else (10 * h).to(dtype)
    message = rf"must be a floating-point Tensor, got {dtype}: convert it first \(features.double\(\)"
    with pytest.raises(TypeError, match="layer 'block' " + message):
        NeuralCollapse(C).update({"block": values}, labels)
    with pytest.raises(TypeError, match="^features " + message):
        NeuralCollapse(C).update(values, labels)
    with pytest.raises(TypeError, match="^features " + message):
        F.neural_collapse(values, labels, C)


def test_numpy_features_are_told_plainly() -> None:
    h, labels = blobs()
    array = h.numpy()
    plain = r"is a numpy.ndarray, not a torch Tensor: pass torch.from_numpy\(array\)"
    for call in (
        lambda: NeuralCollapse(C).update(array, labels),
        lambda: F.neural_collapse(array, labels, C),
    ):
        with pytest.raises(TypeError, match="^features " + plain) as info:
            call()
        assert "LayerTap" not in str(info.value) and "module" not in str(info.value)
    with pytest.raises(TypeError, match="^layer 'block' " + plain):
        NeuralCollapse(C).update({"block": array}, labels)


# --------------------------------------------------------------------------- pass 2 against pass 1
def test_a_class_empty_only_in_pass_2_is_named() -> None:
    h, labels = blobs()
    keep = labels != 2
    metric = NeuralCollapse(C)
    two_passes(metric, h, labels, second=(h[keep], labels[keep]))
    with pytest.raises(ValueError) as info:
        metric.compute()
    message = str(info.value)
    assert "classes [2] are absent from pass 2 but had samples in pass 1" in message
    assert "pass 2 saw 90 samples, pass 1 saw 120" in message
    assert "class 2: 30 in pass 1, 0 in pass 2" in message


def test_pass_2_labels_out_of_range_are_reported_as_such() -> None:
    h, labels = blobs()
    bad = labels.clone()
    bad[:5] = C + 1
    metric = NeuralCollapse(C)
    two_passes(metric, h, labels, second=(h, bad))
    with pytest.raises(ValueError, match=r"5 pass-2 labels lie outside 0\.\.3"):
        metric.compute()


def test_pass_2_with_other_labels_but_as_many_samples_says_so() -> None:
    h, labels = blobs()
    other = labels.clone()
    other[labels == 0] = 1
    metric = NeuralCollapse(C, empty_classes="nan")
    two_passes(metric, h, labels, second=(h, other))
    with pytest.raises(ValueError) as info:
        metric.compute()
    message = str(info.value)
    assert (
        "as many samples as pass 1 but with other labels" not in message
    )  # a class went missing: said first
    assert (
        "classes [0] are absent from pass 2" in message and "class 1: 30 in pass 1, 60 in pass 2" in message
    )
    shifted = labels.clone()
    shifted[0] = 1  # one label changed: counts differ, totals agree
    metric = NeuralCollapse(C)
    two_passes(metric, h, labels, second=(h, shifted))
    with pytest.raises(ValueError, match="as many samples as pass 1 but with other labels"):
        metric.compute()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pass_2_with_other_samples_of_the_same_classes_is_caught(dtype: torch.dtype) -> None:
    """Another draw of the same classes, same labels (nc1 would be far off), or one sample of class 2 swapped
    for another of class 2: caught at compute() on every layer (``head``, d = 3 < C, keeps the full scatter),
    naming the classes; the samples in another order, or with one float32 ulp of difference (a recomputed
    forward pass), are not."""
    h, labels = blobs()
    h = h.to(dtype)
    other, _ = blobs(seed=1)
    other = (h.double().mean(0) + other - other.mean(0)).to(dtype)
    metric = NeuralCollapse(C)
    two_passes(metric, layers_of(h), labels, second=(layers_of(other), labels))
    with pytest.raises(
        ValueError, match=r"layer 'block' saw other samples .* for classes 0, 1, 2, 3, with the "
    ):
        metric.compute()
    unchecked = NeuralCollapse(C, check_samples=False)
    two_passes(unchecked, layers_of(h), labels, second=(layers_of(other), labels))
    unchecked.compute()  # wrong numbers, as asked

    swapped = h.clone()
    swapped[2] = other[6]  # both of class 2
    for layer in ("block", "wide", "head"):
        metric = NeuralCollapse(C)
        two_passes(
            metric, {layer: layers_of(h)[layer]}, labels, second=({layer: layers_of(swapped)[layer]}, labels)
        )
        with pytest.raises(ValueError, match=rf"layer '{layer}' saw other samples .* for classes 2, with"):
            metric.compute()

    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    ulp = torch.nextafter(h, torch.full_like(h, math.inf)) if dtype == torch.float32 else h
    for second in ((layers_of(h[order]), labels[order]), (layers_of(ulp), labels)):
        metric = NeuralCollapse(C)
        two_passes(metric, layers_of(h), labels, second=second)
        metric.compute()


def test_classes_of_one_sample_warn() -> None:
    h, labels = blobs()
    keep = torch.cat([(labels != 1).nonzero().flatten(), torch.tensor([1])])  # one sample of class 1
    metric = NeuralCollapse(C)
    with pytest.warns(
        SingleSampleClassesWarning,
        match=r"1 classes have a single sample in layer 'features' \(classes \[1\]\)",
    ):
        two_passes(metric, h[keep], labels[keep])
        metric.compute()
    with pytest.warns(SingleSampleClassesWarning, match="variance is 0 by construction"):
        F.neural_collapse(h[keep], labels[keep], C)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.neural_collapse(h, labels, C)


def test_pass_1_labels_out_of_range_give_the_count() -> None:
    h, labels = blobs()
    bad = labels.clone()
    bad[3] = -1
    metric = NeuralCollapse(C)
    metric.update(h, bad)
    with pytest.raises(ValueError, match=r"0\.\.3: 1 pass-1 labels lie outside"):
        metric.next_phase()
    with pytest.raises(ValueError, match=r"0\.\.3: 1 of 120 lie outside"):
        F.neural_collapse(h, bad, C)


# --------------------------------------------------------------------------- constant features


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("value", [0.0, 3.7, -1e3])
def test_constant_features_warn_and_give_nan(dtype: torch.dtype, value: float) -> None:
    labels = torch.arange(300) % C
    h = torch.full((300, 5), value, dtype=dtype)
    h[:, 1] = 0.25 * value
    weight = torch.randn(C, 5, dtype=torch.float64)
    with pytest.warns(ConstantFeaturesWarning, match="all class means coincide"):
        result = F.neural_collapse(h, labels, C, weight=weight)
    for name in (*CLASS_MEAN_METRICS, "nc3"):
        assert math.isnan(result[name]), name
    assert 0.0 <= result["ncc_acc"] <= 1.0 and 0.0 <= result["nc4"] <= 1.0

    metric = NeuralCollapse(C, classifier_weight=weight)
    for _ in range(2):
        for rows in torch.arange(300).split(64):
            metric.update({"dead": h[rows]}, labels[rows], logits=h[rows].double() @ weight.T)
        if metric.phase == 1:
            metric.next_phase()
    with pytest.warns(ConstantFeaturesWarning, match="layer 'dead'"):
        streamed = metric.compute()["dead"]
    for name in (*CLASS_MEAN_METRICS, "nc3"):
        assert math.isnan(streamed[name]), name


def test_close_but_distinct_class_means_are_not_constant() -> None:
    """Class means 1e-4 apart on an offset of 1e3 (float32): a real, if small, signal."""
    labels = torch.arange(400) % C
    generator = torch.Generator().manual_seed(0)
    means = 1e-1 * torch.randn(C, 5, generator=generator, dtype=torch.float64)
    h = (1e3 + means[labels] + 1e-2 * torch.randn(400, 5, generator=generator, dtype=torch.float64)).float()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConstantFeaturesWarning)
        result = F.neural_collapse(h, labels, C)
    assert all(math.isfinite(result[name]) for name in CLASS_MEAN_METRICS)


# --------------------------------------------------------------------------- test split on train means
def test_functional_takes_the_train_means_and_agrees_with_the_streaming_test_metric() -> None:
    train, train_labels = blobs(400, 8, seed=1, spread=3.0)
    test, test_labels = blobs(200, 8, seed=1, spread=3.0)
    test = test + 0.7 * torch.randn(200, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(C, 8, generator=generator, dtype=torch.float64)
    bias = torch.randn(C, generator=generator, dtype=torch.float64)

    train_metric = NeuralCollapse(C, classifier_weight=weight)
    two_passes(train_metric, train, train_labels, logits=train @ weight.T + bias)
    test_metric = NeuralCollapse(C, classifier_weight=weight, ncc_reference=train_metric)
    two_passes(test_metric, test, test_labels, logits=test @ weight.T + bias)
    streamed = test_metric.compute()["features"]

    train_means = F.class_means(train, train_labels, C)
    functional = F.neural_collapse(test, test_labels, C, weight=weight, bias=bias, ncc_means=train_means)
    own_means = F.neural_collapse(test, test_labels, C, weight=weight, bias=bias)
    assert list(functional) == list(streamed)
    for name, value in streamed.items():
        assert functional[name] == pytest.approx(value, rel=1e-12, abs=1e-15), name
    assert (own_means["ncc_acc"], own_means["nc4"]) != (functional["ncc_acc"], functional["nc4"])
    assert F.nc4(test, test_labels, C, weight=weight, bias=bias, ncc_means=train_means) == streamed["nc4"]
    assert F.ncc_acc(test, test_labels, C, means=train_means) == streamed["ncc_acc"]


def test_ncc_means_nan_rows_are_classes_never_predicted() -> None:
    train, train_labels = blobs(200, 5, seed=3, spread=2.0)
    keep = train_labels != 1
    test, test_labels = blobs(120, 5, seed=3, spread=2.0)
    train_metric = NeuralCollapse(C, empty_classes="nan")
    two_passes(train_metric, train[keep], train_labels[keep])
    test_metric = NeuralCollapse(C, ncc_reference=train_metric)
    two_passes(test_metric, test, test_labels)
    means = F.class_means(train[keep], train_labels[keep], C)
    assert torch.isnan(means[1]).all()
    expected = test_metric.compute()["features"]["ncc_acc"]
    assert F.neural_collapse(test, test_labels, C, ncc_means=means)["ncc_acc"] == pytest.approx(
        expected, abs=1e-15
    )
    assert expected <= 0.75  # class 1 (a quarter of the samples) is never predicted
    with pytest.raises(ValueError, match=r"ncc_means must have shape \(C, d\) = \(4, 5\), got \(4, 6\)"):
        F.neural_collapse(test, test_labels, C, ncc_means=torch.zeros(C, 6))


# --------------------------------------------------------------------------- the functional API
def test_functional_all_is_the_documented_public_api() -> None:
    assert len(F.__all__) == len(set(F.__all__))
    for name in F.__all__:
        value = getattr(F, name)
        if not callable(value):
            continue
        doc = inspect.getdoc(value) or ""
        assert "Args:" in doc and "Example:" in doc and ">>> " in doc, name
