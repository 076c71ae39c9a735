"""The README's "Use it in your project" code blocks run as written, each in a fresh interpreter:
a torchvision ResNet-18 measured at five layers in a plain loop (``LayerTap`` + ``NeuralCollapse``), a small
causal language model measured at token level over the tokens that occur (``empty_classes="drop"``), and a
ResNet-18 during training (``NeuralCollapseCallback``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Use it in your project"


def section_blocks() -> list[str]:
    """The ```python blocks of the README's "Use it in your project" section, in order."""
    section = README.read_text().split(SECTION)[1].split("\n## ")[0]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


BLOCKS = section_blocks()
EXPECTED = {  # what each example prints, in its own words
    'LayerTap(model, layers, pool="avg")': (
        "layer1 NCC train",
        "avgpool NCC train",
        "effective depth at eps=0.1:",
    ),
    "tokens=True": ("tokens measured:", "ln_f NCC", "rank-normalised"),
    "NeuralCollapseCallback(": ("'net.avgpool':", "0.1:"),
}


def test_the_section_holds_the_three_examples() -> None:
    assert [next(key for key in EXPECTED if key in block) for block in BLOCKS] == list(EXPECTED)


@pytest.mark.parametrize("block", BLOCKS, ids=list(EXPECTED))
def test_the_example_runs_as_written(block: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", block],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected = next(words for key, words in EXPECTED.items() if key in block)
    assert all(word in result.stdout for word in expected), result.stdout[-2000:]
