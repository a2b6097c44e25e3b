"""Steering vectors (representation engineering): extract, read, apply, sweep, save.

>>> from interp.steering import extract, steer, add, sweep
>>> vecs = extract(model, positive, negative, layers=[6, 9], method="diff_mean", position="mean")
>>> with steer(model, add(vecs[6], 4.0)):
...     logits = model(tokens)

Modules: ``extraction`` (diff_mean / pca / probe / actadd), ``read`` (projections, held-out
accuracy), ``apply`` (add / ablate / clamp, ``steer``, ``generate``), ``sweeps`` (layers × α with
CIs), ``io`` (safetensors), ``data`` and ``study`` (the SmolLM2 experiment). Names are re-exported
lazily, so importing the package loads nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Accuracy",
    "Edit",
    "Encoded",
    "Measure",
    "Projections",
    "SteeringSweep",
    "SteeringVector",
    "ablate",
    "add",
    "clamp",
    "collect_activations",
    "encode",
    "extract",
    "generate",
    "load_vectors",
    "probe_accuracy",
    "project",
    "random_direction",
    "save_vectors",
    "steer",
    "sweep",
    "word_embedding_direction",
    "word_logit_diff",
]

_HOME = {
    "Accuracy": "read",
    "Edit": "apply",
    "Encoded": "_batch",
    "Measure": "sweeps",
    "Projections": "read",
    "SteeringSweep": "sweeps",
    "SteeringVector": "vector",
    "ablate": "apply",
    "add": "apply",
    "clamp": "apply",
    "collect_activations": "extraction",
    "encode": "_batch",
    "extract": "extraction",
    "generate": "apply",
    "load_vectors": "io",
    "random_direction": "sweeps",
    "word_embedding_direction": "sweeps",
    "probe_accuracy": "read",
    "project": "read",
    "save_vectors": "io",
    "steer": "apply",
    "sweep": "sweeps",
    "word_logit_diff": "sweeps",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"interp.steering.{_HOME[name]}"), name)
    raise AttributeError(f"module 'interp.steering' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
