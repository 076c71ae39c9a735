"""Tests for ncdepth.models: the (logits, embeddings) contract, pre/post embeddings, the deep
linear head, presets, the FCN2 NNGP/NTK scaling, knob validation and the Hydra configs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ncdepth.cli import CONFIG_DIR
from ncdepth.models import FCN2, MLP, VGG, ConvNet, LayeredNet, ResNet

CONF_DIR = CONFIG_DIR / "model"
MODEL_CLASSES: dict[str, type[LayeredNet]] = {
    path.stem: hydra.utils.get_class(OmegaConf.load(path)._target_)
    for path in sorted(CONF_DIR.glob("*.yaml"))
}
"""Models by config name (``model=conv``): the class that the config's ``_target_`` names."""
IMAGE_SHAPES = [(1, 28, 28), (3, 32, 32)]
CONV_MODELS = ["conv", "resnet", "vgg"]
DENSE_MODELS = ["mlp", "fcn2"]
# Small versions of every model, so that the contract tests run in milliseconds.
SMALL: dict[str, dict[str, Any]] = {
    "mlp": {"depth": 3, "width": 8},
    "conv": {"depth": 3, "width": 4},
    "resnet": {"preset": None, "blocks_per_stage": [1, 2], "width": 4},
    "vgg": {"preset": None, "channels": [4, "M", 8, 8, "M"]},
    "fcn2": {"width": 16},
}
SMALL_NUM_BLOCKS = {"mlp": 3, "conv": 3, "resnet": 3, "vgg": 3, "fcn2": 1}
CASES = [(name, shape) for name in MODEL_CLASSES for shape in IMAGE_SHAPES] + [
    (name, (20,)) for name in DENSE_MODELS
]


def small_model(name: str, input_shape: tuple[int, ...], **knobs: Any) -> LayeredNet:
    torch.manual_seed(0)
    model = MODEL_CLASSES[name](input_shape=input_shape, num_classes=5, **{**SMALL[name], **knobs})
    return model.eval()


def check_contract(model: LayeredNet, input_shape: tuple[int, ...], batch: int = 3) -> dict:
    """Assert the forward contract of ncdepth.models.base and return the embeddings."""
    logits, embeddings = model(torch.randn(batch, *input_shape))
    assert logits.shape == (batch, model.num_classes)
    assert list(embeddings) == model.layer_names
    assert model.classifier_layer == model.layer_names[-1]
    assert isinstance(model.classifier, nn.Linear)
    assert model.classifier.weight.shape == (model.num_classes, model.classifier.in_features)
    head_input = embeddings[model.classifier_layer].flatten(1)
    assert head_input.shape[1] == model.classifier.in_features
    torch.testing.assert_close(model.classifier(head_input), logits)
    assert all(embedding.shape[0] == batch for embedding in embeddings.values())
    return embeddings


@pytest.mark.parametrize("embedding", ["post", "pre"])
@pytest.mark.parametrize(("name", "input_shape"), CASES)
def test_forward_contract(name: str, input_shape: tuple[int, ...], embedding: str) -> None:
    model = small_model(name, input_shape, embedding=embedding)
    embeddings = check_contract(model, input_shape)
    blocks = [f"layer{index}" for index in range(1, SMALL_NUM_BLOCKS[name] + 1)]
    if name == "fcn2":
        blocks = ["hidden"]
    tail = {"resnet": ["pool"], "vgg": ["pool"]}.get(name, ["features"] if embedding == "pre" else [])
    assert model.layer_names == blocks + tail
    if name in CONV_MODELS:
        assert all(embeddings[block].dim() == 4 for block in blocks)


@pytest.mark.parametrize("name", CONV_MODELS)
def test_conv_models_reject_flat_inputs(name: str) -> None:
    with pytest.raises(ValueError, match=r"input_shape \(channels, height, width\)"):
        small_model(name, (20,))


def test_forward_rejects_wrong_input_shape() -> None:
    model = small_model("mlp", (20,))
    with pytest.raises(ValueError, match=r"expects inputs of shape \('B', 20\), got \(2, 21\)"):
        model(torch.randn(2, 21))


@pytest.mark.parametrize(
    ("name", "knobs"),
    [
        ("mlp", {}),
        ("conv", {"batch_norm": False}),
        ("vgg", {"batch_norm": False}),
        ("resnet", {}),
        ("fcn2", {"activation": "relu"}),
    ],
)
def test_pre_embedding_is_the_relu_input(name: str, knobs: dict[str, Any]) -> None:
    """Without BatchNorm between them (ResNet: the residual sum), post == relu(pre) per block;
    the weights and the logits do not depend on the embedding mode."""
    shape = (3, 32, 32)
    pre_model = small_model(name, shape, embedding="pre", **knobs)
    post_model = small_model(name, shape, embedding="post", **knobs)
    x = torch.randn(4, *shape)
    pre_logits, pre = pre_model(x)
    post_logits, post = post_model(x)
    torch.testing.assert_close(pre_logits, post_logits)
    blocks = [layer for layer in post_model.layer_names if layer.startswith(("layer", "hidden"))]
    for layer in blocks:
        torch.testing.assert_close(torch.relu(pre[layer]), post[layer])
        assert (pre[layer] < 0).any(), "a pre-activation should have negative entries"
    if "features" in pre:
        torch.testing.assert_close(pre["features"], post[blocks[-1]])


def test_conv_pre_embedding_is_before_batch_norm() -> None:
    model = small_model("conv", (3, 32, 32), embedding="pre")
    post_model = small_model("conv", (3, 32, 32), embedding="post")
    x = torch.randn(4, 3, 32, 32)
    _, pre = model(x)
    _, post = post_model(x)
    for index, block in enumerate(model.blocks, start=1):
        layer = f"layer{index}"
        torch.testing.assert_close(torch.relu(block.norm(pre[layer])), post[layer])


@pytest.mark.parametrize(("name", "input_shape"), CASES)
def test_deep_linear_head(name: str, input_shape: tuple[int, ...]) -> None:
    """depth_linear bias-free linear layers, each measured; logits = W_c W_k..W_1 h + b."""
    base = small_model(name, input_shape)
    model = small_model(name, input_shape, depth_linear=3, linear_width=7)
    assert model.layer_names == [*base.layer_names, "linear1", "linear2", "linear3"]
    assert model.classifier_layer == "linear3"
    assert model.classifier.in_features == 7
    embeddings = check_contract(model, input_shape)
    assert all(embeddings[f"linear{k}"].shape == (3, 7) for k in (1, 2, 3))
    assert all(layer.bias is None for layer in model.linear_head)
    features = embeddings[base.classifier_layer].flatten(1)
    product = model.linear_head[2].weight @ model.linear_head[1].weight @ model.linear_head[0].weight
    expected = features @ (model.classifier.weight @ product).T + model.classifier.bias
    torch.testing.assert_close(model.classifier(embeddings["linear3"]), expected)


def test_linear_width_defaults_to_feature_dim_and_classifier_bias_is_optional() -> None:
    model = small_model("conv", (1, 28, 28), depth_linear=1, classifier_bias=False)
    feature_dim = 4 * 7 * 7
    assert model.linear_head[0].weight.shape == (feature_dim, feature_dim)
    assert model.classifier.bias is None
    check_contract(model, (1, 28, 28))


@pytest.mark.parametrize(("preset", "num_blocks"), [("resnet18", 8), ("resnet34", 16)])
def test_resnet_presets(preset: str, num_blocks: int) -> None:
    model = ResNet(input_shape=(3, 32, 32), num_classes=10, preset=preset, width=4).eval()
    assert model.layer_names == [f"layer{i}" for i in range(1, num_blocks + 1)] + ["pool"]
    embeddings = check_contract(model, (3, 32, 32), batch=2)
    assert embeddings["layer1"].shape == (2, 4, 32, 32)
    assert embeddings[f"layer{num_blocks}"].shape == (2, 32, 4, 4)
    assert embeddings["pool"].shape == (2, 32)


@pytest.mark.parametrize(("preset", "num_convs"), [("vgg11", 8), ("vgg16", 13)])
@pytest.mark.parametrize(("input_shape", "num_pools"), [((1, 28, 28), 4), ((3, 32, 32), 5)])
def test_vgg_presets_skip_pools_below_one_pixel(
    preset: str, num_convs: int, input_shape: tuple[int, ...], num_pools: int
) -> None:
    model = VGG(input_shape=input_shape, num_classes=10, preset=preset).eval()
    assert model.layer_names == [f"layer{i}" for i in range(1, num_convs + 1)] + ["pool"]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == num_pools
    embeddings = check_contract(model, input_shape, batch=2)
    assert embeddings["layer1"].shape == (2, 64, *input_shape[1:])
    assert embeddings["pool"].shape == (2, 512)


def test_conv_net_is_galanti_conv_l_w() -> None:
    """CONV-L-400 on CIFAR: 8x8 maps after the stems, d = 400 * 8 * 8 = 25,600."""
    model = ConvNet(input_shape=(3, 32, 32), num_classes=10, depth=2, width=400).eval()
    assert model.classifier.in_features == 25_600
    embeddings = check_contract(model, (3, 32, 32), batch=1)
    assert embeddings["layer2"].shape == (1, 400, 8, 8)
    assert ConvNet(input_shape=(1, 28, 28), num_classes=10).classifier.in_features == 64 * 7 * 7


def fcn2_at_init(parameterization: str, **knobs: Any) -> FCN2:
    torch.manual_seed(1)
    return FCN2(parameterization=parameterization, weight_var=2.0, bias_var=0.5, **knobs)


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_fcn2_hidden_preactivations_follow_the_nngp_kernel(parameterization: str) -> None:
    """Given x, the hidden pre-activations are i.i.d. N(0, s_w^2 ||x||^2 / d0 + s_b^2). Their
    sample variance over 20,000 units has relative standard error sqrt(2 / 20,000) = 1%."""
    d0 = 30
    model = fcn2_at_init(parameterization, input_shape=(d0,), num_classes=2, width=20_000, embedding="pre")
    x = torch.randn(3, d0) * torch.tensor([[0.5], [1.0], [3.0]])
    with torch.no_grad():
        _, embeddings = model(x)
    expected = 2.0 * x.pow(2).sum(1) / d0 + 0.5
    torch.testing.assert_close(embeddings["hidden"].var(dim=1), expected, rtol=0.05, atol=0.0)


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_fcn2_logits_follow_the_readout_kernel(parameterization: str) -> None:
    """Given phi(h), the logits are i.i.d. N(0, s_w^2 ||phi(h)||^2 / width + s_b^2); sample
    variance over 20,000 classes, relative standard error 1%."""
    model = fcn2_at_init(parameterization, input_shape=(30,), num_classes=20_000, width=200)
    with torch.no_grad():
        logits, embeddings = model(torch.randn(3, 30))
    expected = 2.0 * embeddings["hidden"].pow(2).mean(1) + 0.5
    torch.testing.assert_close(logits.var(dim=1), expected, rtol=0.05, atol=0.0)


def test_fcn2_ntk_trains_unit_variance_weights_with_scaled_gradients() -> None:
    """NTK: trained W ~ N(0, 1), forward uses sqrt(s_w^2 / d0) W, so with the same effective
    weights the two parameterizations compute the same function and
    dL/dW_raw = sqrt(s_w^2 / fan_in) * dL/dW_effective (sigma_b for biases)."""
    weight_var, bias_var, d0, width = 2.0, 0.25, 400, 300
    torch.manual_seed(2)
    knobs = {"input_shape": (d0,), "num_classes": 4, "width": width, "activation": "tanh"}
    knobs |= {"weight_var": weight_var, "bias_var": bias_var}
    ntk = FCN2(parameterization="ntk", **knobs)
    standard = FCN2(parameterization="standard", **knobs)
    raw = ntk.hidden_layer.parametrizations.weight.original
    assert raw.std().item() == pytest.approx(1.0, rel=0.02)
    assert ntk.hidden_layer.weight.std().item() == pytest.approx(math.sqrt(weight_var / d0), rel=0.02)
    assert standard.hidden_layer.weight.std().item() == pytest.approx(math.sqrt(weight_var / d0), rel=0.02)
    with torch.no_grad():
        for source, target in [
            (ntk.hidden_layer, standard.hidden_layer),
            (ntk.classifier, standard.classifier),
        ]:
            target.weight.copy_(source.weight)
            target.bias.copy_(source.bias)
    x, y = torch.randn(8, d0), torch.randint(0, 4, (8,))
    losses = [nn.functional.cross_entropy(net(x)[0], y) for net in (ntk, standard)]
    torch.testing.assert_close(losses[0], losses[1])
    for loss in losses:
        loss.backward()
    scale = {
        ("hidden_layer", "weight"): math.sqrt(weight_var / d0),
        ("hidden_layer", "bias"): math.sqrt(bias_var),
        ("classifier", "weight"): math.sqrt(weight_var / width),
        ("classifier", "bias"): math.sqrt(bias_var),
    }
    for (layer, tensor), factor in scale.items():
        raw_grad = getattr(getattr(ntk, layer).parametrizations, tensor).original.grad
        effective_grad = getattr(getattr(standard, layer), tensor).grad
        torch.testing.assert_close(raw_grad, factor * effective_grad)


@pytest.mark.parametrize("activation", ["erf", "relu", "tanh"])
def test_fcn2_activation(activation: str) -> None:
    model = small_model("fcn2", (20,), activation=activation, embedding="pre")
    _, embeddings = model(torch.randn(5, 20))
    reference = {"erf": torch.erf, "relu": torch.relu, "tanh": torch.tanh}[activation]
    torch.testing.assert_close(embeddings["features"], reference(embeddings["hidden"]))


@pytest.mark.parametrize(("name", "input_shape"), CASES)
def test_every_parameter_gets_a_gradient(name: str, input_shape: tuple[int, ...]) -> None:
    model = small_model(name, input_shape, depth_linear=1).train()
    logits, _ = model(torch.randn(6, *input_shape))
    nn.functional.cross_entropy(logits, torch.arange(6) % 5).backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name
        assert parameter.grad.abs().sum() > 0, parameter_name


def test_mlp_with_linear_head_fits_a_small_training_set() -> None:
    """A short real training run: 64 random points, 4 random labels, interpolated by full-batch
    Adam in 150 steps."""
    torch.manual_seed(3)
    x, y = torch.randn(64, 10), torch.randint(0, 4, (64,))
    model = MLP(input_shape=(10,), num_classes=4, depth=2, width=64, depth_linear=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x)[0], y).backward()
        optimizer.step()
    assert (model(x)[0].argmax(1) == y).float().mean().item() == 1.0


@pytest.mark.parametrize(
    ("cls", "knobs", "message"),
    [
        (MLP, {"depth": 0}, "model.depth must be an integer >= 1, got 0"),
        (MLP, {"depth": True}, "model.depth must be an integer >= 1, got True"),
        (MLP, {"width": 2.5}, "model.width must be an integer >= 1, got 2.5"),
        (MLP, {"batch_norm": "yes"}, "model.batch_norm must be a bool (true or false), got 'yes'"),
        (MLP, {"embedding": "mid"}, "model.embedding must be one of ['post', 'pre'], got 'mid'"),
        (MLP, {"depth_linear": -1}, "model.depth_linear must be an integer >= 0, got -1"),
        (MLP, {"linear_width": 0}, "model.linear_width must be an integer >= 1, got 0"),
        (MLP, {"classifier_bias": 1}, "model.classifier_bias must be a bool"),
        (ConvNet, {"depth": 0}, "model.depth must be an integer >= 1, got 0"),
        (
            FCN2,
            {"activation": "foo"},
            "model.activation must be one of ['erf', 'relu', 'tanh'], got 'foo'",
        ),
        (
            FCN2,
            {"parameterization": "mup"},
            "model.parameterization must be one of ['ntk', 'standard'], got 'mup'",
        ),
        (FCN2, {"weight_var": 0.0}, "model.weight_var must be a number > 0.0, got 0.0"),
        (FCN2, {"bias_var": -1}, "model.bias_var must be a number >= 0.0, got -1"),
        (
            ResNet,
            {"preset": "resnet50"},
            "model.preset must be one of ['resnet18', 'resnet34'], got 'resnet50'",
        ),
        (ResNet, {"blocks_per_stage": [2, 2]}, "mutually exclusive: set model.preset=null"),
        (
            ResNet,
            {"preset": None, "blocks_per_stage": [2, 0]},
            "model.blocks_per_stage must be a non-empty list of integers >= 1, got [2, 0]",
        ),
        (ResNet, {"preset": None}, "set model.preset (one of ['resnet18', 'resnet34'])"),
        (VGG, {"preset": "vgg19"}, "model.preset must be one of ['vgg11', 'vgg16'], got 'vgg19'"),
        (VGG, {"preset": None, "channels": ["M", 8]}, "model.channels must be a list of channel"),
        (VGG, {"preset": None, "channels": [8, "P"]}, "got [8, 'P']"),
    ],
)
def test_bad_knobs_raise_value_errors_naming_the_key(
    cls: type[LayeredNet], knobs: dict[str, Any], message: str
) -> None:
    shape = (3, 32, 32)
    with pytest.raises(ValueError) as error:
        cls(input_shape=shape, num_classes=10, **knobs)
    assert message in str(error.value)


def test_bad_input_shape_and_num_classes() -> None:
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1, got 0"):
        MLP(input_shape=(4,), num_classes=0)
    with pytest.raises(ValueError, match="input_shape must be a non-empty list"):
        MLP(input_shape=(), num_classes=2)
    with pytest.raises(ValueError, match="ConvNet needs images of at least 4x4 pixels"):
        ConvNet(input_shape=(3, 3, 8), num_classes=2)


def test_every_model_has_a_config() -> None:
    assert MODEL_CLASSES == {"conv": ConvNet, "fcn2": FCN2, "mlp": MLP, "resnet": ResNet, "vgg": VGG}


@pytest.mark.parametrize(
    ("config", "input_shape"),
    [
        (path, shape)
        for path in sorted(CONF_DIR.glob("*.yaml"))
        for shape in [*IMAGE_SHAPES, (20,)]
        if len(shape) == 3 or path.stem in DENSE_MODELS
    ],
)
def test_configs_instantiate(config: Path, input_shape: tuple[int, ...]) -> None:
    cfg = OmegaConf.load(config)
    model = hydra.utils.instantiate(cfg, input_shape=input_shape, num_classes=10).eval()
    assert type(model) is MODEL_CLASSES[config.stem]
    check_contract(model, input_shape, batch=2)


@pytest.mark.parametrize(
    ("stem", "overrides", "num_layers"),
    [
        ("resnet", ["preset=null", "blocks_per_stage=[1,1]", "width=4"], 3),
        ("vgg", ["preset=null", "channels=[4,M,8]"], 3),
        ("mlp", ["depth=2", "depth_linear=2", "embedding=pre"], 5),
    ],
)
def test_config_overrides(stem: str, overrides: list[str], num_layers: int) -> None:
    """Command-line style overrides reach the constructors as ListConfigs / YAML scalars."""
    cfg = OmegaConf.merge(OmegaConf.load(CONF_DIR / f"{stem}.yaml"), OmegaConf.from_dotlist(overrides))
    model = hydra.utils.instantiate(cfg, input_shape=(3, 32, 32), num_classes=10).eval()
    assert len(model.layer_names) == num_layers
    check_contract(model, (3, 32, 32), batch=2)
