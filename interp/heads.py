"""Head detection on any tokens or text: previous-token, duplicate-token and induction scores.

Each score is the mean, over the query positions where the head's target exists, of the
attention the query pays to its target keys (read from ``blocks.L.attn.hook_pattern``):

- ``previous_token``: query i >= 1, target key i-1;
- ``duplicate_token``: query i whose token occurred earlier, targets every earlier occurrence j;
- ``induction``: query i whose token occurred earlier at j, targets every j+1 (the token after
  the earlier occurrence; j+1 = i when the token repeats back to back).

Positions without a target do not count, so on natural text a score is not diluted by the many
positions that have no repeat. Where no position has a target (text without repeats), the score
is NaN and :class:`NoTargetWarning` says why.

TransformerLens's ``detect_head`` (``error_measure="mul"``) uses the same target patterns but
divides the target mass by the attention summed over *every* query position, targets or not,
and averages per prompt: ``tl = sum(target mass) / sum(attention)``. For one prompt without
exclusions that is ``ours * n_counted / n_pos``. :meth:`HeadScores.transformer_lens` gives the
exact TL value (same ``exclude_bos`` / ``exclude_current_token``) from the same forward.

>>> scores = head_scores(model, "the cat sat on the mat. the cat sat on the mat.")
>>> scores.top("induction", 3)
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens.head_detector import HeadName  # TL 3 and TL 4

from interp.core.adapter import adapt
from interp.core.forward import rows_for
from interp.hooks import HookFn, TLModel, hooks, resolve_hooks
from interp.stats import CI, bootstrap_ci
from interp.table import Rows
from interp.validate import check_choice, check_int, check_tokenizer, check_tokens

__all__ = ["KINDS", "TL_NAMES", "HeadScores", "NoTargetWarning", "head_scores", "target_mask"]

KINDS = ("previous_token", "duplicate_token", "induction")
# detect_head's names for the same patterns; accepted as aliases
TL_NAMES: dict[str, HeadName] = {
    "previous_token": "previous_token_head",
    "duplicate_token": "duplicate_token_head",
    "induction": "induction_head",
}
_ALIASES: dict[str, str] = {**{k: k for k in KINDS}, **{v: k for k, v in TL_NAMES.items()}}


class NoTargetWarning(UserWarning):
    """No query position has a target for this kind (e.g. text without repeats): score is NaN."""


def target_mask(
    tokens: Int[Tensor, "batch pos"],
    kind: str,
    *,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
) -> Bool[Tensor, "batch query key"]:
    """``mask[b, i, j]``: key j is a target of query i for ``kind`` (causal: j <= i).

    The same patterns as TransformerLens's ``get_{kind}_head_detection_pattern``; ``exclude_bos``
    drops key 0 and ``exclude_current_token`` drops key i, as ``detect_head`` does.
    """
    kind = _kind(kind)
    n = tokens.shape[-1]
    q = torch.arange(n, device=tokens.device)[:, None]
    k = torch.arange(n, device=tokens.device)[None, :]
    if kind == "previous_token":
        mask = (k == q - 1).expand(tokens.shape[0], n, n)
    else:
        same = tokens[:, :, None] == tokens[:, None, :]  # [b, i, j]: token i == token j
        if kind == "duplicate_token":
            mask = same & (k < q)
        else:
            # key j is a target when token i == token j-1 (an earlier occurrence at j-1 < i)
            shifted = torch.zeros_like(same)
            shifted[:, :, 1:] = same[:, :, :-1]
            mask = shifted & (k <= q)
    if exclude_bos:
        mask = mask & (k != 0)
    if exclude_current_token:
        mask = mask & (k != q)
    return mask


@dataclasses.dataclass(frozen=True)
class HeadScores:
    """Scores of every head, ``[n_layers, n_heads]`` per kind.

    ``scores[kind]``: mean target attention over the ``n_positions[kind]`` (prompt, query) pairs
    that have a target, pooled over prompts. ``per_prompt[kind]``: the same mean within each
    prompt, ``[n_prompts, n_layers, n_heads]``, NaN for a prompt without a target (for CIs).
    """

    scores: dict[str, Float[Tensor, "n_layers n_heads"]]
    n_positions: dict[str, int]
    per_prompt: dict[str, Float[Tensor, "n_prompts n_layers n_heads"]]
    exclude_bos: bool
    exclude_current_token: bool
    # detect_head's "mul" score per prompt, [n_prompts, n_layers, n_heads]
    _tl_per_prompt: dict[str, Tensor] = dataclasses.field(repr=False)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.scores)

    def __getitem__(self, kind: str) -> Tensor:
        return self.scores[self._have(kind)]

    def best(self, kind: str) -> tuple[tuple[int, int], float]:
        """``((layer, head), score)`` of the highest-scoring head."""
        rows = self.top(kind, 1)
        if not rows:
            raise ValueError(
                f"no head has a {kind} score: no query position in these prompts has a {kind} "
                "target (see the NoTargetWarning), so there is no best head"
            )
        return (rows[0]["layer"], rows[0]["head"]), rows[0]["score"]

    def top(self, kind: str, k: int = 5) -> Rows:
        """The ``k`` highest-scoring heads as a table: layer, head, score, node name."""
        kind = self._have(kind)
        k = check_int(k, "k", minimum=1)
        scores = self.scores[kind]
        if torch.isnan(scores).all():
            return Rows()
        flat = scores.flatten().nan_to_num(nan=-float("inf"))
        order = flat.argsort(descending=True, stable=True)[:k].tolist()
        n_heads = scores.shape[1]
        rows = Rows()
        for i in order:
            layer, head = divmod(i, n_heads)
            rows.append(
                {
                    "node": f"L{layer}H{head}",
                    "layer": layer,
                    "head": head,
                    "score": float(scores[layer, head]),
                }
            )
        return rows

    def ci(self, kind: str, *, level: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> CI:
        """Bootstrap interval over prompts of the per-prompt score, prompts without a target
        left out. Its estimate is the mean of per-prompt means, which differs from ``scores``
        (pooled over positions) when prompts have different numbers of counted positions."""
        kind = self._have(kind)
        values = self.per_prompt[kind]
        keep = ~torch.isnan(values).any(dim=(1, 2))
        if not keep.any():
            raise ValueError(f"no prompt has a {kind} target, so there is nothing to resample")
        return bootstrap_ci(values[keep], level=level, n_resamples=n_resamples, seed=seed)

    def transformer_lens(self, kind: str) -> Float[Tensor, "n_layers n_heads"]:
        """What ``transformer_lens.head_detector.detect_head(model, prompts, TL_NAMES[kind],
        exclude_bos=..., exclude_current_token=..., error_measure="mul")`` returns on the same
        prompts: per prompt, target mass over all attention (masked keys removed), then the mean
        over prompts."""
        return self._tl_per_prompt[self._have(kind)].mean(0)

    def _have(self, kind: str) -> str:
        kind = _kind(kind)
        if kind not in self.scores:
            raise KeyError(f"{kind!r} was not computed; this result has {list(self.scores)}")
        return kind


def _kind(kind: object) -> str:
    return _ALIASES[check_choice(kind, [*KINDS, *TL_NAMES.values()], "head kind")]


def _prompts(model: TLModel, tokens_or_text: object) -> list[Tensor]:
    """One token row per prompt, unpadded; errors before any forward pass."""
    if isinstance(tokens_or_text, str):
        tokens_or_text = [tokens_or_text]
    if isinstance(tokens_or_text, list) and all(isinstance(t, str) for t in tokens_or_text):
        if not tokens_or_text:
            raise ValueError("head_scores got an empty list of prompts; give at least one")
        check_tokenizer(model, "head_scores on text")
        # one prompt at a time: no padding to mask, and each gets the model's BOS as detect_head's
        rows = [model.to_tokens(t, truncate=False)[0] for t in tokens_or_text]
        for i, row in enumerate(rows):
            check_tokens(model, row, f"prompt {i}")
        return rows
    if isinstance(tokens_or_text, list):
        kinds = sorted({type(t).__name__ for t in tokens_or_text})
        raise TypeError(
            "head_scores takes token ids [batch, pos], a string or a list of strings; got a "
            f"list of {', '.join(kinds)} (wrap token ids in torch.tensor)"
        )
    tokens = check_tokens(model, tokens_or_text)
    if tokens.ndim == 1:
        tokens = tokens[None]
    return list(tokens)


def _batches(rows: list[Tensor], max_tokens: int) -> list[list[int]]:
    """Indices of rows grouped by length (so no batch needs padding), each group cut into batches
    of at most ``max_tokens`` tokens (at least one row)."""
    by_len: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by_len.setdefault(row.shape[0], []).append(i)
    out = []
    for n, idx in by_len.items():
        size = rows_for(max_tokens, n)
        out += [idx[s : s + size] for s in range(0, len(idx), size)]
    return out


@torch.no_grad()
def head_scores(
    model: TLModel,
    tokens_or_text: Int[Tensor, "batch pos"] | str | list[str],
    kinds: str | Sequence[str] = KINDS,
    *,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    max_tokens: int = 2048,
) -> HeadScores:
    """Previous-token, duplicate-token and induction scores of every head on any input.

    Args:
        model: a TransformerLens model.
        tokens_or_text: token ids ``[batch, pos]`` (every position real), or a string or list of
            strings, each tokenized on its own with the model's tokenizer (BOS as the model adds it).
        kinds: any of :data:`KINDS` (or detect_head's names, ``"induction_head"``, ...).
        exclude_bos: key position 0 is never a target, and TL's score ignores attention to it.
        exclude_current_token: the query's own key is never a target (TL: attention to it ignored).
        max_tokens: tokens (prompts × positions) per forward, at least one prompt; prompts of
            different lengths run in separate forwards.

    Returns:
        :class:`HeadScores`; ``.top("induction")`` is a table, ``.best(kind)`` a ``((l, h), v)``.
    """
    kinds = tuple(dict.fromkeys(_kind(k) for k in ([kinds] if isinstance(kinds, str) else kinds)))
    if not kinds:
        raise ValueError(f"kinds is empty; give any of {list(KINDS)}")
    max_tokens = check_int(max_tokens, "max_tokens", minimum=1)
    rows = _prompts(model, tokens_or_text)
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    names = resolve_hooks(model, [f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)])

    n_prompts = len(rows)
    num = {k: torch.zeros(n_prompts, n_layers, n_heads, dtype=torch.float64) for k in kinds}
    tl_den = torch.zeros(n_prompts, n_layers, n_heads, dtype=torch.float64)
    count = {k: torch.zeros(n_prompts, dtype=torch.float64) for k in kinds}
    device = getattr(model.cfg, "device", None)
    hooked = adapt(model).backend == "hooked"
    forward_kwargs = {"stop_at_layer": n_layers} if hooked else {}
    for idx in _batches(rows, max_tokens):
        tokens = torch.stack([rows[i] for i in idx])
        tokens = tokens.to(device) if device is not None else tokens
        n = tokens.shape[-1]
        # attention TL's denominator counts: all of it, less the keys it excludes
        keep = torch.ones(n, n, dtype=torch.bool, device=tokens.device)
        if exclude_bos:
            keep[:, 0] = False
        if exclude_current_token:
            keep.fill_diagonal_(False)
        masks = {
            kind: target_mask(
                tokens, kind, exclude_bos=exclude_bos, exclude_current_token=exclude_current_token
            )  # [b, q, k], bool: the hook casts it to the pattern's dtype
            for kind in kinds
        }
        for kind, mask in masks.items():
            count[kind][idx] = mask.any(-1).sum(-1).double().cpu()

        with hooks(
            model,
            fwd=[
                (name, _reducer(layer, idx, masks, keep, num, tl_den))
                for layer, name in enumerate(names)
            ],
        ):
            model(tokens, **forward_kwargs)

    scores, n_positions, per_prompt, tl = {}, {}, {}, {}
    for kind in kinds:
        total = float(count[kind].sum())
        n_positions[kind] = int(total)
        if total == 0:
            warnings.warn(_no_target_message(kind), NoTargetWarning, stacklevel=2)
        scores[kind] = (
            num[kind].sum(0) / total if total else torch.full_like(num[kind][0], torch.nan)
        ).float()
        c = count[kind][:, None, None]
        per_prompt[kind] = torch.where(c > 0, num[kind] / c.clamp(min=1), torch.nan).float()
        tl[kind] = (num[kind] / tl_den).float()
    return HeadScores(scores, n_positions, per_prompt, exclude_bos, exclude_current_token, tl)


def _reducer(
    layer: int,
    idx: list[int],
    masks: dict[str, Tensor],
    keep: Tensor,
    num: dict[str, Tensor],
    tl_den: Tensor,
) -> HookFn:
    """A pattern hook that reduces as the pattern is made, so memory stays [batch, head] per
    layer rather than [batch, head, pos, pos]."""

    def hook(pattern: Tensor, hook: object) -> None:
        p = pattern.detach()
        if p.dtype not in (torch.float32, torch.float64):
            p = p.float()  # half-precision sums over pos^2 entries lose digits
        for kind, mask in masks.items():
            num[kind][idx, layer] = torch.einsum("bhqk,bqk->bh", p, mask.to(p.dtype)).double().cpu()
        tl_den[idx, layer] = torch.einsum("bhqk,qk->bh", p, keep.to(p.dtype)).double().cpu()

    return hook


def _no_target_message(kind: str) -> str:
    if kind == "previous_token":
        return "previous_token: every prompt is one token long, so no position has a previous token; scores are NaN"
    return (
        f"{kind}: no token in these prompts occurs twice, so no position has a {kind} target and "
        "the scores are NaN (not 0: nothing was measured). Use text that repeats, e.g. a "
        "sentence written twice or interp.toy.repeated_random_tokens"
    )
