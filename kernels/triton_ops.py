"""Launchers for the Triton kernels: argument checks, tile choice, host-side glue.

Same signatures and semantics as ``kernels.reference`` (see it for the maths); indices are int64.
Importing this module imports Triton, so nothing imports it eagerly (``kernels.dispatch`` does,
on first use). Whether it runs compiled (CUDA tensors) or interpreted (CPU tensors) is fixed by
``TRITON_INTERPRET`` at the time Triton itself was imported.

Tiles are picked from the shapes (no autotune: it cannot run under the interpreter). Interpreted
runs cost about 5 ms per program per loop iteration whatever the tile size, so there the tiles
cover the whole (tiny) problem. GPU tiles: the best of the H200 sweep at d_in=768, d_sae=24576.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
import triton
from torch import Tensor

from kernels import _triton_kernels as K
from kernels.reference import (
    TopKResult,
    check_decode_args,
    check_sparse_t_dense_args,
    check_topk_args,
    check_values_grad_args,
    count_dead,
    dead_columns,
    n_aux,
    out_dtype_of,
)

__all__ = [
    "INTERPRETED",
    "MAX_KERNEL_K",
    "decode",
    "decode_values_grad",
    "sparse_t_dense",
    "sparse_t_dense_and_sums",
    "topk_with_aux",
]

log = logging.getLogger(__name__)

# Fixed when the kernels were defined: interpreted kernels run on CPU tensors, compiled on CUDA.
INTERPRETED: bool = type(K.decode_kernel).__name__ == "InterpretedFunction"
# Running top-K lists live in registers; past this size torch.topk is used instead (logged).
MAX_KERNEL_K = 1024


def _p2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def _tiles(default: dict[str, int], override: Mapping[str, int] | None) -> dict[str, int]:
    """The heuristic tiles, with any the caller names replacing them (tests force small tiles
    to run the multi-tile and boundary paths)."""
    tiles = dict(default)
    for name, size in (override or {}).items():
        if name not in tiles:
            raise ValueError(f"unknown tile {name!r}; this kernel takes {sorted(tiles)}")
        if size < 1 or size & (size - 1):
            raise ValueError(f"tile {name} must be a power of two; got {size}")
        tiles[name] = size
    return tiles


def _on_cpu(t: Tensor) -> bool:
    return t.device.type != "cuda"


def _check_runnable(t: Tensor) -> None:
    if t.device.type != "cuda" and not INTERPRETED:
        raise RuntimeError(
            f"the Triton backend needs CUDA tensors (got {t.device}) or TRITON_INTERPRET=1 set "
            "before Triton is imported; use MECHSCOPE_KERNELS=reference for the CPU path"
        )


# ---- decode ----------------------------------------------------------------------------------------
def decode(
    values: Tensor,
    indices: Tensor,
    W_dec: Tensor,
    bias: Tensor | None = None,
    *,
    tiles: Mapping[str, int] | None = None,
) -> Tensor:
    check_decode_args(values, indices, W_dec, bias)
    _check_runnable(W_dec)
    values, indices = values.contiguous(), indices.contiguous()
    B, k = indices.shape
    D = W_dec.shape[1]
    out = torch.empty(B, D, device=W_dec.device, dtype=out_dtype_of(values, W_dec, bias))
    if out.numel() == 0 or k == 0:  # (empty tensors may have null pointers: no launch)
        return out.copy_(bias.expand(B, D)) if bias is not None else out.zero_()
    cpu = _on_cpu(W_dec)
    t = _tiles({"BM": min(_p2(B), 64), "BD": min(_p2(D), 256)} if cpu else {"BM": 16, "BD": 64},
               tiles)  # fmt: skip
    grid = (triton.cdiv(B, t["BM"]), triton.cdiv(D, t["BD"]))
    K.decode_kernel[grid](
        values, indices, W_dec, bias if bias is not None else W_dec, out,
        B, k, D, W_dec.stride(0),
        HAS_BIAS=bias is not None, **t, num_warps=4,
    )  # fmt: skip
    return out


def decode_values_grad(
    grad_out: Tensor, indices: Tensor, W_dec: Tensor, *, tiles: Mapping[str, int] | None = None
) -> Tensor:
    check_values_grad_args(grad_out, indices, W_dec)
    _check_runnable(W_dec)
    grad_out, indices = grad_out.contiguous(), indices.contiguous()
    B, k = indices.shape
    D = W_dec.shape[1]
    out = torch.empty(B, k, device=W_dec.device, dtype=out_dtype_of(grad_out, W_dec))
    if out.numel() == 0:
        return out
    if _on_cpu(W_dec):
        default = {"BM": min(_p2(B), 32), "BK": min(_p2(k), 32), "BD": min(_p2(D), 128)}
    else:
        default = {"BM": 8, "BK": 8, "BD": 128}
    t = _tiles(default, tiles)
    grid = (triton.cdiv(B, t["BM"]), triton.cdiv(k, t["BK"]))
    K.decode_values_grad_kernel[grid](
        grad_out, indices, W_dec, out,
        B, k, D, grad_out.stride(0), W_dec.stride(0),
        **t, num_warps=4,
    )  # fmt: skip
    return out


# ---- sparseᵀ · dense -------------------------------------------------------------------------------
def _group_by_latent(indices: Tensor, n_rows: int) -> tuple[Tensor, Tensor]:
    """(entry ids sorted by latent, stable; offsets [n_rows + 1]) — deterministic glue (a radix
    sort and a binary search; no atomics)."""
    # int32 keys: half the radix passes of int64 (latent ids fit: d_sae < 2³¹).
    flat = indices.reshape(-1).to(torch.int32)
    sorted_lat, order = torch.sort(flat, stable=True)
    bounds = torch.arange(n_rows + 1, device=flat.device, dtype=torch.int32)
    return order, torch.searchsorted(sorted_lat, bounds)


def sparse_t_dense_and_sums(
    indices: Tensor,
    values: Tensor,
    dense: Tensor,
    n_rows: int,
    *,
    transpose: bool = False,
    out_dtype: torch.dtype | None = None,
    tiles: Mapping[str, int] | None = None,
) -> tuple[Tensor, Tensor]:
    check_sparse_t_dense_args(indices, values, dense, n_rows)
    _check_runnable(dense)
    indices, values = indices.contiguous(), values.contiguous()
    dense = dense if dense.stride(-1) == 1 else dense.contiguous()
    dtype = out_dtype or out_dtype_of(values, dense)
    B, k = indices.shape
    D = dense.shape[1]
    shape = (D, n_rows) if transpose else (n_rows, D)
    out = torch.empty(shape, device=dense.device, dtype=dtype)
    sums = torch.empty(n_rows, device=dense.device, dtype=dtype)
    if D == 0 or indices.numel() == 0:  # (empty tensors may have null pointers: no launch)
        return out.zero_(), sums.zero_()
    order, offsets = _group_by_latent(indices, n_rows)
    if _on_cpu(dense):
        default = {"BL": min(_p2(n_rows), 64), "BD": min(_p2(D), 256), "BE": min(_p2(B * k), 32)}
    else:
        default = {"BL": 16, "BD": 128, "BE": 16}
    t = _tiles(default, tiles)
    stride_on, stride_od = (1, n_rows) if transpose else (D, 1)
    grid = (triton.cdiv(n_rows, t["BL"]), triton.cdiv(D, t["BD"]))
    K.sparse_t_dense_kernel[grid](
        order, offsets, values, dense, out, sums,
        n_rows, max(k, 1), D, dense.stride(0), stride_on, stride_od,
        WRITE_SUMS=True, **t, num_warps=4,
    )  # fmt: skip
    return out, sums


def sparse_t_dense(
    indices: Tensor,
    values: Tensor,
    dense: Tensor,
    n_rows: int,
    *,
    transpose: bool = False,
    out_dtype: torch.dtype | None = None,
    tiles: Mapping[str, int] | None = None,
) -> Tensor:
    return sparse_t_dense_and_sums(
        indices, values, dense, n_rows, transpose=transpose, out_dtype=out_dtype, tiles=tiles
    )[0]


# ---- row top-k with aux-k --------------------------------------------------------------------------
def _torch_topk(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """torch.topk: the CUDA default, and the fallback for lists too long for registers."""
    values, indices = pre.topk(k, dim=-1)
    return values.relu(), indices


def topk_with_aux(
    pre: Tensor,
    k: int,
    dead_mask: Tensor | None = None,
    k_aux: int = 0,
    *,
    n_dead: int | None = None,
    tiles: Mapping[str, int] | None = None,
    kernel: bool | None = None,
) -> TopKResult:
    """Top-k (rectified) and the aux top-k among dead latents.

    ``kernel``: one pass of the Triton kernel over each row (the interpreter's default), or
    torch.topk for the main list and for the aux list over the dead columns only (the CUDA
    default: on H200 torch.topk ran 1.65x faster than the kernel at d_sae=24576, k=32).
    ``n_dead`` (= dead_mask.sum(), if known) saves the device sync that reads it.

    ``tl.topk`` needs a power-of-two k: the running lists hold K = next_pow2(k) ≥ 2 keys and the
    first k (they come sorted) are kept. Ties break towards the lower latent id in the kernel.
    A list longer than MAX_KERNEL_K is chosen by torch.topk instead.
    """
    check_topk_args(pre, k, dead_mask, k_aux)
    _check_runnable(pre)
    pre = pre if pre.stride(-1) == 1 else pre.contiguous()
    B, N = pre.shape
    ka = n_aux(dead_mask, k_aux, n_dead)
    # Dead columns, compacted by a sort (no sync once n_dead is known).
    dead_idx = None
    if ka and dead_mask is not None:
        dead_idx = dead_columns(dead_mask, count_dead(dead_mask, n_dead))
    use_kernel = _on_cpu(pre) if kernel is None else kernel
    Kp, Kap = max(_p2(k), 2), (max(_p2(ka), 2) if ka else 0)
    aux_in_kernel = use_kernel and 0 < Kap <= MAX_KERNEL_K
    if use_kernel and Kp <= MAX_KERNEL_K and B > 0:
        values, indices, aux_values, aux_indices = _launch_topk(
            pre, k, ka if aux_in_kernel else 0, dead_idx, tiles
        )
    else:
        values, indices = _torch_topk(pre, k)
        aux_values, aux_indices = pre.new_zeros(B, 0), indices.new_zeros(B, 0)
    if ka and (not aux_in_kernel or B == 0 or Kp > MAX_KERNEL_K):
        assert dead_idx is not None
        aux_values, j = _torch_topk(pre.index_select(1, dead_idx), ka)
        aux_indices = dead_idx[j]
    return TopKResult(values, indices, aux_values, aux_indices)


def _launch_topk(
    pre: Tensor, k: int, ka: int, dead_idx: Tensor | None, tiles: Mapping[str, int] | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    B, N = pre.shape
    Kp, Kap = max(_p2(k), 2), (max(_p2(ka), 2) if ka else 0)
    values = torch.empty(B, k, device=pre.device, dtype=pre.dtype)
    indices = torch.empty(B, k, device=pre.device, dtype=torch.int64)
    aux_values = torch.empty(B, ka, device=pre.device, dtype=pre.dtype)
    aux_indices = torch.empty(B, ka, device=pre.device, dtype=torch.int64)
    n_dead = len(dead_idx) if ka and dead_idx is not None else 0
    if _on_cpu(pre):
        t = _tiles({"BM": min(_p2(B), 16), "BN": min(_p2(N), 128), "BA": 128}, tiles)
    else:
        t = _tiles({"BM": 1, "BN": 512, "BA": 512}, tiles)
    # A tile holds at least one running list; BA need not exceed the dead count.
    t["BN"] = max(t["BN"], Kp)
    t["BA"] = max(Kap, min(_p2(n_dead), t["BA"]), 2)
    warps = 8 if max(Kp, Kap) >= 512 else 4
    # Without aux, stand-ins replace the empty tensors (null pointers); the kernel never reads them.
    aux = (dead_idx, aux_values, aux_indices) if ka else (indices, values, indices)
    K.topk_aux_kernel[(triton.cdiv(B, t["BM"]),)](
        pre, aux[0], values, indices, aux[1], aux[2],
        B, N, n_dead, pre.stride(0), k, ka,
        K=Kp, K_AUX=Kap, **t, num_warps=warps,
    )  # fmt: skip
    return values, indices, aux_values, aux_indices
