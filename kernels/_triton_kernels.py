"""The ``@triton.jit`` kernels. Launch them through ``kernels.triton_ops``, which checks arguments.

Conventions (each follows from a fact in docs KERNELS.md):
- storage may be bf16/fp16/fp32; every load is converted to fp32 and all math is fp32 (the
  interpreter gets bf16 arithmetic wrong, and fp32 accumulation is what we want anyway);
- offsets are int64 before any pointer arithmetic (d_sae · d_in passes 2³¹);
- tile sizes are constexpr parameters chosen by the launcher (no autotune: the interpreter
  cannot run more than one config).
"""

from __future__ import annotations

import triton
import triton.language as tl

# Smallest int64: the key of a masked-out entry; every real key is larger (see _pack_key).
KEY_MIN: tl.constexpr = tl.constexpr(-9223372036854775807 - 1)


# ---- top-k keys ----------------------------------------------------------------------------------
@triton.jit
def _pack_key(v, cols):
    """An int64 that orders like (value, −column): value bits in the high word, mapped so signed
    integer order equals float order; 0xFFFFFFFF − column in the low word, so on equal values
    the lower column wins (a deterministic tie-break)."""
    i = v.to(tl.int32, bitcast=True)
    o = i ^ ((i >> 31) & 0x7FFFFFFF)  # negative floats: flip magnitude bits
    return (o.to(tl.int64) << 32) | (0xFFFFFFFF - cols.to(tl.int64))


@triton.jit
def _unpack_key(key):
    cols = 0xFFFFFFFF - (key & 0xFFFFFFFF)
    o = (key >> 32).to(tl.int32)
    v = (o ^ ((o >> 31) & 0x7FFFFFFF)).to(tl.float32, bitcast=True)
    return v, cols


@triton.jit
def _merge_topk(best, key, K: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """Top-K of (best ∪ key) per row; best is [BM, K], key is [BM, BN] with BN >= K."""
    if BN > K:  # noqa: SIM108 (a constexpr branch; kept as a statement for older Triton)
        t = tl.topk(key, K)
    else:
        t = key
    both = tl.reshape(tl.join(best, t), [BM, 2 * K])
    return tl.topk(both, K)  # sorted, largest first


@triton.jit
def _store_topk(best, rows, row_ok, v_ptr, i_ptr, k, K: tl.constexpr):
    v, cols = _unpack_key(best)
    j = tl.arange(0, K)
    m = row_ok[:, None] & (j < k)[None, :]
    off = rows[:, None] * k + j[None, :]
    tl.store(v_ptr + off, tl.maximum(v, 0.0).to(v_ptr.dtype.element_ty), mask=m)
    tl.store(i_ptr + off, cols, mask=m)


@triton.jit
def topk_aux_kernel(
    pre_ptr, dead_ptr, v_ptr, i_ptr, av_ptr, ai_ptr,
    B, N, n_dead, stride_pre, k, k_aux,
    K: tl.constexpr, K_AUX: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BA: tl.constexpr,
):  # fmt: skip
    """Rows [BM] of pre: stream d_sae in BN tiles keeping a running top-K, then the (host-compacted)
    dead columns in BA tiles keeping a running top-K_AUX; the dead columns were just read, so the
    second loop hits cache. A tile is merged only if some key in it beats a current K-th best."""
    rows = tl.program_id(0).to(tl.int64) * BM + tl.arange(0, BM)
    row_ok = rows < B
    best = tl.full([BM, K], KEY_MIN, tl.int64)
    for n0 in range(0, N, BN):
        cols = n0 + tl.arange(0, BN).to(tl.int64)
        ok = row_ok[:, None] & (cols < N)[None, :]
        v = tl.load(pre_ptr + rows[:, None] * stride_pre + cols[None, :], mask=ok, other=0.0)
        key = tl.where(ok, _pack_key(v.to(tl.float32), cols[None, :]), KEY_MIN)
        if tl.max(key) > tl.min(best):
            best = _merge_topk(best, key, K, BM, BN)
    _store_topk(best, rows, row_ok, v_ptr, i_ptr, k, K)
    if K_AUX > 0:
        best_aux = tl.full([BM, K_AUX], KEY_MIN, tl.int64)
        for a0 in range(0, n_dead, BA):
            a = a0 + tl.arange(0, BA)
            a_ok = a < n_dead
            cols = tl.load(dead_ptr + a, mask=a_ok, other=0)
            ok = row_ok[:, None] & a_ok[None, :]
            v = tl.load(pre_ptr + rows[:, None] * stride_pre + cols[None, :], mask=ok, other=0.0)
            key = tl.where(ok, _pack_key(v.to(tl.float32), cols[None, :]), KEY_MIN)
            if tl.max(key) > tl.min(best_aux):
                best_aux = _merge_topk(best_aux, key, K_AUX, BM, BA)
        _store_topk(best_aux, rows, row_ok, av_ptr, ai_ptr, k_aux, K_AUX)


# ---- sparse decode and its value gradient --------------------------------------------------------
@triton.jit
def decode_kernel(
    v_ptr, i_ptr, w_ptr, b_ptr, o_ptr,
    B, k, D, stride_w,
    HAS_BIAS: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    """out[rows, cols] = Σ_j v[rows, j] · W[idx[rows, j], cols] (+ bias): one program per
    (row block, feature tile), a fixed-order loop over j, so the result is deterministic."""
    rows = tl.program_id(0).to(tl.int64) * BM + tl.arange(0, BM)
    cols = tl.program_id(1).to(tl.int64) * BD + tl.arange(0, BD)
    rm, cm = rows < B, cols < D
    acc = tl.zeros([BM, BD], tl.float32)
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
    for j in range(k):
        idx = tl.load(i_ptr + rows * k + j, mask=rm, other=0)
        v = tl.load(v_ptr + rows * k + j, mask=rm, other=0.0).to(tl.float32)
        live = rm & (v != 0.0)  # padded entries (value 0) cost no weight traffic
        w = tl.load(
            w_ptr + idx[:, None] * stride_w + cols[None, :],
            mask=live[:, None] & cm[None, :],
            other=0.0,
        )
        acc += v[:, None] * w.to(tl.float32)
    tl.store(o_ptr + rows[:, None] * D + cols[None, :], acc, mask=rm[:, None] & cm[None, :])


@triton.jit
def decode_values_grad_kernel(
    g_ptr, i_ptr, w_ptr, o_ptr,
    B, k, D, stride_g, stride_w,
    BM: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    """dv[rows, js] = Σ_d g[rows, d] · W[idx[rows, js], d]: one program per (row block, j block),
    a fixed-order loop over feature tiles."""
    rows = tl.program_id(0).to(tl.int64) * BM + tl.arange(0, BM)
    js = tl.program_id(1).to(tl.int64) * BK + tl.arange(0, BK)
    ok = (rows < B)[:, None] & (js < k)[None, :]
    idx = tl.load(i_ptr + rows[:, None] * k + js[None, :], mask=ok, other=0)  # [BM, BK]
    acc = tl.zeros([BM, BK], tl.float32)
    for d0 in range(0, D, BD):
        cols = d0 + tl.arange(0, BD).to(tl.int64)
        cm = cols < D
        g = tl.load(
            g_ptr + rows[:, None] * stride_g + cols[None, :],
            mask=(rows < B)[:, None] & cm[None, :],
            other=0.0,
        ).to(tl.float32)
        w = tl.load(
            w_ptr + idx[:, :, None] * stride_w + cols[None, None, :],
            mask=ok[:, :, None] & cm[None, None, :],
            other=0.0,
        ).to(tl.float32)
        acc += tl.sum(w * g[:, None, :], axis=2)
    tl.store(o_ptr + rows[:, None] * k + js[None, :], acc, mask=ok)


# ---- sparseᵀ · dense, grouped by latent ----------------------------------------------------------
@triton.jit
def sparse_t_dense_kernel(
    ent_ptr, off_ptr, v_ptr, x_ptr, o_ptr, s_ptr,
    n_rows, k, D, stride_x, stride_on, stride_od,
    WRITE_SUMS: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr,
):  # fmt: skip
    """out[n, cols] = Σ over latent n's entries of v · x[row]: one program per (group of BL
    latents, feature tile). Entries were sorted by latent (stably) on the host, so each latent's
    entries are the slice off[n]:off[n+1] of ``ent`` and are summed in that fixed order, BE at a
    time: no atomics, bit-identical results run to run. Every output row is written (zeros for
    latents with no entries), so ``out`` needs no initialisation. The [BL, BD] tile is stored at
    once so a transposed output (stride_on == 1) is still written in coalesced runs."""
    lat0 = tl.program_id(0).to(tl.int64) * BL
    pid_d = tl.program_id(1)
    cols = pid_d.to(tl.int64) * BD + tl.arange(0, BD)
    cm = cols < D
    lids = tl.arange(0, BL)
    tile = tl.zeros([BL, BD], tl.float32)
    sums = tl.zeros([BL], tl.float32)
    for li in range(BL):
        n = lat0 + li
        start = tl.load(off_ptr + tl.minimum(n, n_rows))  # off has n_rows + 1 entries
        end = tl.load(off_ptr + tl.minimum(n + 1, n_rows))
        row = tl.zeros([BD], tl.float32)
        s = tl.zeros([BE], tl.float32)
        for e0 in range(start, end, BE):
            e = e0 + tl.arange(0, BE)
            em = e < end
            ent = tl.load(ent_ptr + e, mask=em, other=0)
            v = tl.load(v_ptr + ent, mask=em, other=0.0).to(tl.float32)
            live = em & (v != 0.0)
            x = tl.load(
                x_ptr + (ent // k)[:, None] * stride_x + cols[None, :],
                mask=live[:, None] & cm[None, :],
                other=0.0,
            ).to(tl.float32)
            row += tl.sum(v[:, None] * x, axis=0)
            s += v
        tile = tl.where((lids == li)[:, None], row[None, :], tile)
        sums = tl.where(lids == li, tl.sum(s, axis=0), sums)
    n_ids = lat0 + lids
    nm = n_ids < n_rows
    tl.store(
        o_ptr + n_ids[:, None] * stride_on + cols[None, :] * stride_od,
        tile,
        mask=nm[:, None] & cm[None, :],
    )
    if WRITE_SUMS:  # noqa: SIM102 (constexpr test, then a runtime one)
        if pid_d == 0:
            tl.store(s_ptr + n_ids, sums, mask=nm)
