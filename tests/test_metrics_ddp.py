"""``NeuralCollapse`` across two processes (gloo, CPU) equals the single-process result on all the data, reduces
with ``all_reduce`` (torchmetrics' gather of every state is never called), and decides whether a full scatter
fits alike on every process (one short of memory: all raise, none waits)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torchmetrics.metric
from torch import Tensor

import ncdepth.metrics.collapse as collapse_module
from ncdepth.metrics import NeuralCollapse

NUM_CLASSES = 5
WORLD_SIZE = 2
RANK0_SHARD = 230  # rank 0 sees 230 samples, none of class 4; rank 1 the other 470
BATCH = 64


def dataset(seed: int) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor]:
    """Two layers (``block``: 12-d, ``penultimate``: 4-d, narrower than C), imbalanced labels, logits,
    and the classifier weight, all float64 and reproducible from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.multinomial(torch.tensor([1.0, 4.0, 2.0, 6.0, 3.0]), 700, True, generator=generator)
    means = 2.0 * torch.randn(NUM_CLASSES, 12, generator=generator, dtype=torch.float64)
    block = means[labels] + 2.0 * torch.randn(700, 12, generator=generator, dtype=torch.float64)
    projection = torch.randn(12, 4, generator=generator, dtype=torch.float64)
    penultimate = torch.relu(block @ projection)
    weight = torch.randn(NUM_CLASSES, 4, generator=generator, dtype=torch.float64)
    logits = penultimate @ weight.T + torch.randn(NUM_CLASSES, generator=generator, dtype=torch.float64)
    return {"block": block, "penultimate": penultimate}, labels, logits, weight


def shard(labels: Tensor, rank: int) -> Tensor:
    """Disjoint, unequal shards; rank 0 holds no sample of the last class."""
    order = torch.cat([(labels != NUM_CLASSES - 1).nonzero(), (labels == NUM_CLASSES - 1).nonzero()])
    order = order.flatten()
    return order[:RANK0_SHARD] if rank == 0 else order[RANK0_SHARD:]


def measure(
    train_rows: Tensor, test_rows: Tensor, seed: int
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]], dict[str, Tensor]]:
    """Train metrics (with ``nc3``/``nc4``) and test metrics (NCC on the train means) over the given rows,
    pass 2 in reverse batch order."""
    layers, labels, logits, weight = dataset(seed)
    test_layers, test_labels, _, _ = dataset(seed + 1)
    train = NeuralCollapse(NUM_CLASSES, classifier_weight=weight)
    test = NeuralCollapse(NUM_CLASSES, ncc_reference=train)
    for metric, feats, ys, rows, outputs in (
        (train, layers, labels, train_rows, logits),
        (test, test_layers, test_labels, test_rows, None),
    ):
        batches = rows.split(BATCH)
        for index in batches:
            metric.update({name: h[index] for name, h in feats.items()}, ys[index])
        metric.next_phase()
        for index in reversed(batches):
            batch_logits = None if outputs is None else outputs[index]
            metric.update({name: h[index] for name, h in feats.items()}, ys[index], logits=batch_logits)
    return train.compute(), test.compute(), train.class_means()


def worker(rank: int, port: int, seed: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)

    def no_gather(*args: object, **kwargs: object) -> None:
        raise AssertionError("torchmetrics gathered every process's states")

    torchmetrics.metric.gather_all_tensors = no_gather
    try:
        labels, test_labels = dataset(seed)[1], dataset(seed + 1)[1]
        result = measure(shard(labels, rank), shard(test_labels, rank), seed)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_same(got: dict[str, dict[str, float]], expected: dict[str, dict[str, float]]) -> None:
    assert list(got) == list(expected)
    for layer, metrics in expected.items():
        assert list(got[layer]) == list(metrics), layer
        for name, value in metrics.items():
            assert got[layer][name] == pytest.approx(value, rel=1e-10, abs=1e-15), (layer, name)


def test_two_processes_equal_one(tmp_path: Path) -> None:
    seed = 3
    labels, test_labels = dataset(seed)[1], dataset(seed + 1)[1]
    assert (labels[shard(labels, 0)] != NUM_CLASSES - 1).all()
    train_expected, test_expected, means_expected = measure(
        torch.arange(len(labels)), torch.arange(len(test_labels)), seed
    )
    assert set(train_expected["penultimate"]) >= {"nc3", "nc4"}

    mp.spawn(worker, args=(free_port(), seed, str(tmp_path)), nprocs=WORLD_SIZE, join=True)

    for rank in range(WORLD_SIZE):
        train_got, test_got, means_got = torch.load(tmp_path / f"rank{rank}.pt")
        assert_same(train_got, train_expected)
        assert_same(test_got, test_expected)
        for layer, means in means_expected.items():
            torch.testing.assert_close(means_got[layer], means, rtol=1e-12, atol=1e-14)


def short_of_memory_worker(rank: int, port: int, out_dir: str) -> None:
    """Rank 1 sees less free memory than a 64 x 64 scatter needs, rank 0 plenty: both must raise."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    collapse_module.available_bytes = lambda device: 2**40 if rank == 0 else 1000
    try:
        metric = NeuralCollapse(NUM_CLASSES, full_covariance_max_dim=64)
        metric.update(torch.zeros(4, 64), torch.arange(4))
        outcome = "no error"
    except MemoryError as error:
        outcome = str(error)
    finally:
        dist.destroy_process_group()
    (Path(out_dir) / f"rank{rank}.txt").write_text(outcome)


def test_a_scatter_that_does_not_fit_on_one_process_is_refused_on_all(tmp_path: Path) -> None:
    context = mp.spawn(
        short_of_memory_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=False
    )
    deadline = time.monotonic() + 600  # starting two interpreters on a loaded machine takes a minute or more
    while not context.join(timeout=5):  # True once every process has ended
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("a process still waits in a collective after 600 s")
    for rank in range(WORLD_SIZE):
        assert "only 1,000 bytes are available" in (tmp_path / f"rank{rank}.txt").read_text()
