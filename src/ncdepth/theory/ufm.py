"""The deep-linear unconstrained-features model (UFM): closed-form optimum and direct optimisation.

With ``C`` classes of sizes ``n_1..n_C`` (``N`` samples), one-hot targets ``Y`` (``C x N``), free
features ``H`` (``d x N``) and ``M`` weight matrices (every width ``>= C``, ``W_M`` has ``C`` rows),
the objective is

    f = (1/2N) ||W_M ... W_1 H - Y||_F^2 + sum_m (lambda_m/2) ||W_m||_F^2 + (lambda_H/2) ||H||_F^2.

Closed form (Dang et al., ICML 2023; derived here as follows). For a fixed product
``W = W_M ... W_1`` the optimal features are ``h_i = (W^T W + a I)^{-1} W^T y_i`` with
``a = N lambda_H``: every sample of a class sits at its class mean ``hbar_k`` (NC1), and eliminating
``H`` leaves
``(lambda_H/2) sum_k n_k [(W W^T + a I)^{-1}]_kk``. Among factorisations of ``W`` the smallest
weight penalty is ``(M/2) (prod_m lambda_m)^{1/M} sum_k sigma_k(W)^{2/M}``, reached by balanced
layers (``lambda_m W_m W_m^T = lambda_{m+1} W_{m+1}^T W_{m+1}``, all sharing singular values up to
scale), and the diagonal term is smallest when ``W W^T`` is diagonal in the class basis (larger
classes, larger singular values). Writing ``sigma_k(W)^2 = a x_k^M`` the problem separates over
classes:

    f = sum_k (n_k / 2N) F_k(x_k),    F_k(x) = 1/(1 + x^M) + (b/n_k) x,
    b = M N (N lambda_H prod_m lambda_m)^{1/M}.

``F_k(0) = 1`` and ``F_k'(x) = b/n_k - g(x)`` with ``g(x) = M x^{M-1} / (x^M + 1)^2``. For ``M = 1``
``g`` decreases from 1; for ``M >= 2`` it rises from 0 to its peak at ``x_p = ((M-1)/(M+1))^{1/M}``
and then decreases, so the smaller root of ``g = b/n_k`` is a local maximum of ``F_k`` and the
largest root ``x_k`` the only interior minimum. Class ``k`` survives iff ``F_k(x_k) < 1``; otherwise
its optimum is ``x_k = 0`` and its classifier row and class mean vanish (minority collapse). From
``x_k``:

* ``WWT = diag(a x_k^M)``, ``WH = diag(x_k^M / (1 + x_k^M))``,
  ``HTH = diag(x_k^M / (a (1 + x_k^M)^2))`` (``Hbar = (W^T W + a I)^{-1} W^T``);
* singular values of layer ``m`` per class:
  ``s_{m,k}^2 = x_k (N lambda_H prod_j lambda_j)^{1/M} / lambda_m`` (balance makes
  ``lambda_m s_{m,k}^2`` the same for every layer, and ``prod_m s_{m,k} = sigma_k(W)``);
* ``f* = sum_k (n_k / 2N) F_k(x_k)``.

Balanced classes give an orthogonal frame, imbalanced ones a *general* orthogonal frame (diagonal,
entries growing with ``n_k``). An unregularised last-layer bias (balanced classes only) absorbs the
mean target ``1/C``: the problem becomes the same one on the centred targets ``(I - 11^T/C) Y``,
whose ``C - 1`` nonzero directions behave as classes of size ``n``, and the three Grams are those
scalars times the simplex ETF ``I - 11^T/C`` (``f* = (C-1)/(2C) F(x)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ncdepth.metrics.functional import neural_collapse
from ncdepth.theory.geometry import (
    GRAM_NAMES,
    frame_distances,
    grams,
    relative_distance,
    simplex_etf,
)

LOSSES = ("mse", "ce")
METHODS = ("lbfgs", "gd")
INITS = ("gaussian", "orthogonal")
ORTHOGONAL_FEATURE_STD = 1e-2
"""Standard deviation of the entries of ``H`` under ``init="orthogonal"``."""
_BISECTION_STEPS = 200


def validate(
    class_sizes: Sequence[int],
    depth: int,
    weight_decay: float | Sequence[float],
    feature_decay: float,
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Check the UFM arguments; return the class sizes and one weight decay per layer (``W_1``
    first).

    Raises ``ValueError`` naming the argument: ``class_sizes`` must hold >= 2 positive integers,
    ``depth`` is an integer >= 1, and every decay is a finite number > 0 (the optimum does not exist
    at 0).
    """
    sizes = tuple(class_sizes)
    if len(sizes) < 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes):
        raise ValueError(f"class_sizes must hold at least 2 integers >= 1, got {class_sizes!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    decays = (weight_decay,) * depth if isinstance(weight_decay, (int, float)) else tuple(weight_decay)
    if len(decays) != depth or not all(_positive(value) for value in decays):
        raise ValueError(
            f"weight_decay must be a number > 0 or {depth} (depth) numbers > 0, got {weight_decay!r}"
        )
    if not _positive(feature_decay):
        raise ValueError(f"feature_decay must be a number > 0, got {feature_decay!r}")
    return sizes, tuple(float(value) for value in decays)


def _positive(value: object) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def coupling(num_samples: int, depth: int, weight_decays: Sequence[float], feature_decay: float) -> float:
    """``b = M N (N lambda_H prod_m lambda_m)^{1/M}`` (the product is taken in log space); a
    ``ValueError`` when ``b`` underflows to 0."""
    log_product = math.log(num_samples * feature_decay) + sum(math.log(value) for value in weight_decays)
    coupling_value = depth * num_samples * math.exp(log_product / depth)
    if coupling_value == 0.0:
        raise ValueError(
            "weight_decay and feature_decay are too small: (N lambda_H prod_m lambda_m)^{1/M} "
            "underflows float64"
        )
    return coupling_value


def stationarity(x: float, depth: int) -> float:
    """``g(x) = M x^{M-1} / (x^M + 1)^2``, evaluated as ``M x^{-M-1} / (1 + x^{-M})^2`` for
    ``x > 1``."""
    if x > 1.0:
        inverse = x ** (-depth)
        return depth * x ** (-depth - 1) / (1.0 + inverse) ** 2
    return depth * x ** (depth - 1) / (x**depth + 1.0) ** 2


def class_loss(x: float, ratio: float, depth: int) -> float:
    """``F(x) = 1/(1 + x^M) + ratio * x`` with ``ratio = b/n_k``: the class's share of ``f``, scaled
    by ``2N/n_k``; ``F(0) = 1`` is the collapsed class."""
    if x > 1.0:
        inverse = x ** (-depth)
        return inverse / (1.0 + inverse) + ratio * x
    return 1.0 / (1.0 + x**depth) + ratio * x


def largest_root(ratio: float, depth: int) -> float | None:
    """The largest root of ``g(x) = ratio`` on ``x >= 0``, or ``None`` when there is none.

    ``g`` is strictly decreasing on ``[x_p, inf)`` with ``x_p = ((M-1)/(M+1))^{1/M}`` (``x_p = 0``
    for ``M = 1``) and ``g(x) < M / x^{M+1}``, so a root exists iff ``g(x_p) >= ratio`` and then
    lies in ``[x_p, max(x_p, (M/ratio)^{1/(M+1)})]``; bisection on that bracket converges to machine
    precision.
    """
    if not ratio > 0:
        raise ValueError(f"ratio must be > 0, got {ratio}")
    low = ((depth - 1) / (depth + 1)) ** (1.0 / depth)
    if stationarity(low, depth) < ratio:
        return None
    high = max(low, (depth / ratio) ** (1.0 / (depth + 1)))
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        if stationarity(middle, depth) >= ratio:
            low = middle
        else:
            high = middle
    return low


def optimal_x(ratio: float, depth: int) -> float:
    """The minimiser of ``F`` over ``x >= 0``: the largest root of ``g(x) = ratio`` when ``F`` is
    below ``F(0) = 1`` there, else ``0`` (collapse)."""
    root = largest_root(ratio, depth)
    return root if root is not None and class_loss(root, ratio, depth) < 1.0 else 0.0


def closed_form(
    class_sizes: Sequence[int],
    depth: int,
    weight_decay: float | Sequence[float],
    feature_decay: float,
    *,
    bias: bool = False,
    device: torch.device | str | None = None,
) -> dict[str, Tensor | float]:
    """The global optimum of the deep-linear UFM (module docstring for the derivation), float64 tensors on
    ``device`` (the default device when ``None``).

    Returns ``x`` ``(C,)``; ``WWT``, ``HTH`` (Gram of the uncentred class means ``Hbar``) and ``WH``
    (``W Hbar``), all ``(C, C)``; ``fstar`` (the optimal objective, a float); ``singular_values``
    ``(M, C)`` (row ``m`` for ``W_{m+1}``; with a bias these are the ``C - 1`` ETF directions and a
    final 0); ``collapsed`` ``(C,)`` bool (the class's classifier row and mean are zero).
    """
    sizes, decays = validate(class_sizes, depth, weight_decay, feature_decay)
    if bias and len(set(sizes)) > 1:
        raise ValueError(f"bias=True has a closed form for balanced class_sizes only, got {sizes}")
    num_classes, num_samples = len(sizes), sum(sizes)
    b = coupling(num_samples, depth, decays, feature_decay)
    options = {"dtype": torch.float64, "device": device}
    roots = [optimal_x(b / n, depth) for n in sizes]
    x = torch.tensor(roots, **options)
    losses = torch.tensor(
        [class_loss(xk, b / n, depth) for xk, n in zip(roots, sizes, strict=True)], **options
    )
    power = x.pow(depth)
    a = num_samples * feature_decay
    diagonals = {
        "WWT": a * power,
        "HTH": power / (a * (1.0 + power) ** 2),
        "WH": power / (1.0 + power),
    }
    layer_scale = torch.tensor([b / (depth * num_samples * value) for value in decays], **options)
    singular_values = (layer_scale[:, None] * x[None, :]).sqrt()
    sizes_t = torch.tensor(sizes, **options)
    if bias:
        frame = simplex_etf(num_classes, device)
        matrices = {name: diagonal[0] * frame for name, diagonal in diagonals.items()}
        singular_values[:, -1] = 0.0
        fstar = float((num_classes - 1) / (2 * num_classes) * losses[0])
    else:
        matrices = {name: torch.diag(diagonal) for name, diagonal in diagonals.items()}
        fstar = float((sizes_t * losses).sum() / (2 * num_samples))
    return {
        "x": x,
        **matrices,
        "fstar": fstar,
        "singular_values": singular_values,
        "collapsed": x == 0,
    }


@dataclass(frozen=True)
class UFMResult:
    """The end point of :func:`optimize` and its log.

    ``weights`` are ``W_1..W_M``; ``features`` is ``H`` ``(d, N)``; ``bias`` is ``(C,)`` or
    ``None``; ``labels`` ``(N,)`` sorted by class; ``history`` holds one dict per logged step (see
    :func:`optimize`).
    """

    weights: tuple[Tensor, ...]
    features: Tensor
    bias: Tensor | None
    labels: Tensor
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def product(self) -> Tensor:
        """``W = W_M ... W_1`` ``(C, d)``."""
        return _product(self.weights)

    @property
    def class_means(self) -> Tensor:
        """``Hbar`` ``(d, C)``: the mean feature of each class."""
        num_classes = self.weights[-1].shape[0]
        counts = torch.bincount(self.labels, minlength=num_classes).to(self.features)
        sums = torch.zeros(
            num_classes, self.features.shape[0], dtype=self.features.dtype, device=self.features.device
        )
        sums.index_add_(0, self.labels, self.features.T)
        return (sums / counts[:, None]).T

    @property
    def final_objective(self) -> float:
        """The objective at the last logged step."""
        return self.history[-1]["objective"]


def objective(
    weights: Sequence[Tensor],
    features: Tensor,
    bias: Tensor | None,
    labels: Tensor,
    weight_decays: Sequence[float],
    feature_decay: float,
    loss: str = "mse",
) -> Tensor:
    """The UFM objective ``fit + sum_m (lambda_m/2) ||W_m||_F^2 + (lambda_H/2) ||H||_F^2`` with
    ``fit = (1/2N) ||W_M ... W_1 H + b 1^T - Y||_F^2`` (``loss="mse"``) or the mean cross-entropy
    ``(1/N) sum_i CE(W_M ... W_1 h_i + b, y_i)`` (``loss="ce"``); ``weights`` are ``W_1..W_M``."""
    logits = _product(weights) @ features
    if bias is not None:
        logits = logits + bias[:, None]
    if loss == "mse":
        targets = torch.nn.functional.one_hot(labels, logits.shape[0]).T.to(logits)
        fit = (logits - targets).pow(2).sum() / (2 * labels.numel())
    else:
        fit = torch.nn.functional.cross_entropy(logits.T, labels)
    penalty = sum(
        value / 2 * weight.pow(2).sum() for value, weight in zip(weight_decays, weights, strict=True)
    )
    return fit + penalty + feature_decay / 2 * features.pow(2).sum()


def optimize(
    class_sizes: Sequence[int],
    depth: int,
    weight_decay: float | Sequence[float],
    feature_decay: float,
    *,
    width: int | None = None,
    bias: bool = False,
    loss: str = "mse",
    method: str = "lbfgs",
    steps: int = 500,
    lr: float | None = None,
    seed: int = 0,
    log_every: int = 50,
    init: str = "gaussian",
    start: UFMResult | None = None,
) -> UFMResult:
    """Minimise :func:`objective` directly: free ``H`` ``(width, N)``,
    ``W_1..W_{M-1}`` ``(width, width)``, ``W_M`` ``(C, width)`` and optionally an unregularised
    bias; float64, full batch, initialised from ``seed``:

    * ``init="gaussian"``: ``W_m`` entries of variance ``1/width``, ``H`` entries of variance 1;
    * ``init="orthogonal"``: every ``W_m`` with orthonormal rows (all singular values 1, the
      random orthogonal initialisation of deep linear nets, Saxe et al. 2014) and small features,
      ``H`` entries of standard deviation :data:`ORTHOGONAL_FEATURE_STD`. For deep heads
      (``M >= 6``) it escapes the collapsed local minima that the Gaussian start often ends in:
      the product starts well conditioned, with every class direction of the same size.

    ``start``: a warm start, a copy of the parameters of an earlier result of the same
    ``class_sizes``, ``depth`` and ``bias`` (``width``, ``init`` and ``seed`` are then unused), e.g.
    the end point at other decays (:mod:`ncdepth.theory.ufm_starts`).

    ``method="lbfgs"``: one ``torch.optim.LBFGS`` iteration (strong-Wolfe line search) per step,
    ``lr`` default 1. ``method="gd"``: gradient descent with momentum 0.9, ``lr`` default 0.05.
    ``width`` defaults to ``C`` and must be ``>= C``.

    Every ``log_every`` steps (and at the first and last) ``history`` gets ``step``, ``objective``,
    the docs/metrics.md metrics of ``neural_collapse(H^T, labels, C, weight=W_M...W_1, bias=b)``, and:

    * MSE with a closed form (always, except a bias with imbalanced classes): ``objective_gap``
      ``(f - f*)/f*`` and ``closed_form_WWT/HTH/WH``, the relative Frobenius distances
      ``||A - A*||_F / ||A*||_F`` to :func:`closed_form` (the absolute ``||A||_F`` when every
      class collapses and ``A* = 0``);
    * CE: ``etf_WWT/HTH/WH``, the shape distances to the simplex ETF. The ETF is a critical point of
      the cross-entropy UFM, reported as a reference only: it is not claimed optimal, and for deep
      heads lower-rank configurations can reach a lower loss (Sukenik et al. 2024).

    For ``M >= 2`` the objective has spurious local minima, so a start can end away from the
    optimum; :mod:`ncdepth.theory.ufm_starts` says where and how to start to reach it.
    """
    sizes, decays = validate(class_sizes, depth, weight_decay, feature_decay)
    num_classes, num_samples = len(sizes), sum(sizes)
    width = num_classes if width is None else width
    if isinstance(width, bool) or not isinstance(width, int) or width < num_classes:
        raise ValueError(f"width must be an integer >= the number of classes ({num_classes}), got {width!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")
    for name, value in (("steps", steps), ("log_every", log_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    lr = (1.0 if method == "lbfgs" else 0.05) if lr is None else lr
    if not _positive(lr):
        raise ValueError(f"lr must be a number > 0, got {lr!r}")

    labels = torch.repeat_interleave(torch.arange(num_classes), torch.tensor(sizes))
    if start is None:
        generator = torch.Generator().manual_seed(seed)
        shapes = [(width, width)] * (depth - 1) + [(num_classes, width)]
        weights = tuple(_initial_weight(shape, init, generator).requires_grad_() for shape in shapes)
        features = torch.randn(width, num_samples, generator=generator, dtype=torch.float64)
        if init == "orthogonal":
            features = features * ORTHOGONAL_FEATURE_STD
        offset = torch.zeros(num_classes, dtype=torch.float64).requires_grad_() if bias else None
    elif (
        len(start.weights) == depth and torch.equal(start.labels, labels) and (start.bias is not None) == bias
    ):
        weights = tuple(weight.clone().requires_grad_() for weight in start.weights)
        features = start.features.clone()
        offset = None if start.bias is None else start.bias.clone().requires_grad_()
    else:
        raise ValueError("start must be a result of the same class_sizes, depth and bias")
    state = UFMResult(weights, features.requires_grad_(), offset, labels)
    parameters = [*weights, features] + ([offset] if offset is not None else [])

    reference = None
    if loss == "mse" and not (bias and len(set(sizes)) > 1):
        reference = closed_form(sizes, depth, decays, feature_decay, bias=bias)
    if method == "lbfgs":
        optimizer: torch.optim.Optimizer = torch.optim.LBFGS(
            parameters,
            lr=lr,
            max_iter=1,
            max_eval=25,
            history_size=50,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-14,
            tolerance_change=1e-16,
        )
    else:
        optimizer = torch.optim.SGD(parameters, lr=lr, momentum=0.9)

    def closure() -> Tensor:
        optimizer.zero_grad()
        value = objective(weights, features, offset, labels, decays, feature_decay, loss)
        value.backward()
        return value

    def record(step: int) -> None:
        with torch.no_grad():
            value = float(objective(weights, features, offset, labels, decays, feature_decay, loss))
            if not math.isfinite(value):
                raise FloatingPointError(f"the objective diverged at step {step}; lower lr={lr}")
            entry = {"step": float(step), "objective": value}
            entry.update(neural_collapse(features.T, labels, num_classes, weight=state.product, bias=offset))
            if reference is not None:
                entry.update(_closed_form_log(state, value, reference))
            if loss == "ce":
                etf = frame_distances(state.product, state.class_means, simplex_etf(num_classes))
                entry.update({f"etf_{name}": distance for name, distance in etf.items()})
        state.history.append(entry)

    record(0)
    for step in range(1, steps + 1):
        optimizer.step(closure)
        if step % log_every == 0 or step == steps:
            record(step)
    return UFMResult(
        tuple(weight.detach() for weight in weights),
        features.detach(),
        None if offset is None else offset.detach(),
        labels,
        state.history,
    )


def _closed_form_log(
    state: UFMResult, value: float, reference: dict[str, Tensor | float]
) -> dict[str, float]:
    """``objective_gap`` ``(f - f*)/f*`` and the relative distances of ``WWT``, ``HTH``, ``WH`` to
    the closed form."""
    matrices = grams(state.product, state.class_means)
    entry = {"objective_gap": (value - reference["fstar"]) / reference["fstar"]}
    for name in GRAM_NAMES:
        if bool(reference["collapsed"].all()):
            entry[f"closed_form_{name}"] = float(matrices[name].norm())
        else:
            entry[f"closed_form_{name}"] = relative_distance(matrices[name], reference[name])
    return entry


def _initial_weight(shape: tuple[int, int], init: str, generator: torch.Generator) -> Tensor:
    """A ``(rows, width)`` float64 weight: Gaussian entries of variance ``1/width``, or (``init=
    "orthogonal"``) orthonormal rows, the Q factor of a Gaussian matrix's transpose (``rows <=
    width``)."""
    rows, width = shape
    gaussian = torch.randn(shape, generator=generator, dtype=torch.float64)
    if init == "gaussian":
        return gaussian / math.sqrt(width)
    return torch.linalg.qr(gaussian.T).Q.T


def _product(weights: Sequence[Tensor]) -> Tensor:
    product = weights[0]
    for weight in weights[1:]:
        product = weight @ product
    return product
