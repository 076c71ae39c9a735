"""Token-level collapse on a vocabulary of which the data use a part: ``empty_classes="drop"`` (every metric
over the classes present, functional = streaming = DDP = the reference on the present classes alone), short
error messages, and ``nc1_rank_normalized``, comparable across ``C`` and ``d``, against closed forms."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from ncdepth.metrics import NeuralCollapse
from ncdepth.metrics import functional as F
from reference_nc import reference_neural_collapse

VOCABULARY, DIM = 40, 6
PRESENT = torch.tensor([1, 4, 5, 9, 17, 22, 23, 30, 38])  # 9 of 40 classes have samples


def tokens(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """float64 features of the classes in PRESENT (C' = 9 > d = 6), 5 to 12 samples each, and a
    classifier over the whole vocabulary."""
    generator = torch.Generator().manual_seed(seed)
    sizes = torch.randint(5, 13, (len(PRESENT),), generator=generator)
    labels = torch.repeat_interleave(PRESENT, sizes)
    labels = labels[torch.randperm(len(labels), generator=generator)]
    means = 1.5 * torch.randn(VOCABULARY, DIM, generator=generator, dtype=torch.float64)
    features = means[labels] + torch.randn(len(labels), DIM, generator=generator, dtype=torch.float64)
    weight = torch.randn(VOCABULARY, DIM, generator=generator, dtype=torch.float64)
    bias = torch.randn(VOCABULARY, generator=generator, dtype=torch.float64)
    return features, labels, weight, bias


def on_present_classes(features: Tensor, labels: Tensor, weight: Tensor, bias: Tensor) -> dict[str, float]:
    """The reference on the present classes alone: labels renumbered, classifier rows restricted."""
    renumbered = torch.searchsorted(PRESENT, labels)
    expected = reference_neural_collapse(
        features, renumbered, len(PRESENT), weight=weight[PRESENT], bias=bias[PRESENT]
    )
    return {**expected, "num_classes_present": float(len(PRESENT))}


def assert_close(got: dict[str, float], expected: dict[str, float], rel: float = 1e-9) -> None:
    assert list(got) == list(expected)
    for name, value in expected.items():
        absolute = 1e-7 if name == "nc2_etf" else 1e-14  # C > d: nc2_etf from a difference near 2
        assert got[name] == pytest.approx(value, rel=rel, abs=absolute), name


def streamed(features: Tensor, labels: Tensor, weight: Tensor, bias: Tensor, **options) -> NeuralCollapse:
    metric = NeuralCollapse(VOCABULARY, classifier_weight=weight, empty_classes="drop", **options)
    for h, y in zip(features.split(16), labels.split(16), strict=True):
        metric.update(h, y)
    metric.next_phase()
    for h, y in zip(features.split(16), labels.split(16), strict=True):
        metric.update(h, y, logits=h @ weight.T + bias)
    return metric


def test_drop_measures_every_metric_over_the_present_classes() -> None:
    features, labels, weight, bias = tokens()
    expected = on_present_classes(features, labels, weight, bias)
    assert 0.0 < expected["ncc_acc"] < 1.0 and 0.0 < expected["nc4"] < 1.0
    result = F.neural_collapse(features, labels, VOCABULARY, weight=weight, bias=bias, empty_classes="drop")
    assert_close(result, expected)
    logits = features @ weight.T + bias  # the network's own logits: their columns are restricted too
    given = F.neural_collapse(
        features, labels, VOCABULARY, weight=weight, logits=logits, empty_classes="drop"
    )
    assert_close(given, expected)
    metric = streamed(features, labels, weight, bias)
    assert_close(metric.compute()["features"], expected)
    means = metric.class_means()["features"]  # the vocabulary's rows, NaN where nothing was measured
    assert means.shape == (VOCABULARY, DIM) and int((~means.isnan().any(1)).sum()) == len(PRESENT)
    assert torch.equal(metric.class_counts(), torch.bincount(labels, minlength=VOCABULARY).double())


def test_the_network_choosing_an_absent_token_is_not_a_disagreement() -> None:
    """nc4 compares the network and the NCC over the same classes: a logit column of an absent class that
    wins the argmax does not count once the columns are restricted."""
    features, labels, weight, bias = tokens()
    bias = bias.clone()
    bias[0] = 1e6  # class 0 never occurs but wins every argmax over the whole vocabulary
    expected = on_present_classes(features, labels, weight, bias)
    result = F.neural_collapse(features, labels, VOCABULARY, weight=weight, bias=bias, empty_classes="drop")
    assert result["nc4"] == pytest.approx(expected["nc4"], abs=1e-15) and result["nc4"] < 1.0


def test_a_test_split_is_measured_against_the_train_means_of_its_present_classes() -> None:
    features, labels, weight, bias = tokens(seed=0)
    test, test_labels, _, _ = tokens(seed=1)
    train_metric = streamed(features, labels, weight, bias)
    test_metric = NeuralCollapse(VOCABULARY, ncc_reference=train_metric, empty_classes="drop")
    for _ in range(2):
        test_metric.update(test, test_labels)
        if test_metric.phase == 1:
            test_metric.next_phase()
    train_means = F.class_means(features, labels, VOCABULARY)
    functional = F.neural_collapse(test, test_labels, VOCABULARY, ncc_means=train_means, empty_classes="drop")
    assert test_metric.compute()["features"]["ncc_acc"] == pytest.approx(functional["ncc_acc"], abs=1e-15)
    centres = train_means[PRESENT]
    expected = float(
        (torch.cdist(test, centres).argmin(1) == torch.searchsorted(PRESENT, test_labels)).double().mean()
    )
    assert functional["ncc_acc"] == pytest.approx(expected, abs=1e-15)


def test_without_drop_a_vocabulary_gives_one_short_line() -> None:
    vocabulary = 5_000
    features, labels, _, _ = tokens()
    with pytest.raises(ValueError) as error:
        F.neural_collapse(features, labels, vocabulary)
    message = str(error.value)
    assert message.startswith(
        "4,991 of 5,000 classes have no samples (classes 0, 2, 3, 6, 7, 8, 10, 11, ...)"
    )
    assert "empty_classes='drop'" in message and len(message) < 250 and "\n" not in message
    metric = NeuralCollapse(vocabulary)
    metric.update({"transformer.h.0": features}, labels)
    with pytest.raises(ValueError, match=r"^4,991 of 5,000 classes have no samples in layers \['transformer"):
        metric.next_phase()


def test_min_class_count_is_one_rule_for_every_metric() -> None:
    features, labels, weight, bias = tokens()
    counts = torch.bincount(labels, minlength=VOCABULARY)
    threshold = int(counts[PRESENT].median())
    kept = (counts >= threshold).nonzero().flatten()
    rows = torch.isin(labels, kept)
    expected = reference_neural_collapse(
        features[rows],
        torch.searchsorted(kept, labels[rows]),
        len(kept),
        weight=weight[kept],
        bias=bias[kept],
    )
    expected["num_classes_present"] = float(len(kept))
    result = F.neural_collapse(
        features,
        labels,
        VOCABULARY,
        weight=weight,
        bias=bias,
        empty_classes="drop",
        min_class_count=threshold,
    )
    assert_close(result, expected)
    assert_close(
        streamed(features, labels, weight, bias, min_class_count=threshold).compute()["features"], expected
    )
    with pytest.raises(
        ValueError, match="needs 2 classes with at least min_class_count = 1000 samples, found 0"
    ):
        F.neural_collapse(features, labels, VOCABULARY, empty_classes="drop", min_class_count=1000)


# --------------------------------------------------------------------------- nc1 with more classes than d
def axis_classes(num_axes: int, dim: int, spread: float, noise: float) -> tuple[Tensor, Tensor]:
    """``2 num_axes`` classes with means ``+-spread e_j`` (``j < num_axes <= dim``), each with the
    ``2 dim`` samples ``mu_c +- noise e_k``: ``Sigma_W = (noise^2 / dim) I`` and ``Sigma_B = (spread^2 /
    num_axes) P``, ``P`` the projection on the first ``num_axes`` axes, exactly (``num_axes <= dim``)."""
    eye = torch.eye(dim, dtype=torch.float64)
    means = torch.cat([spread * eye[:num_axes], -spread * eye[:num_axes]])
    offsets = torch.cat([noise * eye, -noise * eye])
    features = (means[:, None, :] + offsets[None]).reshape(-1, dim)
    return features, torch.arange(len(means)).repeat_interleave(2 * dim)


@pytest.mark.parametrize("num_axes, dim", [(2, 8), (4, 8), (8, 8), (5, 5)])
def test_nc1_rank_normalized_is_the_within_to_between_ratio_per_direction(num_axes: int, dim: int) -> None:
    """``C = 2 num_axes`` classes; along each of the ``r = min(num_axes, d)`` directions of ``Sigma_B`` the
    within- to between-class variance ratio is ``(noise^2 / d) / (spread^2 / num_axes)``:
    nc1_rank_normalized is that ratio whatever C and d, nc1 is ``r / C`` times it (C = 16 > d = 8: half)."""
    spread, noise = 3.0, 0.5
    features, labels = axis_classes(num_axes, dim, spread, noise)
    num_classes, rank = 2 * num_axes, num_axes
    result = F.neural_collapse(features, labels, num_classes)
    ratio = (noise**2 / dim) / (spread**2 / num_axes)
    assert result["nc1_rank_normalized"] == pytest.approx(ratio, rel=1e-12)
    assert result["nc1"] == pytest.approx(ratio * rank / num_classes, rel=1e-12)
    expected = reference_neural_collapse(features, labels, num_classes)
    assert result["nc1_rank_normalized"] == pytest.approx(expected["nc1_rank_normalized"], rel=1e-10)


def test_nc1_rank_normalized_does_not_shrink_with_more_classes_than_dimensions() -> None:
    """The same per-direction geometry with C = 2d and C = 8d classes in d = 4: nc1 falls by 4 (d/C), the
    rank-normalised value stays."""
    dim, noise = 4, 0.5
    values = {}
    for copies in (1, 4):
        eye = torch.eye(dim, dtype=torch.float64)
        # copies x (+-e_j) means on each axis, scaled so that Sigma_B = (1/C) sum m m^T = I in every case
        scales = torch.linspace(1.0, 2.0, copies, dtype=torch.float64)
        scales = scales * math.sqrt(dim * copies * 2 / (2 * float(scales.square().sum())))
        means = torch.cat([s * sign * eye for s in scales for sign in (1.0, -1.0)])
        offsets = torch.cat([noise * eye, -noise * eye])
        features = (means[:, None, :] + offsets[None]).reshape(-1, dim)
        labels = torch.arange(len(means)).repeat_interleave(2 * dim)
        values[len(means)] = F.neural_collapse(features, labels, len(means))
    small, large = values[2 * dim], values[8 * dim]
    assert large["nc1_rank_normalized"] == pytest.approx(small["nc1_rank_normalized"], rel=1e-12)
    assert large["nc1_rank_normalized"] == pytest.approx(noise**2 / dim, rel=1e-12)  # Sigma_B = I
    assert large["nc1"] == pytest.approx(small["nc1"] / 4, rel=1e-12)


# --------------------------------------------------------------------------- DDP
WORLD_SIZE = 2


def ddp_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        features, labels, weight, bias = tokens()
        # rank 0 holds no sample of class 1 and of class 38, rank 1 holds all of them: drop is decided on
        # the global counts, so both build the same states
        order = torch.argsort(torch.isin(labels, torch.tensor([1, 38])).to(torch.int8), stable=True)
        rows = order[: len(order) // 3] if rank == 0 else order[len(order) // 3 :]
        metric = streamed(features[rows], labels[rows], weight, bias, min_class_count=6)
        torch.save(metric.compute(), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_drop_under_ddp_equals_one_process(tmp_path: Path) -> None:
    features, labels, weight, bias = tokens()
    expected = streamed(features, labels, weight, bias, min_class_count=6).compute()
    assert expected["features"]["num_classes_present"] < len(PRESENT)  # min_class_count dropped some
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(ddp_worker, args=(port, str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    for rank in range(WORLD_SIZE):
        got = torch.load(tmp_path / f"rank{rank}.pt")["features"]
        assert_close(got, expected["features"], rel=1e-10)
