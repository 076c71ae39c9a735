"""``ncdepth.metrics`` is importable and works with only torch and torchmetrics (``docs/metrics.md``,
"Dependencies")."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import ncdepth.metrics

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


def test_metrics_sources_import_only_torch_torchmetrics_and_the_standard_library() -> None:
    """Statically, so that an import of torchvision (which torchmetrics pulls in anyway when it is installed)
    or of another ncdepth package cannot hide in ``ncdepth.metrics``."""
    allowed = {"torch", "torchmetrics", *sys.stdlib_module_names}
    package = Path(ncdepth.metrics.__file__).parent
    offending = []
    for source in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.split(".")[0] not in allowed and not name.startswith("ncdepth.metrics"):
                    offending.append(f"{source.name}: {name}")
    assert not offending, offending
