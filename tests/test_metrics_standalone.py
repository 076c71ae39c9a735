"""``ncdepth.metrics`` is importable and works with only torch and torchmetrics (DESIGN §2)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# ncdepth's other runtime dependencies (but matplotlib and torchvision, which torchmetrics itself imports
# when they are installed) and every other ncdepth subpackage.
FORBIDDEN = (
    "pytorch_lightning",
    "lightning",
    "hydra",
    "omegaconf",
    "pandas",
    "sklearn",
    "mlxtend",
    "mnist1d",
    "rich",
    "ncdepth.models",
    "ncdepth.data",
    "ncdepth.training",
    "ncdepth.theory",
    "ncdepth.report",
    "ncdepth.cli",
)

SCRIPT = textwrap.dedent(
    """
    import sys

    for name in {forbidden!r}:  # as if not installed: imports fail, find_spec says absent
        sys.modules[name] = None

    import torch
    from ncdepth.metrics import NeuralCollapse
    from ncdepth.metrics.functional import neural_collapse

    torch.manual_seed(0)
    features, labels = torch.randn(60, 5, dtype=torch.float64), torch.arange(60) % 3
    metric = NeuralCollapse(3)
    metric.update({{"h": features}}, labels)
    metric.next_phase()
    metric.update({{"h": features}}, labels)
    streamed = metric.compute()["h"]["nc1"]
    direct = neural_collapse(features, labels, 3)["nc1"]
    assert abs(streamed - direct) <= 1e-12 * abs(direct), (streamed, direct)
    print("ok")
    """
)


def test_metrics_import_and_run_without_the_rest_of_ncdepth() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(forbidden=FORBIDDEN)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
