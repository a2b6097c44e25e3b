"""One metric convention: ``metric(logits, batch) -> [n]``, one value per sample.

``logits`` is ``[n, pos, d_vocab]`` (the positions a method asks for) and ``batch`` is what the
logits were computed from: token ids ``[n, pos]`` for patching and scrubbing, an encoded batch
(token ids with an attention mask) for steering. A function of the logits alone is accepted
everywhere and called with the logits only, so ``lambda lg: lg[:, -1, a] - lg[:, -1, b]`` and
``def loss(logits, tokens)`` both work with every method. :func:`evaluate` is the one place a
metric is called and its output checked.

>>> import torch
>>> evaluate(lambda lg: lg[:, -1, 0], torch.ones(2, 3, 4), None, 2).tolist()
[1.0, 1.0]
>>> evaluate(lambda lg, toks: lg[:, -1, 0] * toks[:, 0], torch.ones(2, 3, 4), torch.tensor([[2], [3]]), 2).tolist()
[2.0, 3.0]
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["Metric", "evaluate", "metric_name", "read_positions", "takes_batch"]

Metric = Callable[..., Tensor]


def takes_batch(metric: Metric) -> bool:
    """Whether ``metric`` takes the batch as a second argument (else: logits alone)."""
    try:
        params = list(inspect.signature(metric).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable: assume the full convention
        return True
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in params)
    return len(positional) >= 2 or (varargs and len(positional) < 2)


def evaluate(
    metric: Metric, logits: Tensor, batch: Any, n: int, *, scalar_ok: bool = True, what: str = ""
) -> Tensor:
    """The metric's values ``[n]`` (float, detached), or an error that says what was wrong."""
    if not callable(metric):
        raise TypeError(
            f"metric must be callable: (logits) or (logits, batch) -> one value per sample; "
            f"got {metric!r}"
        )
    out = metric(logits, batch) if takes_batch(metric) else metric(logits)
    if not isinstance(out, Tensor):
        out = torch.as_tensor(out)
    if out.ndim == 0 and scalar_ok:
        return out.reshape(1).detach().float()
    if out.shape != (n,):
        scalar = " or a scalar" if scalar_ok else ""
        raise ValueError(
            f"the metric returned shape {tuple(out.shape)}; it must return one value per "
            f"{what or 'sample'} (shape [{n}]){scalar}. Reduce any position or vocabulary axes "
            "inside the metric."
        )
    return out.detach().float()


def metric_name(metric: Metric) -> str:
    """A name to show on an axis: the function's, or ``metric (lambda)``."""
    name = getattr(metric, "__name__", None) or type(metric).__name__
    func = getattr(metric, "func", None)  # functools.partial
    name = getattr(func, "__name__", name) if name == "partial" else name
    return "metric (lambda)" if name == "<lambda>" else name


def read_positions(
    metric: Metric, logits: Tensor, batch: Any, n: int, others: tuple[Tensor, ...] = ()
) -> list[int]:
    """The positions of ``logits`` ``[n, pos, d_vocab]`` that ``metric`` reads (every position
    when that cannot be shown), so a method can compute logits only there and hand the metric
    ``logits`` with just those positions replaced.

    A position is unread when setting it to NaN leaves the metric's values exactly as they were
    (NaN spreads through any arithmetic or reduction that touches it). The answer is then checked
    as a whole against each of ``others`` (other runs' logits of the same shape): with every
    unread position taken from it, the values must not move. A metric that fails on such input
    reads everything. The tensors are changed in place while probing and restored, one position
    at a time (no copy of the logits: they can be large).

    >>> import torch
    >>> read_positions(lambda lg: lg[:, -1, 0] - lg[:, 2, 1], torch.randn(2, 5, 3), None, 2)
    [2, 4]
    """
    call = (lambda lg: metric(lg, batch)) if takes_batch(metric) else metric
    everything = list(range(logits.shape[1]))

    def same() -> bool:
        try:
            out = torch.as_tensor(call(logits))
        except Exception:  # noqa: BLE001 - a metric that cannot take the probe reads it
            return False
        return out.shape == ref.shape and bool(torch.equal(out, ref))

    with torch.no_grad():
        ref = torch.as_tensor(call(logits))
        if ref.isnan().any():
            return everything
        read = []
        for j in everything:
            kept = logits[:, j].clone()
            logits[:, j] = float("nan")
            if not same():
                read.append(j)
            logits[:, j] = kept
        unread = [j for j in everything if j not in read]
        for other in others if unread else ():
            _swap(logits, other, unread)
            ok = same()
            _swap(logits, other, unread)
            if not ok:
                return everything
    return read or everything


def _swap(a: Tensor, b: Tensor, positions: list[int]) -> None:
    for j in positions:
        kept = a[:, j].clone()
        a[:, j] = b[:, j]
        b[:, j] = kept
