"""Matryoshka BatchTopK (Bussmann et al. 2025; SAELens's ``matryoshka_batchtopk``).

A BatchTopK SAE whose nested latent prefixes [0, m₁) ⊂ [0, m₂) ⊂ … ⊂ [0, d_sae) must each
reconstruct the input on their own, so the early latents learn general features and later ones
refine them (less absorption). With acts the BatchTopK code of the whole dictionary and every
term in the SAE's normalised input space::

    x̂ₘ   = b_dec + acts[:, :m] W_dec[:m]                  (one reconstruction per width m)
    loss = Σₘ mean over rows of ‖x̂ₘ − x‖²  + aux-k         (each width weighted 1)

The outer width (d_sae) is the ordinary reconstruction (``LossOutput.mse``); the inner ones are
``LossOutput.extra``. This is SAELens 6's loss term for term (``training_forward_pass`` adds each
``inner_mse_loss_m`` with weight 1) with its default ``use_matryoshka_aux_loss=False``: aux-k
models the whole dictionary's residual. Inference uses BatchTopK's threshold.

    >>> import torch
    >>> from saes import SAE, SAEConfig
    >>> cfg = SAEConfig(d_in=4, d_sae=8, activation="matryoshka_batchtopk", k=1,
    ...                 matryoshka_widths=(2, 8))
    >>> sae = SAE(cfg, seed=0)
    >>> acts = sae.encode(torch.randn(5, 4))   # training mode: k·batch = 5 latents kept
    >>> int((acts != 0).sum()) <= 5, prefix_decode(sae, acts, 2).shape
    (True, torch.Size([5, 4]))
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from saes.activations import BatchTopK, register_activation

__all__ = ["MatryoshkaBatchTopK", "prefix_decode", "prefix_fvu"]


@register_activation("matryoshka_batchtopk")
class MatryoshkaBatchTopK(BatchTopK):
    """BatchTopK over all latents; every inner prefix adds its own reconstruction loss."""

    def __init__(self, cfg: Any, momentum: float = 0.01):
        super().__init__(cfg, momentum)
        self.widths: tuple[int, ...] = tuple(cfg.matryoshka_widths)

    def inner_reconstructions(
        self, sae: Any, acts: Float[Tensor, "batch d_sae"]
    ) -> Iterator[tuple[int, Float[Tensor, "batch d_in"]]]:
        """(m, b_dec + acts[:, :m] W_dec[:m]) for each inner width m, normalised space."""
        return _prefix_reconstructions(acts, sae.W_dec, sae.b_dec, self.widths[:-1])

    def prefix_losses(
        self, sae: Any, target: Float[Tensor, "batch d_in"], out: Any
    ) -> dict[int, Float[Tensor, ""]]:
        """Inner width m -> mean over rows of ‖x̂ₘ − x‖² (normalised space)."""
        t = target.to(out.acts.dtype) * sae.out_scale.to(out.acts.dtype)
        widths = self.widths[:-1]
        losses = _PrefixLosses.apply(out.acts, sae.W_dec, sae.b_dec, t, widths)
        return dict(zip(widths, losses.unbind(), strict=True))

    def extra_loss(
        self, sae: Any, target: Float[Tensor, "batch d_out"], out: Any
    ) -> Float[Tensor, ""] | None:
        """Σ over the inner widths of their reconstruction losses (each weighted 1)."""
        losses = list(self.prefix_losses(sae, target, out).values())
        return torch.stack(losses).sum() if losses else None


def _prefix_reconstructions(
    acts: Tensor, W_dec: Tensor, b_dec: Tensor, widths: tuple[int, ...]
) -> Iterator[tuple[int, Tensor]]:
    """(m, b_dec + acts[:, :m] W_dec[:m]) for each width m, each from the previous one."""
    recon, prev = b_dec, 0
    for m in widths:
        recon = acts[..., prev:m] @ W_dec[prev:m] + recon  # SAELens's order of sums
        prev = m
        yield m, recon


class _PrefixLosses(torch.autograd.Function):
    """The inner widths' losses, from :func:`_prefix_reconstructions`. Backward in one
    pass over the prefixes, outermost first: with Gⱼ = Σ_{m ≥ mⱼ} ∂L/∂x̂ₘ, the codes and decoder
    rows of block j get Gⱼ W_dec[j]ᵀ and acts[:, j]ᵀ Gⱼ, written once (autograd's slices
    each add a full-size zero-padded gradient)."""

    @staticmethod
    def forward(
        ctx: Any, acts: Tensor, W_dec: Tensor, b_dec: Tensor, t: Tensor, widths: tuple[int, ...]
    ) -> Tensor:
        errs, losses = [], []
        for _, recon in _prefix_reconstructions(acts, W_dec, b_dec, widths):
            err = recon - t
            errs.append(err)
            losses.append(err.pow(2).sum(-1).mean())
        ctx.save_for_backward(acts, W_dec, *errs)
        ctx.widths = widths
        return torch.stack(losses)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        acts, W_dec, *errs = ctx.saved_tensors
        starts = (0, *ctx.widths[:-1])
        d_acts, d_w = torch.zeros_like(acts), torch.zeros_like(W_dec)
        g = torch.zeros_like(errs[0])
        for j in reversed(range(len(errs))):
            g = g + errs[j] * (2 * grad[j] / acts.shape[0])
            a, b = starts[j], ctx.widths[j]
            d_acts[:, a:b] = g @ W_dec[a:b].T
            d_w[a:b] = acts[:, a:b].T @ g
        d_t = -g if ctx.needs_input_grad[3] else None
        return d_acts, d_w, g.sum(0), d_t, None


def prefix_decode(
    sae: Any, acts: Float[Tensor, "batch d_sae"], width: int
) -> Float[Tensor, "batch d_in"]:
    """What latents [0, width) alone reconstruct, in raw activation space (any SAE)."""
    if not 1 <= width <= sae.cfg.d_sae:
        raise ValueError(f"width must be in [1, d_sae={sae.cfg.d_sae}], got {width}")
    s = sae.input_scale.to(sae.W_dec.dtype)
    return (acts[..., :width] @ sae.W_dec[:width] + sae.b_dec) / s  # type: ignore[no-any-return]


@torch.no_grad()
def prefix_fvu(
    sae: Any, x: Float[Tensor, "batch d_in"], widths: tuple[int, ...]
) -> dict[int, float]:
    """Width -> fraction of variance unexplained by latents [0, width), codes from ``encode``."""
    acts = sae.encode(x)
    xf = x.float()
    total = (xf - xf.mean(0)).pow(2).sum().clamp_min(1e-12)
    return {
        m: float((prefix_decode(sae, acts, m).float() - xf).pow(2).sum() / total) for m in widths
    }
