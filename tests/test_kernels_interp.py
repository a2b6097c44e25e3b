"""Triton kernels against their references, under the Triton interpreter (CPU).

The interpreter must be switched on before Triton is first imported, and in a shared pytest
process another module may have imported Triton already; so this module runs only in a process
started with ``TRITON_INTERPRET=1``, and ``tests/test_kernels.py`` starts one for it. By hand:

    TRITON_INTERPRET=1 python -m pytest tests/test_kernels_interp.py

Shapes are tiny and ragged (the interpreter costs ~5 ms per program per loop iteration); small
tiles are forced where a test needs several programs or loop iterations.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip(
        "needs TRITON_INTERPRET=1 from process start (tests/test_kernels.py runs it so)",
        allow_module_level=True,
    )
pytest.importorskip("triton")

import torch  # noqa: E402

from kernels import reference as R  # noqa: E402
from kernels import triton_ops as T  # noqa: E402
from kernels.autograd import sae_forward, sparse_sae_loss  # noqa: E402
from kernels.dispatch import REFERENCE, Backend, backend_choice, get_backend  # noqa: E402
from saes.config import SAEConfig  # noqa: E402
from saes.losses import sae_loss  # noqa: E402
from saes.sae import SAE  # noqa: E402

if not T.INTERPRETED:
    pytest.skip("Triton was imported before TRITON_INTERPRET=1 was set", allow_module_level=True)

TRITON = get_backend("cpu")

# name: (B, k, d_sae, d_in, dtype, layout); layout: "random", "hot" (latent 0 in every row),
# "sparse" (only a few latents ever chosen: many empty ones, many duplicates across rows)
CASES = {
    "batch1_k1": (1, 1, 5, 3, torch.float32, "random"),
    "ragged_fp32": (7, 3, 37, 19, torch.float32, "random"),
    "bf16": (6, 5, 29, 21, torch.bfloat16, "random"),
    "hot_latent": (7, 3, 23, 10, torch.float32, "hot"),
    "empty_latents_bf16": (5, 2, 41, 9, torch.bfloat16, "sparse"),
}


def make_case(name: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    B, k, d_sae, d_in, dtype, layout = CASES[name]
    gen = torch.Generator().manual_seed(seed)
    pool = {"random": d_sae, "hot": d_sae, "sparse": 6}[layout]
    idx = torch.stack([torch.randperm(pool, generator=gen)[:k] for _ in range(B)])
    if layout == "hot":
        idx = torch.where(idx == 0, idx[:, :1], idx)  # keep rows duplicate-free
        idx[:, 0] = 0
    values = torch.randn(B, k, generator=gen)
    values[values.abs() < 0.3] = 0.0  # padded entries
    W = torch.randn(d_sae, d_in, generator=gen)
    bias = torch.randn(d_in, generator=gen)
    dense = torch.randn(B, d_in, generator=gen)
    return values.to(dtype), idx, W.to(dtype), bias.to(dtype), dense.to(dtype)


def close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> None:
    # The interpreter truncates fp32 → bf16 stores where PyTorch rounds: one bf16 ulp apart.
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(a.float(), b.float(), atol=tol, rtol=tol)


# ---- decode and its value gradient -----------------------------------------------------------------
@pytest.mark.parametrize("name", CASES)
def test_decode(name: str) -> None:
    values, idx, W, bias, _ = make_case(name)
    dtype = CASES[name][4]
    got = T.decode(values, idx, W, bias, tiles={"BM": 2, "BD": 8})
    assert got.dtype == dtype
    close(got, R.decode(values, idx, W, bias), dtype)
    close(T.decode(values, idx, W), R.decode(values, idx, W), dtype)


@pytest.mark.parametrize("name", CASES)
def test_decode_values_grad(name: str) -> None:
    _, idx, W, _, g = make_case(name)
    got = T.decode_values_grad(g, idx, W, tiles={"BM": 2, "BK": 2, "BD": 8})
    close(got, R.decode_values_grad(g, idx, W), CASES[name][4])


# ---- sparseᵀ · dense -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("transpose", [False, True])
def test_sparse_t_dense(name: str, transpose: bool) -> None:
    values, idx, W, _, dense = make_case(name)
    tiles = {"BL": 4, "BD": 8, "BE": 2}
    out, sums = T.sparse_t_dense_and_sums(
        idx, values, dense, W.shape[0], transpose=transpose, tiles=tiles
    )
    ref_out, ref_sums = R.sparse_t_dense_and_sums(
        idx, values, dense, W.shape[0], transpose=transpose
    )
    dtype = CASES[name][4]
    close(out, ref_out, dtype)
    close(sums, ref_sums, dtype)
    again = T.sparse_t_dense(idx, values, dense, W.shape[0], transpose=transpose, tiles=tiles)
    assert torch.equal(out, again)  # deterministic: same order every run


def test_sparse_t_dense_repeated_pairs_add_up() -> None:
    idx = torch.tensor([[2, 2, 0], [2, 1, 1]])
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    dense = torch.tensor([[1.0, 10.0], [100.0, 1000.0]])
    got = T.sparse_t_dense(idx, values, dense, 4)
    torch.testing.assert_close(got, R.sparse_t_dense(idx, values, dense, 4))
    torch.testing.assert_close(got[2], 3 * dense[0] + 4 * dense[1])
    assert torch.equal(got[3], torch.zeros(2))


# ---- top-k with aux --------------------------------------------------------------------------------
def check_topk(pre: torch.Tensor, got: R.TopKResult, want: R.TopKResult, dead=None) -> None:
    """Compare by values and by pre.gather(indices), never by index order."""
    for v, i, rv in (
        (got.values, got.indices, want.values),
        (got.aux_values, got.aux_indices, want.aux_values),
    ):
        assert v.shape == rv.shape and v.dtype == pre.dtype
        torch.testing.assert_close(v.sort(1).values, rv.sort(1).values, atol=0, rtol=0)
        assert torch.equal(pre.gather(1, i).relu(), v)
        assert all(len(set(row.tolist())) == len(row) for row in i)  # no repeats in a row
    if dead is not None and got.aux_indices.numel():
        assert bool(dead[got.aux_indices].all())


@pytest.mark.parametrize(
    "B, N, k, dtype, tiles",
    [
        (1, 5, 1, torch.float32, None),
        (7, 37, 3, torch.float32, {"BM": 2, "BN": 8}),
        (6, 29, 5, torch.bfloat16, {"BM": 4, "BN": 16}),
        (3, 16, 16, torch.float32, None),  # k = d_sae
    ],
)
def test_topk(B: int, N: int, k: int, dtype: torch.dtype, tiles: dict | None) -> None:
    pre = torch.randn(B, N, generator=torch.Generator().manual_seed(N)).to(dtype)
    pre[0] = -pre[0].abs()  # an all-negative row: rectified to zeros
    check_topk(pre, T.topk_with_aux(pre, k, tiles=tiles), R.topk_with_aux(pre, k))


def test_topk_ties_break_to_lower_latent() -> None:
    pre = torch.randint(-2, 3, (5, 19), generator=torch.Generator().manual_seed(1)).float()
    got = T.topk_with_aux(pre, 4, tiles={"BM": 2, "BN": 8})
    check_topk(pre, got, R.topk_with_aux(pre, 4))
    for row, (v, i) in enumerate(zip(got.values, got.indices, strict=True)):
        cut = float(v.min())  # every latent above the cut is kept; at the cut, the lowest ids
        above = (pre[row].relu() > cut).nonzero().flatten().tolist()
        at = (pre[row].relu() == cut).nonzero().flatten().tolist()
        assert sorted(i.tolist()) == sorted(above + at[: 4 - len(above)])


@pytest.mark.parametrize("k_aux, dead_frac", [(3, 0.4), (50, 0.4), (2, 1.0), (4, 0.0)])
def test_topk_aux(k_aux: int, dead_frac: float) -> None:
    gen = torch.Generator().manual_seed(k_aux)
    pre = torch.randn(5, 31, generator=gen)
    dead = torch.rand(31, generator=gen) < dead_frac
    got = T.topk_with_aux(pre, 3, dead, k_aux, tiles={"BM": 2, "BN": 8, "BA": 4})
    want = R.topk_with_aux(pre, 3, dead, k_aux)
    assert got.aux_indices.shape[1] == min(k_aux, int(dead.sum()))
    check_topk(pre, got, want, dead)


@pytest.mark.parametrize("limit", [2, 4])  # 2: both lists by torch; 4: only the aux one
def test_topk_lists_past_register_limit_use_torch(monkeypatch, limit: int) -> None:
    monkeypatch.setattr(T, "MAX_KERNEL_K", limit)
    pre = torch.randn(4, 13)
    dead = torch.arange(13) % 2 == 0
    check_topk(pre, T.topk_with_aux(pre, 3, dead, 5), R.topk_with_aux(pre, 3, dead, 5), dead)


def test_empty_inputs_launch_nothing() -> None:
    W, bias = torch.randn(6, 4), torch.randn(4)
    none = torch.zeros(3, 0, dtype=torch.int64)
    torch.testing.assert_close(T.decode(none.float(), none, W, bias), bias.expand(3, 4))
    assert torch.equal(T.sparse_t_dense(none, none.float(), torch.ones(3, 4), 6), torch.zeros(6, 4))
    assert T.decode_values_grad(torch.ones(3, 4), none, W).shape == (3, 0)


# ---- a whole training step -------------------------------------------------------------------------
def make_sae(activation: str, dtype: str = "float32", seed: int = 0) -> SAE:
    cfg = SAEConfig(d_in=12, d_sae=40, k=4, activation=activation, dtype=dtype)  # type: ignore[arg-type]
    sae = SAE(cfg, seed=seed)
    with torch.no_grad():
        for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec):
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    return sae


PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec")


@pytest.mark.parametrize("aux", [True, False])
def test_training_step_matches_dense(aux: bool) -> None:
    sae = make_sae("topk")
    x = torch.randn(7, 12, generator=torch.Generator().manual_seed(2))
    dead = torch.arange(40) % 3 == 0
    kw = {"dead": dead, "k_aux": 5, "aux_coefficient": 0.5} if aux else {}
    want, _ = sae_loss(sae, x, **kw)  # type: ignore[arg-type]
    want.total.backward()
    ref = {n: getattr(sae, n).grad.clone() for n in PARAMS}
    sae.zero_grad()
    got, out = sparse_sae_loss(
        x,
        sae.W_enc,
        sae.b_enc,
        sae.W_dec,
        sae.b_dec,
        4,
        dead_mask=dead if aux else None,
        k_aux=5,
        aux_coefficient=0.5 if aux else 0.0,
        backend=TRITON,
    )
    got.total.backward()
    assert out.aux_indices.shape[1] == (5 if aux else 0)
    torch.testing.assert_close(got.mse, want.mse, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.aux, want.aux, rtol=1e-5, atol=1e-5)
    for n in PARAMS:
        torch.testing.assert_close(getattr(sae, n).grad, ref[n], rtol=1e-4, atol=1e-4, msg=n)


def test_input_gradient_matches_dense() -> None:
    sae = make_sae("topk")
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(5), requires_grad=True)
    (sae(x).recon - x).pow(2).sum().backward()
    want, x.grad = x.grad, None
    out = sae_forward(x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, k=4, backend=TRITON)
    (out.recon - x).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("activation", ["batchtopk", "jumprelu"])
def test_other_activations_match_dense(activation: str) -> None:
    sae = make_sae(activation)
    x = torch.randn(6, 12, generator=torch.Generator().manual_seed(3))
    dense = sae(x)
    (dense.recon - x).pow(2).sum(-1).mean().backward()
    ref = {n: getattr(sae, n).grad.clone() for n in PARAMS}
    sae.zero_grad()
    theta = sae.act.threshold.detach() if activation == "jumprelu" else None  # type: ignore[union-attr]
    out = sae_forward(
        x,
        sae.W_enc,
        sae.b_enc,
        sae.W_dec,
        sae.b_dec,
        activation=activation,  # type: ignore[arg-type]
        k=4,
        threshold=theta,
        backend=TRITON,
    )
    (out.recon - x).pow(2).sum(-1).mean().backward()
    torch.testing.assert_close(out.recon, dense.recon, rtol=1e-5, atol=1e-5)
    kept = torch.zeros_like(dense.acts).scatter_add_(1, out.indices, out.values)
    assert torch.equal(kept != 0, dense.acts != 0)  # the same latents fire
    torch.testing.assert_close(kept, dense.acts, rtol=1e-5, atol=1e-5)  # addmm rounds differently
    for n in PARAMS:
        torch.testing.assert_close(getattr(sae, n).grad, ref[n], rtol=1e-4, atol=1e-4, msg=n)


def test_bf16_step_matches_reference_backend() -> None:
    grads = {}
    for name in ("reference", "triton"):
        sae = make_sae("topk", dtype="bfloat16")
        x = torch.randn(7, 12, generator=torch.Generator().manual_seed(4))
        dead = torch.arange(40) % 4 == 0
        # bf16 pre may tie at the k-th value: select with the kernel on both sides
        backend = TRITON if name == "triton" else same_selection_reference()
        loss, _ = sparse_sae_loss(
            x,
            sae.W_enc,
            sae.b_enc,
            sae.W_dec,
            sae.b_dec,
            4,
            dead_mask=dead,
            k_aux=3,
            aux_coefficient=0.5,
            backend=backend,
        )
        loss.total.backward()
        grads[name] = [loss.total.detach().float()] + [getattr(sae, n).grad.float() for n in PARAMS]
    for a, b in zip(grads["triton"], grads["reference"], strict=True):
        # bf16 stores truncate in the interpreter; compare relative to each tensor's size
        assert float((a - b).norm() / b.norm()) < 2e-2


def same_selection_reference() -> Backend:
    return dataclasses.replace(REFERENCE, topk_with_aux=TRITON.topk_with_aux)


# ---- dispatch and argument checks ------------------------------------------------------------------
def test_dispatch_uses_interpreter_for_cpu() -> None:
    name, reason = backend_choice("cpu")
    assert name == "triton" and "TRITON_INTERPRET" in reason


def test_launchers_reject_bad_input() -> None:
    values, idx, W, bias, g = make_case("ragged_fp32")
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 37\)"):
        T.decode(values, torch.full_like(idx, 37), W)
    with pytest.raises(ValueError, match=r"indices must lie in"):
        T.sparse_t_dense(torch.full_like(idx, -1), values, g, 37)
    with pytest.raises(TypeError, match="indices must be int64"):
        T.decode_values_grad(g, idx.int(), W)
    with pytest.raises(ValueError, match="W_dec must have contiguous rows"):
        T.decode(values, idx, W.t().contiguous().t())
    with pytest.raises(ValueError, match=r"values must have shape \[7, 3\]"):
        T.decode(values[:, :2], idx, W)
    with pytest.raises(ValueError, match=r"bias must have shape \[19\]"):
        T.decode(values, idx, W, bias[:5])
    with pytest.raises(ValueError, match="power of two"):
        T.decode(values, idx, W, tiles={"BD": 6})
    with pytest.raises(ValueError, match="k must be in"):
        T.topk_with_aux(torch.randn(2, 5), 6)
