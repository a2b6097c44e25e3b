"""Extract a direction per layer from contrastive prompt sets.

Methods (each a pure function of the two activation sets, so they are testable without a model):

- ``diff_mean`` (CAA): mean(positive) − mean(negative). Sets may differ in size.
- ``pca`` (RepE): the first principal direction of the paired differences positive_i − negative_i,
  uncentred (as RepE's random sign flips of pairs make it), signed so pairs project positively.
- ``probe``: an L2-regularised logistic regression (torch, L-BFGS, float64).
- ``actadd``: the difference of a single pair.

Every vector is scaled to activation units: its unit direction times the separation of the class
means along it, so α = 1 means "one class separation" whatever the method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from interp.cache import cache_activations
from interp.core.forward import rows_for
from interp.hooks import TLModel
from interp.models import model_fingerprint
from interp.recipe import recorded
from interp.steering._batch import (
    Encoded,
    PaddingSide,
    Position,
    Prompts,
    encode,
    hash_prompts,
    is_pooled,
    position_to_json,
    token_mask,
)  # fmt: skip
from interp.steering._batch import token_index as _token_index
from interp.steering.vector import SteeringVector, check_layer, hook_name_for
from interp.validate import check_context, check_int, check_token_ids, did_you_mean

__all__ = [
    "METHODS",
    "Direction",
    "Method",
    "collect_activations",
    "direction_from_activations",
    "extract",
    "extraction_metadata",
    "fingerprint",
    "vectors_from_activations",
]

Method = Literal["diff_mean", "pca", "probe", "actadd"]
PAIRED = ("pca", "actadd")


class Direction(NamedTuple):
    vector: Float[Tensor, " d_model"]  # in activation units
    threshold: float  # projection on the unit direction that separates the classes


def _finish(u: Tensor, pos: Tensor, neg: Tensor, threshold: float | None = None) -> Direction:
    """Scale a unit direction by the class separation along it; default threshold = midpoint."""
    mp, mn = float((pos @ u).mean()), float((neg @ u).mean())
    return Direction((u * (mp - mn)).float(), (mp + mn) / 2 if threshold is None else threshold)


def _unit(v: Tensor) -> Tensor:
    n = v.norm()
    if n == 0:
        raise ValueError(
            "the two sets have identical mean activations here, so there is no direction (at "
            "layer 0 with position 'last', every prompt ending in the same token does this)"
        )
    return v / n


def diff_mean(pos: Tensor, neg: Tensor) -> Direction:
    pos, neg = pos.double(), neg.double()
    return _finish(_unit(pos.mean(0) - neg.mean(0)), pos, neg)


def pca(pos: Tensor, neg: Tensor) -> Direction:
    pos, neg = pos.double(), neg.double()
    diffs = pos - neg  # [pair, d_model]
    _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
    u = vh[0]
    if (diffs @ u).mean() < 0:  # singular vectors have no sign: point from negative to positive
        u = -u
    return _finish(u, pos, neg)


def actadd(pos: Tensor, neg: Tensor) -> Direction:
    pos, neg = pos.double(), neg.double()
    return _finish(_unit(pos[0] - neg[0]), pos, neg)


def probe(pos: Tensor, neg: Tensor, *, l2: float = 1e-2, max_iter: int = 200) -> Direction:
    """Logistic regression on centred activations divided by one global scale.

    One scale for all features keeps the L2 penalty isotropic in activation space, so the
    direction is not distorted by per-feature standardisation.
    """
    x = torch.cat([pos, neg]).double()
    y = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).double()
    mu = x.mean(0)
    scale = (x - mu).pow(2).mean().sqrt().clamp_min(1e-12)
    z = (x - mu) / scale
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1, max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-9
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y)
        loss = loss + 0.5 * l2 * w.dot(w)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w_raw = w.detach() / scale
    b_raw = b.detach() - mu @ w_raw
    u = _unit(w_raw)
    # The decision boundary w·x + b = 0 sits at projection −b/|w| on the unit direction.
    return _finish(u, pos.double(), neg.double(), float(-b_raw / w_raw.norm()))


METHODS: dict[str, Callable[[Tensor, Tensor], Direction]] = {
    "diff_mean": diff_mean,
    "pca": pca,
    "probe": probe,
    "actadd": actadd,
}


def direction_from_activations(
    pos: Float[Tensor, "n_pos d_model"], neg: Float[Tensor, "n_neg d_model"], method: str
) -> Direction:
    """The direction from already collected activations (one layer)."""
    _check_method(method, len(pos), len(neg))
    return METHODS[method](pos, neg)


def _check_method(method: str, n_pos: int, n_neg: int) -> None:
    if method not in METHODS:
        raise ValueError(
            f"unknown method {method!r}: expected one of {', '.join(METHODS)}"
            + did_you_mean(method, METHODS)
        )
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"the {'positive' if n_pos == 0 else 'negative'} set is empty: each set needs at "
            "least one prompt"
        )
    if method in PAIRED and n_pos != n_neg:
        raise ValueError(
            f"method {method!r} needs paired prompts (positive[i] against negative[i]), but the "
            f"positive set has {n_pos} prompts and the negative set {n_neg}: give sets of the "
            "same size, or use 'diff_mean' or 'probe', which do not pair"
        )
    if method == "actadd" and n_pos != 1:
        raise ValueError(
            f"method 'actadd' uses a single pair, but got {n_pos} pairs: pass one positive and "
            "one negative prompt (or use 'diff_mean' / 'pca' for many)"
        )


def _check_layers(model: TLModel, layers: int | Sequence[int]) -> list[int]:
    out = [layers] if isinstance(layers, int) else list(layers)
    if not out:
        raise ValueError("no layers given: pass an int or a non-empty list of layer indices")
    for layer in out:
        check_layer(model, layer)
    return out


def collect_activations(
    model: TLModel,
    prompts: Prompts | Encoded,
    *,
    layers: int | Sequence[int],
    site: str = "resid_pre",
    position: Position = "last",
    padding_side: PaddingSide = "right",
    max_tokens: int = 2048,
    prepend_bos: bool | None = None,
) -> Float[Tensor, "layer batch d_model"]:
    """One activation per prompt and layer, at ``position`` among each prompt's real tokens.

    ``max_tokens``: prompts × padded positions per forward (at least one prompt).
    """
    layer_list = _check_layers(model, layers)
    names = [hook_name_for(site, layer) for layer in layer_list]
    check_int(max_tokens, "max_tokens", minimum=1)
    enc = encode(model, prompts, padding_side=padding_side, prepend_bos=prepend_bos)
    check_token_ids(enc.tokens, int(model.cfg.d_vocab), "prompts")
    check_context(enc.tokens.shape[1], int(model.cfg.n_ctx), "the longest prompt")
    pooled = is_pooled(position)
    # A bad position fails here, before any model run.
    token_mask(enc, position) if pooled else _token_index(enc, position)  # type: ignore[arg-type]
    out = []
    for chunk in enc.chunks(rows_for(max_tokens, enc.tokens.shape[1])):
        kwargs = chunk.forward_kwargs()
        if pooled:
            cache = cache_activations(model, chunk.tokens, names, **kwargs)
            keep = token_mask(chunk, position)  # type: ignore[arg-type]
            n = keep.sum(1)[:, None].to(cache[names[0]].dtype)
            acts = [torch.where(keep[..., None].bool(), cache[x], 0).sum(1) / n for x in names]
        else:
            idx = _token_index(chunk, position)[:, None]  # type: ignore[arg-type]
            cache = cache_activations(model, chunk.tokens, names, positions=idx, **kwargs)
            acts = [cache[x][:, 0] for x in names]
        out.append(torch.stack(acts))
    return torch.cat(out, 1)


def fingerprint(model: TLModel) -> str:
    """``interp.models.model_fingerprint`` (cached there until a weight changes)."""
    return model_fingerprint(model)


@recorded
def extract(
    model: TLModel,
    positive: Prompts,
    negative: Prompts,
    *,
    layers: int | Sequence[int],
    method: Method = "diff_mean",
    site: str = "resid_pre",
    position: Position = "last",
    padding_side: PaddingSide = "right",
    max_tokens: int = 2048,
    prepend_bos: bool | None = None,
) -> dict[int, SteeringVector]:
    """A steering vector per layer from positive and negative prompts.

    >>> vecs = extract(model, ["I love it"], ["I hate it"], layers=[4, 8], method="actadd")
    >>> vecs[4].hook_name
    'blocks.4.hook_resid_pre'
    """
    for name, prompts in (("positive", positive), ("negative", negative)):
        if isinstance(prompts, (str, Tensor)):
            raise TypeError(
                f"the {name} set must be a list of prompts, not a single {type(prompts).__name__}"
            )
    _check_method(method, len(positive), len(negative))
    layer_list = _check_layers(model, layers)
    hook_name_for(site, layer_list[0])
    both = encode(model, [*positive, *negative], padding_side=padding_side, prepend_bos=prepend_bos)
    acts = collect_activations(
        model, both, layers=layer_list, site=site, position=position, max_tokens=max_tokens
    )
    meta = extraction_metadata(model, positive, negative, position, padding_side, prepend_bos)
    n = len(positive)
    return vectors_from_activations(
        acts[:, :n], acts[:, n:], layers=layer_list, method=method, site=site, metadata=meta
    )


def extraction_metadata(
    model: TLModel,
    positive: Prompts,
    negative: Prompts,
    position: Position,
    padding_side: str = "right",
    prepend_bos: bool | None = None,
) -> dict[str, Any]:
    """What a vector records about its making: model fingerprint, data hash, position, ..."""
    return {
        "model_fingerprint": fingerprint(model),
        "model_name": str(getattr(model.cfg, "model_name", "")),
        "data_sha256": hash_prompts(positive, negative),
        "position": position_to_json(position),
        "padding_side": padding_side,
        "prepend_bos": prepend_bos,
        "n_positive": len(positive),
        "n_negative": len(negative),
    }


def vectors_from_activations(
    pos: Float[Tensor, "layer n_pos d_model"],
    neg: Float[Tensor, "layer n_neg d_model"],
    *,
    layers: Sequence[int],
    method: str = "diff_mean",
    site: str = "resid_pre",
    metadata: dict[str, Any] | None = None,
) -> dict[int, SteeringVector]:
    """A vector per layer from collected activations (see :func:`collect_activations`)."""
    _check_method(method, pos.shape[1], neg.shape[1])
    if not pos.shape[0] == neg.shape[0] == len(layers):
        raise ValueError(
            f"activations for {pos.shape[0]} and {neg.shape[0]} layers; {len(layers)} layers named"
        )
    out = {}
    for i, layer in enumerate(layers):
        d = METHODS[method](pos[i], neg[i])
        meta = {**(metadata or {}), "method": method}
        out[layer] = SteeringVector(d.vector, layer, site, method, d.threshold, meta)
    return out
