"""The NC analysis under Lightning's ``*-true`` precisions: the model's parameters are bfloat16 or float64,
the data float32; the analysis converts the inputs to the parameters' dtype (a dtype error before), the
metrics take bfloat16 features, and the deep linear head's geometry is measured."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import BIN, run_command


@pytest.mark.parametrize("precision", ["bf16-true", "64-true"])
def test_a_true_precision_run_is_analysed(tmp_path: Path, precision: str) -> None:
    run_command(
        [
            str(BIN / "ncdepth-train"),
            f"hydra.run.dir={tmp_path}",
            "data=gaussian",
            "trainer=cpu",
            f"trainer.precision={precision}",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            "model.depth=2",
            "model.width=32",
            "model.depth_linear=1",
        ]
    )
    rows = pd.read_csv(tmp_path / "metrics.csv")
    train = rows[(rows.split == "train") & (rows.epoch == 1)]
    assert set(train.layer) == {"layer1", "layer2", "linear1"}
    ncc = train[train.metric == "ncc_acc"].value
    assert len(ncc) == 3 and ncc.between(0.0, 1.0).all() and ncc.max() > 0.5
    assert "geom_alignment" in set(train[train.layer == "linear1"].metric)
