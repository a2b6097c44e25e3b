"""A whole sparse SAE training step through the kernels, with every gradient.

Forward (``sae_forward``):
    pre   = (x − b_dec) W_enc + b_enc                 one dense GEMM (cuBLAS, autocast applies)
    v, i  = select(pre)  (+ aux v, i among dead)      top-k kernel (one pass over pre)
    x̂     = Σⱼ vⱼ W_dec[iⱼ] + b_dec                    decode kernel
Backward, from g = ∂L/∂x̂ (and ∂L/∂v from any other use of v, e.g. the aux decode):
    dv     = ⟨g, W_dec[i]⟩ (+ ∂L/∂v)                  decode_values_grad kernel
    dpre   = dv · [v > 0]   at the kept entries only  (zero elsewhere: top-k is locally constant)
    dW_dec = Σ_{(b,j): i=n} v · g[b]                  sparseᵀ·dense kernel
    dW_enc = (Σ_{(b,j): i=n} dpre · (x − b_dec)[b])ᵀ  sparseᵀ·dense kernel, written transposed
    db_enc = Σ_{(b,j): i=n} dpre                      row sums of the same kernel
    db_dec = Σ_b g[b] − W_enc db_enc
The last line: b_dec enters x̂ directly (∂x̂/∂b_dec = I, giving Σ_b g[b]) and pre through
−b_dec W_enc (giving −W_enc Σ_b dpre[b] = −W_enc db_enc); autograd adds the two parts, which
come from the decode and the encode function respectively. The aux reconstruction
ê = Σ aux_v W_dec[aux_i] uses the same differentiable ``sparse_decode``, so its gradient reaches
W_dec directly and W_enc, b_enc, b_dec through the aux entries of dpre.

Activations: ``topk``; ``batchtopk`` (training rule: a global threshold, the (k·batch)-th largest
rectified pre-activation, then each row's entries above it in a padded [batch, k_max] layout,
k_max the largest row count, values 0 in the padding); ``jumprelu`` (pre·[pre > θ], same padded
layout; the gradient w.r.t. θ needs dense pre-activation gradients near θ and is not provided:
train θ with the dense path, or hold it fixed). Padded layouts run through the same decode and
gradient kernels; zero values cost no weight reads.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from kernels.dispatch import Backend, get_backend
from kernels.reference import TopKResult, count_dead, fp32_math

__all__ = [
    "SparseLossOutput",
    "SparseSAEOutput",
    "sae_forward",
    "sparse_decode",
    "sparse_sae_loss",
    "topk_sae_forward",
]


class SparseSAEOutput(NamedTuple):
    recon: Tensor  # [batch, d_in]
    values: Tensor  # [batch, k] kept activations (0 in padding)
    indices: Tensor  # [batch, k] int64
    aux_values: Tensor  # [batch, k_aux'] among dead latents; k_aux' = min(k_aux, n_dead)
    aux_indices: Tensor  # [batch, k_aux'] int64


class SparseLossOutput(NamedTuple):
    total: Tensor
    mse: Tensor
    aux: Tensor


class _SparseDecodeFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        values: Tensor,
        indices: Tensor,
        W_dec: Tensor,
        bias: Tensor | None,
        backend: Backend,
    ) -> Tensor:
        ctx.save_for_backward(values, indices, W_dec)
        ctx.backend = backend
        ctx.bias_dtype = None if bias is None else bias.dtype
        return backend.decode(values, indices, W_dec, bias)  # type: ignore[no-any-return]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        values, indices, W_dec = ctx.saved_tensors
        ops: Backend = ctx.backend
        grad = grad.contiguous()
        dv = dW = db = None
        if ctx.needs_input_grad[0]:
            dv = ops.decode_values_grad(grad, indices, W_dec).to(values.dtype)
        if ctx.needs_input_grad[2]:
            dW = ops.sparse_t_dense(indices, values, grad, W_dec.shape[0], out_dtype=W_dec.dtype)
        if ctx.needs_input_grad[3]:
            db = grad.sum(0).to(ctx.bias_dtype)
        return dv, None, dW, db, None


def sparse_decode(
    values: Tensor,
    indices: Tensor,
    W_dec: Tensor,
    bias: Tensor | None = None,
    *,
    backend: Backend | None = None,
) -> Tensor:
    """Σⱼ values[:, j] · W_dec[indices[:, j]] (+ bias) → [batch, d_in], differentiable in values,
    W_dec and bias."""
    backend = backend or get_backend(W_dec.device)
    return _SparseDecodeFn.apply(values, indices, W_dec, bias, backend)  # type: ignore[no-any-return]


Selector = Callable[[Tensor], TopKResult]


class _EncodeSelectFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        W_enc: Tensor,
        b_enc: Tensor,
        b_dec: Tensor,
        select: Selector,
        backend: Backend,
    ) -> tuple[Tensor, ...]:
        xc = x.to(W_enc.dtype) - b_dec  # [batch, d_in]
        pre = torch.addmm(b_enc, xc, W_enc)  # [batch, d_sae]; bias fused into the GEMM
        res = select(pre)
        del pre  # only the kept entries are needed from here on
        ctx.save_for_backward(xc, W_enc, res.values, res.indices, res.aux_values, res.aux_indices)
        ctx.backend, ctx.x_dtype = backend, x.dtype
        ctx.mark_non_differentiable(res.indices, res.aux_indices)
        return tuple(res)

    @staticmethod
    def backward(
        ctx: Any, gv: Tensor | None, _gi: Any, gav: Tensor | None, _gai: Any
    ) -> tuple[Tensor | None, ...]:
        xc, W_enc, values, indices, aux_values, aux_indices = ctx.saved_tensors
        ops: Backend = ctx.backend
        dpre = torch.zeros_like(values) if gv is None else gv * (values > 0)
        if aux_indices.shape[1]:
            dpre_aux = torch.zeros_like(aux_values) if gav is None else gav * (aux_values > 0)
            indices = torch.cat([indices, aux_indices], 1)
            dpre = torch.cat([dpre, dpre_aux], 1)
        d_sae = W_enc.shape[1]
        dW_enc, db_enc = ops.sparse_t_dense_and_sums(
            indices, dpre, xc, d_sae, transpose=True, out_dtype=W_enc.dtype
        )
        with fp32_math(W_enc.device):
            db_dec = -(W_enc.float() @ db_enc.float())
        dx = None
        if ctx.needs_input_grad[0]:  # rare (x is data): dx = dpre W_encᵀ through the decode op
            dx = ops.decode(dpre, indices, W_enc.t().contiguous()).to(ctx.x_dtype)
        return dx, dW_enc, db_enc.to(W_enc.dtype), db_dec.to(xc.dtype), None, None


# ---- activations ---------------------------------------------------------------------------------
def _batchtopk_select(
    pre: Tensor, k: int, dead_mask: Tensor | None, k_aux: int, ops: Backend, n_dead: int | None
) -> TopKResult:
    B, N = pre.shape
    n_keep = min(k * B, B * N)
    # Kept: rectified values >= the (k·B)-th largest rectified value, and positive.
    threshold = pre.flatten().topk(n_keep, sorted=False).values.min()
    k_max = int(((pre >= threshold) & (pre > 0)).sum(1).max().clamp_min(1))  # a sync
    res = ops.topk_with_aux(pre, min(k_max, N), dead_mask, k_aux, n_dead=n_dead)
    keep = (res.values >= threshold) & (res.values > 0)
    values = torch.where(keep, res.values, 0)
    return TopKResult(values, res.indices, res.aux_values, res.aux_indices)


def _jumprelu_select(pre: Tensor, threshold: Tensor, ops: Backend) -> TopKResult:
    above = pre > threshold
    k_max = int(above.sum(1).max().clamp_min(1))
    res = ops.topk_with_aux(pre, k_max)
    keep = res.values > threshold[res.indices]
    values = torch.where(keep, res.values, 0)
    return TopKResult(values, res.indices, res.aux_values, res.aux_indices)


def sae_forward(
    x: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    W_dec: Tensor,
    b_dec: Tensor,
    *,
    activation: Literal["topk", "batchtopk", "jumprelu"] = "topk",
    k: int | None = None,
    threshold: Tensor | None = None,
    dead_mask: Tensor | None = None,
    k_aux: int = 0,
    n_dead: int | None = None,
    backend: Backend | None = None,
) -> SparseSAEOutput:
    """Sparse SAE forward, differentiable w.r.t. W_enc, b_enc, W_dec, b_dec (and x).

    Shapes as ``saes.sae.SAE``: W_enc [d_in, d_sae], W_dec [d_sae, d_in]. ``k`` for topk and
    batchtopk; ``threshold`` [d_sae] (θ, not log θ) for jumprelu; aux-k (``dead_mask``, ``k_aux``)
    for topk and batchtopk; ``n_dead`` (= dead_mask.sum(), if known) saves a device sync.
    """
    ops = backend or get_backend(x.device)
    select: Selector
    if activation in ("topk", "batchtopk"):
        if k is None:
            raise ValueError(f"activation={activation!r} needs k")
        rule = ops.topk_with_aux if activation == "topk" else partial(_batchtopk_select, ops=ops)
        select = partial(rule, k=k, dead_mask=dead_mask, k_aux=k_aux, n_dead=n_dead)
    elif activation == "jumprelu":
        if threshold is None:
            raise ValueError("activation='jumprelu' needs threshold (θ per latent, [d_sae])")
        select = partial(_jumprelu_select, threshold=threshold.detach(), ops=ops)
    else:
        raise ValueError(
            f"activation must be one of 'topk', 'batchtopk', 'jumprelu'; got {activation!r}"
        )
    v, i, av, ai = _EncodeSelectFn.apply(x, W_enc, b_enc, b_dec, select, ops)
    recon = sparse_decode(v, i, W_dec, b_dec, backend=ops)
    return SparseSAEOutput(recon, v, i, av, ai)


def topk_sae_forward(
    x: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    W_dec: Tensor,
    b_dec: Tensor,
    k: int,
    *,
    dead_mask: Tensor | None = None,
    k_aux: int = 0,
    backend: Backend | None = None,
) -> SparseSAEOutput:
    """TopK SAE forward: (recon, values, indices, aux_values, aux_indices)."""
    return sae_forward(
        x, W_enc, b_enc, W_dec, b_dec, k=k, dead_mask=dead_mask, k_aux=k_aux, backend=backend
    )


def sparse_sae_loss(
    x: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    W_dec: Tensor,
    b_dec: Tensor,
    k: int,
    *,
    activation: Literal["topk", "batchtopk"] = "topk",
    dead_mask: Tensor | None = None,
    k_aux: int = 0,
    aux_coefficient: float = 0.0,
    n_dead: int | None = None,
    backend: Backend | None = None,
) -> tuple[SparseLossOutput, SparseSAEOutput]:
    """The TopK/BatchTopK training loss of ``saes.losses.sae_loss`` through the kernels.

    x is in the SAE's normalised space (multiply raw activations by the input scale first).
    mse = mean over rows of ‖x̂ − x‖²; aux = α · min(n_dead/k_aux, 1) · ‖ê − e‖² / ‖e − mean e‖²
    with e = x − x̂ (detached) and ê the aux latents decoded without bias.

    n_dead (= dead_mask.sum()) is read once here (one device sync per step) unless passed in.
    """
    ops = backend or get_backend(x.device)
    ka = k_aux if aux_coefficient and dead_mask is not None else 0
    if ka > 0 and dead_mask is not None:
        n_dead = count_dead(dead_mask, n_dead)
        if n_dead == 0:  # fast path: no aux work at all
            ka = 0
    out = sae_forward(
        x,
        W_enc,
        b_enc,
        W_dec,
        b_dec,
        activation=activation,
        k=k,
        dead_mask=dead_mask,
        k_aux=ka,
        n_dead=n_dead,
        backend=ops,
    )
    mse = (out.recon - x.to(out.recon.dtype)).pow(2).sum(-1).mean()
    aux = mse.new_zeros(())
    if out.aux_indices.shape[1] and n_dead:
        err = (x.to(out.recon.dtype) - out.recon).detach()
        err_hat = sparse_decode(out.aux_values, out.aux_indices, W_dec, backend=ops)
        variance = (err - err.mean(0)).pow(2).sum().clamp_min(1e-8)
        scale = min(n_dead / ka, 1.0)  # the requested k_aux, not the clipped count of aux latents
        aux = aux_coefficient * scale * (err_hat - err).pow(2).sum() / variance
    return SparseLossOutput(mse + aux, mse, aux), out
