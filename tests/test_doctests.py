"""Docstring examples that run on their own are run here (the others need a model in scope)."""

import doctest
import importlib

import pytest

SELF_CONTAINED = [
    "interp.table",
    "interp.core.positions",
    "interp.random_models",
    "interp.multiple_testing",
    "interp.recipe",
    "interp.core.metric",
    "interp.core.result",
    "interp.circuits.study",
    "interp.circuits.influence",
]


@pytest.mark.parametrize("module", SELF_CONTAINED)
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
