"""Eager PyTorch for every kernel op: the specification, and the CPU path.

Every op computes in float32 whatever the storage dtype, like the kernels do, and returns the
promoted storage dtype of its inputs. Shapes: ``B`` rows, ``k`` kept latents per row, ``d_sae``
latents, ``d_in`` (or ``d``) features.

- ``decode``: out[b] = Σ_j values[b, j] · W_dec[indices[b, j]] + bias
- ``decode_values_grad``: dv[b, j] = ⟨grad_out[b], W_dec[indices[b, j]]⟩
- ``sparse_t_dense``: out[n] = Σ_{(b, j): indices[b, j] = n} values[b, j] · dense[b]
  (dW_dec with dense = grad of the reconstruction; dW_encᵀ with dense = x − b_dec and values =
  grad of the pre-activations at the kept entries); ``sparse_t_dense_and_sums`` also returns
  Σ values per latent (db_enc).
- ``topk_with_aux``: the k largest pre-activations per row, rectified, and the k_aux largest among
  dead latents (also rectified), as in ``saes.losses``.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from kernels._checks import (
    check_float,
    check_indices,
    check_rows_contiguous,
    check_same_device,
    check_shape,
)

__all__ = [
    "TopKResult",
    "check_decode_args",
    "check_sparse_t_dense_args",
    "check_topk_args",
    "check_values_grad_args",
    "count_dead",
    "dead_columns",
    "decode",
    "decode_values_grad",
    "fp32_math",
    "n_aux",
    "out_dtype_of",
    "sparse_t_dense",
    "sparse_t_dense_and_sums",
    "topk_with_aux",
]


class TopKResult(NamedTuple):
    values: Tensor  # [B, k] rectified pre-activations, pre's dtype
    indices: Tensor  # [B, k] int64 latent ids
    aux_values: Tensor  # [B, k_aux'] rectified, among dead latents; k_aux' = min(k_aux, n_dead)
    aux_indices: Tensor  # [B, k_aux'] int64


# ---- argument checks (shared with the Triton launchers) ------------------------------------------
def check_decode_args(
    values: Tensor, indices: Tensor, W_dec: Tensor, bias: Tensor | None = None
) -> None:
    check_float(values, "values")
    check_float(W_dec, "W_dec")
    if bias is not None:
        check_float(bias, "bias")
    check_same_device(values=values, indices=indices, W_dec=W_dec, bias=bias)
    check_shape(W_dec, "W_dec", (None, None), "[d_sae, d_in]")
    check_indices(indices, W_dec.shape[0])
    check_shape(values, "values", tuple(indices.shape), "the shape of indices [batch, k]")
    check_rows_contiguous(W_dec, "W_dec")
    if bias is not None:
        check_shape(bias, "bias", (W_dec.shape[1],), "[d_in]")


def check_values_grad_args(grad_out: Tensor, indices: Tensor, W_dec: Tensor) -> None:
    check_float(grad_out, "grad_out")
    check_float(W_dec, "W_dec")
    check_same_device(grad_out=grad_out, indices=indices, W_dec=W_dec)
    check_shape(W_dec, "W_dec", (None, None), "[d_sae, d_in]")
    check_indices(indices, W_dec.shape[0])
    check_shape(grad_out, "grad_out", (indices.shape[0], W_dec.shape[1]), "[batch, d_in]")
    check_rows_contiguous(W_dec, "W_dec")


def check_sparse_t_dense_args(indices: Tensor, values: Tensor, dense: Tensor, n_rows: int) -> None:
    check_float(values, "values")
    check_float(dense, "dense")
    check_same_device(indices=indices, values=values, dense=dense)
    if n_rows < 1:
        raise ValueError(f"n_rows must be at least 1; got {n_rows}")
    check_indices(indices, n_rows)
    check_shape(values, "values", tuple(indices.shape), "the shape of indices [batch, k]")
    check_shape(dense, "dense", (indices.shape[0], None), "[batch, d]")


def check_topk_args(pre: Tensor, k: int, dead_mask: Tensor | None, k_aux: int) -> None:
    check_float(pre, "pre")
    check_shape(pre, "pre", (None, None), "[batch, d_sae]")
    if not 1 <= k <= pre.shape[1]:
        raise ValueError(f"k must be in [1, d_sae={pre.shape[1]}]; got {k}")
    if k_aux < 0:
        raise ValueError(f"k_aux must be >= 0; got {k_aux}")
    if dead_mask is not None:
        if dead_mask.dtype != torch.bool:
            raise TypeError(f"dead_mask must be a bool tensor; got {dead_mask.dtype}")
        check_shape(dead_mask, "dead_mask", (pre.shape[1],), "[d_sae]")
        check_same_device(pre=pre, dead_mask=dead_mask)


def n_aux(dead_mask: Tensor | None, k_aux: int, n_dead: int | None = None) -> int:
    """How many aux latents a row gets: min(k_aux, n_dead). Reads n_dead (a sync on GPU) unless
    the caller passes it."""
    if dead_mask is None or k_aux <= 0:
        return 0
    return min(k_aux, count_dead(dead_mask, n_dead))


def count_dead(dead_mask: Tensor, n_dead: int | None = None) -> int:
    """``n_dead`` if given (trusted: the caller knows it, e.g. from host-side counters), else
    dead_mask.sum() read back (a device sync)."""
    return int(dead_mask.sum()) if n_dead is None else int(n_dead)


def dead_columns(dead_mask: Tensor, n_dead: int) -> Tensor:
    """The ids of the dead latents, ascending, int64; a stable sort, so no host sync (unlike
    nonzero, whose output size must be read back)."""
    return torch.argsort((~dead_mask).to(torch.uint8), stable=True)[:n_dead]


def fp32_math(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """Autocast off: the ops promise fp32 math whatever context they are called in."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def out_dtype_of(*tensors: Tensor | None) -> torch.dtype:
    dtype = tensors[0].dtype  # type: ignore[union-attr]
    for t in tensors[1:]:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


# ---- the ops -------------------------------------------------------------------------------------
# CPU gets sparse formulations (embedding_bag, SDDMM, sparse·dense) that never build a dense
# [B, d_sae] matrix or a [B, k, d] gather; other devices keep the direct gather/scatter forms,
# chunked by rows so the [rows, k, d] gather stays bounded.
_GATHER_CHUNK = 1 << 24  # elements of one [rows, k, d] gather on non-CPU devices


def decode(values: Tensor, indices: Tensor, W_dec: Tensor, bias: Tensor | None = None) -> Tensor:
    """[B, k] values at latents ``indices`` times decoder rows, summed, plus bias → [B, d_in]."""
    check_decode_args(values, indices, W_dec, bias)
    B, k = indices.shape
    with fp32_math(W_dec.device):
        W = W_dec.float()
        if k == 0 or B == 0:
            out = W.new_zeros(B, W.shape[1])
        else:
            out = F.embedding_bag(indices, W, per_sample_weights=values.float(), mode="sum")
        if bias is not None:
            out = out + bias.float()
    return out.to(out_dtype_of(values, W_dec, bias))


def decode_values_grad(grad_out: Tensor, indices: Tensor, W_dec: Tensor) -> Tensor:
    """Gradient of ``decode`` w.r.t. its values: ⟨grad_out[b], W_dec[indices[b, j]]⟩ → [B, k]."""
    check_values_grad_args(grad_out, indices, W_dec)
    B, k = indices.shape
    with fp32_math(W_dec.device):
        W, g = W_dec.float(), grad_out.float()
        if B == 0 or k == 0:
            out = g.new_zeros(B, k)
        elif W.device.type == "cpu":
            # SDDMM: g Wᵀ evaluated only at the (b, indices[b, j]) entries, one per entry.
            crow = torch.arange(0, B * k + 1, k, device=W.device)
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                pattern = torch.sparse_csr_tensor(
                    crow, indices.reshape(-1), g.new_zeros(B * k), (B, W.shape[0])
                )
            out = torch.sparse.sampled_addmm(pattern, g, W.T, beta=0.0).values().view(B, k)
        else:
            step = max(1, _GATHER_CHUNK // (k * W.shape[1]))
            parts = [
                torch.bmm(W[indices[s : s + step]], g[s : s + step, :, None]).squeeze(-1)
                for s in range(0, B, step)
            ]
            out = torch.cat(parts)
    return out.to(out_dtype_of(grad_out, W_dec))


def sparse_t_dense_and_sums(
    indices: Tensor,
    values: Tensor,
    dense: Tensor,
    n_rows: int,
    *,
    transpose: bool = False,
    out_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """(Sᵀ·dense, Σ values per latent), S the [B, n_rows] matrix holding ``values`` at ``indices``.

    ``transpose=True`` returns the product as [d, n_rows] (the layout of W_enc's gradient).
    Repeated (row, latent) pairs add up.
    """
    check_sparse_t_dense_args(indices, values, dense, n_rows)
    dtype = out_dtype or out_dtype_of(values, dense)
    B, k = indices.shape
    flat_idx, flat_v = indices.reshape(-1), values.reshape(-1).float()
    sums = torch.zeros(n_rows, device=dense.device).index_add_(0, flat_idx, flat_v)
    with fp32_math(dense.device):
        if dense.device.type == "cpu":
            rows = torch.arange(B, device=dense.device).repeat_interleave(k)
            St = torch.sparse_coo_tensor(
                torch.stack([flat_idx, rows]), flat_v, (n_rows, B), check_invariants=False
            )  # duplicates are summed when mm coalesces
            out = torch.sparse.mm(St, dense.float())  # [n_rows, d]
        else:
            S = dense.new_zeros(B, n_rows, dtype=torch.float32)
            S.scatter_add_(1, indices, flat_v.view(B, k))
            out = S.T @ dense.float()
    out = out.T if transpose else out
    return out.contiguous().to(dtype), sums.to(dtype)


def sparse_t_dense(
    indices: Tensor,
    values: Tensor,
    dense: Tensor,
    n_rows: int,
    *,
    transpose: bool = False,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """Σ_{(b, j): indices[b, j] = n} values[b, j] · dense[b] → [n_rows, d] (see the module doc)."""
    return sparse_t_dense_and_sums(
        indices, values, dense, n_rows, transpose=transpose, out_dtype=out_dtype
    )[0]


def topk_with_aux(
    pre: Tensor,
    k: int,
    dead_mask: Tensor | None = None,
    k_aux: int = 0,
    *,
    n_dead: int | None = None,
) -> TopKResult:
    """Row top-k of ``pre`` (rectified) and the aux-k choice among dead latents. ``n_dead``
    (= dead_mask.sum(), if the caller knows it) saves a device sync."""
    check_topk_args(pre, k, dead_mask, k_aux)
    values, indices = pre.topk(k, dim=-1)
    ka = n_aux(dead_mask, k_aux, n_dead)
    if ka == 0:
        empty = pre.new_zeros(pre.shape[0], 0)
        return TopKResult(values.relu(), indices, empty, empty.long())
    assert dead_mask is not None
    # Only the dead columns are searched (a [B, n_dead] copy, not a masked [B, d_sae] one).
    cols = dead_columns(dead_mask, count_dead(dead_mask, n_dead))
    aux_values, j = pre.index_select(1, cols).topk(ka, dim=-1)
    return TopKResult(values.relu(), indices, aux_values.relu(), cols[j])


def sparse_t_dense_and_sums_gemm(
    indices: Tensor,
    values: Tensor,
    dense: Tensor,
    n_rows: int,
    *,
    transpose: bool = False,
    out_dtype: torch.dtype | None = None,
    compute_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """``sparse_t_dense_and_sums`` as scatter + one low-precision cuBLAS GEMM.

    The alternative to the by-latent kernel that the H200 profile pointed at: at B·k/d_sae ≈ 5
    entries per latent a bf16 GEMM over the scattered [B, n_rows] matrix ran 4.5× faster than the
    kernel. Operands are rounded to ``compute_dtype``, by default the values' dtype when that is
    bf16/fp16 (under autocast, as the dense path's GEMMs are) and full precision otherwise, so an
    fp32 run stays fp32; accumulation is fp32 inside the GEMM; the sums stay fp32. Deterministic: each (row,
    latent) cell gets at most two scattered values (a main and an aux entry), and a + b = b + a.
    """
    check_sparse_t_dense_args(indices, values, dense, n_rows)
    dtype = out_dtype or out_dtype_of(values, dense)
    if compute_dtype is None:
        low = values.dtype in (torch.bfloat16, torch.float16)
        compute_dtype = values.dtype if low else out_dtype_of(values, dense)
    S = dense.new_zeros(indices.shape[0], n_rows, dtype=compute_dtype)
    S.scatter_add_(1, indices, values.to(compute_dtype))
    d = dense.to(compute_dtype)
    out = (d.T @ S) if transpose else (S.T @ d)  # [d, n_rows] or [n_rows, d]
    sums = torch.zeros(n_rows, device=dense.device, dtype=torch.float32)
    sums.index_add_(0, indices.reshape(-1), values.reshape(-1).float())
    return out.to(dtype), sums.to(dtype)


def sparse_t_dense_gemm(
    indices: Tensor,
    values: Tensor,
    dense: Tensor,
    n_rows: int,
    *,
    transpose: bool = False,
    out_dtype: torch.dtype | None = None,
    compute_dtype: torch.dtype | None = None,
) -> Tensor:
    """``sparse_t_dense`` through :func:`sparse_t_dense_and_sums_gemm`."""
    return sparse_t_dense_and_sums_gemm(
        indices,
        values,
        dense,
        n_rows,
        transpose=transpose,
        out_dtype=out_dtype,
        compute_dtype=compute_dtype,
    )[0]
