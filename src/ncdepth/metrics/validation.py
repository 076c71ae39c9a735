"""Early, explicit checks shared by the functional and the streaming metrics.

Every message says what was received, what was expected and, where one exists, what to pass instead:

* :func:`resolve_classifier_layer` — which layer feeds the classifier (where ``nc3``/``nc4`` are measured),
  decided once, at the first update, from ``classifier_layer`` or the shape of the classifier weight;
* :func:`check_logits` — logits must be ``(B, C)``;
* :func:`describe_pass_mismatch` — why pass 2 does not match pass 1 (labels out of range, classes missing,
  fewer or more samples);
* :func:`check_feature_tensor` — a layer's embedding must be a floating-point tensor (numpy arrays and
  integer tensors are refused by name);
* :func:`describe_sample_mismatch` — pass 2 had pass 1's class counts but not its samples;
* :class:`ConstantFeaturesWarning` — all class means coincide (e.g. constant features): the metrics built
  on the centred class means are NaN, as ``docs/metrics.md`` states;
* :class:`SingleSampleClassesWarning` — classes of one sample, whose within-class variance is zero by
  construction.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor


class ConstantFeaturesWarning(UserWarning):
    """A layer's class means all coincide (``Sigma_B = 0``, e.g. constant or all-zero features): ``nc1``,
    ``nc1_trace_ratio``, ``cdnv``, ``nc2_*`` and ``nc3`` are NaN; ``ncc_acc`` and ``nc4`` are still
    reported (every centre ties, so the NCC prediction is arbitrary)."""


class SingleSampleClassesWarning(UserWarning):
    """Some classes have a single sample: their within-class variance is zero by construction, which lowers
    ``nc1``, ``nc1_trace_ratio`` and ``cdnv`` without any collapse (``min_class_count=2`` with ``empty_classes="drop"``
    leaves them out)."""


def warn_single_sample_classes(counts: Tensor, where: str = "") -> None:
    """Warn (:class:`SingleSampleClassesWarning`) when some of the float64 ``counts`` are exactly 1."""
    single = (counts == 1).nonzero().flatten().tolist()
    if not single:
        return
    warnings.warn(
        f"{len(single)} classes have a single sample{where} (classes {class_list(single)}): their within-class "
        "variance is 0 by construction, which lowers nc1, nc1_trace_ratio and cdnv; min_class_count=2 with "
        "empty_classes='drop' leaves them out",
        SingleSampleClassesWarning,
        stacklevel=4,
    )


def close_matches(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x' or 'y'?"`` for the candidates that look like ``name`` (empty if none)."""
    matches = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    if not matches:
        return ""
    return "; did you mean " + " or ".join(repr(m) for m in matches) + "?"


def resolve_classifier_layer(
    dims: Mapping[str, int],
    classifier_layer: str | None,
    weight: Tensor | None,
    num_classes: int,
) -> str | None:
    """The layer that feeds the classifier, given the layers' widths ``dims`` (``{name: d}``).

    * ``classifier_layer`` given: it must be one of the layers, and the weight (if any) must be ``(C, d)``
      for that layer's ``d``;
    * otherwise, with a classifier ``weight`` ``(C, d)``: the one layer of width ``d``; it is an error when
      none or several layers have that width (then ``classifier_layer`` is required);
    * otherwise, one layer: that layer; several layers: ``None`` (``nc4`` then needs ``classifier_layer``).
    """
    names = list(dims)
    if weight is not None and (weight.ndim != 2 or weight.shape[0] != num_classes):
        raise ValueError(
            f"classifier_weight must have shape (C, d) = ({num_classes}, d), got {tuple(weight.shape)}"
        )
    if classifier_layer is not None:
        if classifier_layer not in dims:
            raise ValueError(
                f"classifier_layer {classifier_layer!r} is not one of the layers {names}"
                + close_matches(classifier_layer, names)
            )
        if weight is not None and weight.shape[1] != dims[classifier_layer]:
            raise ValueError(
                f"classifier_weight has shape {tuple(weight.shape)} but classifier_layer "
                f"{classifier_layer!r} has d = {dims[classifier_layer]} (expected "
                f"({num_classes}, {dims[classifier_layer]}))"
            )
        return classifier_layer
    if weight is not None:
        width = weight.shape[1]
        fitting = [name for name in names if dims[name] == width]
        if len(fitting) == 1:
            return fitting[0]
        widths = ", ".join(f"{name!r}: {dims[name]}" for name in names)
        if not fitting:
            raise ValueError(
                f"classifier_weight has shape {tuple(weight.shape)}, so the classifier reads d = {width}, "
                f"but no layer has that width ({{{widths}}}); pass the classifier's input as a layer "
                "(and classifier_layer=its name)"
            )
        raise ValueError(
            f"classifier_layer is required: the classifier weight {tuple(weight.shape)} fits several "
            f"layers {fitting} (d = {width}); pass classifier_layer=<one of {fitting}>"
        )
    return names[0] if len(names) == 1 else None


def check_logits(logits: Any, rows: int, num_classes: int) -> None:
    """``logits`` must be a ``(rows, C)`` floating-point tensor."""
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"logits must be a Tensor of shape ({rows}, {num_classes}), got {type(logits).__name__}"
        )
    if logits.shape != (rows, num_classes):
        hint = ""
        if logits.ndim == 2 and logits.shape[0] == rows:
            hint = f": the network has {logits.shape[1]} outputs but num_classes is {num_classes}"
        elif logits.ndim == 3:
            hint = " (token-level logits: flatten them with the same mask as the features, logits[mask])"
        raise ValueError(
            f"logits must have shape (B, C) = ({rows}, {num_classes}), got {tuple(logits.shape)}{hint}"
        )
    if not logits.dtype.is_floating_point:
        raise ValueError(f"logits must be floating point, got {logits.dtype}")


def check_feature_tensor(name: str, value: Any) -> Tensor:
    """A layer's embedding must be a floating-point tensor (a hook returning a tuple gives a clear error
    here). ``name`` ``"features"`` is the single tensor of the functional API or of ``update(tensor, ...)``.

    Integer features are refused rather than converted: float32, the working precision of everything but
    float64, holds integers exactly only up to 2**24; ``features.double()`` converts exactly up to 2**53.
    """
    what = "features" if name == "features" else f"layer {name!r}"
    if isinstance(value, Tensor):
        if not value.dtype.is_floating_point:
            raise TypeError(
                f"{what} must be a floating-point Tensor, got {value.dtype}: convert it first (features.double() "
                "is exact for integers up to 2**53, features.float() up to 2**24)"
            )
        return value
    kind = type(value).__name__
    if type(value).__module__ == "numpy":
        raise TypeError(
            f"{what} is a numpy.{kind}, not a torch Tensor: pass torch.from_numpy(array) (and the labels as a "
            "torch integer Tensor too)"
        )
    if isinstance(value, Sequence) and not isinstance(value, str):
        kind = f"{kind} of {len(value)} elements"
    raise TypeError(
        f"{what} is a {kind}, not a Tensor: pick one tensor of the module's output (LayerTap does it "
        "with select=..., by default the first element of a tuple)"
    )


def class_list(ids: Sequence[int], shown: int = 8) -> str:
    """``[2, 5]``, or for many ids the first few and their number: ``[0, 3, 6, 7, 9, 12, 15, 16, ...] (412
    classes)``: a vocabulary may miss thousands of classes, and a message stays one readable line."""
    if len(ids) <= shown:
        return str(list(ids))
    return "[" + ", ".join(str(i) for i in ids[:shown]) + f", ...] ({len(ids):,} classes)"


def describe_pass_mismatch(first: Tensor, second: Tensor, invalid_second: float, num_classes: int) -> str:
    """What differs between the per-class counts of pass 1 (``first``) and pass 2 (``second``).

    ``invalid_second`` is the number of pass-2 labels outside ``0..C-1`` (they are not in ``second``).
    """
    first_list, second_list = [int(v) for v in first.tolist()], [int(v) for v in second.tolist()]
    reasons = []
    if invalid_second > 0:
        reasons.append(f"{int(invalid_second)} pass-2 labels lie outside 0..{num_classes - 1}")
    total_first, total_second = sum(first_list), sum(second_list) + int(invalid_second)
    if total_first != total_second:
        reasons.append(f"pass 2 saw {total_second} samples, pass 1 saw {total_first}")
    missing = [c for c in range(num_classes) if first_list[c] > 0 and second_list[c] == 0]
    new = [c for c in range(num_classes) if first_list[c] == 0 and second_list[c] > 0]
    if missing:
        reasons.append(f"classes {class_list(missing)} are absent from pass 2 but had samples in pass 1")
    if new:
        reasons.append(f"classes {class_list(new)} appear in pass 2 but had no samples in pass 1")
    differing = {
        c: (first_list[c], second_list[c]) for c in range(num_classes) if first_list[c] != second_list[c]
    }
    shown = dict(list(differing.items())[:10])
    details = ", ".join(f"class {c}: {a} in pass 1, {b} in pass 2" for c, (a, b) in shown.items())
    if len(differing) > len(shown):
        details += f", ... ({len(differing)} classes differ)"
    if not reasons and differing:
        reasons.append("pass 2 saw as many samples as pass 1 but with other labels")
    message = "; ".join(reasons)
    if details:
        message += f" ({details})"
    return (
        f"pass 2 must go over the same samples with the same labels as pass 1: {message}. Feed both passes "
        "from the same loader (no shuffling, no drop_last, the same label column)"
    )


def describe_sample_mismatch(layer: str, classes: list[int]) -> str:
    """Pass 2 saw pass 1's class counts but, in ``classes`` of ``layer``, other samples (the sample check of
    :mod:`ncdepth.metrics.stats`)."""
    shown = ", ".join(str(c) for c in classes[:10]) + (
        f", ... ({len(classes)} classes)" if len(classes) > 10 else ""
    )
    return (
        f"pass 2 must go over the same samples as pass 1: layer {layer!r} saw other samples (or other "
        f"features) in pass 2 for classes {shown}, with the same class counts. Feed both passes from the same "
        "loader, without shuffling or random augmentation, with the model in eval mode and unchanged between "
        "them (check_samples=False turns this check off)"
    )


def floating_eps(dtype: torch.dtype) -> float:
    """Machine epsilon of a floating dtype (float32's for non-float dtypes)."""
    return torch.finfo(dtype if dtype.is_floating_point else torch.float32).eps
