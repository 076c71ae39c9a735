"""Geometry of a classifier ``W`` (``C x d``) and its class means ``Hbar`` (``d x C``) against the
frames of the unconstrained-features model.

Every distance acts on one of the three ``C x C`` matrices of :func:`grams`,
``WWT = W W^T``, ``HTH = Hbar^T Hbar`` and ``WH = W Hbar``:

* orthogonal frame (bias-free MSE, balanced classes): ``R = I``;
* simplex ETF (with bias, or cross-entropy): ``R = I - 11^T/C``;
* general orthogonal frame (bias-free MSE, imbalanced classes; Dang et al. 2023): the diagonal
  ``R`` that :func:`ncdepth.theory.ufm.closed_form` predicts, whose entries grow with the class size
  and vanish for collapsed classes; one per matrix (:func:`general_frame_distances`).

:func:`frame_distance` compares shapes only (both sides scaled to unit Frobenius norm);
:func:`relative_distance` compares the matrices themselves, scale included. Frames are made on the
``device`` asked for (the matrices' own), and every function works on the device of its inputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

GRAM_NAMES = ("WWT", "HTH", "WH")


def grams(weight: Tensor, class_means: Tensor) -> dict[str, Tensor]:
    """``{"WWT": W W^T, "HTH": Hbar^T Hbar, "WH": W Hbar}`` in float64 for ``W`` ``(C, d)`` and the
    uncentred class means ``Hbar`` ``(d, C)``."""
    weight, class_means = weight.detach().double(), class_means.detach().double()
    num_classes = weight.shape[0]
    if weight.ndim != 2 or class_means.shape != (weight.shape[1], num_classes):
        raise ValueError(
            f"class_means must have shape (d, C) = {(weight.shape[-1], num_classes)} for a weight "
            f"of shape {tuple(weight.shape)}, got {tuple(class_means.shape)}"
        )
    return {
        "WWT": weight @ weight.T,
        "HTH": class_means.T @ class_means,
        "WH": weight @ class_means,
    }


def orthogonal_frame(num_classes: int, device: torch.device | str | None = None) -> Tensor:
    """The orthogonal frame ``I_C`` (float64, on ``device``)."""
    return torch.eye(num_classes, dtype=torch.float64, device=device)


def simplex_etf(num_classes: int, device: torch.device | str | None = None) -> Tensor:
    """The simplex-ETF Gram ``I_C - 11^T/C`` (float64, on ``device``)."""
    return torch.eye(num_classes, dtype=torch.float64, device=device) - 1.0 / num_classes


def frame_distance(matrix: Tensor, reference: Tensor) -> float:
    """Shape distance ``|| A/||A||_F - R/||R||_F ||_F`` in ``[0, 2]``; ``0`` iff ``A = c R`` with
    ``c > 0``."""
    matrix, reference = _pair(matrix, reference)
    return float((matrix / matrix.norm() - reference / reference.norm()).norm())


def relative_distance(matrix: Tensor, reference: Tensor) -> float:
    """Relative Frobenius distance ``||A - R||_F / ||R||_F``."""
    matrix, reference = _pair(matrix, reference)
    return float((matrix - reference).norm() / reference.norm())


def frame_distances(weight: Tensor, class_means: Tensor, reference: Tensor) -> dict[str, float]:
    """:func:`frame_distance` of ``WWT``, ``HTH`` and ``WH`` to one reference frame ``R``
    (``C x C``): ``orthogonal_frame(C)``, ``simplex_etf(C)``, or a general orthogonal frame from
    ``closed_form``."""
    return {name: frame_distance(gram, reference) for name, gram in grams(weight, class_means).items()}


def general_frame_distances(
    weight: Tensor, class_means: Tensor, reference: Mapping[str, Tensor]
) -> dict[str, float]:
    """:func:`frame_distance` of each of ``WWT``, ``HTH``, ``WH`` to its *own* reference
    ``reference[name]``, e.g. the three matrices of ``closed_form`` (the general orthogonal frame
    of imbalanced classes, ``diag(a x_k^M)``, ``diag(x_k^M / (a (1 + x_k^M)^2))`` and
    ``diag(x_k^M / (1 + x_k^M))``, whose diagonals differ in shape)."""
    return {name: frame_distance(gram, reference[name]) for name, gram in grams(weight, class_means).items()}


def alignment(weight: Tensor, class_means: Tensor) -> Tensor:
    """Per-class alignment ``cos(w_k, hbar_k) = <w_k, hbar_k> / (||w_k|| ||hbar_k||)`` of the
    classifier row ``w_k`` and the class mean ``hbar_k`` (``(C,)`` float64; NaN where either vector
    is zero).

    At the deep-linear UFM optimum every surviving class has cosine 1, balanced or not (Dang et al.
    2023): ``Hbar = (W^T W + N lambda_H I)^{-1} W^T`` maps each ``w_k`` to a positive multiple of
    itself.
    """
    products = grams(weight, class_means)["WH"].diagonal()
    norms = weight.detach().double().norm(dim=1) * class_means.detach().double().norm(dim=0)
    return torch.where(norms > 0, products / norms, torch.full_like(norms, float("nan")))


def minority_collapse(weight: Tensor, class_means: Tensor, class_sizes: tuple[int, ...]) -> dict[str, Tensor]:
    """Norms of every classifier row and class mean relative to the majority (Fang et al. 2021).

    ``classifier_norm_ratio[k] = ||w_k|| / mean_{j in majority} ||w_j||`` and
    ``mean_norm_ratio[k] = ||hbar_k|| / mean_{j in majority} ||hbar_j||``, the majority being the
    classes of the largest size. Minority collapse shows as ratios that fall to 0 for the small
    classes.
    """
    sizes = torch.as_tensor(class_sizes, device=weight.device)
    if sizes.shape != (weight.shape[0],):
        raise ValueError(f"class_sizes must hold one size per class ({weight.shape[0]}), got {class_sizes}")
    majority = sizes == sizes.max()
    if bool(majority.all()):
        raise ValueError(f"class_sizes must be imbalanced to define a minority, got {class_sizes}")
    weight_norms = weight.detach().double().norm(dim=1)
    mean_norms = class_means.detach().double().norm(dim=0)
    return {
        "classifier_norm_ratio": weight_norms / weight_norms[majority].mean(),
        "mean_norm_ratio": mean_norms / mean_norms[majority].mean(),
    }


def _pair(matrix: Tensor, reference: Tensor) -> tuple[Tensor, Tensor]:
    matrix, reference = matrix.detach().double(), reference.detach().to(torch.float64)
    if matrix.shape != reference.shape:
        raise ValueError(
            f"matrix of shape {tuple(matrix.shape)} and reference {tuple(reference.shape)} differ"
        )
    if reference.norm() == 0:
        raise ValueError("reference frame must be nonzero")
    return matrix, reference
