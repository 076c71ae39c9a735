"""The ``Example:`` sections of ``ncdepth.metrics`` run as doctests (so ``make test`` checks them)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = (
    "ncdepth.metrics",
    "ncdepth.metrics.collapse",
    "ncdepth.metrics.functional",
    "ncdepth.metrics.generalized",
    "ncdepth.metrics.probe",
    "ncdepth.metrics.registry",
    "ncdepth.metrics.stats",
    "ncdepth.metrics.tap",
    "ncdepth.metrics.validation",
)
WITH_EXAMPLES = (
    "ncdepth.metrics.collapse",
    "ncdepth.metrics.functional",
    "ncdepth.metrics.generalized",
    "ncdepth.metrics.tap",
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_pass(name: str) -> None:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for test in finder.find(module, name):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
    if name in WITH_EXAMPLES:
        assert result.attempted > 0, f"{name} has no doctested examples"
