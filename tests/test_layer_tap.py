"""``LayerTap``: per-layer features of torchvision ``resnet18``/``vgg11`` (random weights) and of a small
transformer-style module, straight into ``NeuralCollapse``."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import Tensor, nn

from ncdepth.metrics import LayerTap, NeuralCollapse, tokens_as_samples
from ncdepth.metrics import functional as F

RESNET_LAYERS = ["layer1", "layer2", "layer3", "layer4", "avgpool"]


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=3).eval()


@pytest.fixture(scope="module")
def vgg() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.vgg11(num_classes=3).eval()


def images(batch: int, *, seed: int = 0, size: int = 32) -> Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def no_hooks(model: nn.Module) -> bool:
    return not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def resnet_by_hand(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    out = {}
    for name in RESNET_LAYERS[:4]:
        h = getattr(model, name)(h)
        out[name] = h
    out["avgpool"] = model.avgpool(h)
    return out


# --------------------------------------------------------------------------- torchvision models
def test_resnet18_features_are_the_named_modules_outputs(resnet: nn.Module) -> None:
    x = images(4)
    with torch.no_grad():
        plain = resnet(x)
        with LayerTap(resnet, RESNET_LAYERS, pool={"layer1": "avg"}) as tap:
            logits = resnet(x)
            features = tap.features
        expected = resnet_by_hand(resnet, x)
    torch.testing.assert_close(logits, plain, rtol=0, atol=0)
    assert list(features) == RESNET_LAYERS
    shapes = {name: tuple(h.shape) for name, h in features.items()}
    assert shapes == {
        "layer1": (4, 64),  # averaged over 8 x 8 instead of flattened to 4096
        "layer2": (4, 128 * 4 * 4),
        "layer3": (4, 256 * 2 * 2),
        "layer4": (4, 512),
        "avgpool": (4, 512),
    }
    torch.testing.assert_close(features["layer1"], expected["layer1"].mean(dim=(2, 3)))
    for name in RESNET_LAYERS[1:]:
        torch.testing.assert_close(features[name], expected[name].flatten(1))
    assert no_hooks(resnet)


def test_resnet18_into_neural_collapse_equals_the_functional_metrics(resnet: nn.Module) -> None:
    batches = [(images(6, seed=seed), torch.tensor([0, 1, 2, 0, 1, 2])) for seed in (1, 2)]
    weight, bias = resnet.fc.weight.detach(), resnet.fc.bias.detach()
    metric = NeuralCollapse(
        3, classifier_layer="avgpool", classifier_weight=lambda: resnet.fc.weight.detach()
    )
    seen: dict[str, list[Tensor]] = {name: [] for name in RESNET_LAYERS}
    with torch.no_grad(), LayerTap(resnet, RESNET_LAYERS, pool={"layer1": "avg"}) as tap:
        for x, y in batches:
            resnet(x)
            metric.update(tap.features, y)
            for name, h in tap.features.items():
                seen[name].append(h)
        metric.next_phase()
        for x, y in batches:
            logits = resnet(x)
            metric.update(tap.features, y, logits=logits)
    result = metric.compute()
    labels = torch.cat([y for _, y in batches])
    for name in RESNET_LAYERS:
        extra = {"weight": weight, "bias": bias} if name == "avgpool" else {}
        expected = F.neural_collapse(torch.cat(seen[name]), labels, 3, **extra)
        assert list(result[name]) == list(expected), name
        for key, value in expected.items():
            assert result[name][key] == pytest.approx(value, rel=1e-4, abs=1e-9), (name, key)
    assert "nc4" in result["avgpool"] and "nc4" not in result["layer4"]


def test_resnet18_classifier_weight_fits_two_layers_so_the_layer_must_be_named(resnet: nn.Module) -> None:
    metric = NeuralCollapse(3, classifier_weight=resnet.fc.weight.detach())
    with torch.no_grad(), LayerTap(resnet, RESNET_LAYERS) as tap:
        resnet(images(3))
        with pytest.raises(ValueError, match=r"classifier_layer is required.*\['layer4', 'avgpool'\]"):
            metric.update(tap.features, torch.tensor([0, 1, 2]))


def test_vgg11_inplace_relu_after_a_tapped_module_leaves_its_features_alone(vgg: nn.Module) -> None:
    x = images(2)
    layers = ["features", "avgpool", "classifier.0", "classifier.4"]
    with torch.no_grad(), LayerTap(vgg, layers, pool={"features": "avg"}) as tap:
        vgg(x)
        features = tap.features
        pooled = vgg.avgpool(vgg.features(x)).flatten(1)
        first_linear = vgg.classifier[0](pooled)
    assert {name: tuple(h.shape) for name, h in features.items()} == {
        "features": (2, 512),
        "avgpool": (2, 512 * 7 * 7),
        "classifier.0": (2, 4096),
        "classifier.4": (2, 4096),
    }
    torch.testing.assert_close(features["avgpool"], pooled)
    # classifier.1 is ReLU(inplace=True): without a copy the tapped Linear output would be clipped at 0
    torch.testing.assert_close(features["classifier.0"], first_linear)
    assert (features["classifier.0"] < 0).any() and (features["classifier.4"] >= 0).all()
    assert no_hooks(vgg)


# --------------------------------------------------------------------------- hooks and lifetime
def test_hooks_are_removed_on_exit_even_after_an_exception(resnet: nn.Module) -> None:
    tap = LayerTap(resnet, ["layer1", "avgpool"])
    assert tap.attached and not no_hooks(resnet)
    with pytest.raises(RuntimeError, match="boom"), tap:
        raise RuntimeError("boom")
    assert not tap.attached and no_hooks(resnet)
    with torch.no_grad(), tap:  # re-entering attaches again
        resnet(images(2))
        assert not no_hooks(resnet)
    assert no_hooks(resnet)
    kept = tap.features["avgpool"].clone()
    with torch.no_grad():
        resnet(images(5, seed=3))  # after exit: not seen
    torch.testing.assert_close(tap.features["avgpool"], kept, rtol=0, atol=0)


def test_only_the_latest_forward_is_kept() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Linear(4, 6)
            self.extra = nn.Linear(6, 6)
            self.use_extra = True

        def forward(self, x: Tensor) -> Tensor:
            h = self.stem(x)
            return self.extra(h) if self.use_extra else h

    model = Branchy()
    with LayerTap(model, ["stem", "extra"]) as tap:
        with pytest.raises(RuntimeError, match="no forward pass"):
            _ = tap.features
        model(torch.randn(7, 4))
        model(torch.randn(3, 4))
        assert {name: h.shape[0] for name, h in tap.features.items()} == {"stem": 3, "extra": 3}
        model.use_extra = False
        model(torch.randn(2, 4))
        with pytest.raises(RuntimeError, match=r"layers \['extra'\] did not run in the last forward"):
            _ = tap.features


def test_a_module_run_twice_in_one_forward_is_refused(resnet: nn.Module) -> None:
    with torch.no_grad(), LayerTap(resnet, ["layer1.0.relu"]) as tap:  # BasicBlock calls its relu twice
        resnet(images(2))
        with pytest.raises(RuntimeError, match="'layer1.0.relu' ran 2 times"):
            _ = tap.features


def test_unknown_names_and_options_fail_at_construction(resnet: nn.Module) -> None:
    with pytest.raises(ValueError, match=r"module 'avg_pool' is not in the model; did you mean 'avgpool'"):
        LayerTap(resnet, ["layer1", "avg_pool"])
    with pytest.raises(ValueError, match=r"pool names layers that are not tapped: \['layer_1'\]"):
        LayerTap(resnet, ["layer1"], pool={"layer_1": "avg"})
    with pytest.raises(ValueError, match="must be one of"):
        LayerTap(resnet, ["layer1"], pool="max")
    with pytest.raises(ValueError, match="more than once"):
        LayerTap(resnet, ["layer1", "layer1"])
    assert no_hooks(resnet)


def test_detach_false_keeps_the_graph() -> None:
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    with LayerTap(model, ["1"], detach=False) as tap:
        model(torch.randn(4, 3))
        hidden = tap.features["1"]
    assert hidden.requires_grad
    hidden.sum().backward()
    assert model[0].weight.grad is not None


# --------------------------------------------------------------------------- tuples, dicts, tokens
class Block(nn.Module):
    """Pre-norm transformer block; ``returns="tuple"`` gives ``(hidden, attention)``, ``"dict"`` a dict."""

    def __init__(self, dim: int, returns: str = "tensor") -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads=2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.returns = returns

    def forward(self, x: Tensor, padding: Tensor) -> Tensor | tuple[Tensor, Tensor] | dict[str, Tensor]:
        h = self.norm1(x)
        attended, weights = self.attn(h, h, h, key_padding_mask=padding)
        x = x + attended
        x = x + self.mlp(self.norm2(x))
        if self.returns == "tuple":
            return x, weights
        if self.returns == "dict":
            return {"hidden": x, "attention": weights}
        return x


class TinyTransformer(nn.Module):
    """Token classifier: embedding, two blocks, final norm, per-token linear head ``(B, T, C)``."""

    def __init__(self, vocab: int = 20, dim: int = 8, num_classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList([Block(dim, "tuple"), Block(dim, "dict")])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        x, _ = self.blocks[0](self.embed(tokens), ~mask)
        x = self.blocks[1](x, ~mask)["hidden"]
        return self.head(self.norm(x))

    def by_hand(self, tokens: Tensor, mask: Tensor) -> dict[str, Tensor]:
        first, weights = self.blocks[0](self.embed(tokens), ~mask)
        second = self.blocks[1](first, ~mask)["hidden"]
        return {"blocks.0": first, "attention": weights, "blocks.1": second, "norm": self.norm(second)}


def token_batch(seed: int, batch: int = 4, length: int = 6) -> tuple[Tensor, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 20, (batch, length), generator=generator)
    lengths = torch.randint(3, length + 1, (batch,), generator=generator)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    labels = torch.randint(0, 3, (batch, length), generator=generator)
    return tokens, mask, labels


@pytest.fixture(scope="module")
def transformer() -> TinyTransformer:
    torch.manual_seed(0)
    return TinyTransformer().eval()


def test_tuple_and_dict_outputs_are_selected(transformer: TinyTransformer) -> None:
    tokens, mask, _ = token_batch(0)
    with torch.no_grad():
        expected = transformer.by_hand(tokens, mask)
        with LayerTap(transformer, ["blocks.0", "blocks.1"], select={"blocks.1": "hidden"}) as tap:
            transformer(tokens, mask)
            features = tap.features  # blocks.0: first element of its tuple, blocks.1: the "hidden" key
        torch.testing.assert_close(features["blocks.0"], expected["blocks.0"].flatten(1))
        torch.testing.assert_close(features["blocks.1"], expected["blocks.1"].flatten(1))

        with LayerTap(transformer, ["blocks.0"], select=lambda out: out[1]) as tap:
            transformer(tokens, mask)
            torch.testing.assert_close(tap.features["blocks.0"], expected["attention"].flatten(1))

        with LayerTap(transformer, ["blocks.1"]) as tap:
            with pytest.raises(
                TypeError, match=r"'blocks.1' returned a dict with keys \['hidden', 'attention'\]"
            ):
                transformer(tokens, mask)


def test_token_features_are_the_masked_positions(transformer: TinyTransformer) -> None:
    tokens, mask, _ = token_batch(1)
    layers = ["blocks.0", "blocks.1", "norm"]
    with torch.no_grad():
        expected = transformer.by_hand(tokens, mask)
        with LayerTap(transformer, layers, tokens=True, select={"blocks.1": "hidden"}) as tap:
            logits = transformer(tokens, mask)
            every = tap.features
            masked = tap.token_features(mask)
    assert logits.shape == (4, 6, 3)
    for name in layers:
        assert every[name].shape == (24, 8)
        torch.testing.assert_close(every[name], expected[name].reshape(24, 8))
        torch.testing.assert_close(masked[name], expected[name][mask])
        assert masked[name].shape == (int(mask.sum()), 8)
    with pytest.raises(ValueError, match=r"mask must have shape \(B, T\) = \(4, 6\)"):
        tap.token_features(mask[:, :5])
    with pytest.raises(ValueError, match="with tokens=True use 'flatten'"):
        LayerTap(transformer, ["norm"], tokens=True, pool="avg")


def test_token_features_into_neural_collapse(transformer: TinyTransformer) -> None:
    batches = [token_batch(seed, batch=8, length=10) for seed in (2, 3)]
    layers = ["blocks.0", "blocks.1", "norm"]
    metric = NeuralCollapse(3, classifier_layer="norm", classifier_weight=transformer.head.weight.detach())
    seen: list[Tensor] = []
    with torch.no_grad(), LayerTap(transformer, layers, tokens=True, select={"blocks.1": "hidden"}) as tap:
        for tokens, mask, labels in batches:
            transformer(tokens, mask)
            metric.update(tap.token_features(mask), labels[mask])
            seen.append(tap.token_features(mask)["norm"])
        metric.next_phase()
        for tokens, mask, labels in batches:
            logits = transformer(tokens, mask)
            metric.update(tap.token_features(mask), labels[mask], logits=logits[mask])
    result = metric.compute()["norm"]
    labels = torch.cat([labels[mask] for _, mask, labels in batches])
    expected = F.neural_collapse(
        torch.cat(seen), labels, 3, weight=transformer.head.weight, bias=transformer.head.bias
    )
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-4, abs=1e-9), key


def test_pool_callable_and_its_shape_check(transformer: TinyTransformer) -> None:
    tokens, mask, _ = token_batch(4)
    with torch.no_grad():
        expected = transformer.by_hand(tokens, mask)["norm"]
        with LayerTap(transformer, ["norm"], pool={"norm": lambda h: h.mean(1)}) as tap:
            transformer(tokens, mask)
            torch.testing.assert_close(tap.features["norm"], expected.mean(1))
        with LayerTap(transformer, ["norm"], pool=lambda h: h) as tap:
            with pytest.raises(ValueError, match=r"pool for layer 'norm' must return \(B, d\)"):
                transformer(tokens, mask)
    assert no_hooks(transformer)


def test_tokens_as_samples_checks_its_inputs() -> None:
    hidden = torch.randn(2, 3, 4)
    assert tokens_as_samples(hidden).shape == (6, 4)
    assert tokens_as_samples(hidden, torch.tensor([[1, 0, 1], [0, 0, 1]])).shape == (3, 4)
    with pytest.raises(ValueError, match="boolean"):
        tokens_as_samples(hidden, torch.full((2, 3), 0.5))
    with pytest.raises(ValueError, match=r"\(B, T, d\)"):
        tokens_as_samples(torch.randn(2, 3))
