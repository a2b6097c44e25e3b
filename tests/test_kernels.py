"""kernels: the reference ops against their definitions and the dense SAE, dispatch, argument
checks; and the Triton kernels under the interpreter, in a subprocess (see
``test_kernels_interp.py`` for why a subprocess).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kernels import reference as R
from kernels.autograd import sae_forward, sparse_decode, sparse_sae_loss
from kernels.dispatch import REFERENCE, backend_choice
from saes.config import SAEConfig
from saes.losses import sae_loss
from saes.sae import SAE

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec")


def fresh_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "MECHSCOPE_KERNELS")
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


# ---- the Triton kernels, under the interpreter ------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_triton_kernels_under_interpreter() -> None:
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1 here: test_kernels_interp.py runs in this process")
    env = {k: v for k, v in os.environ.items() if k != "MECHSCOPE_KERNELS"}
    env["TRITON_INTERPRET"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "tests/test_kernels_interp.py",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    report = run.stdout[-12000:] + run.stderr[-3000:]
    assert run.returncode == 0, report
    assert " passed" in run.stdout and "skipped" not in run.stdout.splitlines()[-1], report


# ---- reference ops against their definitions --------------------------------------------------------
def loop_decode(values, indices, W, bias):
    out = bias.clone().repeat(values.shape[0], 1)
    for b in range(values.shape[0]):
        for j in range(values.shape[1]):
            out[b] += values[b, j] * W[indices[b, j]]
    return out


def test_reference_ops_match_their_definitions() -> None:
    gen = torch.Generator().manual_seed(0)
    B, k, d_sae, d = 4, 3, 9, 5
    idx = torch.randint(0, 4, (B, k), generator=gen)  # duplicates within rows and across rows
    values, W = torch.randn(B, k, generator=gen), torch.randn(d_sae, d, generator=gen)
    bias, g = torch.randn(d, generator=gen), torch.randn(B, d, generator=gen)
    torch.testing.assert_close(R.decode(values, idx, W, bias), loop_decode(values, idx, W, bias))
    want_dv = torch.stack([torch.stack([g[b] @ W[idx[b, j]] for j in range(k)]) for b in range(B)])
    torch.testing.assert_close(R.decode_values_grad(g, idx, W), want_dv)
    want = torch.zeros(d_sae, d)
    for b in range(B):
        for j in range(k):
            want[idx[b, j]] += values[b, j] * g[b]
    out, sums = R.sparse_t_dense_and_sums(idx, values, g, d_sae)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(R.sparse_t_dense(idx, values, g, d_sae, transpose=True), want.T)
    torch.testing.assert_close(
        sums, torch.zeros(d_sae).index_add_(0, idx.flatten(), values.flatten())
    )
    assert torch.equal(out[4:], torch.zeros(d_sae - 4, d))  # latents never chosen


def test_reference_topk_with_aux() -> None:
    pre = torch.randn(3, 10, generator=torch.Generator().manual_seed(1))
    dead = torch.arange(10) >= 6
    res = R.topk_with_aux(pre, 2, dead, 3)
    assert torch.equal(res.values, pre.topk(2).values.relu())
    assert bool(dead[res.aux_indices].all()) and res.aux_values.shape == (3, 3)
    assert torch.equal(res.aux_values, pre[:, 6:].topk(3).values.relu())
    assert R.topk_with_aux(pre, 2, dead, 9).aux_indices.shape == (3, 4)  # min(k_aux, n_dead)
    assert R.topk_with_aux(pre, 2, torch.zeros(10, dtype=torch.bool), 3).aux_values.shape == (3, 0)
    with_count = R.topk_with_aux(pre, 2, dead, 3, n_dead=4)  # n_dead passed: no read-back
    assert all(torch.equal(a, b) for a, b in zip(with_count, res, strict=True))
    assert torch.equal(R.dead_columns(dead, 4), torch.arange(6, 10))


def test_reference_loss_without_dead_latents_skips_aux() -> None:
    sae = make_sae()
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(6))
    none_dead = torch.zeros(40, dtype=torch.bool)
    W = (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec)
    loss, out = sparse_sae_loss(
        x, *W, 4, dead_mask=none_dead, k_aux=5, aux_coefficient=0.5, backend=REFERENCE
    )
    assert out.aux_indices.shape == (5, 0) and float(loss.aux) == 0.0


# ---- the training step through the reference backend, against the dense SAE ------------------------
def make_sae(activation: str = "topk") -> SAE:
    sae = SAE(SAEConfig(d_in=12, d_sae=40, k=4, activation=activation), seed=0)  # type: ignore[arg-type]
    with torch.no_grad():
        for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec):
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    return sae


def grads(sae: SAE) -> dict[str, torch.Tensor]:
    out = {n: getattr(sae, n).grad.clone() for n in PARAMS}
    sae.zero_grad()
    return out


def test_reference_training_step_matches_dense_sae() -> None:
    sae = make_sae()
    x = torch.randn(7, 12, generator=torch.Generator().manual_seed(2))
    dead = torch.arange(40) % 3 == 0
    want, _ = sae_loss(sae, x, dead=dead, k_aux=5, aux_coefficient=0.5)
    want.total.backward()
    ref = grads(sae)
    got, out = sparse_sae_loss(
        x,
        sae.W_enc,
        sae.b_enc,
        sae.W_dec,
        sae.b_dec,
        4,
        dead_mask=dead,
        k_aux=5,
        aux_coefficient=0.5,
        backend=REFERENCE,
    )
    got.total.backward()
    assert out.values.shape == (7, 4) and out.aux_values.shape == (7, 5)
    torch.testing.assert_close(got.total, want.total, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.aux, want.aux, rtol=1e-5, atol=1e-5)
    for n, g in grads(sae).items():
        torch.testing.assert_close(g, ref[n], rtol=1e-4, atol=1e-4, msg=n)


def test_b_dec_gradient_formula() -> None:
    """db_dec = Σ_b g[b] − W_enc db_enc, with g the gradient of the reconstruction."""
    sae = make_sae()
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(3))
    out = sae_forward(x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, k=4, backend=REFERENCE)
    out.recon.retain_grad()
    (out.recon - x).pow(2).sum(-1).mean().backward()
    g = out.recon.grad
    assert g is not None
    torch.testing.assert_close(sae.b_dec.grad, g.sum(0) - sae.W_enc.detach() @ sae.b_enc.grad)


def test_input_gradient_matches_dense() -> None:
    sae = make_sae()
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(5), requires_grad=True)
    (sae(x).recon - x).pow(2).sum().backward()
    want, x.grad = x.grad, None
    out = sae_forward(x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, k=4, backend=REFERENCE)
    (out.recon - x).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("activation", ["batchtopk", "jumprelu"])
def test_reference_other_activations_match_dense(activation: str) -> None:
    sae = make_sae(activation)
    x = torch.randn(6, 12, generator=torch.Generator().manual_seed(3))
    dense = sae(x)
    (dense.recon - x).pow(2).sum(-1).mean().backward()
    ref = grads(sae)
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
        backend=REFERENCE,
    )
    (out.recon - x).pow(2).sum(-1).mean().backward()
    torch.testing.assert_close(out.recon, dense.recon, rtol=1e-5, atol=1e-5)
    for n, g in grads(sae).items():
        torch.testing.assert_close(g, ref[n], rtol=1e-4, atol=1e-4, msg=n)


def test_sparse_decode_gradients_match_dense_autograd() -> None:
    gen = torch.Generator().manual_seed(4)
    idx = torch.stack([torch.randperm(9, generator=gen)[:3] for _ in range(5)])
    v = torch.randn(5, 3, generator=gen, requires_grad=True)
    W = torch.randn(9, 6, generator=gen, requires_grad=True)
    b = torch.randn(6, generator=gen, requires_grad=True)
    g = torch.randn(5, 6, generator=gen)
    (sparse_decode(v, idx, W, b, backend=REFERENCE) * g).sum().backward()
    got = [t.grad.clone() for t in (v, W, b)]  # type: ignore[union-attr]
    for t in (v, W, b):
        t.grad = None
    acts = torch.zeros(5, 9).scatter(1, idx, v)
    ((acts @ W + b) * g).sum().backward()
    for a, t in zip(got, (v, W, b), strict=True):
        torch.testing.assert_close(a, t.grad)


# ---- dispatch and argument checks ------------------------------------------------------------------
def test_backend_override_and_invalid_value(monkeypatch) -> None:
    monkeypatch.setenv("MECHSCOPE_KERNELS", "reference")
    assert backend_choice("cpu") == ("reference", "MECHSCOPE_KERNELS=reference")
    monkeypatch.setenv("MECHSCOPE_KERNELS", "cuda")
    with pytest.raises(ValueError, match=r"valid values: \('reference', 'triton'\)"):
        backend_choice("cpu")


def test_fresh_process_imports_and_dispatch() -> None:
    """``import kernels`` imports nothing heavy; on CPU without the interpreter the reference
    runs, and asking for Triton there fails clearly (checked in a fresh process, since this one
    may have imported Triton already)."""
    code = (
        "import sys, kernels\n"
        "assert 'torch' not in sys.modules and 'triton' not in sys.modules, 'eager imports'\n"
        "name, reason = kernels.backend_choice('cpu')\n"
        "assert name == 'reference', (name, reason)\n"
        "print('OK', reason)\n"
    )
    run = fresh_python(code)
    assert run.returncode == 0 and "OK" in run.stdout, run.stderr[-3000:]
    if importlib.util.find_spec("triton") is not None:
        run = fresh_python(
            code.replace("print", "raise SystemExit(0)#"), MECHSCOPE_KERNELS="triton"
        )
        assert "MECHSCOPE_KERNELS=triton but Triton cannot run on cpu" in run.stderr, run.stderr


def test_reference_rejects_bad_input() -> None:
    idx = torch.tensor([[0, 3], [2, 1]])
    v, W, g = torch.ones(2, 2), torch.randn(4, 5), torch.randn(2, 5)
    with pytest.raises(
        ValueError,
        match=r"indices must lie in \[0, 4\) \(the number of latents\); got values from 1 to 4",
    ):
        R.decode(v, idx + 1, W)
    with pytest.raises(TypeError, match="indices must be int64"):
        R.sparse_t_dense(idx.int(), v, g, 4)
    with pytest.raises(TypeError, match="values must be float32, bfloat16 or float16"):
        R.decode(v.long(), idx, W)
    with pytest.raises(ValueError, match=r"dense must have shape \[2, \*\]"):
        R.sparse_t_dense(idx, v, g[:1], 4)
    with pytest.raises(ValueError, match="W_dec must have contiguous rows"):
        R.decode_values_grad(g, idx, W.t().contiguous().t())
    with pytest.raises(ValueError, match="one device"):
        R.decode(v, idx, W.to("meta"))
    with pytest.raises(TypeError, match="dead_mask must be a bool tensor"):
        R.topk_with_aux(torch.randn(2, 4), 1, torch.zeros(4), 1)
    with pytest.raises(ValueError, match="activation must be one of"):
        sae_forward(g, W.T, torch.zeros(4), W, torch.zeros(5), activation="relu", k=1)  # type: ignore[arg-type]


def test_gemm_weight_gradient_matches_the_reference_to_bf16_precision():
    import torch

    from kernels import reference

    g = torch.Generator().manual_seed(0)
    B, k, n, d = 33, 5, 70, 19
    idx = torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(B)])
    idx = torch.cat([idx, idx[:, :1]], 1)  # a duplicate (row, latent) pair, as main + aux can give
    vals = torch.randn(B, k + 1, generator=g)
    dense = torch.randn(B, d, generator=g)
    for transpose in (False, True):
        ref, ref_sums = reference.sparse_t_dense_and_sums(idx, vals, dense, n, transpose=transpose)
        out, sums = reference.sparse_t_dense_and_sums_gemm(idx, vals, dense, n, transpose=transpose)
        assert out.shape == ref.shape and out.dtype == ref.dtype
        torch.testing.assert_close(out, ref, rtol=2e-2, atol=5e-2)
        torch.testing.assert_close(sums, ref_sums)
        only = reference.sparse_t_dense_gemm(idx, vals, dense, n, transpose=transpose)
        torch.testing.assert_close(only, out)
        exact, _ = reference.sparse_t_dense_and_sums_gemm(
            idx, vals, dense, n, transpose=transpose, compute_dtype=torch.float64
        )
        torch.testing.assert_close(exact, ref)
