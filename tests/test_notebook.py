"""``notebooks/analysis.ipynb`` runs top to bottom on a real tiny sweep's report (nbclient), as Jupyter
runs it: the kernel's working directory is ``notebooks/`` and the report directory is given relative to
the repository root (as ``make notebook REPORT=DIR`` does)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "analysis.ipynb"
KERNEL = "python3"
"""ipykernel's own kernel: jupyter_client finds its spec in the virtualenv or, failing that, builds
it from the installed ipykernel, and runs it with this interpreter."""


def test_analysis_notebook_runs_on_a_sweep_report(
    tiny_bound_sweep: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sweep, _ = tiny_bound_sweep
    monkeypatch.setenv("NCDEPTH_REPORT_DIR", os.path.relpath(sweep / "report", REPO))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, kernel_name=KERNEL, timeout=300, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    printed = "".join(output.get("text", "") for output in code[0].outputs)
    assert "4 runs" in printed and "grouping keys: ['data.extra_label_noise']" in printed
    figures = sum("image/png" in output.get("data", {}) for cell in code for output in cell.outputs)
    assert figures == 4  # NCC per layer, NCC over epochs, effective depth, bound
    (bound_output,) = [
        out["data"]["text/plain"] for out in code[-1].outputs if out.output_type == "execute_result"
    ]
    assert "probability" in bound_output and "test_error_mean" in bound_output
