"""A deliberately plain float64 reference for the neural-collapse metrics of docs/metrics.md.

Written from the formulas alone, in the style of Papyan, Han & Donoho's code: per-class Python loops, the
full ``d x d`` covariances ``Sigma_W`` and ``Sigma_B``, ``torch.linalg.pinv`` for ``Sigma_B^+`` and
nearest-class-centre predictions from explicit distances. It shares no code with ``ncdepth.metrics`` and is
meant to be obviously right, not fast: memory is ``O(N d + d^2)``.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

CLASS_MEAN_METRICS = (  # the metrics of the class means alone (not nc3, nc4, ncc_acc)
    "nc1",
    "nc1_rank_normalized",
    "nc1_trace_ratio",
    "cdnv",
    "nc2_equinorm",
    "nc2_equiangle",
    "nc2_maxangle",
    "nc2_etf",
)


def reference_neural_collapse(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    layer_weight: Tensor | None = None,
    ood_mean: Tensor | None = None,
    extra: bool = False,
    probe_ridge: float = 1e-6,
) -> dict[str, float]:
    """Every metric of docs/metrics.md for one layer, by the textbook formulas, in float64.

    ``features`` ``(N, ...)`` are flattened to ``(N, d)``; ``labels`` ``(N,)`` lie in ``0..C-1`` and every
    class must have a sample. With ``H_c`` the rows of class ``c``:

    * ``mu_c = mean(H_c)``, ``mu_G = mean(H)``, ``M~ = [mu_c - mu_G]_c`` (``d x C``),
    * ``Sigma_W = (1/N) sum_c (H_c - mu_c)^T (H_c - mu_c)``, ``Sigma_B = (1/C) M~ M~^T``,
    * ``nc1 = Tr(Sigma_W pinv(Sigma_B)) / C`` with ``rtol = max(d, C) * eps_float64``,
    * ``nc1_rank_normalized = Tr(Sigma_W pinv(Sigma_B)) / rank(Sigma_B)`` (the same ``rtol``),
    * ``nc1_trace_ratio = Tr(Sigma_W) / Tr(Sigma_B)``,
    * ``cdnv = mean_{c<c'} (var_c + var_c') / (2 ||mu_c - mu_c'||^2)``, ``var_c = mean ||h - mu_c||^2``,
    * ``ncc_acc``: fraction with ``argmin_c ||h - mu_c|| == y``,
    * NC2: ``std/mean`` of ``||mu_c - mu_G||``, std and ``mean |cos + 1/(C-1)|`` of the cosines over
      ordered pairs ``c != c'``, and ``|| G/||G|| - (I - 11^T/C)/||I - 11^T/C|| ||_F`` with ``G = M~^T M~``,
    * with ``weight`` ``W`` (``C x d``): ``nc3 = || W^T/||W|| - M~/||M~|| ||_F^2`` and ``nc4`` = fraction
      where ``argmax(W h + bias)`` differs from the NCC prediction;
    * with ``extra``, the registry's extra metrics (``ncdepth.metrics.registry.EXTRA_NAMES``): ``fuzziness = Tr(Sigma_W pinv(Sigma_B))``; with ``u_c = m_c/||m_c||``,
      ``nc2g_dist`` and ``nc2g_log`` the population variances over pairs ``c < c'`` of ``||u_c - u_c'||`` and
      ``-log ||u_c - u_c'||``; ``erank_means = exp(entropy)`` of the singular values of ``M~`` normalised to
      sum 1; with ``weight``: ``nc3u_uni_dual = var(w_c . m_c)`` (ddof 1); with ``layer_weight`` ``A``:
      ``w_align = <A^T A, Sigma_B> / (||A^T A|| ||Sigma_B||)`` from the ``d x d`` matrices; with ``ood_mean``:
      ``nc5_ood_dev = mean_c |cos(mu_c, ood_mean)|``;
    * ``probe_acc``: train accuracy of the ridge probe solved by ``torch.linalg.lstsq`` on the stacked
      system ``[X; sqrt(lam) I] V = [E - mean E; 0]`` (``X`` the centred features, ``E`` one-hot,
      ``lam = probe_ridge * Tr(X^T X) / d``), predicting ``argmax (h - mean h) V + mean E``.
    """
    h = features.reshape(features.shape[0], -1).to(torch.float64)
    labels = labels.to(device=h.device, dtype=torch.long)
    num_samples, dim = h.shape
    classes = range(num_classes)

    rows = [h[labels == c] for c in classes]
    if any(len(r) == 0 for r in rows):
        raise ValueError("every class needs at least one sample")
    means = [r.mean(0) for r in rows]
    global_mean = h.mean(0)
    centred = torch.stack([m - global_mean for m in means], dim=1)  # M~, d x C

    sigma_w = torch.zeros(dim, dim, dtype=torch.float64, device=h.device)
    for r, m in zip(rows, means, strict=True):
        sigma_w += (r - m).T @ (r - m)
    sigma_w /= num_samples
    sigma_b = torch.zeros(dim, dim, dtype=torch.float64, device=h.device)
    for c in classes:
        sigma_b += torch.outer(centred[:, c], centred[:, c])
    sigma_b /= num_classes

    rtol = max(dim, num_classes) * torch.finfo(torch.float64).eps
    sigma_b_pinv = torch.linalg.pinv(sigma_b, hermitian=True, rtol=rtol)
    variances = [((r - m) ** 2).sum(1).mean() for r, m in zip(rows, means, strict=True)]

    cdnv_terms = [
        (variances[a] + variances[b]) / (2 * ((means[a] - means[b]) ** 2).sum())
        for a, b in itertools.combinations(classes, 2)
    ]

    distances = torch.stack([((h - m) ** 2).sum(1) for m in means], dim=1)  # N x C
    ncc_prediction = distances.argmin(1)

    norms = torch.stack([centred[:, c].norm() for c in classes])
    cosines = torch.stack(
        [centred[:, a] @ centred[:, b] / (norms[a] * norms[b]) for a, b in itertools.permutations(classes, 2)]
    )
    gram = centred.T @ centred
    simplex = torch.eye(num_classes, dtype=torch.float64, device=h.device) - 1.0 / num_classes

    out = {
        "nc1": float(torch.trace(sigma_w @ sigma_b_pinv) / num_classes),
        "nc1_rank_normalized": float(
            torch.trace(sigma_w @ sigma_b_pinv) / torch.linalg.matrix_rank(sigma_b, hermitian=True, rtol=rtol)
        ),
        "nc1_trace_ratio": float(torch.trace(sigma_w) / torch.trace(sigma_b)),
        "cdnv": float(torch.stack(cdnv_terms).mean()),
        "ncc_acc": float((ncc_prediction == labels).double().mean()),
        "nc2_equinorm": float(norms.std() / norms.mean()),
        "nc2_equiangle": float(cosines.std()),
        "nc2_maxangle": float((cosines + 1.0 / (num_classes - 1)).abs().mean()),
        "nc2_etf": float(torch.linalg.norm(gram / gram.norm() - simplex / simplex.norm())),
    }
    if weight is not None:
        w = weight.detach().to(h)
        out["nc3"] = float(((w.T / w.norm() - centred / centred.norm()) ** 2).sum())
        logits = h @ w.T
        if bias is not None:
            logits = logits + bias.detach().to(h)
        out["nc4"] = float((logits.argmax(1) != ncc_prediction).double().mean())
    if extra:
        out |= _reference_extra(h, labels, num_classes, weight, layer_weight, ood_mean, probe_ridge)
    return out


def _reference_extra(
    h: Tensor,
    labels: Tensor,
    num_classes: int,
    weight: Tensor | None,
    layer_weight: Tensor | None,
    ood_mean: Tensor | None,
    probe_ridge: float,
) -> dict[str, float]:
    num_samples, dim = h.shape
    classes = range(num_classes)
    means = [h[labels == c].mean(0) for c in classes]
    global_mean = h.mean(0)
    centred = torch.stack([m - global_mean for m in means], dim=1)
    sigma_w = sum((h[labels == c] - means[c]).T @ (h[labels == c] - means[c]) for c in classes) / num_samples
    sigma_b = centred @ centred.T / num_classes
    rtol = max(dim, num_classes) * torch.finfo(torch.float64).eps
    out = {"fuzziness": float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True, rtol=rtol)))}
    if weight is not None:
        w = weight.detach().to(h)
        out["nc3u_uni_dual"] = float(torch.stack([w[c] @ centred[:, c] for c in classes]).var())
    units = [centred[:, c] / centred[:, c].norm() for c in classes]
    pair_distances = torch.stack(
        [(units[a] - units[b]).norm() for a, b in itertools.combinations(classes, 2)]
    )
    out["nc2g_dist"] = float(pair_distances.var(correction=0))
    out["nc2g_log"] = float((-pair_distances.log()).var(correction=0))
    singular = torch.linalg.svdvals(centred)
    p = singular[singular > 1e-12 * singular.max()] / singular.sum()
    out["erank_means"] = float(torch.exp(-(p * p.log()).sum()))
    if layer_weight is not None:
        a = layer_weight.detach().to(h)
        ata = a.T @ a
        out["w_align"] = float((ata * sigma_b).sum() / (ata.norm() * sigma_b.norm()))
    if ood_mean is not None:
        ood = ood_mean.detach().to(h)
        out["nc5_ood_dev"] = float(
            torch.stack([(m @ ood / (m.norm() * ood.norm())).abs() for m in means]).mean()
        )
    x = h - global_mean
    targets = torch.nn.functional.one_hot(labels, num_classes).to(h)
    lam = probe_ridge * float(torch.trace(x.T @ x)) / dim
    stacked = torch.cat([x, lam**0.5 * torch.eye(dim, dtype=h.dtype, device=h.device)])
    rhs = torch.cat(
        [targets - targets.mean(0), torch.zeros(dim, num_classes, dtype=h.dtype, device=h.device)]
    )
    probe = torch.linalg.lstsq(stacked, rhs, driver="gelsd").solution
    out["probe_acc"] = float(((x @ probe + targets.mean(0)).argmax(1) == labels).double().mean())
    return out
