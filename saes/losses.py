"""Training losses: reconstruction, the activation's sparsity penalty, and aux-k for dead latents.

mse      = mean over rows of ‖ŷ − y‖²   (y the target: x for an SAE, in its normalised input space)
relu     : sparsity = λ · mean over rows of Σᵢ aᵢ ‖W_dec[i]‖  (L1 weighted by decoder norms)
jumprelu : sparsity = λ · mean over rows of Σᵢ H(zᵢ − θᵢ)      (L0, straight-through in θ)
aux-k    = α · min(n_dead / k_aux, 1) · ‖e − ê‖² / ‖e − mean(e)‖²   (topk, batchtopk)
           e = y − ŷ (detached), ê = the k_aux largest dead pre-activations decoded without bias
extra    : further reconstruction terms, weight 1 (matryoshka_batchtopk: inner prefixes;
           gated: the gate path's reconstruction)

The architecture-specific terms belong to the activation modules (``saes.activations``:
``sparsity_loss``, ``aux_loss``, ``extra_loss``, ``sparse_kernel``); this module composes them with the
reconstruction error and does not branch on the activation. :func:`step_loss` is the trainer's.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from saes.activations import architecture, aux_k_term
from saes.sae import SAE, SAEOutput

__all__ = [
    "LossOutput",
    "StepStats",
    "aux_k_loss",
    "sae_loss",
    "sparse_loss",
    "sparse_topk_loss",
    "step_loss",
]


class LossOutput(NamedTuple):
    total: Float[Tensor, ""]
    mse: Float[Tensor, ""]
    sparsity: Float[Tensor, ""]
    aux: Float[Tensor, ""]
    extra: Float[Tensor, ""] | None = None
    """The architecture's further reconstruction terms (None: absent, as from older callers)."""


class StepStats(NamedTuple):
    """What the trainer needs from a step besides the loss, from either path."""

    recon: Float[Tensor, "batch d_out"]  # in the target's (raw) space
    fired: Bool[Tensor, " d_sae"]  # latents active on at least one row
    l0: Float[Tensor, ""] | None  # mean active latents per row (None: not asked for)


def dense_stats(out: SAEOutput, *, with_l0: bool = True, nonnegative: bool = False) -> StepStats:
    # Column max/min: 3x faster on CPU than reductions of a boolean copy; codes known to be
    # ≥ 0 need the max only. The count for L0 is a full pass (up to 1 ms a step at d_sae 512), so
    # only logging steps ask for it.
    acts = out.acts.detach()
    fired = acts.amax(0) > 0
    if not nonnegative:
        fired |= acts.amin(0) < 0
    l0 = torch.count_nonzero(acts) / acts.shape[0] if with_l0 else None
    return StepStats(out.recon.detach(), fired, l0)


def sparse_loss(
    sae: SAE,
    x: Float[Tensor, "batch d_in"],
    *,
    dead: Bool[Tensor, " d_sae"] | None = None,
    k_aux: int = 0,
    aux_coefficient: float = 0.0,
) -> tuple[LossOutput, StepStats]:
    """The loss of :func:`sae_loss` for an SAE whose activation has a ``sparse_kernel`` (TopK),
    computed sparsely through ``kernels`` (Triton on CUDA, the eager reference elsewhere): only
    the encoder GEMM is dense; decode, the value gradient and the weight gradients touch the k
    kept latents per row."""
    from kernels.autograd import sparse_sae_loss

    kernel = sae.sparse_kernel
    if kernel is None:
        what = f"{sae.cfg.activation!r} {sae.kind}"
        raise ValueError(f"the sparse path covers topk SAEs; this one is a {what}")
    scale = sae.input_scale.to(sae.W_enc.dtype)
    use_aux = dead is not None and bool(aux_coefficient) and k_aux > 0
    loss, out = sparse_sae_loss(
        x.to(sae.W_enc.dtype) * scale,
        sae.W_enc,
        sae.b_enc,
        sae.W_dec,
        sae.b_dec,
        sae.cfg.k,
        activation=kernel,  # type: ignore[arg-type]
        dead_mask=dead if use_aux else None,
        k_aux=k_aux if use_aux else 0,
        aux_coefficient=aux_coefficient if use_aux else 0.0,
    )
    values = out.values.detach()  # rectified: a latent fired where its largest kept value > 0
    # A scatter-max over the kept entries: no boolean-mask index (a nonzero, 0.3 ms a step).
    fired = values.new_zeros(sae.cfg.d_sae)
    fired = fired.scatter_reduce_(0, out.indices.flatten(), values.flatten(), "amax") > 0
    stats = StepStats((out.recon.detach() / scale), fired, (values > 0).sum(-1).float().mean())
    zero = loss.mse.new_zeros(())
    return LossOutput(loss.total, loss.mse, zero, loss.aux, zero), stats


sparse_topk_loss = sparse_loss  # the name before other activations could have a sparse kernel


def aux_k_loss(
    sae: SAE,
    x: Float[Tensor, "batch d_out"],
    out: SAEOutput,
    dead: Bool[Tensor, " d_sae"],
    k_aux: int,
) -> Float[Tensor, ""]:
    """The α-free aux-k term (see :func:`saes.activations.aux_k_term`); ``x`` is the target
    (the input, for an SAE)."""
    return aux_k_term(sae, x, out, dead, k_aux)


def sae_loss(
    sae: SAE,
    x: Float[Tensor, "batch d_in"],
    y: Float[Tensor, "batch d_out"] | None = None,
    *,
    sparsity_coefficient: float = 0.0,
    dead: Bool[Tensor, " d_sae"] | None = None,
    k_aux: int = 0,
    aux_coefficient: float = 0.0,
) -> tuple[LossOutput, SAEOutput]:
    """The training loss of one batch, with each term reported separately. ``y`` is the target
    (x when omitted, for an SAE; required for a transcoder). The dictionary runs without its hook
    points."""
    target = sae.target(x, y)
    assert target is not None
    out = sae.unhooked(x)
    scale = sae.out_scale.to(out.recon.dtype)
    # Reconstruction is measured in the normalised space the SAE computes in.
    mse = ((out.recon - target.to(out.recon.dtype)) * scale).pow(2).sum(-1).mean()
    zero = mse.new_zeros(())
    arch = architecture(sae.act)
    sparsity = arch.sparsity_loss(sae, out, sparsity_coefficient)
    extra = arch.extra_loss(sae, target, out)
    aux = None
    if dead is not None:
        aux = arch.aux_loss(sae, target, out, dead, k_aux, aux_coefficient)
    sparsity = zero if sparsity is None else sparsity
    aux = zero if aux is None else aux
    extra = zero if extra is None else extra
    return LossOutput(mse + sparsity + aux + extra, mse, sparsity, aux, extra), out


def step_loss(
    sae: SAE,
    x: Float[Tensor, "batch d_in"],
    y: Float[Tensor, "batch d_out"] | None = None,
    *,
    sparse: bool = False,
    sparsity_coefficient: float = 0.0,
    dead: Bool[Tensor, " d_sae"] | None = None,
    k_aux: int = 0,
    aux_coefficient: float = 0.0,
    with_l0: bool = True,
) -> tuple[LossOutput, StepStats]:
    """The trainer's loss: :func:`sparse_loss` when ``sparse`` (an SAE with a sparse kernel, no
    separate target), else :func:`sae_loss`, with the step's statistics (``with_l0=False``:
    without L0, which costs a pass over the dense codes)."""
    if sparse:
        if y is not None:
            raise ValueError(
                "the sparse path reconstructs the input: train an SAE on tensors x, or set "
                "sparse_path='off' to give it a separate target y"
            )
        return sparse_loss(sae, x, dead=dead, k_aux=k_aux, aux_coefficient=aux_coefficient)
    loss, out = sae_loss(
        sae,
        x,
        y,
        sparsity_coefficient=sparsity_coefficient,
        dead=dead,
        k_aux=k_aux,
        aux_coefficient=aux_coefficient,
    )
    return loss, dense_stats(out, with_l0=with_l0, nonnegative=architecture(sae.act).nonnegative)
