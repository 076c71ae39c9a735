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
    check_empty_classes,
    check_labels,
    check_min_class_count,
    measured_classes,
    metrics_from_statistics,
    unmeasured_classes_message,
)
from ncdepth.metrics.generalized import generalized_metrics
from ncdepth.metrics.probe import PROBE_MAX_DIM, Probe, add_moment, fit_probe, make_projection
from ncdepth.metrics.registry import check_measures
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
        empty_classes: what to do with the classes that have fewer than ``min_class_count`` samples over
            the whole pass 1 (all processes): ``"error"`` (default) raises at :meth:`next_phase`; ``"nan"``
            gives NaN for the class-mean metrics; ``"drop"`` measures every metric over the other classes
            only, as if the dropped classes and their samples were not in the data (pass 2 skips their
            samples; the classifier rows, the logit columns and the NCC centres are restricted to the measured
            classes), and each layer's result holds ``num_classes_present``. Token-level collapse on a
            vocabulary of which the data use a part needs ``"drop"``.
        rtol: relative eigenvalue cut-off of the pseudo-inverse of ``Sigma_B`` (default ``max(d, C) eps``).
        min_class_count: the fewest samples a class needs to be measured (default 1: any sample).
        measures: extra metrics by registry name (:data:`ncdepth.metrics.registry.EXTRA_NAMES`: the
            generalized measures of :mod:`ncdepth.metrics.generalized`, and ``probe_acc``, the linear probe of
            :mod:`ncdepth.metrics.probe`, whose ``k x k`` moment is then a state of every layer).
        layer_weights: ``{layer: weight}`` (or zero-argument callables) of linear maps reading those layers,
            for ``w_align``; a weight whose width is not the layer's analysed ``d`` (it reads the layer
            before ``pool="avg"``) gives no ``w_align``.
        ood_reference: a ``NeuralCollapse`` over out-of-distribution data (past its first pass, same layers)
            whose global means give ``nc5_ood_dev``.
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
        measures: tuple[str, ...] | list[str] = (),
        layer_weights: Mapping[str, Tensor | Callable[[], Tensor]] | None = None,
        ood_reference: NeuralCollapse | None = None,
        check_samples: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}")
        if pool not in POOLING:
            raise ValueError(f"pool must be one of {list(POOLING)}, got {pool!r}")
        check_empty_classes(empty_classes)
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
        self.measures = check_measures(measures)
        self.layer_weights = dict(layer_weights or {})
        self.ood_reference = ood_reference
        self._probes: dict[str, Probe] = {}
        self._projections: dict[str, Tensor | None] = {}
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
        # empty_classes="drop" with classes dropped: the measured class ids (C',) and the map from a label to
        # its index among them (-1: dropped), fixed by next_phase
        self._kept: Tensor | None = None
        self._renumber: Tensor | None = None
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

    @property
    def _measured(self) -> int:
        """The number of classes pass 2 measures: ``C``, or ``C'`` once classes were dropped."""
        return self.num_classes if self._kept is None else len(self._kept)

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
            self._add_state("sample_check", (num_classes,), device)
        if self._probing:
            projection = make_projection(dim, PROBE_MAX_DIM, 0, device)
            self._projections[layer] = projection
            size = dim if projection is None else projection.shape[0]
            self._add_state("moment", (size, size) if self.ncc_reference is None else (), device)
            self._add_state("probe_correct", (), device)

    @property
    def _probing(self) -> bool:
        return "probe_acc" in self.measures

    def _pass_two_sums(self, layer: str) -> PassTwoSums:
        """The pass-2 states of a layer (added to in place)."""
        return PassTwoSums(
            within_sq=self._state(layer, "within_sq"),
            scatter=self._state(layer, "scatter"),
            ncc_correct=self._state(layer, "ncc_correct"),
            probe=self._state(layer, "sample_check") if self.check_samples else None,
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
        return uses_full_scatter(dim, self._measured, self.full_covariance_max_dim)

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
            if self._probing and self.ncc_reference is None:
                add_moment(self._state(name, "moment"), h, self._projections[name])

    def _second_pass(self, batch: dict[str, Tensor], labels: Tensor, logits: Tensor | None) -> None:
        self.second_pass_counts += class_counts(labels, self.num_classes)
        self.second_pass_invalid_labels += count_invalid_labels(labels, self.num_classes)
        if logits is not None:
            self.logit_rows += labels.shape[0]
        if self._renumber is not None:  # classes dropped: their samples leave (one host sync on a GPU)
            renumbered = self._renumber[labels.clamp(0, self.num_classes - 1)]
            rows = (renumbered >= 0).nonzero().flatten()
            labels = renumbered.index_select(0, rows)
            batch = {name: h.index_select(0, rows) for name, h in batch.items()}
            if logits is not None:
                logits = logits.index_select(0, rows.to(logits.device))
                logits = logits.index_select(1, self._kept.to(logits.device))
        for name, h in batch.items():
            prediction = second_pass(
                h, labels, self._anchors[name], self._pass_two_sums(name), self._workspace
            )
            if logits is not None and name == self.classifier_layer:
                disagreements = (logits.to(h.device).argmax(1) != prediction).sum()
                self._state(name, "nc4_disagreements").add_(disagreements)
            if self._probing:
                self._state(name, "probe_correct").add_((self._probes[name].predict(h) == labels).sum())

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
        counts = self._reduced(self._state(next(iter(self._layers)), "counts"))  # the same for every layer
        missing = (counts < self.min_class_count).nonzero().flatten().tolist()
        if missing and self.empty_classes == "error":
            raise ValueError(
                unmeasured_classes_message(
                    missing, self.num_classes, self.min_class_count, f" in layers {self.layers}", "error"
                )
            )
        if missing and self.empty_classes == "drop":
            self._drop_classes(counts)
        self._counts = counts
        for name in self._layers:  # one layer at a time: one reduced C x d copy alive at once
            sums = self._reduced(self._state(name, "sums"))
            if not all_finite(sums):
                raise ValueError(f"layer {name!r}: features contain NaN or Inf")
            centres, absent = reference.get(name, (None, None))
            measured = counts
            if self._kept is not None:
                measured, sums = counts[self._kept], sums[self._kept]
                if centres is not None:
                    centres, absent = centres[self._kept], absent[self._kept]
            self._release_state(name, "sums")
            self._anchors[name] = make_anchors(
                measured,
                sums,
                self._dtypes[name],
                centres,
                absent,
                full_scatter=self._full_scatter(name),
                check_samples=self.check_samples,
            )
            if self._probing:
                self._probes[name] = self._probe(name, measured, sums)
            del sums
        self._phase = 2

    def _probe(self, layer: str, counts: Tensor, sums: Tensor) -> Probe:
        """The layer's probe: fitted here from the summed moment, or the reference's (a test split)."""
        if self.ncc_reference is not None:
            probes = self.ncc_reference._probes
            if layer not in probes:
                raise ValueError(
                    f"probe_acc on this split needs ncc_reference measuring probe_acc on {layer!r}"
                )
            return probes[layer]
        moment = self._reduced(self._state(layer, "moment"))
        self._release_state(layer, "moment")
        return fit_probe(counts, sums, moment, self._projections[layer])

    def _drop_classes(self, counts: Tensor) -> None:
        """``empty_classes="drop"``: keep the classes with at least ``min_class_count`` samples (``C'`` of
        them) and give every layer pass-2 states for ``C'`` classes (the same on every process: ``counts``
        are global)."""
        kept = measured_classes(counts, self.min_class_count)
        if len(kept) < 2:
            raise ValueError(
                "empty_classes='drop' needs 2 classes with at least min_class_count = "
                f"{self.min_class_count} samples, found {len(kept)}"
            )
        self._kept = kept
        self._renumber = torch.full((self.num_classes,), -1, dtype=torch.long, device=counts.device)
        self._renumber[kept] = torch.arange(len(kept), device=counts.device)
        for name, dim in self._layers.items():
            full = self._full_scatter(name)
            for kind, shape in (
                ("within_sq", (len(kept),)),
                ("scatter", scatter_shape(dim, len(kept), full=full)),
                ("ncc_correct", (len(kept),)),
                *((("sample_check", (len(kept),)),) if self.check_samples else ()),
            ):
                state = self._state(name, kind)
                setattr(self, self._state_name(name, kind), state.new_zeros(shape))

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
        if self._kept is None:
            return {name: anchors.means for name, anchors in self._anchors.items()}
        means = {}
        for name, anchors in self._anchors.items():  # dropped classes: NaN rows
            means[name] = anchors.means.new_full((self.num_classes, anchors.means.shape[1]), float("nan"))
            means[name][self._kept] = anchors.means
        return means

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
        if self._kept is not None:
            counts = counts[self._kept]
        if self.check_samples:
            for name in self._layers:
                mismatched = mismatched_classes(counts, self._anchors[name], self._pass_two_sums(name))
                if bool(mismatched.any()):
                    raise ValueError(describe_sample_mismatch(name, mismatched.nonzero().flatten().tolist()))
        return {
            name: finalize(
                counts,
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
        if weight is not None and self._kept is not None:
            weight = weight.index_select(0, self._kept.to(weight.device))
        results = {}
        for name, stats in self._statistics().items():
            result = metrics_from_statistics(
                stats,
                weight=weight if name == self.classifier_layer else None,
                rtol=self.rtol,
                empty_classes=self.empty_classes,
                min_class_count=self.min_class_count,
                layer=name,
            )
            results[name] = result | self._extra_metrics(name, stats, result, weight)
        return results

    def _extra_metrics(
        self, layer: str, stats: ClassStatistics, result: dict[str, float], weight: Tensor | None
    ) -> dict[str, float]:
        """The :attr:`measures` of one layer (registry order), from its statistics and ``result``."""
        if not self.measures:
            return {}
        layer_weight = self.layer_weights.get(layer)
        layer_weight = layer_weight() if callable(layer_weight) else layer_weight
        if layer_weight is not None and layer_weight.shape[-1] != self._layers[layer]:
            layer_weight = None  # the map reads the layer before pooling (pool="avg" on a conv map)
        ood_mean = None
        if self.ood_reference is not None and "nc5_ood_dev" in self.measures:
            ood_mean = self.ood_reference._statistics_mean(layer)
        out = generalized_metrics(
            stats.means,
            stats.counts,
            self.measures,
            nc1=result.get("nc1", float("nan")),
            weight=weight if layer == self.classifier_layer else None,
            layer_weight=layer_weight,
            ood_mean=ood_mean,
        )
        if self._probing:
            out["probe_acc"] = float(self._state(layer, "probe_correct") / stats.counts.sum())
        return {name: out[name] for name in self.measures if name in out}

    def _statistics_mean(self, layer: str) -> Tensor:
        """The layer's sample-weighted global mean over all processes (after :meth:`next_phase`)."""
        if self._phase != 2 or layer not in self._anchors:
            raise ValueError(f"ood_reference must be past its first pass and measure layer {layer!r}")
        means, counts = self._anchors[layer].means, self._counts
        present = counts > 0
        return counts[present] @ means[present] / counts.sum()

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
        self._kept = self._renumber = None
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
