"""Fused kernels for the SAE hot path (sparse decode, its gradients, row top-k with aux-k), with
eager PyTorch references and a dispatch between them.

Names are re-exported lazily: ``import kernels`` imports neither Triton nor torch, and has no
side effects. Triton is imported on the first use of the Triton backend.

    from kernels import sparse_sae_loss
    loss, out = sparse_sae_loss(x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, k=32)
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BACKENDS",
    "Backend",
    "SparseLossOutput",
    "SparseSAEOutput",
    "TopKResult",
    "backend_choice",
    "get_backend",
    "reference",
    "sae_forward",
    "sparse_decode",
    "sparse_sae_loss",
    "topk_sae_forward",
]

_HOME = {
    "BACKENDS": "kernels.dispatch",
    "Backend": "kernels.dispatch",
    "backend_choice": "kernels.dispatch",
    "get_backend": "kernels.dispatch",
    "TopKResult": "kernels.reference",
    "SparseLossOutput": "kernels.autograd",
    "SparseSAEOutput": "kernels.autograd",
    "sae_forward": "kernels.autograd",
    "sparse_decode": "kernels.autograd",
    "sparse_sae_loss": "kernels.autograd",
    "topk_sae_forward": "kernels.autograd",
}


def __getattr__(name: str) -> Any:
    if name == "reference":
        return importlib.import_module("kernels.reference")
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'kernels' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
