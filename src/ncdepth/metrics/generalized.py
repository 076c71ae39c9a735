"""Measures of the class means beyond NC1-NC4: the generalized measures of ``rhubarbwu/neural-collapse``
(Wu & Papyan 2024), He & Su's separation fuzziness, the effective rank of the means and the alignment of a
linear layer's weight with the class means of its input (Rangamani et al. 2023). ``docs/metrics.md``
(section *Generalized measures*) gives every formula and how each relates to the peer's code.

All of them are functions of the float64 class means (and a weight matrix), which the streaming
:class:`~ncdepth.metrics.NeuralCollapse` fixes after its first pass and sums over processes, so streaming,
functional and DDP results are the same numbers. With ``m_c = mu_c - mu_G`` the centred means and
``u_c = m_c / ||m_c||``:

* ``nc2g_dist = Var_{c<c'} ||u_c - u_c'||`` and ``nc2g_log = Var_{c<c'} log(1/||u_c - u_c'||)`` (ddof 0
  over the ``C (C - 1) / 2`` unordered pairs): hyperspherical uniformity, 0 when all pairwise distances are
  equal (a simplex);
* ``nc3u_uni_dual = Var_c (w_c . m_c)`` (ddof 1): uniform duality;
* ``nc5_ood_dev = mean_c |cos(mu_c, mu_G^ood)|``: out-of-distribution orthogonality (uncentred means);
* ``erank_means = exp(-sum_k p_k log p_k)``, ``p_k = s_k / sum_j s_j`` over the singular values ``s_k`` of
  ``M~`` (Roy & Vetterli 2007);
* ``w_align = <A^T A, M~^T M~>_F / (||A^T A||_F ||M~^T M~||_F)`` for the weight ``A`` of a linear map reading
  the layer: the cosine of ``A^T A`` with ``Sigma_B``.

Nothing ``C x C`` is formed: the pair measures go over blocks of :data:`PAIR_BLOCK` x :data:`PAIR_BLOCK`
classes, the spectra through the smaller of ``M~ M~^T`` (``C x C``, only when ``C <= d``) and ``M~^T M~``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

PAIR_BLOCK = 1024
"""Classes per side of a block of pairs: a 1024 x 1024 float64 block is 8 MiB."""
CLOSE_COSINE = 1e-3
"""Pairs of unit means with ``cos > 1 - CLOSE_COSINE`` get their distance from the difference itself."""


class RunningMoments:
    """Count, mean and sum of squared deviations of a stream of blocks of numbers, merged by Chan et al.'s
    pairwise update (no ``E[x^2] - E[x]^2``)."""

    def __init__(self) -> None:
        self.count, self.mean, self.squares = 0, 0.0, 0.0

    def add(self, values: Tensor) -> None:
        size = values.numel()
        if size == 0:
            return
        block_mean = float(values.sum()) / size
        deviations = values - block_mean
        delta, merged = block_mean - self.mean, self.count + size
        self.squares += float(torch.dot(deviations, deviations)) + delta * delta * self.count * size / merged
        self.mean += delta * size / merged
        self.count = merged

    def variance(self, ddof: int = 0) -> float:
        return self.squares / (self.count - ddof) if self.count > ddof else math.nan


def unit_rows(centred: Tensor) -> Tensor:
    """``m_c / ||m_c||``; a row at the origin stays 0 (as the peer's ``x / (||x|| + eps)``)."""
    norms = torch.linalg.vector_norm(centred, dim=1, keepdim=True)
    return centred / norms.clamp(min=torch.finfo(centred.dtype).tiny)


def hyperspherical_uniformity(centred: Tensor, block: int = PAIR_BLOCK) -> dict[str, float]:
    """``nc2g_dist`` and ``nc2g_log`` of the ``(C, d)`` centred means, over blocks of class pairs.

    Per block: the cosines of the unit rows from one product and ``||u_a - u_b|| = sqrt(2 - 2 cos_ab)``,
    except for the pairs with ``cos_ab > 1 -`` :data:`CLOSE_COSINE` (distance below about 0.045), whose
    distance is taken as the norm of the difference (``2 - 2 cos`` would leave it about ``1e-8`` absolute,
    which the logarithm of a small distance magnifies); then the running moments of the distances and of
    their negative logarithms.

    Example:
        >>> import torch
        >>> simplex = torch.tensor([[1.0, 0.0], [-0.5, 0.75 ** 0.5], [-0.5, -(0.75 ** 0.5)]], dtype=torch.float64)
        >>> {k: round(v, 12) for k, v in hyperspherical_uniformity(simplex).items()}
        {'nc2g_dist': 0.0, 'nc2g_log': 0.0}
    """
    unit = unit_rows(centred)
    taken = unit.shape[0]
    distances, logs = RunningMoments(), RunningMoments()
    for start in range(0, taken, block):
        rows = unit[start : start + block]
        for other in range(start, taken, block):
            cols = unit[other : other + block]
            cosines = rows @ cols.T
            close = (cosines > 1.0 - CLOSE_COSINE).nonzero()
            distance = cosines.mul_(-2.0).add_(2.0).clamp_(min=0.0).sqrt_()
            if len(close):
                distance[close[:, 0], close[:, 1]] = torch.linalg.vector_norm(
                    rows[close[:, 0]] - cols[close[:, 1]], dim=1
                )
            if other == start:  # a diagonal block: its strict upper triangle
                upper = torch.triu_indices(*distance.shape, 1, device=distance.device)
                distance = distance[upper[0], upper[1]]
            distance = distance.flatten()
            distances.add(distance)
            logs.add(distance.log().neg_())
    return {"nc2g_dist": distances.variance(), "nc2g_log": logs.variance()}


def uniform_duality(weight: Tensor, centred: Tensor) -> float:
    """``nc3u_uni_dual = Var_c (w_c . m_c)`` (ddof 1) for the ``(C, d)`` classifier ``weight``.

    Example:
        >>> import torch
        >>> means = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
        >>> uniform_duality(torch.eye(2), means)  # similarities 1 and 2
        0.5
    """
    weight = weight.detach().to(centred)
    if weight.shape != centred.shape:
        raise ValueError(
            f"classifier weight must have shape {tuple(centred.shape)}, got {tuple(weight.shape)}"
        )
    return float((weight * centred).sum(1).var())


def ood_orthogonality(means: Tensor, ood_mean: Tensor) -> float:
    """``nc5_ood_dev = mean_c |cos(mu_c, mu_G^ood)|`` of the (uncentred) ``(C, d)`` class means and the
    ``(d,)`` global mean of out-of-distribution data at the same layer (Ammar et al. 2024).

    Example:
        >>> import torch
        >>> means = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
        >>> round(ood_orthogonality(means, torch.tensor([0.0, 3.0])), 12)  # |cos| 0 and 1/sqrt 2
        0.353553390593
    """
    ood = ood_mean.detach().to(means).flatten()
    if ood.shape[0] != means.shape[1]:
        raise ValueError(f"ood_mean must have {means.shape[1]} entries (the layer's d), got {ood.shape[0]}")
    unit = unit_rows(means)
    return float((unit @ (ood / torch.linalg.vector_norm(ood))).abs().mean())


def gram_of_smaller_side(matrix: Tensor) -> Tensor:
    """``A A^T`` or ``A^T A``, whichever is smaller: the same nonzero eigenvalues and Frobenius norm."""
    return matrix @ matrix.T if matrix.shape[0] <= matrix.shape[1] else matrix.T @ matrix


def effective_rank(centred: Tensor) -> float:
    """Roy & Vetterli's effective rank of ``M~``: ``exp`` of the entropy of its singular values normalised to
    sum 1, over the numerical rank (eigenvalues of ``M~ M~^T`` or ``M~^T M~`` above ``max(C, d) eps lambda_max``,
    the convention of ``nc1``'s pseudo-inverse); between 1 and ``rank M~``.

    Example:
        >>> import torch
        >>> round(effective_rank(torch.diag(torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))), 12)
        2.0
    """
    eigenvalues = torch.linalg.eigvalsh(gram_of_smaller_side(centred))
    largest = eigenvalues.max()
    if largest <= 0:
        return math.nan
    kept = eigenvalues[eigenvalues > max(centred.shape) * torch.finfo(eigenvalues.dtype).eps * largest]
    singular = kept.sqrt()
    p = singular / singular.sum()
    return math.exp(float(-(p * p.log()).sum()))


def weight_alignment(weight: Tensor, centred: Tensor) -> float:
    """``w_align``: the Frobenius cosine of ``A^T A`` with ``M~^T M~ = C Sigma_B``, ``A`` the ``(out, d)``
    weight of a linear map reading the layer, through ``<A^T A, M~^T M~> = ||A M~^T||_F^2`` (no ``d x d``).

    Example:
        >>> import torch
        >>> means = torch.tensor([[2.0, 0.0, 0.0], [-2.0, 0.0, 0.0]], dtype=torch.float64)
        >>> weight_alignment(torch.tensor([[1.0, 0.0, 0.0]]), means), weight_alignment(torch.eye(3)[1:], means)
        (1.0, 0.0)
    """
    weight = weight.detach().to(centred)
    if weight.ndim != 2 or weight.shape[1] != centred.shape[1]:
        raise ValueError(f"weight must have shape (out, {centred.shape[1]}), got {tuple(weight.shape)}")
    inner = (weight @ centred.T).square().sum()
    return float(inner / (gram_of_smaller_side(weight).norm() * gram_of_smaller_side(centred).norm()))


def generalized_metrics(
    means: Tensor,
    counts: Tensor,
    names: tuple[str, ...],
    *,
    nc1: float = math.nan,
    weight: Tensor | None = None,
    layer_weight: Tensor | None = None,
    ood_mean: Tensor | None = None,
) -> dict[str, float]:
    """The measures of this module named in ``names`` (registry names) for one layer, from its float64
    ``(C, d)`` class ``means`` and ``(C,)`` ``counts``; ``fuzziness`` from the layer's ``nc1``. A measure whose
    input is not given (``weight`` for ``nc3u_uni_dual``, ``layer_weight`` for ``w_align``, ``ood_mean`` for
    ``nc5_ood_dev``) is left out; with an empty class or coinciding means (``nc1`` NaN) the measures of the
    centred means are NaN."""
    num_classes = means.shape[0]
    global_mean = counts @ means.nan_to_num() / counts.sum()
    centred = means - global_mean
    usable = not math.isnan(nc1) and bool(torch.isfinite(centred).all())
    out: dict[str, float] = {}
    if "fuzziness" in names:
        out["fuzziness"] = num_classes * nc1
    if "nc2g_dist" in names or "nc2g_log" in names:
        uniformity = (
            hyperspherical_uniformity(centred)
            if usable
            else dict.fromkeys(("nc2g_dist", "nc2g_log"), math.nan)
        )
        out.update({name: value for name, value in uniformity.items() if name in names})
    if "erank_means" in names:
        out["erank_means"] = effective_rank(centred) if usable else math.nan
    if "nc3u_uni_dual" in names and weight is not None:
        out["nc3u_uni_dual"] = uniform_duality(weight, centred) if usable else math.nan
    if "w_align" in names and layer_weight is not None:
        out["w_align"] = weight_alignment(layer_weight, centred) if usable else math.nan
    if "nc5_ood_dev" in names and ood_mean is not None:
        out["nc5_ood_dev"] = ood_orthogonality(means, ood_mean)
    return out


def separation_law(fuzziness: list[float]) -> dict[str, float]:
    """He & Su's law of data separation: the least-squares line ``log D_l = a + slope * l`` over the layers
    ``l = 1..L`` (input to output) and its ``R^2``. ``ratio = exp(slope)`` is the factor by which each layer
    divides the fuzziness on the fitted line. Layers with a non-finite or non-positive ``D_l`` are left out;
    fewer than 2 left give NaN.

    Example:
        >>> {k: round(v, 6) for k, v in separation_law([8.0, 4.0, 2.0, 1.0]).items()}
        {'slope': -0.693147, 'intercept': 2.772589, 'r2': 1.0, 'ratio': 0.5, 'layers': 4.0}
    """
    points = [
        (layer, math.log(d)) for layer, d in enumerate(fuzziness, start=1) if math.isfinite(d) and d > 0
    ]
    if len(points) < 2:
        return {
            "slope": math.nan,
            "intercept": math.nan,
            "r2": math.nan,
            "ratio": math.nan,
            "layers": float(len(points)),
        }
    xs, ys = torch.tensor(points, dtype=torch.float64).T
    x_mean, y_mean = xs.mean(), ys.mean()
    slope = float(((xs - x_mean) * (ys - y_mean)).sum() / (xs - x_mean).square().sum())
    intercept = float(y_mean) - slope * float(x_mean)
    residual = float((ys - intercept - slope * xs).square().sum())
    spread = float((ys - y_mean).square().sum())
    r2 = 1.0 - residual / spread if spread > 0 else 1.0
    return {
        "slope": slope,
        "intercept": intercept,
        "r2": r2,
        "ratio": math.exp(slope),
        "layers": float(len(points)),
    }
