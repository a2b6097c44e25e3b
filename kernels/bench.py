"""``python -m kernels.bench``: tokens per second of a full TopK SAE training step, kernels vs the
dense PyTorch path, with the GEMM and copy ceilings measured in the same run.

A step is what ``saes.trainer`` does: forward and loss (mse + aux-k, α = 1/32, k_aux = d_in/2,
1/16 of the latents dead), backward, decoder-parallel gradient removal, Adam, decoder renorm.
Precision, both paths alike: fp32 parameters and Adam state, bf16 autocast (the trainer's
``mixed_precision``). Paths: ``dense`` (``saes.SAE`` + ``saes.losses.sae_loss``), ``kernels``
(``kernels.sparse_sae_loss``, Triton backend) and ``kernels+torch.topk`` (the same with the
selection done by torch.topk, to show what the top-k kernel buys). Without a GPU the reference
path runs on CPU at a small size, and says so. Prints tables, then one ``BENCH_JSON`` line.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from kernels.autograd import sparse_sae_loss
from kernels.dispatch import REFERENCE, Backend, backend_choice, get_backend
from saes.config import SAEConfig
from saes.losses import sae_loss
from saes.sae import SAE

CONFIGS = [(768, 24576, 32, 4096), (2304, 65536, 64, 4096)]  # (d_in, d_sae, k, batch)
CPU_CONFIG = (64, 1024, 8, 256)
AUX = 1 / 32  # aux-k coefficient, the trainer's default


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step: Callable[[], None], device: torch.device, iters: int, warmup: int) -> dict:
    """Mean ms per step over ``iters`` (after ``warmup``, which includes Triton compiles)."""
    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            step()
        end.record()
        torch.cuda.synchronize()
        ms = start.elapsed_time(end) / iters
        return {"ms": ms, "peak_mib": torch.cuda.max_memory_allocated() / 2**20}
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return {"ms": (time.perf_counter() - t0) * 1e3 / iters, "peak_mib": None}


def make_step(
    path: str, cfg: tuple[int, int, int, int], device: torch.device, backend: Backend | None
) -> Callable[[], None]:
    d_in, d_sae, k, batch = cfg
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, k=k, activation="topk"), seed=0).to(device)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, d_in, device=device, generator=gen)
    dead = torch.arange(d_sae, device=device) % 16 == 0
    amp = device.type == "cuda"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            if path == "dense":
                total = sae_loss(sae, x, dead=dead, k_aux=d_in // 2, aux_coefficient=AUX)[0].total
            else:
                total = sparse_sae_loss(
                    x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, k,
                    dead_mask=dead, k_aux=d_in // 2, aux_coefficient=AUX, backend=backend,
                )[0].total  # fmt: skip
        opt.zero_grad(set_to_none=True)
        total.backward()
        sae.remove_parallel_grad_()
        opt.step()
        sae.normalize_decoder_()

    return step


def bench_steps(
    cfg: tuple[int, int, int, int],
    device: torch.device,
    paths: dict[str, Backend | None],
    iters: int,
    warmup: int,
) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for path, backend in paths.items():
        try:
            r = time_steps(make_step(path, cfg, device, backend), device, iters, warmup)
            r["tokens_per_s"] = cfg[3] / (r["ms"] / 1e3)
            out[path] = r
        except Exception as err:  # keep going: one broken path must not lose the whole run
            out[path] = {"error": f"{type(err).__name__}: {err}"[:500]}
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def saelens_step(
    cfg: tuple[int, int, int, int], device: torch.device, iters: int, warmup: int
) -> dict:
    """SAELens's TopK training step (forward, loss with aux, backward, Adam), if it imports."""
    try:
        from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
        from sae_lens.saes.sae import TrainStepInput
    except Exception as err:
        return {"skipped": f"sae_lens not importable ({type(err).__name__}: {err})"[:300]}
    d_in, d_sae, k, batch = cfg
    try:
        sae = TopKTrainingSAE(
            TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k, device=str(device))
        )
        opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
        x = torch.randn(batch, d_in, device=device)
        dead = torch.arange(d_sae, device=device) % 16 == 0
        amp = device.type == "cuda"

        def step() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                inp = TrainStepInput(
                    sae_in=x,
                    coefficients={},
                    dead_neuron_mask=dead,
                    n_training_steps=0,
                    is_logging_step=False,
                )
                loss = sae.training_forward_pass(inp).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        r = time_steps(step, device, iters, warmup)
        r["tokens_per_s"] = batch / (r["ms"] / 1e3)
        return r
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}"[:500]}


def print_steps(cfg: tuple[int, int, int, int], steps: dict[str, dict]) -> None:
    print(f"\nfull training step  d_in={cfg[0]} d_sae={cfg[1]} k={cfg[2]} batch={cfg[3]}")
    print(f"  {'path':<22}{'ms/step':>10}{'tokens/s':>14}{'peak MiB':>11}{'vs dense':>10}")
    base = steps.get("dense", {}).get("ms")
    for path, r in steps.items():
        if "ms" not in r:
            print(f"  {path:<22}{r.get('error') or r.get('skipped')}")
            continue
        peak = f"{r['peak_mib']:.0f}" if r.get("peak_mib") is not None else "-"
        speed = f"{base / r['ms']:.2f}x" if base else "-"
        print(f"  {path:<22}{r['ms']:>10.3f}{r['tokens_per_s']:>14,.0f}{peak:>11}{speed:>10}")


def run_cpu(args: argparse.Namespace) -> dict[str, Any]:
    print(
        "NO GPU: running the reference path on CPU at a small size. These are NOT kernel numbers."
    )
    device = torch.device("cpu")
    paths: dict[str, Backend | None] = {"dense": None, "kernels(reference)": REFERENCE}
    steps = bench_steps(CPU_CONFIG, device, paths, args.iters, 1)
    if not args.no_saelens:
        steps["saelens"] = saelens_step(CPU_CONFIG, device, args.iters, 1)
    print_steps(CPU_CONFIG, steps)
    return {
        "device": "cpu",
        "note": "no GPU: reference path at a small size",
        "configs": [
            {
                "d_in": CPU_CONFIG[0],
                "d_sae": CPU_CONFIG[1],
                "k": CPU_CONFIG[2],
                "batch": CPU_CONFIG[3],
                "steps": steps,
            }
        ],
    }


def run_cuda(args: argparse.Namespace) -> dict[str, Any]:
    from kernels import _bench_ops as ops_bench

    t0 = time.perf_counter()
    device = torch.device("cuda")
    triton_backend = get_backend(device)
    name, reason = backend_choice(device)
    print(
        f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  "
        f"backend: {name} ({reason})"
    )
    print("precision: fp32 parameters and Adam state, bf16 autocast (both paths)")
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "backend": [name, reason],
        "configs": [],
        "precision": "fp32 params + Adam, bf16 autocast",
    }
    result["triton"] = ops_bench.triton_version()
    paths: dict[str, Backend | None] = {
        "dense": None,
        "kernels": triton_backend,
        "kernels+torch.topk": dataclasses.replace(
            triton_backend, topk_with_aux=REFERENCE.topk_with_aux
        ),
    }
    configs = CONFIGS[:1] if args.quick else CONFIGS
    for cfg in configs:
        if time.perf_counter() - t0 > args.budget_s:
            print(f"\nskipping d_sae={cfg[1]}: past the {args.budget_s:.0f} s budget")
            continue
        entry: dict[str, Any] = dict(zip(("d_in", "d_sae", "k", "batch"), cfg, strict=True))
        entry["ceilings"] = ops_bench.ceilings(cfg)
        entry["ops"] = ops_bench.bench_ops(cfg, triton_backend)
        steps = bench_steps(cfg, device, paths, args.iters, args.warmup)
        if not args.no_saelens:
            steps["saelens"] = saelens_step(cfg, device, args.iters, args.warmup)
        entry["steps"] = steps
        ops_bench.print_ops(cfg, entry["ceilings"], entry["ops"])
        print_steps(cfg, steps)
        print("BENCH_JSON_CONFIG " + json.dumps(entry, default=str), flush=True)  # if cut short
        result["configs"].append(entry)
    if args.no_sweep or time.perf_counter() - t0 > args.budget_s:
        print("\ntile sweep skipped" + ("" if args.no_sweep else " (past the time budget)"))
    else:
        result["tile_sweep"] = ops_bench.tile_sweep(CONFIGS[0])
        ops_bench.print_sweep(result["tile_sweep"])
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kernels.bench", description=__doc__.split("\n")[0])
    p.add_argument("--iters", type=int, default=20, help="timed steps per path")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compiles)")
    p.add_argument("--quick", action="store_true", help="only the first size")
    p.add_argument(
        "--budget-s", type=float, default=200, help="skip remaining parts after this many seconds"
    )
    p.add_argument("--no-sweep", action="store_true", help="skip the tile-size sweep")
    p.add_argument("--no-saelens", action="store_true", help="skip the SAELens step")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    result = run_cuda(args) if torch.cuda.is_available() else run_cpu(args)
    result["bench_seconds"] = round(time.perf_counter() - t0, 1)
    print(f"\n(bench took {result['bench_seconds']} s)")
    print("BENCH_JSON " + json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
