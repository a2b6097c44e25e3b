"""Data for feature dashboards: what makes each SAE latent fire, and what it writes to the logits.

:func:`feature_stats` makes one streaming pass over a store's batches and keeps, per latent, only:

- the ``top_k`` largest activations with their row (value, seq_id, position, token id), by a running
  top-k merge: each batch's top k is merged with the k kept so far;
- its density (fraction of rows where it is nonzero), its largest and mean active value;
- an exact histogram of its positive activations on bins (j·w, (j+1)·w], j < ``hist_bins``: the
  width w starts at (first maximum) / ``hist_bins`` and doubles, merging bin j into j >> d, whenever
  a larger value arrives, so the counts stay exact without a second pass;
- a uniform random sample of its active rows (size ``reservoir_size``): each active row gets a
  seeded uniform random key and the rows with the largest keys are kept (the same running top-k, on
  random keys). Quantile bands are the empirical quantiles of this sample (exact while the latent
  fired on at most ``reservoir_size`` rows), and a band's examples are the sample's members in that
  band, which are a uniform random sample of all the latent's rows in the band.

Token windows around every example are then read from ``store.context(seq_id)``.

:func:`logit_effects` maps each latent's decoder direction through the unembedding; see there for
how the final norm is treated.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from saes.evals import eval_mode, sae_store_hook
from saes.sae import SAE

__all__ = [
    "FeatureExample", "FeatureReport", "FeatureStats", "LogitEffect", "LogitEffects",
    "QuantileBand", "feature_stats", "logit_effects",
]  # fmt: skip

_NEG_INF = float("-inf")


@dataclass
class FeatureExample:
    """One row on which a latent fired, with the tokens around it."""

    value: float
    seq_id: int
    position: int
    """Position of the row in its context."""
    token_id: int
    context_ids: list[int]
    """The context's tokens from ``position − left`` to ``position + right`` (clipped to the context)."""
    focus: int
    """Index of the row's own token in ``context_ids``."""
    context_tokens: list[str] | None = None
    """``context_ids`` decoded one token at a time, when a tokenizer was given."""


@dataclass
class QuantileBand:
    """Activations in [low, high] (the first band) or (low, high], with sampled examples."""

    low: float
    high: float
    examples: list[FeatureExample]


@dataclass
class FeatureStats:
    latent: int
    density: float
    """Fraction of rows on which the latent is nonzero."""
    n_active: int
    max_activation: float
    mean_activation: float
    """Mean over the rows where it is nonzero (0 for a dead latent)."""
    top: list[FeatureExample]
    """Largest activations, largest first."""
    bands: list[QuantileBand]
    """Quantile bands of the active values, lowest first (empty for a dead latent)."""
    hist_counts: list[int]
    hist_edges: list[float]
    """``len(hist_counts) + 1`` edges; bin j holds activations in (edges[j], edges[j+1]]."""


@dataclass
class FeatureReport:
    hook: str
    n_rows: int
    """Store rows read."""
    features: list[FeatureStats]

    def feature(self, latent: int) -> FeatureStats:
        for f in self.features:
            if f.latent == latent:
                return f
        raise KeyError(f"latent {latent} is not in this report")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- streaming state ------------------------------------------------------------------------------
class _RunningTopK:
    """Per latent, the k entries with the largest keys seen so far, and the rows they came from."""

    def __init__(self, n_latents: int, k: int, device: torch.device):
        self.k = k
        self.keys = torch.empty(n_latents, 0, device=device)
        self.values = torch.empty(n_latents, 0, device=device)
        self.rows = torch.empty(n_latents, 0, 3, dtype=torch.long, device=device)  # seq, pos, token

    def update(self, keys: Tensor, values: Tensor, rows: Tensor) -> None:
        """keys, values ``[batch, latents]``; rows ``[batch, 3]``."""
        top, idx = keys.T.topk(min(self.k, keys.shape[0]), dim=1)  # the batch's own top k first
        merged = torch.cat([self.keys, top], 1)
        self.keys, order = merged.topk(min(self.k, merged.shape[1]), dim=1)
        self.values = torch.cat([self.values, values.T.gather(1, idx)], 1).gather(1, order)
        rows = torch.cat([self.rows, rows[idx]], 1)
        self.rows = rows.gather(1, order[..., None].expand(-1, -1, 3))

    def entries(self, i: int) -> tuple[Tensor, Tensor]:
        """Latent ``i``'s kept values and rows, by decreasing key, inactive entries left out."""
        keep = self.keys[i] > _NEG_INF
        return self.values[i][keep].cpu(), self.rows[i][keep].cpu()  # assembly runs on the CPU


class _GrowingHistogram:
    """Exact per-latent counts of positive values in bins (j·w, (j+1)·w] (see the module docstring)."""

    def __init__(self, n_latents: int, n_bins: int, device: torch.device):
        self.n_bins = n_bins
        self.width = torch.zeros(n_latents, dtype=torch.float64, device=device)
        self.counts = torch.zeros(n_latents, n_bins, dtype=torch.long, device=device)

    def update(self, acts: Tensor) -> None:
        acts, n = acts.double(), self.n_bins
        top = acts.max(0).values
        fresh = (self.width == 0) & (top > 0)
        self.width[fresh] = top[fresh] / n
        grow = (self.width > 0) & (top > self.width * n)
        if grow.any():
            d = torch.zeros_like(self.counts[:, 0])
            d[grow] = torch.log2(top[grow] / (self.width[grow] * n)).ceil().long().clamp(1, 62)
            merged = (
                torch.arange(n, device=d.device) >> d[:, None]
            )  # [latents, bins]: old bin -> new bin
            self.counts = torch.zeros_like(self.counts).scatter_add_(1, merged, self.counts)
            self.width = self.width * 2.0**d
        rows, cols = (acts > 0).nonzero(as_tuple=True)
        bins = (acts[rows, cols] / self.width[cols]).ceil().long().sub(1).clamp(0, n - 1)
        self.counts += torch.bincount(cols * n + bins, minlength=self.counts.numel()).view_as(
            self.counts
        )


@dataclass
class _Scan:
    top: _RunningTopK
    sample: _RunningTopK
    hist: _GrowingHistogram
    active: Tensor
    total: Tensor
    n_rows: int = 0


def _latent_ids(latents: Sequence[int] | Tensor | None, d_sae: int) -> list[int]:
    if latents is None:
        return list(range(d_sae))
    ids = [int(i) for i in torch.as_tensor(latents).flatten().tolist()]
    bad = [i for i in ids if not 0 <= i < d_sae]
    if bad:
        raise ValueError(
            f"latent id(s) {bad[:5]} out of range: this SAE has d_sae={d_sae} latents, "
            f"valid ids are 0..{d_sae - 1}"
        )
    if not ids:
        raise ValueError("no latents requested: pass latent ids, or None for all")
    return ids


def _scan(
    sae: SAE, store: Any, hook: str, ids: list[int], opts: dict[str, Any], seed: int
) -> _Scan:
    n, device = len(ids), next(sae.parameters()).device  # the state lives beside the SAE
    scan = _Scan(
        _RunningTopK(n, opts["top_k"], device),
        _RunningTopK(n, opts["reservoir_size"], device),
        _GrowingHistogram(n, opts["hist_bins"], device),
        torch.zeros(n, dtype=torch.long, device=device),
        torch.zeros(n, dtype=torch.float64, device=device),
    )
    gen = torch.Generator(device=device).manual_seed(seed)
    idx = torch.tensor(ids, device=device)
    batches = store.batches(
        opts["batch_size"], hook=hook, seed=seed, with_meta=True, dtype=torch.float32
    )
    from tqdm.auto import tqdm

    total = math.ceil(len(store) / opts["batch_size"])
    if opts["n_batches"] is not None:
        total = min(total, opts["n_batches"])
    bar = tqdm(total=total, desc="feature stats", unit="batch", disable=not opts["progress"])
    for i, batch in enumerate(batches):
        if opts["n_batches"] is not None and i >= opts["n_batches"]:
            break
        bar.update(1)
        acts = sae.encode(batch.acts.to(device)).index_select(1, idx).float()  # [B, L]
        on = acts != 0
        rows = torch.stack([batch.seq_ids, batch.positions, batch.token_ids], 1).to(device)
        scan.top.update(acts.masked_fill(~on, _NEG_INF), acts, rows)
        keys = torch.rand(acts.shape, generator=gen, device=device).masked_fill(~on, _NEG_INF)
        scan.sample.update(keys, acts, rows)
        scan.hist.update(acts)
        scan.active += on.sum(0)
        scan.total += acts.double().sum(0)
        scan.n_rows += len(acts)
    bar.close()
    return scan


# ---- assembling the report ------------------------------------------------------------------------
class _Contexts:
    """Token windows from ``store.context``, each context read once; token strings cached."""

    def __init__(self, store: Any, window: tuple[int, int], tokenizer: Any | None):
        self.store, (self.left, self.right), self.tokenizer = store, window, tokenizer
        self._ctx: dict[int, list[int]] = {}
        self._text: dict[int, str] = {}

    def example(self, value: float, row: Tensor) -> FeatureExample:
        seq, pos, tok = (int(v) for v in row)
        if seq not in self._ctx:
            self._ctx[seq] = self.store.context(seq).tolist()
        start = max(0, pos - self.left)
        ids = self._ctx[seq][start : pos + self.right + 1]
        text = None if self.tokenizer is None else [self._decode(t) for t in ids]
        return FeatureExample(float(value), seq, pos, tok, ids, pos - start, text)

    def _decode(self, token: int) -> str:
        if token not in self._text:
            self._text[token] = str(self.tokenizer.decode([token]))  # type: ignore[union-attr]
        return self._text[token]


def _bands(
    values: Tensor, rows: Tensor, n_bands: int, per_band: int, ctx: _Contexts
) -> list[QuantileBand]:
    if not len(values):
        return []
    v = values.double()
    edges = torch.quantile(v, torch.linspace(0, 1, n_bands + 1, dtype=torch.float64)).tolist()
    bands = []
    for j in range(n_bands):
        lo, hi = edges[j], edges[j + 1]
        inside = ((v >= lo) if j == 0 else (v > lo)) & (v <= hi)
        picked = inside.nonzero().flatten()[:per_band]  # the sample is in random order already
        examples = [ctx.example(float(values[i]), rows[i]) for i in picked]
        bands.append(QuantileBand(lo, hi, examples))
    return bands


def _stats(scan: _Scan, i: int, latent: int, opts: dict[str, Any], ctx: _Contexts) -> FeatureStats:
    top_values, top_rows = scan.top.entries(i)
    sample_values, sample_rows = scan.sample.entries(i)
    n_active = int(scan.active[i])
    edges = float(scan.hist.width[i]) * torch.arange(opts["hist_bins"] + 1, dtype=torch.float64)
    return FeatureStats(
        latent=latent,
        density=n_active / scan.n_rows,
        n_active=n_active,
        max_activation=float(top_values[0]) if len(top_values) else 0.0,
        mean_activation=float(scan.total[i]) / n_active if n_active else 0.0,
        top=[ctx.example(float(v), r) for v, r in zip(top_values, top_rows, strict=True)],
        bands=_bands(sample_values, sample_rows, opts["n_quantiles"], opts["per_band"], ctx),
        hist_counts=scan.hist.counts[i].tolist(),
        hist_edges=edges.tolist(),
    )


@torch.no_grad()
def feature_stats(
    sae: SAE,
    store: Any,
    *,
    latents: Sequence[int] | Tensor | None = None,
    n_batches: int | None = None,
    batch_size: int = 4096,
    top_k: int = 20,
    n_quantiles: int = 10,
    examples_per_band: int = 5,
    reservoir_size: int = 512,
    hist_bins: int = 32,
    context_window: tuple[int, int] = (10, 5),
    hook: str | None = None,
    seed: int = 0,
    tokenizer: Any | None = None,
    progress: bool = True,
) -> FeatureReport:
    """Dashboard data for ``latents`` (default all) over ``n_batches`` store batches (None: one pass).

    ``context_window`` is (tokens left, tokens right) of each example's position. With a
    ``tokenizer`` every window is also decoded token by token. Memory is per latent
    O(top_k + reservoir_size + hist_bins), whatever the size of the store. ``progress``: tqdm
    bars over the store pass and over the latents' examples.
    """
    name = sae_store_hook(sae, store, hook)
    ids = _latent_ids(latents, sae.cfg.d_sae)
    if min(top_k, n_quantiles, examples_per_band, reservoir_size, hist_bins) < 1:
        raise ValueError(
            "top_k, n_quantiles, examples_per_band, reservoir_size, hist_bins must be >= 1"
        )
    opts = {
        "top_k": top_k, "reservoir_size": reservoir_size, "hist_bins": hist_bins,
        "batch_size": batch_size, "n_batches": n_batches, "n_quantiles": n_quantiles,
        "per_band": examples_per_band, "progress": progress,
    }  # fmt: skip
    with eval_mode(sae):
        scan = _scan(sae, store, name, ids, opts, seed)
    if scan.n_rows == 0:
        raise ValueError(
            f"no rows were read from the store at {store.path} (n_batches={n_batches})"
        )
    from tqdm.auto import tqdm

    ctx = _Contexts(store, context_window, tokenizer)
    each = tqdm(list(enumerate(ids)), desc="feature examples", unit="latent", disable=not progress)
    return FeatureReport(name, scan.n_rows, [_stats(scan, i, lat, opts, ctx) for i, lat in each])


# ---- logit effects ------------------------------------------------------------------------------
@dataclass
class LogitEffect:
    latent: int
    top_ids: list[int]
    top_values: list[float]
    bottom_ids: list[int]
    bottom_values: list[float]
    """Most negative first."""
    top_tokens: list[str] | None = None
    bottom_tokens: list[str] | None = None


@dataclass
class LogitEffects:
    through_final_norm: bool
    effects: list[LogitEffect]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _decoder_logits(
    sae: SAE, model: Any, ids: list[int], through_final_norm: bool
) -> Float[Tensor, "latents d_vocab"]:
    """Each latent's raw-space decoder direction W_dec[i] / s, optionally through the final norm's
    linear part, times W_U."""
    if sae.cfg.d_in != model.cfg.d_model:
        raise ValueError(
            f"logit effects need a residual-stream SAE: d_in={sae.cfg.d_in} but the model's "
            f"d_model={model.cfg.d_model}"
        )
    dirs = sae.W_dec[ids].float() / sae.input_scale.float()  # [latents, d_model]
    dirs = dirs.to(model.W_U.device)
    if through_final_norm:
        if getattr(model.cfg, "normalization_type", None) in ("LN", "LNPre"):
            dirs = dirs - dirs.mean(
                -1, keepdim=True
            )  # LayerNorm centres its input; RMSNorm does not
        w = getattr(getattr(model, "ln_final", None), "w", None)
        if isinstance(w, Tensor):  # absent when the norm was folded into W_U (fold_ln)
            dirs = dirs * w.float()
    return dirs @ model.W_U.float()


@torch.no_grad()
def logit_effects(
    sae: SAE,
    model: Any,
    latents: Sequence[int] | Tensor | None = None,
    k: int = 10,
    *,
    through_final_norm: bool = True,
    tokenizer: Any | None = None,
) -> LogitEffects:
    """The k tokens each latent's decoder direction most promotes and most suppresses.

    effect = d @ W_U with d = W_dec[i] / s (s the SAE's input scale, so d is in the model's units).
    ``through_final_norm`` (default) first applies the final norm's linear part: centring for
    LayerNorm, then the elementwise weight ``ln_final.w`` (mechscope loads models unfolded, so that
    weight is not yet in W_U; a model loaded with ``fold_ln`` has no weight and nothing is applied).
    The division by the norm's per-token scale is left out: it is positive, so it changes no
    ranking, and it depends on the residual stream, not on the latent. ``b_U`` is left out too.
    """
    ids = _latent_ids(latents, sae.cfg.d_sae)
    logits = _decoder_logits(sae, model, ids, through_final_norm).cpu()
    k = min(k, logits.shape[-1])
    top, bottom = logits.topk(k, dim=-1), logits.topk(k, dim=-1, largest=False)
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)

    def decode(t: list[int]) -> list[str] | None:
        return None if tok is None else [str(tok.decode([i])) for i in t]

    effects = []
    for j, latent in enumerate(ids):
        t_ids, b_ids = top.indices[j].tolist(), bottom.indices[j].tolist()
        effects.append(
            LogitEffect(
                latent,
                t_ids,
                top.values[j].tolist(),
                b_ids,
                bottom.values[j].tolist(),
                decode(t_ids),
                decode(b_ids),
            )  # fmt: skip
        )
    return LogitEffects(through_final_norm, effects)
