"""``ncdepth.metrics`` against closed forms, scikit-learn and the brute-force float64 reference."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import calinski_harabasz_score
from sklearn.neighbors import NearestCentroid
from torch import Tensor

from ncdepth.metrics import METRIC_NAMES, NeuralCollapse, effective_depth
from ncdepth.metrics import functional as F
from reference_nc import CLASS_MEAN_METRICS, reference_neural_collapse


def clustered(
    class_sizes: list[int], dim: int, *, spread: float = 1.0, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """float64 Gaussian clusters: class ``c`` has ``class_sizes[c]`` samples around a random mean, in
    shuffled order."""
    generator = torch.Generator().manual_seed(seed)
    num_classes = len(class_sizes)
    labels = torch.repeat_interleave(torch.arange(num_classes), torch.tensor(class_sizes))
    labels = labels[torch.randperm(len(labels), generator=generator)]
    means = 3.0 * torch.randn(num_classes, dim, generator=generator, dtype=torch.float64)
    noise = spread * torch.randn(len(labels), dim, generator=generator, dtype=torch.float64)
    return means[labels] + noise, labels


def simplex_etf(num_classes: int, dim: int, *, scale: float, seed: int = 0) -> Tensor:
    """``(C, d)`` rows ``scale * sqrt(C/(C-1)) U (e_c - 1/C)``: a randomly rotated simplex ETF, unit norm
    times ``scale``, summing to zero."""
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(dim, num_classes, generator=generator, dtype=torch.float64))
    centred = torch.eye(num_classes, dtype=torch.float64) - 1.0 / num_classes
    return scale * math.sqrt(num_classes / (num_classes - 1)) * centred @ basis.T


def streamed(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    batch_size: int = 64,
    **options: object,
) -> dict[str, float]:
    """The one-layer result of :class:`NeuralCollapse` over ``batch_size`` batches (logits from
    ``weight``/``bias`` in pass 2)."""
    metric = NeuralCollapse(num_classes, classifier_weight=weight, **options)
    for h, y in zip(features.split(batch_size), labels.split(batch_size), strict=True):
        metric.update(h, y)
    metric.next_phase()
    for h, y in zip(features.split(batch_size), labels.split(batch_size), strict=True):
        logits = None if weight is None else h @ weight.T + (0.0 if bias is None else bias)
        metric.update(h, y, logits=logits)
    return metric.compute()["features"]


def assert_close_dicts(got: dict[str, float], expected: dict[str, float], rel: float) -> None:
    assert list(got) == list(expected)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=rel, abs=1e-14), name


# --------------------------------------------------------------------------- closed forms
class TestSimplexEtf:
    """Exact simplex-ETF class means around an offset, no within-class spread: perfect collapse."""

    num_classes, dim, per_class = 6, 16, 20

    def collapsed(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        etf = simplex_etf(self.num_classes, self.dim, scale=5.0)
        offset = torch.linspace(-3.0, 3.0, self.dim, dtype=torch.float64)
        labels = torch.arange(self.num_classes).repeat(self.per_class)
        return offset + etf[labels], labels, etf, offset

    def test_nc1_nc2_ncc(self) -> None:
        features, labels, _, _ = self.collapsed()
        result = F.neural_collapse(features, labels, self.num_classes)
        for name in ("nc1", "nc1_trace_ratio", "cdnv", *(n for n in result if n.startswith("nc2"))):
            assert result[name] == pytest.approx(0.0, abs=1e-12), name
        assert result["ncc_acc"] == 1.0

    def test_nc3_nc4_with_classifier_equal_to_scaled_means(self) -> None:
        features, labels, etf, offset = self.collapsed()
        weight = 0.37 * etf  # W = a * M~^T (as a C x d matrix)
        bias = -weight @ offset  # cancels the offset: logits_c = a <mu_y - mu_G, mu_c - mu_G>
        result = F.neural_collapse(features, labels, self.num_classes, weight=weight, bias=bias)
        assert result["nc3"] == pytest.approx(0.0, abs=1e-12)
        assert result["nc4"] == 0.0

    def test_nc4_counts_the_bias(self) -> None:
        """A bias that makes the network always answer class 0 disagrees with NCC on the other C-1
        balanced classes."""
        features, labels, etf, _ = self.collapsed()
        bias = torch.zeros(self.num_classes, dtype=torch.float64)
        bias[0] = 1e6
        result = F.neural_collapse(features, labels, self.num_classes, weight=etf, bias=bias)
        assert result["nc4"] == pytest.approx((self.num_classes - 1) / self.num_classes, abs=1e-15)
        assert F.nc4(features, labels, self.num_classes, weight=etf, bias=bias) == result["nc4"]


def test_ncc_matches_sklearn_nearest_centroid() -> None:
    features, labels = clustered([90, 70, 110, 80, 100], dim=12, spread=5.0, seed=1)
    train, train_labels, test, test_labels = features[:250], labels[:250], features[250:], labels[250:]
    centroid = NearestCentroid().fit(train.numpy(), train_labels.numpy())
    expected = torch.from_numpy(centroid.predict(test.numpy()))
    means = F.class_means(train, train_labels, 5)

    assert torch.equal(F.ncc_predict(test, means), expected)
    test_accuracy = float((expected == test_labels).double().mean())
    assert 0.5 < test_accuracy < 0.9  # the comparison has errors to catch
    assert F.ncc_acc(test, test_labels, 5, means=means) == pytest.approx(test_accuracy, abs=1e-15)
    train_accuracy = centroid.score(train.numpy(), train_labels.numpy())
    assert F.ncc_acc(train, train_labels, 5) == pytest.approx(train_accuracy, abs=1e-15)


def test_trace_ratio_is_calinski_harabasz_for_balanced_classes() -> None:
    """With ``N_c = N/C``: ``CH = (N-C)/(C-1) * Tr(Sigma_B)/Tr(Sigma_W)``."""
    num_classes, per_class = 7, 30
    features, labels = clustered([per_class] * num_classes, dim=9, spread=2.0, seed=3)
    num_samples = num_classes * per_class
    ch = calinski_harabasz_score(features.numpy(), labels.numpy())
    expected = (num_samples - num_classes) / ((num_classes - 1) * ch)
    assert F.nc1_trace_ratio(features, labels, num_classes) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- brute-force reference
REFERENCE_CASES = {
    "balanced, d > C": ([50] * 6, 24),
    "imbalanced, d > C": ([5, 120, 33, 70, 2, 61], 24),
    "balanced, d < C-1": ([30] * 12, 5),
    "imbalanced, d < C-1": ([3, 80, 17, 44, 9, 60, 25, 31, 7, 52, 12, 40], 5),
    "d = C-1": ([40] * 8, 7),
}


@pytest.mark.parametrize("class_sizes, dim", REFERENCE_CASES.values(), ids=REFERENCE_CASES.keys())
def test_functional_and_streaming_match_reference(class_sizes: list[int], dim: int) -> None:
    num_classes = len(class_sizes)
    features, labels = clustered(class_sizes, dim, spread=4.0, seed=len(class_sizes) * dim)
    generator = torch.Generator().manual_seed(7)
    weight = torch.randn(num_classes, dim, generator=generator, dtype=torch.float64)
    bias = torch.randn(num_classes, generator=generator, dtype=torch.float64)
    expected = reference_neural_collapse(features, labels, num_classes, weight=weight, bias=bias)
    assert list(expected) == list(METRIC_NAMES)
    assert 0.0 < expected["ncc_acc"] < 1.0 and 0.0 < expected["nc4"] < 1.0  # non-trivial counts

    functional = F.neural_collapse(features, labels, num_classes, weight=weight, bias=bias)
    assert_close_dicts(functional, expected, rel=1e-9)
    assert_close_dicts(streamed(features, labels, num_classes, weight=weight, bias=bias), expected, rel=1e-9)
    for name in CLASS_MEAN_METRICS:
        single = getattr(F, name)(features, labels, num_classes)
        assert single == pytest.approx(expected[name], rel=1e-9), name
    assert F.nc3(weight, features, labels, num_classes) == pytest.approx(expected["nc3"], rel=1e-9)


def test_streaming_with_full_covariance_matches_reference() -> None:
    """``full_covariance_max_dim`` switches a wide layer to the ``d x d`` scatter: same metrics, and the
    kept covariance is the reference ``Sigma_W``."""
    class_sizes, dim = [40, 25, 60, 35], 10
    features, labels = clustered(class_sizes, dim, spread=2.0, seed=11)
    expected = reference_neural_collapse(features, labels, len(class_sizes))
    metric = NeuralCollapse(len(class_sizes), full_covariance_max_dim=dim)
    metric.update(features, labels)
    metric.next_phase()
    metric.update(features, labels)
    assert_close_dicts(metric.compute()["features"], expected, rel=1e-9)

    means = torch.stack([features[labels == c].mean(0) for c in range(len(class_sizes))])
    centred = features - means[labels]
    sigma_w = centred.T @ centred / len(labels)
    torch.testing.assert_close(metric.within_class_covariance("features"), sigma_w, rtol=1e-10, atol=1e-14)


def test_class_means_and_variances_match_definitions() -> None:
    features, labels = clustered([9, 31, 4], dim=6, seed=5)
    for c in range(3):
        rows = features[labels == c]
        torch.testing.assert_close(F.class_means(features, labels, 3)[c], rows.mean(0), rtol=1e-13, atol=0)
        variance = ((rows - rows.mean(0)) ** 2).sum(1).mean()
        torch.testing.assert_close(F.class_variances(features, labels, 3)[c], variance, rtol=1e-12, atol=0)


# --------------------------------------------------------------------------- effective depth
@pytest.mark.parametrize(
    "errors, eps, expected",
    [
        ([0.6, 0.3, 0.08, 0.01], 0.1, 3),  # first layer at or below eps, 1-based
        ([0.6, 0.3, 0.1, 0.01], 0.1, 3),  # equality counts
        ([0.05, 0.3, 0.2], 0.1, 1),
        ([0.6, 0.05, 0.2, 0.0], 0.1, 2),  # not monotone: the smallest index wins
        ([0.6, 0.3, 0.2], 0.1, None),  # never reached
        ([], 0.1, None),
    ],
)
def test_effective_depth(errors: list[float], eps: float, expected: int | None) -> None:
    assert effective_depth(errors, eps) == expected


@pytest.mark.parametrize("eps", [-0.1, 1.5])
def test_effective_depth_rejects_eps_outside_unit_interval(eps: float) -> None:
    with pytest.raises(ValueError, match="eps"):
        effective_depth([0.5, 0.1], eps)


# --------------------------------------------------------------------------- edge cases
def test_empty_class_raises_by_default() -> None:
    features, labels = clustered([10, 10, 10], dim=4)
    with pytest.raises(ValueError, match=r"1 of 4 classes has no samples \(classes 3\)"):
        F.neural_collapse(features, labels, 4)
    metric = NeuralCollapse(4)
    metric.update({"block1": features}, labels)
    with pytest.raises(ValueError, match="block1"):
        metric.next_phase()


def test_empty_class_gives_nan_for_class_mean_metrics_when_asked() -> None:
    features, labels = clustered([10, 12, 8], dim=4, spread=0.5)
    weight = torch.randn(4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    metric = NeuralCollapse(4, classifier_weight=weight, empty_classes="nan")
    metric.update(features, labels)
    metric.next_phase()
    metric.update(features, labels, logits=features @ weight.T)
    result = metric.compute()["features"]
    for name in (*CLASS_MEAN_METRICS, "nc3"):
        assert math.isnan(result[name]), name
    present_means = torch.stack([features[labels == c].mean(0) for c in range(3)])
    ncc = ((features[:, None, :] - present_means[None]) ** 2).sum(-1).argmin(1)
    assert result["ncc_acc"] == pytest.approx(float((ncc == labels).double().mean()), abs=1e-15)
    assert result["nc4"] == pytest.approx(float(((features @ weight.T).argmax(1) != ncc).double().mean()))
    assert torch.isnan(metric.class_means()["features"][3]).all()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_features_raise_naming_the_layer(bad: float) -> None:
    features, labels = clustered([10, 10], dim=4)
    corrupted = features.clone()
    corrupted[7, 2] = bad
    metric = NeuralCollapse(2)
    metric.update({"stem": features, "block2": corrupted}, labels)
    with pytest.raises(ValueError, match="'block2'.*NaN or Inf"):
        metric.next_phase()
    with pytest.raises(ValueError, match="NaN or Inf"):
        F.neural_collapse(corrupted, labels, 2)


@pytest.mark.parametrize("bad_label", [-1, 3])
def test_labels_out_of_range_raise(bad_label: int) -> None:
    features, labels = clustered([10, 10, 10], dim=4)
    labels = labels.clone()
    labels[4] = bad_label
    with pytest.raises(ValueError, match=r"0\.\.2"):
        F.neural_collapse(features, labels, 3)
    metric = NeuralCollapse(3)
    metric.update(features, labels)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        metric.next_phase()


def test_wrong_shapes_raise() -> None:
    features, labels = clustered([10, 10], dim=4)
    with pytest.raises(ValueError, match="labels must have shape"):
        F.neural_collapse(features, labels[:-1], 2)
    with pytest.raises(ValueError, match="num_classes"):
        F.neural_collapse(features, labels, 1)
    with pytest.raises(ValueError, match="classifier weight must have shape"):
        F.neural_collapse(features, labels, 2, weight=torch.ones(2, 5, dtype=torch.float64))
    metric = NeuralCollapse(2)
    with pytest.raises(ValueError, match="'b'.*rows"):
        metric.update({"a": features, "b": features[:-1]}, labels)
