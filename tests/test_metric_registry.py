"""One metric, one place: ``ncdepth.metrics.registry`` against the docs table, the independent reference, the
results' order and ``ncdepth-train``'s defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

import ncdepth.metrics.functional as functional_module
from ncdepth.metrics import METRIC_NAMES
from ncdepth.metrics import functional as F
from ncdepth.metrics.registry import CORE_NAMES, DEFAULT_EXTRA, EXTRA_NAMES, METRICS, NEEDS
from ncdepth.training.config import AnalysisConfig
from reference_nc import reference_neural_collapse
from test_metrics_oracles import clustered

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "docs" / "metrics.md").read_text()
ROW = re.compile(r"^\| `([a-z0-9_]+)` \| (.+?) \| .*\|$", re.MULTILINE)


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")


def metric_rows() -> dict[str, str]:
    """``{name: formula}`` of the two metric tables of docs/metrics.md (rows whose second cell is not a
    conversion of the comparison table)."""
    start = DOCS.index("## The metrics")
    end = DOCS.index("**Effective depth.**")
    return {name: formula for name, formula in ROW.findall(DOCS[start:end])}


def test_every_registered_metric_is_documented_with_its_formula() -> None:
    rows = metric_rows()
    assert list(rows) == [spec.name for spec in METRICS]  # the same names, in registry order
    anchors = {slug(line.lstrip("#").strip()) for line in DOCS.splitlines() if line.startswith("#")}
    for spec in METRICS:
        assert rows[spec.name] == spec.formula, spec.name
        assert spec.anchor in anchors, spec.anchor
        assert set(spec.needs) <= set(NEEDS), spec.name


def test_every_registered_metric_is_in_the_reference() -> None:
    features, labels = clustered([30, 20, 40, 25], 9, spread=3.0, seed=4)
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 9, generator=generator, dtype=torch.float64)
    expected = reference_neural_collapse(
        features, labels, 4, weight=weight, layer_weight=weight, ood_mean=torch.ones(9), extra=True
    )
    assert set(expected) == {spec.name for spec in METRICS}


def test_results_follow_the_registry_order() -> None:
    assert METRIC_NAMES == CORE_NAMES
    features, labels = clustered([30, 20, 40, 25], 9, spread=3.0, seed=4)
    weight = torch.randn(4, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = F.neural_collapse(
        features,
        labels,
        4,
        weight=weight,
        layer_weight=weight,
        ood_mean=torch.ones(9),
        measures=EXTRA_NAMES[::-1],
    )
    assert list(result) == [spec.name for spec in METRICS]


def test_train_defaults_are_the_registry_defaults() -> None:
    config = yaml.safe_load((ROOT / "src" / "ncdepth" / "conf" / "train.yaml").read_text())
    assert tuple(config["nc"]["measures"]) == DEFAULT_EXTRA == AnalysisConfig().measures
    assert "probe_acc" not in DEFAULT_EXTRA and "nc5_ood_dev" not in DEFAULT_EXTRA


def test_one_metric_functions_read_only_what_they_need(monkeypatch) -> None:
    """The one-metric functions of the class means alone never run pass 2; the others do."""
    features, labels = clustered([30, 20, 40, 25], 9, spread=3.0, seed=4)
    expected = F.neural_collapse(features, labels, 4)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pass 2 ran")

    monkeypatch.setattr(functional_module, "second_pass", refuse)
    means_only = [spec.name for spec in METRICS if spec.core and spec.needs == ("means",)]
    assert means_only == ["nc2_equinorm", "nc2_equiangle", "nc2_maxangle", "nc2_etf"]
    for name in means_only:
        assert getattr(F, name)(features, labels, 4) == expected[name], name
    with pytest.raises(AssertionError, match="pass 2 ran"):
        F.cdnv(features, labels, 4)


def test_unknown_measure_in_the_config_is_one_line() -> None:
    with pytest.raises(
        ValueError, match=r"^nc.measures: unknown metric 'nope'; allowed: fuzziness, [a-z0-9_, ]+$"
    ):
        AnalysisConfig(measures=["nope"])
