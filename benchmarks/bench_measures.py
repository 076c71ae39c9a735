"""Cost of the registry's extra metrics (``nc.measures``, ``docs/metrics.md``).

* **In the default analysis**: ``analyse_split`` + ``compute()`` over the train split of MLP-6-512 on
  mnist-shaped inputs (C = 10, batches of 128), the metric built as ``NeuralCollapseCallback`` builds it,
  with no extra metric, with ``ncdepth-train``'s default ones (``registry.DEFAULT_EXTRA``) and with those
  plus ``probe_acc``; repetitions interleaved, each ratio the median of the per-repetition ratios to the run
  with none (target for the default: <= 1.10).
* **Per measure**: the median time of each default measure on the last layer's class means (once per
  layer and analysis), also divided by the batches of an analysis (ms per layer-batch); the probe's
  per-batch moment and prediction and its once-per-layer fit; ``nc5_ood_dev``: its cosine (once per layer)
  and the first pass over out-of-distribution data that gives ``mu_G^ood`` (the ``ood_reference`` metric),
  as a share of the analysis.
* **The probe on a random projection** (``d > PROBE_MAX_DIM``): per layer-batch, the ``B x d x k`` projection,
  the ``k x k`` moment and the prediction, and the fit, at ``d = 4,096`` and ``25,600`` (``k = 1,024``).
* **At vocabulary scale**: the generalized measures (``nc5_ood_dev`` included) of ``C = 50,257`` random class
  means in ``d = 768``
  (``--quick``: ``C = 8,192``), nothing ``C x C`` held.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from ncdepth.metrics import NeuralCollapse
from ncdepth.metrics import generalized as G
from ncdepth.metrics import probe as P
from ncdepth.metrics.registry import DEFAULT_EXTRA
from ncdepth.metrics.stats import class_sums
from ncdepth.models import MLP
from ncdepth.training.analysis import analyse_split
from ncdepth.training.layer_weights import linear_inputs

NUM_CLASSES, BATCH, WIDTH = 10, 128, 512


def median_ms(function: Callable[[], object], repetitions: int) -> float:
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def probe_costs(h: Tensor, projection: Tensor | None, repetitions: int) -> tuple[float, float, float]:
    """Median ms of the probe's per-batch moment and prediction on the ``(B, d)`` batch ``h`` (probed on
    ``projection`` when given) and of its once-per-layer fit."""
    where, size = h.device, h.shape[1] if projection is None else projection.shape[0]
    moment = torch.zeros(size, size, dtype=torch.float64, device=where)
    accumulate = median_ms(lambda: P.add_moment(moment, h, projection), repetitions)
    counts, sums = class_sums(h, torch.arange(h.shape[0], device=where) % NUM_CLASSES, NUM_CLASSES)
    ridge = moment + torch.eye(size, dtype=torch.float64, device=where)
    fit = median_ms(lambda: P.fit_probe(counts, sums, ridge, projection), max(repetitions // 4, 5))
    probe = P.fit_probe(counts, sums, ridge, projection)
    return accumulate, median_ms(lambda: probe.predict(h), repetitions), fit


def projected_probe(dim: int, where: torch.device) -> None:
    """Print the per-batch and per-layer cost of ``probe_acc`` on a ``d = dim`` layer, which it probes on a
    fixed random projection to ``k = PROBE_MAX_DIM`` dimensions."""
    projection = P.make_projection(dim, P.PROBE_MAX_DIM, P.PROBE_SEED, where)
    accumulate, predict, fit = probe_costs(torch.randn(BATCH, dim, device=where), projection, 20)
    print(
        f"  probe_acc, d = {dim:,} projected to k = {P.PROBE_MAX_DIM}: moment {accumulate:.2f} + "
        f"prediction {predict:.2f} ms per layer-batch (B = {BATCH}); fit {fit:.1f} ms per layer"
    )


def main(quick: bool = False, device: str = "cpu") -> None:
    torch.manual_seed(0)
    where = torch.device(device)
    samples = 2_000 if quick else 5_000
    model = MLP(input_shape=(1, 28, 28), num_classes=NUM_CLASSES, depth=6, width=WIDTH).eval().to(where)
    inputs = torch.randn(samples, 1, 28, 28)
    loader = DataLoader(TensorDataset(inputs, torch.arange(samples) % NUM_CLASSES), batch_size=BATCH)

    def metric(measures: tuple[str, ...]) -> NeuralCollapse:
        return NeuralCollapse(
            NUM_CLASSES,
            classifier_layer=model.classifier_layer,
            classifier_weight=lambda: model.classifier.weight.detach(),
            measures=measures,
            layer_weights=linear_inputs(model),
        ).to(where)

    def analysis(measures: tuple[str, ...]) -> float:
        measured = metric(measures)
        start = time.perf_counter()
        analyse_split(model, loader, {"train": (measured, 1)}, device=where)
        measured.compute()
        if where.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    configs = {"none": (), "default": DEFAULT_EXTRA, "default + probe_acc": (*DEFAULT_EXTRA, "probe_acc")}
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(3 if quick else 7):
        for name, measures in configs.items():
            times[name].append(analysis(measures))
    print(
        f"MLP-6-{WIDTH}, N = {samples}, C = {NUM_CLASSES}, batches of {BATCH} ({len(loader)} batches), 6 layers"
    )
    for name in configs:
        ratio = statistics.median(a / b for a, b in zip(times[name], times["none"], strict=True))
        print(
            f"  analysis with {name:20s} {1e3 * statistics.median(times[name]):8.1f} ms   / none: {ratio:.3f}"
        )

    reference = metric(())
    with torch.no_grad():
        for x, y in loader:
            reference.update(model(x.to(where))[1], y.to(where))
    reference.next_phase()
    layer = model.layer_names[-1]
    means, counts = reference.class_means()[layer], reference.class_counts()
    weight = model.classifier.weight.detach()
    batches = len(loader)
    print(
        f"per measure, last layer (d = {WIDTH}): ms per layer per analysis, and per layer-batch (/{batches})"
    )
    for name in DEFAULT_EXTRA:
        cost = median_ms(
            lambda name=name: G.generalized_metrics(
                means, counts, (name,), nc1=1.0, weight=weight, layer_weight=weight
            ),
            50,
        )
        print(f"  {name:14s} {cost:8.3f} ms   {cost / batches:.4f} ms per layer-batch")
    with torch.no_grad():
        h = model(next(iter(loader))[0].to(where))[1][layer].float()
    accumulate, predict, fit = probe_costs(h, None, 100)
    print(
        f"  probe_acc      moment {accumulate:.3f} + prediction {predict:.3f} ms per layer-batch "
        f"(B = {BATCH}); fit {fit:.2f} ms per layer"
    )

    ood = torch.randn(samples, 1, 28, 28) + 3.0  # shifted inputs: out-of-distribution data
    ood_loader = DataLoader(TensorDataset(ood, torch.arange(samples) % NUM_CLASSES), batch_size=BATCH)

    def ood_first_pass() -> None:
        ood_metric = NeuralCollapse(NUM_CLASSES).to(where)  # its global means are all nc5_ood_dev reads
        with torch.no_grad():
            for x, y in ood_loader:
                ood_metric.update(model(x.to(where))[1], y.to(where))
        ood_metric.next_phase()

    first_pass, whole = [], []
    for _ in range(3 if quick else 7):
        first_pass.append(median_ms(ood_first_pass, 1))
        whole.append(1e3 * analysis(()))
    ood_mean = means.nan_to_num().mean(0) + 1.0
    cosine = median_ms(
        lambda: G.generalized_metrics(means, counts, ("nc5_ood_dev",), nc1=1.0, ood_mean=ood_mean), 50
    )
    print(
        f"  nc5_ood_dev    cosine {cosine:.3f} ms per layer; the OoD first pass ({len(ood_loader)} batches, "
        f"6 layers) {statistics.median(first_pass):.1f} ms = "
        f"{statistics.median(a / b for a, b in zip(first_pass, whole, strict=True)):.2f} of the analysis"
    )

    for wide in (4_096, 25_600):
        projected_probe(wide, where)

    classes, dim = (8_192 if quick else 50_257), 768
    generator = torch.Generator().manual_seed(0)
    vocabulary = torch.randn(classes, dim, generator=generator, dtype=torch.float64).to(where)
    ones = torch.ones(classes, dtype=torch.float64, device=where)
    ood_mean = torch.randn(dim, generator=generator, dtype=torch.float64).to(where)
    measured = (
        ("nc2g_dist", "nc2g_log"),
        ("erank_means",),
        ("nc3u_uni_dual",),
        ("w_align",),
        ("nc5_ood_dev",),
    )
    for names in measured:
        start = time.perf_counter()
        G.generalized_metrics(
            vocabulary,
            ones,
            names,
            nc1=1.0,
            weight=vocabulary,
            layer_weight=vocabulary[:dim],
            ood_mean=ood_mean,
        )
        print(f"  C = {classes:,}, d = {dim}: {' + '.join(names)} {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
