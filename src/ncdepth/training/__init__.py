"""Training: the LightningModule, the neural-collapse callback and the run's result files.

* :class:`NCModule` — trains any ncdepth model with CE or MSE loss, feature decay, SGD/Adam/AdamW;
* :class:`NeuralCollapseCallback` — per-layer NC metrics during training, effective depth;
* :class:`RandomStateCheckpoint` — global random states in checkpoints, for exact resumes;
* :mod:`ncdepth.training.results` — ``metrics.csv``, ``summary.json``, figures, the layer table;
* :mod:`ncdepth.training.config` — validated settings of all of the above.
"""

from ncdepth.training.callback import NeuralCollapseCallback
from ncdepth.training.config import AnalysisConfig, LossConfig, OptimizerConfig, SchedulerConfig
from ncdepth.training.module import NCModule
from ncdepth.training.random_state import RandomStateCheckpoint

__all__ = [
    "AnalysisConfig",
    "LossConfig",
    "NCModule",
    "NeuralCollapseCallback",
    "OptimizerConfig",
    "RandomStateCheckpoint",
    "SchedulerConfig",
]
