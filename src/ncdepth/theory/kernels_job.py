"""One ``ncdepth-kernels`` job: kernels vs. a trained two-layer net on Gaussian data (Kothapalli &
Tirer 2024).

One job draws the Gaussian set of :func:`ncdepth.theory.gaussian_data.gaussian_classes` (``n``
samples in ``d0`` dimensions, ``class_sizes``) and measures the within-class variability collapse
``NC1 = Tr(Sigma_W) / Tr(Sigma_B)`` (``nc1_trace_ratio``, docs/metrics.md) of

* ``data``: the inputs ``X`` themselves;
* ``nngp_<act>``, ``ntk_<act>``: the features of the limiting kernels, through
  :func:`ncdepth.theory.kernels.kernel_nc1` of the Gram matrix, one pair per ``kernel.activations``;
* ``adaptive``: the equation-of-state kernel of a two-layer erf net of width ``adaptive.width``
  (:func:`ncdepth.theory.adaptive.adaptive_kernel`), with its convergence record (``converged``
  1/0, total ``iterations``, final ``residual``); an unconverged solve is recorded, never fatal;
* ``fcn_init`` and ``fcn``: the hidden layer ``phi(W1 x + b1)`` of ``FCN2`` (``model.*``) at
  initialisation and after ``train.steps`` steps of full-batch ``torch.optim.SGD`` on
  ``mean_i (f(x_i) - t_i)^2`` against the scalar class targets ``t``, in float64; ``fcn`` also
  reports the ``train_loss`` reached (NC1 is NaN if training diverged).

The data and the network's initialisation get independent seeds spawned from ``seed``
(``numpy.random.SeedSequence``). :func:`write_outputs` fills the run directory with ``kernels.csv``
(tidy: :data:`ncdepth.rundir.KERNELS_COLUMNS`, class sizes written as ``"768/1280"``, ``\\n``
line endings), which
:mod:`ncdepth.report.kernels` reads, and ``summary.json`` (config, every value, the adaptive
solver's annealing steps, timings). The settings come from
:func:`ncdepth.theory.kernels_job_config.parse_config`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ncdepth.metrics.functional import nc1_trace_ratio
from ncdepth.models import FCN2
from ncdepth.rundir import KERNELS_COLUMNS, KERNELS_FILE, KERNELS_NC1, SUMMARY_FILE, atomic_write
from ncdepth.theory.adaptive import adaptive_kernel
from ncdepth.theory.gaussian_data import gaussian_classes
from ncdepth.theory.kernels import kernel_nc1, nngp, ntk
from ncdepth.theory.kernels_job_config import KernelJobConfig, TrainSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measurement:
    """One tidy row: ``metric`` of ``quantity`` (e.g. ``nc1_trace_ratio`` of ``ntk_relu``)."""

    quantity: str
    metric: str
    value: float


@dataclass(frozen=True)
class JobResult:
    """The rows of ``kernels.csv``, the adaptive solver's annealing steps, and seconds per stage."""

    measurements: list[Measurement]
    anneal_steps: list[dict[str, Any]]
    timings: dict[str, float]


def spawn_seeds(seed: int) -> tuple[int, int]:
    """Independent 32-bit seeds for the data and for the network, both determined by ``seed``."""
    data, network = np.random.SeedSequence(seed).spawn(2)
    return int(data.generate_state(1)[0]), int(network.generate_state(1)[0])


def build_network(config: KernelJobConfig, seed: int) -> FCN2:
    """``FCN2(**model)`` with a scalar output, initialised from ``seed``, in float64. Raises the
    constructor's ``ValueError`` (naming ``model.*``) for a bad model setting."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = FCN2(input_shape=(config.data.d0,), num_classes=1, **config.model)
    return network.to(torch.float64)


def train_full_batch(network: FCN2, x: Tensor, targets: Tensor, settings: TrainSettings) -> float:
    """``settings.steps`` steps of ``torch.optim.SGD`` on the full batch, loss
    ``mean_i (f(x_i) - t_i)^2``; returns the loss after the last step (``inf``/``nan`` if diverged)."""
    optimizer = torch.optim.SGD(network.parameters(), lr=settings.lr, momentum=settings.momentum)
    network.train()
    for _ in range(settings.steps):
        optimizer.zero_grad(set_to_none=True)
        outputs, _ = network(x)
        torch.nn.functional.mse_loss(outputs[:, 0], targets).backward()
        optimizer.step()
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(network(x)[0][:, 0], targets))


def hidden_nc1(network: FCN2, x: Tensor, labels: Tensor, num_classes: int) -> float:
    """``nc1_trace_ratio`` of the hidden post-activations; NaN when they are not finite."""
    with torch.no_grad():
        hidden = network(x)[1]["hidden"]
    if not bool(torch.isfinite(hidden).all()):
        return math.nan
    return nc1_trace_ratio(hidden, labels, num_classes)


def run_job(config: KernelJobConfig, network: FCN2, data_seed: int) -> JobResult:
    """Draw the data and measure every quantity of the module docstring; trains ``network``."""
    data, kernel = config.data, config.kernel
    x, labels, targets = gaussian_classes(
        list(data.class_sizes), data.d0, seed=data_seed, num_classes=data.num_classes
    )
    rows = [Measurement("data", KERNELS_NC1, nc1_trace_ratio(x, labels, data.num_classes))]
    timings: dict[str, float] = {}

    start = time.perf_counter()
    for activation in kernel.activations:
        for name, limit in (("nngp", nngp), ("ntk", ntk)):
            gram = limit(x, activation=activation, weight_var=kernel.weight_var, bias_var=kernel.bias_var)
            rows.append(Measurement(f"{name}_{activation}", KERNELS_NC1, kernel_nc1(gram, labels)))
    timings["limiting_kernels"] = time.perf_counter() - start

    start = time.perf_counter()
    adaptive = adaptive_kernel(x, targets, **asdict(config.adaptive))
    timings["adaptive"] = time.perf_counter() - start
    final = adaptive.steps[-1]
    if not adaptive.converged:
        log.warning(
            "adaptive kernel did not converge at width %g: residual %.3g", final.width, final.residual
        )
    rows += [
        Measurement("adaptive", KERNELS_NC1, kernel_nc1(adaptive.kernel, labels)),
        Measurement("adaptive", "converged", float(adaptive.converged)),
        Measurement("adaptive", "iterations", float(sum(step.iterations for step in adaptive.steps))),
        Measurement("adaptive", "residual", final.residual),
    ]

    start = time.perf_counter()
    rows.append(Measurement("fcn_init", KERNELS_NC1, hidden_nc1(network, x, labels, data.num_classes)))
    loss = train_full_batch(network, x, targets, config.train)
    rows += [
        Measurement("fcn", KERNELS_NC1, hidden_nc1(network, x, labels, data.num_classes)),
        Measurement("fcn", "train_loss", loss),
    ]
    timings["fcn"] = time.perf_counter() - start
    return JobResult(rows, [asdict(step) for step in adaptive.steps], timings)


def write_outputs(
    run_dir: Path, resolved: Mapping[str, Any], config: KernelJobConfig, result: JobResult
) -> None:
    """``kernels.csv`` and ``summary.json`` into ``run_dir`` (module docstring); ``resolved`` is the
    config as plain containers, written as the summary's ``config``."""
    data = config.data
    swept = (data.n, data.d0, data.num_classes, "/".join(map(str, data.class_sizes)), data.seed)
    table = io.StringIO(newline="")
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(KERNELS_COLUMNS)
    writer.writerows((*swept, row.quantity, row.metric, repr(row.value)) for row in result.measurements)
    atomic_write(run_dir / KERNELS_FILE, table.getvalue())
    values: dict[str, dict[str, float]] = {}
    for row in result.measurements:
        values.setdefault(row.quantity, {})[row.metric] = row.value
    summary = {
        "config": resolved,
        "class_sizes": list(data.class_sizes),
        "values": values,
        "adaptive_steps": result.anneal_steps,
        "timings": result.timings,
    }
    atomic_write(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2, allow_nan=True) + "\n")
