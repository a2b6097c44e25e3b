"""The data behind feature dashboards: ``saes.features`` statistics plus what a page needs.

:func:`collect` runs :func:`saes.features.feature_stats` (top contexts, quantile samples,
histogram), then adds, per example, the latent's activation at *every* token of the window (the
store's rows of those contexts re-encoded by the SAE; BOS, which the store does not keep, is
``null``), the logit effects (given a model), and the nearest latents by decoder cosine.

The result is compact JSON: token ids in the examples, one shared vocabulary of the strings, and
numbers rounded to 4 significant digits. One feature's record::

    {"id": 12, "density": 0.0123, "n_active": 81, "n_rows": 6561, "max": 4.51, "mean": 1.22,
     "hist": {"w": 0.141, "counts": [...]},        # bin j: activations in (j·w, (j+1)·w]
     "top": [example, ...],                        # largest first
     "bands": [{"lo": 0.1, "hi": 0.9, "ex": [example, ...]}, ...],   # lowest band first
     "logits": {"pos": [[token_id, value], ...], "neg": [...]} | null,
     "nn": [[latent, cosine], ...]}
    example = [seq_id, position, focus, [token ids], [activation or null per token]]
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["FeatureData", "collect", "nearest_latents"]


@dataclass
class FeatureData:
    """Everything the feature views draw, keyed by latent id."""

    hook: str
    d_sae: int
    n_rows: int
    features: dict[int, dict[str, Any]]
    vocab: dict[int, str] = field(default_factory=dict)
    """Token id -> its string, for every token the records mention."""

    def record(self, latent: int) -> dict[str, Any]:
        if latent in self.features:
            return self.features[latent]
        if not 0 <= latent < self.d_sae:
            raise IndexError(
                f"latent {latent} is out of range: this SAE has d_sae={self.d_sae} latents, "
                f"ids 0..{self.d_sae - 1}"
            )
        ids = sorted(self.features)
        shown = ", ".join(map(str, ids[:10])) + (" ..." if len(ids) > 10 else "")
        raise KeyError(f"latent {latent} was not collected; these were: {shown}")

    def vocab_for(self, latents: Iterable[int]) -> dict[str, str]:
        used: set[int] = set()
        for i in latents:
            used |= _token_ids(self.features[i])
        return {str(t): self.vocab.get(t, f"#{t}") for t in sorted(used)}


def _token_ids(rec: dict[str, Any]) -> set[int]:
    out: set[int] = set()
    for ex in rec["top"] + [e for b in rec["bands"] for e in b["ex"]]:
        out.update(ex[3])
    if rec["logits"]:
        out.update(t for t, _ in rec["logits"]["pos"] + rec["logits"]["neg"])
    return out


def _r(x: float) -> float | None:
    """4 significant digits; None for NaN (JSON has no NaN)."""
    if not math.isfinite(x):
        return None
    return float(f"{x:.4g}")


def check_inputs(sae: Any, store: Any, latents: Sequence[int] | None) -> list[int]:
    """Latent ids to collect, after checking the store is not empty and every id is in range."""
    if len(store) == 0:
        raise ValueError(
            f"the activation store at {store.path} holds no rows: write activations into it first "
            "(ActivationStore.write), or finish a write that was interrupted"
        )
    d_sae = sae.cfg.d_sae
    ids = list(range(d_sae)) if latents is None else [int(i) for i in latents]
    bad = [i for i in ids if not 0 <= i < d_sae]
    if bad:
        raise IndexError(
            f"latent id(s) {bad[:5]} out of range: this SAE has d_sae={d_sae} latents, "
            f"valid ids are 0..{d_sae - 1}"
        )
    if not ids:
        raise ValueError("no latents requested: pass latent ids, or latents=None for all")
    return list(dict.fromkeys(ids))


@torch.no_grad()
def nearest_latents(sae: Any, latents: Sequence[int], k: int = 8) -> dict[int, list[list[float]]]:
    """For each latent, the ``k`` other latents whose decoder rows have the largest cosine."""
    w = sae.W_dec.detach().float()
    w = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    k = min(k, w.shape[0] - 1)
    out: dict[int, list[list[float]]] = {}
    if k <= 0:
        return {i: [] for i in latents}
    for start in range(0, len(latents), 1024):
        chunk = list(latents[start : start + 1024])
        cos = w[chunk] @ w.T  # [chunk, d_sae]
        cos[torch.arange(len(chunk)), torch.tensor(chunk)] = -math.inf
        vals, idx = cos.topk(k, dim=-1)
        for j, latent in enumerate(chunk):
            out[latent] = [[int(i), _r(float(v))] for i, v in zip(idx[j], vals[j], strict=True)]  # type: ignore[list-item]
    return out


class _RowIndex:
    """Global store row of (seq_id, position), from the shard layout the writer uses."""

    def __init__(self, store: Any):
        self.store = store
        self.ctx = int(store.manifest["context_size"])
        self.spans, offset = [], 0
        for shard in store.shards:
            start, end = shard["sequences"]
            per = shard["rows"] // max(end - start, 1)
            self.spans.append((start, end, offset, per))
            offset += shard["rows"]

    def rows_of(self, seq: int) -> tuple[np.ndarray, int]:
        """The rows of context ``seq`` in position order, and the first position stored."""
        for start, end, offset, per in self.spans:
            if start <= seq < end:
                first = offset + (seq - start) * per
                return np.arange(first, first + per), self.ctx - per
        raise IndexError(f"context {seq} is not in this store")


@torch.no_grad()
def window_activations(
    sae: Any, store: Any, hook: str, wanted: dict[int, list[tuple[int, list[Any]]]], batch_size: int
) -> None:
    """Fill each example's per-token activations in place.

    ``wanted`` maps seq_id -> [(latent, example)], example = [seq, pos, focus, ids, acts]."""
    index, device = _RowIndex(store), next(sae.parameters()).device
    seqs = sorted(wanted)
    per_chunk = max(1, batch_size // index.ctx)
    for c in range(0, len(seqs), per_chunk):
        chunk = seqs[c : c + per_chunk]
        spans = [index.rows_of(s) for s in chunk]
        rows = np.concatenate([r for r, _ in spans])
        batch = store.rows(rows, hook=hook)
        want_seq = np.repeat(chunk, [len(r) for r, _ in spans])
        want_pos = np.concatenate([np.arange(first, first + len(r)) for r, first in spans])
        if not (np.array_equal(batch.seq_ids.numpy(), want_seq)
                and np.array_equal(batch.positions.numpy(), want_pos)):  # fmt: skip
            raise RuntimeError(
                f"the store at {store.path} does not have the row layout mechscope writes "
                "(contexts in order, positions in order within each)"
            )
        acts = sae.encode(batch.acts.to(device).float()).float().cpu()  # [rows, d_sae]
        base = 0
        for seq, (r, first) in zip(chunk, spans, strict=True):
            for latent, ex in wanted[seq]:
                start = ex[1] - ex[2]  # position of the window's first token
                vals = []
                for p in range(start, start + len(ex[3])):
                    vals.append(None if p < first else _r(float(acts[base + p - first, latent])))
                ex[4] = vals
            base += len(r)


def _example(e: Any) -> list[Any]:
    return [e.seq_id, e.position, e.focus, list(e.context_ids), None]


def collect(
    sae: Any,
    store: Any,
    *,
    latents: Sequence[int] | Tensor | None = None,
    model: Any | None = None,
    tokenizer: Any | None = None,
    n_batches: int | None = None,
    batch_size: int = 4096,
    top_k: int = 10,
    n_quantiles: int = 5,
    examples_per_band: int = 3,
    context_window: tuple[int, int] = (10, 4),
    n_logits: int = 10,
    n_neighbours: int = 8,
    hook: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> FeatureData:
    """Dashboard data for ``latents`` (default all) of ``sae`` over ``store``.

    ``model`` (optional) gives the logit effects and, unless ``tokenizer`` is given, the token
    strings; without either, tokens are shown as ``#id``. The other arguments are those of
    :func:`saes.features.feature_stats`.
    """
    from saes.features import feature_stats, logit_effects

    ids = check_inputs(
        sae, store, None if latents is None else torch.as_tensor(latents).flatten().tolist()
    )
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    report = feature_stats(
        sae, store, latents=ids, n_batches=n_batches, batch_size=batch_size, top_k=top_k,
        n_quantiles=n_quantiles, examples_per_band=examples_per_band,
        context_window=context_window, hook=hook, seed=seed, progress=progress,
    )  # fmt: skip
    effects = (
        {e.latent: e for e in logit_effects(sae, model, ids, n_logits, tokenizer=tok).effects}
        if model is not None
        else {}
    )
    neighbours = nearest_latents(sae, ids, n_neighbours)
    wanted: dict[int, list[tuple[int, list[Any]]]] = defaultdict(list)
    features: dict[int, dict[str, Any]] = {}
    for f in report.features:
        top = [_example(e) for e in f.top]
        band_ex = [[_example(e) for e in b.examples] for b in f.bands]
        bands = [
            {"lo": _r(b.low), "hi": _r(b.high), "ex": ex}
            for b, ex in zip(f.bands, band_ex, strict=True)
        ]
        for ex in top + [e for exs in band_ex for e in exs]:
            wanted[ex[0]].append((f.latent, ex))
        eff = effects.get(f.latent)
        features[f.latent] = {
            "id": f.latent, "density": _r(f.density), "n_active": f.n_active,
            "n_rows": report.n_rows, "max": _r(f.max_activation), "mean": _r(f.mean_activation),
            "hist": {"w": _r(f.hist_edges[1] - f.hist_edges[0]), "counts": f.hist_counts},
            "top": top, "bands": bands,
            "logits": None if eff is None else {
                "pos": [[i, _r(v)] for i, v in zip(eff.top_ids, eff.top_values, strict=True)],
                "neg": [[i, _r(v)] for i, v in zip(eff.bottom_ids, eff.bottom_values, strict=True)],
            },
            "nn": neighbours.get(f.latent, []),
        }  # fmt: skip
    window_activations(sae, store, report.hook, wanted, batch_size)
    data = FeatureData(report.hook, sae.cfg.d_sae, report.n_rows, features)
    if tok is not None:
        used = set().union(*(_token_ids(r) for r in features.values()))
        data.vocab = {t: str(tok.decode([t])) for t in sorted(used)}
    return data
