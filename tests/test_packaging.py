"""The installed environment: this project's import names are not shadowed by another distribution."""

import importlib.metadata
from pathlib import Path

import kernels

ROOT = Path(__file__).resolve().parents[1]


def test_kernels_is_this_project_and_no_hub_kernels_distribution():
    # transformers >= 5.25 requires Hugging Face's `kernels`, whose import name is this
    # project's `kernels`: with both installed, importing a transformers model fails (so <5.25).
    assert Path(kernels.__file__).resolve().parent == ROOT / "kernels"
    try:
        version = importlib.metadata.version("kernels")
    except importlib.metadata.PackageNotFoundError:
        return
    raise AssertionError(
        f"the distribution 'kernels' {version} is installed beside mechscope and shares its import "
        "name; uninstall it (`pip uninstall kernels`) and keep transformers<5.25"
    )
