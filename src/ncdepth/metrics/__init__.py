"""Standalone neural-collapse metrics: ``import ncdepth.metrics`` needs only torch and torchmetrics.

* :mod:`ncdepth.metrics.functional` — pure functions (``nc1``, ``cdnv``, ``ncc_acc``, ... and
  ``neural_collapse``, all of them at once);
* :class:`NeuralCollapse` — the streaming, DDP-correct torchmetrics ``Metric`` for many layers at once;
* :func:`effective_depth` — Galanti et al.'s effective depth from per-layer NCC train errors.
"""

from ncdepth.metrics import functional
from ncdepth.metrics.collapse import NeuralCollapse
from ncdepth.metrics.functional import METRIC_NAMES, effective_depth, neural_collapse

__all__ = ["METRIC_NAMES", "NeuralCollapse", "effective_depth", "functional", "neural_collapse"]
