"""Standalone neural-collapse metrics: ``import ncdepth.metrics`` needs only torch and torchmetrics.

* :mod:`ncdepth.metrics.functional` — pure functions (``nc1``, ``cdnv``, ``ncc_acc``, ... and
  ``neural_collapse``, all of them at once);
* :class:`NeuralCollapse` — the streaming, DDP-correct torchmetrics ``Metric`` for many layers at once;
* :class:`LayerTap` — ``{layer: (B, d)}`` embeddings of any model's named modules, by forward hooks;
* :func:`effective_depth` — Galanti et al.'s effective depth from per-layer NCC train errors;
* :mod:`ncdepth.metrics.registry` — every metric name, its formula, section and needs; the extra metrics
  (:mod:`ncdepth.metrics.generalized`, :mod:`ncdepth.metrics.probe`) are asked for by name.

``docs/metrics.md`` is the contract: every formula, the conventions, and how they differ from other
implementations.
"""

from ncdepth.metrics import functional
from ncdepth.metrics.collapse import NeuralCollapse
from ncdepth.metrics.functional import METRIC_NAMES, effective_depth, neural_collapse
from ncdepth.metrics.tap import LayerTap, tokens_as_samples
from ncdepth.metrics.validation import ConstantFeaturesWarning, SingleSampleClassesWarning

__all__ = [
    "METRIC_NAMES",
    "ConstantFeaturesWarning",
    "LayerTap",
    "NeuralCollapse",
    "SingleSampleClassesWarning",
    "effective_depth",
    "functional",
    "neural_collapse",
    "tokens_as_samples",
]
