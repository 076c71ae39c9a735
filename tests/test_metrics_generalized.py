"""The extra metrics of the registry (generalized measures, fuzziness, effective rank, alignment, the linear
probe): closed forms, the independent reference, streaming = functional, blocks = one block, and two
processes (gloo) = one."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

import ncdepth.metrics.collapse as collapse_module
import ncdepth.metrics.generalized as generalized_module
from ncdepth.metrics import NeuralCollapse
from ncdepth.metrics import functional as F
from ncdepth.metrics.generalized import (
    effective_rank,
    hyperspherical_uniformity,
    separation_law,
    weight_alignment,
)
from ncdepth.metrics.registry import EXTRA_NAMES
from reference_nc import reference_neural_collapse
from test_metrics_ddp import free_port
from test_metrics_oracles import clustered, simplex_etf

ALL = list(EXTRA_NAMES)
CASES = {
    "balanced, d > C": ([40] * 6, 24),
    "imbalanced, d > C": ([5, 120, 33, 70, 2, 61], 24),
    "imbalanced, d < C": ([3, 80, 17, 44, 9, 60, 25, 31, 7, 52, 12, 40], 5),
}


def inputs(class_sizes: list[int], dim: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    features, labels = clustered(class_sizes, dim, spread=8.0, seed=len(class_sizes) * dim)
    generator = torch.Generator().manual_seed(5)
    weight = torch.randn(len(class_sizes), dim, generator=generator, dtype=torch.float64)
    layer_weight = torch.randn(7, dim, generator=generator, dtype=torch.float64)
    ood_mean = torch.randn(dim, generator=generator, dtype=torch.float64)
    return features, labels, weight, layer_weight, ood_mean


def streamed(features: Tensor, labels: Tensor, num_classes: int, **options: object) -> NeuralCollapse:
    metric = NeuralCollapse(num_classes, **options)
    for h, y in zip(features.split(50), labels.split(50), strict=True):
        metric.update(h, y)
    metric.next_phase()
    for h, y in zip(reversed(features.split(50)), reversed(labels.split(50)), strict=True):
        metric.update(h, y)
    return metric


def extras(result: dict[str, float]) -> dict[str, float]:
    return {name: value for name, value in result.items() if name in EXTRA_NAMES}


@pytest.mark.parametrize("class_sizes, dim", CASES.values(), ids=CASES.keys())
def test_functional_and_streaming_match_reference(class_sizes: list[int], dim: int) -> None:
    features, labels, weight, layer_weight, ood_mean = inputs(class_sizes, dim)
    num_classes = len(class_sizes)
    expected = extras(
        reference_neural_collapse(
            features,
            labels,
            num_classes,
            weight=weight,
            layer_weight=layer_weight,
            ood_mean=ood_mean,
            extra=True,
        )
    )
    assert set(expected) == set(ALL)
    assert 0.0 < expected["probe_acc"] < 1.0
    functional = extras(
        F.neural_collapse(
            features,
            labels,
            num_classes,
            weight=weight,
            layer_weight=layer_weight,
            ood_mean=ood_mean,
            measures=ALL,
        )
    )
    assert list(functional) == ALL  # registry order
    ood = streamed(ood_mean + features[:40], labels[:40] % 2, 2)
    metric = streamed(
        features,
        labels,
        num_classes,
        classifier_weight=weight,
        measures=ALL,
        layer_weights={"features": layer_weight},
        ood_reference=ood,
    )
    stream = extras(metric.compute()["features"])
    assert list(stream) == ALL
    ood_expected = F.neural_collapse(
        features, labels, num_classes, measures=["nc5_ood_dev"], ood_mean=(ood_mean + features[:40]).mean(0)
    )
    for name in ALL:
        assert functional[name] == pytest.approx(expected[name], rel=1e-9), name
        want = ood_expected["nc5_ood_dev"] if name == "nc5_ood_dev" else functional[name]
        assert stream[name] == pytest.approx(want, rel=1e-10), name


def test_many_classes_in_blocks_match_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """``C = 300 > d = 16``: pairs over blocks of 64 classes (ragged last block) equal the reference's
    explicit loop over pairs, and the spectra come from the ``d x d`` side."""
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(300).repeat(3)
    features = 3.0 * torch.randn(300, 16, generator=generator, dtype=torch.float64)[labels]
    features += torch.randn(900, 16, generator=generator, dtype=torch.float64)
    names = ["nc2g_dist", "nc2g_log", "erank_means", "fuzziness"]
    expected = extras(reference_neural_collapse(features, labels, 300, extra=True))
    whole = extras(F.neural_collapse(features, labels, 300, measures=names))
    monkeypatch.setattr(generalized_module, "PAIR_BLOCK", 64)
    blocked = extras(F.neural_collapse(features, labels, 300, measures=names))
    for name in names:
        assert whole[name] == pytest.approx(expected[name], rel=1e-9), name
        assert blocked[name] == pytest.approx(whole[name], rel=1e-11), name


def test_closed_forms() -> None:
    etf = simplex_etf(5, 9, scale=3.0)
    uniformity = hyperspherical_uniformity(etf)
    assert uniformity["nc2g_dist"] == pytest.approx(0.0, abs=1e-24)
    assert uniformity["nc2g_log"] == pytest.approx(0.0, abs=1e-24)
    assert effective_rank(etf) == pytest.approx(4.0, rel=1e-12)  # C - 1 equal singular values
    # Two pairs at distance a, one at b (three unit vectors in a plane at angles 0, 90, 180 degrees):
    # distances sqrt 2, sqrt 2, 2; population variance of {r, r, 2}: 2 (2 - r)^2 / 9 with r = sqrt 2.
    plane = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    got = hyperspherical_uniformity(plane)
    assert got["nc2g_dist"] == pytest.approx(2.0 * (2.0 - math.sqrt(2.0)) ** 2 / 9.0, rel=1e-12)
    assert got["nc2g_log"] == pytest.approx(2.0 * (math.log(2.0) / 2.0) ** 2 / 9.0, rel=1e-12)
    # Alignment is invariant to scaling either side and is 1 when A^T A is proportional to Sigma_B.
    assert weight_alignment(5.0 * etf, 0.1 * etf) == pytest.approx(1.0, rel=1e-12)
    law = separation_law([10.0 * 0.4**layer for layer in range(1, 7)])
    assert law["ratio"] == pytest.approx(0.4, rel=1e-12) and law["r2"] == pytest.approx(1.0, rel=1e-12)
    assert math.isnan(separation_law([1.0])["slope"])


def test_fuzziness_is_c_times_nc1_and_probe_separates() -> None:
    features, labels = clustered([30, 30, 30], 6, spread=0.1, seed=2)
    result = F.neural_collapse(features, labels, 3, measures=["fuzziness", "probe_acc"])
    assert result["fuzziness"] == pytest.approx(3 * result["nc1"], rel=1e-15)
    assert result["probe_acc"] == 1.0


def test_probe_on_a_projection_and_on_a_test_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer wider than the probe's limit is probed on the fixed random projection, in the streaming
    metric as in ``linear_probe(max_dim=...)``; the test split's ``probe_acc`` is the train probe's
    accuracy on it (``probe_test_acc``)."""
    monkeypatch.setattr(collapse_module, "PROBE_MAX_DIM", 8)
    everything, all_labels = clustered([60, 45, 80, 55], 20, spread=6.0, seed=3)
    features, labels, test, test_labels = (
        everything[:160],
        all_labels[:160],
        everything[160:],
        all_labels[160:],
    )
    expected = F.linear_probe(features, labels, 4, test_features=test, test_labels=test_labels, max_dim=8)
    assert 0.3 < expected["probe_test_acc"] < expected["probe_acc"] < 1.0
    train = streamed(features, labels, 4, measures=["probe_acc"])
    on_test = streamed(test, test_labels, 4, measures=["probe_acc"], ncc_reference=train)
    assert train.compute()["features"]["probe_acc"] == expected["probe_acc"]
    assert on_test.compute()["features"]["probe_acc"] == expected["probe_test_acc"]
    unprojected = F.linear_probe(features, labels, 4)
    assert unprojected != F.linear_probe(features, labels, 4, max_dim=8)  # the projection is in effect


def test_unknown_measure_is_one_line() -> None:
    with pytest.raises(ValueError, match=r"^measures: unknown metric 'nc9'; allowed: fuzziness, ") as error:
        NeuralCollapse(3, measures=["nc9"])
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="unknown metric"):
        F.neural_collapse(torch.eye(3), torch.arange(3), 3, measures=["nc9"])


# --------------------------------------------------------------------------- two processes
def measure(rows: Tensor, test_rows: Tensor) -> tuple[dict, dict]:
    features, labels, weight, layer_weight, _ = inputs([5, 120, 33, 70, 2, 61], 24)
    test, test_labels = clustered([10, 30, 20, 40, 5, 25], 24, spread=3.0, seed=9)
    options = {"measures": ALL, "layer_weights": {"features": layer_weight}}
    train = NeuralCollapse(6, classifier_weight=weight, **options)
    on_test = NeuralCollapse(6, ncc_reference=train, ood_reference=train, **options)
    for metric, h, y, index in ((train, features, labels, rows), (on_test, test, test_labels, test_rows)):
        for batch in index.split(40):
            metric.update(h[batch], y[batch])
        metric.next_phase()
        for batch in reversed(index.split(40)):
            metric.update(h[batch], y[batch])
    return train.compute(), on_test.compute()


def worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.save(
            measure(torch.arange(rank, 291, 2), torch.arange(rank, 130, 2)), Path(out_dir) / f"{rank}.pt"
        )
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one(tmp_path: Path) -> None:
    train, test = measure(torch.arange(291), torch.arange(130))
    assert set(train["features"]) >= set(ALL) - {"nc5_ood_dev"} and "nc5_ood_dev" in test["features"]
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        for got, expected in zip(torch.load(tmp_path / f"{rank}.pt"), (train, test), strict=True):
            assert list(got["features"]) == list(expected["features"])
            for name, value in expected["features"].items():
                assert got["features"][name] == pytest.approx(value, rel=1e-10, abs=1e-15), name


def test_nearly_coinciding_directions_keep_their_distance() -> None:
    """Two class means 1e-6 apart in direction: the distance from ``sqrt(2 - 2 cos)`` would be off by about
    1e-8 absolute (1 % here) and its logarithm with it; the difference itself is exact to rounding."""
    generator = torch.Generator().manual_seed(2)
    means = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    means[1] = means[0] + 1e-6 * torch.linalg.vector_norm(means[0]) * torch.randn(
        5, generator=generator, dtype=torch.float64
    )
    means -= means.mean(0)
    units = [m / m.norm() for m in means]
    pairs = torch.stack([(units[a] - units[b]).norm() for a in range(6) for b in range(a + 1, 6)])
    got = hyperspherical_uniformity(means)
    assert got["nc2g_log"] == pytest.approx(float((-pairs.log()).var(correction=0)), rel=1e-10)
    assert got["nc2g_dist"] == pytest.approx(float(pairs.var(correction=0)), rel=1e-10)
