"""Cost of the NC analysis and of Lightning's loop, as ratios measured side by side on the same model and data.

For each case (a model, seeded random inputs of a real data set's shape, balanced labels):

* **analysis / inference**: ``analyse_split`` over the train split with every layer, both passes and
  ``compute()``, with the metrics built as ``NeuralCollapseCallback`` builds them, vs one plain
  inference pass (``model(x)`` over the same loader, eval mode, no grad, no metric). Two forward passes
  are the floor: target <= 2.1;
* **cached analysis / inference**: the same analysis with the feature cache holding every batch, so
  pass 2 runs no forward pass: target <= 1.1;
* **Lightning / hand loop**: one training epoch of ``pl.Trainer.fit`` with ``NCModule`` (no logger,
  checkpointing, progress bar, model summary or NC callback; no validation) vs a hand-written PyTorch
  loop doing the same SGD steps (cross-entropy, momentum, weight decay) on a copy of the same initial
  weights, the same batches in the same order (a seeded permutation of the data, fixed across epochs):
  target <= 1.10. Each repetition trains 2 epochs from the same weights and times the second, from the
  start of epoch 2 to the end of training, so ``Trainer`` start-up (set-up, data-loader wiring,
  first-epoch allocations) is not counted. On CPU both runs must end with the same weights (on CUDA the
  difference is printed: cuDNN need not be deterministic).

Repetitions are interleaved (inference, analysis, cached analysis, Lightning, hand loop, then again),
each ratio is the median over repetitions of the ratio within one repetition. Timings synchronise CUDA
before reading the clock. On CPU the cases are MLP-6-512 on mnist5k-shaped inputs and CONV-4-32 on
28x28 inputs; on CUDA, CONV-8-400 on CIFAR-shaped inputs (50,000 samples, one CIFAR-10 epoch). A case's sample count
is cut to fit the feature cache and the inputs in half the free memory (the printed ``N``).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ncdepth.data.tensor_dataset import LabelledTensorDataset
from ncdepth.metrics import NeuralCollapse
from ncdepth.models import MLP, ConvNet
from ncdepth.models.base import LayeredNet
from ncdepth.training import NCModule, OptimizerConfig
from ncdepth.training.analysis import analyse_split

T = TypeVar("T")

SEED = 0
LEARNING_RATE = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
TARGETS = {"analysis / inference": 2.1, "cached analysis / inference": 1.1, "Lightning / hand loop": 1.10}
WEIGHT_TOLERANCE = 1e-4  # Lightning and the hand loop must end with the same weights (float32 rounding)


@dataclass(frozen=True)
class Case:
    """A model and the shape of its data: ``num_samples`` seeded ``N(0, 1)`` inputs, labels ``i mod C``."""

    name: str
    build: Callable[[], LayeredNet]
    input_shape: tuple[int, ...]
    num_classes: int
    num_samples: int
    train_batch_size: int
    analysis_batch_size: int


def cases(quick: bool, device: str) -> list[Case]:
    """The CPU cases (MLP-6-512 on mnist5k shape, CONV-4-32 on 28x28) or the CUDA case (CONV-8-400 on
    CIFAR shape); ``quick`` shrinks the sample counts."""
    if device == "cuda":
        cifar = (3, 32, 32)
        return [conv_case(depth=8, width=400, shape=cifar, num_samples=5_000 if quick else 50_000)]
    mnist = (1, 28, 28)
    mlp = Case(
        name="MLP-6-512, mnist5k shape",
        build=lambda: MLP(input_shape=mnist, num_classes=10, depth=6, width=512),
        input_shape=mnist,
        num_classes=10,
        num_samples=1_000 if quick else 5_000,
        train_batch_size=128,
        analysis_batch_size=1_000,
    )
    return [mlp, conv_case(depth=4, width=32, shape=mnist, num_samples=500 if quick else 2_000)]


def conv_case(depth: int, width: int, shape: tuple[int, int, int], num_samples: int) -> Case:
    """CONV-``depth``-``width`` (with BatchNorm) on ``shape`` inputs, 10 classes."""
    return Case(
        name=f"CONV-{depth}-{width}, {shape[1]}x{shape[2]}x{shape[0]}",
        build=lambda: ConvNet(input_shape=shape, num_classes=10, depth=depth, width=width),
        input_shape=shape,
        num_classes=10,
        num_samples=num_samples,
        train_batch_size=128,
        analysis_batch_size=1_000,
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """``function()`` and its wall seconds, CUDA work included."""
    synchronize(device)
    start = time.perf_counter()
    result = function()
    synchronize(device)
    return result, time.perf_counter() - start


# ---------------------------------------------------------------------------------------- analysis
def plain_inference(model: nn.Module, loader: DataLoader, device: torch.device) -> None:
    """One forward pass over ``loader`` (eval mode set by the caller), no grad, nothing kept."""
    with torch.no_grad():
        for x, *_ in loader:
            model(x.to(device))


def callback_metric(model: LayeredNet, device: torch.device) -> NeuralCollapse:
    """The train split's ``NeuralCollapse`` as ``NeuralCollapseCallback`` builds it (default settings)."""
    return NeuralCollapse(
        model.classifier.out_features,
        classifier_layer=model.classifier_layer,
        classifier_weight=lambda: model.classifier.weight.detach(),
        pool="flatten",
        full_covariance_max_dim=0,
    ).to(device)


def nc_analysis(
    model: LayeredNet, loader: DataLoader, device: torch.device, cache_bytes: int
) -> tuple[dict[str, dict[str, float]], bool]:
    """Both passes of every layer and ``compute()``: the per-layer metrics and whether pass 2 replayed
    the feature cache."""
    metric = callback_metric(model, device)
    run = analyse_split(model, loader, {"train": (metric, 1)}, device=device, cache_bytes=cache_bytes)
    return metric.compute(), run.cached


def cache_bytes_needed(model: LayeredNet, case: Case, device: torch.device) -> int:
    """Bytes of every batch's embeddings and logits, from one forward pass (eval mode) on one sample."""
    was_training = model.training
    with torch.no_grad():
        logits, embeddings = model.eval()(torch.zeros(1, *case.input_shape, device=device))
    model.train(was_training)
    per_sample = sum(t.numel() * t.element_size() for t in (logits, *embeddings.values()))
    return per_sample * case.num_samples


def fit_in_memory(case: Case, model: LayeredNet, device: torch.device) -> Case:
    """``case`` with its sample count cut (to whole analysis batches) so that the feature cache and the
    inputs take at most half the free memory of ``device``."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    per_sample = cache_bytes_needed(model, case, device) // case.num_samples + 4 * math.prod(case.input_shape)
    fits = int(0.5 * free // per_sample) // case.analysis_batch_size * case.analysis_batch_size
    return dataclasses.replace(case, num_samples=max(case.analysis_batch_size, min(case.num_samples, fits)))


# ---------------------------------------------------------------------------------------- training
class EpochClock(pl.Callback):
    """Records ``perf_counter`` (after a CUDA synchronisation) at each training epoch's start and at
    the end of training, so ``epoch_seconds[k] = start[k + 1] - start[k]`` covers everything Lightning
    does per epoch and nothing of its start-up."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[float] = []

    def _stamp(self, pl_module: pl.LightningModule) -> None:
        synchronize(pl_module.device)
        self.stamps.append(time.perf_counter())

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stamp(pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stamp(pl_module)

    @property
    def epoch_seconds(self) -> list[float]:
        return [end - start for start, end in zip(self.stamps, self.stamps[1:], strict=False)]


def train_loader(case: Case, inputs: Tensor, labels: Tensor) -> DataLoader:
    """``(x, y)`` batches in one seeded random order, the same every epoch.

    Not ``shuffle=True``: Lightning draws one more permutation from the sampler's generator than a plain
    loop does when the batch size divides ``N``, so the two loops would see different second epochs.
    """
    order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(SEED))
    dataset = LabelledTensorDataset(inputs[order], (labels[order],))
    return DataLoader(dataset, batch_size=case.train_batch_size, shuffle=False)


def lightning_epoch(
    initial: LayeredNet, case: Case, inputs: Tensor, labels: Tensor, device: torch.device
) -> tuple[float, LayeredNet]:
    """Seconds of the second of two ``Trainer.fit`` epochs from ``initial``'s weights, and the model."""
    model = copy.deepcopy(initial)
    module = NCModule(
        model, optimizer=OptimizerConfig(lr=LEARNING_RATE, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    )
    clock = EpochClock()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator=device.type,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[clock],
    )
    trainer.fit(module, train_dataloaders=train_loader(case, inputs, labels))
    return clock.epoch_seconds[1], model


def hand_epoch(
    initial: LayeredNet, case: Case, inputs: Tensor, labels: Tensor, device: torch.device
) -> tuple[float, LayeredNet]:
    """The same two epochs in plain PyTorch: seconds of the second, and the model.

    Per step: forward, cross-entropy, ``zero_grad``, backward, SGD step; per epoch the summed loss and
    correct count stay on the device (what ``NCModule``'s epoch-level logging accumulates).
    """
    model = copy.deepcopy(initial).train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )
    loader = train_loader(case, inputs, labels)

    def epoch() -> None:
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits, _ = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * y.shape[0]
            correct += (logits.argmax(dim=1) == y).sum()

    epoch()
    return timed(epoch, device)[1], model


def max_weight_difference(first: nn.Module, second: nn.Module) -> float:
    """Largest absolute difference between the two models' parameters and buffers."""
    pairs = zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    return max(float((a.double() - b.double()).abs().max()) for a, b in pairs if a.is_floating_point())


# ---------------------------------------------------------------------------------------- the run
@dataclass(frozen=True)
class Ratio:
    """One measured ratio: median seconds of ours and of the baseline, median per-repetition ratio."""

    case: str
    name: str
    ours_seconds: float
    baseline_seconds: float
    ratio: float

    @property
    def target(self) -> float:
        return TARGETS[self.name]

    def __str__(self) -> str:
        verdict = "PASS" if self.ratio <= self.target else "MISS"
        return (
            f"{self.case:<26} {self.name:<28} {self.ours_seconds:9.3f} {self.baseline_seconds:10.3f} "
            f"{self.ratio:7.3f} {self.target:7.2f}  {verdict}"
        )


HEADER = f"{'case':<26} {'ratio':<28} {'ours s':>9} {'baseline s':>10} {'ratio':>7} {'target':>7}  verdict"


def median_ratio(case: str, name: str, ours: list[float], baseline: list[float]) -> Ratio:
    ratios = [a / b for a, b in zip(ours, baseline, strict=True)]
    return Ratio(case, name, statistics.median(ours), statistics.median(baseline), statistics.median(ratios))


def measure(case: Case, device: torch.device, repeats: int) -> tuple[list[Ratio], str]:
    """Time the five runs of ``case`` ``repeats`` times, interleaved; the three ratios and a line of
    checks (cache used, cached == uncached metrics, Lightning == hand-loop weights)."""
    torch.manual_seed(SEED)
    initial = case.build().to(device)
    case = fit_in_memory(case, initial, device)
    generator = torch.Generator().manual_seed(SEED)
    inputs = torch.randn(case.num_samples, *case.input_shape, generator=generator)
    labels = torch.arange(case.num_samples) % case.num_classes
    model = copy.deepcopy(initial).eval()
    analysis_loader = DataLoader(
        LabelledTensorDataset(inputs, (labels, labels)), batch_size=case.analysis_batch_size, shuffle=False
    )
    budget = cache_bytes_needed(model, case, device)

    nc_analysis(model, analysis_loader, device, cache_bytes=0)  # warm-up: allocations, kernels
    times: dict[str, list[float]] = {key: [] for key in ("infer", "nc", "cached", "lightning", "hand")}
    worst_metric, worst_weight = 0.0, 0.0
    for _ in range(repeats):
        times["infer"].append(timed(lambda: plain_inference(model, analysis_loader, device), device)[1])
        results: dict[bool, dict[str, dict[str, float]]] = {}
        for key, cache_bytes in (("nc", 0), ("cached", budget)):
            (metrics, cached), seconds = timed(
                partial(nc_analysis, model, analysis_loader, device, cache_bytes), device
            )
            times[key].append(seconds)
            if cached != (cache_bytes > 0):
                raise RuntimeError(f"{case.name}: cache_bytes={cache_bytes} but cached={cached}")
            results[cached] = metrics
        worst_metric = max(worst_metric, relative_difference(results[True], results[False]))
        seconds, trained = lightning_epoch(initial, case, inputs, labels, device)
        times["lightning"].append(seconds)
        seconds, hand_trained = hand_epoch(initial, case, inputs, labels, device)
        times["hand"].append(seconds)
        worst_weight = max(worst_weight, max_weight_difference(trained, hand_trained))
    if device.type == "cpu" and worst_weight > WEIGHT_TOLERANCE:  # cuDNN may be non-deterministic
        raise RuntimeError(f"{case.name}: Lightning and the hand loop end {worst_weight:.1e} apart")
    ratios = [
        median_ratio(case.name, "analysis / inference", times["nc"], times["infer"]),
        median_ratio(case.name, "cached analysis / inference", times["cached"], times["infer"]),
        median_ratio(case.name, "Lightning / hand loop", times["lightning"], times["hand"]),
    ]
    checks = (
        f"{case.name}: N={case.num_samples}, cache {budget / 2**20:.0f} MiB, cached vs uncached metrics "
        f"max rel diff {worst_metric:.1e}, Lightning vs hand-loop weights max abs diff {worst_weight:.1e}"
    )
    return ratios, checks


def relative_difference(got: dict[str, dict[str, float]], expected: dict[str, dict[str, float]]) -> float:
    """Largest relative difference over every layer's metrics (NaN-safe: equal NaNs count as 0)."""
    worst = 0.0
    for layer, values in expected.items():
        for name, value in values.items():
            other = got[layer][name]
            if value != value and other != other:
                continue
            worst = max(worst, abs(other - value) / max(abs(value), 1e-300))
    return worst


def main(quick: bool = False, device: str = "cpu") -> None:
    """Print, per case, the three ratios (median over interleaved repetitions) against their targets."""
    target = torch.device(device)
    repeats = 3 if quick or device == "cuda" else 5
    print(
        f"device={device} threads={torch.get_num_threads()} repeats={repeats} (interleaved); "
        "times are medians; ratio = median of per-repetition ratios"
    )
    print(
        "Lightning / hand loop: seconds of epoch 2 of 2 (start of epoch 2 to end of training), "
        "so Trainer start-up and the warm-up epoch are excluded"
    )
    print(HEADER)
    print("-" * len(HEADER))
    notes = []
    lightning_log = logging.getLogger("pytorch_lightning")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)  # no "GPU available" banners between the rows
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="pytorch_lightning")
            for case in cases(quick, device):
                ratios, checks = measure(case, target, repeats)
                for ratio in ratios:
                    print(ratio, flush=True)
                notes.append(checks)
    finally:
        lightning_log.setLevel(level)
    for note in notes:
        print(note)
