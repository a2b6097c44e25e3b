"""GPU-only parts of ``kernels.bench``: hardware ceilings, each op against its dense equivalent,
and a small tile sweep (data for choosing the launchers' tile heuristics; no autotune)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import triton
import triton.testing

from kernels import triton_ops
from kernels.dispatch import REFERENCE, Backend

Cfg = tuple[int, int, int, int]


def triton_version() -> str:
    return str(triton.__version__)


def _ms(fn: Callable[[], Any]) -> float:
    return float(triton.testing.do_bench(fn, warmup=10, rep=50))


def ceilings(cfg: Cfg) -> dict[str, float]:
    """bf16 GEMM of the encoder's shape (TFLOP/s) and device-to-device copy (GB/s)."""
    d_in, d_sae, _, batch = cfg
    x = torch.randn(batch, d_in, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(d_in, d_sae, device="cuda", dtype=torch.bfloat16)
    gemm_ms = _ms(lambda: x @ w)
    src = torch.empty(2**28, device="cuda", dtype=torch.float16)  # 512 MiB
    dst = torch.empty_like(src)
    copy_ms = _ms(lambda: dst.copy_(src))
    return {
        "gemm_ms": gemm_ms,
        "gemm_tflops": 2 * batch * d_in * d_sae / gemm_ms / 1e9,
        "copy_gbps": 2 * src.numel() * 2 / copy_ms / 1e6,
    }


def _inputs(cfg: Cfg) -> dict[str, torch.Tensor]:
    d_in, d_sae, _, batch = cfg
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(batch, d_in, device="cuda", generator=gen).bfloat16()
    w_enc = (torch.randn(d_in, d_sae, device="cuda", generator=gen) / math.sqrt(d_in)).bfloat16()
    w_dec = torch.randn(d_sae, d_in, device="cuda", generator=gen)
    w_dec = (w_dec / w_dec.norm(dim=-1, keepdim=True)).bfloat16()
    g = torch.randn(batch, d_in, device="cuda", generator=gen).bfloat16()
    dead = torch.arange(d_sae, device="cuda") % 16 == 0
    return {"x": x, "pre": x @ w_enc, "W_dec": w_dec, "g": g, "dead": dead}


def bench_ops(cfg: Cfg, ops: Backend) -> dict[str, dict[str, float | str]]:
    """ms per op: kernel vs the dense PyTorch computation it replaces (bf16 operands)."""
    d_in, d_sae, k, batch = cfg
    t = _inputs(cfg)
    res = ops.topk_with_aux(t["pre"], k, t["dead"], d_in // 2)
    v, i = res.values, res.indices
    n_dead = int(t["dead"].sum())
    acts = torch.zeros_like(t["pre"]).scatter_(1, i, v)
    W, g, x = t["W_dec"], t["g"], t["x"]
    pairs: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "topk+aux kernel": (
            lambda: triton_ops.topk_with_aux(t["pre"], k, t["dead"], d_in // 2, kernel=True),
            lambda: REFERENCE.topk_with_aux(t["pre"], k, t["dead"], d_in // 2),
        ),
        "topk+aux default": (
            lambda: ops.topk_with_aux(t["pre"], k, t["dead"], d_in // 2, n_dead=n_dead),
            lambda: REFERENCE.topk_with_aux(t["pre"], k, t["dead"], d_in // 2),
        ),
        "decode": (lambda: ops.decode(v, i, W), lambda: acts @ W),
        "decode_values_grad": (lambda: ops.decode_values_grad(g, i, W), lambda: g @ W.T),
        "dW_dec sparse_t_dense": (lambda: ops.sparse_t_dense(i, v, g, d_sae), lambda: acts.T @ g),
        "dW_enc sparse_t_dense^T": (
            lambda: ops.sparse_t_dense_and_sums(i, v, x, d_sae, transpose=True),
            lambda: x.T @ acts,
        ),
    }
    out: dict[str, dict[str, float | str]] = {}
    for name, (kernel, dense) in pairs.items():
        try:
            out[name] = {"kernel_ms": _ms(kernel), "dense_ms": _ms(dense)}
        except Exception as err:
            out[name] = {"error": f"{type(err).__name__}: {err}"[:400]}
    if "kernel_ms" in out["decode"]:  # W_dec rows read + output written, both bf16
        moved = (batch * k * d_in + batch * d_in) * W.element_size()
        out["decode"]["kernel_gbps"] = moved / float(out["decode"]["kernel_ms"]) / 1e6
    return out


def print_ops(cfg: Cfg, ceil: dict[str, float], ops: dict[str, dict[str, float | str]]) -> None:
    print(f"\nops  d_in={cfg[0]} d_sae={cfg[1]} k={cfg[2]} batch={cfg[3]}  (bf16 operands)")
    print(
        f"  ceilings: bf16 GEMM [batch,d_in]x[d_in,d_sae] {ceil['gemm_ms']:.3f} ms = "
        f"{ceil['gemm_tflops']:.0f} TFLOP/s; copy {ceil['copy_gbps']:.0f} GB/s"
    )
    print(f"  {'op':<26}{'kernel ms':>11}{'dense ms':>11}{'speedup':>9}")
    for name, r in ops.items():
        if "error" in r:
            print(f"  {name:<26}{r['error']}")
            continue
        km, dm = float(r["kernel_ms"]), float(r["dense_ms"])
        extra = f"   {float(r['kernel_gbps']):.0f} GB/s" if "kernel_gbps" in r else ""
        print(f"  {name:<26}{km:>11.3f}{dm:>11.3f}{dm / km:>8.2f}x{extra}")


# Tile choices to time, per op (the launchers' GPU defaults are guesses, made without a GPU).
SWEEP: dict[str, list[dict[str, int]]] = {
    "decode": [{"BM": 8, "BD": 128}, {"BM": 16, "BD": 64}, {"BM": 16, "BD": 256},
               {"BM": 32, "BD": 128}],
    "decode_values_grad": [{"BM": 8, "BK": 8, "BD": 128}, {"BM": 32, "BK": 4, "BD": 64},
                           {"BM": 16, "BK": 16, "BD": 32}],
    "dW_dec": [{"BL": 8, "BE": 16, "BD": 64}, {"BL": 16, "BE": 16, "BD": 128},
               {"BL": 32, "BE": 32, "BD": 64}],
    "dW_enc^T": [{"BL": 16, "BE": 16, "BD": 64}, {"BL": 64, "BE": 16, "BD": 64}],
    "topk+aux": [{"BN": 256}, {"BN": 1024}],
}  # fmt: skip


def tile_sweep(cfg: Cfg) -> list[dict[str, Any]]:
    """ms for each tile choice in SWEEP at one size."""
    d_in, d_sae, k, _ = cfg
    t = _inputs(cfg)
    res = triton_ops.topk_with_aux(t["pre"], k)
    v, i, W, g, x = res.values, res.indices, t["W_dec"], t["g"], t["x"]
    call: dict[str, Callable[[dict[str, int]], Any]] = {
        "decode": lambda s: triton_ops.decode(v, i, W, tiles=s),
        "decode_values_grad": lambda s: triton_ops.decode_values_grad(g, i, W, tiles=s),
        "dW_dec": lambda s: triton_ops.sparse_t_dense(i, v, g, d_sae, tiles=s),
        "dW_enc^T": lambda s: triton_ops.sparse_t_dense(i, v, x, d_sae, transpose=True, tiles=s),
        "topk+aux": lambda s: triton_ops.topk_with_aux(
            t["pre"], k, t["dead"], d_in // 2, tiles=s, kernel=True
        ),
    }
    out: list[dict[str, Any]] = []
    for op, choices in SWEEP.items():
        for tiles in choices:
            try:
                ms = _ms(functools.partial(call[op], tiles))
                out.append({"op": op, "tiles": tiles, "ms": ms})
            except Exception as err:
                out.append(
                    {"op": op, "tiles": tiles, "error": f"{type(err).__name__}: {err}"[:300]}
                )
    return out


def print_sweep(rows: list[dict[str, Any]]) -> None:
    print(
        "\ntile sweep (first size; launcher defaults: decode BM16 BD64, values_grad BM8 BK8 "
        "BD128, dW BL16 BE16 BD128, topk BM1 BN512 BA512)"
    )
    for r in rows:
        tiles = " ".join(f"{k}={v}" for k, v in r["tiles"].items())
        val = f"{r['ms']:.3f} ms" if "ms" in r else r["error"]
        print(f"  {r['op']:<20}{tiles:<26}{val}")
