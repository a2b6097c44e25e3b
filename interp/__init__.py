"""mechscope's interpretability package: models, hooks, caching, stores and causal methods.

The names below are re-exported lazily, so ``import interp`` stays cheap and has no side effects.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ActivationStore",
    "ComponentGraph",
    "attribution_patch",
    "cache_activations",
    "edge_attribution",
    "edge_patch",
    "generated",
    "head_scores",
    "hook_names",
    "hooks",
    "last_real",
    "load_model",
    "patch_sweep",
    "path_patch",
    "prompt",
    "real",
    "resolve_hooks",
    "shakespeare",
    "write_run_manifest",
]

_HOME = {
    "ActivationStore": "interp.store",
    "ComponentGraph": "interp.core.nodes",
    "attribution_patch": "interp.patching",
    "edge_attribution": "interp.patching",
    "edge_patch": "interp.patching",
    "generated": "interp.core.positions",
    "head_scores": "interp.heads",
    "last_real": "interp.core.positions",
    "prompt": "interp.core.positions",
    "real": "interp.core.positions",
    "patch_sweep": "interp.patching",
    "path_patch": "interp.patching",
    "cache_activations": "interp.cache",
    "hook_names": "interp.hooks",
    "hooks": "interp.hooks",
    "load_model": "interp.models",
    "resolve_hooks": "interp.hooks",
    "shakespeare": "interp.corpus",
    "write_run_manifest": "interp.manifest",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'interp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
