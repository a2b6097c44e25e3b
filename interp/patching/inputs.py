"""Checks shared by every patching method: token batches, metrics, ablation kinds, labels.

All of these run before any patched forward, so bad input fails fast and clearly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from interp.core.adapter import adapt
from interp.core.metric import Metric, evaluate, metric_name, takes_batch
from interp.hooks import TLModel
from interp.validate import check_choice, check_tokenizer, check_tokens

__all__ = [
    "ABLATIONS",
    "DIRECTIONS",
    "Metric",
    "as_tokens",
    "axis_labels",
    "check_ablation",
    "check_metric_first",
    "check_pair",
    "checked_metric",
    "metric_name",
    "position_labels",
    "reference_tokens",
]

ABLATIONS = ("corrupt", "mean", "zero")
DIRECTIONS = ("denoise", "noise")


def as_tokens(model: TLModel, x: Any, what: str) -> Tensor:
    """Token ids ``[batch, pos]`` from a tensor, a string or a list of strings."""
    if isinstance(x, str) or (isinstance(x, Sequence) and x and isinstance(x[0], str)):
        check_tokenizer(model, f"{what} as text")
        x = model.to_tokens(x)
    if not isinstance(x, Tensor):
        raise TypeError(f"{what} must be token ids [batch, pos] or text; got {type(x).__name__}")
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"{what} must be integer token ids of shape [batch, pos]; got {x.dtype} "
            f"{tuple(x.shape)}"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{what} is empty: shape {tuple(x.shape)}")
    check_tokens(model, x, what)
    return x.long().to(model.cfg.device)


def reference_tokens(model: TLModel, reference: Any, clean: Tensor, ablation: str) -> Tensor:
    """The mean-ablation reference (default: the clean batch), checked before any forward."""
    ref = clean if reference is None else as_tokens(model, reference, "reference")
    if ablation == "mean" and ref.shape[1] != clean.shape[1]:
        raise ValueError(
            f"the mean-ablation reference has {ref.shape[1]} positions but the prompts have "
            f"{clean.shape[1]}; use reference prompts of the same length (means are per position)"
        )
    return ref


def check_pair(clean: Tensor, corrupt: Tensor | None) -> None:
    if corrupt is not None and clean.shape != corrupt.shape:
        raise ValueError(
            f"clean and corrupted batches must have the same shape [batch, pos] so prompts pair "
            f"up position by position; got clean {tuple(clean.shape)} and corrupted "
            f"{tuple(corrupt.shape)}"
        )


def check_ablation(ablation: str, direction: str, corrupt: Tensor | None) -> None:
    check_choice(ablation, ABLATIONS, "ablation")
    check_choice(direction, DIRECTIONS, "direction")
    if ablation == "corrupt" and corrupt is None:
        raise ValueError("ablation='corrupt' needs a corrupted batch; pass `corrupt=` tokens")
    if ablation != "corrupt" and direction == "denoise":
        raise ValueError(
            f"ablation={ablation!r} replaces clean activations, so it only runs as "
            "direction='noise' (denoising needs a corrupted run to restore into)"
        )


def checked_metric(metric: Metric, logits: Tensor, n: int, batch: Any = None) -> Tensor:
    """The metric on ``logits`` (and ``batch``, the tokens they came from), as ``[n]``
    per-prompt values, or a clear error (see :func:`interp.core.metric.evaluate`)."""
    return evaluate(metric, logits, batch, n, what="prompt")


def check_metric_first(
    model: TLModel, metric: Metric, n: int, n_pos: int, batch: Any = None
) -> None:
    """Call the metric on zero logits of the right shape, so a bad one fails before any forward."""
    if not callable(metric):
        raise TypeError(f"metric must be callable logits -> values; got {metric!r}")
    spec = adapt(model).spec
    zeros = torch.zeros(n, n_pos, spec.d_vocab, device=model.cfg.device)
    try:
        with torch.no_grad():
            out = metric(zeros, batch) if takes_batch(metric) else metric(zeros)
    except Exception as err:
        raise ValueError(
            f"the metric failed on logits of shape [batch={n}, pos={n_pos}, "
            f"d_vocab={spec.d_vocab}]: {type(err).__name__}: {err}"
        ) from err
    checked_metric(lambda _: out, zeros, n)


def axis_labels(
    model: TLModel, tokens: Tensor, over: Sequence[str], ranges: dict[str, list[int]]
) -> dict[str, list[str]]:
    """Labels for each swept axis: ``L3``, ``H5``, and ``"7 ' Mary'"`` for positions."""
    pos = position_labels(model, tokens)
    fmt = {"layer": lambda v: f"L{v}", "head": lambda v: f"H{v}", "pos": lambda v: pos[v],
           "src_pos": lambda v: pos[v]}  # fmt: skip
    return {a: [fmt[a](v) for v in ranges[a]] for a in over}


def position_labels(model: TLModel, tokens: Tensor) -> list[str]:
    """``"3 ' Mary'"``-style labels from the first prompt (just the index without a tokenizer)."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return [str(p) for p in range(tokens.shape[1])]
    return [f"{p} {tok.decode([int(t)])!r}" for p, t in enumerate(tokens[0].tolist())]
