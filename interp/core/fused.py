"""Fused kernels for a TransformerLens model's norms and GELU while the partial forward runs.

TransformerLens computes LayerNorm, RMSNorm and ``gelu_new`` as chains of elementwise ops
(mean, subtract, square, mean, add, sqrt, divide, multiply, add; seven for the GELU) so it can
expose ``hook_scale`` and ``hook_normalized``. In a patching sweep on CPU those chains cost about
as much as the matrix products. :func:`fused_layers` swaps in ``F.layer_norm``, ``F.rms_norm`` and
``F.gelu(approximate="tanh")``: the same functions, one pass each, equal to float rounding. A norm
falls back to TransformerLens's own forward, call by call, whenever a hook is attached to its
``hook_scale`` or ``hook_normalized``, or its dtype is not fp32/fp64 (TL upcasts those), so
every hook still sees what it would have. On a ``TransformerBridge`` the same holds for its
normalization bridges (which recompute the norm in Python to feed those hooks; unhooked, the
wrapped module runs alone) and for transformers' ``NewGELUActivation``/``FastGELUActivation``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["fused_layers"]

_FLOATS = (torch.float32, torch.float64)


def _hooked(norm: Any) -> bool:
    return bool(norm.hook_scale._forward_hooks or norm.hook_normalized._forward_hooks)


def _fused_norm(norm: Any, original: Callable[[Tensor], Tensor], kind: str) -> Callable[..., Any]:
    def forward(x: Tensor) -> Tensor:
        if x.dtype not in _FLOATS or norm.cfg.dtype not in _FLOATS or _hooked(norm):
            return original(x)
        weight = getattr(norm, "w", None)
        if kind == "layer":
            return F.layer_norm(x, x.shape[-1:], weight, getattr(norm, "b", None), norm.eps)
        return F.rms_norm(x, x.shape[-1:], weight, norm.eps)

    return forward


def _norm_kind(module: Any) -> str | None:
    try:
        from transformer_lens.components import LayerNorm, LayerNormPre, RMSNorm, RMSNormPre
    except ImportError:  # TransformerLens 4 has no HookedTransformer components
        return None
    if type(module) in (LayerNorm, LayerNormPre):
        return "layer"
    if type(module) in (RMSNorm, RMSNormPre):
        return "rms"
    return None  # a subclass may compute something else: leave it alone


def _gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


def _is_bridge_norm(module: Any) -> bool:
    try:
        from transformer_lens.model_bridge.generalized_components.normalization import (
            NormalizationBridge,
        )
    except ImportError:  # TransformerLens 3 has no bridges
        return False
    return type(module) is NormalizationBridge


def _fused_bridge_norm(norm: Any, original: Callable[..., Tensor]) -> Callable[..., Any]:
    points = (norm.hook_in, norm.hook_out, norm.hook_scale, norm.hook_normalized)

    def forward(x: Tensor, **kwargs: Any) -> Tensor:
        inner = norm.original_component
        if kwargs or inner is None or any(p._forward_hooks for p in points):
            return original(x, **kwargs)
        out = inner(x)
        return out if out.dtype == x.dtype else out.to(x.dtype)

    return forward


def _hf_tanh_gelus() -> tuple[type, ...]:
    try:
        from transformers import activations
    except ImportError:
        return ()
    names = ("NewGELUActivation", "FastGELUActivation")
    return tuple(getattr(activations, n) for n in names if hasattr(activations, n))


@contextlib.contextmanager
def fused_layers(model: Any) -> Iterator[None]:
    """Within the block, ``model``'s norms and tanh-approximate GELUs run fused. Restored on
    exit, errors included.

    >>> import torch
    >>> from interp.random_models import random_model
    >>> m = random_model("hooked", n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                  d_vocab=20, n_ctx=8, seed=0)
    >>> t = torch.tensor([[1, 2, 3, 4]])
    >>> with torch.no_grad():
    ...     plain = m(t)
    ...     with fused_layers(m):
    ...         fused = m(t)
    >>> bool(torch.allclose(plain, fused, atol=1e-5)), m.blocks[0].ln1.forward.__name__
    (True, 'forward')
    """
    from transformer_lens.utilities import activation_functions as tl_acts

    gelus = [getattr(tl_acts, name) for name in ("gelu_new", "gelu_fast") if hasattr(tl_acts, name)]
    hf_gelus = _hf_tanh_gelus()
    undo: list[Callable[[], None]] = []
    try:
        for module in model.modules():
            act = vars(module).get("act_fn")  # a HookedTransformer MLP's activation function
            if act is not None and any(act is g for g in gelus):
                vars(module)["act_fn"] = _gelu_tanh
                undo.append(functools.partial(vars(module).__setitem__, "act_fn", act))
            if "forward" in vars(module):
                continue  # already replaced by someone: leave it
            kind = _norm_kind(module)
            if kind is not None:
                fn = _fused_norm(module, module.forward, kind)
            elif _is_bridge_norm(module):
                fn = _fused_bridge_norm(module, module.forward)
            elif hf_gelus and type(module) in hf_gelus:
                fn = _gelu_tanh
            else:
                continue
            # Straight into the instance dict: a bridge's __setattr__ forwards attributes to
            # the module it wraps.
            vars(module)["forward"] = fn
            undo.append(functools.partial(vars(module).pop, "forward"))
        yield
    finally:
        for step in reversed(undo):
            step()
