"""``NeuralCollapse``: a torchmetrics ``Metric`` that streams the metrics of ``docs/metrics.md`` for many
layers at once."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from ncdepth.metrics.functional import (
    EMPTY_CLASS_POLICIES,
    check_labels,
    check_min_class_count,
    metrics_from_statistics,
)
from ncdepth.metrics.stats import (
    POOLING,
    Anchors,
    ClassStatistics,
    PassTwoSums,
    Workspace,
    add_class_sums,
    all_finite,
    available_bytes,
    check_scatter_fits,
    class_counts,
    count_invalid_labels,
    finalize,
    flatten_features,
    make_anchors,
    mismatched_classes,
    scatter_bytes,
    scatter_shape,
    second_pass,
    uses_full_scatter,
)
from ncdepth.metrics.validation import (
    check_feature_tensor,
    check_logits,
    describe_pass_mismatch,
    describe_sample_mismatch,
    resolve_classifier_layer,
)


class NeuralCollapse(Metric):
    """Per-layer neural-collapse metrics (``nc1`` ... ``nc4``, ``cdnv``, ``ncc_acc``) over a whole data set.

    The metric makes two passes over the same samples (any batching, any order, any sharding across
    processes)::

        metric = NeuralCollapse(num_classes=10, classifier_layer="penultimate")
        for x, y in loader:                      # pass 1: class counts and sums
            logits, layers = model(x)            # layers: {name: (B, ...) embedding}
            metric.update(layers, y)
        metric.next_phase()                      # means fixed and, under DDP, summed across processes
        for x, y in loader:                      # pass 2: everything else
            logits, layers = model(x)
            metric.update(layers, y, logits=logits)
        metric.compute()                         # {layer: {metric_name: value}}

    For a model that does not return its layers (a torchvision ``resnet18``, a transformer),
    :class:`~ncdepth.metrics.LayerTap` collects ``{name: (B, d)}`` from named modules with forward hooks.

    All states are float64 sums with ``dist_reduce_fx="sum"``; ``update`` never synchronises the host with the
    device. Shapes, layer names, the classifier layer and the logits are checked at the first :meth:`update`
    that sees them; checks that need values (NaN/Inf features, labels out of range, empty classes, pass 2 not
    matching pass 1) raise ``ValueError`` at :meth:`next_phase` or :meth:`compute`, naming the layer and
    saying what was seen. Memory per layer is ``O(C d + min(C, d)^2)``: one float64 ``C x d`` array (the class
    sums in pass 1, freed by :meth:`next_phase`, which keeps the means instead); ``Sigma_W`` is kept only
    through ``u_k^T Sigma_W u_k`` along the ``C`` eigenvectors ``u_k`` of ``Sigma_B`` (fixed by
    :meth:`next_phase`), which is all that ``Tr(Sigma_W Sigma_B^+)`` needs, or, for layers with ``d < C`` or
    ``d <= full_covariance_max_dim``, as the full ``d x d`` within-class scatter (see
    :meth:`within_class_covariance`). Nothing ``C x C`` is formed when ``C > d``, so ``C`` can be a
    vocabulary. The torchmetrics defaults of the states are 0-dim (:meth:`reset` re-creates the shapes), so
    they do not double the memory. Formulas and conventions: ``docs/metrics.md``.

    Args:
        num_classes: ``C``.
        classifier_layer: the layer that feeds the classifier, where ``nc3``/``nc4`` are measured. Checked at
            the first update: it must be one of the layers. When omitted it is inferred: the one layer whose
            width ``d`` matches ``classifier_weight`` (an error, listing the candidates, when several do), or
            the only layer; with several layers and no weight, passing ``logits`` is an error.
        classifier_weight: the ``C x d`` classifier weight, or a zero-argument callable returning it
            (its shape is checked at the first update, its values read at :meth:`compute`); enables ``nc3``.
        ncc_reference: another ``NeuralCollapse`` (past its first pass) whose class means are the
            nearest-class centres — the *train* split's metric when this one measures the test split
            (``ncc_acc`` and ``nc4``).
        pool: ``"flatten"`` (default) keeps every coordinate of a conv map; ``"avg"`` global-average-pools it
            (``(B, K, H, W) -> (B, K)``). Per-layer pooling: :class:`~ncdepth.metrics.LayerTap`.
        full_covariance_max_dim: keep the full ``d x d`` within-class scatter for layers with ``d`` up to
            this. A ``d x d`` state that would not fit in the device's free memory (with one working copy) is
            refused at the first update, before it is allocated (``MemoryError``, with the bytes it needs).
        empty_classes: ``"error"`` (default) or ``"nan"``; see :mod:`ncdepth.metrics.functional`.
        rtol: relative eigenvalue cut-off of the pseudo-inverse of ``Sigma_B`` (default ``max(d, C) eps``).
        min_class_count: classes with fewer samples are left out of ``cdnv``, ``nc2_equiangle`` and
            ``nc2_maxangle`` (rare tokens); above 1 each layer's result also holds ``pair_classes``, the
            number of classes kept.
        check_samples: check at :meth:`compute` that pass 2 went over the samples of pass 1, not only the
            same class counts (:func:`~ncdepth.metrics.stats.mismatched_classes`: one ``B x d`` product per
            batch and a ``(C,)`` state per layer; default on).

    Devices and precision: the states are created on the device of the first batch's features (the
    metric moves there), everything it makes follows that device, and ``.to()`` moves all it holds (the
    pass-2 anchors and buffers too). Features of any floating dtype are accepted (float16 and bfloat16 are
    worked on in float32); integer features and numpy arrays are refused by name. ``update`` turns autocast
    off for its own arithmetic, so a call from a ``validation_step`` under mixed precision gives the same
    results. Under DDP the sums are reduced with ``all_reduce`` (one copy of each state, not one per
    process), and whether a full ``d x d`` scatter fits is decided on the smallest free memory over processes,
    so that all of them raise or none.

    Numerics: with float32 features, per-batch arithmetic is float32 and every sum is float64; the means are
    removed from each sample before squaring (see :mod:`ncdepth.metrics.stats`). If TF32 matmuls are enabled
    globally on an Ampere+ GPU, the projections and the float32 products of the full scatter (and hence
    ``nc1``) carry ~1e-3 relative error.

    Example:
        >>> import torch
        >>> from ncdepth.metrics import NeuralCollapse
        >>> generator = torch.Generator().manual_seed(0)
        >>> labels = torch.arange(30) % 3
        >>> means = torch.randn(3, 8, generator=generator)
        >>> hidden = means[labels] + 0.1 * torch.randn(30, 8, generator=generator)
        >>> layers = {"hidden": hidden, "penultimate": hidden[:, :4]}
        >>> weight = torch.randn(3, 4, generator=generator)
        >>> logits = layers["penultimate"] @ weight.T
        >>> metric = NeuralCollapse(3, classifier_weight=weight)  # "penultimate" is the 4-wide layer
        >>> for batch in (slice(0, 16), slice(16, 30)):
        ...     metric.update({name: h[batch] for name, h in layers.items()}, labels[batch])
        >>> metric.next_phase()
        >>> for batch in (slice(0, 16), slice(16, 30)):
        ...     batch_layers = {name: h[batch] for name, h in layers.items()}
        ...     metric.update(batch_layers, labels[batch], logits=logits[batch])
        >>> result = metric.compute()
        >>> metric.classifier_layer, sorted(set(result["penultimate"]) - set(result["hidden"]))
        ('penultimate', ['nc3', 'nc4'])
        >>> result["hidden"]["ncc_acc"]
        1.0
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(
        self,
        num_classes: int,
        *,
        classifier_layer: str | None = None,
        classifier_weight: Tensor | Callable[[], Tensor] | None = None,
        ncc_reference: NeuralCollapse | None = None,
        pool: str = "flatten",
        full_covariance_max_dim: int = 0,
        empty_classes: str = "error",
        rtol: float | None = None,
        min_class_count: int = 1,
        check_samples: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}")
        if pool not in POOLING:
            raise ValueError(f"pool must be one of {list(POOLING)}, got {pool!r}")
        if empty_classes not in EMPTY_CLASS_POLICIES:
            raise ValueError(
                f"empty_classes must be one of {list(EMPTY_CLASS_POLICIES)}, got {empty_classes!r}"
            )
        check_min_class_count(min_class_count)
        self.num_classes = int(num_classes)
        self.classifier_layer = classifier_layer
        self.classifier_weight = classifier_weight
        self.ncc_reference = ncc_reference
        self.pool = pool
        self.full_covariance_max_dim = full_covariance_max_dim
        self.empty_classes = empty_classes
        self.rtol = rtol
        self.min_class_count = min_class_count
        self.check_samples = bool(check_samples)
        scalar = torch.zeros((), dtype=torch.float64)
        self.add_state("invalid_labels", scalar.clone(), dist_reduce_fx="sum")
        self.add_state("logit_rows", scalar.clone(), dist_reduce_fx="sum")
        self.add_state("second_pass_invalid_labels", scalar.clone(), dist_reduce_fx="sum")
        self.add_state(
            "second_pass_counts", torch.zeros(self.num_classes, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self._layers: dict[str, int] = {}  # layer name -> d, in first-update order
        self._dtypes: dict[str, torch.dtype] = {}  # layer name -> per-batch working precision
        self._shapes: dict[str, tuple[int, ...]] = {}  # per-layer state name -> shape
        self._anchors: dict[str, Anchors] = {}
        self._counts: Tensor | None = None
        self._phase = 1
        self._workspace = Workspace()

    # ------------------------------------------------------------------ state bookkeeping
    @property
    def phase(self) -> int:
        """1 while class sums are accumulated, 2 after :meth:`next_phase`."""
        return self._phase

    @property
    def layers(self) -> list[str]:
        return list(self._layers)

    def _state_name(self, layer: str, kind: str) -> str:
        return f"_{kind}_{list(self._layers).index(layer)}"

    def _state(self, layer: str, kind: str) -> Tensor:
        return getattr(self, self._state_name(layer, kind))

    def _add_state(self, kind: str, shape: tuple[int, ...], device: torch.device) -> None:
        """A float64 sum of ``shape``, registered with a 0-dim default (torchmetrics keeps a copy of every
        default; :meth:`reset` re-creates the shape)."""
        name = f"_{kind}_{len(self._layers) - 1}"
        self.add_state(name, torch.zeros((), dtype=torch.float64, device=device), dist_reduce_fx="sum")
        setattr(self, name, torch.zeros(shape, dtype=torch.float64, device=device))
        self._shapes[name] = shape

    def _full_scatter(self, layer: str) -> bool:
        return self._full_dim(self._layers[layer])

    def _register(self, layer: str, h: Tensor) -> None:
        dim, device = h.shape[1], h.device
        self._layers[layer] = dim
        self._dtypes[layer] = h.dtype
        num_classes = self.num_classes
        full = self._full_scatter(layer)
        self._add_state("counts", (num_classes,), device)
        self._add_state("sums", (num_classes, dim), device)  # pass 1 only
        self._add_state("within_sq", (num_classes,), device)
        self._add_state("scatter", scatter_shape(dim, num_classes, full=full), device)
        self._add_state("ncc_correct", (num_classes,), device)
        self._add_state("nc4_disagreements", (), device)
        if self.check_samples:
            self._add_state("probe", (num_classes,), device)

    def _pass_two_sums(self, layer: str) -> PassTwoSums:
        """The pass-2 states of a layer (added to in place)."""
        return PassTwoSums(
            within_sq=self._state(layer, "within_sq"),
            scatter=self._state(layer, "scatter"),
            ncc_correct=self._state(layer, "ncc_correct"),
            probe=self._state(layer, "probe") if self.check_samples else None,
        )

    # ------------------------------------------------------------------ the two passes
    def update(
        self,
        features: Mapping[str, Tensor] | Tensor,
        labels: Tensor,
        logits: Tensor | None = None,
    ) -> None:
        """Add one batch.

        Args:
            features: ``{layer: (B, ...)}`` embeddings, the same layers in the same order at every update (or
                one tensor, then named ``"features"``).
            labels: ``(B,)`` integer labels in ``0..C-1``.
            logits: ``(B, C)`` network outputs; used in pass 2 for ``nc4`` at the classifier layer (in pass 1
                only their shape is checked).
        """
        layers = dict(features) if isinstance(features, Mapping) else {"features": features}
        if not layers:
            raise ValueError("features must hold at least one layer")
        batch = {
            name: flatten_features(check_feature_tensor(name, value), self.pool)
            for name, value in layers.items()
        }
        rows = next(iter(batch.values())).shape[0]
        check_labels(labels, rows, self.num_classes)
        for name, h in batch.items():
            if h.shape[0] != rows:
                raise ValueError(f"layer {name!r} has {h.shape[0]} rows but the batch has {rows} labels")
        if logits is not None:
            check_logits(logits, rows, self.num_classes)
        labels = labels.to(device=next(iter(batch.values())).device, dtype=torch.long)
        if not self._layers:
            self._register_layers(batch)
        self._check_layers(batch)
        if logits is not None and self.classifier_layer is None:
            raise ValueError(
                "logits were given, so nc4 needs the layer that feeds the classifier, but classifier_layer "
                f"is not set and there are {len(self._layers)} layers {list(self._layers)}: pass "
                "NeuralCollapse(..., classifier_layer=<one of them>) or classifier_weight=..."
            )
        if self._phase == 1:
            self._first_pass(batch, labels)
        else:
            self._second_pass(batch, labels, logits)

    def _register_layers(self, batch: Mapping[str, Tensor]) -> None:
        """First update: move the metric to the features' device, refuse full scatters that do not fit
        (every process alike), register every layer's states, then resolve (and check) the classifier
        layer."""
        dims = {name: h.shape[1] for name, h in batch.items()}
        weight = self._weight()
        self.classifier_layer = resolve_classifier_layer(
            dims, self.classifier_layer, None if weight is None else weight.detach(), self.num_classes
        )
        device = next(iter(batch.values())).device
        self.to(device)
        full = {name: dim for name, dim in dims.items() if self._full_dim(dim)}
        if full:
            free = self._smallest_over_processes(available_bytes(device), device)
            for name, dim in full.items():
                check_scatter_fits(dim, device, name, free)
                free -= scatter_bytes(dim)
        for name, h in batch.items():
            self._register(name, h)

    def _full_dim(self, dim: int) -> bool:
        return uses_full_scatter(dim, self.num_classes, self.full_covariance_max_dim)

    def _smallest_over_processes(self, value: int, device: torch.device) -> int:
        """The minimum of ``value`` over processes (itself when not distributed): a memory decision every
        process takes alike, so that none raises while the others wait in a collective."""
        if not (self.dist_sync_on_step or self.sync_on_compute) or not _distributed():
            return value
        smallest = torch.tensor(float(value), dtype=torch.float64, device=device)
        torch.distributed.all_reduce(smallest, op=torch.distributed.ReduceOp.MIN, group=self.process_group)
        return int(smallest.item())

    def _weight(self) -> Tensor | None:
        weight = self.classifier_weight
        if callable(weight):
            weight = weight()
        if weight is not None and not isinstance(weight, Tensor):
            raise TypeError(
                f"classifier_weight must be a Tensor or a callable returning one, got {type(weight).__name__}"
            )
        return weight

    def _first_pass(self, batch: dict[str, Tensor], labels: Tensor) -> None:
        self.invalid_labels += count_invalid_labels(labels, self.num_classes)
        for name, h in batch.items():
            add_class_sums(self._state(name, "counts"), self._state(name, "sums"), h, labels, self._workspace)

    def _second_pass(self, batch: dict[str, Tensor], labels: Tensor, logits: Tensor | None) -> None:
        self.second_pass_counts += class_counts(labels, self.num_classes)
        self.second_pass_invalid_labels += count_invalid_labels(labels, self.num_classes)
        if logits is not None:
            self.logit_rows += labels.shape[0]
        for name, h in batch.items():
            prediction = second_pass(
                h, labels, self._anchors[name], self._pass_two_sums(name), self._workspace
            )
            if logits is not None and name == self.classifier_layer:
                disagreements = (logits.to(h.device).argmax(1) != prediction).sum()
                self._state(name, "nc4_disagreements").add_(disagreements)

    def _check_layers(self, batch: Mapping[str, Tensor]) -> None:
        if list(batch) != list(self._layers):
            raise ValueError(
                f"expected layers {list(self._layers)} (those of the first update, in that order), "
                f"got {list(batch)}"
            )
        for name, h in batch.items():
            if h.shape[1] != self._layers[name]:
                raise ValueError(f"layer {name!r} has dimension {h.shape[1]}, expected {self._layers[name]}")

    def next_phase(self) -> None:
        """End pass 1: sum the class counts and sums over processes, check them, and fix the means; the
        class sums are then freed (pass 2 must see the same samples)."""
        if self._phase != 1:
            raise RuntimeError("next_phase() was already called; call reset() to start over")
        if not self._layers:
            raise RuntimeError("next_phase() before any update(): pass 1 saw no data")
        invalid = float(self._reduced(self.invalid_labels))
        if invalid > 0:
            raise ValueError(
                f"labels must lie in 0..{self.num_classes - 1}: {int(invalid)} pass-1 labels lie outside"
            )
        reference = self._reference_centres()
        for name in self._layers:  # one layer at a time: one reduced C x d copy alive at once
            counts = self._reduced(self._state(name, "counts"))
            sums = self._reduced(self._state(name, "sums"))
            if not all_finite(sums):
                raise ValueError(f"layer {name!r}: features contain NaN or Inf")
            empty = (counts == 0).nonzero().flatten().tolist()
            if empty and self.empty_classes == "error":
                raise ValueError(
                    f"classes {empty} have no samples in layer {name!r}; pass "
                    "empty_classes='nan' to get NaN for the metrics that need every class mean"
                )
            centres, absent = reference.get(name, (None, None))
            self._release_state(name, "sums")
            self._anchors[name] = make_anchors(
                counts,
                sums,
                self._dtypes[name],
                centres,
                absent,
                full_scatter=self._full_scatter(name),
                check_samples=self.check_samples,
            )
            del sums
            self._counts = counts
        self._phase = 2

    def _release_state(self, layer: str, kind: str) -> None:
        """Replace a per-layer state by a 0-dim zero (:meth:`reset` re-creates its shape)."""
        name = self._state_name(layer, kind)
        setattr(self, name, torch.zeros((), dtype=torch.float64, device=getattr(self, name).device))

    def _reduced(self, tensor: Tensor) -> Tensor:
        """The sum of ``tensor`` over all processes (itself when not distributed), reduced in place of one
        copy (no ``world x`` gather)."""
        if not (self.dist_sync_on_step or self.sync_on_compute) or not _distributed():
            return tensor
        total = tensor.clone()
        torch.distributed.all_reduce(total, group=self.process_group)
        return total

    def _reference_centres(self) -> dict[str, tuple[Tensor, Tensor]]:
        if self.ncc_reference is None:
            return {}
        means = self.ncc_reference.class_means()
        missing = [name for name in self._layers if name not in means]
        if missing:
            raise ValueError(f"ncc_reference has no layers {missing}")
        return {name: (torch.nan_to_num(m), m.isnan().any(1)) for name, m in means.items()}

    # ------------------------------------------------------------------ results
    def class_means(self) -> dict[str, Tensor]:
        """``{layer: (C, d)}`` float64 class means over all processes, NaN rows for empty classes
        (available after :meth:`next_phase`)."""
        if self._phase != 2:
            raise RuntimeError("class means are fixed by next_phase(); call it first")
        return {name: anchors.means for name, anchors in self._anchors.items()}

    def class_counts(self) -> Tensor:
        """``(C,)`` float64 number of samples of each class over all processes (the same for every
        layer; available after :meth:`next_phase`)."""
        if self._phase != 2 or self._counts is None:
            raise RuntimeError("class counts are fixed by next_phase(); call it first")
        return self._counts.clone()

    def _statistics(self) -> dict[str, ClassStatistics]:
        """The finished float64 sufficient statistics of every layer, from the current states."""
        if self._phase != 2:
            raise RuntimeError("compute() needs both passes: call next_phase() and pass 2 first")
        counts = self._state(next(iter(self._layers)), "counts")
        invalid = float(self.second_pass_invalid_labels)
        if invalid > 0 or not torch.equal(self.second_pass_counts, counts):
            raise ValueError(
                describe_pass_mismatch(counts, self.second_pass_counts, invalid, self.num_classes)
            )
        with_logits = float(self.logit_rows) > 0
        if with_logits and self.logit_rows != counts.sum():
            raise ValueError(
                f"pass 2 must pass logits with every batch or with none: {int(self.logit_rows)} of "
                f"{int(counts.sum())} samples came with logits"
            )
        for name in self._layers:
            if not bool(torch.isfinite(self._state(name, "within_sq")).all()):
                raise ValueError(f"layer {name!r}: features contain NaN or Inf in pass 2")
            if self.check_samples:
                sums = self._pass_two_sums(name)
                mismatched = mismatched_classes(counts, self._anchors[name], sums)
                if bool(mismatched.any()):
                    raise ValueError(describe_sample_mismatch(name, mismatched.nonzero().flatten().tolist()))
        return {
            name: finalize(
                self._state(name, "counts"),
                self._anchors[name],
                self._pass_two_sums(name),
                self._state(name, "nc4_disagreements")
                if with_logits and name == self.classifier_layer
                else None,
            )
            for name in self._layers
        }

    def compute(self) -> dict[str, dict[str, float]]:
        """``{layer: {metric: value}}`` for every layer, metric names as in ``docs/metrics.md``; ``nc3`` and
        ``nc4`` only for the classifier layer, when the classifier weight and the logits were given."""
        weight = self._weight()
        return {
            name: metrics_from_statistics(
                stats,
                weight=weight if name == self.classifier_layer else None,
                rtol=self.rtol,
                empty_classes=self.empty_classes,
                min_class_count=self.min_class_count,
                layer=name,
            )
            for name, stats in self._statistics().items()
        }

    def within_class_covariance(self, layer: str) -> Tensor:
        """The full ``d x d`` pooled ``Sigma_W`` (summed over processes) of a layer that keeps it
        (``d < C`` or ``d <= full_covariance_max_dim``), e.g. for its spectrum."""
        if layer not in self._layers or not self._full_scatter(layer):
            raise ValueError(
                f"layer {layer!r} keeps no full covariance; layers that do: "
                f"{[name for name in self._layers if self._full_scatter(name)]} "
                "(raise full_covariance_max_dim to include more)"
            )
        with self.sync_context(should_sync=_distributed()):
            stats = self._statistics()[layer]
        return stats.full_scatter / stats.counts.sum()

    def reset(self) -> None:
        """Forget all data and return to pass 1 (layers stay registered)."""
        super().reset()
        for name, shape in self._shapes.items():
            setattr(self, name, torch.zeros(shape, dtype=torch.float64, device=getattr(self, name).device))
        self._anchors = {}
        self._counts = None
        self._phase = 1
        self._workspace.clear()

    def _apply(self, fn: Callable, exclude_state: Any = "") -> NeuralCollapse:
        """``.to()``, ``.cuda()``, ...: torchmetrics moves the states; this moves the rest (the pass-2
        anchors, the class counts) to the same device, keeping their dtypes, and releases the buffers."""
        this = super()._apply(fn, exclude_state)
        device = this.device
        this._anchors = {name: _moved(anchors, device) for name, anchors in this._anchors.items()}
        if this._counts is not None:
            this._counts = this._counts.to(device)
        this._workspace.clear()
        return this

    def _sync_dist(self, dist_sync_fn: Callable | None = None, process_group: Any | None = None) -> None:
        """Sum every state over processes in place with ``all_reduce`` (all are sums): torchmetrics' default
        gathers every process's copy of every state first, ``world`` times the memory of a ``d x d``
        scatter."""
        group = process_group or self.process_group
        for name in self._defaults:
            torch.distributed.all_reduce(getattr(self, name), group=group)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("NeuralCollapse needs two passes: use update(), next_phase() and compute()")


def _moved(anchors: Anchors, device: torch.device) -> Anchors:
    """``anchors`` with every tensor on ``device`` (dtypes kept)."""
    fields = {
        field.name: value.to(device)
        for field in dataclasses.fields(anchors)
        if isinstance(value := getattr(anchors, field.name), Tensor)
    }
    return dataclasses.replace(anchors, **fields)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()
