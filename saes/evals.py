"""SAE evaluation: reconstruction and sparsity over activation batches, and the model's loss with
the SAE spliced in.

Definitions (x: input rows ``[n, d_in]``, x̂ the reconstruction, f the latent activations
``[n, d_sae]``; every sum runs over all n evaluated rows, never per batch)::

    L0        = (1/n) Σ_i #{j : f_ij ≠ 0}
    MSE       = (1/n) Σ_i ‖x_i − x̂_i‖²              (summed over dimensions, as in the training loss)
    FVU       = Σ_i ‖x_i − x̂_i‖² / Σ_i ‖x_i − x̄‖²   x̄ = (1/n) Σ_i x_i, one mean per dimension
    EV        = 1 − FVU                              (explained variance)
    cosine    = (1/n) Σ_i cos(x_i, x̂_i)             (a zero row counts as 0)
    density_j = (1/n) #{i : f_ij ≠ 0}                dead: density 0; dense: density > threshold

Downstream, for token contexts t ``[batch, pos]`` and a set S of spliced positions (a loss at
position p predicts t[p+1] from t[≤p])::

    CE_m      = mean over (b, p ∈ S, p < pos−1) of −log P_m(t[b, p+1] | t[b, ≤p])
    KL_m      = mean over (b, p ∈ S) of KL(P_clean(· | t[b, ≤p]) ‖ P_m(· | t[b, ≤p]))
    recovered = (CE_zero − CE_SAE) / (CE_zero − CE_clean)

with m ∈ {clean, SAE (hook activation replaced by ``sae(act).recon`` at S), zero (replaced by zeros)}.
S is every position except position 0 when it holds BOS, i.e. exactly the rows an
``ActivationStore`` keeps (``drop_bos``). Positions outside S are left out of both means: under
causal attention their predictions cannot change, so they would only dilute the numbers. Zero
ablation acts on S too (``zero_ablate="spliced"``), so "recovered" compares like with like;
``zero_ablate="all"`` zeroes every position, as SAELens does.

Agreement with SAELens (``sae_lens.evals``, checked in ``tests/test_evals.py``):

- ``l0``, ``mse``, ``cossim``, ``feature_density`` and ``explained_variance`` (its
  ``ExplainedVarianceCalculator``: 1 − E‖x − x̂‖² / (E‖x‖² − ‖E x‖²) over all tokens) have the formulas
  above. SAELens's ``explained_variance_legacy`` differs: per token 1 − ‖x_i − x̂_i‖² / ‖x_i − x̄_B‖²
  with x̄_B the mean of the token's own batch, then averaged over tokens; it is not computed here.
- Which tokens count: SAELens (``exclude_special_tokens=True``) drops every token whose *id* is
  special (BOS, EOS, PAD) wherever it occurs, from the metrics and from the splice; mechscope drops
  by *position* (position 0 when it is BOS). They agree when BOS occurs only at position 0 and no
  other special token occurs in the contexts; EOS document separators are kept here.
- SAELens zero-ablates at every position (``zero_ablate="all"``), spliced or not.

A transcoder is evaluated the same way with the target in place of x: y is the MLP's output
(``blocks.L.hook_mlp_out``), ŷ the transcoder's prediction from the MLP's input
(``blocks.L.ln2.hook_normalized``), so FVU is that of the MLP output. Spliced, the model's MLP
output at S is replaced by ŷ computed from the same forward's MLP input (upstream splices change
that input); zero ablation zeroes the MLP output at S.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from interp.core.forward import rows_for
from interp.hooks import hooks, resolve_hooks
from interp.validate import check_int
from saes.sae import SAE

__all__ = [
    "CELossMetrics", "DensityHistogram", "EvalResult", "ReconstructionMetrics", "ce_loss_recovered",
    "cosine_similarity", "dead_fraction", "dense_fraction", "eval_mode", "evaluate",
    "evaluate_reconstruction", "explained_variance", "feature_density", "feature_density_histogram",
    "fraction_variance_unexplained", "l0", "mse", "sae_store_hook", "transcoder_store_hooks",
]  # fmt: skip


# ---- pure metrics (float64 inside: variances are differences of large, nearly equal sums) -------
def l0(acts: Float[Tensor, "batch d_sae"]) -> Float[Tensor, ""]:
    """Mean number of nonzero latents per row."""
    return (acts != 0).sum(-1).double().mean()


def mse(x: Float[Tensor, "batch d_in"], recon: Float[Tensor, "batch d_in"]) -> Float[Tensor, ""]:
    """(1/n) Σ_i ‖x_i − x̂_i‖²: squared error summed over dimensions, averaged over rows."""
    return (x.double() - recon.double()).pow(2).sum(-1).mean()


def fraction_variance_unexplained(
    x: Float[Tensor, "batch d_in"], recon: Float[Tensor, "batch d_in"]
) -> Float[Tensor, ""]:
    """Σ_i ‖x_i − x̂_i‖² / Σ_i ‖x_i − x̄‖², x̄ the per-dimension mean over the batch (NaN if x is constant)."""
    x64 = x.double()
    resid = (x64 - recon.double()).pow(2).sum()
    total = (x64 - x64.mean(0)).pow(2).sum()
    return resid / total if total > 0 else torch.tensor(math.nan, dtype=torch.float64)


def explained_variance(
    x: Float[Tensor, "batch d_in"], recon: Float[Tensor, "batch d_in"]
) -> Float[Tensor, ""]:
    """1 − FVU."""
    return 1 - fraction_variance_unexplained(x, recon)


def cosine_similarity(
    x: Float[Tensor, "batch d_in"], recon: Float[Tensor, "batch d_in"]
) -> Float[Tensor, ""]:
    """(1/n) Σ_i x_i·x̂_i / (‖x_i‖ ‖x̂_i‖); a zero row counts as 0."""
    return F.cosine_similarity(x.double(), recon.double(), dim=-1, eps=1e-12).mean()


def feature_density(acts: Float[Tensor, "batch d_sae"]) -> Float[Tensor, " d_sae"]:
    """Per latent, the fraction of rows on which it is nonzero."""
    return (acts != 0).double().mean(0)


def dead_fraction(density: Float[Tensor, " d_sae"]) -> float:
    """Fraction of latents that never fired on the evaluated tokens (density 0)."""
    return float((density == 0).double().mean())


def dense_fraction(density: Float[Tensor, " d_sae"], threshold: float = 0.1) -> float:
    """Fraction of latents firing on more than ``threshold`` of the evaluated tokens."""
    return float((density > threshold).double().mean())


@dataclass
class DensityHistogram:
    """Latent counts per log10(density) bin; dead latents (density 0) are counted apart."""

    counts: list[int]
    """Latents per bin; bin i covers [edges[i], edges[i+1]) (the last bin is closed)."""
    edges: list[float]
    """Bin edges in log10(density), ``len(counts) + 1`` of them."""
    n_dead: int
    """Latents with density 0 (no log10)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def feature_density_histogram(
    density: Float[Tensor, " d_sae"], *, bins: int = 40, low: float | None = None
) -> DensityHistogram:
    """Histogram of log10(density) on [low, 0]; ``low`` defaults to the floor of the smallest."""
    live = density[density > 0].double()
    n_dead = int((density == 0).sum())
    if low is None:
        low = math.floor(float(live.log10().min())) if live.numel() else -1.0
    counts, edges = np.histogram(live.log10().clamp_min(low).numpy(), bins=bins, range=(low, 0.0))
    return DensityHistogram([int(c) for c in counts], [float(e) for e in edges], n_dead)


# ---- reconstruction over a stream of batches ----------------------------------------------------
@dataclass
class ReconstructionMetrics:
    """Reconstruction and sparsity over ``n_tokens`` rows (definitions in the module docstring)."""

    n_tokens: int
    l0: float
    mse: float
    fvu: float
    explained_variance: float
    cosine_similarity: float
    density: Tensor
    """``[d_sae]`` fraction of rows on which each latent fired."""
    dead_fraction: float
    dense_fraction: float
    dense_threshold: float

    def to_dict(self) -> dict[str, Any]:
        out = {k: _json_float(v) for k, v in dataclasses.asdict(self).items() if k != "density"}
        out["density"] = self.density.tolist()
        out["density_histogram"] = feature_density_histogram(self.density).to_dict()
        return out


class _ReconSums:
    """Running sums, kept on the SAE's device (no sync per batch). The variance is taken about a
    shift c (the first batch's mean): Σ‖x − x̄‖² = Σ‖x − c‖² − n‖x̄ − c‖² then does not cancel."""

    def __init__(self) -> None:
        self.n = 0
        self.shift: Tensor | None = None
        self.sums: dict[str, Tensor] = {}

    def add(self, x: Tensor, recon: Tensor, acts: Tensor) -> None:
        x64, r64 = x.to(recon.device, torch.float64), recon.double()
        if self.shift is None:
            self.shift = x64.mean(0)
        dev = x64 - self.shift
        for key, value in (
            ("dev", dev.sum(0)),
            ("sq_dev", dev.pow(2).sum()),
            ("sq_err", (x64 - r64).pow(2).sum()),
            ("cos", F.cosine_similarity(x64, r64, dim=-1, eps=1e-12).sum()),
            ("active", (acts != 0).sum(0)),  # Σ_j active_j is also Σ_i L0_i
        ):
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.n += len(x)

    def result(self, dense_threshold: float) -> ReconstructionMetrics:
        n, s = self.n, {k: v.cpu() for k, v in self.sums.items()}
        total = float(s["sq_dev"]) - float(s["dev"].pow(2).sum()) / n
        fvu = float(s["sq_err"]) / total if total > 0 else math.nan
        density = s["active"].double() / n
        return ReconstructionMetrics(
            n, float(s["active"].sum()) / n, float(s["sq_err"]) / n, fvu, 1 - fvu,
            float(s["cos"]) / n, density, dead_fraction(density),
            dense_fraction(density, dense_threshold), dense_threshold,
        )  # fmt: skip


@torch.no_grad()
def evaluate_reconstruction(
    sae: SAE,
    batches: Iterable[Tensor] | Iterable[Any],
    n_batches: int | None = None,
    *,
    dense_threshold: float = 0.1,
) -> ReconstructionMetrics:
    """Stream ``n_batches`` batches (all when None) of ``[batch, d_in]`` activations, or
    ``StoreBatch``es, or pairs ``(x, y)`` with y the target (a transcoder's output site), through
    the SAE in eval mode, keeping only running sums."""
    sums = _ReconSums()
    device = next(sae.parameters()).device
    with eval_mode(sae):
        for i, batch in enumerate(batches):
            if n_batches is not None and i >= n_batches:
                break
            x, y = batch if isinstance(batch, tuple) and len(batch) == 2 else (batch, None)
            x = x.acts if hasattr(x, "acts") else x
            y = x if y is None else (y.acts if hasattr(y, "acts") else y)
            out = sae(x.to(device), y.to(device))
            sums.add(y, out.recon, out.acts)
    if sums.n == 0:
        raise ValueError("no activation rows to evaluate: the batches were empty")
    return sums.result(dense_threshold)


# ---- the SAE spliced into the model ---------------------------------------------------------------
@dataclass
class CELossMetrics:
    """Next-token loss with the SAE spliced in (definitions in the module docstring)."""

    n_contexts: int
    n_loss_positions: int
    """Predictions averaged into the CE numbers."""
    n_kl_positions: int
    """Positions averaged into the KL numbers."""
    ce_clean: float
    ce_sae: float
    ce_zero: float
    loss_recovered: float
    kl_sae: float
    kl_zero: float
    skip_bos: str
    """How position 0 was treated: ``"auto"``, ``"always"`` or ``"never"`` left out."""
    zero_ablate: str

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_float(v) for k, v in dataclasses.asdict(self).items()}


def _splice_mask(
    model: Any, tokens: Int[Tensor, "batch pos"], skip_bos: bool | None
) -> Bool[Tensor, "batch pos"]:
    mask = torch.ones(tokens.shape, dtype=torch.bool, device=tokens.device)
    if skip_bos is True:
        mask[:, 0] = False
    elif skip_bos is None:
        bos = getattr(getattr(model, "tokenizer", None), "bos_token_id", None)
        if bos is not None:
            mask[:, 0] = tokens[:, 0] != bos
    return mask


def _splice_hooks(
    sae: Any, hook: str, hook_in: str | None, mask: Tensor, mode: Literal["sae", "zero"]
) -> list[tuple[str, Any]]:
    """The forward hooks that splice ``sae`` at ``hook``: it reads the activation there, or (a
    transcoder, ``hook_in`` set) the activation at ``hook_in`` earlier in the same forward."""
    seen: dict[str, Tensor] = {}

    def read(act: Tensor, hook: Any) -> None:
        seen["x"] = act.flatten(2)

    def fn(act: Tensor, hook: Any) -> Tensor:
        if act.shape[:2] != mask.shape:
            raise ValueError(
                f"{hook.name} has shape {tuple(act.shape)}: splicing needs [batch, pos, ...]"
            )
        flat = act.flatten(2)  # [batch, pos, d_in]: head-split hooks are read as one vector
        if mode == "zero":
            new = torch.zeros_like(flat)
        else:
            x = flat if hook_in is None else seen.pop("x")
            new = sae(x.reshape(-1, x.shape[-1])).recon.reshape(flat.shape).to(act.dtype)
        return torch.where(mask[..., None], new, flat).view(act.shape)

    reads = [] if hook_in is None or mode == "zero" else [(hook_in, read)]
    return [*reads, (hook, fn)]


def _token_losses(
    logp: Float[Tensor, "batch pos vocab"],
    clean: Float[Tensor, "batch pos vocab"],
    tokens: Int[Tensor, "batch pos"],
) -> tuple[Tensor, Tensor]:
    ce = -logp[:, :-1].gather(-1, tokens[:, 1:, None]).squeeze(-1)  # [batch, pos-1]
    kl = F.kl_div(logp, clean, log_target=True, reduction="none").sum(-1)  # [batch, pos]
    return ce, kl


@torch.no_grad()
def ce_loss_recovered(
    model: Any,
    sae: Any,
    hook: str,
    tokens: Int[Tensor, "batch pos"],
    *,
    max_tokens: int = 1024,
    skip_bos: bool | None = None,
    zero_ablate: Literal["spliced", "all"] = "spliced",
    hook_in: str | None = None,
) -> CELossMetrics:
    """CE loss and KL with ``sae(act).recon`` spliced in at ``hook``, against clean and zero ablation.

    ``skip_bos``: None leaves position 0 unspliced in the contexts where it holds the tokenizer's
    BOS (no tokenizer: nothing is skipped); True always, False never. Unspliced positions are left
    out of every mean. ``sae`` is any module whose call returns an object with ``.recon``.
    ``max_tokens``: contexts × positions per forward (at least one context). A transcoder replaces
    ``hook`` (its MLP's output) with its prediction from ``hook_in`` (its MLP's input; default the
    transcoder's ``metadata["hook"]``); both are checked before any forward.
    """
    check_int(max_tokens, "max_tokens", minimum=1)
    names = resolve_hooks(model, hook)
    if len(names) != 1:
        raise ValueError(f"splice into exactly one hook; {hook!r} matches {names}")
    if getattr(getattr(sae, "cfg", None), "is_transcoder", False) or hook_in is not None:
        hook_in = _transcoder_input(model, sae, names[0], hook_in)
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must be [batch, pos] with pos >= 2, got {tuple(tokens.shape)}")
    sums = dict.fromkeys(("ce_clean", "ce_sae", "ce_zero", "kl_sae", "kl_zero"), 0.0)
    n_loss = n_kl = 0
    device = model.cfg.device
    with eval_mode(sae):
        for chunk in tokens.to(device).split(rows_for(max_tokens, tokens.shape[1])):
            mask = _splice_mask(model, chunk, skip_bos)
            clean = model(chunk).float().log_softmax(-1)
            ce, _ = _token_losses(clean, clean, chunk)
            sums["ce_clean"] += float(ce[mask[:, :-1]].double().sum())
            zero_mask = mask if zero_ablate == "spliced" else torch.ones_like(mask)
            for mode, m in (("sae", mask), ("zero", zero_mask)):
                with hooks(model, fwd=_splice_hooks(sae, names[0], hook_in, m, mode)):  # type: ignore[arg-type]
                    logp = model(chunk).float().log_softmax(-1)
                ce, kl = _token_losses(logp, clean, chunk)
                sums[f"ce_{mode}"] += float(ce[mask[:, :-1]].double().sum())
                sums[f"kl_{mode}"] += float(kl[mask].double().sum())
            n_loss += int(mask[:, :-1].sum())
            n_kl += int(mask.sum())
    if n_loss == 0:
        raise ValueError("no position was spliced: nothing to evaluate")
    ce_c, ce_s, ce_z = (sums[k] / n_loss for k in ("ce_clean", "ce_sae", "ce_zero"))
    gap = ce_z - ce_c
    return CELossMetrics(
        len(tokens), n_loss, n_kl, ce_c, ce_s, ce_z, (ce_z - ce_s) / gap if gap else math.nan,
        sums["kl_sae"] / n_kl, sums["kl_zero"] / n_kl,
        {None: "auto", True: "always", False: "never"}[skip_bos], zero_ablate,
    )  # fmt: skip


def _transcoder_input(model: Any, sae: Any, hook_out: str, hook_in: str | None) -> str:
    """The checked input hook of a transcoder spliced at ``hook_out``: one MLP's pair, and the
    transcoder's widths those of the model's layer."""
    from saes.transcoder import check_fits, mlp_layer

    if hook_in is None:
        hook_in = getattr(sae, "cfg", None) and sae.cfg.metadata.get("hook")
        if not hook_in:
            raise ValueError(
                "splicing a transcoder needs its input hook: pass hook_in= (e.g. "
                f"{hook_out.replace('hook_mlp_out', 'ln2.hook_normalized')!r})"
            )
    layer = mlp_layer(hook_in, hook_out)
    resolve_hooks(model, hook_in)  # a model without that hook fails here, not mid-forward
    check_fits(model, sae, layer)
    return str(hook_in)


# ---- everything, from a store ---------------------------------------------------------------------
@dataclass
class EvalResult:
    """All evaluation numbers of one SAE on one store."""

    hook: str
    reconstruction: ReconstructionMetrics
    ce: CELossMetrics | None
    """None when no model was given."""
    hook_out: str | None = None
    """A transcoder's output hook (what it predicts; ``hook`` is what it reads)."""

    def to_dict(self) -> dict[str, Any]:
        out = {
            "hook": self.hook,
            "reconstruction": self.reconstruction.to_dict(),
            "ce": None if self.ce is None else self.ce.to_dict(),
        }
        return out if self.hook_out is None else {"hook_out": self.hook_out, **out}


def sae_store_hook(sae: SAE, store: Any, hook: str | None = None) -> str:
    """The store hook the SAE reads (``hook``, else the SAE's ``metadata["hook"]`` when the store
    holds it, else the store's only hook), checked for rows and for width ``d_in``."""
    held = store.hooks
    if hook is None:
        meta = sae.cfg.metadata.get("hook")
        hook = meta if meta in held else held[0] if len(held) == 1 else None
        if hook is None:
            raise ValueError(f"the store holds several hooks {held}: name one with hook=")
    elif hook not in held:
        raise KeyError(f"hook {hook!r} is not in this store; it holds {held}")
    if len(store) == 0:
        raise ValueError(f"the store at {store.path} holds no activation rows: nothing to evaluate")
    if (width := store.d(hook)) != sae.cfg.d_in:
        raise ValueError(
            f"width mismatch: the store's {hook} rows have width {width} but the SAE reads "
            f"d_in={sae.cfg.d_in}"
        )
    return str(hook)


def transcoder_store_hooks(
    tc: SAE, store: Any, hooks: tuple[str, str] | None = None
) -> tuple[str, str]:
    """The (input, output) hooks a transcoder is evaluated on (``hooks``, else its metadata's
    ``hook`` and ``hook_out``): one MLP's pair, both in the store, of widths d_in and d_out."""
    from saes.transcoder import mlp_layer

    if hooks is None:
        meta = tc.cfg.metadata
        if not (meta.get("hook") and meta.get("hook_out")):
            raise ValueError(
                "this transcoder's metadata names no hooks: pass hook=(input hook, output hook)"
            )
        hooks = (meta["hook"], meta["hook_out"])
    mlp_layer(*hooks)
    held = store.hooks
    for name, width, what in ((hooks[0], tc.cfg.d_in, "d_in"), (hooks[1], tc.d_out, "d_out")):
        if name not in held:
            raise KeyError(
                f"the store holds {held}, not {name!r}: a transcoder's store needs both "
                f"{hooks[0]} and {hooks[1]} (write it with both hooks)"
            )
        if store.d(name) != width:
            raise ValueError(
                f"width mismatch: the store's {name} rows have width {store.d(name)} but the "
                f"transcoder has {what}={width}"
            )
    if len(store) == 0:
        raise ValueError(f"the store at {store.path} holds no activation rows: nothing to evaluate")
    return str(hooks[0]), str(hooks[1])


def evaluate(
    sae: SAE,
    store: Any,
    model: Any | None = None,
    *,
    n_batches: int | None = None,
    batch_size: int = 4096,
    n_ce_contexts: int = 64,
    ce_max_tokens: int = 1024,
    hook: str | tuple[str, str] | None = None,
    seed: int = 0,
    dense_threshold: float = 0.1,
) -> EvalResult:
    """Reconstruction metrics over ``n_batches`` store batches (None: one pass), and, given the model
    the store came from, CE/KL over ``n_ce_contexts`` of the store's own contexts (a seeded sample),
    spliced where the store keeps rows (position 0 left out when the store dropped BOS).
    ``batch_size``: activation rows per SAE batch; ``ce_max_tokens``: tokens per model forward.
    A transcoder reads paired rows of its input and output hooks (``hook``: the pair, default
    its metadata's) and is spliced in place of its MLP."""
    check_int(ce_max_tokens, "ce_max_tokens", minimum=1)
    hook_out = None
    if sae.cfg.is_transcoder:
        if isinstance(hook, str):
            raise ValueError(
                f"a transcoder reads two hooks: pass hook=(input, output), not {hook!r}"
            )
        name, hook_out = transcoder_store_hooks(sae, store, hook)
    else:
        if isinstance(hook, tuple):
            raise ValueError(f"an SAE reads one hook; hook={hook!r} is a pair")
        name = sae_store_hook(sae, store, hook)
    batches: Iterable[Any] = store.batches(batch_size, hook=name, seed=seed, dtype=torch.float32)
    if hook_out is not None:  # one seed, one schedule: row i of both batches is the same token
        ys = store.batches(batch_size, hook=hook_out, seed=seed, dtype=torch.float32)
        batches = zip(batches, ys, strict=True)
    recon = evaluate_reconstruction(sae, batches, n_batches, dense_threshold=dense_threshold)
    ce = None
    if model is not None:
        seq_ids = [i for s in store.shards for i in range(*s["sequences"])]
        rng = np.random.default_rng(seed)
        chosen = sorted(rng.choice(seq_ids, size=min(n_ce_contexts, len(seq_ids)), replace=False))
        tokens = torch.stack([store.context(int(i)) for i in chosen])
        skip_bos = bool(store.manifest.get("drop_bos", False))
        splice_at, reads = (name, None) if hook_out is None else (hook_out, name)
        ce = ce_loss_recovered(
            model, sae, splice_at, tokens, max_tokens=ce_max_tokens, skip_bos=skip_bos,
            hook_in=reads,
        )  # fmt: skip
    return EvalResult(name, recon, ce, hook_out)


# ---- helpers --------------------------------------------------------------------------------------
@contextlib.contextmanager
def eval_mode(module: Any) -> Iterator[None]:
    """Inference behaviour (a BatchTopK threshold, no training-time statistics) for the duration."""
    if not isinstance(module, nn.Module):
        yield
        return
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


def _json_float(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v
