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

__all__ = ["LossOutput", "StepStats", "aux_k_loss", "sae_loss", "sparse_topk_loss"]


class LossOutput(NamedTuple):
    total: Float[Tensor, ""]
    mse: Float[Tensor, ""]
    sparsity: Float[Tensor, ""]
    aux: Float[Tensor, ""]


class StepStats(NamedTuple):
    """What the trainer needs from a step besides the loss, from either path."""

    recon: Float[Tensor, "batch d_in"]  # in the input's (raw) space
    fired: Bool[Tensor, " d_sae"]  # latents active on at least one row
    l0: Float[Tensor, ""]  # mean active latents per row


def dense_stats(out: SAEOutput) -> StepStats:
    active = out.acts.detach() != 0
    return StepStats(out.recon.detach(), active.any(0), active.sum(-1).float().mean())


def sparse_topk_loss(
    sae: SAE,
    x: Float[Tensor, "batch d_in"],
    *,
    dead: Bool[Tensor, " d_sae"] | None = None,
    k_aux: int = 0,
    aux_coefficient: float = 0.0,
) -> tuple[LossOutput, StepStats]:
    """The TopK loss of :func:`sae_loss`, computed sparsely through ``kernels`` (Triton on CUDA,
    the eager reference elsewhere): only the encoder GEMM is dense; decode, the value gradient
    and the weight gradients touch the k kept latents per row."""
    from kernels.autograd import sparse_sae_loss

    if sae.cfg.activation != "topk":
        raise ValueError(f"the sparse path covers topk SAEs; this one is {sae.cfg.activation!r}")
    scale = sae.input_scale.to(sae.W_enc.dtype)
    use_aux = dead is not None and bool(aux_coefficient) and k_aux > 0
    loss, out = sparse_sae_loss(
        x.to(sae.W_enc.dtype) * scale,
        sae.W_enc,
        sae.b_enc,
        sae.W_dec,
        sae.b_dec,
        sae.cfg.k,
        dead_mask=dead if use_aux else None,
        k_aux=k_aux if use_aux else 0,
        aux_coefficient=aux_coefficient if use_aux else 0.0,
    )
    active = out.values.detach() > 0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=x.device)
    fired[out.indices[active]] = True
    stats = StepStats((out.recon.detach() / scale), fired, active.sum(-1).float().mean())
    zero = loss.mse.new_zeros(())
    return LossOutput(loss.total, loss.mse, zero, loss.aux), stats


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
    # The scale uses the requested k_aux, not the clipped count: with fewer dead latents than
    # k_aux the term is down-weighted by n_dead / k_aux.
    scale = min(n_dead / k_aux, 1.0)
    k = min(k_aux, n_dead)
    x_in = x.to(out.pre.dtype) * sae.input_scale.to(out.pre.dtype)
    err = (x_in - out.recon * sae.input_scale.to(out.recon.dtype)).detach()  # [batch, d_in]
    masked = out.pre.masked_fill(~dead, float("-inf"))
    values, indices = topk_mask_values(masked, k)
    err_hat = torch.zeros_like(out.pre).scatter_(-1, indices, values) @ sae.W_dec
    variance = (err - err.mean(0)).pow(2).sum().clamp_min(1e-8)
    return scale * (err_hat - err).pow(2).sum() / variance


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
