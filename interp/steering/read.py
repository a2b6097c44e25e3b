"""Read a direction: per-token projection scores, and held-out accuracy with a bootstrap CI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.cache import cache_activations
from interp.core.forward import rows_for
from interp.hooks import TLModel
from interp.stats import CI, bootstrap_ci
from interp.steering._batch import PaddingSide, Position, Prompts, encode, position_from_json
from interp.steering.extraction import collect_activations
from interp.steering.vector import SteeringVector, check_width
from interp.validate import check_int

__all__ = ["Accuracy", "Projections", "accuracy_from_activations", "probe_accuracy", "project"]


@dataclass(frozen=True)
class Projections:
    """Per-token scores ``act · u`` (u the unit direction); NaN where a column is padding."""

    scores: Float[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    tokens: Int[Tensor, "batch pos"]
    hook_name: str

    def per_prompt(self) -> list[Tensor]:
        """Each prompt's scores over its real tokens only."""
        return [s[m.bool()] for s, m in zip(self.scores, self.attention_mask, strict=True)]


def project(
    model: TLModel,
    prompts: Prompts,
    vector: SteeringVector,
    *,
    padding_side: PaddingSide = "right",
    max_tokens: int = 2048,
    prepend_bos: bool | None = None,
) -> Projections:
    """Project every token's activation at the vector's hook onto its unit direction (RepE reading).

    Prompts are tokenised as the vector's were (its recorded ``prepend_bos``) unless told otherwise.
    ``max_tokens``: prompts × padded positions per forward (at least one prompt).
    """
    check_width(model, vector.vector, vector.hook_name)
    check_int(max_tokens, "max_tokens", minimum=1)
    bos = prepend_bos if prepend_bos is not None else vector.metadata.get("prepend_bos")
    enc = encode(model, prompts, padding_side=padding_side, prepend_bos=bos)
    u = vector.unit
    rows = []
    size = rows_for(max_tokens, enc.tokens.shape[1])
    for i in range(0, len(enc), size):  # slices keep the full pad width: one result tensor
        tok, mask = enc.tokens[i : i + size], enc.attention_mask[i : i + size]
        kw: dict[str, Any] = {} if bool(mask.all()) else {"attention_mask": mask}
        act = cache_activations(model, tok, vector.hook_name, **kw)[vector.hook_name]
        rows.append(torch.where(mask.bool(), act @ u.to(act), torch.nan))
    return Projections(torch.cat(rows), enc.attention_mask, enc.tokens, vector.hook_name)


@dataclass(frozen=True)
class Accuracy:
    """Held-out classification by the sign of (projection − threshold).

    ``accuracy``: the share of prompts classified right, bootstrapped over pairs (or over prompts
    when the sets are not paired). ``ranking``: the share of pairs whose positive prompt projects
    higher than its negative (None when unpaired); it needs no threshold.
    """

    accuracy: CI
    ranking: CI | None

    def __str__(self) -> str:
        a = self.accuracy
        text = f"accuracy {float(a.estimate):.3f} [{float(a.low):.3f}, {float(a.high):.3f}]"
        if self.ranking is not None:
            r = self.ranking
            text += (
                f", pair ranking {float(r.estimate):.3f} [{float(r.low):.3f}, {float(r.high):.3f}]"
            )
        return f"{text} (n={a.n}, {a.level:.0%} CI)"


def accuracy_from_activations(
    vector: SteeringVector,
    pos: Float[Tensor, "n_pos d_model"],
    neg: Float[Tensor, "n_neg d_model"],
    *,
    paired: bool | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Accuracy:
    """Accuracy of ``vector`` (as a linear classifier) on held-out activations."""
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("accuracy needs at least one positive and one negative example")
    paired = len(pos) == len(neg) if paired is None else paired
    if paired and len(pos) != len(neg):
        raise ValueError(f"paired accuracy needs equal sets; got {len(pos)} and {len(neg)}")
    u = vector.unit.double()
    sp, sn = pos.double() @ u, neg.double() @ u
    right_p, right_n = (sp > vector.threshold).double(), (sn <= vector.threshold).double()
    kw = {"n_resamples": n_resamples, "seed": seed}
    if paired:
        acc = bootstrap_ci((right_p + right_n) / 2, **kw)
        return Accuracy(acc, bootstrap_ci((sp > sn).double(), **kw))
    return Accuracy(bootstrap_ci(torch.cat([right_p, right_n]), **kw), None)


def probe_accuracy(
    model: TLModel,
    vector: SteeringVector,
    positive: Prompts,
    negative: Prompts,
    *,
    position: Position | None = None,
    padding_side: PaddingSide = "right",
    max_tokens: int = 2048,
    n_resamples: int = 2000,
    seed: int = 0,
    prepend_bos: bool | None = None,
) -> Accuracy:
    """Accuracy on held-out prompts, read at the vector's hook and (by default) its position,
    tokenised as the vector's prompts were (its recorded ``prepend_bos``) unless told otherwise."""
    check_width(model, vector.vector, vector.hook_name)
    stored = position_from_json(vector.metadata.get("position", "last"))
    pos_at: Position = position if position is not None else stored
    kw = {"layers": vector.layer, "site": vector.site, "position": pos_at}
    bos = prepend_bos if prepend_bos is not None else vector.metadata.get("prepend_bos")
    both = encode(model, [*positive, *negative], padding_side=padding_side, prepend_bos=bos)
    acts = collect_activations(model, both, max_tokens=max_tokens, **kw)[0]  # type: ignore[arg-type]
    return accuracy_from_activations(
        vector, acts[: len(positive)], acts[len(positive) :], n_resamples=n_resamples, seed=seed
    )
