"""Training losses: reconstruction, the activation's sparsity penalty, and aux-k for dead latents.

mse      = mean over rows of ‖x̂ − x‖²                      (in the SAE's normalised input space)
relu     : sparsity = λ · mean over rows of Σᵢ aᵢ ‖W_dec[i]‖  (L1 weighted by decoder norms)
jumprelu : sparsity = λ · mean over rows of Σᵢ H(zᵢ − θᵢ)      (L0, straight-through in θ)
aux-k    = α · min(n_dead / k_aux, 1) · ‖e − ê‖² / ‖e − mean(e)‖²
           e = x − x̂ (detached), ê = the k_aux largest dead pre-activations decoded without bias
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from saes.activations import topk_mask_values
from saes.sae import SAE, SAEOutput

__all__ = ["LossOutput", "aux_k_loss", "sae_loss"]


class LossOutput(NamedTuple):
    total: Float[Tensor, ""]
    mse: Float[Tensor, ""]
    sparsity: Float[Tensor, ""]
    aux: Float[Tensor, ""]


def aux_k_loss(
    sae: SAE,
    x: Float[Tensor, "batch d_in"],
    out: SAEOutput,
    dead: Bool[Tensor, " d_sae"],
    k_aux: int,
) -> Float[Tensor, ""]:
    n_dead = int(dead.sum())
    if n_dead == 0 or k_aux <= 0:
        return out.pre.new_zeros(())
    k = min(k_aux, n_dead)
    x_in = x.to(out.pre.dtype) * sae.input_scale.to(out.pre.dtype)
    err = (x_in - out.recon * sae.input_scale.to(out.recon.dtype)).detach()  # [batch, d_in]
    masked = out.pre.masked_fill(~dead, float("-inf"))
    values, indices = topk_mask_values(masked, k)
    err_hat = torch.zeros_like(out.pre).scatter_(-1, indices, values) @ sae.W_dec
    variance = (err - err.mean(0)).pow(2).sum().clamp_min(1e-8)
    return min(n_dead / k, 1.0) * (err_hat - err).pow(2).sum() / variance


def sae_loss(
    sae: SAE,
    x: Float[Tensor, "batch d_in"],
    *,
    sparsity_coefficient: float = 0.0,
    dead: Bool[Tensor, " d_sae"] | None = None,
    k_aux: int = 0,
    aux_coefficient: float = 0.0,
) -> tuple[LossOutput, SAEOutput]:
    """The training loss of one batch, with each term reported separately."""
    out = sae(x)
    scale = sae.input_scale.to(out.recon.dtype)
    # Reconstruction is measured in the normalised space the SAE computes in.
    mse = ((out.recon - x.to(out.recon.dtype)) * scale).pow(2).sum(-1).mean()
    zero = mse.new_zeros(())
    if sae.cfg.activation == "relu" and sparsity_coefficient:
        sparsity = sparsity_coefficient * (out.acts * sae.W_dec.norm(dim=-1)).sum(-1).mean()
    elif sae.cfg.activation == "jumprelu" and sparsity_coefficient:
        sparsity = sparsity_coefficient * sae.act.l0(out.pre)  # type: ignore[operator]
    else:
        sparsity = zero
    aux = zero
    if dead is not None and aux_coefficient and sae.cfg.activation in ("topk", "batchtopk"):
        aux = aux_coefficient * aux_k_loss(sae, x, out, dead, k_aux)
    return LossOutput(mse + sparsity + aux, mse, sparsity, aux), out
