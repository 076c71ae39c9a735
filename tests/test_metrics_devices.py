"""Devices, host synchronisation and precision, checked without a GPU.

* **Devices.** ``torch.set_default_device("meta")`` makes every tensor created without an explicit device a
  ``meta`` tensor, and mixing a ``meta`` tensor with a CPU one raises, as mixing CUDA and CPU tensors does
  (stricter: even 0-dim ``meta`` tensors). Running the metrics, the head geometry and the analysis on CPU
  features under it fails wherever a tensor does not follow the features' device: the deep-linear-head
  crash of a GPU run (reference frames and ``closed_form`` made on the CPU, compared with CUDA matrices)
  fails here the same way on the code before the fix.
* **No host sync per batch.** ``update`` on ``meta`` features (which have no values: anything that reads
  one raises) proves that the per-batch work never waits for the device; :class:`sync_guard.CountSyncs`
  counts what would wait in the whole analysis loop, which must not grow with the number of batches.
* **Precision.** Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` the results are those without it;
  float16 and bfloat16 features give the results of the same values in float32.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import Tensor, nn

import ncdepth.metrics.collapse as collapse_module
from ncdepth.metrics import LayerTap, NeuralCollapse, functional, neural_collapse, stats
from ncdepth.models import MLP
from ncdepth.training import LossConfig, NCModule, OptimizerConfig
from ncdepth.training.analysis import analyse_split
from ncdepth.training.head_geometry import head_geometry
from sync_guard import CountSyncs

NUM_CLASSES = 6


@contextmanager
def default_device(device: str) -> Iterator[None]:
    previous = torch.get_default_device()
    torch.set_default_device(device)
    try:
        yield
    finally:
        torch.set_default_device(previous)


def layers(
    seed: int = 0, rows: int = 240, offset: float = 0.0
) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor]:
    """float32 features of two layers, ``wide`` (d = 10 >= C: projected path) and ``narrow`` (d = 4 < C:
    full scatter), balanced labels, logits of a classifier on ``narrow``, and its weight."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(rows) % NUM_CLASSES
    means = 0.7 * torch.randn(NUM_CLASSES, 10, generator=generator)
    wide = offset + means[labels] + torch.randn(rows, 10, generator=generator)
    narrow = wide[:, :4] - 0.5 * wide[:, 4:8]
    weight = torch.randn(NUM_CLASSES, 4, generator=generator)
    logits = narrow @ weight.T + 0.3 * torch.randn(rows, NUM_CLASSES, generator=generator)
    return {"wide": wide, "narrow": narrow}, labels, logits, weight


def stream(
    metric: NeuralCollapse, features: dict[str, Tensor], labels: Tensor, logits: Tensor | None
) -> None:
    """Both passes in batches of 64 (pass 2 with the logits)."""
    batches = [slice(start, start + 64) for start in range(0, len(labels), 64)]
    for rows in batches:
        metric.update({name: h[rows] for name, h in features.items()}, labels[rows])
    metric.next_phase()
    for rows in batches:
        metric.update(
            {name: h[rows] for name, h in features.items()},
            labels[rows],
            logits=None if logits is None else logits[rows],
        )


# ------------------------------------------------------------------------------------------------ devices
def test_states_follow_the_features_and_update_never_reads_a_value() -> None:
    """Pass 1 on ``meta`` features: every state (the scalar ones too) is made there, and nothing reads a
    value (it would raise on ``meta``)."""
    features, labels, _, weight = layers()
    metric = NeuralCollapse(NUM_CLASSES, classifier_weight=weight.to("meta"))
    for rows in (slice(0, 64), slice(64, 128)):
        metric.update({name: h[rows].to("meta") for name, h in features.items()}, labels[rows].to("meta"))
    assert {tensor.device.type for tensor in metric.metric_state.values()} == {"meta"}


def test_to_moves_the_anchors_counts_and_buffers_and_pass_two_never_reads_a_value() -> None:
    features, labels, logits, weight = layers()
    metric = NeuralCollapse(NUM_CLASSES, classifier_weight=weight)
    for rows in (slice(0, 120), slice(120, 240)):
        metric.update({name: h[rows] for name, h in features.items()}, labels[rows])
    metric.next_phase()
    metric.update({name: h[:8] for name, h in features.items()}, labels[:8], logits=logits[:8])
    assert metric._workspace.nbytes > 0
    metric.to("meta")
    assert metric._workspace.nbytes == 0  # released; re-made on the new device
    assert metric.class_counts().device.type == "meta"
    for anchors in metric._anchors.values():
        assert {value.device.type for value in vars(anchors).values() if isinstance(value, Tensor)} == {
            "meta"
        }
    for rows in (slice(8, 120), slice(120, 240)):
        batch = {name: h[rows].to("meta") for name, h in features.items()}
        metric.update(batch, labels[rows].to("meta"), logits=logits[rows].to("meta"))
    assert metric._workspace.nbytes > 0
    metric.reset()
    assert metric._workspace.nbytes == 0  # reset() releases the buffers


def test_metrics_head_geometry_and_analysis_make_nothing_on_the_default_device() -> None:
    """CPU features, default device ``meta``: a tensor made without following the features' device raises."""
    features, labels, logits, weight = layers()
    torch.manual_seed(0)
    sizes = (30, 30, 30, 30, 12, 12)  # imbalanced: closed_form's general orthogonal frame
    head_labels = torch.repeat_interleave(torch.arange(NUM_CLASSES), torch.tensor(sizes))
    inputs = torch.randn(len(head_labels), 5)
    models = {
        "imbalanced": (
            MLP(
                input_shape=(5,),
                num_classes=NUM_CLASSES,
                depth=1,
                width=8,
                depth_linear=2,
                classifier_bias=False,
            ),
            head_labels,
        ),
        "balanced_etf": (
            MLP(input_shape=(5,), num_classes=NUM_CLASSES, depth=1, width=8, depth_linear=1),
            torch.arange(len(head_labels)) % NUM_CLASSES,
        ),
    }
    modules = {
        name: NCModule(
            model,
            loss=LossConfig(name="mse", feature_decay=1e-3),
            optimizer=OptimizerConfig(name="sgd", weight_decay=1e-3),
        )
        for name, (model, _) in models.items()
    }
    train = NeuralCollapse(NUM_CLASSES, classifier_weight=weight)  # made, as usual, on the CPU
    test = NeuralCollapse(NUM_CLASSES, ncc_reference=train)
    head_metrics = {
        name: NeuralCollapse(NUM_CLASSES, classifier_layer=model.classifier_layer)
        for name, (model, _) in models.items()
    }
    test_features = layers(seed=1)[0]
    with default_device("meta"):
        stream(train, features, labels, logits)
        stream(test, test_features, labels, None)
        results = train.compute(), test.compute()
        functional = neural_collapse(features["narrow"], labels, NUM_CLASSES, weight=weight, logits=logits)
        geometry = {}
        for name, (model, head_labels_) in models.items():
            model.eval()
            batches = list(zip(inputs.split(50), head_labels_.split(50), head_labels_.split(50), strict=True))
            metrics = {"train": (head_metrics[name], 1)}
            analyse_split(model, batches, metrics, device=torch.device("cpu"))
            geometry[name] = head_geometry(model, head_metrics[name], modules[name])
    assert results[0]["narrow"]["nc4"] == pytest.approx(functional["nc4"])
    assert results[0]["narrow"]["nc1"] == pytest.approx(functional["nc1"], rel=1e-6)
    assert "geom_wwt" in geometry["imbalanced"]["linear2"]
    assert "geom_wwt" in geometry["balanced_etf"]["linear1"]


# ------------------------------------------------------------------------------------------- host syncs
def test_the_analysis_loop_waits_for_the_device_a_fixed_number_of_times() -> None:
    """The synchronising calls of ``analyse_split`` (both passes, two metrics) do not grow with the batches:
    all of them are in ``next_phase`` and at the end."""
    torch.manual_seed(0)
    model = MLP(input_shape=(5,), num_classes=NUM_CLASSES, depth=2, width=8, depth_linear=1).eval()
    labels = torch.arange(600) % NUM_CLASSES
    inputs = torch.randn(600, 5) + labels[:, None].float()

    def syncs(batch_size: int, cache_bytes: int) -> int:
        batches = list(
            zip(inputs.split(batch_size), labels.split(batch_size), labels.split(batch_size), strict=True)
        )
        options = {"classifier_layer": model.classifier_layer}
        metrics = {
            "a": (NeuralCollapse(NUM_CLASSES, **options), 1),
            "b": (NeuralCollapse(NUM_CLASSES, **options), 2),
        }
        with CountSyncs() as counter:
            analyse_split(model, batches, metrics, device=torch.device("cpu"), cache_bytes=cache_bytes)
        return counter.total

    for cache_bytes in (0, 2**30):  # pass 2 recomputed, or replayed from the cache
        assert syncs(300, cache_bytes) == syncs(50, cache_bytes) == syncs(25, cache_bytes)


def test_a_masked_token_read_waits_once_whatever_the_number_of_layers() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU())
    mask = torch.rand(3, 7, generator=torch.Generator().manual_seed(0)) > 0.4
    counts = {}
    for tapped in (["0"], ["0", "1", "2", "3"]):
        with LayerTap(model, tapped, tokens=True) as tap:
            model(torch.randn(3, 7, 4))
            with CountSyncs() as counter:
                got = tap.token_features(mask)
            for name in tapped:
                torch.testing.assert_close(got[name], tap._features[name][mask])
        counts[len(tapped)] = counter.total
    assert counts == {1: 1, 4: 1}


# ------------------------------------------------------------------------------------------- precision
def test_autocast_changes_nothing() -> None:
    """Features far from the origin (1e3) with close classes: bfloat16 scores (8 bits) would tie or swap
    nearest centres. Under CPU bfloat16 autocast every metric equals the result without it."""
    features, labels, logits, weight = layers(rows=2400, offset=1e3)
    expected = NeuralCollapse(NUM_CLASSES, classifier_weight=weight)
    stream(expected, features, labels, logits)
    metric = NeuralCollapse(NUM_CLASSES, classifier_weight=weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        stream(metric, features, labels, logits)
        got = metric.compute()
    assert got == expected.compute()
    assert 0.0 < got["narrow"]["nc4"] < 1.0 and 0.0 < got["wide"]["ncc_acc"] < 1.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        functional = neural_collapse(features["narrow"], labels, NUM_CLASSES, weight=weight, logits=logits)
    assert functional == neural_collapse(
        features["narrow"], labels, NUM_CLASSES, weight=weight, logits=logits
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_features_give_the_float32_result_of_the_same_values(dtype: torch.dtype) -> None:
    features, labels, logits, weight = layers()
    half = {name: h.to(dtype) for name, h in features.items()}
    same_values = {name: h.float() for name, h in half.items()}
    got, expected = (
        NeuralCollapse(NUM_CLASSES, classifier_weight=weight),
        NeuralCollapse(NUM_CLASSES, classifier_weight=weight),
    )
    stream(got, half, labels, logits.to(dtype))
    stream(expected, same_values, labels, logits.to(dtype).float())
    assert got.compute() == expected.compute()


# ------------------------------------------------------------------------------------------------ memory
def test_next_phase_reduces_and_releases_one_layer_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under DDP each layer's ``C x d`` sums are reduced into a copy: at most one such copy is alive at once
    (distribution faked in one process: ``all_reduce`` of one process is the identity)."""
    monkeypatch.setattr(collapse_module, "_distributed", lambda: True)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda tensor, **kwargs: None)
    copies: list[weakref.ref] = []
    alive_at_reduction = []
    reduced = NeuralCollapse._reduced

    def tracking(self: NeuralCollapse, tensor: Tensor) -> Tensor:
        total = reduced(self, tensor)
        if total.ndim == 2:  # a layer's C x d sums
            alive_at_reduction.append(sum(ref() is not None for ref in copies))
            copies.append(weakref.ref(total))
        return total

    monkeypatch.setattr(NeuralCollapse, "_reduced", tracking)
    features = {f"layer{i}": torch.randn(60, 8 + i) for i in range(4)}
    labels = torch.arange(60) % NUM_CLASSES
    metric = NeuralCollapse(NUM_CLASSES)
    metric.update(features, labels)
    metric.next_phase()
    assert alive_at_reduction == [0, 0, 0, 0]


def test_free_gpu_memory_counts_what_the_caching_allocator_holds_unused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After training, PyTorch's cache holds blocks the driver counts as used: they are free to the metric."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1_000, 80_000))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 50_000)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 20_000)
    assert stats.available_bytes(torch.device("cuda", 0)) == 1_000 + 30_000


def test_compute_with_many_classes_waits_a_fixed_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """``C > d``: the pair metrics go over blocks of classes, keeping their sums on the device; the host
    waits as often with 4 x 4 blocks as with 25 x 25."""
    generator = torch.Generator().manual_seed(0)
    classes = 200
    labels = torch.arange(1_000) % classes
    features = 3.0 * torch.randn(classes, 8, generator=generator)[labels] + torch.randn(
        1_000, 8, generator=generator
    )
    counts = {}
    for block in (8, 50):
        monkeypatch.setattr(functional, "PAIR_BLOCK", block)
        metric = NeuralCollapse(classes)
        stream(metric, {"features": features}, labels, None)
        with CountSyncs() as counter:
            metric.compute()
        counts[block] = counter.total
    assert counts[8] == counts[50]
