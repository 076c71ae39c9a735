"""``LayerTap``: per-layer embeddings of any ``nn.Module``, collected from named modules by forward hooks.

A model that returns only its logits (a torchvision ``resnet18``, ``vgg11``, a transformer) gives
``(logits, {layer: (B, d)})`` without a hand-written ``forward()``::

    with LayerTap(model, ["layer1", "layer2", "layer3", "layer4", "avgpool"], pool={"layer1": "avg"}) as tap:
        logits = model(x)
        metric.update(tap.features, y, logits=logits)

Contract:

* **names** are those of ``model.named_modules()``; an unknown name raises ``ValueError`` at construction,
  listing close matches;
* **selection**: a module's output is used as is when it is a tensor; a tuple or list gives its *first*
  element (``nn.MultiheadAttention``, ``nn.LSTM``, blocks returning ``(hidden, extras)``); anything else
  needs ``select`` — a callable ``output -> Tensor``, an ``int`` index or a ``str`` key, for all layers or
  per layer;
* **pooling**, per layer: ``"flatten"`` (default: ``(B, ...) -> (B, prod ...)``, a conv map ``(B, K, H, W)``
  gives ``d = K*H*W``), ``"avg"`` (global average over the spatial axes of a channel-first map,
  ``(B, K, H, W) -> (B, K)``, as ``NeuralCollapse(pool="avg")``), or a callable ``(B, ...) -> (B, d)``
  (e.g. ``lambda h: h.mean(1)`` for the mean over the tokens of a ``(B, T, d)`` sequence);
* **tokens** (``tokens=True``): every selected output must be ``(B, T, ...)`` and every position is a
  sample: :attr:`LayerTap.features` gives ``(B*T, d)`` and :meth:`LayerTap.token_features` with a ``(B, T)``
  mask gives ``(n, d)``, ``n = mask.sum()`` (pass ``labels[mask]`` and ``logits[mask]`` alongside). The
  host waits for the device once per call, to learn ``n`` (one ``nonzero`` of the mask shared by every
  layer, which then takes its rows with ``index_select``); without a mask nothing waits;
* **nothing kept across batches**: every forward of ``model`` starts from an empty dict, so
  :attr:`LayerTap.features` holds the latest forward only; a tapped module that did not run in it, or ran
  more than once (a reused module: its output is ambiguous), raises when the features are read;
* **copies**: features are detached (``detach=True``) and never share memory with the module's output, so an
  in-place operation after the tapped module (``ReLU(inplace=True)``) cannot change them;
* **hooks removed on exit** of the ``with`` block (or by :meth:`LayerTap.remove`), exceptions included; the
  latest features stay readable after exit. Re-entering the ``with`` block attaches the hooks again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ncdepth.metrics.validation import close_matches

Selector = Callable[[Any], Tensor] | int | str
"""Picks one tensor from a module's output: a callable, an index (tuple/list) or a key (mapping)."""

Pooling = str | Callable[[Tensor], Tensor]
"""``"flatten"``, ``"avg"`` or a callable ``(B, ...) -> (B, d)``."""

POOL_NAMES = ("flatten", "avg")

__all__ = ["LayerTap", "Pooling", "Selector", "tokens_as_samples"]


class LayerTap:
    """Collect ``{layer: (B, d)}`` embeddings from named modules of ``model`` during its forward passes.

    Args:
        model: the network; its forward is called as usual (``logits = model(x)``).
        layers: names of modules in ``model.named_modules()``; :attr:`features` keeps this order.
        pool: ``"flatten"``, ``"avg"`` or a callable, for every layer or as ``{layer: pooling}`` (layers not
            in the mapping are flattened). With ``tokens=True`` only ``"flatten"`` and callables
            ``(B, T, ...) -> (B, T, d)`` apply.
        select: picks the tensor of a module output that is not a tensor (a callable, an ``int`` index or a
            ``str`` key), for every layer or as ``{layer: selector}``. Default: a tensor as is, a tuple/list's
            first element.
        tokens: every position of a ``(B, T, ...)`` output is a sample (see :meth:`token_features`).
        detach: detach the features from the autograd graph (default); ``False`` keeps them differentiable.

    Example:
        >>> from collections import OrderedDict
        >>> import torch
        >>> from torch import nn
        >>> from ncdepth.metrics import LayerTap
        >>> model = nn.Sequential(OrderedDict(
        ...     conv=nn.Conv2d(3, 4, 3, padding=1), relu=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(2),
        ...     flatten=nn.Flatten(), fc=nn.Linear(16, 10),
        ... ))
        >>> with LayerTap(model, ["conv", "flatten"], pool={"conv": "avg"}) as tap:
        ...     logits = model(torch.randn(5, 3, 8, 8))
        ...     features = tap.features
        >>> {name: tuple(h.shape) for name, h in features.items()}
        {'conv': (5, 4), 'flatten': (5, 16)}
        >>> any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())  # removed on exit
        False
        >>> LayerTap(model, ["flaten"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: module 'flaten' is not in the model; did you mean 'flatten'? (modules: 'conv', ...)
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        *,
        pool: Pooling | Mapping[str, Pooling] = "flatten",
        select: Selector | Mapping[str, Selector] | None = None,
        tokens: bool = False,
        detach: bool = True,
    ) -> None:
        if isinstance(layers, str):
            layers = [layers]
        layers = list(layers)
        if not layers:
            raise ValueError("layers must name at least one module")
        duplicates = sorted({name for name in layers if layers.count(name) > 1})
        if duplicates:
            raise ValueError(f"layers are named more than once: {duplicates}")
        modules = dict(model.named_modules(remove_duplicate=False))
        for name in layers:
            if name not in modules:
                raise ValueError(_unknown_module(name, modules))
        self.model = model
        self.tokens = bool(tokens)
        self.detach = bool(detach)
        self._layers = layers
        self._modules = {name: modules[name] for name in layers}
        self._pool = _per_layer("pool", pool, layers, default="flatten")
        self._select = _per_layer("select", select, layers, default=None)
        for name, pooling in self._pool.items():
            _check_pooling(name, pooling, self.tokens)
        self._features: dict[str, Tensor] = {}
        self._calls: dict[str, int] = {}
        self._forwards = 0
        self._handles: list[RemovableHandle] = []
        self.attach()

    # ------------------------------------------------------------------ hooks
    @property
    def layers(self) -> list[str]:
        """The tapped module names, in the order of :attr:`features`."""
        return list(self._layers)

    @property
    def attached(self) -> bool:
        """Whether the hooks are registered (from construction or ``__enter__`` until ``remove``/exit)."""
        return bool(self._handles)

    def attach(self) -> LayerTap:
        """Register the hooks (done at construction; again by ``with`` after :meth:`remove`)."""
        if self._handles:
            return self
        self._handles.append(self.model.register_forward_pre_hook(self._start_forward))
        for name, module in self._modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def remove(self) -> None:
        """Remove every hook this tap registered (the latest features stay readable)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> LayerTap:
        return self.attach()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()

    def _start_forward(self, module: nn.Module, args: Any) -> None:
        self._features = {}
        self._calls = {}
        self._forwards += 1

    def _hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self._calls[name] = self._calls.get(name, 0) + 1
            if self._calls[name] == 1:
                self._features[name] = self._extract(name, output)

        return hook

    def _extract(self, name: str, output: Any) -> Tensor:
        selected = _select(name, output, self._select[name])
        if self.detach:
            selected = selected.detach()
        minimum = 3 if self.tokens else 2
        if selected.ndim < minimum:
            shape = "(B, T, d)" if self.tokens else "(B, ...)"
            raise ValueError(
                f"layer {name!r} gave a tensor of shape {tuple(selected.shape)}; expected {shape} with at "
                f"least {minimum} dimensions"
            )
        pooled = _apply_pooling(name, selected, self._pool[name], self.tokens)
        if _shares_memory(pooled, selected):
            pooled = pooled.clone()
        return pooled

    # ------------------------------------------------------------------ results
    @property
    def features(self) -> dict[str, Tensor]:
        """``{layer: (B, d)}`` of the latest forward of ``model``, in the order of :attr:`layers`
        (``(B*T, d)`` with ``tokens=True``: every position a sample)."""
        if self._forwards == 0:
            raise RuntimeError(
                "no forward pass of the model since the tap was created: call model(x) inside the with block"
            )
        reused = [name for name in self._layers if self._calls.get(name, 0) > 1]
        if reused:
            counts = ", ".join(f"{name!r} ran {self._calls[name]} times" for name in reused)
            raise RuntimeError(
                f"{counts} in the last forward: the output of a module that is called several times is "
                "ambiguous; tap a module that runs once (e.g. the enclosing block)"
            )
        missing = [name for name in self._layers if name not in self._features]
        if missing:
            ran = [name for name in self._layers if name in self._features]
            raise RuntimeError(
                f"layers {missing} did not run in the last forward of the model "
                f"(tapped layers that ran: {ran})"
            )
        if not self.tokens:
            return {name: self._features[name] for name in self._layers}
        return {name: tokens_as_samples(self._features[name]) for name in self._layers}

    def token_features(self, mask: Tensor | None = None) -> dict[str, Tensor]:
        """``{layer: (n, d)}``: the positions where ``mask`` (``(B, T)``, true = a real token) is set, in
        row-major order, as samples; every position when ``mask`` is ``None``. Only with ``tokens=True``.

        Pass the labels and logits through the same mask: ``labels[mask]`` ``(n,)``, ``logits[mask]``
        ``(n, C)``.
        """
        if not self.tokens:
            raise RuntimeError("token_features() needs LayerTap(..., tokens=True)")
        features = self.features  # checks that the last forward ran every layer once
        if mask is None:
            return features
        positions: dict[torch.device, Tensor] = {}  # one nonzero (one host sync) per device, not per layer
        result = {}
        for name in self._layers:
            flat = _token_rows(self._features[name], name)
            if flat.device not in positions:
                positions[flat.device] = _mask_positions(mask, flat.shape[:2], flat.device, name)
            result[name] = flat.flatten(0, 1).index_select(0, positions[flat.device])
        return result

    def __repr__(self) -> str:
        state = "attached" if self.attached else "removed"
        return f"LayerTap({self._layers}, tokens={self.tokens}, {state})"


def tokens_as_samples(features: Tensor, mask: Tensor | None = None, *, layer: str | None = None) -> Tensor:
    """``(B, T, ...)`` token features as ``(n, d)`` samples: the positions where the ``(B, T)`` ``mask`` is
    true (every position, ``n = B*T``, when ``mask`` is ``None``), trailing axes flattened.

    Args:
        features: ``(B, T, ...)`` per-position embeddings.
        mask: ``(B, T)`` boolean (or 0/1) mask of the real tokens.
        layer: only names the layer in error messages.

    Example:
        >>> import torch
        >>> hidden = torch.arange(12.0).reshape(2, 3, 2)
        >>> tokens_as_samples(hidden, torch.tensor([[True, True, False], [True, False, False]]))
        tensor([[0., 1.],
                [2., 3.],
                [6., 7.]])
    """
    flat = _token_rows(features, layer)
    if mask is None:
        return flat.flatten(0, 1)
    return flat.flatten(0, 1).index_select(0, _mask_positions(mask, flat.shape[:2], flat.device, layer))


def _token_rows(features: Tensor, layer: str | None) -> Tensor:
    """``(B, T, ...)`` as ``(B, T, d)``."""
    if features.ndim < 3:
        where = f"layer {layer!r}: " if layer is not None else ""
        raise ValueError(f"{where}token features must have shape (B, T, d), got {tuple(features.shape)}")
    return features.reshape(features.shape[0], features.shape[1], -1)


def _mask_positions(mask: Tensor, shape: torch.Size, device: torch.device, layer: str | None) -> Tensor:
    """The row-major positions (``(n,)`` int64 on ``device``) where the ``(B, T)`` ``mask`` is set: one
    ``nonzero``, the one host sync of a masked read."""
    where = f"layer {layer!r}: " if layer is not None else ""
    if mask.shape != shape:
        raise ValueError(f"{where}mask must have shape (B, T) = {tuple(shape)}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if mask.dtype.is_floating_point or bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError(f"{where}mask must be boolean (or 0/1 integers), got {mask.dtype}")
    return mask.to(device, non_blocking=True).flatten().nonzero().flatten()


# ---------------------------------------------------------------------------------------------- helpers
def _unknown_module(name: str, modules: Mapping[str, nn.Module]) -> str:
    names = [n for n in modules if n]
    shown = ", ".join(repr(n) for n in names[:25]) + (
        f", ... ({len(names)} in all)" if len(names) > 25 else ""
    )
    return f"module {name!r} is not in the model{close_matches(name, names)} (modules: {shown})"


def _per_layer(what: str, value: Any, layers: Sequence[str], *, default: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        return dict.fromkeys(layers, default if value is None else value)
    unknown = [name for name in value if name not in layers]
    if unknown:
        hints = "".join(close_matches(name, layers) for name in unknown)
        raise ValueError(
            f"{what} names layers that are not tapped: {unknown} (tapped: {list(layers)}){hints}"
        )
    return {name: value.get(name, default) for name in layers}


def _check_pooling(name: str, pooling: Any, tokens: bool) -> None:
    if callable(pooling):
        return
    if pooling not in POOL_NAMES:
        raise ValueError(
            f"pool for layer {name!r} must be one of {list(POOL_NAMES)} or a callable, got {pooling!r}"
        )
    if tokens and pooling != "flatten":
        raise ValueError(
            f"pool={pooling!r} for layer {name!r} would pool over the positions of a token layer; with "
            "tokens=True use 'flatten' or a callable (B, T, ...) -> (B, T, d)"
        )


def _select(name: str, output: Any, selector: Selector | None) -> Tensor:
    if selector is None:
        if isinstance(output, Tensor):
            return output
        if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
            return output[0]
        raise TypeError(_selection_help(name, output))
    try:
        selected = selector(output) if callable(selector) else output[selector]
    except (IndexError, KeyError, TypeError) as error:
        raise TypeError(
            f"select for layer {name!r} failed on its output: {error!r}. {_selection_help(name, output)}"
        ) from error
    if not isinstance(selected, Tensor):
        raise TypeError(f"select for layer {name!r} returned a {type(selected).__name__}, not a Tensor")
    return selected


def _selection_help(name: str, output: Any) -> str:
    if isinstance(output, Mapping):
        what = f"a {type(output).__name__} with keys {list(output)}"
    elif isinstance(output, (tuple, list)):
        what = f"a {type(output).__name__} of {[type(item).__name__ for item in output]}"
    else:
        what = f"a {type(output).__name__}"
    return (
        f"module {name!r} returned {what}; pass select={{{name!r}: ...}} with a callable, an index or a key "
        "that picks one tensor"
    )


def _apply_pooling(name: str, h: Tensor, pooling: Pooling, tokens: bool) -> Tensor:
    if callable(pooling):
        pooled = pooling(h)
        expected = 3 if tokens else 2
        if not isinstance(pooled, Tensor) or pooled.ndim != expected or pooled.shape[0] != h.shape[0]:
            shape = "(B, T, d)" if tokens else "(B, d)"
            got = tuple(pooled.shape) if isinstance(pooled, Tensor) else type(pooled).__name__
            raise ValueError(f"pool for layer {name!r} must return {shape} with B = {h.shape[0]}, got {got}")
        return pooled
    if tokens:
        return h.reshape(h.shape[0], h.shape[1], -1)
    if pooling == "avg" and h.ndim > 2:
        h = h.flatten(2).mean(-1)
    return h.reshape(h.shape[0], -1)


def _shares_memory(a: Tensor, b: Tensor) -> bool:
    try:
        return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # tensors without a plain storage (e.g. nested)
        return False
