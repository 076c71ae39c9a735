"""``ncdepth.training.head_geometry``: zero distance at the UFM optimum, per-class norms at the
classifier's input, the product of the maps after each head layer, and the callback's ``geom_*``
rows in a real deep-linear-head run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

from ncdepth.metrics import NeuralCollapse
from ncdepth.models import MLP
from ncdepth.theory.geometry import simplex_etf
from ncdepth.theory.ufm import closed_form
from ncdepth.training import LossConfig, NCModule, OptimizerConfig
from ncdepth.training.head_geometry import HeadObjective, head_geometry, layer_geometry

NCDEPTH_TRAIN = Path(sys.executable).parent / "ncdepth-train"
SIZES = (20, 10, 5, 5)


def closed_form_head(depth: int, decay: float) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``W = prod_m diag(s_m)`` and ``Hbar = (W^T W + N lambda_H I)^{-1} W^T`` of ``closed_form``."""
    reference = closed_form(SIZES, depth, decay, decay)
    weight = torch.diag(reference["singular_values"].prod(dim=0))
    ridge = sum(SIZES) * decay * torch.eye(len(SIZES), dtype=torch.float64)
    return weight, torch.linalg.solve(weight.T @ weight + ridge, weight.T), reference


def run_objective(depth: int, decay: float, **changes: object) -> HeadObjective:
    """The MSE run whose UFM (module docstring of head_geometry) has every decay ``decay``."""
    num_classes, num_samples = len(SIZES), sum(SIZES)
    settings = {
        "loss": "mse",
        "mse_scale": 1.0,
        "feature_decay": 2 * num_samples * decay / num_classes,
        "weight_decays": (2 * decay / num_classes,) * depth,
        "classifier_bias": False,
        "coupled_decay": True,
    }
    return HeadObjective(**(settings | changes))


def test_general_orthogonal_frame_has_zero_distance_at_the_closed_form() -> None:
    depth, decay = 2, 3e-2  # classes 2 and 3 collapse
    weight, class_means, reference = closed_form_head(depth, decay)
    counts = torch.tensor(SIZES, dtype=torch.float64)
    values = layer_geometry(weight, class_means, counts, depth, run_objective(depth, decay))
    for name in ("geom_wwt", "geom_hth", "geom_wh"):
        assert values[name] < 1e-10, name
    assert abs(values["geom_alignment"] - 1.0) < 1e-12  # collapsed classes (NaN cosines) skipped
    assert reference["collapsed"].tolist() == [False, False, True, True]
    assert values["minority_w_ratio"] == values["minority_w_ratio_pred"] == 0.0
    # a different decay predicts a different frame: the distance is no longer zero
    other = layer_geometry(weight, class_means, counts, depth, run_objective(depth, 1e-3))
    assert other["geom_wwt"] > 1e-2


def test_the_classifier_input_gets_every_class_norm_beside_the_closed_form() -> None:
    weight, class_means, reference = closed_form_head(1, 1e-2)
    counts = torch.tensor(SIZES, dtype=torch.float64)
    values = layer_geometry(weight, class_means, counts, 1, run_objective(1, 1e-2))
    norms = weight.norm(dim=1)
    for k in range(len(SIZES)):
        assert abs(values[f"w_norm_ratio@{k}"] - norms[k] / norms[0]) < 1e-12  # class 0: the majority
        assert abs(values[f"w_norm_ratio@{k}"] - values[f"w_norm_ratio_pred@{k}"]) < 1e-10
        assert abs(values[f"h_norm_ratio@{k}"] - values[f"h_norm_ratio_pred@{k}"]) < 1e-10
    deeper = layer_geometry(*closed_form_head(2, 1e-2)[:2], counts, 2, run_objective(2, 1e-2))
    assert not any("@" in name for name in deeper)  # per class only where the mapping is exact


def test_no_prediction_without_a_coupled_decay_or_with_a_bias() -> None:
    weight, class_means, _ = closed_form_head(1, 1e-2)
    counts = torch.tensor(SIZES, dtype=torch.float64)
    for changes in ({"coupled_decay": False}, {"classifier_bias": True}, {"feature_decay": 0.0}):
        values = layer_geometry(weight, class_means, counts, 1, run_objective(1, 1e-2, **changes))
        assert "geom_wwt" not in values and "minority_w_ratio" in values, changes


def test_balanced_classes_with_a_bias_use_the_centred_simplex_etf() -> None:
    frame = simplex_etf(4)
    class_means = 0.3 * frame + torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)[:, None]
    counts = torch.full((4,), 7.0, dtype=torch.float64)
    objective = run_objective(1, 1e-2, classifier_bias=True)
    values = layer_geometry(2.0 * frame, class_means, counts, 1, objective)
    assert max(values[name] for name in ("geom_wwt", "geom_hth", "geom_wh")) < 1e-12
    assert abs(values["geom_alignment"] - 1.0) < 1e-12 and "minority_w_ratio" not in values


def test_head_geometry_uses_the_product_of_the_maps_after_each_layer() -> None:
    torch.manual_seed(0)
    model = MLP(input_shape=(5,), num_classes=4, depth=1, width=6, depth_linear=2, classifier_bias=False)
    labels = torch.repeat_interleave(torch.arange(4), torch.tensor(SIZES))
    x = torch.randn(len(labels), 5)
    metric = NeuralCollapse(4)
    with torch.no_grad():
        _, embeddings = model(x)
        metric.update(embeddings, labels)
        metric.next_phase()
    assert metric.class_counts().tolist() == list(map(float, SIZES))
    module = NCModule(
        model,
        loss=LossConfig(name="mse", feature_decay=1e-3),
        optimizer=OptimizerConfig(name="adam", weight_decay=1e-3, classifier_weight_decay=2e-3),
    )
    results = head_geometry(model, metric, module)
    assert list(results) == ["layer1", "linear1", "linear2"]
    objective = HeadObjective.of(module)
    assert objective.weight_decays == (1e-3, 1e-3, 2e-3)
    first, second = (layer.weight.detach().double() for layer in model.linear_head)
    product = model.classifier.weight.detach().double() @ second @ first
    means = torch.stack([embeddings["layer1"][labels == k].double().mean(0) for k in range(4)], dim=1)
    expected = layer_geometry(product, means, metric.class_counts(), 3, objective)
    assert set(results["layer1"]) == set(expected)
    for name, value in expected.items():
        assert abs(results["layer1"][name] - value) < 1e-6, name  # float32 embeddings


def test_callback_logs_the_head_geometry_of_a_trained_network(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = [
        "model.depth=1",
        "model.width=32",
        "model.depth_linear=2",
        "trainer.max_epochs=2",
        "nc.every_n_epochs=2",
        "callbacks=none",
    ]
    result = subprocess.run(
        [
            str(NCDEPTH_TRAIN),
            "+experiment=deep_linear_imbalanced_quick",
            f"hydra.run.dir={run_dir}",
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(run_dir / "metrics.csv")
    per_class = table[table["metric"].str.contains("_norm_ratio")]
    assert set(per_class["layer"]) == {"linear2"}  # the classifier's input
    assert set(per_class["metric"]) == {
        f"{norm}_norm_ratio{suffix}@{k}" for norm in "wh" for suffix in ("", "_pred") for k in range(10)
    }
    geometry = table[table["metric"].str.startswith(("geom_", "minority_"))]
    assert set(geometry["split"]) == {"train"} and set(geometry["epoch"]) == {0, 2}
    assert set(geometry["layer"]) == {"layer1", "linear1", "linear2"}
    final = geometry[geometry["epoch"] == 2].pivot(index="layer", columns="metric", values="value")
    expected = {"geom_wwt", "geom_hth", "geom_wh", "geom_alignment", "minority_w_ratio", "minority_h_ratio"}
    assert expected | {"minority_w_ratio_pred", "minority_h_ratio_pred"} == set(final.columns)
    assert final[["geom_wwt", "geom_hth", "geom_wh"]].stack().between(0.0, 2.0).all()
    assert final["geom_alignment"].between(-1.0, 1.0).all()
