"""Geometry of a trained network's deep linear head beside the deep-linear UFM (Dang et al. 2023).

A model with a deep linear head (``model.depth_linear = L > 0``, see ``ncdepth.models.base``)
computes ``logits = W_c A_L ... A_1 h_0 (+ b)`` from the backbone output ``h_0`` with bias-free
``A_j``. Head layer ``l = 0..L`` is the input of the ``M_l = L - l + 1`` maps after it (``l = 0``:
the last backbone layer; ``l >= 1``: ``linear{l}``). There

    W_l = W_c A_L ... A_{l+1}   (C x d_l),      Hbar_l = [mu_1 ... mu_C]   (d_l x C, train split),

and, with ``R`` the reference frame below, the metrics logged for layer ``l`` (split ``train``) are

    geom_wwt  = frame_distance(W_l W_l^T, R_WWT)        geom_hth = frame_distance(Hbar^T Hbar, R_HTH)
    geom_wh   = frame_distance(W_l Hbar, R_WH)          (shape distances in [0, 2], 0 at the frame)
    geom_alignment   = mean_k cos(w_k, hbar_k)          (1 at every UFM optimum; NaN classes skipped)
    minority_w_ratio = mean_{k minority} ||w_k|| / mean_{j majority} ||w_j||       (imbalanced only)
    minority_h_ratio = mean_{k minority} ||hbar_k|| / mean_{j majority} ||hbar_j||
    minority_w_ratio_pred, minority_h_ratio_pred: the same ratios of the ``closed_form`` optimum
                       (with the general orthogonal frame only; 0 where it predicts minority collapse)

where the majority are the classes of the largest train count and the minority those of the
smallest (Fang et al. 2021). With imbalanced classes, the classifier's input (``l = L``, where the
mapping below is exact) also gets every class's own ratio, and its prediction when there is one:

    w_norm_ratio@k = ||w_k|| / mean_{j majority} ||w_j||,    h_norm_ratio@k (of ||hbar_k||),
    w_norm_ratio_pred@k, h_norm_ratio_pred@k

Reference frame ``R``, the optimum of the UFM that the run's objective corresponds to:

* balanced classes, MSE, no classifier bias: the orthogonal frame ``I`` for all three matrices;
* balanced classes with a classifier bias, or cross-entropy: the simplex ETF ``I - 11^T/C``, with
  class means centred on the sample-weighted global mean (the bias absorbs ``W_l mu_G``); for
  cross-entropy the ETF is a critical point, not a proven optimum;
* imbalanced classes, MSE, no bias, every decay > 0 and ``optimizer.name`` sgd or adam: the
  general orthogonal frame of ``closed_form(n, M_l, lambda, lambda_H)``, one reference per matrix;
* otherwise (imbalanced with a bias or cross-entropy, a zero decay, AdamW's decoupled decay, or
  every class predicted collapsed) there is no prediction and ``geom_wwt/hth/wh`` are not logged.

The UFM parameters come from the run (:class:`HeadObjective`). ``NCModule``'s MSE objective over
the ``N`` train samples is

    (1/(N C)) ||Z - s Y||_F^2 + (gamma_H / 2N) ||H_L||_F^2 + sum_j (omega_j / 2) ||A_j||_F^2

with ``s = loss.mse_scale``, ``gamma_H = loss.feature_decay`` and ``omega_j =
optimizer.weight_decay`` (``optimizer.classifier_weight_decay`` for ``W_c``); SGD and Adam add
``omega theta`` to the gradient, the gradient of ``(omega/2) ||theta||^2``. Times ``C/2``, and with
the targets brought back to ``Y`` by scaling each of the ``M + 1`` factors by ``s^{1/(M+1)}``, it is
the UFM objective of ``ncdepth.theory.ufm`` with

    lambda_m = (C/2) omega_m s^{-2M/(M+1)},      lambda_H = (C / 2N) gamma_H s^{-2M/(M+1)},

``n`` the train class counts and ``M = M_l``. The run penalises the classifier's input ``h_L``
only, so this is exact at ``l = L``; for ``l < L`` it is Dang et al.'s setting (the penalty on the
head's input) and an approximation of the run's. A head layer whose analysed dimension differs
from ``W_l``'s columns (``nc.pool=avg`` on a conv map) is skipped.

Every tensor made here (the reference frames, the ``closed_form`` optimum, the class masks) is on the
device of the class means, the metric's; the model's weights are brought there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ncdepth.metrics import NeuralCollapse
from ncdepth.theory.geometry import (
    alignment,
    frame_distances,
    general_frame_distances,
    minority_collapse,
    orthogonal_frame,
    simplex_etf,
)
from ncdepth.theory.ufm import closed_form
from ncdepth.training.module import NCModule

COUPLED_DECAY_OPTIMIZERS = ("sgd", "adam")
"""Optimizers whose weight decay is the gradient of an L2 penalty (AdamW's is decoupled)."""
_GRAM_METRICS = {"WWT": "geom_wwt", "HTH": "geom_hth", "WH": "geom_wh"}
_NORMS = {"classifier_norm_ratio": "w", "mean_norm_ratio": "h", "WWT": "w", "HTH": "h"}
"""The letter naming the norm of each ratio of ``minority_collapse`` and each Gram matrix."""


@dataclass(frozen=True)
class HeadObjective:
    """The parts of a run's objective that the UFM prediction needs (module docstring).

    ``weight_decays`` are ``omega`` of ``A_1 .. A_L`` then of the classifier ``W_c``.
    """

    loss: str
    mse_scale: float
    feature_decay: float
    weight_decays: tuple[float, ...]
    classifier_bias: bool
    coupled_decay: bool

    @classmethod
    def of(cls, module: NCModule) -> HeadObjective:
        """Read the loss, decays and classifier bias of ``module`` and its model."""
        model = module.model
        optimizer = module.optimizer_config
        head = (float(optimizer.weight_decay),) * model.depth_linear
        return cls(
            loss=module.loss_config.name,
            mse_scale=float(module.loss_config.mse_scale),
            feature_decay=float(module.loss_config.feature_decay),
            weight_decays=(*head, optimizer.effective_classifier_weight_decay),
            classifier_bias=model.classifier.bias is not None,
            coupled_decay=optimizer.name in COUPLED_DECAY_OPTIMIZERS,
        )

    def ufm_decays(self, depth: int, num_classes: int, num_samples: int) -> tuple[list[float], float]:
        """``([lambda_1 .. lambda_M], lambda_H)`` of the UFM on the last ``depth`` maps."""
        scale = self.mse_scale ** (-2 * depth / (depth + 1))
        weights = [num_classes / 2 * omega * scale for omega in self.weight_decays[-depth:]]
        return weights, num_classes / (2 * num_samples) * self.feature_decay * scale


def head_geometry(model: nn.Module, metric: NeuralCollapse, module: NCModule) -> dict[str, dict[str, float]]:
    """``{layer: {metric: value}}`` for the head layers ``l = 0..L`` of ``model`` (module
    docstring), from ``metric``, the train split's ``NeuralCollapse`` after its first pass; ``{}``
    when the model has no deep linear head or the run is not an ``NCModule``'s."""
    depth_linear = getattr(model, "depth_linear", 0)
    if depth_linear == 0 or not isinstance(module, NCModule):
        return {}
    objective = HeadObjective.of(module)
    counts = metric.class_counts()
    means = metric.class_means()
    device = counts.device
    maps = [layer.weight.detach().to(device, torch.float64) for layer in model.linear_head]
    weight = model.classifier.weight.detach().to(device, torch.float64)
    results = {}
    for index, layer in enumerate(reversed(model.layer_names[-(depth_linear + 1) :])):
        class_means = means[layer].T
        if class_means.shape[0] == weight.shape[1]:
            results[layer] = layer_geometry(weight, class_means, counts, index + 1, objective)
        if index < depth_linear:
            weight = weight @ maps[depth_linear - 1 - index]
    return dict(reversed(results.items()))


def layer_geometry(
    weight: Tensor, class_means: Tensor, counts: Tensor, depth: int, objective: HeadObjective
) -> dict[str, float]:
    """The metrics of one head layer: ``weight`` ``W_l`` ``(C, d)``, uncentred ``class_means``
    ``(d, C)``, train ``counts`` ``(C,)``, ``depth`` ``M_l`` maps from the layer to the logits; all on
    one device, where every tensor made here goes too."""
    device = class_means.device
    sizes = tuple(int(n) for n in counts.tolist())
    balanced = len(set(sizes)) == 1
    etf = balanced and (objective.classifier_bias or objective.loss == "ce")
    if etf:
        global_mean = class_means @ counts.to(class_means) / counts.sum()
        class_means = class_means - global_mean[:, None]
    values = {"geom_alignment": float(alignment(weight, class_means).nanmean())}
    if balanced:
        frame = simplex_etf(len(sizes), device) if etf else orthogonal_frame(len(sizes), device)
        values.update(_named(frame_distances(weight, class_means, frame)))
        return values
    for name, ratios in minority_collapse(weight, class_means, sizes).items():
        values.update(_norm_ratios(_NORMS[name], ratios, sizes, per_class=depth == 1))
    reference = _general_frame(sizes, depth, objective, device)
    if reference is not None:
        values.update(_named(general_frame_distances(weight, class_means, reference)))
        for gram in ("WWT", "HTH"):
            norms = reference[gram].diagonal().sqrt()
            ratios = norms / norms[_majority(sizes, device)].mean()
            values.update(_norm_ratios(_NORMS[gram], ratios, sizes, per_class=depth == 1, suffix="_pred"))
    return values


def _norm_ratios(
    norm: str, ratios: Tensor, sizes: tuple[int, ...], per_class: bool, suffix: str = ""
) -> dict[str, float]:
    """``minority_{norm}_ratio{suffix}``, the mean of ``ratios`` over the minority, and with
    ``per_class`` every class's ``{norm}_norm_ratio{suffix}@k`` (module docstring)."""
    values = {f"minority_{norm}_ratio{suffix}": _minority_mean(ratios, sizes)}
    if per_class:
        values.update({f"{norm}_norm_ratio{suffix}@{k}": ratio for k, ratio in enumerate(ratios.tolist())})
    return values


def _general_frame(
    sizes: tuple[int, ...], depth: int, objective: HeadObjective, device: torch.device
) -> dict[str, Tensor | float] | None:
    """``closed_form`` of the UFM that the run maps to (on ``device``), or ``None`` without a
    prediction."""
    if objective.loss != "mse" or objective.classifier_bias or not objective.coupled_decay:
        return None
    weight_decays, feature_decay = objective.ufm_decays(depth, len(sizes), sum(sizes))
    if feature_decay <= 0 or min(weight_decays) <= 0:
        return None
    reference = closed_form(sizes, depth, weight_decays, feature_decay, device=device)
    return None if bool(reference["collapsed"].all()) else reference


def _majority(sizes: tuple[int, ...], device: torch.device) -> Tensor:
    return torch.tensor(sizes, device=device) == max(sizes)


def _minority_mean(ratios: Tensor, sizes: tuple[int, ...]) -> float:
    """Mean of ``ratios`` over the classes of the smallest size."""
    return float(ratios[torch.tensor(sizes, device=ratios.device) == min(sizes)].mean())


def _named(distances: dict[str, float]) -> dict[str, float]:
    return {_GRAM_METRICS[name]: value for name, value in distances.items()}
